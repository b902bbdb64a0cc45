//! The relay's core. The folders are the layers, each importing only the ones above it in
//! this list:
//!
//! - `domain`: events, deliveries, idempotency records, secrets, SmartEmailing's shapes;
//! - `policy`: pure decisions (the circuit breaker and pacing);
//! - `security`: checks on untrusted input and on where the relay may send;
//! - `rules`: the config, its templates, and rendering an event into frozen requests;
//! - `ports`: the traits the pipeline needs from the outside world;
//! - `telemetry`: the one recorder the process reports into (`GET /metrics`, the functions'
//!   CloudWatch metrics, the status route's targets);
//! - `pipeline`: the steps — inbound, render, dispatch — and the birthday run;
//! - `api`: the HTTP router shared by `relay serve` and the inbound Lambda;
//! - `adapters`: the ports' implementations (SQLite, AWS, reqwest, the environment);
//! - `runner`: `relay serve`, the local driver (the Lambda drivers are in `functions/`).

pub mod adapters;
pub mod api;
pub mod domain;
pub mod pipeline;
pub mod policy;
pub mod ports;
pub mod rules;
#[cfg(feature = "local")]
pub mod runner;
pub mod security;
pub mod telemetry;
