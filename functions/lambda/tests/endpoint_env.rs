//! The functions find the emulator through the SDK's own `AWS_ENDPOINT_URL`, as they would
//! any endpoint override in a deployment. (Its own test binary: it reads the environment.)
#![cfg(feature = "emulator-tests")]

mod support;

#[tokio::test]
async fn the_sdk_config_honours_aws_endpoint_url() {
    let endpoint = support::endpoint();
    let from_env = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert_eq!(
        from_env, endpoint,
        "scripts/test exports AWS_ENDPOINT_URL (and test credentials) with the emulator's URL"
    );
    let sdk = relay_shared::adapters::aws::sdk_config()
        .await
        .expect("no AWS_CA_BUNDLE in the tests' environment");
    assert_eq!(sdk.endpoint_url(), Some(endpoint.as_str()));
    // A real call through the configuration reaches the emulator.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.list_queues()
        .send()
        .await
        .expect("the emulator answers");
}
