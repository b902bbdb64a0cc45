//! The relay's core: events, rules, rendering, the SmartEmailing client, the ports and
//! their local adapters, and the HTTP router shared by `relay serve` and the inbound Lambda.

#[cfg(feature = "aws")]
pub mod aws;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod duration;
pub mod event;
pub mod http;
pub mod idempotency;
pub mod inbound;
pub mod limits;
#[cfg(feature = "local")]
pub mod local;
pub mod outbound;
pub mod ports;
pub mod queue;
pub mod render;
pub mod render_step;
pub mod rules;
pub mod schedule;
pub mod secrets;
pub mod signature;
pub mod smartemailing;
pub mod transport;
pub mod webhook;
