//! One SQLite file holding the events (idempotency records), the deliveries and the two
//! queues, with the same semantics as the DynamoDB table and the SQS queues on AWS.

use crate::domain::delivery::{Attempt, DeliveryId, DeliveryRecord, DeliveryStatus, Prepared};
use crate::domain::event::EventId;
use crate::domain::idempotency::{Begin, EventRecord, RecordStatus};
use crate::domain::retention::Retention;
use crate::ports::clock::Clock;
use crate::ports::queue::{Message, QueueName};
use crate::ports::store::{DeliveryCursor, DeliveryPage};
use crate::ports::{
    ContactStore, DeliveryFilter, DeliveryStore, EventStore, Queue, QueueError, StoreError,
    TimerStore,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    in_progress_until INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    action_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    last_response TEXT,
    sent_at TEXT,
    next_attempt_at INTEGER,
    request TEXT,
    created_at INTEGER NOT NULL,
    chain_depth INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id, created_at);
CREATE INDEX IF NOT EXISTS events_by_expiry ON events(expires_at);
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries(status, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(queue, visible_at);
CREATE TABLE IF NOT EXISTS timers (
    correlation TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (correlation, delivery_id)
);
CREATE TABLE IF NOT EXISTS birthdays (
    email TEXT PRIMARY KEY,
    month INTEGER NOT NULL,
    day INTEGER NOT NULL,
    birthday TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS birthdays_by_day ON birthdays(month, day, email);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// The local store: events, deliveries and queues in one SQLite database.
///
/// Every write of the async ports goes to one store thread, which folds the writes waiting
/// into one transaction, each op in its own savepoint (all or nothing), and answers them all
/// after one commit: one `fsync` for the lot, never on an async worker. Reads go to a second
/// connection and run in place: in WAL mode a reader never waits for a commit.
#[derive(Clone)]
pub struct SqliteStore {
    /// The connection every write goes through (the store thread; the runner at start).
    conn: Arc<Mutex<Connection>>,
    /// The connection for reads.
    reader: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    /// How long finished records are kept (`sweep`).
    retention: Retention,
    /// The database file.
    path: std::path::PathBuf,
    /// The store thread, started on first use; it ends when the last clone is dropped.
    ops: Arc<std::sync::OnceLock<std::sync::mpsc::Sender<StoreOp>>>,
    /// Why the store thread's last commit failed, while commits fail.
    write_failure: Arc<Mutex<Option<String>>>,
}

/// One write for the store thread: it runs the op inside the shared transaction and gives
/// back what answers the caller once the commit is known.
type StoreOp = Box<dyn FnOnce(&mut Connection) -> Answer + Send>;
/// Answers the caller with the op's result, or with why the commit failed.
type Answer = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The most ops folded into one commit.
const GROUP_COMMIT_MAX: usize = 512;

/// Makes leased messages visible now: of one queue (`?2`), or of every queue (`?2` NULL).
const RELEASE_LEASES: &str =
    "UPDATE jobs SET leased = 0, visible_at = ?1 WHERE leased = 1 AND (?2 IS NULL OR queue = ?2)";

/// The most rows one sweep op deletes: a few milliseconds of the writer's time.
const SWEEP_BATCH: usize = 500;
/// A write-ahead log larger than this is folded back and truncated by the next sweep even
/// when it deleted nothing (a reader kept the last one from finishing).
const WAL_TRUNCATE_ABOVE: u64 = 4 * 1024 * 1024;
/// The most pages one `incremental_vacuum` step gives back.
const VACUUM_PAGES: usize = 2000;
/// Finished deliveries past their window (`expires_at` is set only on finished ones).
const SWEEP_DELIVERIES: &str = "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries WHERE expires_at IS NOT NULL AND expires_at < ?1 LIMIT ?2)";
/// Events past their window that no delivery refers to any more (`expires_at` in seconds).
const SWEEP_EVENTS: &str = "DELETE FROM events WHERE rowid IN (SELECT e.rowid FROM events e WHERE e.expires_at < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?2)";
/// Timers whose delivery is no longer scheduled (sent, cancelled or swept). `?1` is unused
/// (every sweep statement takes the time).
const SWEEP_TIMERS: &str = "DELETE FROM timers WHERE rowid IN (SELECT t.rowid FROM timers t WHERE ?1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = t.delivery_id AND d.status = 'scheduled') LIMIT ?2)";

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Finished and dead deliveries past their window.
    pub deliveries: usize,
    /// Events past their window with no delivery left.
    pub events: usize,
    /// Timers of deliveries no longer scheduled.
    pub timers: usize,
}

/// Makes the file give freed pages back (`incremental_vacuum`): set before the first table of
/// a new file, or once (with a `VACUUM`) on a file made before retention existed.
fn give_space_back(conn: &Connection) -> rusqlite::Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
    if tables > 0 {
        conn.execute_batch("VACUUM;")?;
    }
    Ok(())
}

/// Whether the deliveries table has the column `name` (a file made before it had not).
fn has_column(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('deliveries') WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Brings a file made by an earlier version up to this schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "expires_at")? {
        // Finished deliveries written before retention count from their creation.
        let d = Retention::default();
        conn.execute_batch(&format!(
            "ALTER TABLE deliveries ADD COLUMN expires_at INTEGER;
             UPDATE deliveries SET expires_at = created_at + {dead} WHERE status = 'dead';
             UPDATE deliveries SET expires_at = created_at + {done} WHERE status IN ('sent', 'skipped', 'cancelled', 'dry_run');",
            dead = d.dead.as_millis(),
            done = d.deliveries.as_millis(),
        ))?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS deliveries_by_expiry ON deliveries(expires_at) WHERE expires_at IS NOT NULL;",
    )?;
    migrate_console(conn)
}

