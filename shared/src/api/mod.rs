//! The HTTP API: one axum router, served by `relay serve` and by the inbound Lambda.
//! `router` has the routes and handlers, `auth` who may call, `body` how bodies are read,
//! `error` the one error type every handler returns.

mod auth;
mod body;
mod console;
pub mod error;
pub mod router;
pub mod serve;
