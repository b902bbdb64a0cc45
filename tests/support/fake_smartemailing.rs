//! A strict fake of the SmartEmailing API v3 for the end-to-end tests.
//!
//! It follows `/work/shared/SMARTEMAILING_API.md`: HTTP Basic auth on every route under
//! `/api/v3`, JSON envelopes `{"status": ..., "meta": [], "message": ...}`, and strict
//! validation of the bodies the relay sends (unknown keys, wrong types, batch limits,
//! date formats are refused with 422 and a message naming the problem).
//!
//! Order of checks for one request:
//! 1. Fault injection (queued faults first, FIFO, then the default "outage" fault). Faults
//!    apply before anything else, like a load balancer in front of the API.
//! 2. Path outside `/api/v3` → 404.
//! 3. HTTP Basic auth (configured username + current api key) → 401.
//! 4. Route / method → 404 / 405.
//! 5. POST: `Content-Type: application/json` and a valid JSON body → else 400.
//! 6. Body validation → 422.
//! 7. The same contact (or order) twice in one bulk call → 422 `Duplicate row in one call`.
//! 8. `reject_emails` addresses → 422 `Invalid emailaddress: <addr>`.
//! 9. The normal answer (200/201).
//!
//! Every request is recorded (also refused and fault-answered ones) *before* the answer is
//! sent, so once the client has its answer the fake already knows about the request. A
//! request answered with a delayed fault is recorded when it arrives, with the status the
//! fault will answer. A request answered by a connection reset is recorded with status 0.
//!
//! Connection resets (`Fault::reset()`): the server runs on `axum::serve` with a custom
//! [`Listener`] whose connections are wrapped in [`KillableStream`]. Each connection has a
//! shared [`ConnCtl`] that the handler receives through `ConnectInfo`. To reset, the handler
//! marks its own connection as killed and returns a response; when hyper tries to write
//! that response, the wrapper fails the write, sets `SO_LINGER` to zero and hyper drops the
//! socket, so the kernel sends a TCP RST and the client never sees a single byte of an
//! answer. No proxy, no second port, and only the one connection carrying the request is
//! affected. Dropping the [`FakeSmartEmailing`] (or calling `shutdown`) stops accepting and
//! kills every open connection (including idle keep-alive ones in a client's pool).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The account id answered by `GET /check-credentials`.
pub const FAKE_ACCOUNT_ID: u64 = 123;
/// Most items one call may carry (trigger-event, import, import-orders, send tasks).
pub const MAX_BATCH: usize = 500;
/// Most tasks one `/send/transactional-emails-bulk` call may carry.
pub const MAX_TRANSACTIONAL_TASKS: usize = 5;

const API_PREFIX: &str = "/api/v3";

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// An injected answer that replaces the normal one.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    /// Sent as JSON; `Value::Null` sends an empty body (no content type).
    pub body: Value,
    pub headers: Vec<(String, String)>,
    /// Slept before answering (or before resetting).
    pub delay: Duration,
    /// Close the TCP connection (RST) without any answer.
    pub reset_connection: bool,
}

