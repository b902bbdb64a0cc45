//! The domain: what the relay is about, with no I/O — events, deliveries, idempotency
//! records, secrets, durations, HTTP answers and SmartEmailing's request and answer shapes.

pub mod delivery;
pub mod duration;
pub mod event;
pub mod http;
pub mod idempotency;
pub mod retention;
pub mod secret;
pub mod smartemailing;
pub mod smartemailing_webhook;
