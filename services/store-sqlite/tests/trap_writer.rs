//! The trap's synchronous writer on SQLite shares the write gate with every other writer:
//! the writer pool's single connection. A trap batch waits while another writer holds it,
//! and other writers interleave with back-to-back trap batches without `Busy` errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keytrap_store::conformance::{self, audit};
use keytrap_store::*;
use keytrap_store_sqlite::testing::TempSqlite;
use keytrap_store_sqlite::SqliteDatabase;
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
        let r = w.record(&[ev], &|| false);
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
            w.record(batch, &|| false).unwrap();
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

/// Every hit of `canary`, paged `limit` at a time through `GET /v1/hits?canary_id=`.
async fn canary_hits(db: &TempSqlite, c: &NewCanary, limit: u32) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .list_hits(
                c.tenant_id,
                &HitFilter {
                    canary_id: Some(c.id),
                    page: Page { limit, after },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.len() <= limit as usize);
        assert!(page.iter().all(|h| h.canary_id == c.id));
        match page.last() {
            Some(h) => after = Some(h.id),
            None => return out,
        }
        out.extend(page.iter().map(|h| h.id));
    }
}

async fn unindexed(db: &TempSqlite) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM hits_unindexed")
        .fetch_one(db.reader())
        .await
        .unwrap()
}

fn ids(events: &[TrapEvent]) -> Vec<Uuid> {
    events
        .iter()
        .filter_map(|e| match e {
            TrapEvent::Hit(h) => Some(h.id),
            TrapEvent::Unknown(_) => None,
        })
        .collect()
}

