//! Checks on what comes in and where the relay may send: bounded JSON, Standard Webhooks
//! signatures, and the outbound (SSRF) policy.

pub mod limits;
pub mod outbound;
pub mod signature;