impl Fault {
    /// An answer with this status and a plausible SmartEmailing body: `created`/`ok`
    /// envelopes for 2xx (empty for 204), an error envelope otherwise.
    pub fn status(code: u16) -> Fault {
        let body = match code {
            204 => Value::Null,
            201 => json!({"status": "created", "meta": []}),
            200..=299 => json!({"status": "ok", "meta": []}),
            _ => {
                let reason = StatusCode::from_u16(code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                envelope("error", reason)
            }
        };
        Fault {
            status: code,
            body,
            headers: Vec::new(),
            delay: Duration::ZERO,
            reset_connection: false,
        }
    }

    /// An error envelope with this status and message, e.g.
    /// `Fault::error(422, "Rate limit exceeded")`.
    pub fn error(code: u16, message: &str) -> Fault {
        Fault::status(code).with_body(envelope("error", message))
    }

    /// Close the TCP connection without a response.
    pub fn reset() -> Fault {
        Fault {
            status: 0,
            body: Value::Null,
            headers: Vec::new(),
            delay: Duration::ZERO,
            reset_connection: true,
        }
    }

    pub fn with_header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn with_body(mut self, v: Value) -> Self {
        self.body = v;
        self
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Turn this fault into a connection reset (after its delay, if any).
    pub fn with_reset(mut self) -> Self {
        self.reset_connection = true;
        self
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the `/api/v3` prefix, e.g. `/trigger-event`; paths outside the API
    /// are recorded whole. No query string (see `query`).
    pub path: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body; `Null` if empty or invalid.
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// The status the fake answered; 0 for a connection reset.
    pub status: u16,
    /// The body the fake answered (`Null` for none / reset).
    pub response_body: Value,
    /// The raw query string, if any.
    pub query: Option<String>,
}

impl RecordedRequest {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Answered 2xx with envelope status `ok` or `created`.
    pub fn is_accepted(&self) -> bool {
        (200..300).contains(&self.status)
            && matches!(
                self.response_body.get("status").and_then(Value::as_str),
                Some("ok" | "created")
            )
    }

    /// The items this call carried: trigger-event array items, `data` of /import and
    /// /import-orders, `tasks` of /send/*, the order of /orders, else the body itself.
    pub fn items(&self) -> Vec<Value> {
        items_of(&self.path, &self.body)
    }
}

/// Handle to a running fake. Dropping it shuts the server down.
pub struct FakeSmartEmailing {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl FakeSmartEmailing {
    /// Start on `127.0.0.1:<random port>`.
    pub async fn start(username: &str, api_key: &str) -> FakeSmartEmailing {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake SmartEmailing: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("fake SmartEmailing: local_addr");
        let shared = Arc::new(Shared {
            username: username.to_string(),
            state: Mutex::new(FakeState {
                api_key: api_key.to_string(),
                faults: VecDeque::new(),
                default_fault: None,
                random_fault: None,
                rejected: HashSet::new(),
                requests: Vec::new(),
                accepted_items: HashMap::new(),
                contact_ids: HashMap::new(),
                next_id: 1000,
            }),
            notify: Notify::new(),
            conns: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = KillableListener {
            inner: listener,
            shared: shared.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<ConnHandle>(),
            )
            .await;
        });
        FakeSmartEmailing {
            shared,
            addr,
            server,
        }
    }

    /// E.g. `http://127.0.0.1:PORT/api/v3` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, API_PREFIX)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn username(&self) -> String {
        self.shared.username.clone()
    }

    pub fn api_key(&self) -> String {
        self.shared.lock().api_key.clone()
    }

    /// Every request received, in order, including refused ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Only those answered 2xx with envelope status `ok`/`created` (a fault that answers
    /// like that counts too: it simulates "processed, but the answer was lost").
    pub fn accepted(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_accepted())
            .cloned()
            .collect()
    }

    /// Accepted calls to e.g. `/trigger-event`.
    pub fn calls_to(&self, path: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path && r.is_accepted())
            .count()
    }

    /// All requests (accepted or not) to a path.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Items of all accepted calls to a path, flattened (see [`RecordedRequest::items`]).
    pub fn items_at(&self, path: &str) -> Vec<Value> {
        self.shared.lock().items_at(path)
    }

    /// How many items the accepted calls to `path` carried: kept as they are recorded, so a
    /// waiter woken on every request does not copy them all each time (and hold the lock
    /// the handlers need meanwhile).
    pub fn item_count_at(&self, path: &str) -> usize {
        self.shared
            .lock()
            .accepted_items
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// All items of accepted `/trigger-event` calls, flattened.
    pub fn triggered_events(&self) -> Vec<Value> {
        self.items_at("/trigger-event")
    }

    /// All `data` items of accepted `/import` calls.
    pub fn imported_contacts(&self) -> Vec<Value> {
        self.items_at("/import")
    }

    /// Forget all recorded requests (faults and settings stay).
    pub fn clear_requests(&self) {
        let mut st = self.shared.lock();
        st.requests.clear();
        st.accepted_items.clear();
    }

    /// The next request (any path) gets this answer. FIFO, one fault per request.
    pub fn push_fault(&self, f: Fault) {
        self.shared.lock().faults.push_back(f);
    }

    /// The next `n` requests get this answer.
    pub fn fail_next(&self, n: usize, f: Fault) {
        let mut st = self.shared.lock();
        for _ in 0..n {
            st.faults.push_back(f.clone());
        }
    }

    /// Drop all queued faults.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// How many queued faults have not been used yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    /// Change which api key is valid (simulates rotation).
    pub fn set_api_key(&self, key: &str) {
        self.shared.lock().api_key = key.to_string();
    }

    /// Each request gets `f` with a chance of 1 in `one_in`, after queued and default faults
    /// (e.g. 1 in 20 for 5 % injected faults), drawn from a generator seeded with `seed` so
    /// a run can be repeated; `None` stops it. Random rather than every n-th request: a
    /// fixed period can line up with the relay's own rhythm (the same call of each retry
    /// pass) and fail one delivery on every attempt.
    pub fn set_random_fault(&self, one_in: u64, seed: u64, f: Option<Fault>) {
        self.shared.lock().random_fault = f.map(|f| (one_in.max(1), f, seed));
    }

    /// While `Some`, every request gets this answer (an outage). Queued faults still go
    /// first.
    pub fn set_default_fault(&self, f: Option<Fault>) {
        self.shared.lock().default_fault = f;
    }

    /// Calls to /import, /trigger-event or /send/* containing one of these addresses
    /// (case-insensitive) are answered 422 `Invalid emailaddress: <addr>`.
    pub fn reject_emails(&self, emails: &[&str]) {
        let mut st = self.shared.lock();
        for e in emails {
            st.rejected.insert(e.trim().to_ascii_lowercase());
        }
    }

    /// Waits until the accepted items at `path` are at least `n`; false on timeout.
    pub async fn wait_for_items(&self, path: &str, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register before checking so that a notification between the check and the
            // await is not lost.
            notified.as_mut().enable();
            if self.item_count_at(path) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.item_count_at(path) >= n;
            }
        }
    }

    /// Stop accepting and reset every open connection. Also done on drop.
    pub fn shutdown(&self) {
        self.server.abort();
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.kill();
        }
    }
}

impl Drop for FakeSmartEmailing {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------

struct Shared {
    username: String,
    state: Mutex<FakeState>,
    notify: Notify,
    conns: Mutex<Vec<Weak<ConnCtl>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }
}

