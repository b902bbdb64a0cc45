//! Finding and loading the rules file, shared by every command that renders.

use crate::{user, Failure};
use anyhow::anyhow;
use relay_shared::rules::config::Config;
use std::path::{Path, PathBuf};

/// The rules file in the working directory, as the quickstart lays it out.
const IN_WORKING_DIR: &str = "config/relay.yaml";

/// The rules file's name when it is kept in the state directory.
const IN_STATE_DIR: &str = "relay.yaml";

/// Where the rules file is: `--config` (or `RELAY_CONFIG`) when given, used as is; else the
/// first that exists of `config/relay.yaml` in the working directory and `relay.yaml` in the
/// state directory. When neither exists, the error names every place looked at.
fn find_config(given: Option<PathBuf>, state: &Path) -> Result<PathBuf, Failure> {
    if let Some(path) = given {
        return Ok(path);
    }
    let mut candidates = vec![PathBuf::from(IN_WORKING_DIR)];
    let beside_state = state.join(IN_STATE_DIR);
    if beside_state != candidates[0] {
        candidates.push(beside_state);
    }
    if let Some(found) = candidates.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    let cwd = std::env::current_dir()
        .map(|d| format!(" (working directory: {})", d.display()))
        .unwrap_or_default();
    Err(user(anyhow!(
        "no rules file: looked for {}{cwd}; pass --config <file> or set RELAY_CONFIG",
        looked.join(" and ")
    )))
}

/// Finds the rules file ([`find_config`]) and loads it: its path and the config.
pub(crate) fn locate_and_load(
    given: Option<PathBuf>,
    state: &Path,
) -> Result<(PathBuf, Config), Failure> {
    let path = find_config(given, state)?;
    let config = load_config(&path)?;
    Ok((path, config))
}

/// Loads and validates the config; `SMARTEMAILING_API_URL` overrides its SmartEmailing URL
/// (the tests and the walk-through point it at a fake).
fn load_config(path: &Path) -> Result<Config, Failure> {
    let mut config = Config::load(path).map_err(user)?;
    if let Ok(url) = std::env::var("SMARTEMAILING_API_URL") {
        if !url.trim().is_empty() {
            config.override_base_url(url.trim());
        }
    }
    Ok(config)
}
