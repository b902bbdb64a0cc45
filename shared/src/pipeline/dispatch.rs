//! Sending deliveries: coalescing into bulk calls, classifying answers, retrying,
//! dead letters, chained rules and replays.

use crate::domain::delivery::{AuthRef, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared};
use crate::domain::event::{Event, EventId};
use crate::domain::secret::{basic_header, SeCredentials};
use crate::domain::smartemailing::{says_rate_limited, Endpoint, Envelope};
use crate::policy::breaker::{Breakers, Gate, Pacer};
use crate::ports::clock::Clock;
use crate::ports::queue::{DispatchJob, Message, QueueName, RenderJob};
use crate::ports::{
    Credentials, DeliveryStore, EventStore, HttpRequest, HttpResponse, Queue, StoreError,
    Transport, TransportError,
};
use crate::rules::config::Config;
use crate::rules::render::{render_event, NotRendered};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of an answer body is kept with a delivery.
const RESPONSE_EXCERPT: usize = 500;

/// What an answer means for the deliveries it carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted.
    Success {
        /// Status and the start of the body.
        response: String,
    },
    /// Worth another try later.
    Retry {
        /// Why it failed.
        reason: String,
        /// Status and the start of the body, if there was an answer.
        response: Option<String>,
        /// What the target asked for in `Retry-After`.
        retry_after: Option<Duration>,
        /// The target is overloaded (429, a timeout, a rate-limit message): wait at least
        /// `min_overload_delay`.
        overload: bool,
    },
    /// Will never work as it is.
    Permanent {
        /// Why.
        reason: String,
        /// Status and the start of the body.
        response: Option<String>,
        /// The status code, if there was an answer.
        status: Option<u16>,
    },
    /// The credentials were refused (401).
    Unauthorized {
        /// Status and the start of the body.
        response: String,
    },
}

/// Whose answer is being classified: SmartEmailing's envelope rules apply only to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The SmartEmailing API.
    SmartEmailing,
    /// Any other HTTP endpoint.
    Http,
}

/// The one place that decides what an answer means, for every action.
pub fn classify(
    target: Target,
    result: &Result<HttpResponse, TransportError>,
    now: DateTime<Utc>,
) -> Outcome {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                reason: e.to_string(),
                response: None,
                retry_after: None,
                overload: matches!(e, TransportError::Timeout),
            }
        }
    };
    let excerpt = excerpt(resp);
    let retry_after = resp
        .header("retry-after")
        .and_then(|v| parse_retry_after(v, now));
    let status = resp.status;
    let envelope = if target == Target::SmartEmailing {
        Envelope::parse(&resp.body)
    } else {
        None
    };
    let message = envelope
        .as_ref()
        .map(Envelope::message_text)
        .unwrap_or_default();
    match status {
        200..=299 => {
            if let Some(env) = &envelope {
                if env.is_error() {
                    if says_rate_limited(&message) {
                        return Outcome::Retry {
                            reason: format!("SmartEmailing is rate limiting: {message}"),
                            response: Some(excerpt),
                            retry_after,
                            overload: true,
                        };
                    }
                    return Outcome::Permanent {
                        reason: format!(
                            "SmartEmailing answered {status} with status error: {message}"
                        ),
                        response: Some(excerpt),
                        status: Some(status),
                    };
                }
            }
            Outcome::Success { response: excerpt }
        }
        401 => Outcome::Unauthorized { response: excerpt },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("the target answered {status}{}", suffix(&message)),
            response: Some(excerpt),
            retry_after,
            overload: status == 429 || says_rate_limited(&message),
        },
        _ if says_rate_limited(&message) => Outcome::Retry {
            reason: format!("SmartEmailing is rate limiting: {message}"),
            response: Some(excerpt),
            retry_after,
            overload: true,
        },
        _ => Outcome::Permanent {
            reason: format!("the target answered {status}{}", suffix(&message)),
            response: Some(excerpt),
            status: Some(status),
        },
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn excerpt(resp: &HttpResponse) -> String {
    let text = String::from_utf8_lossy(&resp.body);
    let mut cut: String = text.chars().take(RESPONSE_EXCERPT).collect();
    if text.chars().count() > RESPONSE_EXCERPT {
        cut.push('…');
    }
    format!("{} {}", resp.status, cut)
}

/// Parses `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (when - now).to_std().ok().or(Some(Duration::ZERO))
}