/// The operator's window: each delivery's contact, event type and attempts, and the indexes
/// its pages are read by (newest first: each ends in `created_at, id`, the keyset).
fn migrate_console(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "email")? {
        // Deliveries written before get their contact from their request and their event's
        // type from the event, so a search finds them too.
        conn.execute_batch(
            "ALTER TABLE deliveries ADD COLUMN email TEXT;
             ALTER TABLE deliveries ADD COLUMN event_type TEXT;
             ALTER TABLE deliveries ADD COLUMN attempt_log TEXT;
             UPDATE deliveries SET email = lower(trim(coalesce(
                 json_extract(request, '$.item.emailaddress'),
                 json_extract(request, '$.item.recipient.emailaddress'))))
               WHERE request IS NOT NULL AND json_valid(request);
             UPDATE deliveries SET event_type = (SELECT type FROM events WHERE events.id = deliveries.event_id);",
        )?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS deliveries_by_created ON deliveries(created_at, id);
         CREATE INDEX IF NOT EXISTS deliveries_by_email ON deliveries(email, created_at, id) WHERE email IS NOT NULL;
         CREATE INDEX IF NOT EXISTS deliveries_by_rule ON deliveries(rule, created_at, id);",
    )
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn queue_err(e: impl std::fmt::Display, n: usize) -> QueueError {
    QueueError {
        failed: (0..n).collect(),
        message: e.to_string(),
    }
}

/// Runs the statement `sql` once per item, all or nothing: in a savepoint of its own (inside
/// the store thread's transaction) or, outside one, as its own transaction.
fn execute_each<T>(
    conn: &mut Connection,
    sql: &str,
    items: &[T],
    mut execute: impl FnMut(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    let sp = conn.savepoint()?;
    {
        let mut stmt = sp.prepare_cached(sql)?;
        for item in items {
            execute(&mut stmt, item)?;
        }
    }
    sp.commit()
}

impl SqliteStore {
    /// Opens (creating if needed) `relay.db` in the state directory.
    pub fn open(state_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", state_dir.display())))?;
        let conn = Connection::open(state_dir.join("relay.db")).map_err(unavailable)?;
        // WAL keeps readers off the writer's back; FULL syncs each commit, so an answer of
        // 202 means the event is on disk. Each op of a group commit runs in a savepoint, whose
        // journal stays in memory (temp_store), not in a temporary file.
        // Before WAL: a new file takes its auto_vacuum mode only before its first write.
        give_space_back(&conn).map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;",
        )
        .map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate(&conn).map_err(unavailable)?;
        let reader = Connection::open(state_dir.join("relay.db")).map_err(unavailable)?;
        reader
            .execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=5000;")
            .map_err(unavailable)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            clock,
            retention: Retention::default(),
            path: state_dir.join("relay.db"),
            ops: Arc::new(std::sync::OnceLock::new()),
            write_failure: Arc::new(Mutex::new(None)),
        })
    }

    /// Keeps finished records for these windows (the default is `Retention::default()`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Deletes what has expired at the store's clock time, in small batches (each its own
    /// store op, so a sweep never holds the writer for long), then gives the freed pages back
    /// to the file system. Pending, retrying and scheduled deliveries, their jobs and timers
    /// are never touched; an event stays while any of its deliveries does (a dead one can be
    /// replayed by rendering its event again), though its id is claimable again once its own
    /// window has passed.
    pub async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let now = self.clock.now_ms();
        // In this order: events wait for their deliveries, timers for theirs.
        let deliveries = self.sweep_batches(SWEEP_DELIVERIES, now).await?;
        let report = SweepReport {
            deliveries,
            events: self.sweep_batches(SWEEP_EVENTS, now / 1000).await?,
            timers: self.sweep_batches(SWEEP_TIMERS, now).await?,
        };
        // Each step frees at most VACUUM_PAGES; stop when nothing is left or a step frees
        // nothing (a file whose mode could not be changed).
        let mut left = i64::MAX;
        loop {
            let now_left = self
                .run(|conn| -> rusqlite::Result<i64> {
                    conn.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES});"))?;
                    conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
                })
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            if now_left == 0 || now_left >= left {
                break;
            }
            left = now_left;
        }
        let wal = std::fs::metadata(self.path.with_extension("db-wal")).map_or(0, |m| m.len());
        if report != SweepReport::default() || wal > WAL_TRUNCATE_ABOVE {
            // Fold the write-ahead log back into the file and truncate it, so what was freed
            // leaves the disk too. A busy reader only makes it do less this time; the next
            // sweep finishes it.
            let _ = Connection::open(&self.path)
                .and_then(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
        }
        Ok(report)
    }

    /// Runs one sweep statement in batches until a batch deletes less than a full one.
    async fn sweep_batches(&self, sql: &'static str, now: i64) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .run(move |conn| conn.execute(sql, params![now, SWEEP_BATCH as i64]))
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            total += n;
            if n < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    /// The size of the store's files (database and write-ahead log), in bytes.
    pub fn disk_usage(&self) -> u64 {
        let wal = self.path.with_extension("db-wal");
        [&self.path, &wal]
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// When the oldest record still held was received (Unix ms): how far back the store can
    /// show.
    pub fn oldest_record_ms(&self) -> Result<Option<i64>, StoreError> {
        self.read()
            .query_row(
                "SELECT MIN(t) FROM (SELECT MIN(received_at) AS t FROM events UNION ALL SELECT MIN(created_at) FROM deliveries)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(unavailable)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the write `op` on the store thread and waits for its group's commit. The op
    /// works in a savepoint of its own (`conn.savepoint()`): its error or panic rolls back
    /// its writes only. `Err` when the op panicked or the commit failed.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T, String> {
        let ops = self.ops.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<StoreOp>();
            let conn = self.conn.clone();
            let failure = self.write_failure.clone();
            std::thread::Builder::new()
                .name("relay-store".into())
                .spawn(move || store_thread(conn, rx, failure))
                .ok();
            tx
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        ops.send(Box::new(move |conn: &mut Connection| -> Answer {
            let result = op(conn);
            Box::new(move |committed: Result<(), String>| {
                let _ = reply.send(committed.map(|()| result));
            })
        }))
        .map_err(|_| "the store thread has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the store could not run the operation (see the log)".to_string())?
    }

    /// Makes every leased message visible again: the process that held them is gone.
    /// Only the one process that runs the workers may call this, at its start.
    pub fn release_leases(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        self.lock()
            .execute(RELEASE_LEASES, params![now, Option::<&str>::None])
            .map_err(unavailable)
    }

    /// Makes the messages of one queue that a failed pass still holds visible again, so they
    /// need not wait out their visibility timeout: for the queue's one worker, between its
    /// passes (after the store refused writes, say).
    pub async fn release_leases_of(&self, queue: QueueName) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        self.run(move |conn| conn.execute(RELEASE_LEASES, params![now, Some(queue.as_str())]))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    /// Lets a retry take over every IN_PROGRESS event claim at once: their holder (the
    /// previous process) is gone. A job it did enqueue is harmless to enqueue again, since
    /// delivery ids are derived from the event. Only the runner may call this, at its start.
    pub fn expire_claims(&self) -> Result<usize, StoreError> {
        self.lock()
            .execute(
                "UPDATE events SET in_progress_until = 0 WHERE status = 'IN_PROGRESS'",
                [],
            )
            .map_err(unavailable)
    }

    /// Whether a queue has nothing due at the store's clock time and nothing being worked on.
    pub fn is_idle(&self, queue: QueueName) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        self.read()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND (leased = 1 OR visible_at <= ?2)",
                params![queue.as_str(), now],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n == 0)
            .map_err(unavailable)
    }

    /// Remembers many birthdays in one transaction (imports, tests).
    pub fn remember_birthdays(
        &self,
        list: &[(String, chrono::NaiveDate)],
    ) -> Result<(), StoreError> {
        use chrono::Datelike;
        execute_each(
            &mut self.lock(),
            REMEMBER_BIRTHDAY,
            list,
            |stmt, (email, b)| {
                stmt.execute(params![
                    email.to_lowercase(),
                    b.month(),
                    b.day(),
                    b.format("%Y-%m-%d").to_string()
                ])
            },
        )
        .map_err(unavailable)
    }

    /// A value the runner keeps between runs (e.g. the date of the last birthday run).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable)
    }

    /// Sets a kept value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Writes one small row through the store thread: the way back from a failed write
    /// (its commit, when it succeeds, marks the store writable again).
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('write_probe', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![now.to_string()],
            )
        })
        .await
        .map_err(unavailable)?
        .map(|_| ())
        .map_err(|e| {
            // The write itself failed (its empty commit may still have succeeded).
            *self.write_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            unavailable(e)
        })
    }

    /// How many messages wait in a queue (visible or not).
    pub fn queue_depth(&self, queue: QueueName) -> Result<usize, StoreError> {
        self.read()
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE queue = ?1",
                params![queue.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(unavailable)
    }
}

