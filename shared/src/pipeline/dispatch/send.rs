//! Send: one call per chunk of deliveries. A SmartEmailing bulk call carries the chunk's
//! items and is split in halves when it fails on one bad item (422); a webhook call carries
//! one delivery, with its credentials and its host's addresses checked just before the call.
//! Every answer goes through `policy::classify` and feeds the target's breaker.

use super::report::endpoint_of;
use super::{DispatchReport, Dispatcher};
use crate::domain::delivery::{Attempt, AttemptClass, AuthRef, DeliveryRecord, Outcome, Prepared};
use crate::domain::secret::{basic_header, SeCredentials};
use crate::domain::smartemailing::Endpoint;
use crate::policy::classify::{classify, Target, Verdict};
use crate::ports::HttpRequest;
use crate::security::outbound::{check_resolved, OutboundError};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

/// The breaker and pacing target of SmartEmailing calls.
const SMARTEMAILING: &str = "smartemailing";

/// The target a request goes to, for its circuit breaker and pacing: the SmartEmailing
/// account, or the webhook's host.
pub fn target_of(request: &Prepared) -> String {
    match request {
        Prepared::SmartEmailing { .. } => SMARTEMAILING.to_string(),
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

/// A failure before any call was made, which no retry will mend.
fn permanent(reason: impl Into<String>) -> Outcome {
    Outcome::Permanent {
        reason: reason.into(),
        response: None,
        status: None,
    }
}

/// A failure before any call was made, worth another try.
fn retry(reason: impl Into<String>) -> Outcome {
    Outcome::Retry {
        reason: reason.into(),
        response: None,
        retry_after: None,
        overload: false,
    }
}

/// A webhook secret that is not set. Where secrets come from is the driver's business (the
/// CLI warns about the variable at start), so only the name is given.
fn missing_secret(name: &str) -> Outcome {
    permanent(format!("the secret `{name}` is not set"))
}

/// The call that decided a delivery's outcome, for its attempt log.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Call {
    /// When it started (Unix ms, the dispatcher's clock).
    at_ms: i64,
    /// How long it took.
    duration_ms: u64,
    /// The target's status code, when it answered.
    status_code: Option<u16>,
}

/// What one delivery's attempt came to: its outcome and the call that decided it (none was
/// made when the request could not be built).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tried {
    /// The outcome.
    pub(super) outcome: Outcome,
    /// The call.
    pub(super) call: Call,
}

impl Tried {
    /// The attempt as the delivery's log keeps it, classified `class`.
    pub(super) fn attempt(&self, class: AttemptClass) -> Attempt {
        let (response, reason) = match &self.outcome {
            Outcome::Success { response } => (Some(response.clone()), None),
            Outcome::Retry {
                reason, response, ..
            }
            | Outcome::Permanent {
                reason, response, ..
            } => (response.clone(), Some(reason.clone())),
        };
        Attempt {
            at_ms: self.call.at_ms,
            duration_ms: self.call.duration_ms,
            status_code: self.call.status_code,
            response,
            class,
            reason,
        }
    }
}

/// A boxed future, so `send` can call itself on the halves of a split chunk.
type Sending<'a> = Pin<Box<dyn Future<Output = Vec<Tried>> + Send + 'a>>;

