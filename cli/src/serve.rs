//! `relay serve`: the HTTP API and the delivery workers on an embedded SQLite store.

use crate::config::locate_and_load;
use crate::{internal, user, Failure};
use anyhow::{anyhow, Context as _};
use relay_shared::adapters::env_credentials::{secret_env_name, StaticCredentials};
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::adapters::state_lock::{StateLock, StateLockError};
use relay_shared::api::router::DEFAULT_BODY_LIMIT;
use relay_shared::ports::clock::SystemClock;
use relay_shared::ports::Credentials;
use relay_shared::rules::config::Config;
use relay_shared::runner::{start, RunnerOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Runs the relay until SIGINT or SIGTERM, then finishes the work in flight.
pub(crate) async fn serve(
    config: Option<PathBuf>,
    listen: &str,
    state: &Path,
) -> Result<ExitCode, Failure> {
    let (config_path, config) = locate_and_load(config, state)?;
    let config = Arc::new(config);
    let stop = stop_signal();
    let (credentials, dry_run, unset) = credentials(&config).await?;
    // Held until the process ends: a second `serve` on this state is refused.
    let mut lock = lock_state(state, listen)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
        .map_err(user)?;
    let transport = Arc::new(ReqwestTransport::new().map_err(internal)?);
    let relay = start(
        listener,
        RunnerOptions {
            config: config.clone(),
            state_dir: state.to_path_buf(),
            credentials,
            clock: Arc::new(SystemClock),
            transport,
            body_limit: DEFAULT_BODY_LIMIT,
            poll_interval: Duration::from_millis(250),
            seed: None,
        },
    )
    .await
    .map_err(internal)?;
    // Only the note is lost if this fails (the lock holds), so it is no reason to stop.
    if let Err(e) = lock.record(&format!("listening on {}", relay.addr)) {
        tracing::warn!(error = %e, "cannot note the address in the state lock");
    }
    warn_at_start(dry_run, &unset);
    tracing::info!(
        addr = %relay.addr,
        rules = config.rules.len(),
        smartemailing = %config.smartemailing.base_url,
        state = %state.display(),
        config = %config_path.display(),
        "relay listening"
    );
    stop.await;
    tracing::info!("stopping: no new requests; finishing the work in flight");
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The credentials from the environment, whether the relay runs dry (no SmartEmailing
/// credentials), and the webhook secrets that are not set (name, variable). Refuses to start
/// with no key at all (neither ingest nor admin keys).
async fn credentials(
    config: &Config,
) -> Result<(Arc<StaticCredentials>, bool, Vec<(String, String)>), Failure> {
    let credentials = Arc::new(StaticCredentials::from_env(config.secret_names.clone()));
    // Admin keys reach every route, ingest included, so they alone are enough to start.
    let no_ingest = credentials.api_keys().await.map_err(internal)?.is_empty();
    if no_ingest && credentials.admin_keys().await.map_err(internal)?.is_empty() {
        return Err(user(anyhow!(
            "RELAY_API_KEYS is not set (nor RELAY_ADMIN_KEYS): give one or more comma-separated keys that callers send as `Authorization: Bearer <key>`"
        )));
    }
    let dry_run = credentials
        .smartemailing()
        .await
        .map_err(internal)?
        .is_none();
    let mut unset = Vec::new();
    for name in &config.secret_names {
        if credentials.secret(name).await.map_err(internal)?.is_none() {
            unset.push((name.clone(), secret_env_name(name)));
        }
    }
    Ok((credentials, dry_run, unset))
}

/// Says what the relay will not do: in dry-run nothing is sent, webhook actions included,
/// so a missing webhook secret fails nothing yet — one line says what this mode does and
/// names the secrets a real run will need; a sending relay warns of each missing secret.
fn warn_at_start(dry_run: bool, unset: &[(String, String)]) {
    if dry_run {
        let variables: Vec<&str> = unset.iter().map(|(_, v)| v.as_str()).collect();
        tracing::warn!("{}", dry_run_warning(&variables));
        return;
    }
    for (name, variable) in unset {
        tracing::warn!(secret = %name, variable = %variable, "a webhook secret is not set; its deliveries will fail");
    }
}

/// The one start-up line of a dry run; `unset` are the variables of missing webhook secrets.
fn dry_run_warning(unset: &[&str]) -> String {
    let mut line = String::from(
        "DRY RUN: SMARTEMAILING_USERNAME and SMARTEMAILING_API_KEY are not set, so nothing is sent (webhook actions neither); every delivery is rendered and recorded as dry_run. Set both and restart to send",
    );
    if !unset.is_empty() {
        line.push_str(&format!(
            "; the webhook actions will then also need {}",
            unset.join(", ")
        ));
    }
    line
}

/// The exclusive lock on the state directory; another relay holding it is the user's to
/// resolve, so it exits 1 naming the directory and that relay's pid.
fn lock_state(state: &Path, listen: &str) -> Result<StateLock, Failure> {
    StateLock::acquire(state, &format!("listening on {listen}")).map_err(|e| match e {
        StateLockError::Held { dir, holder } => user(anyhow!(
            "another `relay serve` runs on the state directory {} ({holder}): stop it, or give this one its own --state (two relays on one state would send the same deliveries twice)",
            dir.display()
        )),
        e @ StateLockError::Io { .. } => internal(e),
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// it is first awaited: a signal that comes while the relay starts (say, right after its
/// first `/health` answer) then stops it cleanly instead of killing it.
#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = signal(SignalKind::terminate()).and_then(|term| {
        let int = signal(SignalKind::interrupt())?;
        Ok((term, int))
    });
    async move {
        match handlers {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_says_once_what_it_does_and_names_the_secrets_a_real_run_needs() {
        let line = dry_run_warning(&["RELAY_SECRET_COLLECTOR_TOKEN"]);
        assert!(line.starts_with("DRY RUN"), "{line}");
        assert!(line.contains("recorded as dry_run"), "{line}");
        assert!(
            line.ends_with("also need RELAY_SECRET_COLLECTOR_TOKEN"),
            "{line}"
        );
        assert!(!line.contains("will fail"), "{line}");
        assert!(dry_run_warning(&[]).ends_with("restart to send"));
    }
}
