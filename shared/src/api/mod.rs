//! The HTTP API: one axum router, served by `relay serve` and by the inbound Lambda.
//! `router` has the routes and handlers, `auth` who may call, `body` how bodies are read,
//! `error` the one error type every handler returns; `manage` the management API (admin
//! keys), `status` its status and rules routes, `trial` the preview of rules not loaded.

mod auth;
mod body;
mod console;
pub mod error;
mod manage;
pub mod metrics;
pub mod router;
pub mod serve;
mod status;
pub use status::StatusCache;
mod trial;
