//! Secrets: a type that never prints its value, and the local (environment) provider.

use crate::ports::{Credentials, SecretError};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// A secret value: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// SmartEmailing's credentials: the login e-mail and an API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeCredentials {
    /// The account's login e-mail.
    pub username: String,
    /// The API key.
    pub api_key: Secret,
}

impl SeCredentials {
    /// The `Authorization` header value.
    pub fn basic_header(&self) -> String {
        basic_header(&self.username, self.api_key.expose())
    }
}

/// An HTTP Basic `Authorization` value.
pub fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Whether `presented` equals one of `keys`, in time independent of where they differ.
pub fn key_matches(presented: &str, keys: &[Secret]) -> bool {
    // Hashing first makes every comparison the same length.
    let p = Sha256::digest(presented.as_bytes());
    let mut found = subtle::Choice::from(0u8);
    for k in keys {
        let h = Sha256::digest(k.expose().as_bytes());
        found |= p.as_slice().ct_eq(h.as_slice());
    }
    bool::from(found)
}

/// The secrets of one deployment, held in memory.
#[derive(Clone, Default, Debug)]
pub struct SecretBundle {
    /// SmartEmailing's credentials, if configured.
    pub smartemailing: Option<SeCredentials>,
    /// Inbound API keys.
    pub api_keys: Vec<Secret>,
    /// Named secrets for webhook actions.
    pub named: HashMap<String, Secret>,
}

impl SecretBundle {
    /// Reads the local environment: `SMARTEMAILING_USERNAME`, `SMARTEMAILING_API_KEY`,
    /// `RELAY_API_KEYS` (comma-separated) and `RELAY_SECRET_<NAME>` for each named secret.
    pub fn from_env(names: &[String]) -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let smartemailing = match (get("SMARTEMAILING_USERNAME"), get("SMARTEMAILING_API_KEY")) {
            (Some(u), Some(k)) => Some(SeCredentials {
                username: u.trim().to_string(),
                api_key: Secret::new(k.trim()),
            }),
            _ => None,
        };
        let api_keys = get("RELAY_API_KEYS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();
        let named = names
            .iter()
            .filter_map(|n| get(&secret_env_name(n)).map(|v| (n.clone(), Secret::new(v))))
            .collect();
        Self {
            smartemailing,
            api_keys,
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

    async fn secret(&self, name: &str) -> Result<Option<Secret>, SecretError> {
        Ok(self.read().named.get(name).cloned())
    }

    async fn refresh(&self) {
        if let Some(reload) = &self.reload {
            self.replace(reload());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = SeCredentials {
            username: "u@example.com".into(),
            api_key: Secret::new("sk-very-secret"),
        };
        let shown = format!("{c:?} {}", c.api_key);
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }

    #[test]
    fn keys_match_in_constant_time() {
        let keys = vec![Secret::new("old"), Secret::new("new")];
        assert!(key_matches("new", &keys));
        assert!(key_matches("old", &keys));
        assert!(!key_matches("ne", &keys));
        assert!(!key_matches("", &keys));
        assert!(!key_matches("x", &[]));
    }
}
