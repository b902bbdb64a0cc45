//! How a call to a target went, in the few classes the metrics count: `2xx`, `3xx`, `4xx`,
//! `5xx`, `timeout`, `network`, `envelope_error` (SmartEmailing's 2xx with `status: error`)
//! and `rate_limited`.

use crate::domain::delivery::Outcome;
use crate::domain::http::{HttpResponse, TransportError};
use crate::policy::classify::Verdict;

/// A call's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// Answered 2xx and accepted.
    Success,
    /// Answered 3xx (the relay follows no redirect).
    Redirect,
    /// Answered 4xx (401 included), not a rate limit.
    ClientError,
    /// Answered 5xx, not a rate limit.
    ServerError,
    /// No answer within the timeout.
    Timeout,
    /// The connection failed, or the request could not be built.
    Network,
    /// SmartEmailing answered 2xx with `status: error`.
    EnvelopeError,
    /// 429, or an answer saying the caller is rate limited.
    RateLimited,
}

impl CallClass {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallClass::Success => "2xx",
            CallClass::Redirect => "3xx",
            CallClass::ClientError => "4xx",
            CallClass::ServerError => "5xx",
            CallClass::Timeout => "timeout",
            CallClass::Network => "network",
            CallClass::EnvelopeError => "envelope_error",
            CallClass::RateLimited => "rate_limited",
        }
    }

    /// The class of a call's result, as `policy::classify` judged it.
    pub fn of(result: &Result<HttpResponse, TransportError>, verdict: &Verdict) -> Self {
        let status = match result {
            Err(TransportError::Timeout) => return CallClass::Timeout,
            Err(_) => return CallClass::Network,
            Ok(resp) => resp.status,
        };
        match verdict {
            // A timeout is an overload too, but it has no answer and was classed above.
            Verdict::Outcome(Outcome::Retry { overload: true, .. }) => CallClass::RateLimited,
            Verdict::Outcome(Outcome::Permanent { .. }) if (200..300).contains(&status) => {
                CallClass::EnvelopeError
            }
            _ if status == 429 => CallClass::RateLimited,
            _ => match status {
                200..=299 => CallClass::Success,
                300..=399 => CallClass::Redirect,
                500..=599 => CallClass::ServerError,
                _ => CallClass::ClientError,
            },
        }
    }

    /// Whether the call failed.
    pub fn is_error(self) -> bool {
        self != CallClass::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::classify::{classify, Target};
    use chrono::Utc;

    fn class(target: Target, status: u16, body: &str) -> CallClass {
        let result = Ok(HttpResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
            cut: None,
        });
        CallClass::of(&result, &classify(target, &result, Utc::now()))
    }

    #[test]
    fn every_answer_falls_in_one_class() {
        let se = Target::SmartEmailing;
        assert_eq!(
            class(se, 201, r#"{"status":"created"}"#),
            CallClass::Success
        );
        assert_eq!(
            class(se, 200, r#"{"status":"error","message":"bad"}"#),
            CallClass::EnvelopeError
        );
        assert_eq!(
            class(
                se,
                200,
                r#"{"status":"error","message":"Rate limit exceeded"}"#
            ),
            CallClass::RateLimited
        );
        assert_eq!(class(Target::Http, 429, ""), CallClass::RateLimited);
        assert_eq!(class(Target::Http, 503, ""), CallClass::ServerError);
        assert_eq!(class(Target::Http, 422, ""), CallClass::ClientError);
        assert_eq!(class(Target::Http, 401, ""), CallClass::ClientError);
        assert_eq!(class(Target::Http, 301, ""), CallClass::Redirect);
        let timeout = Err(TransportError::Timeout);
        let v = classify(Target::Http, &timeout, Utc::now());
        assert_eq!(CallClass::of(&timeout, &v), CallClass::Timeout);
        let refused = Err(TransportError::Connection("refused".into()));
        let v = classify(Target::Http, &refused, Utc::now());
        assert_eq!(CallClass::of(&refused, &v), CallClass::Network);
    }
}