/// The delay before attempt `attempts + 1`: the schedule's step, jittered ±20 %, and a
/// `Retry-After` honoured between that step and twice it.
pub fn retry_delay(
    schedule: &[Duration],
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let idx = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    let step = schedule
        .get(idx)
        .copied()
        .unwrap_or(Duration::from_secs(60));
    let jittered = step.mul_f64((1.0 + jitter.clamp(-0.2, 0.2)).max(0.0));
    match retry_after {
        Some(asked) => asked.clamp(step, step * 2).max(jittered.min(step * 2)),
        None => jittered,
    }
}

/// Counts of what a dispatch pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DispatchReport {
    /// Deliveries accepted by their target.
    pub sent: usize,
    /// Deliveries recorded as dry-run.
    pub dry_run: usize,
    /// Deliveries scheduled for another attempt.
    pub retrying: usize,
    /// Deliveries given up.
    pub dead: usize,
    /// Calls made to targets.
    pub calls: usize,
    /// Messages dropped as duplicates of finished or scheduled deliveries.
    pub duplicates: usize,
    /// Handles of the messages scheduled for a retry (a Lambda reports them as batch failures).
    pub retried_handles: Vec<String>,
    /// Deliveries that became dead in this pass.
    pub dead_ids: Vec<DeliveryId>,
    /// Deliveries held back, without spending an attempt, because their target's circuit is open.
    pub waiting: usize,
}

/// The dispatch step.
pub struct Dispatcher {
    config: Arc<Config>,
    events: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryStore>,
    queue: Arc<dyn Queue>,
    credentials: Arc<dyn Credentials>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    rng: Mutex<StdRng>,
    breakers: Breakers,
    pacer: Pacer,
}

struct Work {
    message: Message,
    record: DeliveryRecord,
}

