//! Load test of `relay serve` end to end, and of the obvious implementation beside it.
//!
//! A strict fake SmartEmailing (the tests' own) listens on loopback; `relay serve` (the
//! release binary) runs the example config pointed at it, with `max_requests_per_second`
//! raised so pacing does not cap the run and the default 200 ms batch window. Events are
//! `contact.created`: the `welcome` rule upserts the contact (`/import`) and fires the
//! `welcome` trigger (`/trigger-event`) and schedules two follow-ups days later.
//!
//! Scenarios, each on a fresh relay and a fresh fake:
//! - `batch100`: N events in batches of 100, a few requests in flight;
//! - `batch500`: the same in batches of 500 (issue 16's measurement);
//! - `batch1`: one event per request, many in flight;
//! - `rate1000`: one event per request at a fixed offered rate of 1000 events/s (open loop;
//!   latency counts from the moment a request was due, so a stall is not hidden).
//!
//! The baseline runs the same scenarios against the obvious implementation, built into this
//! harness: accept a request, validate and render it with the same core code, call
//! SmartEmailing once per delivery, synchronously, then answer. No store, no queue, no
//! coalescing.
//!
//! `cargo bench --bench load` (or `scripts/bench`). Results: JSON lines in
//! `$BENCH_RESULTS_DIR/load.jsonl` (default `target/bench-results`). `LOAD_EVENTS` sets N for
//! the throughput scenarios (default 20 000), `LOAD_SECONDS` the length of `rate1000` (10),
//! `LOAD_RELAY_LOG` the relay's `RUST_LOG`, its log kept as `relay-<scenario>.log` there.

#[path = "../tests/support/fake_smartemailing.rs"]
mod fake_smartemailing;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use fake_smartemailing::FakeSmartEmailing;
use relay_shared::domain::delivery::Prepared;
use relay_shared::domain::event::parse_submission;
use relay_shared::rules::config::Config;
use relay_shared::rules::render::render_event;
use relay_shared::security::limits::{check_json, InputLimits};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SE_USER: &str = "bench@example.com";
const SE_KEY: &str = "se-bench-key";
const API_KEY: &str = "bench-api-key";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The example config, pointed at the fake, with pacing out of the way.
fn bench_config(base_url: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo().join("config/relay.yaml"))?;
    let replaced = text
        .replace(
            "base_url: https://app.smartemailing.cz/api/v3",
            &format!("base_url: {base_url}"),
        )
        .replace(
            "max_requests_per_second: 10 ",
            "max_requests_per_second: 1000 ",
        )
        .replace("allow_loopback_http: false", "allow_loopback_http: true");
    if !replaced.contains("max_requests_per_second: 1000")
        || !replaced.contains(base_url)
        || !replaced.contains("batch_window: 200ms")
    {
        bail!("config/relay.yaml changed shape; update bench_config");
    }
    Ok(replaced)
}

fn event(run: &str, i: usize) -> Value {
    json!({
        "id": format!("{run}-{i}"),
        "type": "contact.created",
        "contact": {
            "email": format!("u{i}.{run}@example.com"),
            "first_name": "Jan",
            "last_name": "Novák",
            "language": "cs_CZ",
            "custom_fields": {"tier": "gold"}
        },
        "data": {"source": "load"}
    })
}

