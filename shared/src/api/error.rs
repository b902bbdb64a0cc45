//! The API's one error type, `{"error": {"code", "message", "path"}}`, and the conversions
//! that let handlers use `?`.

use crate::domain::event::FieldError;
use crate::pipeline::inbound::InboundError;
use crate::security::limits::{LimitCode, LimitError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::fmt::Display;

/// An API error: `{"error": {"code", "message", "path"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    path: Option<String>,
    /// One more member of the error object (e.g. every problem of rules being tried).
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    /// An error with no field path.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            path: None,
            extra: None,
        }
    }

    /// The same error with one more member of its object.
    pub(crate) fn with(mut self, key: &'static str, value: Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    /// The same error, pointing at a field (a JSON pointer).
    pub(crate) fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// `503 unavailable`: the store or the secrets could not be reached; the caller should
    /// retry. The cause goes to the log only.
    pub(crate) fn unavailable(what: &str, cause: impl Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "try again shortly",
        )
    }

    /// `404 not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `413 payload_too_large` for a body over `limit` bytes.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// What the inbound step refused, with the path of the event in a batch (`/events/<i>`)
    /// or of the single event (``).
    pub(crate) fn inbound(e: InboundError, batch: bool) -> Self {
        let at = |index: usize, field: &str| {
            if batch {
                format!("/events/{index}{field}")
            } else {
                field.to_string()
            }
        };
        match e {
            InboundError::KeyReused { index, id } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("the id `{id}` was already used for an event with a different body"),
            )
            .at(at(index, "/id")),
            InboundError::InProgress { index, id } => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                format!("the event `{id}` is being accepted by another request; retry shortly"),
            )
            .at(at(index, "/id")),
            InboundError::TooLarge { index, id, limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                format!("the event `{id}` is larger than {limit} bytes; send less data per event"),
            )
            .at(at(index, "")),
            InboundError::Job(e) => {
                tracing::error!(error = %e, "an event could not be encoded");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the relay could not encode this event; nothing was stored",
                )
            }
            InboundError::Store(e) => {
                tracing::error!(error = %e, "inbound store failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the relay cannot store events right now; retry",
                )
            }
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", e.message).at(e.path)
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let status = match e.code {
            LimitCode::TooManyFields | LimitCode::TooManyValues | LimitCode::StringTooLong => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.code.as_str(), e.message).at(e.path)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(p) = self.path {
            err["path"] = Value::String(p);
        }
        if let Some((key, value)) = self.extra {
            err[key] = value;
        }
        let mut resp = (self.status, Json(json!({"error": err}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
