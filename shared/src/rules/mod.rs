//! The rules: the config file (parsed and validated once), its Tera templates, and rendering
//! an event into the frozen requests of the rules it matches.

pub mod config;
pub mod render;
pub mod template;