struct FakeState {
    api_key: String,
    faults: VecDeque<Fault>,
    default_fault: Option<Fault>,
    /// Every `n`-th request (counting from 1) gets this fault: (n, fault, counter).
    /// 1 in how many requests, the fault, the generator's state (splitmix64).
    random_fault: Option<(u64, Fault, u64)>,
    rejected: HashSet<String>,
    requests: Vec<RecordedRequest>,
    /// Per path, how many items its accepted requests carried (`item_count_at`).
    accepted_items: HashMap<String, usize>,
    contact_ids: HashMap<String, u64>,
    next_id: u64,
}

impl FakeState {
    fn items_at(&self, path: &str) -> Vec<Value> {
        self.requests
            .iter()
            .filter(|r| r.path == path && r.is_accepted())
            .flat_map(|r| r.items())
            .collect()
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn contact_id(&mut self, email: &str) -> u64 {
        let key = email.to_ascii_lowercase();
        if let Some(id) = self.contact_ids.get(&key) {
            return *id;
        }
        let id = self.next_id();
        self.contact_ids.insert(key, id);
        id
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn items_of(path: &str, body: &Value) -> Vec<Value> {
    items_in(path, body).to_vec()
}

/// The items a call carries, borrowed from its body: the array of its path (empty when it is
/// missing), or the body itself for a call that is one item.
fn items_in<'b>(path: &str, body: &'b Value) -> &'b [Value] {
    let list = |v: Option<&'b Value>| v.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    match path {
        "/trigger-event" => list(Some(body)),
        "/import" | "/import-orders" => list(body.get("data")),
        p if p.starts_with("/send/") => list(body.get("tasks")),
        _ => std::slice::from_ref(body),
    }
}

