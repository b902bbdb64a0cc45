//! The Lambda shape: each function's release binary size (and zipped), its cold-start init
//! (process start to its first `GET /runtime/invocation/next` against a local runtime API)
//! and its warm invoke time for each fixture of `events/aws/`.
//!
//! The binaries are `cargo lambda build --release --x86-64`'s (`$LAMBDA_DIR/<fn>/bootstrap`,
//! default `target/lambda`). The AWS clients are pointed at `AWS_ENDPOINT_URL`: the moto
//! emulator `scripts/bench` starts (with the table, queues and secret named by `TABLE_NAME`,
//! `RENDER_QUEUE_URL`, `DISPATCH_QUEUE_URL`, `SECRET_ID`), so warm invokes do real (emulated)
//! DynamoDB, SQS and Secrets Manager calls. Without `AWS_ENDPOINT_URL` the clients point at
//! a dead loopback port: init is still measured (no function calls AWS before it is ready),
//! the warm invokes are skipped.
//!
//! `cargo bench --bench lambda`. Results: JSON lines in `$BENCH_RESULTS_DIR/lambda.jsonl`.

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};

/// Cold starts per function.
const COLD_SAMPLES: usize = 10;
/// Warm invokes per fixture (the first is reported apart: it opens the AWS connections).
const WARM_SAMPLES: usize = 10;

