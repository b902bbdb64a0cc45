//! The bounded HTTP server of `relay serve`: the router behind the limits API Gateway holds on
//! AWS (`server:` in the config). A connection that has not sent a whole request head within
//! `header_timeout`, or stays idle between requests longer than `idle_timeout`, is closed; a
//! body slower than `min_body_rate` (after a grace second) or not complete within
//! `body_timeout` is answered 408; at most `max_connections` are held (more wait in the
//! listen backlog); at most `max_in_flight` requests are handled at once (more are answered
//! 503), `/health` excepted so that a full relay still says it is alive.
//!
//! hyper's own `header_read_timeout` is not used: in hyper 1.12 its timer starts when the
//! connection goes idle, so it would also cut keep-alive connections after `header_timeout`
//! and `idle_timeout` could never be longer. The connection's reads are bounded here
//! instead, by phase: idle, reading a head, or busy with a request (whose body has its own
//! bounds).

use super::error::ApiError;
use crate::rules::config::ServerSettings;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::{BoxError, Router};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The one path exempt from `max_in_flight`: a load balancer must still see a full relay as
/// alive, or it would take it out of service and move the load elsewhere all at once.
const HEALTH: &str = "/health";
/// How long a body may start slowly before `min_body_rate` applies: a client's first
/// packets often wait on its own connection setup.
const BODY_GRACE: Duration = Duration::from_secs(1);

/// The timeouts, copied once out of the settings.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    header: Duration,
    body: Duration,
    min_body_rate: u64,
    idle: Duration,
}

/// What every connection shares: the router, the bounds, and the in-flight slots.
struct Shared {
    app: Router,
    bounds: Bounds,
    in_flight: Arc<Semaphore>,
}

/// Serves `app` on `listener` within `settings` until `stop` turns true (or its sender is
/// gone), then stops accepting, closes the connections between requests, lets the requests
/// in flight finish, and returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ServerSettings,
    mut stop: watch::Receiver<bool>,
) {
    // acquire_many takes a u32; far more than any process can hold open anyway.
    let max_connections = settings.max_connections.clamp(1, u32::MAX as usize);
    let shared = Arc::new(Shared {
        app,
        bounds: Bounds {
            header: settings.header_timeout.get(),
            body: settings.body_timeout.get(),
            min_body_rate: settings.min_body_rate,
            idle: settings.idle_timeout.get(),
        },
        in_flight: Arc::new(Semaphore::new(
            settings.max_in_flight.clamp(1, Semaphore::MAX_PERMITS),
        )),
    });
    let slots = Arc::new(Semaphore::new(max_connections));
    let saturation = Arc::new(Mutex::new(Saturation::new(max_connections)));
    while let Some(slot) = next_slot(&slots, &saturation, &mut stop).await {
        let Some(stream) = accept(&listener, &mut stop).await else {
            break;
        };
        tokio::spawn(serve_connection(stream, slot, shared.clone(), stop.clone()));
    }
    drop(listener);
    // Every connection holds a slot until it closes: all slots back means all closed.
    let _ = slots.acquire_many(max_connections as u32).await;
}

/// Waits for a free connection slot, saying once when there is none; `None` when stopping.
async fn next_slot(
    slots: &Arc<Semaphore>,
    saturation: &Arc<Mutex<Saturation>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Slot> {
    let permit = match slots.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            lock(saturation).on_full();
            tokio::select! {
                permit = slots.clone().acquire_owned() => permit.ok()?,
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    };
    Some(Slot {
        permit,
        saturation: saturation.clone(),
    })
}

/// Locks a mutex whose value stays whole even if a holder panicked (it is only ever
/// replaced or updated by plain assignments).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A held connection; when it closes, the relay may count as recovered.
struct Slot {
    permit: OwnedSemaphorePermit,
    saturation: Arc<Mutex<Saturation>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // This slot is still counted as taken until the permit goes, just after.
        let available = self.permit.semaphore().available_permits() + 1;
        lock(&self.saturation).on_free(available);
    }
}

/// Accepts the next connection; `None` when stopping.
async fn accept(listener: &TcpListener, stop: &mut watch::Receiver<bool>) -> Option<TcpStream> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return None,
        };
        match accepted {
            Ok((stream, _)) => return Some(stream),
            // The client gave up before we took it: nothing to do.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of file descriptors: a pause lets connections close
                // rather than spinning on the same error (as hyper 0.14's server did).
                tracing::error!(error = %e, "cannot accept connections; trying again in a second");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
        }
    }
}

/// Whether an accept error concerns only the one connection.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Whether the relay is holding all the connections it may; logs each change once, so that
/// a flood writes two lines, not one per connection.
#[derive(Debug)]
struct Saturation {
    max: usize,
    full: bool,
}

impl Saturation {
    fn new(max: usize) -> Self {
        Self { max, full: false }
    }