/// The first row a bulk call carries twice, if any. No public client sends two rows for the
/// same contact (or order) in one call and what SmartEmailing does with them is unknown, so
/// the fake refuses them: the e-mail for `/import` and the send endpoints, e-mail and name
/// for `/trigger-event`, the order code for `/import-orders`.
fn duplicate_row(path: &str, body: &Value) -> Option<String> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let email = |v: &Value| text(v, "emailaddress").map(|e| e.trim().to_ascii_lowercase());
    let mut seen = std::collections::HashSet::new();
    for item in items_in(path, body) {
        let row = match path {
            "/trigger-event" => email(item)
                .zip(text(item, "name"))
                .map(|(e, n)| format!("{e} {n}")),
            "/import" => email(item),
            "/import-orders" => text(item, "eshop_code"),
            p if p.starts_with("/send/") => item.get("recipient").and_then(email),
            _ => None,
        };
        if let Some(row) = row.filter(|r| !seen.insert(r.clone())) {
            return Some(row);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Killable connections (see the module docs)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ConnCtl {
    killed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ConnCtl {
    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

/// What the handler learns about its connection (via `ConnectInfo`).
#[derive(Debug, Clone)]
struct ConnHandle {
    peer: SocketAddr,
    ctl: Arc<ConnCtl>,
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct KillableListener {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let ctl = Arc::new(ConnCtl::default());
                    {
                        let mut conns = lock(&self.shared.conns);
                        conns.retain(|w| w.strong_count() > 0);
                        conns.push(Arc::downgrade(&ctl));
                    }
                    let io = KillableStream {
                        inner: stream,
                        ctl: ctl.clone(),
                        lingered: false,
                    };
                    return (io, ConnHandle { peer, ctl });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnHandle {
            peer: self.inner.local_addr()?,
            ctl: Arc::new(ConnCtl::default()),
        })
    }
}

/// A TCP stream that fails every operation once its connection is killed, after setting
/// `SO_LINGER` to zero so that dropping it sends an RST.
struct KillableStream {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
    lingered: bool,
}

impl KillableStream {
    /// True if killed; otherwise remembers the task to wake when it gets killed.
    fn check_killed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ctl.is_killed() {
            {
                let mut slot = lock(&self.ctl.waker);
                match slot.as_ref() {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            if !self.ctl.is_killed() {
                return false;
            }
        }
        if !self.lingered {
            self.lingered = true;
            let _ = self.inner.set_zero_linger();
        }
        true
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "fake SmartEmailing: connection reset by fault injection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.check_killed(cx) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.check_killed(cx) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.check_killed(cx) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.check_killed(cx) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.check_killed(cx) {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// Handler
// ---------------------------------------------------------------------------------------

struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn new(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer::new(status, envelope("error", message))
    }
}

fn envelope(status: &str, message: &str) -> Value {
    json!({"status": status, "meta": [], "message": message})
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full_path = uri.path();
    let api_path: Option<String> = match full_path.strip_prefix(API_PREFIX) {
        Some("") => Some("/".to_string()),
        Some(rest) if rest.starts_with('/') => Some(rest.to_string()),
        _ => None,
    };
    let recorded_path = api_path.clone().unwrap_or_else(|| full_path.to_string());
    let parsed_body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let recorded_headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();

    let (answer, fault) = {
        let mut st = shared.lock();
        let random = match &mut st.random_fault {
            Some((one_in, f, state)) => {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z % *one_in == 0).then(|| f.clone())
            }
            None => None,
        };
        let fault = st
            .faults
            .pop_front()
            .or_else(|| st.default_fault.clone())
            .or(random);
        let answer = match &fault {
            Some(f) => Answer {
                status: if f.reset_connection { 0 } else { f.status },
                body: if f.reset_connection {
                    Value::Null
                } else {
                    f.body.clone()
                },
                headers: f.headers.clone(),
            },
            None => route(
                &shared.username,
                &mut st,
                &method,
                api_path.as_deref(),
                &headers,
                &body,
            ),
        };
        let recorded = RecordedRequest {
            method: method.as_str().to_string(),
            path: recorded_path,
            headers: recorded_headers,
            body: parsed_body,
            raw_body: body.to_vec(),
            status: answer.status,
            response_body: answer.body.clone(),
            query: uri.query().map(str::to_string),
        };
        if recorded.is_accepted() {
            *st.accepted_items.entry(recorded.path.clone()).or_default() +=
                items_in(&recorded.path, &recorded.body).len();
        }
        st.requests.push(recorded);
        (answer, fault)
    };
    shared.notify.notify_waiters();

    if let Some(f) = &fault {
        if !f.delay.is_zero() {
            tokio::time::sleep(f.delay).await;
        }
        if f.reset_connection {
            // The write of this response fails and the socket is dropped with an RST.
            conn.ctl.kill();
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return resp;
        }
    }
    build_response(answer)
}

fn build_response(answer: Answer) -> Response {
    let mut resp = if answer.body.is_null() {
        Response::new(Body::empty())
    } else {
        let mut r = Response::new(Body::from(answer.body.to_string()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r
    };
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn authorized(headers: &HeaderMap, username: &str, api_key: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return false;
    };
    match decoded.split_once(':') {
        Some((u, p)) => u == username && p == api_key,
        None => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Ping,
    CheckCredentials,
    TriggerEvent,
    Import,
    CustomEmails,
    TransactionalEmails,
    CustomSms,
    ImportOrders,
    Order,
}

impl Endpoint {
    fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/ping" => Endpoint::Ping,
            "/check-credentials" => Endpoint::CheckCredentials,
            "/trigger-event" => Endpoint::TriggerEvent,
            "/import" => Endpoint::Import,
            "/send/custom-emails-bulk" => Endpoint::CustomEmails,
            "/send/transactional-emails-bulk" => Endpoint::TransactionalEmails,
            "/send/custom-sms-bulk" => Endpoint::CustomSms,
            "/import-orders" => Endpoint::ImportOrders,
            "/orders" => Endpoint::Order,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Ping | Endpoint::CheckCredentials => Method::GET,
            _ => Method::POST,
        }
    }
}

fn route(
    username: &str,
    st: &mut FakeState,
    method: &Method,
    api_path: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let Some(path) = api_path else {
        return Answer::error(404, "Not found");
    };
    if !authorized(headers, username, &st.api_key) {
        return Answer::error(401, "Unauthorized");
    }
    let Some(endpoint) = Endpoint::from_path(path) else {
        return Answer::error(404, &format!("Endpoint {path} not found"));
    };
    if *method != endpoint.method() {
        return Answer::error(
            405,
            &format!(
                "Method {method} not allowed on {path}; use {}",
                endpoint.method()
            ),
        );
    }
    match endpoint {
        Endpoint::Ping => {
            return Answer::new(200, envelope("ok", "Hi there! API version 3 here!"));
        }
        Endpoint::CheckCredentials => {
            let mut body = envelope("ok", "Hi there! Your credentials are valid!");
            body["account_id"] = json!(FAKE_ACCOUNT_ID);
            return Answer::new(200, body);
        }
        _ => {}
    }

    // POST with a JSON body from here on.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Answer::error(
            400,
            &format!(
                "Content-Type must be application/json, got {:?}",
                content_type
            ),
        );
    }
    if body.is_empty() {
        return Answer::error(400, "Request body is empty; a JSON body is required");
    }
    let json: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Answer::error(400, &format!("Request body is not valid JSON: {e}")),
    };

    let validated = match endpoint {
        Endpoint::TriggerEvent => validate_trigger_event(&json),
        Endpoint::Import => validate_import(&json),
        Endpoint::CustomEmails => validate_send(&json, SendKind::CustomEmails),
        Endpoint::TransactionalEmails => validate_send(&json, SendKind::Transactional),
        Endpoint::CustomSms => validate_send(&json, SendKind::Sms),
        Endpoint::ImportOrders => validate_import_orders(&json).map(|_| Vec::new()),
        Endpoint::Order => validate_order(&json, "", false).map(|_| Vec::new()),
        Endpoint::Ping | Endpoint::CheckCredentials => Ok(Vec::new()),
    };
    let emails = match validated {
        Ok(emails) => emails,
        Err(msg) => return Answer::error(422, &msg),
    };
    if let Some(row) = duplicate_row(path, &json) {
        return Answer::error(422, &format!("Duplicate row in one call: {row}"));
    }
    if let Some(bad) = emails
        .iter()
        .find(|e| st.rejected.contains(&e.trim().to_ascii_lowercase()))
    {
        return Answer::error(422, &format!("Invalid emailaddress: {bad}"));
    }

    match endpoint {
        Endpoint::TriggerEvent => Answer::new(201, json!({"status": "created", "meta": []})),
        Endpoint::Import => {
            let map: Vec<Value> = emails
                .iter()
                .map(|e| json!({"emailaddress": e, "contact_id": st.contact_id(e)}))
                .collect();
            Answer::new(
                201,
                json!({"status": "created", "meta": [], "contacts_map": map}),
            )
        }
        Endpoint::CustomEmails | Endpoint::TransactionalEmails | Endpoint::CustomSms => {
            let data: Vec<Value> = emails
                .iter()
                .map(|e| json!({"recipient": e, "id": format!("{:032x}", st.next_id())}))
                .collect();
            Answer::new(201, json!({"status": "created", "meta": [], "data": data}))
        }
        Endpoint::ImportOrders => Answer::new(201, json!({"status": "created", "meta": []})),
        Endpoint::Order => {
            let id = st.next_id();
            Answer::new(200, json!({"status": "ok", "meta": [], "data": {"id": id}}))
        }
        Endpoint::Ping | Endpoint::CheckCredentials => unreachable!("answered above"),
    }
}

// ---------------------------------------------------------------------------------------
// Validation helpers. Each returns Err(message naming the problem and where).
// ---------------------------------------------------------------------------------------

type Check<T> = Result<T, String>;

fn at(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn where_(path: &str) -> String {
    if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Check<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{} must be an object, got {}", where_(path), type_name(v)))
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str], path: &str) -> Check<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{}: unknown key '{k}' (allowed: {})",
            where_(path),
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn required<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Check<&'a Value> {
    m.get(key)
        .ok_or_else(|| format!("{}: missing required key '{key}'", where_(path)))
}

fn as_string<'a>(v: &'a Value, path: &str) -> Check<&'a str> {
    v.as_str()
        .ok_or_else(|| format!("{path} must be a string, got {}", type_name(v)))
}

