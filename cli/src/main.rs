//! `relay`: run smartemailing-relay on one machine, check its config, inspect and replay deliveries.

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use relay_shared::adapters::env_credentials::{secret_env_name, StaticCredentials};
use relay_shared::adapters::reqwest::ReqwestTransport;
use relay_shared::adapters::sqlite::SqliteStore;
use relay_shared::api::router::{preview, DEFAULT_BODY_LIMIT};
use relay_shared::domain::delivery::{DeliveryId, DeliveryStatus};
use relay_shared::domain::event::parse_event;
use relay_shared::pipeline::dispatch::replay;
use relay_shared::ports::clock::{Clock, SystemClock};
use relay_shared::ports::{Credentials, DeliveryFilter, DeliveryStore, EventStore, Queue};
use relay_shared::rules::config::Config;
use relay_shared::rules::render::{render_event, NotRendered};
use relay_shared::runner::{start, RunnerOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Relay CDP and e-shop events to SmartEmailing.
#[derive(Parser, Debug)]
#[command(name = "relay", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP API and the delivery workers on an embedded SQLite store.
    ///
    /// Credentials come from SMARTEMAILING_USERNAME and SMARTEMAILING_API_KEY; without them
    /// the relay runs in dry-run (renders and records, sends nothing). Inbound API keys come
    /// from RELAY_API_KEYS (comma-separated).
    Serve {
        /// The rules file.
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Directory for the SQLite state.
        #[arg(long, default_value = ".relay")]
        state: PathBuf,
    },
    /// Validate the config and render every rule against the sample events.
    Check {
        /// The rules file.
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
        /// Directory of sample events (*.json).
        #[arg(long, default_value = "events")]
        events: PathBuf,
    },
    /// Print what the rules would send for an event (credentials masked).
    Render {
        /// The event (JSON file).
        #[arg(long)]
        event: PathBuf,
        /// The rules file.
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
    },
    /// List deliveries.
    Deliveries {
        /// Only this status (pending, retrying, sent, dead, skipped, dry_run).
        #[arg(long)]
        status: Option<String>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// Only those created since: an RFC 3339 time, or a duration ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Directory of the SQLite state.
        #[arg(long, default_value = ".relay")]
        state: PathBuf,
        /// Read the deployed relay's DynamoDB table instead (TABLE_NAME, DISPATCH_QUEUE_URL,
        /// RENDER_QUEUE_URL from the stack's outputs; a build with `--features aws`).
        #[arg(long)]
        aws: bool,
    },
    /// Birthday campaigns.
    Birthdays {
        #[command(subcommand)]
        command: BirthdaysCommand,
    },
    /// Send deliveries again with their original ids (a delivery already sent is never resent).
    Replay {
        /// Delivery ids to replay.
        ids: Vec<String>,
        /// Replay every dead delivery (with --rule / --since to narrow).
        #[arg(long)]
        all_dead: bool,
        /// With --all-dead: only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// With --all-dead: only those created since (RFC 3339, or a duration ago).
        #[arg(long)]
        since: Option<String>,
        /// The rules file (to re-render deliveries whose rendering failed).
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
        /// Directory of the SQLite state.
        #[arg(long, default_value = ".relay")]
        state: PathBuf,
        /// Replay on the deployed relay: DynamoDB records back to pending, jobs onto the
        /// dispatch queue (TABLE_NAME, DISPATCH_QUEUE_URL, RENDER_QUEUE_URL; `--features aws`).
        #[arg(long)]
        aws: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BirthdaysCommand {
    /// Emit `contact.birthday` events for everyone whose birthday is on the date (safe beside
    /// a running `relay serve`, and safe to repeat: each contact is congratulated once a year).
    Run {
        /// The date (YYYY-MM-DD); today in `schedules.time_zone` by default.
        #[arg(long)]
        date: Option<String>,
        /// The rules file.
        #[arg(long, default_value = "config/relay.yaml")]
        config: PathBuf,
        /// Directory of the SQLite state.
        #[arg(long, default_value = ".relay")]
        state: PathBuf,
    },
}

/// A failure the user can fix (exit 1) or an internal one (exit 2).
enum Failure {
    User(anyhow::Error),
    Internal(anyhow::Error),
}

fn user(e: impl Into<anyhow::Error>) -> Failure {
    Failure::User(e.into())
}

fn internal(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Internal(e.into())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(Failure::User(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("internal error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    let mut config = Config::load(path).map_err(user)?;
    if let Ok(url) = std::env::var("SMARTEMAILING_API_URL") {
        if !url.trim().is_empty() {
            config.override_base_url(url.trim());
        }
    }
    Ok(config)
}

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Serve {
            config,
            listen,
            state,
        } => serve(&config, &listen, &state).await,
        Command::Check { config, events } => check(&config, &events),
        Command::Render { event, config } => render(&event, &config),
        Command::Deliveries {
            status,
            rule,
            since,
            limit,
            json,
            state,
            aws,
        } => {
            deliveries(
                status,
                rule,
                since,
                limit,
                json,
                &open_stores(&state, aws).await?,
            )
            .await
        }
        Command::Birthdays {
            command:
                BirthdaysCommand::Run {
                    date,
                    config,
                    state,
                },
        } => birthdays_run(date, &config, &state).await,
        Command::Replay {
            ids,
            all_dead,
            rule,
            since,
            config,
            state,
            aws,
        } => {
            let stores = open_stores(&state, aws).await?;
            replay_cmd(ids, all_dead, rule, since, &config, &stores).await
        }
    }
}

async fn serve(config_path: &Path, listen: &str, state: &Path) -> Result<ExitCode, Failure> {
    let config = Arc::new(load_config(config_path)?);
    let credentials = Arc::new(StaticCredentials::from_env(config.secret_names.clone()));
    if credentials.api_keys().await.map_err(internal)?.is_empty() {
        return Err(user(anyhow!(
            "RELAY_API_KEYS is not set: give one or more comma-separated keys that callers send as `Authorization: Bearer <key>`"
        )));
    }
    let dry_run = credentials
        .smartemailing()
        .await
        .map_err(internal)?
        .is_none();
    for name in &config.secret_names {
        if credentials.secret(name).await.map_err(internal)?.is_none() {
            tracing::warn!(secret = %name, variable = %secret_env_name(name), "a webhook secret is not set; its deliveries will fail");
        }
    }
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
    if dry_run {
        tracing::warn!("DRY RUN: SMARTEMAILING_USERNAME and SMARTEMAILING_API_KEY are not set, so nothing will be sent; deliveries are rendered and recorded as dry_run");
    }
    tracing::info!(
        addr = %relay.addr,
        rules = config.rules.len(),
        smartemailing = %config.smartemailing.base_url,
        state = %state.display(),
        "relay listening"
    );
    wait_for_signal().await;
    tracing::info!("stopping: no new requests; finishing the work in flight");
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check(config_path: &Path, events_dir: &Path) -> Result<ExitCode, Failure> {
    let config = load_config(config_path)?;
    println!(
        "{}: {} rules, valid",
        config_path.display(),
        config.rules.len()
    );
    let mut files: Vec<PathBuf> = match std::fs::read_dir(events_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            println!("no sample events checked ({}: {e})", events_dir.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    files.sort();
    let now = Utc::now();
    let mut problems = Vec::new();
    let mut rendered = 0usize;
    let mut checked = 0usize;
    for file in &files {
        let text =
            std::fs::read_to_string(file).map_err(|e| user(anyhow!("{}: {e}", file.display())))?;
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{}: not JSON: {e}", file.display()));
                continue;
            }
        };
        // Only domain events are checked; other fixtures (API Gateway, SQS) live beside them.
        if value.get("type").is_none() || value.get("id").is_none() {
            continue;
        }
        let event = match parse_event(&value, "", now) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        checked += 1;
        for r in render_event(&config, &event, None, now) {
            match r.result {
                Ok(_) => rendered += 1,
                Err(NotRendered::Failed(why)) => problems.push(format!(
                    "{}: rule {} action {} ({}): {why}",
                    file.display(),
                    r.rule,
                    r.index,
                    r.action
                )),
                Err(NotRendered::Skipped(why)) => println!(
                    "  note: {}: rule {}: skipped: {why}",
                    file.display(),
                    r.rule
                ),
            }
        }
        // Chain-only rules have no `on`: render them against every sample that reaches them.
        for rule in config.rules.iter().filter(|r| r.on.is_empty()) {
            for r in render_event(&config, &event, Some(std::slice::from_ref(&rule.name)), now) {
                if let Err(NotRendered::Failed(why)) = r.result {
                    if reaches(&config, &event, &rule.name) {
                        problems.push(format!(
                            "{}: chained rule {} action {}: {why}",
                            file.display(),
                            r.rule,
                            r.index
                        ));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        println!("{checked} sample events rendered into {rendered} requests without errors");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        eprintln!("{} problem(s)", problems.len());
        Ok(ExitCode::from(1))
    }
}

/// Whether a chain starting from a rule the event matches reaches `target`.
fn reaches(config: &Config, event: &relay_shared::domain::event::Event, target: &str) -> bool {
    let mut stack: Vec<&str> = config
        .rules
        .iter()
        .filter(|r| r.listens_for(event.kind.as_str()))
        .map(|r| r.name.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(rule) = config.rule(name) {
            for step in &rule.then {
                if step.rule == target {
                    return true;
                }
                stack.push(&step.rule);
            }
        }
    }
    false
}

fn render(event_path: &Path, config_path: &Path) -> Result<ExitCode, Failure> {
    let config = load_config(config_path)?;
    let text = std::fs::read_to_string(event_path)
        .with_context(|| format!("cannot read {}", event_path.display()))
        .map_err(user)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", event_path.display()))
        .map_err(user)?;
    let now = Utc::now();
    let event =
        parse_event(&value, "", now).map_err(|e| user(anyhow!("{}: {e}", event_path.display())))?;
    let out = serde_json::json!({"deliveries": preview(&config, &event, now)});
    println!("{}", serde_json::to_string_pretty(&out).map_err(internal)?);
    Ok(ExitCode::SUCCESS)
}

fn parse_since(since: Option<String>) -> Result<Option<i64>, Failure> {
    let Some(s) = since else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.timestamp_millis()));
    }
    match humantime::parse_duration(&s) {
        Ok(d) => Ok(Some(Utc::now().timestamp_millis() - d.as_millis() as i64)),
        Err(_) => Err(user(anyhow!(
            "--since: `{s}` is neither an RFC 3339 time nor a duration like 2h"
        ))),
    }
}

fn parse_status(status: Option<String>) -> Result<Option<DeliveryStatus>, Failure> {
    match status {
        None => Ok(None),
        Some(s) => DeliveryStatus::parse(&s).map(Some).ok_or_else(|| {
            user(anyhow!(
                "--status: `{s}` must be pending, retrying, sent, dead, skipped or dry_run"
            ))
        }),
    }
}

fn open_store(state: &Path) -> Result<SqliteStore, Failure> {
    if !state.join("relay.db").exists() {
        return Err(user(anyhow!(
            "no relay state in {} (run `relay serve` first, or pass --state)",
            state.display()
        )));
    }
    SqliteStore::open(state, Arc::new(SystemClock)).map_err(internal)
}

/// The stores a command works on: the local SQLite state, or the deployed relay's.
struct Stores {
    events: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
}

async fn open_stores(state: &Path, aws: bool) -> Result<Stores, Failure> {
    if aws {
        return open_aws_stores().await;
    }
    let store = Arc::new(open_store(state)?);
    Ok(Stores {
        events: store.clone(),
        deliveries: store.clone(),
        queue: store,
    })
}

#[cfg(feature = "aws")]
async fn open_aws_stores() -> Result<Stores, Failure> {
    use relay_shared::adapters::aws::{sdk_config, AwsAdapters, AwsSettings};
    // The secret is not needed here; only the table and the queues are.
    let settings = AwsSettings::from_lookup(|k| match k {
        "SECRET_ID" => Some(std::env::var(k).unwrap_or_else(|_| "unused".into())),
        _ => std::env::var(k).ok(),
    })
    .map_err(|e| {
        user(anyhow!(
            "{e}: export it from the stack's outputs (see docs/aws.md)"
        ))
    })?;
    let sdk = sdk_config().await;
    let adapters = AwsAdapters::new(&sdk, &settings, Arc::new(SystemClock));
    Ok(Stores {
        events: adapters.store.clone(),
        deliveries: adapters.store,
        queue: adapters.queue,
    })
}

#[cfg(not(feature = "aws"))]
async fn open_aws_stores() -> Result<Stores, Failure> {
    Err(user(anyhow!(
        "this relay was built without AWS support: run it as `cargo run --features aws -- <command> --aws`"
    )))
}

async fn deliveries(
    status: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    limit: usize,
    json: bool,
    stores: &Stores,
) -> Result<ExitCode, Failure> {
    let filter = DeliveryFilter {
        status: parse_status(status)?,
        rule,
        since_ms: parse_since(since)?,
        limit,
    };
    let list = stores.deliveries.list(&filter).await.map_err(internal)?;
    if json {
        for d in &list {
            let mut v = d.to_api();
            v["event_id"] = serde_json::json!(d.event_id);
            v["last_response"] = serde_json::json!(d.last_response);
            println!("{v}");
        }
    } else {
        println!(
            "{:<28} {:<9} {:>3}  {:<20} {:<24} {:<24} LAST ERROR",
            "ID", "STATUS", "TRY", "RULE", "ACTION", "EVENT"
        );
        for d in &list {
            println!(
                "{:<28} {:<9} {:>3}  {:<20} {:<24} {:<24} {}",
                d.id,
                d.status.as_str(),
                d.attempts,
                d.rule,
                d.action,
                d.event_id,
                d.last_error.as_deref().unwrap_or("")
            );
            if filter.status == Some(DeliveryStatus::Dead) {
                if let Some(resp) = &d.last_response {
                    println!("{:<28} last response: {resp}", "");
                }
            }
        }
        eprintln!("{} deliveries", list.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay_cmd(
    ids: Vec<String>,
    all_dead: bool,
    rule: Option<String>,
    since: Option<String>,
    config_path: &Path,
    stores: &Stores,
) -> Result<ExitCode, Failure> {
    if ids.is_empty() && !all_dead {
        return Err(user(anyhow!(
            "name delivery ids to replay, or pass --all-dead"
        )));
    }
    let config = load_config(config_path)?;
    let mut targets: Vec<DeliveryId> = ids.into_iter().map(DeliveryId::from_stored).collect();
    if all_dead {
        let filter = DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            rule,
            since_ms: parse_since(since)?,
            limit: 0,
        };
        targets.extend(
            stores
                .deliveries
                .list(&filter)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|d| d.id),
        );
    }
    let total = targets.len();
    let mut queued = 0usize;
    for (i, chunk) in targets.chunks(100).enumerate() {
        let done = replay(
            &config,
            stores.events.as_ref(),
            stores.deliveries.as_ref(),
            stores.queue.as_ref(),
            chunk,
            SystemClock.now(),
        )
        .await
        .map_err(internal)?;
        queued += done.len();
        eprintln!(
            "replay: {}/{} looked at, {} queued",
            (i * 100 + chunk.len()).min(total),
            total,
            queued
        );
    }
    println!("{queued} of {total} deliveries queued for sending (already-sent ones are never resent); a running `relay serve` picks them up");
    Ok(ExitCode::SUCCESS)
}

async fn birthdays_run(
    date: Option<String>,
    config_path: &Path,
    state: &Path,
) -> Result<ExitCode, Failure> {
    let config = load_config(config_path)?;
    let now = SystemClock.now();
    let date = match date {
        Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| user(anyhow!("--date: `{d}` must be a date written YYYY-MM-DD")))?,
        None => now.with_timezone(&config.schedules.time_zone).date_naive(),
    };
    let store = Arc::new(open_store(state)?);
    let inbound = relay_shared::pipeline::inbound::Inbound::new(
        store.clone(),
        store.clone(),
        Arc::new(SystemClock),
        None,
    );
    let report =
        relay_shared::pipeline::birthdays::run_birthdays(date, store.as_ref(), &inbound, now)
            .await
            .map_err(internal)?;
    println!(
        "{}: {} birthdays, {} events queued, {} already sent by an earlier run",
        date.format("%Y-%m-%d"),
        report.found,
        report.accepted,
        report.duplicates
    );
    Ok(ExitCode::SUCCESS)
}
