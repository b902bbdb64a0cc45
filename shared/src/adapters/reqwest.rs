//! The HTTP transport: reqwest with rustls, no redirects, bounded answers.

use crate::ports::{HttpRequest, HttpResponse, Transport, TransportError};
use async_trait::async_trait;

/// The most of an answer body that is read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Sends requests with reqwest.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with a connection pool; redirects are not followed (a redirect could
    /// carry credentials to another host).
    pub fn new() -> Result<Self, TransportError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("smartemailing-relay/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| TransportError::Invalid(e.to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|e| TransportError::Invalid(e.to_string()))?;
        // A call pinned to checked addresses gets a client that resolves the host to them
        // and nothing else (no second lookup a rebinding DNS could answer differently).
        let pinned_client;
        let client = match &request.pinned {
            Some((host, addrs)) if host.parse::<std::net::IpAddr>().is_err() => {
                pinned_client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("smartemailing-relay/", env!("CARGO_PKG_VERSION")))
                    .resolve_to_addrs(host, addrs)
                    .build()
                    .map_err(|e| TransportError::Invalid(e.to_string()))?;
                &pinned_client
            }
            _ => &self.client,
        };
        let mut builder = client
            .request(method, &request.url)
            .timeout(request.timeout);
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut resp = builder.send().await.map_err(map_err)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() < MAX_ANSWER_BYTES {
                body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - body.len())]);
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

fn map_err(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Without the URL: it may carry a token in its query.
        let e = e.without_url();
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        TransportError::Connection(msg)
    }
}
