//! Secrets: a type that never prints its value, SmartEmailing's credentials, and the bundle
//! of one deployment's secrets.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
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

/// Non-blank values, trimmed, as secrets (a list of keys or tokens as configured).
pub fn secret_list<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Secret> {
    values
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(Secret::new)
        .collect()
}

/// The secrets of one deployment, held in memory.
#[derive(Clone, Default, Debug)]
pub struct SecretBundle {
    /// SmartEmailing's credentials, if configured.
    pub smartemailing: Option<SeCredentials>,
    /// Inbound API keys: the ingest routes only.
    pub api_keys: Vec<Secret>,
    /// Admin keys: the management API, and the ingest routes too.
    pub admin_keys: Vec<Secret>,
    /// Tokens that authenticate SmartEmailing's registered webhooks by their URL
    /// (`/v1/webhooks/smartemailing/{token}`), for senders that cannot set a header.
    pub webhook_tokens: Vec<Secret>,
    /// Named secrets for webhook actions.
    pub named: HashMap<String, Secret>,
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
