//! Lambda: API Gateway HTTP API -> the relay's router (the same one `relay serve` runs).

use relay_lambda::{inbound, init_logging, Context};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging();
    let ctx = Context::from_env().await?;
    lambda_http::run(inbound::router(&ctx)).await
}
