//! `send_sms`: sends a SmartEmailing SMS template to the contact's phone (`/send/custom-sms-bulk`).

use super::send::{compile_task, SendTask};
use super::Compiler;
use crate::domain::smartemailing::Endpoint;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The action as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendSmsSpec {
    sms_id: Value,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    cellphone: Option<String>,
    #[serde(default)]
    replace: Map<String, Value>,
    #[serde(default)]
    pub(super) email: Option<String>,
}

/// Compiles the spec; `p` is the action's place with its kind.
pub(super) fn compile(c: &mut Compiler, p: &str, a: &SendSmsSpec) -> SendTask {
    let group = json!({"tag": a.tag.clone().unwrap_or_default(), "sms_id": a.sms_id});
    let mut task = compile_task(c, p, Endpoint::CustomSms, &group, &a.replace);
    task.cellphone = a
        .cellphone
        .as_ref()
        .map(|n| c.text(&format!("{p}.cellphone"), n));
    task
}