    /// No slot was free; true when this is news.
    fn on_full(&mut self) -> bool {
        if self.full {
            return false;
        }
        self.full = true;
        tracing::warn!(
            max_connections = self.max,
            "holding as many connections as server.max_connections allows; new ones wait in the listen backlog until one closes"
        );
        true
    }

    /// A connection closed and `available` slots are free; true when the relay counts as
    /// recovered: at most half the slots in use, so that churn at the limit does not log
    /// every time.
    fn on_free(&mut self, available: usize) -> bool {
        let held = self.max.saturating_sub(available);
        if !self.full || held > self.max / 2 {
            return false;
        }
        self.full = false;
        tracing::info!(
            connections = held,
            "connections are below server.max_connections again"
        );
        true
    }
}

/// Serves one connection until it closes, or until stopping and its request (if any) is
/// answered; holds its `slot` until then.
async fn serve_connection(
    stream: TcpStream,
    slot: Slot,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let phase = Arc::new(ConnPhase::new(shared.bounds));
    let io = TokioIo::new(Bounded::new(stream, phase.clone()));
    let service = {
        let phase = phase.clone();
        hyper::service::service_fn(move |req| handle(req, shared.clone(), phase.clone()))
    };
    let conn = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            phase.close();
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "a connection ended with an error");
    }
    drop(slot);
}

/// Answers one request: marks the connection busy until the answer is written, takes an
/// in-flight slot, bounds the body, and calls the router.
async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    phase: Arc<ConnPhase>,
) -> Result<Response<Tracked>, Infallible> {
    phase.busy();
    let idle_after = IdleOnDrop(phase);
    let resp = respond(req, &shared).await;
    Ok(resp.map(|body| Tracked {
        body,
        _idle_after: idle_after,
    }))
}

/// The router's answer, or 503 when `max_in_flight` requests are being handled, or 408
/// when the body came too slowly.
async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let _in_flight = if req.uri().path() == HEALTH {
        None
    } else {
        match shared.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return overloaded(),
        }
    };
    let late = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| Body::new(TimedBody::new(body, shared.bounds, late.clone())));
    let resp = match shared.app.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // The handler saw a failed read (and said 413); the truth is that the body was late.
    if late.load(Ordering::Relaxed) {
        return too_slow();
    }
    resp
}

/// `503 overloaded` with `Retry-After: 1`.
fn overloaded() -> Response<Body> {
    let mut resp = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the relay is handling as many requests as server.max_in_flight allows; retry in a second",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// `408 request_timeout`, closing the connection: the rest of the body may still be coming.
fn too_slow() -> Response<Body> {
    let mut resp = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the body arrived too slowly (see server.body_timeout and server.min_body_rate)",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Where a connection is between requests, which decides how long a read may wait.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request to start; `fresh` on a new connection, whose first head must
    /// be complete by `until` however its bytes trickle.
    Idle { until: Instant, fresh: bool },
    /// Part of a head has arrived; the rest must by `until`.
    Head { until: Instant },
    /// A request is being handled; its body has its own bounds.
    Busy,
}

/// What a read may do now.
enum ReadRule {
    /// Wait as long as it takes.
    Unbounded,
    /// Give up at this instant.
    Until(Instant),
    /// End the connection: the relay is stopping and no request is under way.
    Close,
}

/// The phase of one connection, shared by its reads, its service and its answers' bodies.
#[derive(Debug)]
struct ConnPhase {
    bounds: Bounds,
    phase: Mutex<Phase>,
    closing: AtomicBool,
}

impl ConnPhase {
    fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            phase: Mutex::new(Phase::Idle {
                until: Instant::now() + bounds.header,
                fresh: true,
            }),
            closing: AtomicBool::new(false),
        }
    }

    fn set(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    /// A request's head was read.
    fn busy(&self) {
        self.set(Phase::Busy);
    }

    /// An answer was written: the next request has `idle_timeout` to start.
    fn idle(&self) {
        self.set(Phase::Idle {
            until: Instant::now() + self.bounds.idle,
            fresh: false,
        });
    }

    /// The relay is stopping: a connection between requests ends at its next read.
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// The rule for a read, after one that did (`heard`) or did not bring bytes.
    fn read_rule(&self, heard: bool) -> ReadRule {
        let mut phase = lock(&self.phase);
        if heard {
            if let Phase::Idle { until, fresh } = *phase {
                let until = if fresh {
                    until
                } else {
                    Instant::now() + self.bounds.header
                };
                *phase = Phase::Head { until };
            }
        }
        match *phase {
            Phase::Busy => ReadRule::Unbounded,
            _ if self.closing.load(Ordering::Relaxed) => ReadRule::Close,
            Phase::Idle { until, .. } | Phase::Head { until } => ReadRule::Until(until),
        }
    }
}

/// Marks the connection idle when dropped: hyper drops an answer's body once it is written.
struct IdleOnDrop(Arc<ConnPhase>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.idle();
    }
}

