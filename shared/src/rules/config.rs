//! The rules file: parsed once, validated completely at load, then immutable.

use crate::domain::duration::HumanDuration;
use crate::domain::smartemailing::{self, Endpoint};
use crate::rules::template::{Node, Piece, TemplateSet};
pub use crate::security::outbound::OutboundPolicy;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// A config that failed to load; every problem found, each naming its place.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid config {source_name}:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    /// The file (or other source) the config came from.
    pub source_name: String,
    /// Each problem, naming the rule and field.
    pub problems: Vec<String>,
}

// ---------------------------------------------------------------- the file's schema

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    smartemailing: SmartEmailingSettings,
    #[serde(default)]
    delivery: DeliverySettings,
    #[serde(default)]
    schedules: RawSchedules,
    #[serde(default)]
    outbound: OutboundPolicy,
    #[serde(default)]
    inbound: RawInbound,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    #[serde(default)]
    signatures: RawSignatures,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSignatures {
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    smartemailing: Vec<String>,
}

/// Which inbound routes must carry Standard Webhooks signatures, and by which secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundSignatures {
    /// Secret names that may sign `POST /v1/events` (empty: not required).
    pub events: Vec<String>,
    /// Secret names that may sign `POST /v1/webhooks/smartemailing` (empty: not required).
    pub smartemailing: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedules {
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    birthday_at: Option<String>,
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

/// Where SmartEmailing is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartEmailingSettings {
    /// The API base URL, without a trailing slash.
    #[serde(default = "default_base_url")]
    pub base_url: String,
}

impl Default for SmartEmailingSettings {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
        }
    }
}

fn default_base_url() -> String {
    smartemailing::DEFAULT_BASE_URL.to_string()
}

/// How deliveries are sent and retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// How long one call may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Delays between attempts; its length is the number of retries.
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<HumanDuration>,
    /// How long to wait to fill a bulk call.
    #[serde(default = "default_batch_window")]
    pub batch_window: HumanDuration,
    /// The least wait after a 429, a timeout or a rate-limit message.
    #[serde(default = "default_min_overload_delay")]
    pub min_overload_delay: HumanDuration,
    /// When a target's circuit opens, and when it is probed.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// Calls per second per target (the SmartEmailing account, or a webhook host).
    #[serde(default = "default_max_rps")]
    pub max_requests_per_second: f64,
}

/// The circuit breaker's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Failed calls in a row that open the circuit.
    #[serde(default = "default_open_after")]
    pub open_after: u32,
    /// How long an open circuit waits before one probe.
    #[serde(default = "default_probe_after")]
    pub probe_after: HumanDuration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            open_after: default_open_after(),
            probe_after: default_probe_after(),
        }
    }
}

fn default_open_after() -> u32 {
    10
}

