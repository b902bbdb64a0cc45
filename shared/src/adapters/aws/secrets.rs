//! Credentials from one Secrets Manager secret (JSON), cached per container.
//!
//! ```json
//! {"smartemailing": {"username": "login@example.com", "api_key": "..."},
//!  "api_keys": ["key-for-the-cdp", "key-for-the-shop"],
//!  "admin_keys": ["key-for-the-operators-console"],
//!  "webhook_tokens": ["a-long-random-token-for-smartemailing"],
//!  "webhook_secrets": {"crm_token": "..."}}
//! ```
//!
//! A blank or missing `smartemailing` means dry-run, as locally. The values never reach a log
//! or an error message: a malformed secret is reported by position only.

use crate::domain::secret::{secret_list, SeCredentials, Secret, SecretBundle};
use crate::ports::clock::Clock;
use crate::ports::{Credentials, SecretError};
use async_trait::async_trait;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long fetched secrets are used before they are fetched again.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Deserialize)]
struct SecretDoc {
    #[serde(default)]
    smartemailing: Option<SmartEmailingDoc>,
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    admin_keys: Vec<String>,
    #[serde(default)]
    webhook_tokens: Vec<String>,
    #[serde(default)]
    webhook_secrets: HashMap<String, String>,
}

#[derive(Deserialize)]
struct SmartEmailingDoc {
    #[serde(default)]
    username: String,
    #[serde(default)]
    api_key: String,
}

/// Reads the secret's JSON. The error names the position of a problem, never a value.
pub fn parse_secret(text: &str) -> Result<SecretBundle, SecretError> {
    let doc: SecretDoc = serde_json::from_str(text).map_err(|e| {
        // serde_json's message can quote the offending value: only its position is kept.
        SecretError(format!(
            "the secret is not the expected JSON ({:?} error at line {}, column {}); expected {{\"smartemailing\": {{\"username\", \"api_key\"}}, \"api_keys\": [...], \"admin_keys\": [...], \"webhook_tokens\": [...], \"webhook_secrets\": {{...}}}}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let smartemailing = doc.smartemailing.and_then(|se| {
        let (u, k) = (se.username.trim(), se.api_key.trim());
        (!u.is_empty() && !k.is_empty()).then(|| SeCredentials {
            username: u.to_string(),
            api_key: Secret::new(k),
        })
    });
    Ok(SecretBundle {
        smartemailing,
        api_keys: secret_list(doc.api_keys.iter().map(String::as_str)),
        admin_keys: secret_list(doc.admin_keys.iter().map(String::as_str)),
        webhook_tokens: secret_list(doc.webhook_tokens.iter().map(String::as_str)),
        named: doc
            .webhook_secrets
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
    })
}

struct Cached {
    fetched_at_ms: i64,
    bundle: SecretBundle,
}

/// Credentials from Secrets Manager, fetched at most once per [`CACHE_TTL`] per container.
pub struct SecretsManagerCredentials {
    client: Client,
    secret_id: String,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for SecretsManagerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManagerCredentials")
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

impl SecretsManagerCredentials {
    /// Credentials from the secret `secret_id` (a name or an ARN).
    pub fn new(client: Client, secret_id: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            clock,
            ttl: CACHE_TTL,
            cache: Mutex::new(None),
        }
    }

    /// The secret's contents, from the cache while it is fresh.
    pub async fn bundle(&self) -> Result<SecretBundle, SecretError> {
        let now = self.clock.now_ms();
        // Held across the fetch, so a burst of calls after expiry fetches once.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if now - c.fetched_at_ms < self.ttl.as_millis() as i64 {
                return Ok(c.bundle.clone());
            }
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                SecretError(format!(
                    "cannot read the secret `{}`: {}",
                    self.secret_id,
                    DisplayErrorContext(&e)
                ))
            })?;
        let text = out.secret_string().ok_or_else(|| {
            SecretError(format!(
                "the secret `{}` has no string value (a binary secret is not supported)",
                self.secret_id
            ))
        })?;
        let bundle = parse_secret(text)?;
        *cache = Some(Cached {
            fetched_at_ms: now,
            bundle: bundle.clone(),
        });
        Ok(bundle)
    }
}

#[async_trait]
impl Credentials for SecretsManagerCredentials {
    async fn smartemailing(&self) -> Result<Option<SeCredentials>, SecretError> {
        Ok(self.bundle().await?.smartemailing)
    }

    async fn api_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.bundle().await?.api_keys)
    }

    async fn admin_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.bundle().await?.admin_keys)
    }

    async fn webhook_tokens(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.bundle().await?.webhook_tokens)
    }

    async fn secret(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.bundle().await?.named.get(name).cloned())
    }

    async fn refresh(&self) {
        *self.cache.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_read_whole() {
        let b = parse_secret(
            r#"{"smartemailing": {"username": " u@example.com ", "api_key": "k1"},
                "api_keys": ["a", " ", "b"], "admin_keys": ["ops"], "webhook_secrets": {"crm": "t"}}"#,
        )
        .unwrap();
        assert_eq!(b.admin_keys, vec![Secret::new("ops")]);
        assert_eq!(b.smartemailing.unwrap().username, "u@example.com");
        assert_eq!(b.api_keys, vec![Secret::new("a"), Secret::new("b")]);
        assert_eq!(b.named["crm"], Secret::new("t"));
    }

    #[test]
    fn the_placeholder_means_dry_run_and_no_callers() {
        let b = parse_secret(
            r#"{"smartemailing": {"username": "", "api_key": ""}, "api_keys": [], "webhook_secrets": {}}"#,
        )
        .unwrap();
        assert!(b.smartemailing.is_none());
        assert!(b.api_keys.is_empty());
        assert!(parse_secret("{}").unwrap().smartemailing.is_none());
    }

    #[test]
    fn a_malformed_secret_never_echoes_its_values() {
        let err = parse_secret(r#"{"api_keys": "sk-live-very-secret"}"#).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("sk-live-very-secret"), "{shown}");
        assert!(shown.contains("line 1"), "{shown}");
        let err = parse_secret("sk-live-not-json").unwrap_err();
        assert!(!err.to_string().contains("sk-live"), "{err}");
    }
}
