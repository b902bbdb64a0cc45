//! The local adapters (SQLite) and the runner behind `relay serve`.

pub mod runner;
pub mod sqlite;
