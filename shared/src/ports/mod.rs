//! The ports: what the core needs from the outside world. The adapters (`crate::adapters`)
//! implement them: SQLite locally, DynamoDB, SQS and Secrets Manager on AWS, reqwest for HTTP.

pub mod clock;
pub mod credentials;
pub mod dead_letters;
pub mod leases;
pub mod queue;
pub mod store;
pub mod transport;

pub use clock::Clock;
pub use credentials::{Credentials, SecretError};
pub use dead_letters::{DeadLetter, DeadLetters};
pub use leases::SendLeases;
pub use queue::{Queue, QueueError};
pub use store::{
    AtomicAccept, AtomicRender, ContactStore, DeliveryFilter, DeliveryStore, EventStore, PassPlan,
    PassWrites, StoreError, StoreHealth, TimerStore,
};
pub use transport::{HttpRequest, HttpResponse, Transport, TransportError};