/// A canary's hits are listed whether they are in the per-canary index already or still
/// waiting to be moved into it, in id order, each once, across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_hits_are_listed_before_and_after_they_are_indexed() {
    let db = TempSqlite::new().await.unwrap();
    let (_, _, cs) = conformance::planted(&db.db, 1).await;
    let (a, b) = (&cs[0], &cs[1]);
    let mut want_a = Vec::new();
    let mut want_b = Vec::new();
    for round in 0..3 {
        let batch: Vec<TrapEvent> = (0..7)
            .map(|i| hit(if i % 3 == 0 { b } else { a }))
            .collect();
        db.record_trap_events(&batch).await.unwrap();
        for (e, id) in batch.iter().zip(ids(&batch)) {
            let TrapEvent::Hit(h) = e else { continue };
            if h.canary_id == a.id {
                want_a.push(id);
            } else {
                want_b.push(id);
            }
        }
        // Rounds 0 and 1 end up in the index; round 2 stays waiting.
        if round < 2 {
            db.index_hits().await.unwrap();
        }
    }
    assert_eq!(unindexed(&db).await, 7, "the last round waits");
    want_a.sort();
    want_b.sort();
    for limit in [1, 2, 5, 100] {
        assert_eq!(canary_hits(&db, a, limit).await, want_a, "limit {limit}");
        assert_eq!(canary_hits(&db, b, limit).await, want_b, "limit {limit}");
    }
    // The other filters still apply to both parts.
    let later = db
        .list_hits(
            a.tenant_id,
            &HitFilter {
                canary_id: Some(a.id),
                store_id: Some(Uuid::now_v7()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(later.is_empty(), "another store's filter matched {later:?}");
    let other_tenant = db
        .list_hits(
            Uuid::now_v7(),
            &HitFilter {
                canary_id: Some(a.id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(other_tenant.is_empty());
    // Moving the rest changes nothing listed.
    db.index_hits().await.unwrap();
    assert_eq!(unindexed(&db).await, 0);
    assert_eq!(canary_hits(&db, a, 3).await, want_a);
    assert_eq!(canary_hits(&db, b, 3).await, want_b);
}

/// The writers move waiting hits into the index by themselves once enough wait, one
/// slice of the canaries after each batch, so the part of a canary listing read without
/// the index stays bounded; halfway through a pass every hit is still listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_hits_are_indexed_in_bulk_by_the_writers() {
    use keytrap_store_sqlite::{index_slice, INDEX_EVERY};
    let db = TempSqlite::new().await.unwrap();
    let mut canaries = Vec::new();
    for n in 1..=4 {
        canaries.extend(conformance::planted(&db.db, n).await.2);
    }
    // A canary whose slice is moved before the pass ends (all eight on the last slice:
    // a chance of 2^-32).
    let c = canaries
        .into_iter()
        .find(|c| index_slice(c.id) < 15)
        .unwrap();
    let slice = index_slice(c.id);
    let per_batch = 500;
    let batches = INDEX_EVERY / per_batch + 1;
    let total = (batches * per_batch) as i64;
    // The recorder's way: the synchronous writer, with its upkeep after each batch.
    let mut w = db.trap_writer().unwrap();
    let events: Vec<Vec<TrapEvent>> = (0..batches)
        .map(|_| (0..per_batch).map(|_| hit(&c)).collect())
        .collect();
    let mut want: Vec<Uuid> = events.iter().flat_map(|b| ids(b)).collect();
    want.sort();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let (back, done) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        // The last batch's upkeep starts the pass and moves slice 0.
        for batch in &events {
            w.record(batch, &|| false).unwrap();
            w.maintain(false);
        }
        back.send(()).unwrap();
        // Then as many more slices as the test asks for.
        while let Ok(n) = rx.recv() {
            for _ in 0..n {
                w.maintain(false);
            }
            back.send(()).unwrap();
        }
        w.idle();
    });
    let step = |n: usize| {
        let (tx, done) = (&tx, &done);
        tx.send(n).unwrap();
        done.recv_timeout(Duration::from_secs(30)).unwrap();
    };
    done.recv_timeout(Duration::from_secs(60)).unwrap();
    // Slices 0..=slice moved, the pass not done: nothing deleted yet, nothing listed twice.
    step(usize::from(slice));
    assert_eq!(unindexed(&db).await, total, "deleted before the pass ended");
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
    assert_eq!(canary_hits(&db, &c, 7).await, want);
    // The rest of the pass: the moved rows are gone from the waiting table.
    step(usize::from(15 - slice));
    assert_eq!(unindexed(&db).await, 0);
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
    drop(tx);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();

    // record_trap_events' way: a whole pass once enough wait.
    for _ in 0..batches {
        let batch: Vec<TrapEvent> = (0..per_batch).map(|_| hit(&c)).collect();
        db.record_trap_events(&batch).await.unwrap();
        want.extend(ids(&batch));
    }
    let waiting = unindexed(&db).await;
    assert!(waiting < INDEX_EVERY as i64, "{waiting} hits still wait");
    want.sort();
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
    // After an emptied waiting table, new hits are numbered from 1 again and must not be
    // taken for moved ones.
    db.index_hits().await.unwrap();
    assert_eq!(unindexed(&db).await, 0);
    let fresh = vec![hit(&c), hit(&c)];
    db.record_trap_events(&fresh).await.unwrap();
    want.extend(ids(&fresh));
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
}

/// While requests queue for the next batch, the writer puts the index's upkeep off, until
/// twice the usual number of hits wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_upkeep_waits_while_requests_queue_up_to_a_bound() {
    use keytrap_store_sqlite::INDEX_EVERY;
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let mut w = db.trap_writer().unwrap();
    let per_batch = 512;
    let slice0 = i64::from(keytrap_store_sqlite::index_slice(c.id) == 0);
    let record = move |mut w: Box<dyn TrapWriter>, batches: usize, queued: bool| {
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            for _ in 0..batches {
                let batch: Vec<TrapEvent> = (0..per_batch).map(|_| hit(&c)).collect();
                w.record(&batch, &|| false).unwrap();
                w.maintain(queued);
            }
            w
        })
    };
    // Past the usual start, requests queued after every batch: nothing moves.
    let past = INDEX_EVERY / per_batch + 2;
    w = record(w, past, true).await.unwrap();
    assert_eq!(unindexed(&db).await, (past * per_batch) as i64);
    // Up to twice that, still nothing; the batch that crosses it starts a pass (slice 0
    // moves; rows are deleted only when the pass ends).
    let more = 2 * INDEX_EVERY / per_batch - past;
    w = record(w, more, true).await.unwrap();
    let total = (2 * INDEX_EVERY) as i64;
    assert_eq!(unindexed(&db).await, total);
    let moved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hits_by_canary")
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(moved, slice0 * total, "only slice 0 may have moved");
    // Fifteen more batches, requests still queued: the pass goes on to its end.
    w = record(w, 15, true).await.unwrap();
    assert_eq!(unindexed(&db).await, (15 * per_batch) as i64);
    drop(w);
}

/// Hits in the database file itself, without its WAL: what checkpoints have copied.
fn hits_in_main_file(path: &std::path::Path) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let uri = format!("file:{}?immutable=1", path.display());
    let conn = rusqlite::Connection::open_with_flags(uri, flags).unwrap();
    // The migrations themselves may not have been copied yet.
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'hits'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if tables == 0 {
        return 0;
    }
    conn.query_row("SELECT COUNT(*) FROM hits", [], |r| r.get(0))
        .unwrap()
}