fn body(run: &str, from: usize, n: usize) -> Vec<u8> {
    let v = if n == 1 {
        event(run, from)
    } else {
        json!({"events": (from..from + n).map(|i| event(run, i)).collect::<Vec<_>>()})
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state; utime and stime
    // are the 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Something that takes `POST /v1/events`: `relay serve` in a child process, or the baseline.
enum Target {
    Relay {
        child: Child,
        _dir: tempfile::TempDir,
    },
    Naive {
        server: tokio::task::JoinHandle<()>,
    },
}

impl Target {
    fn pid(&self) -> Option<u32> {
        match self {
            Target::Relay { child, .. } => Some(child.id()),
            Target::Naive { .. } => None,
        }
    }

    fn stop(self) {
        match self {
            Target::Relay { mut child, .. } => {
                // SIGTERM first (a profiler wrapping the relay then writes its data), then
                // SIGKILL if it has not exited within five seconds.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                for _ in 0..50 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Target::Naive { server } => server.abort(),
        }
    }
}

/// Where the relay's log goes and at what level: `warn` into its temporary directory, or,
/// with `LOAD_RELAY_LOG` set (a `RUST_LOG` filter, e.g.
/// `warn,relay_shared::pipeline::dispatch=debug` for each dispatch pass's timings), into
/// `relay-<scenario>.log` beside the results.
fn relay_log(dir: &Path, scenario: &str) -> (PathBuf, String) {
    match std::env::var("LOAD_RELAY_LOG") {
        Ok(filter) if !filter.trim().is_empty() => {
            (results_dir().join(format!("relay-{scenario}.log")), filter)
        }
        _ => (dir.join("relay.log"), "warn".to_string()),
    }
}

fn results_dir() -> PathBuf {
    std::env::var("BENCH_RESULTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/bench-results"))
}

async fn start_relay(
    se: &FakeSmartEmailing,
    relay_bin: &Path,
    scenario: &str,
) -> anyhow::Result<(Target, String)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("relay.yaml");
    std::fs::write(&config, bench_config(&se.base_url())?)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (log_path, log_filter) = relay_log(dir.path(), scenario);
    let log = std::fs::File::create(log_path)?;
    let child = Command::new(relay_bin)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--state"])
        .arg(dir.path().join("state"))
        .env("RELAY_API_KEYS", API_KEY)
        .env("SMARTEMAILING_USERNAME", SE_USER)
        .env("SMARTEMAILING_API_KEY", SE_KEY)
        .env("SMARTEMAILING_API_URL", se.base_url())
        .env("RUST_LOG", log_filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", relay_bin.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{url}/health")).send().await {
            if r.status() == 200 {
                return Ok((Target::Relay { child, _dir: dir }, url));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("relay serve did not come up; see its log")
}

/// The obvious implementation: validate, render, one SmartEmailing call per delivery, answer.
struct Naive {
    config: Config,
    se: reqwest::Client,
    base: String,
}

async fn naive_events(State(n): State<Arc<Naive>>, bytes: Bytes) -> (StatusCode, Json<Value>) {
    let value = match check_json(&bytes, &InputLimits::default()) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
        }
    };
    let now = chrono::Utc::now();
    let subs = match parse_submission(value, now) {
        Ok(s) => s,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
        }
    };
    let mut results = Vec::with_capacity(subs.len());
    for s in &subs {
        for r in render_event(&n.config, &s.event, None, now) {
            if let Ok(Prepared::SmartEmailing {
                endpoint,
                group,
                item,
            }) = r.result
            {
                let call =
                    n.se.post(format!("{}{}", n.base, endpoint.path()))
                        .basic_auth(SE_USER, Some(SE_KEY))
                        .json(&endpoint.body(&group, vec![item]))
                        .send()
                        .await;
                if !matches!(&call, Ok(resp) if resp.status().is_success()) {
                    return (
                        StatusCode::BAD_GATEWAY,
                        Json(json!({"error": "SmartEmailing refused"})),
                    );
                }
            }
        }
        results.push(json!({"id": s.event.id, "status": "accepted"}));
    }
    (StatusCode::ACCEPTED, Json(json!({"results": results})))
}

async fn start_naive(se: &FakeSmartEmailing) -> anyhow::Result<(Target, String)> {
    let mut config = Config::parse(&bench_config(&se.base_url())?, "config/relay.yaml (bench)")?;
    config.override_base_url(&se.base_url());
    let state = Arc::new(Naive {
        config,
        se: reqwest::Client::new(),
        base: se.base_url(),
    });
    let app = Router::new()
        .route("/v1/events", post(naive_events))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((Target::Naive { server }, url))
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `n` events in requests of `batch`, `inflight` requests at a time.
    Closed {
        n: usize,
        batch: usize,
        inflight: usize,
    },
    /// One event per request at `rate` per second for `seconds`.
    Open { rate: usize, seconds: usize },
}

struct Sent {
    latencies_ms: Vec<f64>,
    errors: usize,
    events: usize,
    elapsed: Duration,
}

async fn post_one(http: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    http.post(format!("{url}/v1/events"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map(|r| r.status() == 202)
        .unwrap_or(false)
}

async fn drive(url: &str, run: &str, shape: Shape) -> Sent {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let t0 = Instant::now();
    match shape {
        Shape::Closed { n, batch, inflight } => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..inflight {
                let (http, url, run, next) =
                    (http.clone(), url.to_string(), run.to_string(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0;
                    loop {
                        let from = next.fetch_add(batch, Ordering::Relaxed);
                        if from >= n {
                            break;
                        }
                        let b = body(&run, from, batch.min(n - from));
                        let start = Instant::now();
                        if !post_one(&http, &url, b).await {
                            errors += 1;
                        }
                        lat.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    (lat, errors)
                }));
            }
            let mut latencies_ms = Vec::new();
            let mut errors = 0;
            for t in tasks {
                if let Ok((l, e)) = t.await {
                    latencies_ms.extend(l);
                    errors += e;
                }
            }
            Sent {
                latencies_ms,
                errors,
                events: n,
                elapsed: t0.elapsed(),
            }
        }
        Shape::Open { rate, seconds } => {
            let n = rate * seconds;
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let due = t0 + period * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let (http, url, b) = (http.clone(), url.to_string(), body(run, i, 1));
                tasks.push(tokio::spawn(async move {
                    let ok = post_one(&http, &url, b).await;
                    // From when the request was due, so a stalled sender is not hidden.
                    (due.elapsed().as_secs_f64() * 1e3, ok)
                }));
            }
            let mut latencies_ms = Vec::with_capacity(n);
            let mut errors = 0;
            for t in tasks {
                if let Ok((l, ok)) = t.await {
                    latencies_ms.push(l);
                    errors += usize::from(!ok);
                }
            }
            Sent {
                latencies_ms,
                errors,
                events: n,
                elapsed: t0.elapsed(),
            }
        }
    }
}