fn default_probe_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_min_overload_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_max_rps() -> f64 {
    10.0
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            retry_schedule: default_retry_schedule(),
            batch_window: default_batch_window(),
            min_overload_delay: default_min_overload_delay(),
            breaker: BreakerSettings::default(),
            max_requests_per_second: default_max_rps(),
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_batch_window() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

fn default_retry_schedule() -> Vec<HumanDuration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(|s| HumanDuration(Duration::from_secs(s)))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    on: Vec<String>,
    #[serde(rename = "if", default)]
    condition: Option<String>,
    actions: Vec<RawAction>,
    #[serde(default)]
    then: Vec<RawThen>,
    #[serde(default)]
    after: Option<HumanDuration>,
    #[serde(default)]
    unless: Option<RawUnless>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnless {
    event: String,
    #[serde(rename = "match")]
    match_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawThen {
    Name(String),
    Step(RawThenStep),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThenStep {
    rule: String,
    #[serde(default)]
    after: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawAction {
    TriggerEvent(TriggerEventSpec),
    UpsertContact(UpsertContactSpec),
    AddToList(ListSpec),
    RemoveFromList(ListSpec),
    Unsubscribe(ListSpec),
    MoveToList(MoveSpec),
    SendEmail(SendEmailSpec),
    SendTransactionalEmail(SendTransactionalSpec),
    SendSms(SendSmsSpec),
    UpsertOrder(Map<String, Value>),
    Webhook(WebhookSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerEventSpec {
    name: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertContactSpec {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    lists: Vec<Value>,
    #[serde(default)]
    custom_fields: Map<String, Value>,
    #[serde(default)]
    settings: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSpec {
    list: Value,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveSpec {
    from: Value,
    to: Value,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderSpec {
    from: String,
    sender_name: String,
    #[serde(default)]
    reply_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendEmailSpec {
    email_id: Value,
    sender: SenderSpec,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    replace: Map<String, Value>,
    #[serde(default)]
    template_variables: Option<Value>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendTransactionalSpec {
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
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendSmsSpec {
    sms_id: Value,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    cellphone: Option<String>,
    #[serde(default)]
    replace: Map<String, Value>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
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

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawAuth {
    Basic(BasicAuthSpec),
    BearerSecret(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthSpec {
    username: String,
    password_secret: String,
}

// ---------------------------------------------------------------- the compiled config

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

/// One list entry of an `/import`: a list id and the status to set.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// The list id (rendered; must give an integer).
    pub id: Node,
    /// `confirmed`, `unsubscribed` or `removed`.
    pub status: &'static str,
}

/// A webhook body: a JSON tree rendered structurally, or one text template.
#[derive(Debug, Clone)]
pub enum WebhookBody {
    /// Rendered leaf by leaf and encoded by serde_json.
    Json(Node),
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

/// What an action renders into.
#[derive(Debug, Clone)]
pub enum ActionBody {
    /// An item of `/trigger-event`.
    TriggerEvent {
        /// The event name the automation listens for.
        name: Piece,
        /// The payload object.
        payload: Option<Node>,
    },
    /// An item of `/import`.
    Import {
        /// Whether to start from the event's contact fields.
        from_contact: bool,
        /// Contact fields, overriding the event's.
        fields: Node,
        /// List memberships.
        lists: Vec<ListEntry>,
        /// Custom fields by id: a value, or a list of option ids.
        custom_fields: Vec<(i64, Node)>,
        /// The call's settings.
        settings: Value,
    },
    /// A task of one of the send endpoints.
    Send {
        /// Which send endpoint.
        endpoint: Endpoint,
        /// Batch-level fields: sender, tag, e-mail or SMS id, message contents.
        group: Node,
        /// `replace` keys and their content.
        replace: Vec<(String, Node)>,
        /// `template_variables`.
        template_variables: Option<Node>,
        /// The SMS recipient's number (defaults to `contact.phone`).
        cellphone: Option<Piece>,
    },
    /// An order of `/import-orders`.
    Order {
        /// The order object.
        order: Node,
    },
    /// A request to any HTTP endpoint.
    Webhook {
        /// The method, upper case.
        method: String,
        /// The URL template.
        url: Piece,
        /// The URL template's host when it is written out: the rendered URL must keep it.
        static_host: Option<String>,
        /// Header templates.
        headers: Vec<(String, Piece)>,
        /// The Content-Type.
        content_type: String,
        /// Authentication.
        auth: Option<WebhookAuth>,
        /// The body.
        body: Option<WebhookBody>,
    },
}

/// One compiled action of a rule.
#[derive(Debug, Clone)]
pub struct Action {
    /// The action's kind as written in the config, e.g. `add_to_list`.
    pub kind: &'static str,
    /// The recipient's address (defaults to `contact.email`).
    pub email: Option<Piece>,
    /// What it renders into.
    pub body: ActionBody,
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

/// The loaded, validated, immutable config.
#[derive(Debug)]
pub struct Config {
    /// Where SmartEmailing is.
    pub smartemailing: SmartEmailingSettings,
    /// Delivery settings.
    pub delivery: DeliverySettings,
    /// The time-driven runs.
    pub schedules: Schedules,
    /// Where `webhook` actions may send.
    pub outbound: OutboundPolicy,
    /// Signed inbound routes.
    pub signatures: InboundSignatures,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Every template, compiled.
    pub templates: TemplateSet,
    /// Names of the secrets webhook actions reference.
    pub secret_names: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates a config given as YAML text.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            source_name: source_name.to_string(),
            problems,
        };
        // Actions are written `- trigger_event: {...}`: single-key maps, not YAML tags.
        let raw: RawConfig = serde_yaml::with::singleton_map_recursive::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| fail(vec![e.to_string()]))?;
        compile(raw).map_err(fail)
    }

    /// A rule by name.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.by_name.get(name).map(|&i| &self.rules[i])
    }

    /// Overrides the SmartEmailing base URL (the `SMARTEMAILING_API_URL` variable).
    pub fn override_base_url(&mut self, url: &str) {
        self.smartemailing.base_url = url.trim_end_matches('/').to_string();
    }

    /// The longest chain of `then` steps in the config.
    pub fn max_chain_depth(&self) -> usize {
        self.rules.len()
    }
}

fn compile(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut templates = TemplateSet::new();
    let mut rules = Vec::new();
    let mut by_name = HashMap::new();
    let mut secret_names = Vec::new();

    let base = raw.smartemailing.base_url.trim_end_matches('/').to_string();
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        problems.push(format!("smartemailing.base_url: `{base}` must start with https:// (or http:// for local tests)"));
    }
    if raw.delivery.timeout.get().is_zero() {
        problems.push("delivery.timeout: must be more than zero".into());
    }
    if !(raw.delivery.max_requests_per_second >= 0.0
        && raw.delivery.max_requests_per_second.is_finite())
    {
        problems.push("delivery.max_requests_per_second: must be a number of calls per second (0 for no limit)".into());
    }
    if raw.delivery.breaker.open_after == 0 {
        problems.push("delivery.breaker.open_after: must be at least 1".into());
    }

    for (i, r) in raw.rules.iter().enumerate() {
        let label = if r.name.is_empty() {
            format!("rules[{i}]")
        } else {
            format!("rules[{}]", r.name)
        };
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            problems.push(format!(
                "{label}.name: `{}` must be lowercase letters, digits and `-`",
                r.name
            ));
        }
        if by_name.contains_key(&r.name) {
            problems.push(format!(
                "{label}.name: the name `{}` is used by more than one rule",
                r.name
            ));
        } else {
            by_name.insert(r.name.clone(), i);
        }
        let mut on = Vec::new();
        for (j, pat) in r.on.iter().enumerate() {
            match parse_pattern(pat) {
                Ok(p) => on.push(p),
                Err(m) => problems.push(format!("{label}.on[{j}]: {m}")),
            }
        }
        let condition = match &r.condition {
            Some(expr) => match templates.compile_condition(&format!("{label}.if"), expr) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            },
            None => None,
        };
        if r.actions.is_empty() {
            problems.push(format!("{label}.actions: a rule needs at least one action"));
        }
        let mut actions = Vec::new();
        for (j, a) in r.actions.iter().enumerate() {
            let place = format!("{label}.actions[{j}]");
            match compile_action(&mut templates, &place, a, &mut secret_names) {
                Ok(action) => actions.push(action),
                Err(mut errs) => problems.append(&mut errs),
            }
        }
        let then = r
            .then
            .iter()
            .map(|t| match t {
                RawThen::Name(n) => ThenStep {
                    rule: n.clone(),
                    after: None,
                },
                RawThen::Step(s) => ThenStep {
                    rule: s.rule.clone(),
                    after: s.after.map(|a| a.get()),
                },
            })
            .collect();
        let unless = match &r.unless {
            None => None,
            Some(u) => {
                if let Err(m) = EventTypeCheck::check(&u.event) {
                    problems.push(format!("{label}.unless.event: {m}"));
                }
                if !valid_path(&u.match_path) {
                    problems.push(format!(
                        "{label}.unless.match: `{}` must be a dotted path into the event such as data.cart_id or contact.email",
                        u.match_path
                    ));
                }
                if r.after.is_none() {
                    problems.push(format!("{label}.unless: only a delayed rule can be cancelled; give the rule an `after`"));
                }
                Some(Unless {
                    event: u.event.clone(),
                    match_path: u.match_path.clone(),
                })
            }
        };
        if r.after.is_some() && r.on.is_empty() {
            problems.push(format!("{label}.after: a rule without `on` is delayed by the `after` of the step that chains to it"));
        }
        rules.push(Rule {
            name: r.name.clone(),
            on,
            condition,
            actions,
            then,
            after: r.after.map(|a| a.get()),
            unless,
        });
    }

    for rule in &rules {
        for (j, step) in rule.then.iter().enumerate() {
            let next = &step.rule;
            if !by_name.contains_key(next) {
                problems.push(format!(
                    "rules[{}].then[{j}]: no rule is named `{next}`",
                    rule.name
                ));
            }
        }
    }
    if let Some(cycle) = find_chain_loop(&rules, &by_name) {
        problems.push(format!(
            "rules[{}].then: the chain loops: {}",
            cycle[0],
            cycle.join(" → ")
        ));
    }

    // Webhook targets written out in the config must be allowed (templated hosts are checked
    // when rendered).
    for rule in &rules {
        for (j, a) in rule.actions.iter().enumerate() {
            if let ActionBody::Webhook {
                static_host: Some(host),
                ..
            } = &a.body
            {
                let probe = format!("https://{host}/");
                if let Err(e) =
                    crate::security::outbound::check_rendered_url(Some(host), &probe, &raw.outbound)
                {
                    problems.push(format!(
                        "rules[{}].actions[{j}].webhook.url: {e}",
                        rule.name
                    ));
                }
            }
        }
    }
    let mut signed_names = Vec::new();
    for (route, names) in [
        ("events", &raw.inbound.signatures.events),
        ("smartemailing", &raw.inbound.signatures.smartemailing),
    ] {
        for n in names {
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                problems.push(format!("inbound.signatures.{route}: secret name `{n}` must be letters, digits, `_` or `-`"));
            }
            signed_names.push(n.clone());
        }
    }
    secret_names.extend(signed_names);

    let mut schedules = Schedules::default();
    if let Some(tz) = &raw.schedules.time_zone {
        match tz.parse::<chrono_tz::Tz>() {
            Ok(z) => schedules.time_zone = z,
            Err(_) => problems.push(format!(
                "schedules.time_zone: `{tz}` is not an IANA time zone such as Europe/Prague"
            )),
        }
    }
    if let Some(at) = &raw.schedules.birthday_at {
        match chrono::NaiveTime::parse_from_str(at, "%H:%M") {
            Ok(t) => schedules.birthday_at = t,
            Err(_) => problems.push(format!(
                "schedules.birthday_at: `{at}` must be a time written HH:MM"
            )),
        }
    }

    secret_names.sort();
    secret_names.dedup();
    if problems.is_empty() {
        Ok(Config {
            smartemailing: SmartEmailingSettings { base_url: base },
            delivery: raw.delivery,
            schedules,
            outbound: raw.outbound,
            signatures: InboundSignatures {
                events: raw.inbound.signatures.events,
                smartemailing: raw.inbound.signatures.smartemailing,
            },
            rules,
            templates,
            secret_names,
            by_name,
        })
    } else {
        Err(problems)
    }
}

struct EventTypeCheck;

impl EventTypeCheck {
    fn check(t: &str) -> Result<(), String> {
        crate::domain::event::EventType::parse(t).map(|_| ())
    }
}

/// Whether `p` is a dotted path into the event: `data.x`, `contact.y`, `event.z`, ...
fn valid_path(p: &str) -> bool {
    let mut parts = p.split('.');
    matches!(parts.next(), Some("data" | "contact" | "event"))
        && p.split('.').count() >= 2
        && p.split('.').all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

fn parse_pattern(p: &str) -> Result<TypePattern, String> {
    let (body, prefix) = match p.strip_suffix('*') {
        Some(b) => (b, true),
        None => (p, false),
    };
    if body.contains('*') {
        return Err(format!("`{p}`: only a trailing `*` is allowed"));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "`{p}` is not an event type (lowercase letters, digits, `_`, `.`, `-`)"
        ));
    }
    if prefix {
        Ok(TypePattern::Prefix(body.to_string()))
    } else if body.is_empty() {
        Err("an empty event type".into())
    } else {
        Ok(TypePattern::Exact(body.to_string()))
    }
}

fn find_chain_loop(rules: &[Rule], by_name: &HashMap<String, usize>) -> Option<Vec<String>> {
    // Depth-first search with colours; a grey node met again closes a loop.
    fn visit(
        i: usize,
        rules: &[Rule],
        by_name: &HashMap<String, usize>,
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        colour[i] = 1;
        stack.push(i);
        for step in &rules[i].then {
            let Some(&j) = by_name.get(&step.rule) else {
                continue;
            };
            if colour[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut names: Vec<String> = stack[start..]
                    .iter()
                    .map(|&k| rules[k].name.clone())
                    .collect();
                names.push(rules[j].name.clone());
                return Some(names);
            }
            if colour[j] == 0 {
                if let Some(c) = visit(j, rules, by_name, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; rules.len()];
    for i in 0..rules.len() {
        if colour[i] == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(i, rules, by_name, &mut colour, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn compile_action(
    t: &mut TemplateSet,
    place: &str,
    raw: &RawAction,
    secret_names: &mut Vec<String>,
) -> Result<Action, Vec<String>> {
    let mut errs: Vec<String> = Vec::new();
    macro_rules! s {
        ($place:expr, $src:expr) => {
            match t.compile_str(&$place, $src) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(e.to_string());
                    Piece::Literal(String::new())
                }
            }
        };
    }
    macro_rules! tree {
        ($place:expr, $v:expr) => {
            match t.compile_tree(&$place, $v) {
                Ok(n) => n,
                Err(e) => {
                    errs.push(e.to_string());
                    Node::Value(Value::Null)
                }
            }
        };
    }
    // The `replace` map of a send action: each value compiled at its own place.
    macro_rules! replace_trees {
        ($p:expr, $map:expr) => {
            $map.iter()
                .map(|(k, v)| (k.clone(), tree!(format!("{}.replace.{k}", $p), v)))
                .collect()
        };
    }
    let (kind, email, body): (&'static str, &Option<String>, ActionBody) = match raw {
        RawAction::TriggerEvent(a) => {
            let p = format!("{place}.trigger_event");
            if a.name.trim().is_empty() {
                errs.push(format!("{p}.name: must not be empty"));
            }
            if let Some(payload) = &a.payload {
                if !payload.is_object() && !payload.is_string() {
                    errs.push(format!("{p}.payload: must be an object"));
                }
            }
            let name = s!(format!("{p}.name"), &a.name);
            let payload = a.payload.as_ref().map(|v| tree!(format!("{p}.payload"), v));
            (
                "trigger_event",
                &a.email,
                ActionBody::TriggerEvent { name, payload },
            )
        }
        RawAction::UpsertContact(a) => {
            let p = format!("{place}.upsert_contact");
            for key in a.fields.keys() {
                if !smartemailing::CONTACT_FIELDS.contains(&key.as_str()) {
                    errs.push(format!(
                        "{p}.fields.{key}: SmartEmailing has no such contact field (known: {})",
                        smartemailing::CONTACT_FIELDS.join(", ")
                    ));
                }
            }
            let fields = tree!(format!("{p}.fields"), &Value::Object(a.fields.clone()));
            let mut lists = Vec::new();
            for (j, l) in a.lists.iter().enumerate() {
                let lp = format!("{p}.lists[{j}]");
                match l {
                    Value::Object(o) => {
                        let status = match o
                            .get("status")
                            .and_then(Value::as_str)
                            .unwrap_or("confirmed")
                        {
                            "confirmed" => "confirmed",
                            "unsubscribed" => "unsubscribed",
                            "removed" => "removed",
                            other => {
                                errs.push(format!("{lp}.status: `{other}` must be confirmed, unsubscribed or removed"));
                                "confirmed"
                            }
                        };
                        for k in o.keys() {
                            if k != "id" && k != "status" {
                                errs.push(format!(
                                    "{lp}.{k}: unknown field (a list entry has id and status)"
                                ));
                            }
                        }
                        match o.get("id") {
                            Some(id) => lists.push(ListEntry {
                                id: tree!(format!("{lp}.id"), id),
                                status,
                            }),
                            None => errs.push(format!("{lp}.id: is required")),
                        }
                    }
                    other => lists.push(ListEntry {
                        id: tree!(lp, other),
                        status: "confirmed",
                    }),
                }
            }
            let mut custom_fields = Vec::new();
            for (k, v) in &a.custom_fields {
                match k.parse::<i64>() {
                    Ok(id) => custom_fields.push((id, tree!(format!("{p}.custom_fields.{k}"), v))),
                    Err(_) => errs.push(format!("{p}.custom_fields.{k}: custom fields are keyed by their numeric SmartEmailing id")),
                }
            }
            let settings = import_settings(&p, a.settings.as_ref(), &mut errs);
            (
                "upsert_contact",
                &a.email,
                ActionBody::Import {
                    from_contact: true,
                    fields,
                    lists,
                    custom_fields,
                    settings,
                },
            )
        }
        RawAction::AddToList(a) | RawAction::RemoveFromList(a) | RawAction::Unsubscribe(a) => {
            let (kind, status) = match raw {
                RawAction::AddToList(_) => ("add_to_list", "confirmed"),
                RawAction::RemoveFromList(_) => ("remove_from_list", "removed"),
                _ => ("unsubscribe", "unsubscribed"),
            };
            let id = tree!(format!("{place}.{kind}.list"), &a.list);
            (
                kind,
                &a.email,
                ActionBody::Import {
                    from_contact: false,
                    fields: Node::Value(json!({})),
                    lists: vec![ListEntry { id, status }],
                    custom_fields: vec![],
                    settings: smartemailing::default_import_settings(),
                },
            )
        }
        RawAction::MoveToList(a) => {
            let p = format!("{place}.move_to_list");
            let from = tree!(format!("{p}.from"), &a.from);
            let to = tree!(format!("{p}.to"), &a.to);
            (
                "move_to_list",
                &a.email,
                ActionBody::Import {
                    from_contact: false,
                    fields: Node::Value(json!({})),
                    lists: vec![
                        ListEntry {
                            id: from,
                            status: "removed",
                        },
                        ListEntry {
                            id: to,
                            status: "confirmed",
                        },
                    ],
                    custom_fields: vec![],
                    settings: smartemailing::default_import_settings(),
                },
            )
        }
        RawAction::SendEmail(a) => {
            let p = format!("{place}.send_email");
            let group = json!({
                "sender_credentials": sender_value(&a.sender),
                "tag": a.tag.clone().unwrap_or_default(),
                "email_id": a.email_id,
            });
            let group = tree!(p.clone(), &group);
            let replace = replace_trees!(p, a.replace);
            let template_variables = a
                .template_variables
                .as_ref()
                .map(|v| tree!(format!("{p}.template_variables"), v));
            (
                "send_email",
                &a.email,
                ActionBody::Send {
                    endpoint: Endpoint::CustomEmails,
                    group,
                    replace,
                    template_variables,
                    cellphone: None,
                },
            )
        }
        RawAction::SendTransactionalEmail(a) => {
            let p = format!("{place}.send_transactional_email");
            let mut group = json!({
                "sender_credentials": sender_value(&a.sender),
                "tag": a.tag.clone().unwrap_or_default(),
            });
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
                _ => errs.push(format!(
                    "{p}: give either email_id, or subject with html_body and/or text_body"
                )),
            }
            let group = tree!(p.clone(), &group);
            let replace = replace_trees!(p, a.replace);
            let template_variables = a
                .template_variables
                .as_ref()
                .map(|v| tree!(format!("{p}.template_variables"), v));
            (
                "send_transactional_email",
                &a.email,
                ActionBody::Send {
                    endpoint: Endpoint::TransactionalEmails,
                    group,
                    replace,
                    template_variables,
                    cellphone: None,
                },
            )
        }
        RawAction::SendSms(a) => {
            let p = format!("{place}.send_sms");
            let group = tree!(
                p.clone(),
                &json!({"tag": a.tag.clone().unwrap_or_default(), "sms_id": a.sms_id})
            );
            let replace = replace_trees!(p, a.replace);
            let cellphone = a
                .cellphone
                .as_ref()
                .map(|c| s!(format!("{p}.cellphone"), c));
            (
                "send_sms",
                &a.email,
                ActionBody::Send {
                    endpoint: Endpoint::CustomSms,
                    group,
                    replace,
                    template_variables: None,
                    cellphone,
                },
            )
        }
        RawAction::UpsertOrder(order) => {
            let p = format!("{place}.upsert_order");
            for key in ["eshop_name", "eshop_code"] {
                if !order.contains_key(key) {
                    errs.push(format!("{p}.{key}: is required"));
                }
            }
            if let Some(Value::String(st)) = order.get("status") {
                if !st.contains("{{") && !smartemailing::ORDER_STATUSES.contains(&st.as_str()) {
                    errs.push(format!(
                        "{p}.status: `{st}` must be one of {}",
                        smartemailing::ORDER_STATUSES.join(", ")
                    ));
                }
            }
            let order = tree!(p, &Value::Object(order.clone()));
            ("upsert_order", &None, ActionBody::Order { order })
        }
        RawAction::Webhook(w) => {
            let p = format!("{place}.webhook");
            let method = w.method.to_ascii_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
                errs.push(format!(
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
                errs.push(format!("{p}.url: must start with https:// (or http://)"));
            }
            let url = s!(format!("{p}.url"), &w.url);
            let mut headers = Vec::new();
            for (k, v) in &w.headers {
                let lower = k.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "host" | "content-length" | "authorization" | "content-type"
                ) {
                    errs.push(format!(
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
                    errs.push(format!("{p}.headers.{k}: not a valid header name"));
                    continue;
                }
                headers.push((k.clone(), s!(format!("{p}.headers.{k}"), v)));
            }
            let content_type = w
                .content_type
                .clone()
                .unwrap_or_else(|| "application/json".into());
            let is_json = content_type.to_ascii_lowercase().contains("json");
            let body = w.body.as_ref().map(|b| {
                if is_json {
                    WebhookBody::Json(tree!(format!("{p}.body"), b))
                } else {
                    match b {
                        Value::String(text) => WebhookBody::Text(s!(format!("{p}.body"), text)),
                        _ => {
                            errs.push(format!("{p}.body: with content_type `{content_type}` the body must be one text template"));
                            WebhookBody::Text(Piece::Literal(String::new()))
                        }
                    }
                }
            });
            let auth = match &w.auth {
                None => None,
                Some(RawAuth::Basic(b)) => {
                    secret_names.push(b.password_secret.clone());
                    Some(WebhookAuth::Basic {
                        username: s!(format!("{p}.auth.basic.username"), &b.username),
                        password_secret: b.password_secret.clone(),
                    })
                }
                Some(RawAuth::BearerSecret(name)) => {
                    secret_names.push(name.clone());
                    Some(WebhookAuth::Bearer {
                        secret: name.clone(),
                    })
                }
            };
            for name in secret_names.iter() {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    errs.push(format!(
                        "{p}.auth: secret name `{name}` must be letters, digits, `_` or `-`"
                    ));
                }
            }
            let static_host = crate::security::outbound::static_host(&w.url);
            (
                "webhook",
                &None,
                ActionBody::Webhook {
                    method,
                    url,
                    static_host,
                    headers,
                    content_type,
                    auth,
                    body,
                },
            )
        }
    };
    let email = email
        .as_ref()
        .map(|e| s!(format!("{place}.{kind}.email"), e));
    if errs.is_empty() {
        Ok(Action { kind, email, body })
    } else {
        Err(errs)
    }
}

fn sender_value(s: &SenderSpec) -> Value {
    json!({
        "from": s.from,
        "sender_name": s.sender_name,
        "reply_to": s.reply_to.clone().unwrap_or_else(|| s.from.clone()),
    })
}

fn import_settings(
    place: &str,
    given: Option<&Map<String, Value>>,
    errs: &mut Vec<String>,
) -> Value {
    let mut settings = smartemailing::default_import_settings();
    if let Some(given) = given {
        for (k, v) in given {
            if !smartemailing::IMPORT_SETTINGS.contains(&k.as_str()) {
                errs.push(format!(
                    "{place}.settings.{k}: unknown import setting (known: {})",
                    smartemailing::IMPORT_SETTINGS.join(", ")
                ));
            } else if !v.is_boolean() {
                errs.push(format!("{place}.settings.{k}: must be true or false"));
            } else {
                settings[k] = v.clone();
            }
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        Config::parse(yaml, "test").unwrap_err().problems
    }

    #[test]
    fn a_minimal_config_loads_with_defaults() {
        let c = Config::parse("rules: []", "t").unwrap();
        assert_eq!(c.smartemailing.base_url, smartemailing::DEFAULT_BASE_URL);
        assert_eq!(c.delivery.retry_schedule.len(), 7);
        assert_eq!(c.delivery.batch_window.get(), Duration::from_millis(200));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let p = problems("rules:\n  - name: a\n    on: [x]\n    actions: [{trigger_event: {name: a, colour: red}}]\n");
        assert!(p[0].contains("colour"), "{p:?}");
        let p = problems("delivery: {timeot: 3s}\n");
        assert!(p[0].contains("timeot"), "{p:?}");
        let p = problems("rules:\n  - name: a\n    actions: [{teleport: {}}]\n");
        assert!(p[0].contains("teleport"), "{p:?}");
    }

    #[test]
    fn missing_then_duplicates_and_loops_are_named() {
        let p = problems(
            "rules:\n  - {name: a, on: [x], actions: [{add_to_list: {list: 1}}], then: [b]}\n  - {name: b, actions: [{add_to_list: {list: 1}}], then: [a]}\n  - {name: b, actions: [{add_to_list: {list: 1}}], then: [zz]}\n",
        );
        let all = p.join("\n");
        assert!(all.contains("rules[b].name"), "{all}");
        assert!(all.contains("no rule is named `zz`"), "{all}");
        assert!(all.contains("the chain loops"), "{all}");
    }

    #[test]
    fn a_broken_template_names_rule_and_field() {
        let p = problems("rules:\n  - name: welcome\n    on: [x]\n    actions: [{trigger_event: {name: w, payload: {a: '{{ contact.first_name'}}}]\n");
        assert!(
            p[0].starts_with("rules[welcome].actions[0].trigger_event.payload.a"),
            "{p:?}"
        );
    }

    #[test]
    fn a_broken_replace_template_names_its_key_in_each_send_action() {
        for (action, extra) in [
            ("send_email", "email_id: 1, sender: {from: a@example.com, sender_name: A, reply_to: a@example.com}"),
            (
                "send_transactional_email",
                "email_id: 1, sender: {from: a@example.com, sender_name: A, reply_to: a@example.com}",
            ),
            ("send_sms", "sms_id: 1"),
        ] {
            let p = problems(&format!(
                "rules:\n  - name: r\n    on: [x]\n    actions: [{{{action}: {{{extra}, replace: {{first_name: '{{{{ contact.first_name'}}}}}}]\n"
            ));
            let place = format!("rules[r].actions[0].{action}.replace.first_name");
            assert!(p.iter().any(|e| e.starts_with(&place)), "{action}: {p:?}");
        }
    }

    #[test]
    fn webhooks_cannot_set_authorization_headers() {
        let p = problems("rules:\n  - name: a\n    on: [x]\n    actions: [{webhook: {url: 'https://x.example.com', headers: {Authorization: 'Bearer x'}}}]\n");
        assert!(p[0].contains("headers.Authorization"), "{p:?}");
    }

    #[test]
    fn patterns_match() {
        assert!(parse_pattern("order.*").unwrap().matches("order.created"));
        assert!(!parse_pattern("order.*").unwrap().matches("orders"));
        assert!(parse_pattern("a*b").is_err());
    }
}
