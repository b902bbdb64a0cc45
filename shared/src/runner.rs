//! `relay serve`: the HTTP API and the render and dispatch workers in one process, on SQLite.

use crate::adapters::sqlite::{SqliteStore, SweepReport};
use crate::api::router::{router, AppState, Platform};
use crate::pipeline::dispatch::Dispatcher;
use crate::pipeline::inbound::Inbound;
use crate::pipeline::render::{RenderPorts, RenderResult, RenderStep};
use crate::ports::clock::Clock;
use crate::ports::queue::QueueName;
use crate::ports::{Credentials, Queue, StoreError, StoreHealth, Transport};
use crate::rules::config::Config;
use crate::telemetry::{StoreGauges, Telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// How many render jobs one pass takes.
const RENDER_BATCH: usize = 100;
/// How long a render pass that found fewer than `RENDER_BATCH` jobs waits for more. At a
/// steady 1 000 single events/s this cut the relay's CPU by a third (BENCHMARKS.md); the
/// delay is small beside the dispatch batch window.
const RENDER_WINDOW: Duration = Duration::from_millis(5);
/// How many dispatch jobs one pass takes: enough to fill a bulk call.
const DISPATCH_BATCH: usize = 1000;

/// What `start` needs.
pub struct RunnerOptions {
    /// The loaded config.
    pub config: Arc<Config>,
    /// Where the SQLite file lives.
    pub state_dir: PathBuf,
    /// Credentials and API keys.
    pub credentials: Arc<dyn Credentials>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The HTTP transport for deliveries.
    pub transport: Arc<dyn Transport>,
    /// The largest request body taken.
    pub body_limit: usize,
    /// How often idle workers look for due messages (retries, delayed jobs).
    pub poll_interval: Duration,
    /// A seed for retry jitter (tests), or `None` for entropy.
    pub seed: Option<u64>,
}

/// A running relay.
pub struct Relay {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// The store (for inspection).
    pub store: SqliteStore,
    /// What the dispatcher reports about each target; the API's status route reads it.
    pub telemetry: Arc<Telemetry>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Stops accepting, lets the calls in flight finish, stops the workers after their
    /// current pass, and returns when all is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        for w in self.workers {
            let _ = w.await;
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener has no address.
    #[error("the listener is unusable: {0}")]
    Listener(#[from] std::io::Error),
}

/// Opens the store and starts the API and the workers.
pub async fn start(listener: TcpListener, opts: RunnerOptions) -> Result<Relay, StartError> {
    let store = open_store(&opts)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(store.clone());
    let wakes = Wakes {
        render: Arc::new(Notify::new()),
        dispatch: Arc::new(Notify::new()),
    };
    let (stop, stop_rx) = watch::channel(false);
    // One recorder for the process: the API, the inbound step and the workers report into
    // it; `/metrics` and `/v1/status` read it.
    let gauges = StoreGauges {
        queue: shared.clone(),
        deliveries: shared.clone(),
    };
    let telemetry = Arc::new(Telemetry::for_config(&opts.config).with_gauges(Arc::new(gauges)));
    let state = Arc::new(AppState {
        config: opts.config.clone(),
        inbound: inbound(&opts, &shared, &wakes.render)
            .with_atomic(shared.clone())
            .with_telemetry(telemetry.clone()),
        events: shared.clone(),
        deliveries: shared.clone(),
        credentials: opts.credentials.clone(),
        clock: opts.clock.clone(),
        body_limit: opts.body_limit,
        seen_ids: Arc::new(crate::security::signature::MemorySeenIds::default()),
        store_health: Some(shared.clone()),
        queue: shared.clone(),
        telemetry: telemetry.clone(),
        platform: Platform::Local,
        status_cache: Default::default(),
    });
    let server = tokio::spawn(serve_api(listener, state, stop_rx));
    let workers = spawn_workers(&opts, &store, &wakes, &stop, &telemetry);
    Ok(Relay {
        addr,
        store,
        telemetry,
        stop,
        server,
        workers,
    })
}

/// What wakes the render and dispatch workers before their next poll.
struct Wakes {
    render: Arc<Notify>,
    dispatch: Arc<Notify>,
}

/// The inbound step on the local store, poking `wake` after an enqueue.
fn inbound(opts: &RunnerOptions, shared: &Arc<SqliteStore>, wake: &Arc<Notify>) -> Inbound {
    Inbound::new(
        shared.clone(),
        shared.clone(),
        opts.clock.clone(),
        Some(wake.clone()),
    )
    .with_event_retention(opts.config.retention.events.get())
}

/// Starts the render, dispatch, birthday and sweep workers; each stops when `stop` does.
fn spawn_workers(
    opts: &RunnerOptions,
    store: &SqliteStore,
    wakes: &Wakes,
    stop: &watch::Sender<bool>,
    telemetry: &Arc<Telemetry>,
) -> Vec<JoinHandle<()>> {
    let shared = Arc::new(store.clone());
    let render = RenderStep::new(
        opts.config.clone(),
        RenderPorts {
            deliveries: shared.clone(),
            queue: shared.clone(),
            timers: shared.clone(),
            contacts: shared.clone(),
        },
        opts.clock.clone(),
        Some(wakes.dispatch.clone()),
    )
    .with_atomic(shared.clone())
    .with_telemetry(telemetry.clone());
    let dispatcher = Dispatcher::new(
        opts.config.clone(),
        shared.clone(),
        shared.clone(),
        shared.clone(),
        opts.credentials.clone(),
        opts.transport.clone(),
        opts.clock.clone(),
        opts.seed,
    )
    .with_telemetry(telemetry.clone());
    let tick = opts
        .poll_interval
        .max(Duration::from_millis(10))
        .min(Duration::from_secs(1));
    vec![
        tokio::spawn(render_loop(
            render,
            store.clone(),
            wakes.render.clone(),
            stop.subscribe(),
            opts.poll_interval,
        )),
        tokio::spawn(dispatch_loop(
            dispatcher,
            store.clone(),
            wakes.dispatch.clone(),
            stop.subscribe(),
            opts.poll_interval,
            opts.config.delivery.batch_window.get(),
        )),
        tokio::spawn(birthday_loop(
            opts.config.clone(),
            store.clone(),
            inbound(opts, &shared, &wakes.render).with_telemetry(telemetry.clone()),
            opts.clock.clone(),
            stop.subscribe(),
            tick,
        )),
        tokio::spawn(sweep_loop(
            store.clone(),
            opts.clock.clone(),
            stop.subscribe(),
            tick,
        )),
    ]
}

/// Opens the store and takes back what the previous run left: messages it held, and
/// events it was still accepting.
fn open_store(opts: &RunnerOptions) -> Result<SqliteStore, StoreError> {
    let store = SqliteStore::open(&opts.state_dir, opts.clock.clone())?
        .with_retention(opts.config.retention.windows());
    let released = store.release_leases()?;
    let expired = store.expire_claims()?;
    if expired > 0 {
        tracing::info!(
            events = expired,
            "events interrupted while being accepted can be sent again"
        );
    }
    if released > 0 {
        tracing::info!(
            messages = released,
            "resuming work left by the previous run"
        );
    }
    Ok(store)
}

/// Serves the API within `server:` until `stop` turns true, letting the calls in flight
/// finish.
async fn serve_api(listener: TcpListener, state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let settings = state.config.server.clone();
    crate::api::serve::serve(listener, router(state), &settings, stop).await;
}

/// How often the sweeper deletes what has expired.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Deletes expired records every `SWEEP_EVERY` of clock time (so a fixed clock in tests
/// drives it), starting with one sweep at start. A failed sweep is logged once until one
/// succeeds again.
async fn sweep_loop(
    store: SqliteStore,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
    tick: Duration,
) {
    let mut next = clock.now_ms();
    let mut failing = false;
    loop {
        if clock.now_ms() >= next {
            next = clock.now_ms() + SWEEP_EVERY.as_millis() as i64;
            match store.sweep().await {
                Ok(r) => {
                    failing = false;
                    if r != SweepReport::default() {
                        tracing::info!(
                            deliveries = r.deliveries,
                            events = r.events,
                            timers = r.timers,
                            "expired records swept"
                        );
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot sweep expired records; will try again");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The key under which the date of the last birthday run is kept.
pub const LAST_BIRTHDAY_RUN: &str = "last_birthday_run";

/// Runs the birthday pass once a day, at `schedules.birthday_at` in `schedules.time_zone`.
/// The date of the last run is kept in the store, so a restart neither skips nor repeats a
/// day (and a repeat would be harmless: birthday events are idempotent).
async fn birthday_loop(
    config: Arc<Config>,
    store: SqliteStore,
    inbound: Inbound,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
    tick: Duration,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let local = clock.now().with_timezone(&config.schedules.time_zone);
        if local.time() < config.schedules.birthday_at {
            continue;
        }
        let today = local.date_naive().format("%Y-%m-%d").to_string();
        match store.meta(LAST_BIRTHDAY_RUN) {
            Ok(Some(last)) if last >= today => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read the last birthday run");
                continue;
            }
        }
        match crate::pipeline::birthdays::run_birthdays(
            local.date_naive(),
            &store,
            &inbound,
            clock.now(),
        )
        .await
        {
            Ok(_) => {
                if let Err(e) = store.set_meta(LAST_BIRTHDAY_RUN, &today) {
                    tracing::error!(error = %e, "cannot record the birthday run");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the birthday run failed; it will be tried again")
            }
        }
    }
}

/// Waits for a wake-up, the poll interval, or the stop signal; false when stopping.
/// Waits a poll interval (or until stopping); false when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, poll: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(poll) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

async fn idle(wake: &Notify, stop: &mut watch::Receiver<bool>, poll: Duration) -> bool {
    tokio::select! {
        _ = wake.notified() => true,
        _ = tokio::time::sleep(poll) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// When a pass found fewer than `max` messages, waits `window` (or until stopping) and takes
/// what arrived meanwhile.
async fn top_up(
    store: &SqliteStore,
    queue: QueueName,
    msgs: &mut Vec<crate::ports::queue::Message>,
    max: usize,
    visibility: Duration,
    window: Duration,
    stop: &mut watch::Receiver<bool>,
) {
    if msgs.len() >= max || window.is_zero() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(window) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    if let Ok(more) = store.receive(queue, max - msgs.len(), visibility).await {
        msgs.extend(more);
    }
}

/// Pauses a worker while the store refuses writes (a full disk): there is nowhere to record
/// what a pass would do, and a call whose outcome cannot be recorded could be made twice.
/// Says so once when it pauses and once when it resumes, and probes the store meanwhile.
struct WriteGate {
    worker: &'static str,
    queue: QueueName,
    paused: bool,
    /// A pass failed: the messages it held are made visible again before the next one, so
    /// they need not wait out their visibility timeout.
    held: bool,
}

impl WriteGate {
    fn new(worker: &'static str, queue: QueueName) -> Self {
        Self {
            worker,
            queue,
            paused: false,
            held: false,
        }
    }

    /// Whether the worker may run a pass now.
    async fn open(&mut self, store: &SqliteStore) -> bool {
        if self.paused || store.unwritable().is_some() {
            if let Err(e) = store.probe_write().await {
                self.fail(&e.to_string());
                return false;
            }
            if self.paused {
                tracing::info!(
                    worker = self.worker,
                    "the store takes writes again; resuming"
                );
            }
            self.paused = false;
        }
        if self.held {
            match store.release_leases_of(self.queue).await {
                Ok(_) => self.held = false,
                Err(e) => {
                    self.fail(&e.to_string());
                    return false;
                }
            }
        }
        true
    }

    /// A pass failed; if the store refuses writes, the worker pauses.
    fn failed_pass(&mut self, store: &SqliteStore) {
        self.held = true;
        if let Some(why) = store.unwritable() {
            self.fail(&why);
        }
    }

    /// Notes a store failure the worker met; logged once per outage.
    fn fail(&mut self, why: &str) {
        self.held = true;
        if !self.paused {
            tracing::error!(worker = self.worker, reason = %why,
                "the store refuses writes; pausing (no call is made while nothing can be recorded) until it takes them again");
        }
        self.paused = true;
    }
}

/// How a worker takes its passes from its queue.
struct Take {
    queue: QueueName,
    max: usize,
    visibility: Duration,
    window: Duration,
    poll: Duration,
}

/// What a worker does next.
enum Next {
    /// Stopping.
    Stop,
    /// Nothing to do this time (waited already).
    Again,
    /// A pass of messages.
    Batch(Vec<crate::ports::queue::Message>),
}

/// The next pass of a worker: none while the store refuses writes or the queue is empty
/// (after waiting), else what is due, topped up for `window`.
async fn next_batch(
    store: &SqliteStore,
    gate: &mut WriteGate,
    take: &Take,
    wake: &Notify,
    stop: &mut watch::Receiver<bool>,
) -> Next {
    if *stop.borrow() {
        return Next::Stop;
    }
    let waited = if !gate.open(store).await {
        pause(stop, take.poll).await
    } else {
        match store.receive(take.queue, take.max, take.visibility).await {
            Ok(mut msgs) if !msgs.is_empty() => {
                top_up(
                    store,
                    take.queue,
                    &mut msgs,
                    take.max,
                    take.visibility,
                    take.window,
                    stop,
                )
                .await;
                return Next::Batch(msgs);
            }
            Ok(_) => idle(wake, stop, take.poll).await,
            Err(e) => {
                gate.fail(&e.to_string());
                pause(stop, take.poll).await
            }
        }
    };
    if waited {
        Next::Again
    } else {
        Next::Stop
    }
}

async fn render_loop(
    step: RenderStep,
    store: SqliteStore,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    poll: Duration,
) {
    let mut gate = WriteGate::new("render", QueueName::Render);
    let take = Take {
        queue: QueueName::Render,
        max: RENDER_BATCH,
        visibility: Duration::from_secs(60),
        // Let a trickle fill the pass: each pass costs the same few writes whether it
        // carries 3 jobs or 100.
        window: RENDER_WINDOW,
        poll,
    };
    loop {
        let msgs = match next_batch(&store, &mut gate, &take, &wake, &mut stop).await {
            Next::Stop => return,
            Next::Again => continue,
            Next::Batch(m) => m,
        };
        // The pass's deliveries, timers, dispatch jobs and the deletion of its jobs share
        // one commit; on an error none is written, and the jobs are rendered again.
        match step.handle_and_ack(&msgs).await {
            Ok(results) => {
                for r in results {
                    if let RenderResult::Unreadable(why) = r {
                        tracing::error!(reason = %why, "dropping a poison render job");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "render failed; the jobs will be retried");
                gate.failed_pass(&store);
            }
        }
    }
}

async fn dispatch_loop(
    dispatcher: Dispatcher,
    store: SqliteStore,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    poll: Duration,
    batch_window: Duration,
) {
    let mut gate = WriteGate::new("dispatch", QueueName::Dispatch);
    let take = Take {
        queue: QueueName::Dispatch,
        max: DISPATCH_BATCH,
        visibility: dispatcher.visibility(),
        // Give a burst a moment to fill the bulk call.
        window: batch_window,
        poll,
    };
    loop {
        let msgs = match next_batch(&store, &mut gate, &take, &wake, &mut stop).await {
            Next::Stop => return,
            Next::Again => continue,
            Next::Batch(m) => m,
        };
        match dispatcher.handle(msgs).await {
            // The pass logs its own debug line (counts and where its time went).
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dispatch pass failed; its messages will be retried");
                gate.failed_pass(&store);
            }
        }
    }
}
