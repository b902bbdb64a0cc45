//! Loading the rules file, shared by every command that renders.

use crate::{user, Failure};
use relay_shared::rules::config::Config;
use std::path::Path;

/// Loads and validates the config; `SMARTEMAILING_API_URL` overrides its SmartEmailing URL
/// (the tests and the walk-through point it at a fake).
pub(crate) fn load_config(path: &Path) -> Result<Config, Failure> {
    let mut config = Config::load(path).map_err(user)?;
    if let Ok(url) = std::env::var("SMARTEMAILING_API_URL") {
        if !url.trim().is_empty() {
            config.override_base_url(url.trim());
        }
    }
    Ok(config)
}
