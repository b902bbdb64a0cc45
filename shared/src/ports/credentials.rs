//! Credentials and secrets.

use crate::domain::secret::{SeCredentials, Secret};
use async_trait::async_trait;

/// A secrets failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("secrets are unavailable: {0}")]
pub struct SecretError(pub String);

/// Credentials and secrets; implementations never log them.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// SmartEmailing's username and API key; `None` means dry-run.
    async fn smartemailing(&self) -> Result<Option<SeCredentials>, SecretError>;
    /// The keys that may call the inbound API.
    async fn api_keys(&self) -> Result<Vec<Secret>, SecretError>;
    /// The keys that may call the management API (and the inbound routes); none by default.
    async fn admin_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(Vec::new())
    }
    /// The tokens that authenticate SmartEmailing's webhooks in their URL.
    async fn webhook_tokens(&self) -> Result<Vec<Secret>, SecretError>;
    /// A named secret for a webhook action.
    async fn secret(&self, name: &str) -> Result<Option<Secret>, SecretError>;
    /// Drops any cached values so the next read fetches fresh ones (after a 401).
    async fn refresh(&self);
}
