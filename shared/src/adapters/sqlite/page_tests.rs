//! Pages, lists and counts of deliveries on SQLite, checked against the memory store (the
//! reference) and a plain filter over every delivery; the common pages use an index.

use super::*;
use crate::adapters::memory::MemoryStore;
use crate::domain::delivery::fixtures::pending;
use crate::domain::delivery::{AttemptClass, DeliveryStatus};
use crate::ports::clock::ManualClock;

const NOW_MS: i64 = 1_790_000_000_000;

/// Delivery `n`: four of them share each creation time, so the id decides their order, and
/// every ninth belongs to one event.
fn delivery(n: usize) -> DeliveryRecord {
    let mut d = pending(&format!("evt-{}", n % 9));
    d.id = DeliveryId::from_stored(format!("dlv_{:03}", (n * 37) % 101));
    d.created_at = NOW_MS + (n / 4) as i64 * 1_000;
    d.status = DeliveryStatus::ALL[n % 3 * 3];
    d.rule = ["welcome", "cart"][n % 2].into();
    d.action = ["trigger_event", "webhook", "import"][n % 3].into();
    d.email = (!n.is_multiple_of(5)).then(|| format!("c{}@example.com", n % 4));
    d.event_type = Some(["contact.created", "cart.abandoned"][n % 2].into());
    d
}

fn deliveries() -> Vec<DeliveryRecord> {
    (0..60).map(delivery).collect()
}

fn filters() -> Vec<DeliveryFilter> {
    let base = DeliveryFilter::default;
    vec![
        base(),
        DeliveryFilter {
            status: Some(DeliveryStatus::Sent),
            ..base()
        },
        DeliveryFilter {
            email: Some("  C1@Example.COM ".into()),
            ..base()
        },
        DeliveryFilter {
            rule: Some("cart".into()),
            ..base()
        },
        DeliveryFilter {
            action: Some("webhook".into()),
            event_type: Some("cart.abandoned".into()),
            ..base()
        },
        DeliveryFilter {
            email: Some("c2@example.com".into()),
            status: Some(DeliveryStatus::Pending),
            ..base()
        },
        DeliveryFilter {
            rule: Some("welcome".into()),
            since_ms: Some(NOW_MS + 3_000),
            until_ms: Some(NOW_MS + 11_000),
            ..base()
        },
        DeliveryFilter {
            email: Some("nobody@example.com".into()),
            ..base()
        },
        DeliveryFilter {
            event_id: Some("evt-3".into()),
            ..base()
        },
        DeliveryFilter {
            event_id: Some("evt-4".into()),
            status: Some(DeliveryStatus::Sent),
            ..base()
        },
    ]
}

/// Every page of `f` in `size`s, as ids, checking each page's length and cursor.
async fn all_pages(store: &dyn DeliveryStore, f: &DeliveryFilter, size: usize) -> Vec<String> {
    let f = DeliveryFilter {
        limit: size,
        ..f.clone()
    };
    let (mut ids, mut after) = (Vec::new(), None);
    loop {
        let page = store.page(&f, after.as_ref()).await.unwrap();
        assert!(page.deliveries.len() <= f.page_size());
        ids.extend(page.deliveries.iter().map(|d| d.id.to_string()));
        match page.next_cursor {
            Some(c) => {
                assert_eq!(
                    page.deliveries.len(),
                    f.page_size(),
                    "a full page before the next"
                );
                after = Some(c);
            }
            None => return ids,
        }
    }
}

fn stores() -> (tempfile::TempDir, SqliteStore, MemoryStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at_ms(NOW_MS));
    let sqlite = SqliteStore::open(dir.path(), clock.clone()).unwrap();
    (dir, sqlite, MemoryStore::new(clock))
}

#[tokio::test]
async fn every_filter_pages_newest_first_alike_on_sqlite_and_in_memory() {
    let (_dir, sqlite, memory) = stores();
    let all = deliveries();
    sqlite.insert_new(&all).await.unwrap();
    memory.insert_new(&all).await.unwrap();
    for f in filters() {
        let mut expected: Vec<&DeliveryRecord> = all.iter().filter(|d| f.matches(d)).collect();
        expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let expected: Vec<String> = expected.iter().map(|d| d.id.to_string()).collect();
        for size in [1, 7, 0] {
            assert_eq!(
                all_pages(&sqlite, &f, size).await,
                expected,
                "{f:?} by {size}"
            );
            assert_eq!(
                all_pages(&memory, &f, size).await,
                expected,
                "{f:?} by {size}"
            );
        }
        let mut oldest_first = expected.clone();
        oldest_first.reverse();
        let listed = |l: Vec<DeliveryRecord>| -> Vec<String> {
            l.iter().map(|d| d.id.to_string()).collect()
        };
        assert_eq!(
            listed(sqlite.list(&f).await.unwrap()),
            oldest_first,
            "{f:?}"
        );
        assert_eq!(
            listed(memory.list(&f).await.unwrap()),
            oldest_first,
            "{f:?}"
        );
    }
}

