//! The rules: the config file (parsed and validated once), its Tera templates, the action
//! kinds (each compiled and rendered in its own module), and rendering an event into the
//! frozen requests of the rules it matches.

pub mod actions;
pub mod config;
pub mod dates;
pub mod references;
pub mod render;
mod shortcut;
pub mod template;
