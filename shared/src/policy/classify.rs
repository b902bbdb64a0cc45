//! The one place that decides what an answer means, for every action (as vector's
//! `RetryLogic`): sent, worth another try, never going to work, or credentials refused.

use crate::domain::delivery::Outcome;
use crate::domain::http::{HttpResponse, TransportError};
use crate::domain::smartemailing::{says_rate_limited, Envelope};
use crate::policy::retry::parse_retry_after;
use chrono::{DateTime, Utc};

/// How much of an answer body is kept with a delivery.
const RESPONSE_EXCERPT: usize = 500;

/// Whose answer is being classified: SmartEmailing's envelope rules apply only to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The SmartEmailing API.
    SmartEmailing,
    /// Any other HTTP endpoint.
    Http,
}

/// What an answer means: an outcome for the deliveries it carried, or a refusal of the
/// credentials, which the caller settles (reload them and try once more, or give up) before
/// any delivery records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The answer settles the deliveries.
    Outcome(Outcome),
    /// The credentials were refused (401).
    Unauthorized {
        /// Status and the start of the body.
        response: String,
    },
}

/// Classifies a call's result.
pub fn classify(
    target: Target,
    result: &Result<HttpResponse, TransportError>,
    now: DateTime<Utc>,
) -> Verdict {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Outcome(Outcome::Retry {
                reason: e.to_string(),
                response: None,
                retry_after: None,
                overload: matches!(e, TransportError::Timeout),
            })
        }
    };
    if resp.status == 401 {
        return Verdict::Unauthorized {
            response: excerpt(resp),
        };
    }
    let envelope = match target {
        Target::SmartEmailing => Envelope::parse(&resp.body),
        Target::Http => None,
    };
    Verdict::Outcome(answered(resp, envelope.as_ref(), now))
}

/// The outcome of an answer other than 401.
fn answered(resp: &HttpResponse, envelope: Option<&Envelope>, now: DateTime<Utc>) -> Outcome {
    let excerpt = excerpt(resp);
    let retry_after = resp
        .header("retry-after")
        .and_then(|v| parse_retry_after(v, now));
    let status = resp.status;
    let message = envelope.map(Envelope::message_text).unwrap_or_default();
    let rate_limited = || Outcome::Retry {
        reason: format!("SmartEmailing is rate limiting: {message}"),
        response: Some(excerpt.clone()),
        retry_after,
        overload: true,
    };
    match status {
        200..=299 => match envelope {
            Some(env) if env.is_error() && says_rate_limited(&message) => rate_limited(),
            Some(env) if env.is_error() => Outcome::Permanent {
                reason: format!("SmartEmailing answered {status} with status error: {message}"),
                response: Some(excerpt),
                status: Some(status),
            },
            _ => Outcome::Success { response: excerpt },
        },
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("the target answered {status}{}", suffix(&message)),
            response: Some(excerpt),
            retry_after,
            overload: status == 429 || says_rate_limited(&message),
        },
        _ if says_rate_limited(&message) => rate_limited(),
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
    // A body the relay stopped reading says so, so a cut envelope is not taken for the whole.
    match &resp.cut {
        Some(why) => format!("{} {} [{why}]", resp.status, cut),
        None => format!("{} {}", resp.status, cut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            cut: None,
        })
    }

    fn outcome(target: Target, result: Result<HttpResponse, TransportError>) -> Outcome {
        match classify(target, &result, Utc::now()) {
            Verdict::Outcome(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_are_classified() {
        let se = Target::SmartEmailing;
        assert!(matches!(
            outcome(se, resp(201, r#"{"status":"created","meta":[]}"#)),
            Outcome::Success { .. }
        ));
        assert!(matches!(
            outcome(se, resp(200, r#"{"status":"error","message":"bad"}"#)),
            Outcome::Permanent { .. }
        ));
        assert!(matches!(
            outcome(
                se,
                resp(200, r#"{"status":"error","message":"Rate limit exceeded"}"#)
            ),
            Outcome::Retry { overload: true, .. }
        ));
        assert!(matches!(outcome(se, resp(503, "")), Outcome::Retry { .. }));
        assert!(matches!(
            outcome(se, resp(429, "")),
            Outcome::Retry { overload: true, .. }
        ));
        assert!(matches!(outcome(se, resp(408, "")), Outcome::Retry { .. }));
        assert!(matches!(
            outcome(se, resp(422, r#"{"status":"error","message":"Invalid"}"#)),
            Outcome::Permanent {
                status: Some(422),
                ..
            }
        ));
        assert!(matches!(
            classify(se, &resp(401, ""), Utc::now()),
            Verdict::Unauthorized { .. }
        ));
        assert!(matches!(
            outcome(se, Err(TransportError::Timeout)),
            Outcome::Retry { overload: true, .. }
        ));
        // Only SmartEmailing's envelope is read.
        assert!(matches!(
            outcome(Target::Http, resp(200, r#"{"status":"error"}"#)),
            Outcome::Success { .. }
        ));
    }

    #[test]
    fn a_rate_limit_message_on_a_client_error_is_retried() {
        let body = r#"{"status":"error","message":"Rate limit exceeded"}"#;
        assert!(matches!(
            outcome(Target::SmartEmailing, resp(400, body)),
            Outcome::Retry { overload: true, .. }
        ));
    }

    #[test]
    fn a_long_body_is_cut_in_the_excerpt() {
        let long = "x".repeat(RESPONSE_EXCERPT + 10);
        let Outcome::Success { response } = outcome(Target::Http, resp(200, &long)) else {
            panic!("expected a success");
        };
        assert_eq!(response.chars().count(), 4 + RESPONSE_EXCERPT + 1);
        assert!(response.ends_with('…'));
    }
}
