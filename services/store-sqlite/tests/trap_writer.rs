//! The trap's synchronous writer on SQLite shares the write gate with every other writer:
//! the writer pool's single connection. A trap batch waits while another writer holds it,
//! and other writers interleave with back-to-back trap batches without `Busy` errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keytrap_store::conformance::{self, audit};
use keytrap_store::*;
use keytrap_store_sqlite::testing::TempSqlite;
use uuid::Uuid;

/// A Binance canary planted in a fresh tenant's store.
async fn planted(db: &TempSqlite) -> NewCanary {
    conformance::planted(&db.db, 1).await.2.remove(0)
}

fn hit(c: &NewCanary) -> TrapEvent {
    conformance::hit(c, Severity::High, SignatureState::Valid, "read")
}

async fn hit_count(db: &TempSqlite, tenant: Uuid) -> usize {
    db.list_hits(
        tenant,
        &HitFilter {
            page: Page {
                limit: 1000,
                after: None,
            },
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_batches_wait_for_the_write_gate() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let gate = db.writer().acquire().await.unwrap();

    // The recorder's way: the synchronous writer on a thread of its own.
    let mut w = db
        .trap_writer()
        .expect("SQLite has a synchronous trap writer");
    let (tx, rx) = std::sync::mpsc::channel();
    let ev = hit(&c);
    std::thread::spawn(move || {
        let r = w.record(&[ev]);
        w.idle();
        tx.send(r.map_err(|e| e.to_string())).unwrap();
    });
    // The other way: record_trap_events on the runtime.
    let db2 = db.db.clone();
    let ev = hit(&c);
    let task = tokio::spawn(async move { db2.record_trap_events(&[ev]).await });

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "the trap writer committed while another writer held the gate"
    );
    assert!(!task.is_finished(), "record_trap_events ignored the gate");
    assert_eq!(hit_count(&db, c.tenant_id).await, 0);

    drop(gate);
    let thread = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the trap writer finished once the gate was free");
    thread.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(hit_count(&db, c.tenant_id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writers_interleave_with_back_to_back_trap_batches() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let mut w = db.trap_writer().unwrap();
    let events: Vec<Vec<TrapEvent>> = (0..200)
        .map(|_| (0..5).map(|_| hit(&c)).collect())
        .collect();
    // The recorder keeps the gate across back-to-back batches (idle only at the end).
    let trap = std::thread::spawn(move || {
        for batch in &events {
            w.record(batch).unwrap();
        }
        w.idle();
    });
    // Meanwhile the API writes through the pool: every write succeeds, none is Busy.
    for i in 0..100 {
        db.append_audit(audit(c.tenant_id, "test.write"))
            .await
            .unwrap_or_else(|e| panic!("write {i} failed beside the trap writer: {e}"));
    }
    tokio::task::spawn_blocking(move || trap.join().unwrap())
        .await
        .unwrap();
    assert_eq!(hit_count(&db, c.tenant_id).await, 1000);
    let audits = db
        .list_audit(
            c.tenant_id,
            Page {
                limit: 1000,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        audits.iter().filter(|a| a.action == "test.write").count(),
        100
    );
    let incidents = db
        .list_incidents(c.tenant_id, &IncidentFilter::default())
        .await
        .unwrap();
    let canary = incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Canary)
        .unwrap();
    assert_eq!(canary.hit_count, 1000);
}
