//! The ports' implementations: SQLite for `relay serve`, DynamoDB, SQS and Secrets Manager on
//! AWS, reqwest for outgoing HTTP, and credentials from the environment.

#[cfg(feature = "aws")]
pub mod aws;
pub mod env_credentials;
pub mod reqwest;
#[cfg(feature = "local")]
pub mod sqlite;
#[cfg(feature = "local")]
pub mod state_lock;
