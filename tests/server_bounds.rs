//! `relay serve`'s HTTP bounds (`server:`), over real sockets: slow heads and bodies, idle
//! keep-alive connections, a flood of connections, and more requests than may be in flight.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const RULES: &str = r#"
  - name: welcome
    on: [contact.created]
    actions:
      - trigger_event: {name: welcome, payload: {first_name: "{{ contact.first_name }}"}}
"#;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n";

/// A dry-run relay with these `server:` settings (YAML lines, indented).
async fn relay(server: &str) -> TestRelay {
    let yaml = format!(
        "{}\nserver:\n{server}",
        config_yaml("http://127.0.0.1:9/api/v3", RULES)
    );
    TestRelay::start(&yaml, bundle(false)).await
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One raw HTTP/1.1 connection, so that a test controls every byte and its timing.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    async fn open(r: &TestRelay) -> Conn {
        let stream = TcpStream::connect(r.relay().addr).await.expect("connect");
        let (read, writer) = stream.into_split();
        Conn {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next answer (a `100 Continue` counts as one).
    async fn answer(&mut self) -> Answer {
        timeout(PATIENCE, read_answer(&mut self.reader))
            .await
            .expect("an answer in time")
            .expect("a well-formed answer")
    }

    /// How long until the relay closes the connection, reading (and discarding) whatever it
    /// still sends; panics if it is still open after `limit`.
    async fn closed_within(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut sink = Vec::new();
        match timeout(limit, self.reader.read_to_end(&mut sink)).await {
            Ok(_) => start.elapsed(),
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

async fn read_answer(reader: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Answer> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not a status line: {line:?}")))?;
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let len = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The head of an authorised `POST /v1/events` whose body is `len` bytes of JSON.
fn post_head(len: usize, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/events HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// A relay with these settings, and a connection that has sent the head of a `len`-byte
/// `POST /v1/events` (at the returned instant) and none of its body.
async fn posting(server: &str, len: usize) -> (TestRelay, Conn, Instant) {
    let r = relay(server).await;
    let mut conn = Conn::open(&r).await;
    let start = Instant::now();
    conn.send(&post_head(len, "")).await;
    (r, conn, start)
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_head_within_header_timeout_is_dropped() {
    let r = relay("  header_timeout: 300ms\n").await;
    let start = Instant::now();
    let mut half = Conn::open(&r).await;
    half.send(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n").await;
    let mut silent = Conn::open(&r).await;
    // The slowloris keeps trickling header lines; the deadline is the head's, not the line's.
    half.send(b"X-Slow: 1\r\n").await;
    let (health, _) = r.send(r.http.get(format!("{}/health", r.url))).await;
    assert_eq!(health, 200, "the relay answers others meanwhile");
    half.closed_within(Duration::from_secs(5)).await;
    silent.closed_within(Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "dropped before header_timeout: {took:?}"
    );
}

#[tokio::test]
async fn a_body_trickling_below_min_body_rate_is_answered_408_and_the_connection_closed() {
    let (_relay, conn, start) =
        posting("  body_timeout: 30s\n  min_body_rate: 1024\n", 10_000).await;
    let Conn { reader, mut writer } = conn;
    let answer = tokio::spawn(async move {
        let mut reader = reader;
        let answer = read_answer(&mut reader).await;
        let mut rest = Vec::new();
        let closed = timeout(PATIENCE, reader.read_to_end(&mut rest))
            .await
            .is_ok();
        (answer, closed)
    });
    // 10 bytes every 100 ms: 100 B/s, a tenth of the floor.
    while !answer.is_finished() {
        if writer.write_all(b"          ").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (answer, closed) = answer.await.expect("reader");
    let answer = answer.expect("an answer");
    let took = start.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    assert_eq!(
        answer.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert!(closed, "the connection is closed after the 408");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "the floor applies after the grace second, well before body_timeout: {took:?}"
    );
}

#[tokio::test]
async fn a_body_not_complete_within_body_timeout_is_answered_408() {
    let (_relay, mut conn, start) = posting("  body_timeout: 1s\n  min_body_rate: 1\n", 100).await;
    // 50 bytes at 1 B/s would be on time for 51 s; body_timeout is what ends it.
    conn.send(&[b' '; 50]).await;
    let answer = conn.answer().await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(start.elapsed() >= Duration::from_secs(1));
    conn.closed_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_lives_idle_timeout_not_header_timeout() {
    let r = relay("  header_timeout: 300ms\n  idle_timeout: 1s\n").await;
    let mut conn = Conn::open(&r).await;
    conn.send(HEALTH).await;
    assert_eq!(conn.answer().await.status, 200);
    // Idle for twice header_timeout: still well within idle_timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    conn.send(HEALTH).await;
    assert_eq!(
        conn.answer().await.status,
        200,
        "kept alive past header_timeout"
    );
    let idle = conn.closed_within(Duration::from_secs(5)).await;
    assert!(
        idle >= Duration::from_millis(700),
        "closed after idle_timeout, not header_timeout: {idle:?}"
    );
}

#[tokio::test]
async fn requests_beyond_max_in_flight_are_answered_503_with_retry_after_and_health_still_answers()
{
    let r = relay("  max_in_flight: 2\n  body_timeout: 30s\n  min_body_rate: 1\n").await;
    let body =
        serde_json::to_vec(&event("k-1", "contact.created", "jan@example.com")).expect("json");
    // Two requests held open deterministically: the relay's `100 Continue` says the handler
    // is reading the body, which then stops a few bytes in (30 s of credit at 1 B/s).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = Conn::open(&r).await;
        conn.send(&post_head(body.len(), "Expect: 100-continue\r\n"))
            .await;
        assert_eq!(conn.answer().await.status, 100);
        conn.send(&body[..30]).await;
        held.push(conn);
    }
    let post = || {
        r.http
            .post(format!("{}/v1/events", r.url))
            .bearer_auth(API_KEY)
            .json(&event("k-2", "contact.created", "eva@example.com"))
    };
    let resp = post().send().await.expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let answer: Value = resp.json().await.expect("json");
    assert_eq!(answer["error"]["code"], "overloaded");
    let (health, _) = r.send(r.http.get(format!("{}/health", r.url))).await;
    assert_eq!(health, 200, "/health is exempt from max_in_flight");
    // One held request finishes: its slot is free for the next caller.
    held[0].send(&body[30..]).await;
    assert_eq!(held[0].answer().await.status, 202);
    let (status, _) = r.send(post()).await;
    assert_eq!(status, 202);
}

/// Log lines written while the test runs (on this thread: the test's runtime is
/// single-threaded, so the relay's tasks log here too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer"))
            .matches(needle)
            .count()
    }

    /// Waits until the log satisfies `holds` (a line is not something to await); panics
    /// after PATIENCE.
    async fn eventually(&self, what: &str, holds: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !holds(self) {
            assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The log line of a relay holding `max_connections`.
const FULL: &str = "new ones wait in the listen backlog";
/// The log line of a relay back at half of `max_connections` or fewer.
const RECOVERED: &str = "connections are below server.max_connections again";

/// `n` connections, each past one request and kept alive.
async fn keep_alive(r: &TestRelay, n: usize) -> Vec<Conn> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut conn = Conn::open(r).await;
        conn.send(HEALTH).await;
        assert_eq!(conn.answer().await.status, 200);
        held.push(conn);
    }
    held
}

#[tokio::test]
async fn a_flood_beyond_max_connections_waits_in_the_backlog_while_the_held_ones_are_served_and_is_logged_once(
) {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let r = relay("  max_connections: 8\n  header_timeout: 10s\n  idle_timeout: 10s\n").await;
    let mut held = keep_alive(&r, 8).await;
    // Four more: the kernel completes their handshakes, the relay does not take them.
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut conn = Conn::open(&r).await;
        conn.send(HEALTH).await;
        waiting.spawn(async move { read_answer(&mut conn.reader).await.map(|a| a.status) });
    }
    let early = timeout(Duration::from_millis(300), waiting.join_next()).await;
    assert!(
        early.is_err(),
        "a connection beyond max_connections was served: {early:?}"
    );
    for conn in &mut held {
        conn.send(HEALTH).await;
        assert_eq!(
            conn.answer().await.status,
            200,
            "held connections keep being served"
        );
    }
    // One closes: one from the backlog is taken and answered.
    drop(held.pop());
    let first = timeout(PATIENCE, waiting.join_next())
        .await
        .expect("served");
    assert!(matches!(first, Some(Ok(Ok(200)))), "{first:?}");
    drop(held);
    while let Some(next) = timeout(PATIENCE, waiting.join_next())
        .await
        .expect("served")
    {
        assert!(matches!(next, Ok(Ok(200))), "{next:?}");
    }
    assert_eq!(log.count(FULL), 1, "said once, not per connection");
    // Recovered (at most half the connections held): the next flood is news again.
    log.eventually("the recovery is logged", |n| n.count(RECOVERED) == 1)
        .await;
    let _held = keep_alive(&r, 8).await;
    log.eventually("the second flood is logged", |n| n.count(FULL) == 2)
        .await;
}

#[tokio::test]
async fn stopping_closes_the_connections_between_requests_at_once_and_finishes_the_one_in_flight() {
    let r = relay("  header_timeout: 10s\n  idle_timeout: 10s\n  min_body_rate: 1\n").await;
    let body =
        serde_json::to_vec(&event("k-1", "contact.created", "jan@example.com")).expect("json");
    let mut idle = Conn::open(&r).await;
    idle.send(HEALTH).await;
    assert_eq!(idle.answer().await.status, 200);
    let mut half = Conn::open(&r).await;
    half.send(b"GET /health HTTP/1.1\r\n").await;
    let mut busy = Conn::open(&r).await;
    busy.send(&post_head(body.len(), "Expect: 100-continue\r\n"))
        .await;
    assert_eq!(busy.answer().await.status, 100);
    busy.send(&body[..30]).await;
    let stopping = tokio::spawn(r.stop());
    // Neither has a request under way: neither waits for its timeout (10 s).
    idle.closed_within(Duration::from_secs(2)).await;
    half.closed_within(Duration::from_secs(2)).await;
    assert!(!stopping.is_finished(), "a request is still in flight");
    busy.send(&body[30..]).await;
    assert_eq!(
        busy.answer().await.status,
        202,
        "the request in flight is answered"
    );
    timeout(PATIENCE, stopping)
        .await
        .expect("stopped in time")
        .expect("stop");
}