impl Dispatcher {
    /// The send phase: the outcome of each delivery of `chunk` (which share one bulk key).
    pub(super) fn send<'a>(
        &'a self,
        chunk: &'a [&'a DeliveryRecord],
        report: &'a mut DispatchReport,
    ) -> Sending<'a> {
        Box::pin(async move {
            let Some(first) = chunk.first() else {
                return Vec::new();
            };
            let tried = match &first.request {
                None => self.uncalled(permanent(
                    "the delivery has no rendered request; fix the config and replay it",
                )),
                Some(Prepared::SmartEmailing {
                    endpoint, group, ..
                }) => return self.send_bulk(chunk, *endpoint, group, report).await,
                Some(Prepared::Http {
                    method,
                    url,
                    headers,
                    body,
                    auth,
                }) => {
                    let request = HttpRequest {
                        method: method.clone(),
                        url: url.clone(),
                        headers: headers.clone(),
                        body: body.as_ref().map(|b| b.as_bytes().to_vec()),
                        timeout: self.ctx.config.delivery.timeout.get(),
                        pinned: None,
                    };
                    self.call_http(request, auth.as_ref(), report).await
                }
            };
            vec![tried; chunk.len()]
        })
    }

    /// An outcome reached without a call: the attempt is logged now, taking no time.
    fn uncalled(&self, outcome: Outcome) -> Tried {
        let call = Call {
            at_ms: self.ctx.clock.now_ms(),
            ..Call::default()
        };
        Tried { outcome, call }
    }

    /// One SmartEmailing bulk call carrying the chunk's items. A 422 on a chunk of several
    /// is split in halves and each tried alone, so one bad item does not sink the rest.
    async fn send_bulk(
        &self,
        chunk: &[&DeliveryRecord],
        endpoint: Endpoint,
        group: &Value,
        report: &mut DispatchReport,
    ) -> Vec<Tried> {
        let items = chunk
            .iter()
            .filter_map(|r| match &r.request {
                Some(Prepared::SmartEmailing { item, .. }) => Some(item.clone()),
                _ => None,
            })
            .collect();
        let tried = self
            .call_smartemailing(endpoint, group, items, report)
            .await;
        let one_bad_item = matches!(
            tried.outcome,
            Outcome::Permanent {
                status: Some(422),
                ..
            }
        );
        if one_bad_item && chunk.len() > 1 {
            let (a, b) = chunk.split_at(chunk.len() / 2);
            let mut out = self.send(a, report).await;
            out.extend(self.send(b, report).await);
            return out;
        }
        vec![tried; chunk.len()]
    }

    /// One SmartEmailing call. A 401 reloads the credentials and tries once more; a second
    /// 401 gives the deliveries up.
    async fn call_smartemailing(
        &self,
        endpoint: Endpoint,
        group: &Value,
        items: Vec<Value>,
        report: &mut DispatchReport,
    ) -> Tried {
        let body = match serde_json::to_vec(&endpoint.body(group, items)) {
            Ok(b) => b,
            Err(e) => {
                return self.uncalled(permanent(format!(
                    "cannot encode the SmartEmailing call: {e}"
                )))
            }
        };
        let mut refreshed = false;
        loop {
            let creds = match self.ctx.credentials.smartemailing().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return self.uncalled(retry("SmartEmailing credentials are not configured"))
                }
                Err(e) => return self.uncalled(retry(e.to_string())),
            };
            let request = self.smartemailing_request(endpoint, &creds, body.clone());
            let (verdict, call) = self
                .call(
                    SMARTEMAILING,
                    Target::SmartEmailing,
                    request,
                    refreshed,
                    report,
                )
                .await;
            let outcome = match verdict {
                Verdict::Outcome(outcome) => outcome,
                Verdict::Unauthorized { response } if refreshed => Outcome::Permanent {
                    reason: "SmartEmailing refused the credentials (401) even after they were reloaded; check the SmartEmailing username and API key".into(),
                    response: Some(response),
                    status: Some(401),
                },
                Verdict::Unauthorized { .. } => {
                    tracing::warn!("SmartEmailing answered 401; reloading the credentials and trying once more");
                    self.ctx.credentials.refresh().await;
                    refreshed = true;
                    continue;
                }
            };
            return Tried { outcome, call };
        }
    }

    /// A SmartEmailing API request with its JSON body and Basic credentials.
    fn smartemailing_request(
        &self,
        endpoint: Endpoint,
        creds: &SeCredentials,
        body: Vec<u8>,
    ) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: format!(
                "{}{}",
                self.ctx.config.smartemailing.base_url,
                endpoint.path()
            ),
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Accept".into(), "application/json".into()),
                ("Authorization".into(), creds.basic_header()),
            ],
            body: Some(body),
            timeout: self.ctx.config.delivery.timeout.get(),
            pinned: None,
        }
    }

    /// One webhook call. A 401 gives the delivery up at once: a webhook's secret is not
    /// reloaded.
    async fn call_http(
        &self,
        mut request: HttpRequest,
        auth: Option<&AuthRef>,
        report: &mut DispatchReport,
    ) -> Tried {
        match self.authorization(auth).await {
            Ok(Some(value)) => request.headers.push(("Authorization".into(), value)),
            Ok(None) => {}
            Err(outcome) => return self.uncalled(outcome),
        }
        match self.pin(&request.url).await {
            Ok(pinned) => request.pinned = Some(pinned),
            Err(outcome) => return self.uncalled(outcome),
        }
        let target = format!("http:{}", host_of(&request.url));
        let (verdict, call) = self
            .call(&target, Target::Http, request, true, report)
            .await;
        let outcome = match verdict {
            Verdict::Outcome(outcome) => outcome,
            Verdict::Unauthorized { response } => Outcome::Permanent {
                reason: "the endpoint refused the credentials (401)".into(),
                response: Some(response),
                status: Some(401),
            },
        };
        Tried { outcome, call }
    }

    /// The `Authorization` header a webhook's auth asks for, if any.
    async fn authorization(&self, auth: Option<&AuthRef>) -> Result<Option<String>, Outcome> {
        let Some(auth) = auth else {
            return Ok(None);
        };
        let name = match auth {
            AuthRef::Basic {
                password_secret, ..
            } => password_secret,
            AuthRef::Bearer { secret } => secret,
        };
        let Some(secret) = self.ctx.credentials.secret(name).await.ok().flatten() else {
            return Err(missing_secret(name));
        };
        Ok(Some(match auth {
            AuthRef::Basic { username, .. } => basic_header(username, secret.expose()),
            AuthRef::Bearer { .. } => format!("Bearer {}", secret.expose()),
        }))
    }

    /// The addresses a webhook's host may be reached at. They are checked right before the
    /// call, so a host in the allow-list cannot be pointed at the metadata service or the
    /// private network.
    async fn pin(&self, url: &str) -> Result<(String, Vec<SocketAddr>), Outcome> {
        let parsed = url::Url::parse(url)
            .map_err(|e| permanent(format!("the webhook URL is invalid: {e}")))?;
        let host = parsed.host_str().unwrap_or_default().to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        match check_resolved(&host, port, &self.ctx.config.outbound).await {
            Ok(addrs) => Ok((host, addrs)),
            Err(e @ OutboundError::Unresolved(_)) => Err(retry(e.to_string())),
            Err(e) => Err(permanent(e.to_string())),
        }
    }

    /// Makes one call, paced per target, and classifies its answer. The breaker hears of it:
    /// a refused key counts only once confirmed (`auth_confirmed`, after a reload), and then
    /// opens the circuit at once; a permanent 4xx does not count (the target is healthy, the
    /// request is wrong). The call is timed by the dispatcher's clock, after the pacing.
    async fn call(
        &self,
        target: &str,
        kind: Target,
        request: HttpRequest,
        auth_confirmed: bool,
        report: &mut DispatchReport,
    ) -> (Verdict, Call) {
        self.pacer.wait(target).await;
        report.calls += 1;
        let at_ms = self.ctx.clock.now_ms();
        let (endpoint, started) = (endpoint_of(kind, &request.url), Instant::now());
        let result = self.ctx.transport.send(request).await;
        let verdict = classify(kind, &result, self.ctx.clock.now());
        let now_ms = self.ctx.clock.now_ms();
        let call = Call {
            at_ms,
            duration_ms: (now_ms - at_ms).max(0) as u64,
            status_code: result.as_ref().ok().map(|r| r.status),
        };
        match &verdict {
            Verdict::Outcome(Outcome::Success { .. } | Outcome::Permanent { .. }) => {
                self.breakers.success(target)
            }
            Verdict::Outcome(Outcome::Retry { .. }) => {
                self.breakers.failure(target, now_ms, false);
            }
            Verdict::Unauthorized { .. } if auth_confirmed => {
                self.breakers.failure(target, now_ms, true);
            }
            Verdict::Unauthorized { .. } => {}
        }
        self.report_call(target, endpoint, &result, &verdict, started);
        (verdict, call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_account_or_the_webhook_host() {
        let http = Prepared::Http {
            method: "POST".into(),
            url: "https://user@Hooks.Example.com:8443/x?y#z".into(),
            headers: vec![],
            body: None,
            auth: None,
        };
        assert_eq!(target_of(&http), "http:hooks.example.com:8443");
        assert_eq!(host_of("no-scheme.example/p"), "no-scheme.example");
    }

    #[test]
    fn a_missing_secret_is_named_without_where_it_comes_from() {
        let Outcome::Permanent { reason, .. } = missing_secret("crm_token") else {
            panic!("expected a permanent failure");
        };
        assert_eq!(reason, "the secret `crm_token` is not set");
    }
}
