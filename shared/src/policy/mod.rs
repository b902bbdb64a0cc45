//! Pure decisions with no I/O: when a target's circuit opens and how calls are paced.

pub mod breaker;