#[tokio::test]
async fn an_events_deliveries_are_its_own_newest_first() {
    let (_dir, sqlite, memory) = stores();
    let all = deliveries();
    sqlite.insert_new(&all).await.unwrap();
    memory.insert_new(&all).await.unwrap();
    // Deliveries 3, 12, 21, …, 57 are evt-3's; n / 4 orders their creation.
    let mut expected: Vec<String> = (0..60)
        .filter(|n| n % 9 == 3)
        .map(|n| delivery(n).id.to_string())
        .collect();
    expected.reverse();
    let f = DeliveryFilter {
        event_id: Some("evt-3".into()),
        ..DeliveryFilter::default()
    };
    assert_eq!(all_pages(&sqlite, &f, 2).await, expected);
    assert_eq!(all_pages(&memory, &f, 2).await, expected);
    let unknown = DeliveryFilter {
        event_id: Some("evt-99".into()),
        ..DeliveryFilter::default()
    };
    assert!(all_pages(&sqlite, &unknown, 0).await.is_empty());
}

#[tokio::test]
async fn counts_by_status_count_only_what_was_created_since() {
    let (_dir, sqlite, memory) = stores();
    let all = deliveries();
    sqlite.insert_new(&all).await.unwrap();
    memory.insert_new(&all).await.unwrap();
    let since = NOW_MS + 5_000;
    let expected: Vec<(DeliveryStatus, u64)> = DeliveryStatus::ALL
        .into_iter()
        .map(|s| {
            let n = all
                .iter()
                .filter(|d| d.status == s && d.created_at >= since)
                .count();
            (s, n as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(expected.len(), 3);
    assert_eq!(sqlite.count_by_status(since).await.unwrap(), expected);
    assert_eq!(memory.count_by_status(since).await.unwrap(), expected);
}

#[tokio::test]
async fn the_e_mail_event_type_and_attempts_are_stored_and_read_back() {
    let (_dir, sqlite, _) = stores();
    let mut d = delivery(1);
    sqlite.insert_new(std::slice::from_ref(&d)).await.unwrap();
    d.push_attempt(Attempt {
        at_ms: NOW_MS,
        duration_ms: 12,
        status_code: Some(503),
        response: Some("503 busy".into()),
        class: AttemptClass::Retry,
        reason: Some("the target answered 503".into()),
    });
    sqlite.save(&d).await.unwrap();
    let got = sqlite.get_many(std::slice::from_ref(&d.id)).await.unwrap();
    assert_eq!(got, vec![d]);
}

/// The plan SQLite picks for a page of `f`, one line per step.
fn plan(store: &SqliteStore, f: &DeliveryFilter, after: Option<&DeliveryCursor>) -> String {
    let (sql, args) = page_query(f, after, 101);
    let conn = store.read();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_common_pages_are_read_from_an_index_without_sorting_the_table() {
    let (_dir, sqlite, _) = stores();
    let cursor = DeliveryCursor {
        created_at: NOW_MS,
        id: DeliveryId::from_stored("dlv_050"),
    };
    let cases = [
        (DeliveryFilter::default(), "deliveries_by_created"),
        (filters()[1].clone(), "deliveries_by_status"),
        (filters()[2].clone(), "deliveries_by_email"),
        (filters()[3].clone(), "deliveries_by_rule"),
        (filters()[8].clone(), "deliveries_by_event"),
    ];
    for (f, index) in cases {
        for after in [None, Some(&cursor)] {
            let plan = plan(&sqlite, &f, after);
            assert!(plan.contains(index), "{f:?}: {plan}");
            // Sorting ties of one creation time by id is cheap; sorting the table is not.
            assert!(
                !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
                "{f:?}: {plan}"
            );
        }
    }
}

#[test]
fn a_file_from_before_the_console_gets_the_new_columns_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    {
        let old = Connection::open(dir.path().join("relay.db")).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute_batch(
            r#"INSERT INTO events VALUES ('evt-1', 'contact.created', 'h', '{}', 0, 'completed', 0, 0);
               INSERT INTO deliveries VALUES ('dlv_1', 'evt-1', 'welcome', 'import', 0, 'sent', 1, NULL, NULL, NULL, NULL,
                 '{"kind":"smart_emailing","endpoint":"import","group":{},"item":{"emailaddress":" Jana@Example.com"}}', 5, 0);"#,
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Arc::new(ManualClock::at_ms(NOW_MS))).unwrap();
    let conn = store.read();
    let (email, event_type): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT email, event_type FROM deliveries WHERE id = 'dlv_1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(email.as_deref(), Some("jana@example.com"));
    assert_eq!(event_type.as_deref(), Some("contact.created"));
}
