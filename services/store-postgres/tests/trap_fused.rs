//! The one-statement group commit (`trap_fused.rs`): batches that only count commit in
//! one statement with exactly the effects of the transaction; a batch that must open or
//! escalate an incident, find new unknown keys, or queue `hit.recorded` events goes
//! through the transaction, without trying the statement where the process knows
//! better, and otherwise after the statement refused it whole: nothing counted twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use keytrap_core::Exchange;
use keytrap_store::conformance::{audit, hit, new_endpoint, planted};
use keytrap_store::*;
use keytrap_store_postgres::testing;
use uuid::Uuid;

const SOURCE: &str = "198.51.100.77";

fn unknown(i: u32) -> TrapEvent {
    let mut key_hash = [0u8; 32];
    key_hash[..4].copy_from_slice(&i.to_be_bytes());
    TrapEvent::Unknown(UnknownUse {
        exchange: Exchange::Bybit,
        source: SOURCE.into(),
        key_hash,
        key_hint: "XkQ4...9fZp".into(),
        malformed: false,
        path: "/v5/account/wallet-balance".into(),
        user_agent: Some("curl/8.5".into()),
        at: Utc::now(),
    })
}

fn hit_of(e: &TrapEvent) -> &Hit {
    match e {
        TrapEvent::Hit(h) => h,
        TrapEvent::Unknown(_) => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_only_count_commit_in_one_statement() {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let (t, s, cs) = planted(&db, 1).await;
    let incidents = || async {
        let all = db
            .list_incidents(t.id, &IncidentFilter::default())
            .await
            .unwrap();
        let find = |k: IncidentKind, c: Option<Uuid>| {
            all.iter()
                .find(|i| i.kind == k && i.status != IncidentStatus::Resolved && i.canary_id == c)
                .cloned()
                .unwrap()
        };
        (
            find(IncidentKind::Canary, Some(cs[0].id)),
            find(IncidentKind::Canary, Some(cs[1].id)),
            find(IncidentKind::Store, None),
        )
    };
    let source = || async {
        db.list_unknown_sources(100)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.source == SOURCE)
            .unwrap()
    };

    // Incidents open: the statement refuses, the transaction opens them.
    db.record_trap_events(&[
        hit(&cs[0], Severity::Low, SignatureState::Invalid, "read"),
        hit(&cs[1], Severity::High, SignatureState::Valid, "read"),
    ])
    .await
    .unwrap();
    assert_eq!(db.one_statement_commits(), 0);
    assert_eq!(
        db.one_statement_refusals(),
        0,
        "a canary's first hit is not even tried (no round trip spent on it)"
    );
    // A source's first sightings fill up: the transaction (the source is not known full).
    let fill: Vec<TrapEvent> = (0..UNKNOWN_KEYS_PER_SOURCE as u32 + 5)
        .map(unknown)
        .collect();
    db.record_trap_events(&fill).await.unwrap();
    assert_eq!(db.one_statement_commits(), 0);
    let events_before = db.list_events(t.id, Page::default()).await.unwrap().len();

    // Only counts: hits on open incidents at or below their severity, the full source.
    let batch = vec![
        hit(&cs[0], Severity::Low, SignatureState::Missing, "read"),
        unknown(10_000),
        hit(&cs[1], Severity::High, SignatureState::Valid, "read"),
        hit(&cs[0], Severity::Low, SignatureState::Invalid, "read"),
        unknown(10_001),
    ];
    db.record_trap_events(&batch).await.unwrap();
    assert_eq!(db.one_statement_commits(), 1, "one statement");
    assert_eq!(db.one_statement_refusals(), 0);
    let (i0, i1, st) = incidents().await;
    assert_eq!((i0.hit_count, i0.severity), (3, Severity::Low));
    assert_eq!((i1.hit_count, i1.severity), (2, Severity::High));
    assert_eq!((st.hit_count, st.canary_count, st.store_id), (5, 2, s.id));
    assert_eq!(i0.last_hit_id, Some(hit_of(&batch[3]).id));
    assert_eq!(i1.last_hit_id, Some(hit_of(&batch[2]).id));
    assert_eq!(st.last_hit_id, Some(hit_of(&batch[3]).id));
    let newest = [&batch[0], &batch[2], &batch[3]]
        .iter()
        .map(|e| hit_of(e).received_at)
        .max()
        .unwrap();
    assert_eq!(
        st.last_seen.timestamp_micros(),
        newest.timestamp_micros(),
        "last_seen moves to the batch's newest hit"
    );
    // Every hit stored whole, with its canary's incident.
    for (e, incident) in [(&batch[0], i0.id), (&batch[2], i1.id), (&batch[3], i0.id)] {
        let want = hit_of(e);
        let got = db.get_hit(t.id, want.id).await.unwrap().unwrap();
        assert_eq!(got.incident_id, Some(incident));
        let mut want = want.clone();
        want.incident_id = Some(incident);
        want.received_at = got.received_at;
        assert_eq!(got, want);
        assert_eq!(
            got.received_at.timestamp_micros(),
            hit_of(e).received_at.timestamp_micros()
        );
    }
    let u = source().await;
    assert_eq!(
        (u.requests, u.distinct_keys),
        (
            i64::from(UNKNOWN_KEYS_PER_SOURCE as u32 + 7),
            UNKNOWN_KEYS_PER_SOURCE
        )
    );
    assert_eq!(
        db.list_events(t.id, Page::default()).await.unwrap().len(),
        events_before,
        "counting emits no event"
    );
    // Unknown keys alone, from the full source: one statement too.
    db.record_trap_events(&[unknown(10_002)]).await.unwrap();
    assert_eq!(db.one_statement_commits(), 2);
    assert_eq!(
        source().await.requests,
        i64::from(UNKNOWN_KEYS_PER_SOURCE as u32 + 8)
    );

    // An escalation among counted hits: refused whole, then the transaction; nothing of
    // the refused statement stays (no hit or request counted twice).
    db.record_trap_events(&[
        hit(&cs[1], Severity::High, SignatureState::Valid, "read"),
        unknown(10_003),
        hit(&cs[0], Severity::Critical, SignatureState::Valid, "trade"),
    ])
    .await
    .unwrap();
    assert_eq!(db.one_statement_commits(), 2);
    assert_eq!(db.one_statement_refusals(), 0, "an escalation is not tried");
    let (i0, i1, st) = incidents().await;
    assert_eq!((i0.hit_count, i0.severity), (4, Severity::Critical));
    assert_eq!(i1.hit_count, 3);
    assert_eq!((st.hit_count, st.severity), (7, Severity::Critical));
    assert_eq!(
        source().await.requests,
        i64::from(UNKNOWN_KEYS_PER_SOURCE as u32 + 9)
    );
    assert_eq!(
        db.list_hits(t.id, &HitFilter::default())
            .await
            .unwrap()
            .len(),
        7
    );
    let escalations = db.list_events(t.id, Page::default()).await.unwrap().len() - events_before;
    assert_eq!(escalations, 2, "the canary's and the store's escalations");

    // A resolved incident: the next hit opens a new one through the transaction.
    db.set_incident_status(
        t.id,
        i1.id,
        IncidentStatus::Resolved,
        Utc::now(),
        audit(t.id, "incident.resolve"),
    )
    .await
    .unwrap();
    db.record_trap_events(&[hit(&cs[1], Severity::Low, SignatureState::Invalid, "read")])
        .await
        .unwrap();
    assert_eq!(db.one_statement_commits(), 2);
    assert_eq!(
        db.one_statement_refusals(),
        1,
        "tried (the incident was known open) and refused by its own check"
    );
    let (_, reopened, _) = incidents().await;
    assert_ne!(reopened.id, i1.id);
    assert_eq!(reopened.hit_count, 1);

    // A tenant subscribed to hit.recorded: its hits need outbox rows, so the transaction.
    let mut sub = new_endpoint(t.id, "https://hits.example.com/");
    sub.events = vec![HIT_RECORDED.into()];
    db.create_webhook_endpoint(sub, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    let counted = hit(&cs[0], Severity::Low, SignatureState::Invalid, "read");
    db.record_trap_events(std::slice::from_ref(&counted))
        .await
        .unwrap();
    assert_eq!(db.one_statement_commits(), 2);
    assert_eq!(db.one_statement_refusals(), 1, "not tried");
    let recorded: Vec<Event> = db
        .list_events(t.id, Page::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == HIT_RECORDED)
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].hit_id, Some(hit_of(&counted).id));
}

