//! A loopback proxy in front of the emulator that records every AWS request the functions
//! make (operation, bodies, time in moto), and may rewrite a request's body before moto sees
//! it (the outage test's simulated SQS time). The outage test prints the log per dispatch
//! invocation; the cost test counts it per event.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::State;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One AWS request the functions made.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The operation, as the `x-amz-target` header names it (`AmazonSQS.SendMessage`).
    pub operation: String,
    /// The request's body as moto got it.
    pub request: Vec<u8>,
    /// moto's answer.
    pub response: Vec<u8>,
    /// How long moto took.
    pub took: Duration,
}

/// Every AWS request the functions made through the proxy, in order.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Recorded>>>);

impl RequestLog {
    /// Takes the requests recorded since the last call.
    pub fn drain(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Takes the requests recorded since the last call, by operation: how many and their
    /// time in moto.
    pub fn drain_by_operation(&self) -> BTreeMap<String, (usize, Duration)> {
        let mut out = BTreeMap::<String, (usize, Duration)>::new();
        for r in self.drain() {
            let entry = out.entry(r.operation).or_default();
            entry.0 += 1;
            entry.1 += r.took;
        }
        out
    }

    fn push(&self, r: Recorded) {
        self.0.lock().unwrap().push(r);
    }
}

/// Rewrites a request's body by its operation (`x-amz-target`) before moto sees it.
pub type Rewrite = Arc<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A rewrite that passes every body on unchanged.
pub fn unchanged() -> Rewrite {
    Arc::new(|_, body| body)
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    log: RequestLog,
    rewrite: Rewrite,
}

async fn forward(
    State(s): State<Arc<ProxyState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        !parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .contains("x-www-form-urlencoded"),
        "the proxy reads the JSON protocols only"
    );
    let bytes = (s.rewrite)(&operation, bytes);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let started = std::time::Instant::now();
    let mut out = s
        .client
        .request(parts.method.clone(), format!("{}{path}", s.upstream));
    for (k, v) in &parts.headers {
        if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    let answer = out
        .body(bytes.clone())
        .send()
        .await
        .expect("moto answers the proxy");
    let mut response = axum::response::Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::TRANSFER_ENCODING {
            response = response.header(k, v);
        }
    }
    let answer = answer.bytes().await.unwrap_or_default();
    s.log.push(Recorded {
        operation,
        request: bytes,
        response: answer.to_vec(),
        took: started.elapsed(),
    });
    response.body(Body::from(answer)).unwrap()
}

/// Starts the proxy in front of the emulator, recording into `log`; returns its URL.
pub async fn start_proxy(log: RequestLog, rewrite: Rewrite) -> String {
    let state = Arc::new(ProxyState {
        upstream: super::endpoint().trim_end_matches('/').to_string(),
        client: reqwest::Client::new(),
        log,
        rewrite,
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