const FUNCTIONS: [(&str, &[&str]); 4] = [
    (
        "relay-inbound",
        &[
            "apigw-post-event.json",
            "apigw-get-event.json",
            "apigw-smartemailing-webhook.json",
        ],
    ),
    ("relay-render", &["sqs-render-batch.json"]),
    ("relay-dispatch", &["sqs-dispatch-batch.json"]),
    (
        "relay-scheduler",
        &[
            "eventbridge-scheduled-event.json",
            "scheduler-birthdays.json",
        ],
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the fake runtime API saw.
enum Seen {
    /// The first `GET /next`.
    Ready(Instant),
    /// A `POST /response` or `/error` for an invocation.
    Done { ok: bool, at: Instant, body: String },
    /// `POST /runtime/init/error`.
    InitError(String),
}

struct Runtime {
    /// Invocations to hand out: the event and a slot for when it was handed out.
    invocations: Mutex<mpsc::Receiver<(Value, tokio::sync::oneshot::Sender<Instant>)>>,
    seen: mpsc::UnboundedSender<Seen>,
    ready_sent: std::sync::atomic::AtomicBool,
    next_id: std::sync::atomic::AtomicU64,
}

async fn next(State(rt): State<Arc<Runtime>>) -> Response {
    if !rt
        .ready_sent
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        let _ = rt.seen.send(Seen::Ready(Instant::now()));
    }
    let Some((event, handed)) = rt.invocations.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let id = format!(
        "req-{}",
        rt.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let mut h = HeaderMap::new();
    let deadline = (chrono::Utc::now().timestamp_millis() + 60_000).to_string();
    for (k, v) in [
        ("lambda-runtime-aws-request-id", id.as_str()),
        ("lambda-runtime-deadline-ms", deadline.as_str()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:eu-central-1:123456789012:function:bench",
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000",
        ),
        ("content-type", "application/json"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    let _ = handed.send(Instant::now());
    (h, event.to_string()).into_response()
}

async fn done(
    State(rt): State<Arc<Runtime>>,
    UrlPath((_id, kind)): UrlPath<(String, String)>,
    body: Bytes,
) -> StatusCode {
    let _ = rt.seen.send(Seen::Done {
        ok: kind == "response",
        at: Instant::now(),
        body: String::from_utf8_lossy(&body).chars().take(300).collect(),
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(rt): State<Arc<Runtime>>, body: Bytes) -> StatusCode {
    let _ = rt
        .seen
        .send(Seen::InitError(String::from_utf8_lossy(&body).into()));
    StatusCode::ACCEPTED
}

struct Harness {
    addr: std::net::SocketAddr,
    invoke: mpsc::Sender<(Value, tokio::sync::oneshot::Sender<Instant>)>,
    seen: mpsc::UnboundedReceiver<Seen>,
    server: tokio::task::JoinHandle<()>,
}

async fn runtime_api() -> anyhow::Result<Harness> {
    let (invoke, invocations) = mpsc::channel(1);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let rt = Arc::new(Runtime {
        invocations: Mutex::new(invocations),
        seen: seen_tx,
        ready_sent: false.into(),
        next_id: 0.into(),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(done))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Harness {
        addr,
        invoke,
        seen,
        server,
    })
}

fn dead_port() -> u16 {
    // Bound and released: nothing listens there for the length of the run.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9)
}

fn command(bin: &Path, function: &str, runtime: std::net::SocketAddr, aws: &AwsEnv) -> Command {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "eu-central-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", &aws.endpoint)
        .env("TABLE_NAME", &aws.table)
        .env("RENDER_QUEUE_URL", &aws.render_queue)
        .env("DISPATCH_QUEUE_URL", &aws.dispatch_queue)
        .env("SECRET_ID", &aws.secret);
    for optional in ["RENDER_DLQ_URL", "DISPATCH_DLQ_URL"] {
        if let Ok(v) = std::env::var(optional) {
            c.env(optional, v);
        }
    }
    c.env(
        "SMARTEMAILING_API_URL",
        format!("http://127.0.0.1:{}/api/v3", dead_port()),
    )
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

struct AwsEnv {
    endpoint: String,
    live: bool,
    table: String,
    render_queue: String,
    dispatch_queue: String,
    secret: String,
}

impl AwsEnv {
    fn from_env() -> Self {
        let get = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|v| !v.is_empty());
        AwsEnv {
            live: endpoint.is_some(),
            endpoint: endpoint.unwrap_or_else(|| format!("http://127.0.0.1:{}", dead_port())),
            table: get("TABLE_NAME", "relay-bench"),
            render_queue: get("RENDER_QUEUE_URL", "http://127.0.0.1:9/render"),
            dispatch_queue: get("DISPATCH_QUEUE_URL", "http://127.0.0.1:9/dispatch"),
            secret: get("SECRET_ID", "relay-bench"),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Spawns the bootstrap and waits for its first `GET /next`; milliseconds from spawn.
async fn cold_start(
    bin: &Path,
    function: &str,
    aws: &AwsEnv,
) -> anyhow::Result<(f64, Harness, std::process::Child)> {
    let mut h = runtime_api().await?;
    let t0 = Instant::now();
    let child = command(bin, function, h.addr, aws)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    match tokio::time::timeout(Duration::from_secs(20), h.seen.recv()).await {
        Ok(Some(Seen::Ready(at))) => Ok(((at - t0).as_secs_f64() * 1e3, h, child)),
        Ok(Some(Seen::InitError(e))) => bail!("{function}: init error: {e}"),
        _ => bail!("{function}: no request to the runtime API within 20 s"),
    }
}

async fn invoke(h: &mut Harness, event: &Value) -> anyhow::Result<(f64, bool, String)> {
    let (handed_tx, handed_rx) = tokio::sync::oneshot::channel();
    h.invoke.send((event.clone(), handed_tx)).await?;
    let handed = handed_rx.await?;
    match tokio::time::timeout(Duration::from_secs(60), h.seen.recv()).await {
        Ok(Some(Seen::Done { ok, at, body })) => Ok(((at - handed).as_secs_f64() * 1e3, ok, body)),
        _ => bail!("no answer to an invocation within 60 s"),
    }
}

/// CPU time the process has had, every thread summed (`schedstat`: nanoseconds, unlike the
/// 10 ms ticks of `stat`), for a warm invoke's own CPU: what Lambda's share of a vCPU at a
/// given memory size stretches.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The process's peak resident set (`VmHWM`), in KiB: what must fit in the function's memory.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn zipped_size(bin: &Path) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir()?;
    let zip = dir.path().join("fn.zip");
    let status = Command::new("zip")
        .args(["-q", "-9", "-j"])
        .arg(&zip)
        .arg(bin)
        .status()
        .context("running zip")?;
    if !status.success() {
        bail!("zip failed");
    }
    Ok(std::fs::metadata(&zip)?.len())
}

async fn measure(
    function: &str,
    fixtures: &[&str],
    bin: &Path,
    aws: &AwsEnv,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let size = std::fs::metadata(bin)?.len();
    let zipped = zipped_size(bin)?;
    let mut inits = Vec::new();
    for _ in 0..COLD_SAMPLES {
        let (ms, h, mut child) = cold_start(bin, function, aws).await?;
        inits.push(ms);
        let _ = child.kill();
        let _ = child.wait();
        h.server.abort();
    }
    let init_max = inits.iter().copied().fold(f64::NAN, f64::max);
    let init_median = median(&mut inits);
    out.push(json!({
        "bench": "lambda",
        "function": function,
        "binary_bytes": size,
        "zipped_bytes": zipped,
        "init_ms_median": init_median,
        "init_ms_max": init_max,
        "init_samples": COLD_SAMPLES,
    }));
    if !aws.live {
        return Ok(out);
    }
    for fixture in fixtures {
        let path = repo().join("events/aws").join(fixture);
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| path.display().to_string())?;
        // A fresh container per fixture: the first invoke after init is the one that opens
        // the connections to the (emulated) AWS services.
        let (_, mut h, mut child) = cold_start(bin, function, aws).await?;
        let (first, first_ok, first_body) = invoke(&mut h, &event).await?;
        let mut warm = Vec::new();
        let mut cpu = Vec::new();
        let mut oks = usize::from(first_ok);
        for _ in 0..WARM_SAMPLES {
            let before = cpu_ns(child.id());
            let (ms, ok, _) = invoke(&mut h, &event).await?;
            cpu.push((cpu_ns(child.id()) - before) as f64 / 1e6);
            warm.push(ms);
            oks += usize::from(ok);
        }
        let peak_rss_kib = peak_rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        h.server.abort();
        let warm_max = warm.iter().copied().fold(f64::NAN, f64::max);
        out.push(json!({
            "bench": "lambda_invoke",
            "function": function,
            "fixture": fixture,
            "first_invoke_ms": first,
            "warm_invoke_ms_median": median(&mut warm),
            "warm_invoke_ms_max": warm_max,
            "warm_samples": WARM_SAMPLES,
            "warm_cpu_ms_median": median(&mut cpu),
            "peak_rss_kib": peak_rss_kib,
            "answered_ok": oks,
            "first_answer": first_body,
            "backend": "moto (local AWS emulator)",
        }));
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let lambda_dir = std::env::var("LAMBDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/lambda"));
    let out_dir = std::env::var("BENCH_RESULTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/bench-results"));
    std::fs::create_dir_all(&out_dir)?;
    let out_path = out_dir.join("lambda.jsonl");
    let mut out = std::fs::File::create(&out_path)?;
    let aws = AwsEnv::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for (function, fixtures) in FUNCTIONS {
        let bin = lambda_dir.join(function).join("bootstrap");
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo lambda build --release --x86-64` first (scripts/bench does)",
                bin.display()
            );
        }
        for r in rt.block_on(measure(function, fixtures, &bin, &aws))? {
            eprintln!("{r}");
            writeln!(out, "{r}")?;
        }
    }
    Ok(())
}
