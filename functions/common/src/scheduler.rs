//! The scheduler function: EventBridge Scheduler runs it daily for birthdays and every minute
//! for due delayed triggers. The runs are wired and permitted; what they do lands with the
//! birthday and delayed-trigger use cases, so for now each run is logged and does nothing.

use serde_json::Value;

/// Which scheduled run this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Fire birthday events for the contacts born on this day.
    Birthdays,
    /// Release the delayed triggers that are due.
    DueTimers,
}

/// Why a scheduled invocation was not understood.
#[derive(Debug, thiserror::Error)]
#[error("not a scheduled run this function knows: {0}")]
pub struct UnknownRun(pub String);

/// Reads the run from the invocation: the schedules' input `{"job": "birthdays" | "due-timers"}`,
/// or an EventBridge "Scheduled Event" whose rule name ends in the job's name.
pub fn job(event: &Value) -> Result<Job, UnknownRun> {
    let named = |s: &str| {
        let s = s.to_ascii_lowercase();
        if s.ends_with("birthdays") {
            Some(Job::Birthdays)
        } else if s.ends_with("due-timers") || s.ends_with("duetimers") {
            Some(Job::DueTimers)
        } else {
            None
        }
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

/// Handles one scheduled run.
pub async fn handle(event: Value) -> Result<Job, UnknownRun> {
    let job = job(&event)?;
    let at = event
        .get("time")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    match job {
        Job::Birthdays => {
            tracing::info!(
                scheduled_at = at,
                "birthday run: nothing to do until the birthday use case lands"
            )
        }
        Job::DueTimers => {
            tracing::info!(
                scheduled_at = at,
                "due-timer run: nothing to do until delayed triggers land"
            )
        }
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../events/aws/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[tokio::test]
    async fn the_scheduler_knows_its_runs() {
        let classic = fixture("eventbridge-scheduled-event.json");
        assert_eq!(handle(classic).await.unwrap(), Job::Birthdays);
        let v2 = fixture("scheduler-due-timers.json");
        assert_eq!(handle(v2).await.unwrap(), Job::DueTimers);
        assert!(handle(serde_json::json!({"job": "coffee"})).await.is_err());
        assert!(
            handle(serde_json::json!({"detail-type": "Scheduled Event", "resources": []}))
                .await
                .is_err()
        );
    }
}