impl Dispatcher {
    /// Wires the step.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        events: Arc<dyn EventStore>,
        deliveries: Arc<dyn DeliveryStore>,
        queue: Arc<dyn Queue>,
        credentials: Arc<dyn Credentials>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        seed: Option<u64>,
    ) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let breakers = Breakers::new(
            config.delivery.breaker.open_after,
            config.delivery.breaker.probe_after.get(),
        );
        let pacer = Pacer::new(config.delivery.max_requests_per_second);
        Self {
            config,
            events,
            deliveries,
            queue,
            credentials,
            transport,
            breakers,
            pacer,
            clock,
            rng: Mutex::new(rng),
        }
    }

    /// How long a received batch stays hidden from other workers: long enough for every
    /// call of the batch, split halves included.
    pub fn visibility(&self) -> Duration {
        self.config.delivery.timeout.get() * 4 + Duration::from_secs(30)
    }

    /// Handles one batch of dispatch messages.
    pub async fn handle(&self, messages: Vec<Message>) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        let now = self.clock.now();
        let mut to_ack: Vec<String> = Vec::new();
        let mut chains: Vec<(EventId, String, u32)> = Vec::new();

        let mut jobs: Vec<(Message, DeliveryId)> = Vec::new();
        for m in messages {
            match serde_json::from_str::<DispatchJob>(&m.body) {
                Ok(job) => jobs.push((m, job.delivery)),
                Err(e) => {
                    tracing::error!(error = %e, "dropping an unreadable dispatch message");
                    to_ack.push(m.handle);
                }
            }
        }
        let ids: Vec<DeliveryId> = jobs.iter().map(|(_, id)| id.clone()).collect();
        let mut records: HashMap<DeliveryId, DeliveryRecord> = self
            .deliveries
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();

        let mut work: Vec<Work> = Vec::new();
        let mut seen = HashSet::new();
        for (message, id) in jobs {
            let handle = message.handle.clone();
            let Some(record) = records.remove(&id) else {
                if seen.contains(&id) {
                    report.duplicates += 1;
                } else {
                    tracing::warn!(delivery = %id, "dropping a message for an unknown delivery");
                }
                to_ack.push(handle);
                continue;
            };
            seen.insert(id);
            if record.status.is_final() {
                // Already handled: a queue redelivery or a repeat. Never send twice, but make
                // sure the chain it may have started was enqueued.
                report.duplicates += 1;
                if record.status.is_success() {
                    chains.push((
                        record.event_id.clone(),
                        record.rule.clone(),
                        record.chain_depth,
                    ));
                }
                to_ack.push(handle);
                continue;
            }
            if record.status == DeliveryStatus::Scheduled {
                if let Some(due) = record
                    .next_attempt_at
                    .filter(|t| *t > now.timestamp_millis() + 1000)
                {
                    // A timer read early (a queue caps its delays): hold it again.
                    let delay = Duration::from_millis((due - now.timestamp_millis()) as u64);
                    report.waiting += 1;
                    report.retried_handles.push(handle.clone());
                    if let Err(e) = self
                        .queue
                        .requeue_many(QueueName::Dispatch, &[(message, delay)])
                        .await
                    {
                        tracing::error!(error = %e, delivery = %record.id, "could not hold a timer; the queue will redeliver it");
                    }
                    continue;
                }
            }
            if record.status == DeliveryStatus::Retrying
                && record
                    .next_attempt_at
                    .is_some_and(|t| t > now.timestamp_millis() + 1000)
            {
                // An early copy; the scheduled message is still waiting in the queue.
                report.duplicates += 1;
                to_ack.push(handle);
                continue;
            }
            work.push(Work { message, record });
        }

        let creds = self
            .credentials
            .smartemailing()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if creds.is_none() {
            let records: Vec<DeliveryRecord> = work
                .iter()
                .map(|w| {
                    let mut r = w.record.clone();
                    r.status = DeliveryStatus::DryRun;
                    r.last_error = None;
                    r
                })
                .collect();
            self.deliveries.save_many(&records).await?;
            for w in work {
                report.dry_run += 1;
                chains.push((
                    w.record.event_id.clone(),
                    w.record.rule.clone(),
                    w.record.chain_depth,
                ));
                to_ack.push(w.message.handle);
            }
        } else {
            // Group by bulk key, keeping the order deliveries arrived in.
            let mut groups: Vec<Vec<Work>> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for w in work {
                let key = match &w.record.request {
                    Some(r) => r.bulk_key(&w.record.id),
                    None => format!("none:{}", w.record.id),
                };
                match index.get(&key) {
                    Some(&i) => groups[i].push(w),
                    None => {
                        index.insert(key, groups.len());
                        groups.push(vec![w]);
                    }
                }
            }
            for group in groups {
                let limit = match group.first().and_then(|w| w.record.request.as_ref()) {
                    Some(Prepared::SmartEmailing { endpoint, .. }) => endpoint.batch_limit(),
                    _ => 1,
                };
                let target = group
                    .first()
                    .and_then(|w| w.record.request.as_ref())
                    .map(target_of)
                    .unwrap_or_default();
                let mut rest = group;
                while !rest.is_empty() {
                    let now_ms = self.clock.now_ms();
                    let take = match self.breakers.gate(&target, now_ms) {
                        Gate::Closed => limit,
                        // One probe call, carrying one delivery, while the rest wait for it.
                        Gate::HalfOpen => 1,
                        Gate::Open { until_ms } => {
                            for mut w in rest.drain(..) {
                                self.hold(&mut w, until_ms, now_ms, &mut report).await?;
                            }
                            break;
                        }
                    };
                    let tail = rest.split_off(rest.len().min(take));
                    let chunk = std::mem::replace(&mut rest, tail);
                    let records: Vec<&DeliveryRecord> = chunk.iter().map(|w| &w.record).collect();
                    let outcomes = self.send_chunk(&records, &mut report).await;
                    // Record every outcome of the call in one write, right after the answer:
                    // this is the whole window in which a crash could cause a duplicate.
                    let mut settled: Vec<(Work, Option<Duration>)> =
                        Vec::with_capacity(chunk.len());
                    for (mut w, outcome) in chunk.into_iter().zip(outcomes) {
                        let retry = self.apply(&mut w.record, &outcome, &mut report);
                        settled.push((w, retry));
                    }
                    let records: Vec<DeliveryRecord> =
                        settled.iter().map(|(w, _)| w.record.clone()).collect();
                    self.deliveries.save_many(&records).await?;
                    let retries: Vec<(Message, Duration)> = settled
                        .iter()
                        .filter_map(|(w, r)| r.map(|d| (w.message.clone(), d)))
                        .collect();
                    if !retries.is_empty() {
                        if let Err(e) = self.queue.requeue_many(QueueName::Dispatch, &retries).await
                        {
                            tracing::error!(error = %e, "could not schedule retries; the queue will redeliver");
                        }
                    }
                    for (w, retry) in settled {
                        if w.record.status == DeliveryStatus::Dead {
                            report.dead_ids.push(w.record.id.clone());
                        }
                        match retry {
                            Some(_) => {
                                report.retried_handles.push(w.message.handle.clone());
                            }
                            None => {
                                if w.record.status.is_success() {
                                    chains.push((
                                        w.record.event_id.clone(),
                                        w.record.rule.clone(),
                                        w.record.chain_depth,
                                    ));
                                }
                                to_ack.push(w.message.handle);
                            }
                        }
                    }
                }
            }
        }

        let mut done = HashSet::new();
        let mut steps = Vec::new();
        for (event, rule, depth) in chains {
            if done.insert((event.clone(), rule.clone())) {
                steps.extend(self.chain(&event, &rule, depth).await?);
            }
        }
        if !steps.is_empty() {
            // Every chain step of the pass in one write: one commit per pass, not one per
            // event (it was the largest cost of a pass). A failure leaves the messages
            // unacknowledged, so the pass is redone and the steps enqueued again (harmless:
            // delivery ids are derived from the event).
            self.queue
                .send(QueueName::Render, steps, Duration::ZERO)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        if !to_ack.is_empty() {
            if let Err(e) = self.queue.ack(QueueName::Dispatch, &to_ack).await {
                tracing::warn!(error = %e, "could not delete handled messages; they will be seen again and dropped");
            }
        }
        Ok(report)
    }

    fn send_chunk<'a>(
        &'a self,
        chunk: &'a [&'a DeliveryRecord],
        report: &'a mut DispatchReport,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Outcome>> + Send + 'a>> {
        Box::pin(async move {
            let Some(first) = chunk.first() else {
                return Vec::new();
            };
            let outcome = match &first.request {
                None => Outcome::Permanent {
                    reason: "the delivery has no rendered request; fix the config and replay it"
                        .into(),
                    response: None,
                    status: None,
                },
                Some(Prepared::SmartEmailing {
                    endpoint, group, ..
                }) => {
                    let items: Vec<Value> = chunk
                        .iter()
                        .filter_map(|r| match &r.request {
                            Some(Prepared::SmartEmailing { item, .. }) => Some(item.clone()),
                            _ => None,
                        })
                        .collect();
                    let outcome = self
                        .call_smartemailing(*endpoint, group, items, report)
                        .await;
                    if let Outcome::Permanent {
                        status: Some(422), ..
                    } = &outcome
                    {
                        if chunk.len() > 1 {
                            // One bad item must not sink the rest: split and try the halves.
                            let (a, b) = chunk.split_at(chunk.len() / 2);
                            let mut out = self.send_chunk(a, report).await;
                            out.extend(self.send_chunk(b, report).await);
                            return out;
                        }
                    }
                    outcome
                }
                Some(Prepared::Http {
                    method,
                    url,
                    headers,
                    body,
                    auth,
                }) => {
                    self.call_http(method, url, headers, body.as_deref(), auth.as_ref(), report)
                        .await
                }
            };
            vec![outcome; chunk.len()]
        })
    }

    async fn call_smartemailing(
        &self,
        endpoint: Endpoint,
        group: &Value,
        items: Vec<Value>,
        report: &mut DispatchReport,
    ) -> Outcome {
        let body = serde_json::to_vec(&endpoint.body(group, items)).unwrap_or_default();
        let mut refreshed = false;
        loop {
            let creds: SeCredentials = match self.credentials.smartemailing().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Outcome::Retry {
                        reason: "SmartEmailing credentials are not configured".into(),
                        response: None,
                        retry_after: None,
                        overload: false,
                    }
                }
                Err(e) => {
                    return Outcome::Retry {
                        reason: e.to_string(),
                        response: None,
                        retry_after: None,
                        overload: false,
                    }
                }
            };
            let request = HttpRequest {
                method: "POST".into(),
                url: format!("{}{}", self.config.smartemailing.base_url, endpoint.path()),
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Accept".into(), "application/json".into()),
                    ("Authorization".into(), creds.basic_header()),
                ],
                body: Some(body.clone()),
                timeout: self.config.delivery.timeout.get(),
                pinned: None,
            };
            self.pacer.wait("smartemailing").await;
            report.calls += 1;
            let result = self.transport.send(request).await;
            let outcome = classify(Target::SmartEmailing, &result, self.clock.now());
            self.record_call("smartemailing", &outcome, refreshed);
            match outcome {
                Outcome::Unauthorized { response } => {
                    if refreshed {
                        return Outcome::Permanent {
                            reason: "SmartEmailing refused the credentials (401) even after they were reloaded; check SMARTEMAILING_USERNAME and SMARTEMAILING_API_KEY".into(),
                            response: Some(response),
                            status: Some(401),
                        };
                    }
                    tracing::warn!("SmartEmailing answered 401; reloading the credentials and trying once more");
                    self.credentials.refresh().await;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    async fn call_http(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&str>,
        auth: Option<&AuthRef>,
        report: &mut DispatchReport,
    ) -> Outcome {
        let mut all: Vec<(String, String)> = headers.to_vec();
        match auth {
            None => {}
            Some(AuthRef::Basic {
                username,
                password_secret,
            }) => match self
                .credentials
                .secret(password_secret)
                .await
                .ok()
                .flatten()
            {
                Some(p) => all.push(("Authorization".into(), basic_header(username, p.expose()))),
                None => return missing_secret(password_secret),
            },
            Some(AuthRef::Bearer { secret }) => {
                match self.credentials.secret(secret).await.ok().flatten() {
                    Some(t) => all.push(("Authorization".into(), format!("Bearer {}", t.expose()))),
                    None => return missing_secret(secret),
                }
            }
        }
        // The address a name resolves to is checked right before the call, so a host in the
        // allow-list cannot be pointed at the metadata service or the private network.
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Outcome::Permanent {
                    reason: format!("the webhook URL is invalid: {e}"),
                    response: None,
                    status: None,
                }
            }
        };
        let host = parsed.host_str().unwrap_or_default().to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs =
            match crate::security::outbound::check_resolved(&host, port, &self.config.outbound)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return match e {
                        crate::security::outbound::OutboundError::Unresolved(_) => Outcome::Retry {
                            reason: e.to_string(),
                            response: None,
                            retry_after: None,
                            overload: false,
                        },
                        other => Outcome::Permanent {
                            reason: other.to_string(),
                            response: None,
                            status: None,
                        },
                    }
                }
            };
        let target = format!("http:{}", host_of(url));
        self.pacer.wait(&target).await;
        report.calls += 1;
        let result = self
            .transport
            .send(HttpRequest {
                method: method.to_string(),
                url: url.to_string(),
                headers: all,
                body: body.map(|b| b.as_bytes().to_vec()),
                timeout: self.config.delivery.timeout.get(),
                pinned: Some((host.clone(), addrs)),
            })
            .await;
        let outcome = classify(Target::Http, &result, self.clock.now());
        self.record_call(&target, &outcome, true);
        match outcome {
            Outcome::Unauthorized { response } => Outcome::Permanent {
                reason: "the endpoint refused the credentials (401)".into(),
                response: Some(response),
                status: Some(401),
            },
            other => other,
        }
    }

    /// Feeds a call's outcome to the target's breaker. A refused key counts (and, once
    /// confirmed after a reload, opens the circuit at once); a permanent 4xx does not: the
    /// target is healthy, the request is wrong.
    fn record_call(&self, target: &str, outcome: &Outcome, auth_confirmed: bool) {
        let now_ms = self.clock.now_ms();
        match outcome {
            Outcome::Success { .. } | Outcome::Permanent { .. } => self.breakers.success(target),
            Outcome::Retry { .. } => {
                self.breakers.failure(target, now_ms, false);
            }
            Outcome::Unauthorized { .. } => {
                if auth_confirmed {
                    self.breakers.failure(target, now_ms, true);
                }
            }
        }
    }

    /// Holds a delivery back while its target's circuit is open: no attempt is spent.
    async fn hold(
        &self,
        w: &mut Work,
        until_ms: i64,
        now_ms: i64,
        report: &mut DispatchReport,
    ) -> Result<(), StoreError> {
        // A little spread so the waiting deliveries do not all return in the same instant.
        let spread = self
            .rng
            .lock()
            .map(|mut r| r.gen_range(0..1000))
            .unwrap_or(0);
        let due = until_ms + spread;
        w.record.next_attempt_at = Some(due);
        self.deliveries.save(&w.record).await?;
        let delay = Duration::from_millis((due - now_ms).max(0) as u64);
        report.waiting += 1;
        report.retried_handles.push(w.message.handle.clone());
        if let Err(e) = self
            .queue
            .requeue_many(QueueName::Dispatch, &[(w.message.clone(), delay)])
            .await
        {
            tracing::error!(error = %e, delivery = %w.record.id, "could not hold a delivery; the queue will redeliver it");
        }
        Ok(())
    }

    /// Records an outcome on a delivery; `Some(delay)` when it should be retried.
    fn apply(
        &self,
        rec: &mut DeliveryRecord,
        outcome: &Outcome,
        report: &mut DispatchReport,
    ) -> Option<Duration> {
        let now = self.clock.now();
        rec.attempts += 1;
        match outcome {
            Outcome::Success { response } => {
                rec.status = DeliveryStatus::Sent;
                rec.sent_at = Some(now.to_rfc3339_opts(SecondsFormat::Millis, true));
                rec.last_response = Some(response.clone());
                rec.last_error = None;
                rec.next_attempt_at = None;
                report.sent += 1;
                tracing::info!(delivery = %rec.id, rule = %rec.rule, attempts = rec.attempts, "sent");
                None
            }
            Outcome::Retry {
                reason,
                response,
                retry_after,
                overload,
            } => {
                rec.last_error = Some(reason.clone());
                rec.last_response = response.clone();
                let schedule: Vec<Duration> = self
                    .config
                    .delivery
                    .retry_schedule
                    .iter()
                    .map(|d| d.get())
                    .collect();
                if rec.attempts as usize > schedule.len() {
                    rec.status = DeliveryStatus::Dead;
                    rec.last_error =
                        Some(format!("gave up after {} attempts: {reason}", rec.attempts));
                    rec.next_attempt_at = None;
                    report.dead += 1;
                    tracing::warn!(delivery = %rec.id, rule = %rec.rule, reason = %reason, "dead: retries exhausted");
                    return None;
                }
                let jitter = self
                    .rng
                    .lock()
                    .map(|mut r| r.gen_range(-0.2..=0.2))
                    .unwrap_or(0.0);
                let mut delay = retry_delay(&schedule, rec.attempts, *retry_after, jitter);
                if *overload {
                    delay = delay.max(self.config.delivery.min_overload_delay.get());
                }
                rec.status = DeliveryStatus::Retrying;
                rec.next_attempt_at = Some(now.timestamp_millis() + delay.as_millis() as i64);
                report.retrying += 1;
                tracing::info!(delivery = %rec.id, attempts = rec.attempts, delay_ms = delay.as_millis() as u64, reason = %reason, "retrying");
                Some(delay)
            }
            Outcome::Permanent {
                reason, response, ..
            } => {
                rec.status = DeliveryStatus::Dead;
                rec.last_error = Some(reason.clone());
                rec.last_response = response.clone();
                rec.next_attempt_at = None;
                report.dead += 1;
                tracing::warn!(delivery = %rec.id, rule = %rec.rule, reason = %reason, "dead: permanent failure");
                None
            }
            Outcome::Unauthorized { response } => {
                rec.status = DeliveryStatus::Dead;
                rec.last_error = Some("the credentials were refused (401)".into());
                rec.last_response = Some(response.clone());
                report.dead += 1;
                None
            }
        }
    }

    /// The render jobs of a rule's `then` rules, once every one of its actions for the event
    /// succeeded (none otherwise).
    async fn chain(
        &self,
        event_id: &EventId,
        rule_name: &str,
        depth: u32,
    ) -> Result<Vec<String>, StoreError> {
        let Some(rule) = self.config.rule(rule_name) else {
            return Ok(Vec::new());
        };
        if rule.then.is_empty() || depth as usize >= self.config.max_chain_depth() {
            return Ok(Vec::new());
        }
        let mine: Vec<DeliveryRecord> = self
            .deliveries
            .for_event(event_id.as_str())
            .await?
            .into_iter()
            .filter(|d| d.rule == rule_name)
            .collect();
        if mine.len() < rule.actions.len() || !mine.iter().all(|d| d.status.is_success()) {
            return Ok(Vec::new());
        }
        let Some(record) = self.events.get(event_id.as_str()).await? else {
            tracing::warn!(event = %event_id, "cannot chain: the event is no longer stored");
            return Ok(Vec::new());
        };
        let event: Event =
            serde_json::from_value(record.event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // One render job per step, each with its own delay; the render step holds the
        // delayed ones as scheduled deliveries, visible in GET /v1/events/{id}.
        let mut bodies = Vec::with_capacity(rule.then.len());
        for step in &rule.then {
            let job = RenderJob {
                event: event.clone(),
                rules: Some(vec![step.rule.clone()]),
                depth: depth + 1,
                after_ms: step.after.map(|a| a.as_millis() as u64),
            };
            bodies
                .push(serde_json::to_string(&job).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(bodies)
    }
}

/// The target a request goes to, for its circuit breaker and pacing: the SmartEmailing
/// account, or the webhook's host.
pub fn target_of(request: &Prepared) -> String {
    match request {
        Prepared::SmartEmailing { .. } => "smartemailing".to_string(),
        Prepared::Http { url, .. } => format!("http:{}", host_of(url)),
    }
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    host.to_ascii_lowercase()
}

fn missing_secret(name: &str) -> Outcome {
    Outcome::Permanent {
        reason: format!(
            "the secret `{name}` is not set ({} locally, webhook_secrets.{name} on AWS)",
            crate::adapters::env_credentials::secret_env_name(name)
        ),
        response: None,
        status: None,
    }
}

/// Puts deliveries back in the queue with their original ids; a delivery already sent is
/// left alone, so a replay never sends twice. Deliveries whose rendering failed are
/// rendered again with the current config. Returns the ids queued.
pub async fn replay(
    config: &Config,
    events: &dyn EventStore,
    deliveries: &dyn DeliveryStore,
    queue: &dyn Queue,
    ids: &[DeliveryId],
    now: DateTime<Utc>,
) -> Result<Vec<DeliveryId>, StoreError> {
    let mut queued = Vec::new();
    for mut rec in deliveries.get_many(ids).await? {
        if rec.status == DeliveryStatus::Sent {
            continue;
        }
        if rec.request.is_none() || rec.status == DeliveryStatus::Skipped {
            let Some(stored) = events.get(rec.event_id.as_str()).await? else {
                continue;
            };
            let event: Event = serde_json::from_value(stored.event)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let only = vec![rec.rule.clone()];
            let rendered = render_event(config, &event, Some(&only), now)
                .into_iter()
                .find(|r| r.index == rec.action_index);
            match rendered.map(|r| r.result) {
                Some(Ok(prepared)) => rec.request = Some(prepared),
                Some(Err(NotRendered::Failed(why))) | Some(Err(NotRendered::Skipped(why))) => {
                    rec.last_error = Some(why);
                    deliveries.save(&rec).await?;
                    continue;
                }
                None => continue,
            }
        }
        rec.status = DeliveryStatus::Pending;
        rec.attempts = 0;
        rec.next_attempt_at = None;
        deliveries.save(&rec).await?;
        let body = serde_json::to_string(&DispatchJob {
            delivery: rec.id.clone(),
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        queue
            .send(QueueName::Dispatch, vec![body], Duration::ZERO)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        queued.push(rec.id);
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn answers_are_classified() {
        let now = Utc::now();
        let se = Target::SmartEmailing;
        assert!(matches!(
            classify(se, &resp(201, r#"{"status":"created","meta":[]}"#), now),
            Outcome::Success { .. }
        ));
        assert!(matches!(
            classify(se, &resp(200, r#"{"status":"error","message":"bad"}"#), now),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            classify(
                se,
                &resp(200, r#"{"status":"error","message":"Rate limit exceeded"}"#),
                now
            ),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(se, &resp(503, ""), now),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(se, &resp(429, ""), now),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(se, &resp(408, ""), now),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(
                se,
                &resp(422, r#"{"status":"error","message":"Invalid"}"#),
                now
            ),
            Outcome::Permanent {
                status: Some(422),
                ..
            }
        ));
        assert!(matches!(
            classify(se, &resp(401, ""), now),
            Outcome::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(se, &Err(TransportError::Timeout), now),
            Outcome::Retry { .. }
        ));
        // Only SmartEmailing's envelope is read.
        assert!(matches!(
            classify(Target::Http, &resp(200, r#"{"status":"error"}"#), now),
            Outcome::Success { .. }
        ));
    }

    #[test]
    fn retry_after_is_bounded_by_the_schedule() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(60)];
        assert_eq!(
            retry_delay(&schedule, 1, None, 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            retry_delay(&schedule, 1, None, 0.2),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(15)), 0.0),
            Duration::from_secs(15)
        );
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(500)), 0.0),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry_delay(&schedule, 2, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry_delay(&schedule, 9, None, 0.0),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_reads_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
