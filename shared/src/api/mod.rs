//! The HTTP API: one axum router, served by `relay serve` and by the inbound Lambda.

pub mod router;