/// The store thread: takes every write waiting (up to `GROUP_COMMIT_MAX`), runs them in one
/// transaction and commits once, then answers each.
fn store_thread(
    conn: Arc<Mutex<Connection>>,
    ops: std::sync::mpsc::Receiver<StoreOp>,
    failure: Arc<Mutex<Option<String>>>,
) {
    let set_failure = |why: Option<String>| {
        *failure.lock().unwrap_or_else(|p| p.into_inner()) = why;
    };
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_COMMIT_MAX {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the ops unrun answers each caller with an error.
            tracing::debug!(error = %e, ops = group.len(), "the store cannot begin a transaction");
            set_failure(Some(e.to_string()));
            continue;
        }
        let mut answers = Vec::with_capacity(group.len());
        for op in group {
            // A panicking op drops its reply (its caller gets an error); its savepoint
            // rolls back as it unwinds, and the others go on.
            if let Ok(answer) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(&mut conn)))
            {
                answers.push(answer);
            }
        }
        // Logged by the workers, once per outage (they pause while it lasts), not here
        // once per commit.
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::debug!(error = %e, "the store could not commit");
            format!("the store could not commit: {e}")
        });
        set_failure(committed.as_ref().err().cloned());
        drop(conn);
        for answer in answers {
            answer(committed.clone());
        }
    }
}

#[async_trait]
impl crate::ports::AtomicAccept for SqliteStore {
    async fn accept_atomic(
        &self,
        records: Vec<EventRecord>,
        bodies: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<Begin>, StoreError> {
        self.run(move |conn| {
            // All or nothing: a conflicting id rolls back the whole call.
            let sp = conn.savepoint().map_err(unavailable)?;
            let mut claims = Vec::with_capacity(records.len());
            let mut conflict = false;
            {
                let mut enqueue = sp.prepare_cached(ENQUEUE).map_err(unavailable)?;
                for (record, body) in records.iter().zip(&bodies) {
                    let claim = claim_event(&sp, record, now_ms)?;
                    if claim != Begin::Started {
                        conflict |= claim.claim(&record.payload_hash).refuses_batch();
                        claims.push(claim);
                        continue;
                    }
                    enqueue
                        .execute(params![QueueName::Render.as_str(), body, now_ms])
                        .map_err(unavailable)?;
                    claims.push(Begin::Started);
                }
            }
            if !conflict {
                sp.commit().map_err(unavailable)?;
            }
            Ok(claims)
        })
        .await
        .map_err(unavailable)?
    }
}

#[async_trait]
impl crate::ports::AtomicRender for SqliteStore {
    async fn render_atomic(
        &self,
        records: Vec<DeliveryRecord>,
        plan: crate::ports::PassPlan,
        acks: Vec<String>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (now, retention) = (self.clock.now_ms(), self.retention);
        self.run(move |conn| {
            let sp = conn.savepoint().map_err(unavailable)?;
            let stored = store_new(&sp, records, now, retention).map_err(unavailable)?;
            let writes = plan(&stored)?;
            write_pass(&sp, &writes, &acks, now).map_err(unavailable)?;
            sp.commit().map_err(unavailable)?;
            Ok(stored)
        })
        .await
        .map_err(unavailable)?
    }
}

/// Stores new deliveries and returns them as stored, one per id in the order first given
/// (`DeliveryStore::insert_new_stored`): the ones stored now as given, the others (ids
/// stored before) as read back in the same transaction, so they need no read after it.
fn store_new(
    tx: &Connection,
    records: Vec<DeliveryRecord>,
    now: i64,
    retention: Retention,
) -> rusqlite::Result<Vec<DeliveryRecord>> {
    let mut insert = tx.prepare_cached(&insert_delivery_sql())?;
    let mut read = tx.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
    ))?;
    let mut stored = Vec::with_capacity(records.len());
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for r in records {
        if !seen.insert(r.id.clone()) {
            // A later copy of an id given twice: the first one stands.
            continue;
        }
        if insert_delivery(
            &mut insert,
            &r,
            retention.delivery_expires_at(r.status, now),
        )? == 1
        {
            stored.push(r);
        } else if let Some(old) = read
            .query_row(params![r.id.as_str()], delivery_from_row)
            .optional()?
        {
            stored.push(old);
        }
    }
    Ok(stored)
}