/// Events per request.
fn batch_of(shape: Shape) -> usize {
    match shape {
        Shape::Closed { batch, .. } => batch,
        Shape::Open { .. } => 1,
    }
}

async fn scenario(name: &str, imp: &str, shape: Shape, relay_bin: &Path) -> anyhow::Result<Value> {
    let se = FakeSmartEmailing::start(SE_USER, SE_KEY).await;
    let (target, url) = match imp {
        "relay" => start_relay(&se, relay_bin, name).await?,
        _ => start_naive(&se).await?,
    };
    let run = format!("{imp}-{name}-{}", std::process::id());
    let t0 = Instant::now();
    let sent = drive(&url, &run, shape).await;
    let accepted_s = sent.elapsed.as_secs_f64();
    // The baseline has delivered everything once it has answered; the fake's wait would
    // re-count every item on each of its thousands of calls, so it is only used for the relay.
    let all = match target {
        Target::Relay { .. } => {
            // A request that got no 202 (an overloaded machine) has events that may never
            // come: wait for the accepted ones, not five minutes for the rest.
            let accepted =
                sent.events - sent.errors.saturating_mul(batch_of(shape)).min(sent.events);
            se.wait_for_items("/trigger-event", accepted, Duration::from_secs(300))
                .await
        }
        Target::Naive { .. } => se.triggered_events().len() >= sent.events,
    };
    let delivered_s = t0.elapsed().as_secs_f64();
    let rss = target.pid().and_then(peak_rss_kib);
    let cpu = target.pid().and_then(cpu_seconds);
    target.stop();
    let requests = se.requests();
    let triggers = se.triggered_events().len();
    let trigger_calls = se.calls_to("/trigger-event");
    let refused = requests.iter().filter(|r| !r.is_accepted()).count();
    se.shutdown();
    let mut lat = sent.latencies_ms;
    lat.sort_by(f64::total_cmp);
    let (batch, offered) = match shape {
        Shape::Closed { batch, .. } => (batch, Value::Null),
        Shape::Open { rate, .. } => (1, json!(rate)),
    };
    let result = json!({
        "bench": "load",
        "impl": imp,
        "scenario": name,
        "events": sent.events,
        "batch": batch,
        "offered_events_per_s": offered,
        "http_errors": sent.errors,
        "accepted_events_per_s": sent.events as f64 / accepted_s,
        "delivered_all": all,
        "delivered_trigger_events": triggers,
        "delivered_events_per_s": if all { json!(triggers as f64 / delivered_s) } else { Value::Null },
        "accept_latency_ms": {
            "p50": percentile(&lat, 50.0),
            "p90": percentile(&lat, 90.0),
            "p99": percentile(&lat, 99.0),
            "max": lat.last().copied().unwrap_or(f64::NAN),
        },
        "se_calls_total": requests.len(),
        "se_calls_refused": refused,
        "se_trigger_calls_per_1000_trigger_events": if triggers > 0 { json!(trigger_calls as f64 * 1000.0 / triggers as f64) } else { Value::Null },
        "se_calls_per_1000_events": requests.len() as f64 * 1000.0 / sent.events as f64,
        "peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
        "relay_cpu_s": cpu,
        "wall_s": delivered_s,
        "load_avg_1m": load_avg(),
    });
    Ok(result)
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; filters may follow: `relay`, `batch1`, `naive/rate1000`.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let relay_bin = std::env::var("RELAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_relay")));
    let out_dir = results_dir();
    std::fs::create_dir_all(&out_dir)?;
    let out_path = out_dir.join("load.jsonl");
    let mut out = std::fs::File::create(&out_path)?;
    let n = env_usize("LOAD_EVENTS", 20_000);
    let seconds = env_usize("LOAD_SECONDS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scenarios = [
        (
            "batch100",
            Shape::Closed {
                n,
                batch: 100,
                inflight: 4,
            },
        ),
        (
            // The measurement: 20 000 trigger events in batches of 500.
            "batch500",
            Shape::Closed {
                n,
                batch: 500,
                inflight: 4,
            },
        ),
        (
            "batch1",
            Shape::Closed {
                n: n / 4,
                batch: 1,
                inflight: 32,
            },
        ),
        (
            "rate1000",
            Shape::Open {
                rate: 1000,
                seconds,
            },
        ),
    ];
    eprintln!(
        "relay: {}; results: {}",
        relay_bin.display(),
        out_path.display()
    );
    for (name, shape) in scenarios {
        for imp in ["relay", "naive"] {
            let key = format!("{imp}/{name}");
            if !filter.is_empty() && !filter.iter().any(|f| f == &key || f == imp || f == name) {
                continue;
            }
            let r = rt.block_on(scenario(name, imp, shape, &relay_bin))?;
            eprintln!("{key}: {r}");
            writeln!(out, "{r}")?;
        }
    }
    Ok(())
}
