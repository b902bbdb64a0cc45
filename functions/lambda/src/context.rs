//! What every function builds once per container: the config, the clock and the adapters.
//! The handlers see the adapters only through the ports (`Ports`): DynamoDB, SQS and Secrets
//! Manager on AWS (`Aws`), everything in memory in the tests (`Memory`).

use relay_shared::adapters::aws::{
    AwsAdapters, AwsSettings, DynamoStore, SdkConfig, SecretsManagerCredentials, SqsQueue,
};
use relay_shared::adapters::env_credentials::StaticCredentials;
use relay_shared::adapters::memory::MemoryStore;
use relay_shared::domain::secret::SecretBundle;
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::ports::{
    ContactStore, Credentials, DeadLetters, DeliveryStore, EventStore, Queue, SendLeases,
    TimerStore,
};
use relay_shared::rules::config::{Config, ConfigError};
use relay_shared::telemetry::Telemetry;
use std::sync::Arc;

/// A family of adapters, named by the types of its store, queue and credentials.
pub trait Ports: Clone + Send + Sync + 'static {
    /// Events, deliveries (and their send leases), timers and contacts.
    type Store: EventStore + DeliveryStore + SendLeases + TimerStore + ContactStore + 'static;
    /// The render and dispatch queues and their dead letters.
    type Queue: Queue + DeadLetters + 'static;
    /// SmartEmailing's credentials, the API keys and the webhook secrets.
    type Credentials: Credentials + 'static;
}

/// DynamoDB, SQS and Secrets Manager: what the deployed functions run on.
#[derive(Debug, Clone, Copy)]
pub struct Aws;

impl Ports for Aws {
    type Store = DynamoStore;
    type Queue = SqsQueue;
    type Credentials = SecretsManagerCredentials;
}

/// Every port in memory (`MemoryStore`, `StaticCredentials`): the handlers' tests without AWS.
#[derive(Debug, Clone, Copy)]
pub struct Memory;

impl Ports for Memory {
    type Store = MemoryStore;
    type Queue = MemoryStore;
    type Credentials = StaticCredentials;
}

/// One family's adapters, built once per container.
pub struct Adapters<P: Ports> {
    /// Events, deliveries, timers and contacts.
    pub store: Arc<P::Store>,
    /// The queues and their dead letters.
    pub queue: Arc<P::Queue>,
    /// Credentials and API keys.
    pub credentials: Arc<P::Credentials>,
}

// By hand: a derive would ask the adapters themselves to be `Clone`, not just their `Arc`s.
impl<P: Ports> Clone for Adapters<P> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            queue: self.queue.clone(),
            credentials: self.credentials.clone(),
        }
    }
}

impl From<AwsAdapters> for Adapters<Aws> {
    fn from(aws: AwsAdapters) -> Self {
        Self {
            store: aws.store,
            queue: aws.queue,
            credentials: aws.credentials,
        }
    }
}

/// A function's wiring, built at cold start and shared by every invocation.
#[derive(Clone)]
pub struct Context<P: Ports = Aws> {
    /// The bundled config.
    pub config: Arc<Config>,
    /// The adapters.
    pub ports: Adapters<P>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The container's one recorder; each invocation writes what it added (`metrics`).
    pub telemetry: Arc<Telemetry>,
}

/// Parses a config and applies the environment's `SMARTEMAILING_API_URL`, as `relay serve` does.
pub fn load_config(text: &str) -> Result<Config, ConfigError> {
    let mut config = Config::parse(text, "the bundled config/relay.yaml")?;
    if let Ok(url) = std::env::var("SMARTEMAILING_API_URL") {
        if !url.trim().is_empty() {
            config.override_base_url(url.trim());
        }
    }
    Ok(config)
}

impl<P: Ports> Context<P> {
    /// Wires a config to adapters and a clock.
    pub fn with_ports(config: Config, ports: Adapters<P>, clock: Arc<dyn Clock>) -> Self {
        Self {
            telemetry: Arc::new(Telemetry::for_config(&config)),
            config: Arc::new(config),
            ports,
            clock,
        }
    }
}

impl Context<Aws> {
    /// Builds everything from the function's environment and the bundled config.
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = load_config(crate::BUNDLED_CONFIG)?;
        let settings = AwsSettings::from_env()?;
        let sdk = relay_shared::adapters::aws::lambda_sdk_config().await?;
        Ok(Self::new(config, &sdk, &settings, Arc::new(SystemClock)))
    }

    /// Builds everything from parts (the tests' emulator, a fixed clock).
    pub fn new(
        config: Config,
        sdk: &SdkConfig,
        settings: &AwsSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // The TTLs the store writes follow the config's `retention:`, as `relay serve`'s sweeper.
        let aws = AwsAdapters::new(sdk, settings, clock.clone())
            .with_retention(config.retention.windows());
        Self::with_ports(config, aws.into(), clock)
    }
}

impl Context<Memory> {
    /// Everything in memory: one empty store (which is also the queues) on `clock`, and
    /// `secrets` as the credentials.
    pub fn in_memory(config: Config, secrets: SecretBundle, clock: Arc<dyn Clock>) -> Self {
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let ports = Adapters {
            store: store.clone(),
            queue: store,
            credentials: Arc::new(StaticCredentials::new(secrets)),
        };
        Self::with_ports(config, ports, clock)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_config_loads() {
        let config =
            super::load_config(crate::BUNDLED_CONFIG).expect("the build script validated it");
        assert!(!config.rules.is_empty());
    }
}