/// When nothing is queued, the writer moves waiting hits a slice per step, so the
/// recorder can stop between slices when a request arrives (the first only once the idle
/// interval of 1 s has passed), then checkpoints what it wrote; the hits stay listed
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upkeep_moves_waiting_hits_one_slice_per_step() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    let batch: Vec<TrapEvent> = (0..10).map(|_| hit(&c)).collect();
    let mut want = ids(&batch);
    want.sort();
    let step = |mut w: Box<dyn TrapWriter>| {
        tokio::task::spawn_blocking(move || {
            let more = w.idle_step();
            (w, more)
        })
    };
    let mut w = tokio::task::spawn_blocking(move || {
        let mut w = w;
        w.record(&batch, &|| false).unwrap();
        w
    })
    .await
    .unwrap();
    // Fresh writer: the idle interval has not passed, nothing is moved.
    let more;
    (w, more) = step(w).await.unwrap();
    assert!(!more);
    assert_eq!(unindexed(&db).await, 10);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // One slice: the pass is under way, the waiting rows are deleted only at its end.
    let mut more;
    (w, more) = step(w).await.unwrap();
    assert!(more, "the pass should go on");
    assert_eq!(unindexed(&db).await, 10, "a whole pass in one step");
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
    let mut steps = 1;
    while more {
        (w, more) = step(w).await.unwrap();
        steps += 1;
        assert!(steps <= 17, "16 slices and a checkpoint took {steps} steps");
    }
    assert_eq!(steps, 17, "16 slices, then the checkpoint");
    assert_eq!(unindexed(&db).await, 0);
    assert_eq!(canary_hits(&db, &c, 1000).await, want);
    assert_eq!(
        hits_in_main_file(db.path()),
        10,
        "the idle writer did not checkpoint"
    );
    tokio::task::spawn_blocking(move || w.idle()).await.unwrap();
}

/// The trap's connection does not checkpoint inside its commits, however large the WAL
/// grows (SQLite's automatic checkpoint would, at 1,000 pages); it checkpoints in its
/// upkeep after a batch, once 50 ms have passed since the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_commits_leave_the_checkpoint_to_the_upkeep() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    let batches = 50;
    let per_batch = 200;
    let w = tokio::task::spawn_blocking(move || {
        let mut w = w;
        for _ in 0..batches {
            let batch: Vec<TrapEvent> = (0..per_batch).map(|_| hit(&c)).collect();
            w.record(&batch, &|| false).unwrap();
        }
        w
    })
    .await
    .unwrap();
    let wal = std::fs::metadata(format!("{}-wal", db.path().display()))
        .unwrap()
        .len();
    assert!(wal > 1_000 * 4096, "the WAL holds only {wal} bytes");
    assert_eq!(hits_in_main_file(db.path()), 0, "a commit checkpointed");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let path = db.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut w = w;
        // More than INDEX_EVERY hits wait: a pass of 16 slices goes first, one a batch.
        for _ in 0..16 {
            w.maintain(false);
        }
        assert_eq!(
            hits_in_main_file(&path),
            0,
            "checkpointed before the index's upkeep"
        );
        w.maintain(false);
        w.idle();
    })
    .await
    .unwrap();
    assert_eq!(hits_in_main_file(db.path()), (batches * per_batch) as i64);
}

// ---- Canary incidents' counters folded across batches under load (trap_writer.rs,
// `Deferred`; docs/storage.md, "Counters under load").

/// Runs `batches` through `w` on a blocking thread (the writer blocks on the runtime for
/// the write gate), each with whether requests queue behind it; returns the writer.
async fn run(
    mut w: Box<dyn TrapWriter>,
    batches: Vec<(Vec<TrapEvent>, bool)>,
) -> Box<dyn TrapWriter> {
    tokio::task::spawn_blocking(move || {
        for (batch, queued) in &batches {
            w.record(batch, &|| *queued).unwrap();
        }
        w
    })
    .await
    .unwrap()
}

/// The open or latest canary incident of `c` (by first hit).
async fn canary_incident(db: &SqliteDatabase, c: &NewCanary) -> Incident {
    let mut v: Vec<Incident> = db
        .list_incidents(c.tenant_id, &IncidentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == IncidentKind::Canary && i.canary_id == Some(c.id))
        .collect();
    v.sort_by_key(|i| i.first_seen);
    v.pop().expect("the canary has an incident")
}

async fn marker_rows(db: &SqliteDatabase) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM trap_deferred_counts")
        .fetch_one(db.reader())
        .await
        .unwrap()
}

