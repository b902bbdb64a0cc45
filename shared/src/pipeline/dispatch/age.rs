//! Age: a delivery that has waited longer than `delivery.max_age` is given up wherever it
//! would wait again (a retry, an open circuit, a failed probe), with a reason saying how
//! long and why, so nothing waits forever. One whose lease is held elsewhere is not: the
//! holder is sending it and records the outcome. A call that succeeds is never
//! refused for age: a replayed delivery gets its call.

use super::send::target_of;
use super::Dispatcher;
use crate::domain::delivery::DeliveryRecord;
use crate::policy::age::{Cause, MaxAge};
use crate::rules::config::Config;

/// When a delivery's wait began (Unix ms): when it was created (its event accepted and
/// rendered), or, for a timer, when it is due at the latest (the longest delay the config
/// holds its rule for), so a long `after` does not count as waiting.
fn wait_began(config: &Config, record: &DeliveryRecord) -> i64 {
    let own = config.rule(&record.rule).and_then(|r| r.after);
    let as_step = config
        .rules
        .iter()
        .flat_map(|r| r.then.iter())
        .filter(|s| s.rule == record.rule)
        .filter_map(|s| s.after);
    let held = own.into_iter().chain(as_step).max().unwrap_or_default();
    record
        .created_at
        .saturating_add(i64::try_from(held.as_millis()).unwrap_or(i64::MAX))
}

/// A breaker target as a user names it.
fn display_name(target: &str) -> &str {
    match target.strip_prefix("http:") {
        Some(host) => host,
        None => "SmartEmailing",
    }
}

impl Dispatcher {
    /// The reason to give `record` up at `now_ms`, when it has waited longer than
    /// `delivery.max_age`: its target unreachable since the circuit's run of failures began,
    /// or its last error.
    pub(super) fn overdue(&self, record: &DeliveryRecord, now_ms: i64) -> Option<String> {
        let limit = MaxAge(self.ctx.config.delivery.max_age.get());
        let waited = limit.exceeded(wait_began(&self.ctx.config, record), now_ms)?;
        let target = record.request.as_ref().map(target_of);
        let down = target
            .as_deref()
            .and_then(|t| self.breakers.down_since(t).map(|since| (t, since)));
        let cause = match down {
            Some((target, since_ms)) => Cause::Unreachable {
                target: display_name(target),
                since_ms,
            },
            None => Cause::LastError(record.last_error.as_deref()),
        };
        Some(limit.reason(waited, cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::delivery::fixtures::pending;

    #[test]
    fn a_timer_waits_from_when_it_is_due() {
        let yaml = "rules:\n  - name: welcome\n    on: [a]\n    after: 3d\n    actions: [{trigger_event: {name: w}}]\n    then: [{rule: later, after: 5d}]\n  - name: later\n    actions: [{trigger_event: {name: l}}]\n  - name: now\n    on: [b]\n    actions: [{trigger_event: {name: n}}]\n";
        let config = Config::parse(yaml, "t").unwrap();
        let mut r = pending("evt-1");
        r.created_at = 1_000;
        assert_eq!(wait_began(&config, &r), 1_000 + 3 * 86_400_000);
        r.rule = "later".into();
        assert_eq!(wait_began(&config, &r), 1_000 + 5 * 86_400_000);
        r.rule = "now".into();
        assert_eq!(wait_began(&config, &r), 1_000);
    }

    #[test]
    fn targets_are_named_as_users_know_them() {
        assert_eq!(display_name("smartemailing"), "SmartEmailing");
        assert_eq!(display_name("http:hooks.example.com"), "hooks.example.com");
    }
}
