//! Lambda: EventBridge Scheduler -> the daily birthday pass.

use lambda_runtime::{service_fn, LambdaEvent};
use relay_lambda::scheduler::SchedulerHandler;
use relay_lambda::{init_logging, Context};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = Context::from_env().await?;
    let handler = SchedulerHandler::new(&ctx);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(event.payload).await?;
        Ok::<_, lambda_runtime::Error>(())
    }))
    .await
}
