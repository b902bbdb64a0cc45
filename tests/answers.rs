//! Answers larger than the relay will read, over real sockets: the status line decides what
//! an answer means, the relay reads only the start of its body, closes the connection and
//! records the excerpt — an accepted call is never sent again because its body was long.

mod support;

use relay_shared::ports::store::DeliveryStore;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One rule, one `trigger_event` (not idempotent at SmartEmailing: a repeat fires again).
const TRIGGER: &str =
    "  - name: welcome\n    on: [contact.created]\n    actions: [trigger_event: {name: welcome}]\n";

/// 200 MB, the size of the answer in issue 19.
const HUGE: u64 = 200 * 1024 * 1024;

/// A block of body bytes, the size each write sends.
const BLOCK: usize = 64 * 1024;

/// How the fake endpoint answers every request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// This status, then a chunked body that never ends, as fast as the socket takes it.
    Endless(u16),
    /// This status with a `Content-Length` of 200 MB, and those bytes.
    Huge(u16),
    /// This status and a 100-byte body of which one byte comes every 100 ms, so the call's
    /// timeout passes before its end.
    Trickle(u16),
    /// This status and a `Content-Length` of 1 000, of which the start of an envelope comes
    /// before the connection is closed.
    Broken(u16),
    /// This status and a body of exactly the most the relay reads, whole.
    AtTheLimit(u16),
}

/// One request the endpoint answered, known once the connection carrying it has ended.
#[derive(Debug)]
struct Served {
    /// Path and query of the request.
    path: String,
    /// Body bytes written before the relay closed the connection (or the body ended).
    written: u64,
}

/// A plain TCP endpoint speaking just enough HTTP/1.1 to answer badly.
struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// Requests whose connections have ended, in order.
    served: mpsc::UnboundedReceiver<Served>,
    /// Paths of every request received so far.
    paths: Arc<Mutex<Vec<String>>>,
}

impl Endpoint {
    async fn start(answer: Answer) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, served) = mpsc::unbounded_channel();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, seen) = (tx.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Some(served) = serve(stream, answer, &seen).await {
                        let _ = tx.send(served);
                    }
                });
            }
        });
        Endpoint { url, served, paths }
    }

    /// The next request whose connection has ended; panics after PATIENCE.
    async fn next_served(&mut self) -> Served {
        tokio::time::timeout(PATIENCE, self.served.recv())
            .await
            .expect("the relay never let go of a connection")
            .expect("the endpoint stopped")
    }

    /// Paths of the requests received so far.
    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }
}

