//! The command line: every subcommand and flag of `relay` (the pinned interface).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Relay CDP and e-shop events to SmartEmailing.
#[derive(Parser, Debug)]
#[command(name = "relay", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log format on stderr (level from RUST_LOG).
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) enum BirthdaysCommand {
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
