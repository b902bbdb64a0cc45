//! The inbound function: API Gateway's HTTP API in front of the same router as `relay serve`.

use crate::Context;
use relay_shared::api::router::{router as api_router, AppState, DEFAULT_BODY_LIMIT};
use relay_shared::pipeline::inbound::Inbound;
use std::sync::Arc;

/// The shared router on the AWS adapters: events claimed in DynamoDB, render jobs sent to
/// SQS, API keys from the secret.
pub fn router(ctx: &Context) -> axum::Router {
    let store = ctx.aws.store.clone();
    let state = AppState {
        config: ctx.config.clone(),
        inbound: Inbound::new(
            store.clone(),
            ctx.aws.queue.clone(),
            ctx.clock.clone(),
            None,
        )
        // SQS takes at most 256 KiB a message; leave room for the job's envelope.
        .with_max_message_bytes(250 * 1024),
        events: store.clone(),
        deliveries: store,
        credentials: ctx.aws.credentials.clone(),
        clock: ctx.clock.clone(),
        body_limit: DEFAULT_BODY_LIMIT,
        seen_ids: std::sync::Arc::new(relay_shared::security::signature::MemorySeenIds::default()),
    };
    api_router(Arc::new(state))
}
