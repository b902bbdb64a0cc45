//! The steps an event goes through — inbound, render, dispatch — the replay of deliveries and the
//! daily birthday run.
//! Each is a function of its input and the ports; the drivers (`crate::runner`, the Lambda
//! functions) wire adapters to them.

pub mod birthdays;
pub mod dispatch;
pub mod inbound;
pub mod render;
pub mod replay;
