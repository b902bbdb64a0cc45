//! The outgoing HTTP port.

pub use crate::domain::http::{HttpResponse, TransportError};
use async_trait::async_trait;
use std::time::Duration;

/// An outgoing HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Headers, including credentials: never log them.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Option<Vec<u8>>,
    /// How long the whole call may take.
    pub timeout: Duration,
    /// Connect only to these addresses for the URL's host (the ones an outbound check
    /// approved), so a second DNS answer cannot redirect the call.
    pub pinned: Option<(String, Vec<std::net::SocketAddr>)>,
}

/// Sends HTTP requests.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request and reads its answer (a transport may read only the start of a
    /// long body, saying so in `HttpResponse::cut`).
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}
