//! The config file as written: the serde shapes, before any check. The type names show in
//! serde's messages ("expected struct RawRule"), so they stay as they are.

use super::settings::{DeliverySettings, SmartEmailingSettings};
use crate::domain::duration::HumanDuration;
use crate::rules::actions::RawAction;
use crate::security::outbound::OutboundPolicy;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) smartemailing: SmartEmailingSettings,
    #[serde(default)]
    pub(super) delivery: DeliverySettings,
    #[serde(default)]
    pub(super) schedules: RawSchedules,
    #[serde(default)]
    pub(super) outbound: OutboundPolicy,
    #[serde(default)]
    pub(super) inbound: RawInbound,
    #[serde(default)]
    pub(super) server: super::ServerSettings,
    #[serde(default)]
    pub(super) retention: super::RetentionSettings,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
}

/// `inbound:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    #[serde(default)]
    pub(super) signatures: RawSignatures,
}

/// `inbound.signatures:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignatures {
    #[serde(default)]
    pub(super) events: Vec<String>,
    #[serde(default)]
    pub(super) smartemailing: Vec<String>,
}

/// `schedules:`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedules {
    #[serde(default)]
    pub(super) time_zone: Option<String>,
    #[serde(default)]
    pub(super) birthday_at: Option<String>,
}

/// One entry of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: String,
    #[serde(default)]
    pub(super) on: Vec<String>,
    #[serde(rename = "if", default)]
    pub(super) condition: Option<String>,
    pub(super) actions: Vec<RawAction>,
    #[serde(default)]
    pub(super) then: Vec<RawThen>,
    #[serde(default)]
    pub(super) after: Option<HumanDuration>,
    #[serde(default)]
    pub(super) unless: Option<RawUnless>,
}

/// A rule's `unless:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnless {
    pub(super) event: String,
    #[serde(rename = "match")]
    pub(super) match_path: String,
}

/// One entry of a rule's `then:`: a rule name, or `{rule, after}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawThen {
    Name(String),
    Step(RawThenStep),
}

/// `{rule, after}` in a rule's `then:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThenStep {
    pub(super) rule: String,
    #[serde(default)]
    pub(super) after: Option<HumanDuration>,
}