/// An answer's body, carrying the mark that the connection is idle again.
struct Tracked {
    body: Body,
    _idle_after: IdleOnDrop,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A timer re-armed only when its instant changes.
#[derive(Default)]
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl Deadline {
    /// Whether `at` has passed; if not, wakes the task when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>, at: Instant) -> bool {
        if Instant::now() >= at {
            return true;
        }
        if self.armed != Some(at) {
            self.armed = Some(at);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

/// A connection's socket whose reads wait no longer than its phase allows.
struct Bounded {
    io: TcpStream,
    phase: Arc<ConnPhase>,
    deadline: Deadline,
}

impl Bounded {
    fn new(io: TcpStream, phase: Arc<ConnPhase>) -> Self {
        Self {
            io,
            phase,
            deadline: Deadline::default(),
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let ReadRule::Close = this.phase.read_rule(false) {
            // An end of stream: hyper closes a connection between requests quietly.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let rule = this.phase.read_rule(buf.filled().len() > before);
        match (polled, rule) {
            (Poll::Pending, ReadRule::Until(at)) if this.deadline.poll_passed(cx, at) => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within server.header_timeout or server.idle_timeout",
                )))
            }
            (polled, _) => polled,
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the body arrived too slowly")]
struct BodyTooSlow;

/// A request body that fails once it falls behind `min_body_rate` (after `BODY_GRACE`) or
/// is not complete within `body_timeout`, and says so in `late`.
struct TimedBody {
    inner: Incoming,
    bounds: Bounds,
    started: Instant,
    received: u64,
    deadline: Deadline,
    late: Arc<AtomicBool>,
}

impl TimedBody {
    fn new(inner: Incoming, bounds: Bounds, late: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            bounds,
            started: Instant::now(),
            received: 0,
            deadline: Deadline::default(),
            late,
        }
    }

    /// When the body is late unless more of it arrives.
    fn due(&self) -> Instant {
        body_due(self.started, self.received, self.bounds)
    }
}

/// When a body that started at `started` and has brought `received` bytes is late: at
/// `body_timeout`, or when the rate floor overtakes what arrived.
fn body_due(started: Instant, received: u64, bounds: Bounds) -> Instant {
    let total = started + bounds.body;
    if bounds.min_body_rate == 0 {
        return total;
    }
    let earned = Duration::from_millis(received.saturating_mul(1000) / bounds.min_body_rate);
    total.min(started + BODY_GRACE + earned)
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.late.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTooSlow.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {
                let due = this.due();
                if !this.deadline.poll_passed(cx, due) {
                    return Poll::Pending;
                }
                this.late.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTooSlow.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(rate: u64) -> Bounds {
        Bounds {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            min_body_rate: rate,
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_body_is_due_after_the_grace_second_plus_what_its_bytes_earned() {
        let t = Instant::now();
        assert_eq!(body_due(t, 0, bounds(1024)), t + BODY_GRACE);
        assert_eq!(
            body_due(t, 2048, bounds(1024)),
            t + BODY_GRACE + Duration::from_secs(2)
        );
    }

    #[test]
    fn a_body_is_never_due_later_than_body_timeout() {
        let t = Instant::now();
        assert_eq!(body_due(t, u64::MAX, bounds(1024)), t + bounds(1).body);
        assert_eq!(body_due(t, 0, bounds(0)), t + bounds(1).body);
    }

    #[test]
    fn saturation_is_news_once_until_half_the_slots_are_free() {
        let mut s = Saturation::new(8);
        assert!(s.on_full());
        assert!(!s.on_full());
        // Churn at the limit: one connection closes and another is taken.
        assert!(!s.on_free(1));
        assert!(!s.on_full());
        assert!(s.on_free(4));
        assert!(!s.on_free(5));
        assert!(s.on_full());
    }

    #[tokio::test]
    async fn a_first_head_keeps_its_deadline_and_a_later_one_gets_header_timeout_from_its_first_byte(
    ) {
        let phase = ConnPhase::new(bounds(1024));
        let ReadRule::Until(first) = phase.read_rule(false) else {
            panic!("a new connection waits for a head");
        };
        let ReadRule::Until(same) = phase.read_rule(true) else {
            panic!("a head is being read");
        };
        assert_eq!(first, same);
        phase.busy();
        assert!(matches!(phase.read_rule(true), ReadRule::Unbounded));
        phase.idle();
        let ReadRule::Until(idle) = phase.read_rule(false) else {
            panic!("an idle connection waits");
        };
        assert!(idle > Instant::now() + Duration::from_secs(50));
        let ReadRule::Until(head) = phase.read_rule(true) else {
            panic!("a head is being read");
        };
        assert!(head < Instant::now() + Duration::from_secs(11));
        phase.close();
        assert!(matches!(phase.read_rule(false), ReadRule::Close));
    }
}
