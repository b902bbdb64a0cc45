//! `webhook`: a request to any HTTP endpoint the outbound policy allows.

use super::{Compiler, NotRendered, Scope};
use crate::domain::delivery::{AuthRef, Prepared};
use crate::rules::template::Piece;
use crate::security::outbound;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookSpec {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    body: Option<Value>,
}

fn default_method() -> String {
    "POST".into()
}

/// The webhook's `auth` as written in the config.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawAuth {
    Basic(BasicAuthSpec),
    BearerSecret(String),
}

/// HTTP Basic as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthSpec {
    username: String,
    password_secret: String,
}

/// A request to any HTTP endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The method, upper case.
    pub method: String,
    /// The URL template.
    pub url: Piece,
    /// The URL template's host when it is written out: the rendered URL must keep it.
    pub static_host: Option<String>,
    /// Header templates.
    pub headers: Vec<(String, Piece)>,
    /// The Content-Type.
    pub content_type: String,
    /// Authentication.
    pub auth: Option<WebhookAuth>,
    /// The body.
    pub body: Option<WebhookBody>,
}

/// A webhook body: a JSON tree rendered structurally, or one text template.
#[derive(Debug, Clone)]
pub enum WebhookBody {
    /// Rendered leaf by leaf and encoded by serde_json.
    Json(crate::rules::template::Node),
    /// One template, for non-JSON content types.
    Text(Piece),
}

/// Webhook authentication, with secrets named, not held.
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    /// HTTP Basic.
    Basic {
        /// The user name template.
        username: Piece,
        /// The secret with the password.
        password_secret: String,
    },
    /// A bearer token from a secret.
    Bearer {
        /// The secret with the token.
        secret: String,
    },
}

impl WebhookAuth {
    /// The name of the secret the credentials come from.
    pub fn secret_name(&self) -> &str {
        match self {
            WebhookAuth::Basic {
                password_secret, ..
            } => password_secret,
            WebhookAuth::Bearer { secret } => secret,
        }
    }
}

/// Whether a secret name is one the credential stores accept: letters, digits, `_` or `-`.
pub(crate) fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks and compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, w: &WebhookSpec) -> WebhookRequest {
    let method = w.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        c.problem(format!(
            "{p}.method: `{}` must be GET, POST, PUT, PATCH or DELETE",
            w.method
        ));
    }
    // A URL rendered whole from the event is allowed: the allow-list still applies
    // to what it renders to.
    if !(w.url.starts_with("https://")
        || w.url.starts_with("http://")
        || w.url.trim_start().starts_with("{{"))
    {
        c.problem(format!("{p}.url: must start with https:// (or http://)"));
    }
    let url = c.text(&format!("{p}.url"), &w.url);
    let headers = compile_headers(c, p, &w.headers);
    let content_type = w
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    let body = w
        .body
        .as_ref()
        .map(|b| compile_body(c, p, &content_type, b));
    let auth = w.auth.as_ref().map(|a| compile_auth(c, p, a));
    WebhookRequest {
        method,
        url,
        static_host: outbound::static_host(&w.url),
        headers,
        content_type,
        auth,
        body,
    }
}

/// The headers the config may set (the relay owns Host, Content-Length, Authorization and
/// Content-Type), each a template.
fn compile_headers(
    c: &mut Compiler,
    p: &str,
    given: &BTreeMap<String, String>,
) -> Vec<(String, Piece)> {
    let mut headers = Vec::new();
    for (k, v) in given {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host" | "content-length" | "authorization" | "content-type"
        ) {
            c.problem(format!(
                "{p}.headers.{k}: set this through {} instead",
                if lower == "content-type" {
                    "content_type"
                } else if lower == "authorization" {
                    "auth"
                } else {
                    "nothing (the relay sets it)"
                }
            ));
            continue;
        }
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
        {
            c.problem(format!("{p}.headers.{k}: not a valid header name"));
            continue;
        }
        headers.push((k.clone(), c.text(&format!("{p}.headers.{k}"), v)));
    }
    headers
}

/// A JSON content type gets a structural body; any other, one text template.
fn compile_body(c: &mut Compiler, p: &str, content_type: &str, body: &Value) -> WebhookBody {
    let place = format!("{p}.body");
    if content_type.to_ascii_lowercase().contains("json") {
        return WebhookBody::Json(c.tree(&place, body));
    }
    match body {
        Value::String(text) => WebhookBody::Text(c.text(&place, text)),
        _ => {
            c.problem(format!(
                "{p}.body: with content_type `{content_type}` the body must be one text template"
            ));
            WebhookBody::Text(Piece::Literal(String::new()))
        }
    }
}

/// The credentials, named by secret; the name is checked here, once, at this action's place.
fn compile_auth(c: &mut Compiler, p: &str, auth: &RawAuth) -> WebhookAuth {
    let auth = match auth {
        RawAuth::Basic(b) => WebhookAuth::Basic {
            username: c.text(&format!("{p}.auth.basic.username"), &b.username),
            password_secret: b.password_secret.clone(),
        },
        RawAuth::BearerSecret(name) => WebhookAuth::Bearer {
            secret: name.clone(),
        },
    };
    let name = auth.secret_name();
    if !valid_secret_name(name) {
        c.problem(format!(
            "{p}.auth: secret name `{name}` must be letters, digits, `_` or `-`"
        ));
    }
    auth
}

impl WebhookRequest {
    /// Renders the request for the event in scope, checking where it goes.
    pub(super) fn render(&self, s: &Scope) -> Result<Prepared, NotRendered> {
        let url = s.text(&self.url)?;
        // No SSRF through event data: the scheme, the allow-list, and the template's own host.
        let url = outbound::check_rendered_url(self.static_host.as_deref(), &url, s.outbound)
            .map_err(|e| NotRendered::Failed(format!("webhook.url: {e}")))?
            .to_string();
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            let v = s.text(v)?;
            outbound::check_header_value(&v)
                .map_err(|e| NotRendered::Failed(format!("webhook.headers.{k}: {e}")))?;
            headers.push((k.clone(), v));
        }
        let body = match &self.body {
            None => None,
            Some(WebhookBody::Json(node)) => Some(
                serde_json::to_string(&s.tree(node)?)
                    .map_err(|e| NotRendered::Failed(e.to_string()))?,
            ),
            Some(WebhookBody::Text(p)) => Some(s.text(p)?),
        };
        if body.is_some() {
            headers.push(("Content-Type".into(), self.content_type.clone()));
        }
        let auth = match &self.auth {
            None => None,
            Some(WebhookAuth::Basic {
                username,
                password_secret,
            }) => Some(AuthRef::Basic {
                username: s.text(username)?,
                password_secret: password_secret.clone(),
            }),
            Some(WebhookAuth::Bearer { secret }) => Some(AuthRef::Bearer {
                secret: secret.clone(),
            }),
        };
        Ok(Prepared::Http {
            method: self.method.clone(),
            url,
            headers,
            body,
            auth,
        })
    }
}
