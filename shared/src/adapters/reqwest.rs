//! The HTTP transport: reqwest with rustls, no redirects, bounded answers.

use crate::domain::http::BodyCut;
use crate::ports::{HttpRequest, HttpResponse, Transport, TransportError};
use async_trait::async_trait;

/// The most of an answer body that is read. Only an envelope's `status` and `message` are
/// read from SmartEmailing, a few hundred bytes; a longer body is a proxy's error page or a
/// misbehaving gateway, and reading on would only spend the call's timeout and turn an
/// accepted call into a `timed out` that is sent again.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

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
        let (body, cut) = read_prefix(&mut resp, MAX_ANSWER_BYTES).await;
        Ok(HttpResponse {
            status,
            headers,
            body,
            cut,
        })
    }
}

/// Reads at most `limit` bytes of the body. Once the status line has arrived the answer is
/// kept whatever the body does: too long, cut off by the timeout or by the connection; the
/// response is dropped with the rest unread, which closes the connection (hyper does not
/// pool a connection whose body was not read to its end).
async fn read_prefix(resp: &mut reqwest::Response, limit: usize) -> (Vec<u8>, Option<BodyCut>) {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    return (body, Some(BodyCut::TooLong { limit }));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, None),
            Err(e) => return (body, Some(BodyCut::Unfinished(map_err(e)))),
        }
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