/// Migration 0006 took the per-row foreign keys off `hits`: every hit's (canary, store)
/// pair is checked once per batch instead, by the statement and by the transaction, and
/// canaries and stores cannot be deleted, so the pair stays true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_must_name_a_stored_canary_in_its_store() {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let (t1, s1, a) = planted(&db, 1).await;
    let (_, s2, b) = planted(&db, 2).await;
    // Both canaries' and both stores' incidents open: the process knows their ranks.
    db.record_trap_events(&[
        hit(&a[0], Severity::Low, SignatureState::Invalid, "read"),
        hit(&b[0], Severity::Low, SignatureState::Invalid, "read"),
    ])
    .await
    .unwrap();
    let hits_of_a = || async {
        db.list_hits(t1.id, &HitFilter::default())
            .await
            .unwrap()
            .len()
    };
    assert_eq!(hits_of_a().await, 1);

    // Canary a[0] with store s2: each is stored, the pair is not.
    let mut crossed = hit(&a[0], Severity::Low, SignatureState::Invalid, "read");
    if let TrapEvent::Hit(h) = &mut crossed {
        h.store_id = s2.id;
    }
    let batch = [
        hit(&a[0], Severity::Low, SignatureState::Invalid, "read"),
        crossed,
    ];
    let err = db.record_trap_events(&batch).await;
    assert!(err.is_err(), "a hit outside its canary's store is refused");
    assert_eq!(
        (db.one_statement_commits(), db.one_statement_refusals()),
        (0, 1),
        "the statement was tried (every rank known) and refused by its own check"
    );
    assert_eq!(hits_of_a().await, 1, "nothing of the batch is kept");
    let canary_incident = db
        .list_incidents(t1.id, &IncidentFilter::default())
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.kind == IncidentKind::Canary)
        .unwrap();
    assert_eq!(canary_incident.hit_count, 1);

    // A canary that is not stored at all: the transaction refuses it.
    let mut ghost = a[1].clone();
    ghost.id = Uuid::now_v7();
    let err = db
        .record_trap_events(&[hit(&ghost, Severity::High, SignatureState::Valid, "read")])
        .await;
    assert!(err.is_err(), "a hit of an unknown canary is refused");

    // The same pairs, right, commit: first through the transaction (the refusal made
    // the process forget the ranks), then through the statement.
    for commits in [0, 1] {
        db.record_trap_events(&[
            hit(&a[0], Severity::Low, SignatureState::Invalid, "read"),
            hit(&b[0], Severity::Low, SignatureState::Invalid, "read"),
        ])
        .await
        .unwrap();
        assert_eq!(db.one_statement_commits(), commits);
    }
    assert_eq!(hits_of_a().await, 3);

    // Canaries and stores are never deleted, so a hit's pair stays stored.
    for sql in [
        format!("DELETE FROM canaries WHERE id = '{}'", b[1].id),
        format!("DELETE FROM stores WHERE id = '{}'", s1.id),
        "TRUNCATE canaries CASCADE".to_string(),
        "TRUNCATE stores CASCADE".to_string(),
    ] {
        let e = sqlx::query(&sql).execute(db.pool()).await.expect_err(&sql);
        let code = e
            .as_database_error()
            .and_then(|d| d.code().map(|c| c.to_string()));
        assert_eq!(code.as_deref(), Some("23001"), "{sql}: {e}");
    }
    assert_eq!(hits_of_a().await, 3);
}