fn hit_of(e: &TrapEvent) -> &Hit {
    match e {
        TrapEvent::Hit(h) => h,
        TrapEvent::Unknown(_) => panic!("not a hit"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_fold_while_requests_queue_and_are_written_when_none_do() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    // The first hit opens the incident; the writer learns it is open at `high`.
    let w = run(w, vec![(vec![hit(&c)], false)]).await;
    let opened = canary_incident(&db, &c).await;
    assert_eq!(opened.hit_count, 1);

    // Under load (requests queue behind each batch) its hits are counted in memory.
    let w = run(
        w,
        vec![(vec![hit(&c), hit(&c)], true), (vec![hit(&c)], true)],
    )
    .await;
    let folded = canary_incident(&db, &c).await;
    assert_eq!(folded.id, opened.id);
    assert_eq!(
        folded.hit_count, 1,
        "counts were written although requests queued"
    );
    assert_eq!(
        marker_rows(&db).await,
        1,
        "folded counts leave the marker row"
    );
    assert_eq!(
        hit_count(&db, c.tenant_id).await,
        4,
        "every hit is stored at once"
    );

    // A batch with nothing queued behind it writes every count before it answers.
    let last = hit(&c);
    let (last_id, last_at) = (hit_of(&last).id, hit_of(&last).received_at);
    let w = run(w, vec![(vec![last], false)]).await;
    let written = canary_incident(&db, &c).await;
    assert_eq!(written.id, opened.id);
    assert_eq!(written.hit_count, 5);
    assert_eq!(written.last_hit_id, Some(last_id));
    assert_eq!(
        written.last_seen.timestamp_millis(),
        last_at.timestamp_millis()
    );
    assert_eq!(marker_rows(&db).await, 0);
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quiet_moment_writes_folded_counts() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    let mut w = run(w, vec![(vec![hit(&c)], false), (vec![hit(&c)], true)]).await;
    assert_eq!(canary_incident(&db, &c).await.hit_count, 1);
    // The recorder found nothing queued: its first idle step writes them.
    let w = tokio::task::spawn_blocking(move || {
        while w.idle_step() {}
        w.idle();
        w
    })
    .await
    .unwrap();
    assert_eq!(canary_incident(&db, &c).await.hit_count, 2);
    assert_eq!(marker_rows(&db).await, 0);
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolving_an_incident_with_folded_counts_opens_a_new_one_at_the_next_hit() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    let w = run(
        w,
        vec![(vec![hit(&c)], false), (vec![hit(&c), hit(&c)], true)],
    )
    .await;
    let first = canary_incident(&db, &c).await;
    // The writer lets go of the gate (no quiet moment: the counts stay folded), and the
    // API resolves the incident.
    drop(w);
    db.set_incident_status(
        c.tenant_id,
        first.id,
        IncidentStatus::Resolved,
        chrono::Utc::now(),
        audit(c.tenant_id, "incident.resolve"),
    )
    .await
    .unwrap();
    // The next hit, under load again, must not be counted into the resolved incident.
    let next = hit(&c);
    let next_id = hit_of(&next).id;
    let w = db.trap_writer().unwrap();
    let w = run(w, vec![(vec![next], true), (vec![], false)]).await;
    let second = canary_incident(&db, &c).await;
    assert_ne!(
        second.id, first.id,
        "a hit after the resolve was counted into it"
    );
    assert_eq!(second.status, IncidentStatus::Open);
    assert_eq!(second.hit_count, 1);
    assert_eq!(second.last_hit_id, Some(next_id));
    let resolved = db
        .get_incident(c.tenant_id, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.status, IncidentStatus::Resolved);
    assert_eq!(
        resolved.hit_count, 3,
        "the hits folded before the resolve count in it"
    );
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_after_a_stop_with_folded_counts_recounts_them_from_the_hits() {
    let db = TempSqlite::new().await.unwrap();
    let (_, _, canaries) = conformance::planted(&db.db, 2).await;
    let (a, b) = (&canaries[0], &canaries[1]);
    let w = db.trap_writer().unwrap();
    let mut batches = vec![(vec![hit(a), hit(b)], false)];
    let mut newest_a = (0i64, Uuid::nil());
    for _ in 0..5 {
        let batch = vec![hit(a), hit(b), hit(a)];
        for e in &batch {
            let h = hit_of(e);
            if h.canary_id == a.id {
                newest_a = newest_a.max((h.received_at.timestamp_millis(), h.id));
            }
        }
        batches.push((batch, true));
    }
    let w = run(w, batches).await;
    // The process stops with the counts folded: nothing writes them.
    drop(w);
    assert_eq!(canary_incident(&db, a).await.hit_count, 1);
    assert_eq!(marker_rows(&db).await, 1);

    // The next start's trap writer recounts before it records anything (the dropped
    // writer's lock went with it, as a dead process's does).
    let again = SqliteDatabase::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap();
    assert_eq!(
        canary_incident(&again, a).await.hit_count,
        1,
        "opening the database alone (keytrap migrate, an API-only process) must not recount"
    );
    let w = run(again.trap_writer().unwrap(), vec![(vec![], false)]).await;
    drop(w);
    let ia = canary_incident(&again, a).await;
    assert_eq!(ia.hit_count, 11);
    assert_eq!(ia.last_seen.timestamp_millis(), newest_a.0);
    assert_eq!(ia.last_hit_id, Some(newest_a.1));
    assert_eq!(canary_incident(&again, b).await.hit_count, 6);
    assert_eq!(marker_rows(&again).await, 0);
    // Store incidents were never folded: counted batch by batch.
    let store = again
        .list_incidents(a.tenant_id, &IncidentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.kind == IncidentKind::Store)
        .unwrap();
    assert_eq!(store.hit_count, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_start_recounts_before_it_serves_and_its_writer_keeps_the_lock() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = run(
        db.trap_writer().unwrap(),
        vec![
            (vec![hit(&c)], false),
            (vec![hit(&c), hit(&c)], true),
            (vec![hit(&c)], true),
        ],
    )
    .await;
    // The process stops with three counts folded.
    drop(w);
    assert_eq!(canary_incident(&db, &c).await.hit_count, 1);

    // A trap process starting on the file settles them before it serves anything, with
    // no request yet (the crash test caught a restart whose listings stayed short until
    // the trap's first request).
    let again = second_process(&db).await;
    again.prepare_trap().await.unwrap();
    assert_eq!(canary_incident(&again, &c).await.hit_count, 4);
    assert_eq!(marker_rows(&again).await, 0);

    // Its trap writer took over the lock: it folds (a marker row while counts wait), and
    // no other process can fold meanwhile.
    // (Its first batch learns the open incident, the second folds into it.)
    let w = run(
        again.trap_writer().unwrap(),
        vec![(vec![hit(&c)], true), (vec![hit(&c)], true)],
    )
    .await;
    assert_eq!(marker_rows(&again).await, 1);
    assert_eq!(canary_incident(&again, &c).await.hit_count, 5);
    let third = second_process(&db).await;
    third.prepare_trap().await.unwrap();
    let w3 = run(third.trap_writer().unwrap(), vec![(vec![hit(&c)], true)]).await;
    assert_eq!(
        canary_incident(&again, &c).await.hit_count,
        6,
        "a process without the lock must write its counts"
    );
    drop(w3);
    drop(w);
}

/// Another process on the same file (here: a second handle, with memory of its own).
async fn second_process(db: &TempSqlite) -> SqliteDatabase {
    SqliteDatabase::connect(&format!("sqlite://{}", db.path().display()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_in_another_process_is_seen_before_anything_is_counted_into_it() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    let w = db.trap_writer().unwrap();
    let w = run(w, vec![(vec![hit(&c)], false), (vec![hit(&c)], true)]).await;
    let first = canary_incident(&db, &c).await;
    // The API runs in another process: nothing it does reaches this one's memory.
    let api = second_process(&db).await;
    let mut w = w;
    w.idle(); // lets the gate go (the API's write waits for it)
    api.set_incident_status(
        c.tenant_id,
        first.id,
        IncidentStatus::Resolved,
        chrono::Utc::now(),
        audit(c.tenant_id, "incident.resolve"),
    )
    .await
    .unwrap();
    let w = run(w, vec![(vec![hit(&c)], true), (vec![], false)]).await;
    let second = canary_incident(&db, &c).await;
    assert_ne!(
        second.id, first.id,
        "a hit after the resolve was counted into it"
    );
    assert_eq!(second.hit_count, 1);
    let resolved = db
        .get_incident(c.tenant_id, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.hit_count, 2);
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_process_holding_the_lock_folds() {
    let db = TempSqlite::new().await.unwrap();
    let c = planted(&db).await;
    // This process's trap writer takes the lock with its first batch...
    let w = run(db.trap_writer().unwrap(), vec![(vec![hit(&c)], false)]).await;
    // ...so a second trap process on the file writes every count with its batch.
    let other = second_process(&db).await;
    let w2 = run(
        other.trap_writer().unwrap(),
        vec![(vec![hit(&c)], false), (vec![hit(&c), hit(&c)], true)],
    )
    .await;
    assert_eq!(canary_incident(&db, &c).await.hit_count, 4);
    assert_eq!(marker_rows(&db).await, 0);
    drop(w2);
    drop(w);
}
