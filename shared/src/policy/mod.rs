//! Pure decisions with no I/O: what an answer means, when a delivery is tried again, when a
//! target's circuit opens and how calls are paced, how long a delivery may wait.

pub mod age;
pub mod breaker;
pub mod classify;
pub mod retry;
