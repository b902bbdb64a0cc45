//! The emulator's resources, created the way the deployment has them: a table from
//! template.yaml's definition (so the two cannot drift) and queues; and trigger-event
//! deliveries to put in it. Nothing of `relay_lambda` here, so the root package's AWS tests
//! share it (`tests/replay_aws.rs`).
#![allow(dead_code)]

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use relay_shared::domain::delivery::{DeliveryId, DeliveryRecord, DeliveryStatus, Prepared};
use relay_shared::domain::event::EventId;
use relay_shared::domain::smartemailing::Endpoint;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The emulator's URL, or a failure that says how to get one: these tests never pass
/// silently without it.
pub fn endpoint() -> String {
    match std::env::var("RELAY_TEST_AWS_ENDPOINT") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "RELAY_TEST_AWS_ENDPOINT is not set: the AWS tests need the moto emulator. Run \
             `scripts/test`, which installs and starts it, or start `moto_server -H 127.0.0.1 \
             -p 5000` yourself and export RELAY_TEST_AWS_ENDPOINT=http://127.0.0.1:5000"
        ),
    }
}

/// The repository's root: the nearest directory above the test's package with template.yaml.
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("template.yaml").exists())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// A fresh resource name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a queue, with `dlq_url` as its dead-letter queue.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, dlq_url: Option<&str>) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    if let Some(dlq) = dlq_url {
        let arn = sqs
            .get_queue_attributes()
            .queue_url(dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("dlq arn")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("a queue arn");
        req = req.attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": arn, "maxReceiveCount": "30"}).to_string(),
        );
    }
    req.send()
        .await
        .expect("create a queue")
        .queue_url
        .expect("a queue url")
}

/// The table's definition in template.yaml.
fn table_definition() -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml is YAML");
    doc["Resources"]["Table"]["Properties"].clone()
}

fn str_of(v: &serde_yaml::Value) -> &str {
    v.as_str().expect("a string in the table definition")
}

fn key_schema(v: &serde_yaml::Value) -> Vec<KeySchemaElement> {
    v.as_sequence()
        .expect("a key schema")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(str_of(&k["AttributeName"]))
                .key_type(KeyType::from(str_of(&k["KeyType"])))
                .build()
                .expect("a key")
        })
        .collect()
}

/// Creates a table as template.yaml defines it, TTL on.
pub async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, name: &str) {
    let def = table_definition();
    let attrs: Vec<AttributeDefinition> = def["AttributeDefinitions"]
        .as_sequence()
        .expect("attribute definitions")
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(str_of(&a["AttributeName"]))
                .attribute_type(ScalarAttributeType::from(str_of(&a["AttributeType"])))
                .build()
                .expect("an attribute")
        })
        .collect();
    let indexes: Vec<GlobalSecondaryIndex> = def["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes")
        .iter()
        .map(|g| {
            GlobalSecondaryIndex::builder()
                .index_name(str_of(&g["IndexName"]))
                .set_key_schema(Some(key_schema(&g["KeySchema"])))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(str_of(
                            &g["Projection"]["ProjectionType"],
                        )))
                        .build(),
                )
                .build()
                .expect("an index")
        })
        .collect();
    assert_eq!(str_of(&def["BillingMode"]), "PAY_PER_REQUEST");
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attrs))
        .set_key_schema(Some(key_schema(&def["KeySchema"])))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await
        .expect("create the table");
    let ttl = str_of(&def["TimeToLiveSpecification"]["AttributeName"]);
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(ttl)
                .enabled(true)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("enable ttl");
}

/// A trigger-event delivery of `rule` in `status` whose item names it (`name = id`), so the
/// calls SmartEmailing got can be counted per delivery (`count_by_name`).
pub fn trigger_delivery(
    id: &str,
    rule: &str,
    status: DeliveryStatus,
    created_at: i64,
) -> DeliveryRecord {
    let dead = status == DeliveryStatus::Dead;
    DeliveryRecord {
        id: DeliveryId::from_stored(id),
        event_id: EventId::from_stored(format!("evt-{id}")),
        rule: rule.into(),
        action: "trigger_event".into(),
        action_index: 0,
        status,
        attempts: if dead { 3 } else { 0 },
        last_error: dead.then(|| "the target answered 503".into()),
        last_response: None,
        sent_at: None,
        next_attempt_at: None,
        request: Some(Prepared::SmartEmailing {
            endpoint: Endpoint::TriggerEvent,
            group: json!({}),
            item: json!({"emailaddress": format!("{id}@example.com"), "name": id}),
        }),
        created_at,
        chain_depth: 0,
        email: None,
        event_type: None,
        attempt_log: Vec::new(),
    }
}

/// How many of the triggered events (the fake SmartEmailing's `triggered_events`) name each
/// delivery.
pub fn count_by_name(triggered: Vec<Value>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for item in triggered {
        *out.entry(item["name"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    out
}