/// Reads one request and answers it; `None` when no whole request came.
async fn serve(mut stream: TcpStream, answer: Answer, seen: &Mutex<Vec<String>>) -> Option<Served> {
    let path = read_request(&mut stream).await?;
    seen.lock().expect("paths").push(path.clone());
    let written = match answer {
        Answer::Endless(status) => {
            let head = format!("HTTP/1.1 {status} X\r\ntransfer-encoding: chunked\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut chunk = format!("{BLOCK:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', BLOCK));
            chunk.extend_from_slice(b"\r\n");
            let mut written = 0;
            while stream.write_all(&chunk).await.is_ok() {
                written += BLOCK as u64;
            }
            written
        }
        Answer::Huge(status) => {
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {HUGE}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            let block = vec![b'<'; BLOCK];
            let mut written = 0;
            while written < HUGE && stream.write_all(&block).await.is_ok() {
                written += BLOCK as u64;
            }
            written
        }
        Answer::Trickle(status) => {
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 100\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            let mut written = 0;
            while written < 100 && stream.write_all(b"{").await.is_ok() {
                written += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            written
        }
        Answer::Broken(status) => {
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 1000\r\n\r\n");
            let start = br#"{"status":"created","meta":"#;
            stream.write_all(head.as_bytes()).await.ok()?;
            stream.write_all(start).await.ok()?;
            start.len() as u64
        }
        Answer::AtTheLimit(status) => {
            let limit = relay_shared::adapters::reqwest::MAX_ANSWER_BYTES;
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {limit}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            stream.write_all(&vec![b' '; limit]).await.ok()?;
            limit as u64
        }
    };
    Some(Served { path, written })
}

/// Reads a request head and its `content-length` body; returns the path.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    head.split_whitespace().nth(1).map(str::to_string)
}

/// A relay whose calls go to the endpoint, with the call timeout given.
async fn relay(endpoint: &Endpoint, timeout: &str, rules: &str) -> TestRelay {
    let yaml =
        config_yaml(&endpoint.url, rules).replace("timeout: 2s", &format!("timeout: {timeout}"));
    TestRelay::start(&yaml, bundle(true)).await
}

/// Posts a `contact.created` event and waits until its one delivery is final: the delivery
/// as the API shows it, and the excerpt of the last answer as the store recorded it.
async fn deliver(r: &TestRelay, id: &str) -> (Value, String) {
    let (s, body) = r
        .post(
            "/v1/events",
            &event(id, "contact.created", "jan@example.com"),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let shown = r.wait_settled(id, 1).await.remove(0);
    let mut stored = r.relay().store.for_event(id).await.expect("store");
    assert_eq!(stored.len(), 1, "{stored:?}");
    let excerpt = stored
        .remove(0)
        .last_response
        .expect("an excerpt is recorded");
    (shown, excerpt)
}

/// Checks that an excerpt starts with the status and the body's start, ends saying why the
/// rest of the body was not read, and stays short.
fn assert_cut_excerpt(excerpt: &str, start: &str, why: &str) {
    assert!(excerpt.starts_with(start), "{excerpt}");
    assert!(excerpt.ends_with(&format!("[{why}]")), "{excerpt}");
    assert!(excerpt.len() < 1000, "not bounded: {} bytes", excerpt.len());
}

/// Checks a delivery's final status and how many attempts it took.
fn assert_final(delivery: &Value, status: &str, attempts: u64) {
    assert_eq!(delivery["status"], status, "{delivery}");
    assert_eq!(delivery["attempts"], attempts, "{delivery}");
}

/// What the relay records when it stops reading at its limit.
const TOO_LONG: &str = "body not read past 65536 bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_call_with_an_endless_body_is_sent_once_without_waiting_for_the_timeout() {
    let mut se = Endpoint::start(Answer::Endless(201)).await;
    // A call timeout far longer than the test's patience: waiting for it would fail the test.
    let r = relay(&se, "120s", TRIGGER).await;
    let started = Instant::now();
    let (d, excerpt) = deliver(&r, "big-1").await;
    assert_final(&d, "sent", 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_cut_excerpt(&excerpt, "201 xxxx", TOO_LONG);
    // The relay closed the connection after the start of the body, and sent once.
    let served = se.next_served().await;
    assert!(served.path.ends_with("/trigger-event"), "{served:?}");
    assert!(served.written < HUGE / 4, "{served:?}");
    assert_eq!(se.paths().len(), 1, "{:?}", se.paths());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answered_200_with_an_endless_body_is_sent_once() {
    let mut target = Endpoint::start(Answer::Endless(200)).await;
    let rules = format!(
        "  - name: hook\n    on: [contact.created]\n    actions:\n      - webhook:\n          url: \"{}/collect\"\n          body: {{email: \"{{{{ contact.email }}}}\"}}\n",
        target.url
    );
    let r = relay(&target, "120s", &rules).await;
    let (d, excerpt) = deliver(&r, "hook-1").await;
    assert_final(&d, "sent", 1);
    assert_cut_excerpt(&excerpt, "200 xxxx", TOO_LONG);
    assert_eq!(target.next_served().await.path, "/collect");
    assert_eq!(target.paths().len(), 1, "{:?}", target.paths());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_with_a_huge_body_is_retried_with_a_bounded_excerpt() {
    let mut se = Endpoint::start(Answer::Huge(500)).await;
    let r = relay(&se, "120s", TRIGGER).await;
    let (d, excerpt) = deliver(&r, "big-5").await;
    // The test config's schedule allows one attempt and three retries.
    assert_final(&d, "dead", 4);
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("the target answered 500"), "{error}");
    assert_cut_excerpt(&excerpt, "500 <<<<", TOO_LONG);
    for _ in 0..4 {
        let served = se.next_served().await;
        assert!(served.written < HUGE / 4, "{served:?}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickling_past_the_timeout_after_a_201_is_sent_not_timed_out() {
    let mut se = Endpoint::start(Answer::Trickle(201)).await;
    // The body would take 10 s; the call may take 2.
    let r = relay(&se, "2s", TRIGGER).await;
    let (d, excerpt) = deliver(&r, "slow-1").await;
    assert_final(&d, "sent", 1);
    assert_cut_excerpt(&excerpt, "201 {", "rest of the body not read: timed out");
    assert!(se.next_served().await.written < 100);
    assert_eq!(se.paths().len(), 1, "{:?}", se.paths());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_whose_connection_breaks_in_the_body_is_sent_with_a_note() {
    let mut se = Endpoint::start(Answer::Broken(201)).await;
    let r = relay(&se, "120s", TRIGGER).await;
    let (d, excerpt) = deliver(&r, "cut-1").await;
    assert_final(&d, "sent", 1);
    assert!(
        excerpt.starts_with(r#"201 {"status":"created""#),
        "{excerpt}"
    );
    assert!(
        excerpt.contains("[rest of the body not read: connection failed"),
        "{excerpt}"
    );
    se.next_served().await;
    assert_eq!(se.paths().len(), 1, "{:?}", se.paths());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exactly_the_limit_is_read_whole() {
    let se = Endpoint::start(Answer::AtTheLimit(201)).await;
    let r = relay(&se, "120s", TRIGGER).await;
    let (d, excerpt) = deliver(&r, "limit-1").await;
    assert_final(&d, "sent", 1);
    assert!(excerpt.starts_with("201    "), "{excerpt}");
    assert!(!excerpt.contains('['), "not cut: {excerpt}");
    r.stop().await;
}
