//! `send_transactional_email`: sends a stored e-mail, or one written in the config, to the
//! contact (`/send/transactional-emails-bulk`).

use super::send::{compile_email_task, email_group, SendTask, SenderSpec};
use super::Compiler;
use crate::domain::smartemailing::Endpoint;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendTransactionalSpec {
    #[serde(default)]
    email_id: Option<Value>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    html_body: Option<String>,
    #[serde(default)]
    text_body: Option<String>,
    sender: SenderSpec,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    replace: Map<String, Value>,
    #[serde(default)]
    template_variables: Option<Value>,
    #[serde(default)]
    pub(super) email: Option<String>,
}

/// Checks and compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &SendTransactionalSpec) -> SendTask {
    let mut group = email_group(&a.sender, &a.tag);
    match (&a.email_id, &a.subject, &a.html_body, &a.text_body) {
        (Some(id), None, None, None) => {
            group["email_id"] = id.clone();
        }
        (None, Some(subject), html, text) if html.is_some() || text.is_some() => {
            group["message_contents"] = json!({
                "subject": subject,
                "html_body": html.clone().unwrap_or_default(),
                "text_body": text.clone().unwrap_or_default(),
            });
        }
        _ => c.problem(format!(
            "{p}: give either email_id, or subject with html_body and/or text_body"
        )),
    }
    compile_email_task(
        c,
        p,
        Endpoint::TransactionalEmails,
        &group,
        &a.replace,
        a.template_variables.as_ref(),
    )
}
