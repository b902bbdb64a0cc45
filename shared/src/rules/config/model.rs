//! The compiled config's rule and schedule types (the actions' are in `rules::actions`).

use crate::rules::actions::Action;
use crate::rules::template::Piece;
use std::time::Duration;

/// Which inbound routes must carry Standard Webhooks signatures, and by which secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundSignatures {
    /// Secret names that may sign `POST /v1/events` (empty: not required).
    pub events: Vec<String>,
    /// Secret names that may sign `POST /v1/webhooks/smartemailing` (empty: not required).
    pub smartemailing: Vec<String>,
}

/// When the time-driven runs happen.
#[derive(Debug, Clone)]
pub struct Schedules {
    /// Birthdays are "today" in this time zone.
    pub time_zone: chrono_tz::Tz,
    /// Local time of the daily birthday run in `relay serve`.
    pub birthday_at: chrono::NaiveTime,
}

impl Default for Schedules {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::UTC,
            birthday_at: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
        }
    }
}

/// An event-type pattern of a rule's `on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    /// This exact type.
    Exact(String),
    /// Every type starting with this prefix (`order.*`).
    Prefix(String),
}

impl TypePattern {
    /// Whether an event type matches.
    pub fn matches(&self, kind: &str) -> bool {
        match self {
            TypePattern::Exact(t) => t == kind,
            TypePattern::Prefix(p) => kind.starts_with(p.as_str()),
        }
    }
}

/// A chain step: a rule to run after another succeeded, optionally after a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThenStep {
    /// The rule to run.
    pub rule: String,
    /// How long after the parent succeeded.
    pub after: Option<Duration>,
}

/// A later event that cancels a rule's pending timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unless {
    /// The cancelling event's type.
    pub event: String,
    /// The dotted path (e.g. `data.cart_id`) whose value must be equal in both events.
    pub match_path: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// Event types it matches; empty means it runs only when chained.
    pub on: Vec<TypePattern>,
    /// Optional condition.
    pub condition: Option<Piece>,
    /// Its actions, in order.
    pub actions: Vec<Action>,
    /// Rules to run after every action succeeded.
    pub then: Vec<ThenStep>,
    /// When matched by its event type, hold the actions this long after the event.
    pub after: Option<Duration>,
    /// A later event that cancels the held actions.
    pub unless: Option<Unless>,
}

impl Rule {
    /// Whether the rule listens for this event type.
    pub fn listens_for(&self, kind: &str) -> bool {
        self.on.iter().any(|p| p.matches(kind))
    }
}
