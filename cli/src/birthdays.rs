//! `relay birthdays run`: the day's `contact.birthday` events, beside a running `relay serve`.

use crate::config::locate_and_load;
use crate::deliveries::open_store;
use crate::{internal, user, Failure};
use anyhow::anyhow;
use relay_shared::pipeline::birthdays::run_birthdays;
use relay_shared::pipeline::inbound::Inbound;
use relay_shared::ports::clock::{Clock, SystemClock};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Emits the birthday events of `date` (today in `schedules.time_zone` by default); each
/// contact is congratulated once a year however often it runs.
pub(crate) async fn run(
    date: Option<String>,
    config: Option<PathBuf>,
    state: &Path,
) -> Result<ExitCode, Failure> {
    let (_, config) = locate_and_load(config, state)?;
    let now = SystemClock.now();
    let date = match date {
        Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .map_err(|_| user(anyhow!("--date: `{d}` must be a date written YYYY-MM-DD")))?,
        None => now.with_timezone(&config.schedules.time_zone).date_naive(),
    };
    let store = Arc::new(open_store(state)?);
    let inbound = Inbound::new(store.clone(), store.clone(), Arc::new(SystemClock), None);
    let report = run_birthdays(date, store.as_ref(), &inbound, now)
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
