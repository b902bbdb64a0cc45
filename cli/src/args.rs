//! The command line: every subcommand and flag of `relay` (the pinned interface).

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use relay_shared::domain::delivery::DeliveryStatus;
use std::path::PathBuf;

/// Where the SQLite state lives unless `--state` says otherwise.
pub(crate) const DEFAULT_STATE: &str = ".relay";

/// Every status a delivery can have, in the order of its life (for `--status`).
pub(crate) const STATUSES: [DeliveryStatus; 8] = [
    DeliveryStatus::Pending,
    DeliveryStatus::Scheduled,
    DeliveryStatus::Retrying,
    DeliveryStatus::Sent,
    DeliveryStatus::DryRun,
    DeliveryStatus::Skipped,
    DeliveryStatus::Dead,
    DeliveryStatus::Cancelled,
];

/// Relay CDP and e-shop events to SmartEmailing: serve the API and the delivery workers on
/// one machine, check the rules, list and replay deliveries.
#[derive(Parser, Debug)]
#[command(name = "relay", version, long_about = None)]
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
        /// The rules file; without it, config/relay.yaml, else relay.yaml in the state directory.
        #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on (host and port).
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = listen_address)]
        listen: String,
        /// Directory for the SQLite state.
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
    },
    /// Validate the config and render every rule against the sample events.
    Check {
        /// The rules file; without it, config/relay.yaml, else .relay/relay.yaml.
        #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory of sample events (*.json).
        #[arg(long, default_value = "events")]
        events: PathBuf,
    },
    /// Print what the rules would send for an event (credentials masked).
    Render {
        /// The event (JSON file).
        #[arg(long)]
        event: PathBuf,
        /// The rules file; without it, config/relay.yaml, else .relay/relay.yaml.
        #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List deliveries.
    Deliveries {
        /// Only this status.
        #[arg(long, value_parser = status_parser())]
        status: Option<DeliveryStatus>,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// Only those created since: an RFC 3339 time, or a duration ago (e.g. 2h).
        #[arg(long)]
        since: Option<String>,
        /// Only those of this event (its id), its chains' included.
        #[arg(long, value_name = "ID")]
        event_id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Directory of the SQLite state.
        #[arg(long, default_value = DEFAULT_STATE)]
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
        /// The rules file (to re-render deliveries whose rendering failed); without it,
        /// config/relay.yaml, else relay.yaml in the state directory.
        #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory of the SQLite state.
        #[arg(long, default_value = DEFAULT_STATE)]
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
        /// The rules file; without it, config/relay.yaml, else relay.yaml in the state directory.
        #[arg(long, env = "RELAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory of the SQLite state.
        #[arg(long, default_value = DEFAULT_STATE)]
        state: PathBuf,
    },
}

/// `--status`: one of [`STATUSES`], listed in the help and in the error for any other word.
fn status_parser() -> impl TypedValueParser<Value = DeliveryStatus> {
    PossibleValuesParser::new(STATUSES.map(DeliveryStatus::as_str)).try_map(|s| {
        DeliveryStatus::parse(&s).ok_or_else(|| format!("`{s}` is not a delivery status"))
    })
}

/// `--listen`: a bare port (`8080`, `:8080`) is refused with the address it most likely
/// means; the socket layer would only say "invalid socket address".
fn listen_address(s: &str) -> Result<String, String> {
    let port = s.strip_prefix(':').unwrap_or(s);
    match port.parse::<u16>() {
        Ok(port) => Err(format!(
            "`{s}` is a port without an address: write 127.0.0.1:{port}"
        )),
        Err(_) => Ok(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delivery_status_is_offered() {
        // A status added to the domain fails this match until it is listed in STATUSES.
        let position = |s: DeliveryStatus| match s {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Scheduled => 1,
            DeliveryStatus::Retrying => 2,
            DeliveryStatus::Sent => 3,
            DeliveryStatus::DryRun => 4,
            DeliveryStatus::Skipped => 5,
            DeliveryStatus::Dead => 6,
            DeliveryStatus::Cancelled => 7,
        };
        for (i, s) in STATUSES.into_iter().enumerate() {
            assert_eq!(position(s), i, "{}", s.as_str());
        }
    }

    #[test]
    fn a_bare_port_is_refused_with_the_address_to_write() {
        for given in ["8080", ":8080"] {
            let err = listen_address(given).unwrap_err();
            assert!(err.contains("127.0.0.1:8080"), "{err}");
        }
        assert_eq!(listen_address("0.0.0.0:9000").unwrap(), "0.0.0.0:9000");
        assert_eq!(listen_address("localhost:9000").unwrap(), "localhost:9000");
    }
}
