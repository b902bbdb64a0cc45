//! What every function builds once per container: the config, the clock and the adapters.

use relay_shared::adapters::aws::{AwsAdapters, AwsSettings, SdkConfig};
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::rules::config::{Config, ConfigError};
use std::sync::Arc;

/// A function's wiring, built at cold start and shared by every invocation.
#[derive(Clone)]
pub struct Context {
    /// The bundled config.
    pub config: Arc<Config>,
    /// DynamoDB, SQS and Secrets Manager.
    pub aws: AwsAdapters,
    /// The clock.
    pub clock: Arc<dyn Clock>,
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

impl Context {
    /// Builds everything from the function's environment and the bundled config.
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = load_config(crate::BUNDLED_CONFIG)?;
        let settings = AwsSettings::from_env()?;
        let sdk = relay_shared::adapters::aws::sdk_config().await;
        Ok(Self::new(config, &sdk, &settings, Arc::new(SystemClock)))
    }

    /// Builds everything from parts (the tests' emulator, a fixed clock).
    pub fn new(
        config: Config,
        sdk: &SdkConfig,
        settings: &AwsSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config: Arc::new(config),
            aws: AwsAdapters::new(sdk, settings, clock.clone()),
            clock,
        }
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
