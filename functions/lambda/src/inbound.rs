//! The inbound function: API Gateway's HTTP API in front of the same router as `relay serve`.

use crate::context::{Context, Ports};
use relay_shared::api::router::{router as api_router, AppState, Platform, DEFAULT_BODY_LIMIT};
use relay_shared::pipeline::inbound::Inbound;
use std::sync::Arc;

/// The shared router on a function's adapters (on AWS: events claimed in DynamoDB, render
/// jobs sent to SQS, API keys from the secret).
pub fn router<P: Ports>(ctx: &Context<P>) -> axum::Router {
    let store = ctx.ports.store.clone();
    let state = AppState {
        config: ctx.config.clone(),
        inbound: Inbound::new(
            store.clone(),
            ctx.ports.queue.clone(),
            ctx.clock.clone(),
            None,
        )
        // SQS takes at most 256 KiB a message; leave room for the job's envelope.
        .with_max_message_bytes(250 * 1024)
        // The event records' TTL: the idempotency window, as `relay serve`'s.
        .with_event_retention(ctx.config.retention.events.get())
        .with_telemetry(ctx.telemetry.clone()),
        events: store.clone(),
        deliveries: store,
        credentials: ctx.ports.credentials.clone(),
        clock: ctx.clock.clone(),
        body_limit: DEFAULT_BODY_LIMIT,
        seen_ids: std::sync::Arc::new(relay_shared::security::signature::MemorySeenIds::default()),
        // DynamoDB is watched by its own alarms; the router has no local store to report.
        store_health: None,
        queue: ctx.ports.queue.clone(),
        // The container's recorder: the inbound step counts events into it, written as
        // CloudWatch metrics after each request. It makes no calls to the targets, so the
        // status route's note says where the targets' health is seen on AWS.
        telemetry: ctx.telemetry.clone(),
        platform: Platform::Aws,
        status_cache: Default::default(),
    };
    crate::metrics::Flusher::of(ctx).around(api_router(Arc::new(state)))
}
