//! Lambda: EventBridge Scheduler -> birthday runs and due delayed triggers.

use lambda_runtime::{service_fn, LambdaEvent};
use relay_lambda::{init_logging, scheduler};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        scheduler::handle(event.payload).await?;
        Ok::<_, lambda_runtime::Error>(())
    }))
    .await
}