fn non_empty_string<'a>(v: &'a Value, path: &str) -> Check<&'a str> {
    let s = as_string(v, path)?;
    if s.trim().is_empty() {
        return Err(format!("{path} must not be empty"));
    }
    Ok(s)
}

fn string_or_null(v: &Value, path: &str) -> Check<()> {
    if v.is_null() {
        return Ok(());
    }
    as_string(v, path).map(|_| ())
}

fn as_int(v: &Value, path: &str) -> Check<i64> {
    v.as_i64()
        .ok_or_else(|| format!("{path} must be an integer, got {}", describe(v)))
}

fn positive_int(v: &Value, path: &str) -> Check<i64> {
    let n = as_int(v, path)?;
    if n <= 0 {
        return Err(format!("{path} must be a positive integer, got {n}"));
    }
    Ok(n)
}

fn as_bool(v: &Value, path: &str) -> Check<bool> {
    v.as_bool()
        .ok_or_else(|| format!("{path} must be a boolean, got {}", describe(v)))
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        other => format!("{} {other}", type_name(other)),
    }
}

fn as_array<'a>(v: &'a Value, path: &str, min: usize, max: usize) -> Check<&'a Vec<Value>> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("{} must be an array, got {}", where_(path), type_name(v)))?;
    if arr.len() < min {
        return Err(format!(
            "{} must contain at least {min} item(s), got {}",
            where_(path),
            arr.len()
        ));
    }
    if arr.len() > max {
        return Err(format!(
            "{} may contain at most {max} items, got {}",
            where_(path),
            arr.len()
        ));
    }
    Ok(arr)
}

fn email(v: &Value, path: &str) -> Check<String> {
    let s = as_string(v, path)?;
    let valid = match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(format!("Invalid emailaddress: {s} (at {path})"));
    }
    Ok(s.to_string())
}

/// `YYYY-MM-DD HH:MM:SS` with plausible ranges.
fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 19 {
        return false;
    }
    let digits_at = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if !digits_at.iter().all(|&i| b[i].is_ascii_digit()) {
        return false;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let num = |from: usize, to: usize| s[from..to].parse::<u32>().unwrap_or(99);
    let (month, day, hour, min, sec) =
        (num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19));
    (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && min < 60 && sec < 60
}

