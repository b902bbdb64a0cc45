//! The AWS adapters: DynamoDB (events and deliveries), SQS (the queues and their dead
//! letters) and Secrets Manager (credentials). Behind the `aws` feature so the local build
//! does not compile the AWS SDK.
//!
//! Every client honours `AWS_ENDPOINT_URL` (and the per-service `AWS_ENDPOINT_URL_<SERVICE>`)
//! through aws-config's default chain, so tests point them at a local emulator.

pub mod dynamodb;
pub mod secrets;
pub mod sqs;

pub use dynamodb::DynamoStore;
pub use secrets::SecretsManagerCredentials;
pub use sqs::{DeadLetter, SqsQueue};

pub use aws_config::SdkConfig;

use crate::domain::retention::Retention;
use crate::ports::clock::{Clock, SystemClock};
use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::sync::Arc;

/// Which certificate authorities the SDK's HTTPS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The machine's own store: the `relay` CLI on an operator's machine, which may reach AWS
    /// through a proxy whose authority only that store knows.
    System,
    /// Amazon Trust Services' roots, compiled in. Every AWS endpoint's certificate chains to
    /// one of them, and a Lambda function then starts without reading and parsing the
    /// system's hundred-odd certificates (about 4 ms of each cold start; BENCHMARKS.md).
    Amazon,
}

/// The roots of Amazon Trust Services (Amazon Root CA 1 to 4 and the Starfield Services root
/// they are cross-signed by), as Mozilla's store ships them.
const AMAZON_ROOTS: &[u8] = include_bytes!("amazon-trust-services-roots.pem");

/// The AWS tools' convention for "trust this bundle instead": a PEM file's path.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// Why the SDK's configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SdkConfigError {
    /// `AWS_CA_BUNDLE` names a file that cannot be read or holds no PEM certificate.
    #[error("AWS_CA_BUNDLE ({path}): {reason}")]
    CaBundle {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// An HTTP client for the SDK: rustls on ring, like reqwest's (no OpenSSL, no aws-lc),
/// trusting the machine's store.
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    https_client(tls::TrustStore::default())
}

pub(crate) fn https_client(store: tls::TrustStore) -> aws_sdk_dynamodb::config::SharedHttpClient {
    // `build` cannot fail (it only moves the store in); the default is never taken.
    let context = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https()
}

/// The trust store for `trust`, or the bundle `AWS_CA_BUNDLE` names (alone) when it is set.
pub fn trust_store(trust: Trust) -> Result<tls::TrustStore, SdkConfigError> {
    let bundle = std::env::var_os(CA_BUNDLE_VAR).filter(|p| !p.is_empty());
    trust_store_from(trust, bundle.as_deref().map(std::path::Path::new))
}

fn trust_store_from(
    trust: Trust,
    bundle: Option<&std::path::Path>,
) -> Result<tls::TrustStore, SdkConfigError> {
    let bad = |path: &str, reason: String| SdkConfigError::CaBundle {
        path: path.to_string(),
        reason,
    };
    if let Some(path) = bundle {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| bad(&shown, e.to_string()))?;
        return pem_store(pem).map_err(|reason| bad(&shown, reason));
    }
    match trust {
        Trust::System => Ok(tls::TrustStore::default()),
        // Checked to parse by a unit test, not at each cold start.
        Trust::Amazon => Ok(tls::TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AMAZON_ROOTS)),
    }
}

/// A store of exactly the certificates in `pem`, each checked to parse (the SDK would panic
/// on a bad one at its first connection instead).
fn pem_store(pem: Vec<u8>) -> Result<tls::TrustStore, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem))
}

/// Loads the SDK configuration from the environment: region, credentials (the SDK's whole
/// default chain: profiles, SSO, web identity, the instance's role), and the endpoint
/// override `AWS_ENDPOINT_URL` when set; the machine's certificate store (or `AWS_CA_BUNDLE`).
pub async fn sdk_config() -> Result<SdkConfig, SdkConfigError> {
    let client = https_client(trust_store(Trust::System)?);
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .http_client(client)
        .load()
        .await)
}

/// The SDK configuration of a Lambda function: Amazon's roots (or `AWS_CA_BUNDLE`), and
/// the region and credentials Lambda puts in the environment taken from there directly, so
/// no other provider of the default chains is built at cold start. Without them (another
/// host) the default chains, as `sdk_config`.
pub async fn lambda_sdk_config() -> Result<SdkConfig, SdkConfigError> {
    let client = https_client(trust_store(Trust::Amazon)?);
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(client);
    if let Some(region) = env_nonempty("AWS_REGION") {
        loader = loader.region(aws_config::Region::new(region));
    }
    if env_nonempty("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    Ok(loader.load().await)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().and_then(nonblank)
}

/// A setting's value trimmed, `None` when blank (a blank variable counts as unset).
fn nonblank(v: String) -> Option<String> {
    Some(v.trim().to_string()).filter(|v| !v.is_empty())
}

/// An SDK configuration for a local emulator (moto, LocalStack) at `endpoint`: fixed test
/// credentials and region, nothing read from the environment.
pub async fn emulator_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("eu-central-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "emulator",
        ))
        .load()
        .await
}

/// Where the deployment's resources are, read from the function's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The DynamoDB table (`TABLE_NAME`).
    pub table: String,
    /// The render queue's URL (`RENDER_QUEUE_URL`).
    pub render_queue_url: String,
    /// The dispatch queue's URL (`DISPATCH_QUEUE_URL`).
    pub dispatch_queue_url: String,
    /// The render dead-letter queue's URL (`RENDER_DLQ_URL`), where poison jobs go.
    pub render_dlq_url: Option<String>,
    /// The dispatch dead-letter queue's URL (`DISPATCH_DLQ_URL`), where dead deliveries go.
    pub dispatch_dlq_url: Option<String>,
    /// The secret's name or ARN (`SECRET_ID`).
    pub secret_id: String,
}