/// The rest of a render pass: its timers, its dispatch jobs (visible from `now` plus their
/// delay), and the deletion of its render jobs.
fn write_pass(
    tx: &Connection,
    writes: &crate::ports::PassWrites,
    acks: &[String],
    now: i64,
) -> rusqlite::Result<()> {
    let mut hold = tx.prepare_cached(HOLD_TIMER)?;
    for (correlation, ids, due) in &writes.timers {
        for id in ids {
            hold.execute(params![correlation, id.as_str(), due])?;
        }
    }
    let mut enqueue = tx.prepare_cached(ENQUEUE)?;
    for (delay, bodies) in &writes.jobs {
        let visible_at = now + delay.as_millis() as i64;
        for b in bodies {
            enqueue.execute(params![QueueName::Dispatch.as_str(), b, visible_at])?;
        }
    }
    let mut ack = tx.prepare_cached(ACK)?;
    for h in acks {
        ack.execute(params![h.parse::<i64>().unwrap_or(-1)])?;
    }
    Ok(())
}

/// Claims one event id inside a transaction: `Started` (stored) when free, expired or held
/// IN_PROGRESS past its lease; otherwise the record that holds it.
fn claim_event(tx: &Connection, record: &EventRecord, now_ms: i64) -> Result<Begin, StoreError> {
    let existing = tx
        .prepare_cached("SELECT * FROM events WHERE id = ?1")
        .map_err(unavailable)?
        .query_row(params![record.id.as_str()], event_from_row)
        .optional()
        .map_err(unavailable)?;
    if let Some(held) = existing {
        if !held.is_claimable(now_ms) {
            return Ok(Begin::Existing(held));
        }
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO events (id, type, payload_hash, body, received_at, status, in_progress_until, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(unavailable)?
    .execute(params![
        record.id.as_str(),
        record.kind,
        record.payload_hash,
        record.event.to_string(),
        record.received_at,
        record.status.as_str(),
        record.in_progress_until,
        record.expires_at
    ])
    .map_err(unavailable)?;
    Ok(Begin::Started)
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<EventRecord> {
    let body: String = row.get("body")?;
    let status: String = row.get("status")?;
    Ok(EventRecord {
        id: EventId::from_stored(row.get::<_, String>("id")?),
        kind: row.get("type")?,
        payload_hash: row.get("payload_hash")?,
        event: serde_json::from_str(&body).unwrap_or_default(),
        received_at: row.get("received_at")?,
        status: RecordStatus::parse(&status).unwrap_or(RecordStatus::InProgress),
        in_progress_until: row.get("in_progress_until")?,
        expires_at: row.get("expires_at")?,
    })
}

/// Enqueues one job: queue, body, visible at (Unix ms).
const ENQUEUE: &str = "INSERT INTO jobs (queue, body, visible_at) VALUES (?1, ?2, ?3)";
/// Writes a delivery's state. `created_at` is left to `MOVE_DELIVERY`: naming it in the
/// `SET` makes SQLite rewrite the five indexes that hold it, even when it is unchanged (an
/// outcome's write took twice as long; issue 16).
const SAVE_DELIVERY: &str = "UPDATE deliveries SET status = ?2, attempts = ?3, last_error = ?4, last_response = ?5, sent_at = ?6,
     next_attempt_at = ?7, request = ?8, expires_at = ?9, attempt_log = ?10 WHERE id = ?1";
/// Moves a delivery to a new creation time (a replay), writing nothing when it has it.
const MOVE_DELIVERY: &str =
    "UPDATE deliveries SET created_at = ?2 WHERE id = ?1 AND created_at != ?2";
/// Deletes one handled job (its handle).
const ACK: &str = "DELETE FROM jobs WHERE id = ?1";
/// Holds one delivery under a correlation key until its due time.
const HOLD_TIMER: &str =
    "INSERT OR IGNORE INTO timers (correlation, delivery_id, due_at) VALUES (?1, ?2, ?3)";

/// Remembers one birthday (the latest given wins): e-mail (lower case), month, day, date.
const REMEMBER_BIRTHDAY: &str = "INSERT INTO birthdays (email, month, day, birthday) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(email) DO UPDATE SET month = excluded.month, day = excluded.day, birthday = excluded.birthday";

const DELIVERY_COLUMNS: &str = "id, event_id, rule, action, action_index, status, attempts, last_error, last_response, sent_at, next_attempt_at, request, created_at, chain_depth, email, event_type, attempt_log";

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let status: String = row.get(5)?;
    let request: Option<String> = row.get(11)?;
    Ok(DeliveryRecord {
        id: DeliveryId::from_stored(row.get::<_, String>(0)?),
        event_id: EventId::from_stored(row.get::<_, String>(1)?),
        rule: row.get(2)?,
        action: row.get(3)?,
        action_index: row.get::<_, i64>(4)? as usize,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: row.get::<_, i64>(6)? as u32,
        last_error: row.get(7)?,
        last_response: row.get(8)?,
        sent_at: row.get(9)?,
        next_attempt_at: row.get(10)?,
        request: request.and_then(|r| serde_json::from_str::<Prepared>(&r).ok()),
        created_at: row.get(12)?,
        chain_depth: row.get::<_, i64>(13)? as u32,
        email: row.get(14)?,
        event_type: row.get(15)?,
        attempt_log: row
            .get::<_, Option<String>>(16)?
            .and_then(|a| serde_json::from_str::<Vec<Attempt>>(&a).ok())
            .unwrap_or_default(),
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn begin(&self, record: &EventRecord, now_ms: i64) -> Result<Begin, StoreError> {
        let mut all = self
            .begin_many(std::slice::from_ref(record), now_ms)
            .await?;
        all.pop()
            .ok_or_else(|| StoreError::Corrupt("no claim".into()))
    }

    async fn begin_many(
        &self,
        records: &[EventRecord],
        now_ms: i64,
    ) -> Result<Vec<Begin>, StoreError> {
        let records = records.to_vec();
        self.run(move |conn| {
            let tx = conn.savepoint().map_err(unavailable)?;
            let mut out = Vec::with_capacity(records.len());
            for record in &records {
                out.push(claim_event(&tx, record, now_ms)?);
            }
            tx.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
        .map_err(unavailable)?
    }

    async fn complete_many(&self, ids: &[EventId]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.run(move |conn| {
            execute_each(
                conn,
                "UPDATE events SET status = 'COMPLETED' WHERE id = ?1",
                &ids,
                |stmt, id| stmt.execute(params![id.as_str()]),
            )
            .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn complete(&self, id: &EventId) -> Result<(), StoreError> {
        self.complete_many(std::slice::from_ref(id)).await
    }

    async fn release(&self, id: &EventId) -> Result<(), StoreError> {
        let id = id.clone();
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM events WHERE id = ?1 AND status = 'IN_PROGRESS'",
                params![id.as_str()],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn get(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let conn = self.read();
        conn.query_row(
            "SELECT * FROM events WHERE id = ?1",
            params![id],
            event_from_row,
        )
        .optional()
        .map_err(unavailable)
    }
}

impl crate::ports::StoreHealth for SqliteStore {
    fn unwritable(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn insert_new(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        let (now, retention) = (self.clock.now_ms(), self.retention);
        self.run(move |conn| {
            execute_each(conn, &insert_delivery_sql(), &records, |stmt, r| {
                insert_delivery(stmt, r, retention.delivery_expires_at(r.status, now))
            })
            .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn insert_new_stored(
        &self,
        records: &[DeliveryRecord],
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        // One op: the inserts, and the reads of the ids stored before, in one transaction.
        let records = records.to_vec();
        let (now, retention) = (self.clock.now_ms(), self.retention);
        self.run(move |conn| {
            let sp = conn.savepoint()?;
            let stored = store_new(&sp, records, now, retention)?;
            sp.commit()?;
            Ok::<_, rusqlite::Error>(stored)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    async fn get_many(&self, ids: &[DeliveryId]) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
            ))
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = stmt
                .query_row(params![id.as_str()], delivery_from_row)
                .optional()
                .map_err(unavailable)?
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn save(&self, r: &DeliveryRecord) -> Result<(), StoreError> {
        self.save_many(std::slice::from_ref(r)).await
    }

    async fn save_many(&self, records: &[DeliveryRecord]) -> Result<(), StoreError> {
        let records = records.to_vec();
        let (now, retention) = (self.clock.now_ms(), self.retention);
        self.run(move |conn| {
            let sp = conn.savepoint()?;
            {
                let mut save = sp.prepare_cached(SAVE_DELIVERY)?;
                let mut moved = sp.prepare_cached(MOVE_DELIVERY)?;
                for r in &records {
                    save.execute(params![
                        r.id.as_str(),
                        r.status.as_str(),
                        r.attempts as i64,
                        r.last_error,
                        r.last_response,
                        r.sent_at,
                        r.next_attempt_at,
                        request_json(r)?,
                        retention.delivery_expires_at(r.status, now),
                        attempts_json(r)?,
                    ])?;
                    moved.execute(params![r.id.as_str(), r.created_at])?;
                }
            }
            sp.commit()
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    async fn cancel_scheduled(
        &self,
        id: &DeliveryId,
        now_ms: i64,
        why: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let (key, why) = (id.to_string(), why.to_string());
        let expires_at = self
            .retention
            .delivery_expires_at(DeliveryStatus::Cancelled, self.clock.now_ms());
        // The record comes back from the UPDATE itself: no read after the commit.
        self.run(move |conn| {
            conn.query_row(
                &format!(
                    "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, expires_at = ?2,
                     last_error = ?3 WHERE id = ?1 AND status = 'scheduled' AND next_attempt_at > ?4
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                params![key, expires_at, why, now_ms],
                delivery_from_row,
            )
            .optional()
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }

    async fn for_event(&self, event_id: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY created_at, chain_depth, rule, action_index"
            ))
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![event_id], delivery_from_row)
            .map_err(unavailable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
    }

    async fn list(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        let limit = if f.limit == 0 {
            i64::MAX
        } else {
            f.limit as i64
        };
        let mut q = Where::of(f);
        q.args.push(limit.into());
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries {} ORDER BY created_at, id LIMIT ?",
            q.clause()
        );
        self.query_deliveries(&sql, q.args)
    }

    async fn page(
        &self,
        f: &DeliveryFilter,
        after: Option<&DeliveryCursor>,
    ) -> Result<DeliveryPage, StoreError> {
        let size = f.page_size();
        let (sql, args) = page_query(f, after, size + 1);
        Ok(DeliveryPage::collect(
            self.query_deliveries(&sql, args)?,
            size,
        ))
    }

    async fn count_by_status(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(DeliveryStatus, u64)>, StoreError> {
        let conn = self.read();
        // One index range per status: no scan of the older deliveries.
        let mut stmt = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM deliveries WHERE status = ?1 AND created_at >= ?2",
            )
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for status in DeliveryStatus::ALL {
            let n: i64 = stmt
                .query_row(params![status.as_str(), since_ms], |r| r.get(0))
                .map_err(unavailable)?;
            if n > 0 {
                out.push((status, n as u64));
            }
        }
        Ok(out)
    }
}

impl SqliteStore {
    /// The deliveries a query over the reader finds.
    fn query_deliveries(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(sql).map_err(unavailable)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), delivery_from_row)
            .map_err(unavailable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
    }
}

/// The query of a page: at most `rows` deliveries matching `f` after the cursor, newest
/// first.
fn page_query(
    f: &DeliveryFilter,
    after: Option<&DeliveryCursor>,
    rows: usize,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut q = Where::of(f);
    if let Some(c) = after {
        // The keyset, written so the `created_at` bound is an index range.
        q.push(
            "created_at <= ? AND (created_at < ? OR id < ?)",
            [
                c.created_at.into(),
                c.created_at.into(),
                c.id.to_string().into(),
            ],
        );
    }
    q.args.push((rows as i64).into());
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries {} ORDER BY created_at DESC, id DESC LIMIT ?",
        q.clause()
    );
    (sql, q.args)
}

/// A filter as a `WHERE` clause naming only the fields it sets, so each query can use the
/// index of its field (`?1 IS NULL OR …` would defeat every index).
struct Where {
    terms: Vec<&'static str>,
    args: Vec<rusqlite::types::Value>,
}

impl Where {
    fn of(f: &DeliveryFilter) -> Self {
        let mut q = Self {
            terms: Vec::new(),
            args: Vec::new(),
        };
        let text = |v: &Option<String>| v.clone().map(rusqlite::types::Value::from);
        let fields = [
            (
                "status = ?",
                f.status.map(|s| s.as_str().to_string().into()),
            ),
            ("email = ?", f.email_key().map(Into::into)),
            ("rule = ?", text(&f.rule)),
            ("action = ?", text(&f.action)),
            ("event_type = ?", text(&f.event_type)),
            ("event_id = ?", text(&f.event_id)),
            ("created_at >= ?", f.since_ms.map(Into::into)),
            ("created_at < ?", f.until_ms.map(Into::into)),
        ];
        for (term, value) in fields {
            if let Some(v) = value {
                q.push(term, [v]);
            }
        }
        q
    }

    fn push<const N: usize>(&mut self, term: &'static str, args: [rusqlite::types::Value; N]) {
        self.terms.push(term);
        self.args.extend(args);
    }

    fn clause(&self) -> String {
        if self.terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.terms.join(" AND "))
        }
    }
}

/// Stores a delivery unless its id is stored already (`INSERT OR IGNORE`).
fn insert_delivery_sql() -> String {
    format!(
        "INSERT OR IGNORE INTO deliveries ({DELIVERY_COLUMNS}, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    )
}

/// Runs `insert_delivery_sql` for one delivery; 1 when it was stored, 0 when its id was.
fn insert_delivery(
    stmt: &mut rusqlite::CachedStatement<'_>,
    r: &DeliveryRecord,
    expires_at: Option<i64>,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        r.id.as_str(),
        r.event_id.as_str(),
        r.rule,
        r.action,
        r.action_index as i64,
        r.status.as_str(),
        r.attempts as i64,
        r.last_error,
        r.last_response,
        r.sent_at,
        r.next_attempt_at,
        request_json(r)?,
        r.created_at,
        r.chain_depth as i64,
        r.email,
        r.event_type,
        attempts_json(r)?,
        expires_at
    ])
}

/// The stored form of a delivery's attempt log (`NULL` while it has none).
fn attempts_json(r: &DeliveryRecord) -> rusqlite::Result<Option<String>> {
    if r.attempt_log.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&r.attempt_log)
        .map(Some)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// The stored form of a delivery's rendered request. One that cannot be encoded fails the
/// write (storing an empty request would later send an empty body).
fn request_json(r: &DeliveryRecord) -> rusqlite::Result<Option<String>> {
    r.request
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

#[async_trait]
impl Queue for SqliteStore {
    async fn depth(
        &self,
        queue: QueueName,
        now_ms: i64,
    ) -> Result<crate::ports::queue::QueueDepth, QueueError> {
        self.depth_at(queue, now_ms).map_err(|e| QueueError {
            failed: Vec::new(),
            message: e.to_string(),
        })
    }

    async fn send(
        &self,
        queue: QueueName,
        bodies: Vec<String>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let n = bodies.len();
        let visible_at = self.clock.now_ms() + delay.as_millis() as i64;
        self.run(move |conn| {
            execute_each(conn, ENQUEUE, &bodies, |stmt, b| {
                stmt.execute(params![queue.as_str(), b, visible_at])
            })
            .map_err(|e| queue_err(e, n))
        })
        .await
        .map_err(|e| queue_err(e, n))?
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let now = self.clock.now_ms();
        self.run(move |conn| {
            let tx = conn.savepoint().map_err(|e| queue_err(e, 0))?;
            let msgs = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id, body, receive_count FROM jobs WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3",
                    )
                    .map_err(|e| queue_err(e, 0))?;
                let rows = stmt
                    .query_map(params![queue.as_str(), now, max as i64], |r| {
                        Ok(Message {
                            handle: r.get::<_, i64>(0)?.to_string(),
                            body: r.get(1)?,
                            receive_count: r.get::<_, i64>(2)? as u32 + 1,
                        })
                    })
                    .map_err(|e| queue_err(e, 0))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| queue_err(e, 0))?
            };
            if msgs.is_empty() {
                // Nothing to lease: no write, no commit to wait for.
                return Ok(msgs);
            }
            {
                let mut upd = tx
                    .prepare_cached("UPDATE jobs SET visible_at = ?2, leased = 1, receive_count = receive_count + 1 WHERE id = ?1")
                    .map_err(|e| queue_err(e, 0))?;
                let until = now + visibility.as_millis() as i64;
                for m in &msgs {
                    upd.execute(params![m.handle.parse::<i64>().unwrap_or(-1), until])
                        .map_err(|e| queue_err(e, 0))?;
                }
            }
            tx.commit().map_err(|e| queue_err(e, 0))?;
            Ok(msgs)
        })
        .await
        .map_err(|e| queue_err(e, 0))?
    }

    async fn ack(&self, _queue: QueueName, handles: &[String]) -> Result<(), QueueError> {
        let handles = handles.to_vec();
        let n = handles.len();
        self.run(move |conn| {
            execute_each(conn, ACK, &handles, |stmt, h| {
                stmt.execute(params![h.parse::<i64>().unwrap_or(-1)])
            })
            .map_err(|e| queue_err(e, n))
        })
        .await
        .map_err(|e| queue_err(e, n))?
    }

    async fn retry_after(
        &self,
        queue: QueueName,
        handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.retry_after_many(queue, &[(handle.to_string(), delay)])
            .await
    }

    async fn retry_after_many(
        &self,
        _queue: QueueName,
        retries: &[(String, Duration)],
    ) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        let retries = retries.to_vec();
        let n = retries.len();
        self.run(move |conn| {
            execute_each(
                conn,
                "UPDATE jobs SET visible_at = ?2, leased = 0 WHERE id = ?1",
                &retries,
                |stmt, (handle, delay)| {
                    stmt.execute(params![
                        handle.parse::<i64>().unwrap_or(-1),
                        now + delay.as_millis() as i64
                    ])
                },
            )
            .map_err(|e| queue_err(e, n))
        })
        .await
        .map_err(|e| queue_err(e, n))?
    }
}

#[async_trait]
impl TimerStore for SqliteStore {
    async fn hold(
        &self,
        correlation: &str,
        deliveries: &[DeliveryId],
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let correlation = correlation.to_string();
        let deliveries = deliveries.to_vec();
        self.run(move |conn| {
            execute_each(conn, HOLD_TIMER, &deliveries, |stmt, id| {
                stmt.execute(params![correlation, id.as_str(), due_ms])
            })
            .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn cancel(
        &self,
        correlation: &str,
        except_event: &str,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        // Most events cancel nothing: look first on the reader, and only queue a write when
        // there is something to cancel.
        if cancellable(&self.read(), correlation, except_event)?.is_empty() {
            return Ok(Vec::new());
        }
        let correlation = correlation.to_string();
        let except_event = except_event.to_string();
        let expires_at = self
            .retention
            .delivery_expires_at(DeliveryStatus::Cancelled, self.clock.now_ms());
        self.run(move |conn| {
            let tx = conn.savepoint().map_err(unavailable)?;
            let ids = cancellable(&tx, &correlation, &except_event)?;
            for id in &ids {
                tx.execute(
                    "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, expires_at = ?2,
                     last_error = 'cancelled by a later event' WHERE id = ?1 AND status = 'scheduled'",
                    params![id, expires_at],
                )
                .map_err(unavailable)?;
                tx.execute(
                    "DELETE FROM timers WHERE correlation = ?1 AND delivery_id = ?2",
                    params![correlation, id],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(ids.into_iter().map(DeliveryId::from_stored).collect())
        })
        .await
        .map_err(unavailable)?
    }
}

/// The scheduled deliveries held under `correlation` by events other than `except_event`.
fn cancellable(
    conn: &Connection,
    correlation: &str,
    except_event: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT t.delivery_id FROM timers t JOIN deliveries d ON d.id = t.delivery_id
             WHERE t.correlation = ?1 AND d.status = 'scheduled' AND d.event_id != ?2",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![correlation, except_event], |r| {
            r.get::<_, String>(0)
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

#[async_trait]
impl ContactStore for SqliteStore {
    async fn remember_birthday(
        &self,
        email: &str,
        birthday: chrono::NaiveDate,
    ) -> Result<(), StoreError> {
        use chrono::Datelike;
        let email = email.to_lowercase();
        self.run(move |conn| {
            conn.execute(
                REMEMBER_BIRTHDAY,
                params![
                    email,
                    birthday.month(),
                    birthday.day(),
                    birthday.format("%Y-%m-%d").to_string()
                ],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn birthdays_on(
        &self,
        month: u32,
        day: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, chrono::NaiveDate)>, StoreError> {
        let after = after.unwrap_or("");
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT email, birthday FROM birthdays WHERE month = ?1 AND day = ?2 AND email > ?3 ORDER BY email LIMIT ?4",
            )
            .map_err(unavailable)?;
        let rows = stmt
            .query_map(params![month, day, after, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            let (email, b) = row.map_err(unavailable)?;
            match chrono::NaiveDate::parse_from_str(&b, "%Y-%m-%d") {
                Ok(d) => out.push((email, d)),
                Err(_) => return Err(StoreError::Corrupt(format!("birthday of {email}: {b}"))),
            }
        }
        Ok(out)
    }
}

/// Queue depths for `GET /v1/status`.
impl SqliteStore {
    /// How many jobs wait in `queue`, and how long the oldest due one (visible, not leased)
    /// has waited at `now_ms`.
    fn depth_at(
        &self,
        queue: QueueName,
        now_ms: i64,
    ) -> Result<crate::ports::queue::QueueDepth, StoreError> {
        let (count, oldest): (i64, Option<i64>) = self
            .read()
            .query_row(
                "SELECT COUNT(*), MIN(CASE WHEN leased = 0 AND visible_at <= ?2 THEN visible_at END)
                 FROM jobs WHERE queue = ?1",
                params![queue.as_str(), now_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(unavailable)?;
        Ok(crate::ports::queue::QueueDepth {
            messages: Some(count as u64),
            oldest_due_age_ms: oldest.map(|t| (now_ms - t).max(0)),
        })
    }
}

#[cfg(test)]
mod page_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::clock::ManualClock;
    use crate::ports::AtomicAccept;

    const NOW_MS: i64 = 1_790_000_000_000;

    fn store(dir: &Path) -> SqliteStore {
        let start = chrono::DateTime::from_timestamp_millis(NOW_MS).unwrap();
        SqliteStore::open(dir, Arc::new(ManualClock::new(start))).unwrap()
    }

    fn record(id: &str, hash: &str) -> EventRecord {
        EventRecord {
            id: EventId::from_stored(id.to_string()),
            kind: "contact.created".into(),
            payload_hash: hash.into(),
            event: serde_json::json!({"id": id}),
            received_at: NOW_MS,
            status: RecordStatus::Completed,
            in_progress_until: NOW_MS,
            expires_at: NOW_MS / 1000 + 86_400,
        }
    }

    async fn accept(s: &SqliteStore, ids: &[(&str, &str)]) -> Result<Vec<Begin>, StoreError> {
        let records = ids.iter().map(|(id, h)| record(id, h)).collect();
        let bodies = ids.iter().map(|(id, _)| format!("job {id}")).collect();
        s.accept_atomic(records, bodies, NOW_MS).await
    }

    /// The bodies of the messages due on `queue`, leased.
    async fn bodies(s: &SqliteStore, queue: QueueName) -> Vec<String> {
        s.receive(queue, 10, Duration::from_secs(60))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect()
    }

    // One op stores the new ones and reads back the ones stored before, once per id, in the
    // order first given; a render pass's one commit (`render_atomic`) does the same.
    #[tokio::test]
    async fn insert_new_stored_returns_each_id_once_as_stored() {
        use crate::domain::delivery::fixtures::pending;
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = pending("evt-a");
        let mut sent = a.clone();
        sent.record_dry_run();
        s.insert_new(std::slice::from_ref(&a)).await.unwrap();
        s.save(&sent).await.unwrap();
        let b = pending("evt-b");
        let got = s
            .insert_new_stored(&[b.clone(), a.clone(), b.clone()])
            .await
            .unwrap();
        assert_eq!(got, vec![b.clone(), sent.clone()]);
        let plan: crate::ports::PassPlan =
            Box::new(|_: &[DeliveryRecord]| Ok(crate::ports::PassWrites::default()));
        let c = pending("evt-c");
        let got = crate::ports::AtomicRender::render_atomic(
            &s,
            vec![c.clone(), b.clone(), c.clone(), a.clone()],
            plan,
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(got, vec![c, b, sent]);
    }

    // An operator's cancel is one conditional UPDATE: a delivery due, sent (a dispatcher's
    // save a moment before) or unknown is left as it is; one still waiting is cancelled and
    // gets its retention window.
    #[tokio::test]
    async fn an_operator_cancels_only_a_delivery_still_waiting() {
        use crate::domain::delivery::fixtures::pending;
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).with_retention(Retention::default());
        let due = NOW_MS + 3_600_000;
        let mut waiting = pending("evt-wait");
        waiting.status = DeliveryStatus::Scheduled;
        waiting.next_attempt_at = Some(due);
        let mut sent = pending("evt-sent");
        sent.status = DeliveryStatus::Sent;
        s.insert_new(&[waiting.clone(), sent.clone()])
            .await
            .unwrap();
        let why = "cancelled by an operator";
        for (id, at) in [(&waiting.id, due), (&sent.id, NOW_MS)] {
            assert_eq!(s.cancel_scheduled(id, at, why).await.unwrap(), None);
        }
        let unknown = DeliveryId::from_stored("dlv_none");
        assert_eq!(
            s.cancel_scheduled(&unknown, NOW_MS, why).await.unwrap(),
            None
        );
        let got = s.cancel_scheduled(&waiting.id, due - 1, why).await.unwrap();
        let mut expected = waiting.clone();
        expected.cancel(why);
        assert_eq!(got, Some(expected.clone()));
        assert_eq!(
            s.get_many(&[waiting.id.clone(), sent.id.clone()])
                .await
                .unwrap(),
            vec![expected, sent]
        );
        let expires: Option<i64> = s
            .read()
            .query_row(
                "SELECT expires_at FROM deliveries WHERE id = ?1",
                [waiting.id.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(expires.is_some_and(|t| t > NOW_MS), "{expires:?}");
    }

    // Many accepts at once share commits; each stays all or nothing: the call that reuses a
    // stored id with another payload stores none of its events, the others store all theirs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_accepts_are_each_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        accept(&s, &[("taken", "h1")]).await.unwrap();

        let mut calls = tokio::task::JoinSet::new();
        for i in 0..64 {
            let s = s.clone();
            calls.spawn(async move {
                let fresh = format!("e{i}");
                let ids: Vec<(&str, &str)> = if i == 17 {
                    vec![(fresh.as_str(), "h"), ("taken", "other")]
                } else {
                    vec![(fresh.as_str(), "h")]
                };
                (i, accept(&s, &ids).await.unwrap())
            });
        }
        while let Some(done) = calls.join_next().await {
            let (i, claims) = done.unwrap();
            if i == 17 {
                assert!(matches!(claims[1], Begin::Existing(_)), "{claims:?}");
            } else {
                assert_eq!(claims, vec![Begin::Started]);
            }
        }
        for i in 0..64 {
            let stored = s.get(&format!("e{i}")).await.unwrap();
            assert_eq!(stored.is_some(), i != 17, "event e{i}");
        }
        assert_eq!(s.get("taken").await.unwrap().unwrap().payload_hash, "h1");
        assert_eq!(s.queue_depth(QueueName::Render).unwrap(), 1 + 63);
    }

    // An op that fails or panics answers its own caller with an error; the writes of the ops
    // committed with it stand, and the store thread goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_op_spoils_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (a, b, c) = tokio::join!(
            s.send(QueueName::Render, vec!["a".into()], Duration::ZERO),
            s.run(|conn| -> Result<(), StoreError> {
                let sp = conn.savepoint().map_err(unavailable)?;
                sp.execute(
                    "INSERT INTO jobs (queue, body, visible_at) VALUES ('render', 'half', 0)",
                    [],
                )
                .map_err(unavailable)?;
                sp.execute("INSERT INTO no_such_table VALUES (1)", [])
                    .map_err(unavailable)?;
                sp.commit().map_err(unavailable)
            }),
            s.run(|_| -> () { panic!("a bug in one op") }),
        );
        a.unwrap();
        assert!(matches!(b, Ok(Err(StoreError::Unavailable(_)))), "{b:?}");
        assert!(c.is_err());
        s.send(QueueName::Render, vec!["b".into()], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(bodies(&s, QueueName::Render).await, vec!["a", "b"]);
    }

    // The answer comes after the commit: what a call was told is stored is on disk for a
    // fresh connection (another process) to read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answered_writes_are_committed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        accept(&s, &[("x1", "h"), ("x2", "h")]).await.unwrap();
        let other = Connection::open(dir.path().join("relay.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        let jobs: i64 = other
            .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!((n, jobs), (2, 2));
    }

    // A render pass's writes share one commit: the new deliveries are stored as given, one
    // stored before comes back as stored (unchanged), the plan sees them as stored, and its
    // dispatch jobs land with the deletion of the render job; a failing plan writes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_render_pass_is_written_in_one_commit_or_not_at_all() {
        use crate::domain::delivery::fixtures::pending;
        use crate::ports::{AtomicRender, PassWrites};
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut old = pending("evt-old");
        old.status = DeliveryStatus::Sent;
        s.insert_new(std::slice::from_ref(&old)).await.unwrap();
        s.send(QueueName::Render, vec!["job".into()], Duration::ZERO)
            .await
            .unwrap();
        let job = s
            .receive(QueueName::Render, 1, Duration::from_secs(60))
            .await
            .unwrap()
            .remove(0);
        let mut again = old.clone();
        again.status = DeliveryStatus::Pending;
        let new = pending("evt-new");

        let failing = s
            .render_atomic(
                vec![new.clone()],
                Box::new(|_| Err(StoreError::Corrupt("a bad plan".into()))),
                vec![job.handle.clone()],
            )
            .await;
        assert!(failing.is_err());
        assert!(s
            .get_many(std::slice::from_ref(&new.id))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.queue_depth(QueueName::Render).unwrap(), 1);

        let stored = s
            .render_atomic(
                vec![again, new.clone()],
                Box::new(|stored| {
                    let bodies = stored.iter().map(|r| r.status.as_str().to_string());
                    Ok(PassWrites {
                        timers: Vec::new(),
                        jobs: vec![(Duration::ZERO, bodies.collect())],
                    })
                }),
                vec![job.handle],
            )
            .await
            .unwrap();
        let statuses: Vec<DeliveryStatus> = stored.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            vec![DeliveryStatus::Sent, DeliveryStatus::Pending]
        );
        assert_eq!(stored[1].id, new.id);
        assert_eq!(s.queue_depth(QueueName::Render).unwrap(), 0);
        assert_eq!(
            bodies(&s, QueueName::Dispatch).await,
            vec!["sent", "pending"]
        );
    }
}
