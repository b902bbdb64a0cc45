//! Credentials from the local environment (`relay serve`): `SMARTEMAILING_USERNAME`,
//! `SMARTEMAILING_API_KEY`, `RELAY_API_KEYS`, `RELAY_ADMIN_KEYS` and `RELAY_SECRET_<NAME>`; also held in memory
//! for tests.

use crate::domain::secret::{secret_list, SeCredentials, Secret, SecretBundle};
use crate::ports::{Credentials, SecretError};
use async_trait::async_trait;
use std::fmt;
use std::sync::RwLock;

impl SecretBundle {
    /// Reads the local environment: `SMARTEMAILING_USERNAME`, `SMARTEMAILING_API_KEY`,
    /// `RELAY_API_KEYS`, `RELAY_ADMIN_KEYS` and `RELAY_WEBHOOK_TOKENS` (comma-separated) and `RELAY_SECRET_<NAME>` for each named secret.
    pub fn from_env(names: &[String]) -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let smartemailing = match (get("SMARTEMAILING_USERNAME"), get("SMARTEMAILING_API_KEY")) {
            (Some(u), Some(k)) => Some(SeCredentials {
                username: u.trim().to_string(),
                api_key: Secret::new(k.trim()),
            }),
            _ => None,
        };
        let list = |k: &str| {
            get(k)
                .map(|v| secret_list(v.split(',')))
                .unwrap_or_default()
        };
        let api_keys = list("RELAY_API_KEYS");
        let admin_keys = list("RELAY_ADMIN_KEYS");
        let webhook_tokens = list("RELAY_WEBHOOK_TOKENS");
        let named = names
            .iter()
            .filter_map(|n| get(&secret_env_name(n)).map(|v| (n.clone(), Secret::new(v))))
            .collect();
        Self {
            smartemailing,
            api_keys,
            admin_keys,
            webhook_tokens,
            named,
        }
    }
}

/// The environment variable holding a named secret locally: `RELAY_SECRET_<NAME>`.
pub fn secret_env_name(name: &str) -> String {
    format!(
        "RELAY_SECRET_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Credentials held in memory; `replace` swaps them (a rotation, or a test's fixed key).
#[derive(Default)]
pub struct StaticCredentials {
    bundle: RwLock<SecretBundle>,
    reload: Option<Box<dyn Fn() -> SecretBundle + Send + Sync>>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials(***)")
    }
}

impl StaticCredentials {
    /// Fixed credentials.
    pub fn new(bundle: SecretBundle) -> Self {
        Self {
            bundle: RwLock::new(bundle),
            reload: None,
        }
    }

    /// Credentials re-read from the environment on `refresh`.
    pub fn from_env(names: Vec<String>) -> Self {
        let bundle = SecretBundle::from_env(&names);
        Self {
            bundle: RwLock::new(bundle),
            reload: Some(Box::new(move || SecretBundle::from_env(&names))),
        }
    }

    /// Replaces the held secrets.
    pub fn replace(&self, bundle: SecretBundle) {
        *self.bundle.write().unwrap_or_else(|p| p.into_inner()) = bundle;
    }

    fn read(&self) -> SecretBundle {
        self.bundle
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Credentials for StaticCredentials {
    async fn smartemailing(&self) -> Result<Option<SeCredentials>, SecretError> {
        Ok(self.read().smartemailing)
    }

    async fn api_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.read().api_keys)
    }

    async fn admin_keys(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.read().admin_keys)
    }

    async fn webhook_tokens(&self) -> Result<Vec<Secret>, SecretError> {
        Ok(self.read().webhook_tokens)
    }

    async fn secret(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.read().named.get(name).cloned())
    }

    async fn refresh(&self) {
        if let Some(reload) = &self.reload {
            self.replace(reload());
        }
    }
}
