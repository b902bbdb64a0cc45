//! The scheduler function: EventBridge Scheduler runs it daily for birthdays (the same pass
//! as `relay serve`'s, "today" in the config's `schedules.time_zone`). Timers need no run of
//! their own on AWS: a held delivery waits in the dispatch queue itself (sent with a delay,
//! hidden again when read early).

use crate::context::{Aws, Context, Ports};
use crate::metrics::Flusher;
use relay_shared::pipeline::birthdays::{run_birthdays, BirthdayError, BirthdayReport};
use relay_shared::pipeline::inbound::Inbound;
use serde_json::Value;

/// Which scheduled run this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Fire birthday events for the contacts born on this day.
    Birthdays,
}

/// Why a scheduled invocation was not understood.
#[derive(Debug, thiserror::Error)]
#[error("not a scheduled run this function knows: {0}")]
pub struct UnknownRun(pub String);

/// Why a scheduled run failed (EventBridge Scheduler retries it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The invocation was not a known run.
    #[error(transparent)]
    Unknown(#[from] UnknownRun),
    /// The birthday pass failed.
    #[error(transparent)]
    Birthdays(#[from] BirthdayError),
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReport {
    /// The birthday pass.
    Birthdays(BirthdayReport),
}

/// Reads the run from the invocation: the schedule's input `{"job": "birthdays"}`,
/// or an EventBridge "Scheduled Event" whose rule name ends in the job's name.
pub fn job(event: &Value) -> Result<Job, UnknownRun> {
    let named = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.ends_with("birthdays").then_some(Job::Birthdays)
    };
    if let Some(j) = event.get("job").and_then(Value::as_str) {
        return named(j).ok_or_else(|| UnknownRun(format!("job `{j}`")));
    }
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let rules: Vec<&str> = event
            .get("resources")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(j) = rules.iter().find_map(|r| named(r)) {
            return Ok(j);
        }
        return Err(UnknownRun(format!("a scheduled event from {rules:?}")));
    }
    Err(UnknownRun(
        "an event with neither `job` nor `detail-type`".into(),
    ))
}

/// The scheduler handler, built once per container.
pub struct SchedulerHandler<P: Ports = Aws> {
    ctx: Context<P>,
    inbound: Inbound,
}

impl<P: Ports> SchedulerHandler<P> {
    /// Wires the birthday pass to a function's adapters.
    pub fn new(ctx: &Context<P>) -> Self {
        Self {
            ctx: ctx.clone(),
            inbound: Inbound::new(
                ctx.ports.store.clone(),
                ctx.ports.queue.clone(),
                ctx.clock.clone(),
                None,
            )
            .with_telemetry(ctx.telemetry.clone()),
        }
    }

    /// Handles one scheduled run.
    pub async fn handle(&self, event: Value) -> Result<RunReport, RunError> {
        let _metrics = Flusher::of(&self.ctx).on_exit();
        let job = job(&event)?;
        let at = event
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        match job {
            Job::Birthdays => {
                let now = self.ctx.clock.now();
                let today = now
                    .with_timezone(&self.ctx.config.schedules.time_zone)
                    .date_naive();
                let report =
                    run_birthdays(today, self.ctx.ports.store.as_ref(), &self.inbound, now).await?;
                tracing::info!(scheduled_at = at, %today, found = report.found, accepted = report.accepted, duplicates = report.duplicates, "birthday run");
                Ok(RunReport::Birthdays(report))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../events/aws/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_scheduler_knows_its_runs() {
        let classic = fixture("eventbridge-scheduled-event.json");
        assert_eq!(job(&classic).unwrap(), Job::Birthdays);
        let v2 = fixture("scheduler-birthdays.json");
        assert_eq!(job(&v2).unwrap(), Job::Birthdays);
        // The minute run is gone: its schedule's input is no longer a known run.
        assert!(job(&serde_json::json!({"job": "due-timers"})).is_err());
        assert!(job(&serde_json::json!({"job": "coffee"})).is_err());
        let unknown = serde_json::json!({"detail-type": "Scheduled Event", "resources": []});
        assert!(job(&unknown).is_err());
    }
}