/// A setting the function's environment lacks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the environment variable {0} is not set (template.yaml sets it for each function)")]
pub struct MissingSetting(pub &'static str);

impl AwsSettings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, MissingSetting> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, MissingSetting> {
        Self::read(get, true)
    }

    /// Reads the settings; `SECRET_ID` is left empty unless `with_secret` (for `AwsStores`,
    /// which builds no credentials).
    fn read(
        get: impl Fn(&str) -> Option<String>,
        with_secret: bool,
    ) -> Result<Self, MissingSetting> {
        let opt = |k: &str| get(k).and_then(nonblank);
        let req = |k: &'static str| opt(k).ok_or(MissingSetting(k));
        Ok(Self {
            table: req("TABLE_NAME")?,
            render_queue_url: req("RENDER_QUEUE_URL")?,
            dispatch_queue_url: req("DISPATCH_QUEUE_URL")?,
            render_dlq_url: opt("RENDER_DLQ_URL"),
            dispatch_dlq_url: opt("DISPATCH_DLQ_URL"),
            secret_id: if with_secret {
                req("SECRET_ID")?
            } else {
                String::new()
            },
        })
    }
}

/// The table and the queues without the credentials: for callers that read no secret, such
/// as the CLI's `--aws` commands (so they need no `SECRET_ID`).
#[derive(Clone)]
pub struct AwsStores {
    /// Events and deliveries.
    pub store: Arc<DynamoStore>,
    /// The queues and their dead letters.
    pub queue: Arc<SqsQueue>,
}

impl AwsStores {
    /// Reads `TABLE_NAME` and the queue URLs from the environment and builds the clients.
    pub fn from_env(sdk: &SdkConfig) -> Result<Self, MissingSetting> {
        Self::from_lookup(sdk, |k| std::env::var(k).ok())
    }

    /// Reads `TABLE_NAME` and the queue URLs through `get` and builds the clients.
    pub fn from_lookup(
        sdk: &SdkConfig,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, MissingSetting> {
        Ok(Self::new(
            sdk,
            &AwsSettings::read(get, false)?,
            Arc::new(SystemClock),
        ))
    }

    /// Keeps finished deliveries for these windows (the config's `retention:`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.store = Arc::new(DynamoStore::clone(&self.store).with_retention(retention));
        self
    }

    fn new(sdk: &SdkConfig, settings: &AwsSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            store: Arc::new(DynamoStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                settings.table.clone(),
                clock,
            )),
            queue: Arc::new(SqsQueue::new(
                aws_sdk_sqs::Client::new(sdk),
                sqs::QueueUrls {
                    render: settings.render_queue_url.clone(),
                    dispatch: settings.dispatch_queue_url.clone(),
                    render_dlq: settings.render_dlq_url.clone(),
                    dispatch_dlq: settings.dispatch_dlq_url.clone(),
                },
            )),
        }
    }
}

/// The adapters a function needs, built once per container.
#[derive(Clone)]
pub struct AwsAdapters {
    /// Events and deliveries.
    pub store: Arc<DynamoStore>,
    /// The queues and their dead letters.
    pub queue: Arc<SqsQueue>,
    /// Credentials and API keys.
    pub credentials: Arc<SecretsManagerCredentials>,
}

impl AwsAdapters {
    /// Builds the clients from one SDK configuration.
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings, clock: Arc<dyn Clock>) -> Self {
        let AwsStores { store, queue } = AwsStores::new(sdk, settings, clock.clone());
        Self {
            store,
            queue,
            credentials: Arc::new(SecretsManagerCredentials::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                settings.secret_id.clone(),
                clock,
            )),
        }
    }

    /// Keeps finished deliveries for these windows (the config's `retention:`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.store = Arc::new(DynamoStore::clone(&self.store).with_retention(retention));
        self
    }
}

#[cfg(test)]
mod trust_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::queue::QueueName;
    use std::collections::HashMap;

    #[test]
    fn settings_name_what_is_missing() {
        let mut env: HashMap<&str, &str> = HashMap::from([
            ("TABLE_NAME", "relay"),
            ("RENDER_QUEUE_URL", "http://q/render"),
            ("DISPATCH_QUEUE_URL", "http://q/dispatch"),
            ("DISPATCH_DLQ_URL", " "),
        ]);
        let read = |env: &HashMap<&str, &str>| {
            AwsSettings::from_lookup(|k| env.get(k).map(|v| v.to_string()))
        };
        let err = read(&env).unwrap_err();
        assert!(err.to_string().contains("SECRET_ID"), "{err}");
        env.insert("SECRET_ID", "relay/secrets");
        let s = read(&env).unwrap();
        assert_eq!(s.table, "relay");
        assert_eq!(s.dispatch_dlq_url, None, "a blank value counts as unset");
    }

    #[tokio::test]
    async fn the_stores_alone_need_no_secret() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("TABLE_NAME", "relay"),
            ("RENDER_QUEUE_URL", "http://q/render"),
            ("DISPATCH_QUEUE_URL", "http://q/dispatch"),
        ]);
        let sdk = emulator_config("http://127.0.0.1:9").await;
        let stores = AwsStores::from_lookup(&sdk, |k| env.get(k).map(|v| v.to_string()));
        let stores = stores.map_err(|e| e.to_string()).unwrap();
        assert_eq!(stores.queue.url(QueueName::Dispatch), "http://q/dispatch");
        let none = AwsStores::from_lookup(&sdk, |_| None).err().map(|e| e.0);
        assert_eq!(none, Some("TABLE_NAME"));
    }
}
