//! `send_email`: sends a SmartEmailing e-mail template to the contact (`/send/custom-emails-bulk`).

use super::send::{compile_email_task, email_group, SendTask, SenderSpec};
use super::Compiler;
use crate::domain::smartemailing::Endpoint;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendEmailSpec {
    email_id: Value,
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

/// Compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &SendEmailSpec) -> SendTask {
    let mut group = email_group(&a.sender, &a.tag);
    group["email_id"] = a.email_id.clone();
    compile_email_task(
        c,
        p,
        Endpoint::CustomEmails,
        &group,
        &a.replace,
        a.template_variables.as_ref(),
    )
}
