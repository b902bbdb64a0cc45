//! The Lambda side of the relay: the bundled config, the AWS wiring built once per
//! container, and the four handlers, generic over the ports (`context::Ports`). Each
//! `functions/<name>` binary is a few lines around one of them on the AWS adapters; the tests
//! call the handlers directly with the fixtures in `events/aws/`, on the memory adapters
//! (`tests/memory.rs`) or on the AWS emulator (feature `emulator-tests`).

pub mod context;
pub mod dispatch;
pub mod inbound;
pub mod metrics;
pub mod render;
pub mod scheduler;

pub use context::{Adapters, Aws, Context, Memory, Ports};

/// The relay config bundled at build time (`config/relay.yaml`, or `RELAY_CONFIG`),
/// validated by the build script.
pub const BUNDLED_CONFIG: &str = include_str!(concat!(env!("OUT_DIR"), "/relay.yaml"));

/// Sets up logging the way the Lambda runtime expects it (`AWS_LAMBDA_LOG_FORMAT=JSON` gives
/// JSON lines; `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` the level).
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}
