//! `relay check` (validate the config, render every rule against the sample events) and
//! `relay render` (preview what the rules would send for one event).

use crate::args::DEFAULT_STATE;
use crate::config::locate_and_load;
use crate::{internal, user, Failure};
use anyhow::{anyhow, Context as _};
use chrono::{DateTime, Utc};
use relay_shared::api::router::preview;
use relay_shared::domain::event::{parse_event, Event};
use relay_shared::rules::config::Config;
use relay_shared::rules::render::{render_event, NotRendered};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What the sample events showed: how many were checked, how many requests rendered, and
/// every problem found (all of them are reported, not the first).
#[derive(Default)]
struct Tally {
    checked: usize,
    rendered: usize,
    problems: Vec<String>,
}

/// Validates the config and renders every rule against the sample events: exit 1 on any
/// problem.
pub(crate) fn check(config: Option<PathBuf>, events_dir: &Path) -> Result<ExitCode, Failure> {
    let (config_path, config) = locate_and_load(config, Path::new(DEFAULT_STATE))?;
    println!(
        "{}: {} rules, valid",
        config_path.display(),
        config.rules.len()
    );
    let files = match sample_files(events_dir) {
        Ok(files) => files,
        Err(e) => {
            println!("no sample events checked ({}: {e})", events_dir.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let now = Utc::now();
    let mut tally = Tally::default();
    for file in &files {
        if let Some(event) = read_sample(file, now, &mut tally)? {
            tally.checked += 1;
            render_sample(&config, file, &event, now, &mut tally);
        }
    }
    if tally.problems.is_empty() {
        println!(
            "{} sample events rendered into {} requests without errors",
            tally.checked, tally.rendered
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &tally.problems {
            eprintln!("error: {p}");
        }
        eprintln!("{} problem(s)", tally.problems.len());
        Ok(ExitCode::from(1))
    }
}

/// The `*.json` files of the samples directory, sorted.
fn sample_files(events_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// The domain event in a sample file, or `None` when the file is not one (a problem is
/// recorded when it is not JSON or not a valid event). An unreadable file stops the check.
fn read_sample(
    file: &Path,
    now: DateTime<Utc>,
    tally: &mut Tally,
) -> Result<Option<Event>, Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| user(anyhow!("{}: {e}", file.display())))?;
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            tally
                .problems
                .push(format!("{}: not JSON: {e}", file.display()));
            return Ok(None);
        }
    };
    // Only domain events are checked; other fixtures (API Gateway, SQS) live beside them.
    if value.get("type").is_none() || value.get("id").is_none() {
        return Ok(None);
    }
    match parse_event(&value, "", now) {
        Ok(e) => Ok(Some(e)),
        Err(e) => {
            tally.problems.push(format!("{}: {e}", file.display()));
            Ok(None)
        }
    }
}

/// Renders the rules a sample matches, and the chain-only rules it reaches.
fn render_sample(
    config: &Config,
    file: &Path,
    event: &Event,
    now: DateTime<Utc>,
    tally: &mut Tally,
) {
    for r in render_event(config, event, None, now) {
        match r.result {
            Ok(_) => tally.rendered += 1,
            Err(NotRendered::Failed(why)) => tally.problems.push(format!(
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
        for r in render_event(config, event, Some(std::slice::from_ref(&rule.name)), now) {
            if let Err(NotRendered::Failed(why)) = r.result {
                if reaches(config, event, &rule.name) {
                    tally.problems.push(format!(
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

/// Whether a chain starting from a rule the event matches reaches `target`.
fn reaches(config: &Config, event: &Event, target: &str) -> bool {
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

/// Prints what the rules would send for an event, credentials masked.
pub(crate) fn render(event_path: &Path, config: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let (_, config) = locate_and_load(config, Path::new(DEFAULT_STATE))?;
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
