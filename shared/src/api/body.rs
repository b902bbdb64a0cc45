//! Reading request bodies: the Content-Type, the size limit, and bounded JSON parsing.

use super::error::ApiError;
use crate::domain::smartemailing_webhook::form_to_object;
use crate::security::limits::{check_json, InputLimits};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{json, Value};

/// Reads the body within `limit` bytes, checking its Content-Type; `true` with the bytes
/// when it is a form (taken only where `allow_form`).
pub(crate) async fn read_body(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
    allow_form: bool,
) -> Result<(Bytes, bool), ApiError> {
    let is_form = content_kind(headers, allow_form)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    Ok((bytes, is_form))
}

/// `false` for JSON, `true` for a form; any other Content-Type is refused.
fn content_kind(headers: &HeaderMap, allow_form: bool) -> Result<bool, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = ctype.split(';').next().unwrap_or("").trim();
    let is_json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    if is_json {
        return Ok(false);
    }
    if allow_form && mime == "application/x-www-form-urlencoded" {
        return Ok(true);
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        if allow_form {
            "send Content-Type: application/json (or application/x-www-form-urlencoded)"
        } else {
            "send Content-Type: application/json"
        },
    ))
}

/// Bounded parsing: depth, string lengths, field counts, duplicate keys, exact numbers.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    Ok(check_json(bytes, &InputLimits::default())?)
}

/// Reads and parses a JSON body within the limits.
pub(crate) async fn read_json(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    let (bytes, _) = read_body(limit, headers, body, false).await?;
    parse_json(&bytes)
}

/// A webhook's body as an object: JSON, a form (PHP-style keys nested), or empty.
pub(crate) async fn read_webhook_body(
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    let (bytes, is_form) = read_body(limit, headers, body, true).await?;
    if is_form {
        let pairs = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_form",
                format!("the form body is invalid: {e}"),
            )
        })?;
        Ok(form_to_object(pairs))
    } else if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(json!({}))
    } else {
        parse_json(&bytes)
    }
}
