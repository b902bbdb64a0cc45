//! Bundles the relay's config into the functions and validates it: a bad config fails the
//! build, never the first event. `RELAY_CONFIG` picks another file than `config/relay.yaml`.
//! It also checks the config against the deployment (`template.yaml`): a delivery may wait
//! `delivery.max_age`, so its job must outlive that in the dispatch queue, and its event in
//! the table.

use relay_shared::rules::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_CONFIG");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = match std::env::var("RELAY_CONFIG") {
        Ok(p) if !p.trim().is_empty() => PathBuf::from(p.trim()),
        _ => manifest.join("../../config/relay.yaml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => fail(&format!(
            "cannot read the relay config {}: {e}",
            path.display()
        )),
    };
    let config = match Config::parse(&text, &path.display().to_string()) {
        Ok(c) => c,
        Err(e) => fail(&e.to_string()),
    };
    let template = manifest.join("../../template.yaml");
    println!("cargo:rerun-if-changed={}", template.display());
    if let Err(e) = fits_the_template(&config, &template) {
        fail(&format!("{}: {e}", path.display()));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("relay.yaml");
    if let Err(e) = std::fs::write(&out, text) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

/// The dispatch queue's `MessageRetentionPeriod` in the template.
fn dispatch_queue_retention(template: &Path) -> Result<Duration, String> {
    let text = std::fs::read_to_string(template)
        .map_err(|e| format!("cannot read {}: {e}", template.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", template.display()))?;
    doc["Resources"]["DispatchQueue"]["Properties"]["MessageRetentionPeriod"]
        .as_u64()
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "{}: Resources.DispatchQueue.Properties.MessageRetentionPeriod is not a number of seconds",
                template.display()
            )
        })
}

/// A delivery waits up to `delivery.max_age`: SQS must keep its job longer than that, and
/// the table its event at least as long (a chain step, or a replay that renders again,
/// reads it).
fn fits_the_template(config: &Config, template: &Path) -> Result<(), String> {
    let max_age = config.delivery.max_age.get();
    let queue = dispatch_queue_retention(template)?;
    if max_age >= queue {
        return Err(format!(
            "delivery.max_age ({}) must be shorter than the dispatch queue's MessageRetentionPeriod in template.yaml ({}), or SQS drops a job that may still wait",
            humantime::format_duration(max_age),
            humantime::format_duration(queue)
        ));
    }
    let events = config.retention.events.get();
    if max_age > events {
        return Err(format!(
            "delivery.max_age ({}) must not be longer than retention.events ({}): a delivery that waits that long finds its event expired when its chain step renders",
            humantime::format_duration(max_age),
            humantime::format_duration(events)
        ));
    }
    Ok(())
}

fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo:warning={line}");
    }
    eprintln!("{message}");
    std::process::exit(1);
}