/// A date as every public client sends it (`Y-m-d H:i:s`), or null; never `""` (no client
/// sends an empty date string) and never RFC 3339.
fn datetime_or_null(v: &Value, path: &str) -> Check<()> {
    if v.is_null() {
        return Ok(());
    }
    let s = as_string(v, path)?;
    if s.is_empty() {
        return Err(format!(
            "{path} must be a date in the format YYYY-MM-DD HH:MM:SS, got an empty string"
        ));
    }
    if !is_datetime(s) {
        return Err(format!(
            "{path} must be a date in the format YYYY-MM-DD HH:MM:SS, got {s:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Endpoint validators. Those that carry addresses return them (for reject_emails and for
// the answer's contacts_map / data).
// ---------------------------------------------------------------------------------------

fn validate_trigger_event(v: &Value) -> Check<Vec<String>> {
    if v.is_object() {
        return Err(
            "body must be a JSON array of events [{emailaddress, name, payload}], got an object"
                .to_string(),
        );
    }
    let items = as_array(v, "", 1, MAX_BATCH)?;
    let mut emails = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = idx("", i);
        let m = as_object(item, &p)?;
        only_keys(m, &["emailaddress", "name", "payload"], &p)?;
        emails.push(email(
            required(m, "emailaddress", &p)?,
            &at(&p, "emailaddress"),
        )?);
        non_empty_string(required(m, "name", &p)?, &at(&p, "name"))?;
        if let Some(payload) = m.get("payload") {
            as_object(payload, &at(&p, "payload"))?;
        }
    }
    Ok(emails)
}

const IMPORT_SETTINGS_KEYS: &[&str] = &[
    "update",
    "add_namedays",
    "add_genders",
    "add_salutions",
    "preserve_unsubscribed",
    "skip_invalid_emails",
    "double_opt_in_settings",
];

const CONTACT_KEYS: &[&str] = &[
    "emailaddress",
    "name",
    "surname",
    "titlesbefore",
    "titlesafter",
    "salution",
    "company",
    "street",
    "town",
    "postalcode",
    "country",
    "cellphone",
    "phone",
    "language",
    "notes",
    "gender",
    "birthday",
    "nameday",
    "blacklisted",
    "contactlists",
    "customfields",
    "purposes",
];

const CONTACT_TEXT_KEYS: &[&str] = &[
    "name",
    "surname",
    "titlesbefore",
    "titlesafter",
    "salution",
    "company",
    "street",
    "town",
    "postalcode",
    "country",
    "cellphone",
    "phone",
    "language",
    "notes",
];

fn validate_import(v: &Value) -> Check<Vec<String>> {
    let top = as_object(v, "")?;
    only_keys(top, &["settings", "data"], "")?;
    let settings = as_object(required(top, "settings", "")?, "settings")?;
    only_keys(settings, IMPORT_SETTINGS_KEYS, "settings")?;
    for (k, val) in settings {
        if k == "double_opt_in_settings" {
            if !val.is_null() {
                as_object(val, &at("settings", k))?;
            }
        } else {
            as_bool(val, &at("settings", k))?;
        }
    }
    let data = as_array(required(top, "data", "")?, "data", 1, MAX_BATCH)?;
    let mut emails = Vec::with_capacity(data.len());
    for (i, c) in data.iter().enumerate() {
        let p = idx("data", i);
        emails.push(validate_contact(c, &p)?);
    }
    Ok(emails)
}

fn validate_contact(c: &Value, p: &str) -> Check<String> {
    let m = as_object(c, p)?;
    only_keys(m, CONTACT_KEYS, p)?;
    let addr = email(required(m, "emailaddress", p)?, &at(p, "emailaddress"))?;
    for key in CONTACT_TEXT_KEYS {
        if let Some(val) = m.get(*key) {
            string_or_null(val, &at(p, key))?;
        }
    }
    if let Some(g) = m.get("gender") {
        match g {
            Value::Null => {}
            Value::String(s) if s == "M" || s == "F" => {}
            other => {
                return Err(format!(
                    "{} must be \"M\", \"F\" or null, got {}",
                    at(p, "gender"),
                    describe(other)
                ))
            }
        }
    }
    for key in ["birthday", "nameday"] {
        if let Some(val) = m.get(key) {
            datetime_or_null(val, &at(p, key))?;
        }
    }
    if let Some(b) = m.get("blacklisted") {
        let ok = matches!(b, Value::Bool(_)) || matches!(b.as_i64(), Some(0 | 1));
        if !ok {
            return Err(format!(
                "{} must be 0 or 1, got {}",
                at(p, "blacklisted"),
                describe(b)
            ));
        }
    }
    if let Some(lists) = m.get("contactlists") {
        let lp = at(p, "contactlists");
        for (j, l) in as_array(lists, &lp, 0, usize::MAX)?.iter().enumerate() {
            let ep = idx(&lp, j);
            let lm = as_object(l, &ep)?;
            only_keys(lm, &["id", "status"], &ep)?;
            positive_int(required(lm, "id", &ep)?, &at(&ep, "id"))?;
            let status = as_string(required(lm, "status", &ep)?, &at(&ep, "status"))?;
            if !matches!(status, "confirmed" | "unsubscribed" | "removed") {
                return Err(format!(
                    "{} must be one of confirmed, unsubscribed, removed; got {status:?}",
                    at(&ep, "status")
                ));
            }
        }
    }
    if let Some(fields) = m.get("customfields") {
        let fp = at(p, "customfields");
        for (j, f) in as_array(fields, &fp, 0, usize::MAX)?.iter().enumerate() {
            let ep = idx(&fp, j);
            let fm = as_object(f, &ep)?;
            only_keys(fm, &["id", "value", "options"], &ep)?;
            positive_int(required(fm, "id", &ep)?, &at(&ep, "id"))?;
            if let Some(val) = fm.get("value") {
                if val.is_array() || val.is_object() {
                    return Err(format!(
                        "{} must be a string, number or null, got {}",
                        at(&ep, "value"),
                        type_name(val)
                    ));
                }
            }
            if let Some(opts) = fm.get("options") {
                let op = at(&ep, "options");
                for (k, o) in as_array(opts, &op, 0, usize::MAX)?.iter().enumerate() {
                    positive_int(o, &idx(&op, k))?;
                }
            }
        }
    }
    if let Some(purposes) = m.get("purposes") {
        let pp = at(p, "purposes");
        for (j, pu) in as_array(purposes, &pp, 0, usize::MAX)?.iter().enumerate() {
            let ep = idx(&pp, j);
            let pm = as_object(pu, &ep)?;
            only_keys(pm, &["id", "valid_from", "valid_to"], &ep)?;
            positive_int(required(pm, "id", &ep)?, &at(&ep, "id"))?;
            for key in ["valid_from", "valid_to"] {
                if let Some(val) = pm.get(key) {
                    datetime_or_null(val, &at(&ep, key))?;
                }
            }
        }
    }
    Ok(addr)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SendKind {
    CustomEmails,
    Transactional,
    Sms,
}

fn validate_send(v: &Value, kind: SendKind) -> Check<Vec<String>> {
    let top = as_object(v, "")?;
    let max_tasks = match kind {
        SendKind::CustomEmails => {
            only_keys(top, &["sender_credentials", "tag", "email_id", "tasks"], "")?;
            positive_int(required(top, "email_id", "")?, "email_id")?;
            MAX_BATCH
        }
        SendKind::Transactional => {
            only_keys(
                top,
                &[
                    "sender_credentials",
                    "tag",
                    "email_id",
                    "message_contents",
                    "tasks",
                ],
                "",
            )?;
            match (top.get("email_id"), top.get("message_contents")) {
                (Some(id), None) => {
                    positive_int(id, "email_id")?;
                }
                (None, Some(mc)) => {
                    let mm = as_object(mc, "message_contents")?;
                    only_keys(
                        mm,
                        &["subject", "html_body", "text_body"],
                        "message_contents",
                    )?;
                    non_empty_string(
                        required(mm, "subject", "message_contents")?,
                        "message_contents.subject",
                    )?;
                    for key in ["html_body", "text_body"] {
                        as_string(
                            required(mm, key, "message_contents")?,
                            &at("message_contents", key),
                        )?;
                    }
                }
                (Some(_), Some(_)) => {
                    return Err("give either email_id or message_contents, not both".to_string())
                }
                (None, None) => {
                    return Err(
                        "body: missing required key 'email_id' or 'message_contents'".to_string(),
                    )
                }
            }
            MAX_TRANSACTIONAL_TASKS
        }
        SendKind::Sms => {
            only_keys(top, &["tag", "sms_id", "tasks"], "")?;
            positive_int(required(top, "sms_id", "")?, "sms_id")?;
            MAX_BATCH
        }
    };
    if kind != SendKind::Sms {
        let sc = as_object(
            required(top, "sender_credentials", "")?,
            "sender_credentials",
        )?;
        only_keys(
            sc,
            &["from", "sender_name", "reply_to"],
            "sender_credentials",
        )?;
        email(
            required(sc, "from", "sender_credentials")?,
            "sender_credentials.from",
        )?;
        non_empty_string(
            required(sc, "sender_name", "sender_credentials")?,
            "sender_credentials.sender_name",
        )?;
        email(
            required(sc, "reply_to", "sender_credentials")?,
            "sender_credentials.reply_to",
        )?;
    }
    if let Some(tag) = top.get("tag") {
        as_string(tag, "tag")?;
    }
    let tasks = as_array(required(top, "tasks", "")?, "tasks", 1, max_tasks)?;
    let mut emails = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let p = idx("tasks", i);
        let tm = as_object(t, &p)?;
        only_keys(
            tm,
            &["recipient", "replace", "template_variables", "attachments"],
            &p,
        )?;
        let rp = at(&p, "recipient");
        let rm = as_object(required(tm, "recipient", &p)?, &rp)?;
        only_keys(rm, &["emailaddress", "cellphone"], &rp)?;
        emails.push(email(
            required(rm, "emailaddress", &rp)?,
            &at(&rp, "emailaddress"),
        )?);
        if kind == SendKind::Sms {
            non_empty_string(required(rm, "cellphone", &rp)?, &at(&rp, "cellphone"))?;
        } else if let Some(c) = rm.get("cellphone") {
            string_or_null(c, &at(&rp, "cellphone"))?;
        }
        let rep = at(&p, "replace");
        for (j, r) in as_array(required(tm, "replace", &p)?, &rep, 0, usize::MAX)?
            .iter()
            .enumerate()
        {
            let ep = idx(&rep, j);
            let rm = as_object(r, &ep)?;
            only_keys(rm, &["key", "content"], &ep)?;
            non_empty_string(required(rm, "key", &ep)?, &at(&ep, "key"))?;
            as_string(required(rm, "content", &ep)?, &at(&ep, "content"))?;
        }
        if let Some(tv) = tm.get("template_variables") {
            as_object(tv, &at(&p, "template_variables"))?;
        }
        if let Some(att) = tm.get("attachments") {
            let ap = at(&p, "attachments");
            for (j, a) in as_array(att, &ap, 0, usize::MAX)?.iter().enumerate() {
                let ep = idx(&ap, j);
                let am = as_object(a, &ep)?;
                only_keys(am, &["file_name", "content_type", "data_base64"], &ep)?;
                non_empty_string(required(am, "file_name", &ep)?, &at(&ep, "file_name"))?;
                non_empty_string(required(am, "content_type", &ep)?, &at(&ep, "content_type"))?;
                let data = as_string(required(am, "data_base64", &ep)?, &at(&ep, "data_base64"))?;
                if base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .is_err()
                {
                    return Err(format!("{} is not valid base64", at(&ep, "data_base64")));
                }
            }
        }
    }
    Ok(emails)
}

const ORDER_KEYS: &[&str] = &[
    "emailaddress",
    "eshop_name",
    "eshop_code",
    "status",
    "created_at",
    "paid_at",
    "attributes",
    "items",
    "item_feeds",
];

const ORDER_ITEM_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "price",
    "quantity",
    "unit",
    "url",
    "image_url",
    "attributes",
];

/// What both PHP clients require of an order item (keltuo's `OrderItem` constructor, pionl's
/// fields marked required); pionl also sends `unit`, which is optional here.
const ORDER_ITEM_REQUIRED: &[&str] = &["id", "name", "price", "quantity", "url"];

fn validate_import_orders(v: &Value) -> Check<()> {
    let top = as_object(v, "")?;
    only_keys(top, &["settings", "data"], "")?;
    let settings = as_object(required(top, "settings", "")?, "settings")?;
    only_keys(settings, &["skip_invalid_orders"], "settings")?;
    if let Some(s) = settings.get("skip_invalid_orders") {
        as_bool(s, "settings.skip_invalid_orders")?;
    }
    let data = as_array(required(top, "data", "")?, "data", 1, MAX_BATCH)?;
    for (i, o) in data.iter().enumerate() {
        validate_order(o, &idx("data", i), true)?;
    }
    Ok(())
}

fn validate_attributes(v: &Value, path: &str) -> Check<()> {
    for (j, a) in as_array(v, path, 0, usize::MAX)?.iter().enumerate() {
        let ep = idx(path, j);
        let am = as_object(a, &ep)?;
        only_keys(am, &["name", "value"], &ep)?;
        non_empty_string(required(am, "name", &ep)?, &at(&ep, "name"))?;
        required(am, "value", &ep)?;
    }
    Ok(())
}

fn validate_order(o: &Value, p: &str, status_required: bool) -> Check<String> {
    let m = as_object(o, p)?;
    only_keys(m, ORDER_KEYS, p)?;
    let addr = email(required(m, "emailaddress", p)?, &at(p, "emailaddress"))?;
    non_empty_string(required(m, "eshop_name", p)?, &at(p, "eshop_name"))?;
    non_empty_string(required(m, "eshop_code", p)?, &at(p, "eshop_code"))?;
    let status = if status_required {
        Some(required(m, "status", p)?)
    } else {
        m.get("status")
    };
    // The relay sends `cancelled` (rules::actions::CANCELLED, where the evidence is); which
    // spelling the real server takes is unknown, so the fake takes the relay's choice only.
    if let Some(s) = status {
        let s = as_string(s, &at(p, "status"))?;
        if !matches!(
            s,
            "placed" | "processing" | "shipped" | "cancelled" | "unknown"
        ) {
            return Err(format!(
                "{} must be one of placed, processing, shipped, cancelled, unknown; got {s:?}",
                at(p, "status")
            ));
        }
    }
    for key in ["created_at", "paid_at"] {
        if let Some(val) = m.get(key) {
            datetime_or_null(val, &at(p, key))?;
        }
    }
    if let Some(a) = m.get("attributes") {
        validate_attributes(a, &at(p, "attributes"))?;
    }
    if let Some(f) = m.get("item_feeds") {
        as_array(f, &at(p, "item_feeds"), 0, usize::MAX)?;
    }
    if let Some(items) = m.get("items") {
        let ip = at(p, "items");
        for (j, it) in as_array(items, &ip, 0, usize::MAX)?.iter().enumerate() {
            let ep = idx(&ip, j);
            let im = as_object(it, &ep)?;
            only_keys(im, ORDER_ITEM_KEYS, &ep)?;
            for key in ORDER_ITEM_REQUIRED {
                required(im, key, &ep)?;
            }
            non_empty_string(required(im, "url", &ep)?, &at(&ep, "url"))?;
            if let Some(unit) = im.get("unit") {
                non_empty_string(unit, &at(&ep, "unit"))?;
            }
            let id = required(im, "id", &ep)?;
            if !(id.is_string() || id.is_i64() || id.is_u64()) {
                return Err(format!(
                    "{} must be a string or integer, got {}",
                    at(&ep, "id"),
                    type_name(id)
                ));
            }
            non_empty_string(required(im, "name", &ep)?, &at(&ep, "name"))?;
            for key in ["description", "url", "image_url"] {
                if let Some(val) = im.get(key) {
                    string_or_null(val, &at(&ep, key))?;
                }
            }
            if let Some(q) = im.get("quantity") {
                positive_int(q, &at(&ep, "quantity"))?;
            }
            if let Some(price) = im.get("price") {
                let pp = at(&ep, "price");
                let pm = as_object(price, &pp)?;
                only_keys(pm, &["without_vat", "with_vat", "currency"], &pp)?;
                for key in ["without_vat", "with_vat"] {
                    let n = required(pm, key, &pp)?;
                    if !n.is_number() {
                        return Err(format!(
                            "{} must be a number, got {}",
                            at(&pp, key),
                            describe(n)
                        ));
                    }
                }
                non_empty_string(required(pm, "currency", &pp)?, &at(&pp, "currency"))?;
            }
            if let Some(a) = im.get("attributes") {
                validate_attributes(a, &at(&ep, "attributes"))?;
            }
        }
    }
    Ok(addr)
}
