//! Report: what the dispatcher tells the process's `Telemetry` — each call with its class
//! and duration, the target's circuit after it, and each delivery's new status.

use super::Dispatcher;
use crate::domain::delivery::{DeliveryRecord, Outcome};
use crate::domain::http::{HttpResponse, TransportError};
use crate::domain::smartemailing::Endpoint;
use crate::policy::breaker::Gate;
use crate::policy::classify::{Target, Verdict};
use crate::telemetry::{CallClass, CallReport, CircuitState};
use std::time::Instant;

/// The SmartEmailing endpoints, for the `endpoint` label.
const ENDPOINTS: [Endpoint; 6] = [
    Endpoint::TriggerEvent,
    Endpoint::Import,
    Endpoint::CustomEmails,
    Endpoint::TransactionalEmails,
    Endpoint::CustomSms,
    Endpoint::ImportOrders,
];

/// The `endpoint` label of a call: the SmartEmailing endpoint its URL ends with (`import`,
/// `send/custom-emails-bulk`, ...), or `webhook`.
pub(super) fn endpoint_of(kind: Target, url: &str) -> &'static str {
    if kind == Target::Http {
        return "webhook";
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    ENDPOINTS
        .iter()
        .map(|e| e.path())
        .find(|p| path.ends_with(p))
        .map_or("other", |p| p.trim_start_matches('/'))
}

/// The `target` field of a delivery's log lines: its breaker target (`smartemailing`,
/// `http:<host>`), or `none` before it has a request.
pub(super) fn target_label(record: &DeliveryRecord) -> String {
    record
        .request
        .as_ref()
        .map_or_else(|| "none".to_string(), super::send::target_of)
}

impl Dispatcher {
    /// Reports a call that started at `started`, and the target's circuit after it.
    pub(super) fn report_call(
        &self,
        target: &str,
        endpoint: &str,
        result: &Result<HttpResponse, TransportError>,
        verdict: &Verdict,
        started: Instant,
    ) {
        let class = CallClass::of(result, verdict);
        let now_ms = self.ctx.clock.now_ms();
        let error = match verdict {
            _ if !class.is_error() => None,
            Verdict::Outcome(Outcome::Retry { reason, .. } | Outcome::Permanent { reason, .. }) => {
                Some(reason.as_str())
            }
            Verdict::Outcome(Outcome::Success { .. }) => None,
            Verdict::Unauthorized { .. } => Some("the target refused the credentials (401)"),
        };
        self.telemetry.record_call(&CallReport {
            target,
            endpoint,
            class,
            duration: started.elapsed(),
            at_ms: now_ms,
            error,
        });
        let (state, until) = match self.breakers.gate(target, now_ms) {
            Gate::Closed => (CircuitState::Closed, None),
            Gate::HalfOpen => (CircuitState::HalfOpen, None),
            Gate::Open { until_ms } => (CircuitState::Open, Some(until_ms)),
        };
        self.telemetry.record_circuit(target, state, until);
    }

    /// Reports a delivery's new status (`relay_deliveries_total`).
    pub(super) fn report_status(&self, record: &DeliveryRecord) {
        self.telemetry
            .record_delivery(&record.rule, &record.action, record.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_label_is_the_smartemailing_path_or_webhook() {
        let se = Target::SmartEmailing;
        assert_eq!(endpoint_of(se, "http://x/api/v3/import"), "import");
        assert_eq!(
            endpoint_of(se, "http://x/api/v3/send/custom-emails-bulk"),
            "send/custom-emails-bulk"
        );
        assert_eq!(endpoint_of(se, "http://x/api/v3/elsewhere"), "other");
        assert_eq!(endpoint_of(Target::Http, "http://x/import"), "webhook");
    }
}
