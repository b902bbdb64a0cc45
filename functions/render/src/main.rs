//! Lambda: the render queue -> stored deliveries and dispatch jobs.

use lambda_runtime::{service_fn, LambdaEvent};
use relay_lambda::render::RenderHandler;
use relay_lambda::{init_logging, Context};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let ctx = Context::from_env().await?;
    let handler = RenderHandler::new(&ctx);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, lambda_runtime::Error>(handler.handle(event.payload).await)
    }))
    .await
}
