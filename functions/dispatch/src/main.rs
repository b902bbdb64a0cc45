//! Lambda: the dispatch queue -> SmartEmailing and other HTTP endpoints, with retries.

use lambda_runtime::{service_fn, LambdaEvent};
use relay_lambda::dispatch::DispatchHandler;
use relay_lambda::{init_logging, Context};
use relay_shared::adapters::reqwest::ReqwestTransport;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = Context::from_env().await?;
    let handler = DispatchHandler::new(&ctx, Arc::new(ReqwestTransport::new()?), None);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
