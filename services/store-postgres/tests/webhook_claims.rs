//! Concurrent workers on one PostgreSQL queue: claims and fan-out never hand the same
//! message or event to two of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use keytrap_store::*;
use keytrap_store_postgres::{testing, PgDatabase};
use serde_json::json;
use uuid::Uuid;

fn audit(tenant: Uuid, action: &'static str) -> NewAudit {
    NewAudit {
        tenant_id: tenant,
        actor_token_id: None,
        action,
        target_type: "test",
        target_id: None,
        details: json!({}),
    }
}

/// A webhook endpoint of `tenant` at `url`, every event, standard format.
async fn endpoint(db: &PgDatabase, tenant: Uuid, url: String) -> WebhookEndpoint {
    db.create_webhook_endpoint(
        NewWebhookEndpoint {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            url,
            format: "standard".into(),
            events: vec![],
            min_severity: None,
            store_ids: vec![],
            exchanges: vec![],
            headers: Default::default(),
            routing_key: None,
            secret_sealed: "x".into(),
        },
        audit(tenant, "webhook.create"),
    )
    .await
    .unwrap()
}

/// A test message queued for `endpoint`.
async fn enqueue(db: &PgDatabase, tenant: Uuid, endpoint: Uuid) -> WebhookMessage {
    db.enqueue_webhook_message(
        NewWebhookMessage {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            endpoint_id: endpoint,
            event_type: TEST_EVENT.into(),
            payload: json!({}),
            at: Utc::now(),
        },
        audit(tenant, "webhook.test"),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_message() {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let db = Arc::new(db);
    let t = db
        .create_tenant("claims", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let mut endpoints = Vec::new();
    for i in 0..4 {
        let e = endpoint(&db, t.id, format!("https://h{i}.example.com/")).await;
        endpoints.push(e.id);
    }
    const N: usize = 400;
    for i in 0..N {
        enqueue(&db, t.id, endpoints[i % endpoints.len()]).await;
    }
    // Two claimers race in small batches until the queue is empty.
    let claimer = |name: &'static str| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = db
                    .claim_webhook_messages(&ClaimRequest {
                        owner: name.into(),
                        now: Utc::now(),
                        lease: std::time::Duration::from_secs(600),
                        limit: 7,
                        per_endpoint: 3,
                        exclude_endpoints: vec![],
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| c.message.id));
            }
            mine
        })
    };
    let (a, b) = (claimer("a"), claimer("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both claimers got work: {} / {}",
        a.len(),
        b.len()
    );
    let sa: HashSet<Uuid> = a.iter().copied().collect();
    let sb: HashSet<Uuid> = b.iter().copied().collect();
    assert_eq!(sa.len(), a.len(), "no message twice to one claimer");
    assert_eq!(sb.len(), b.len());
    assert!(sa.is_disjoint(&sb), "no message claimed by both");
    assert_eq!(sa.len() + sb.len(), N, "every message claimed once");
}

/// Two workers storing their attempts in concurrent group commits (bulk `UNNEST`
/// statements touching the same endpoint rows): every attempt is stored once, every
/// message reaches its state, and the endpoints' clocks end as the last results say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_group_commits_store_every_attempt() {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let db = Arc::new(db);
    let t = db
        .create_tenant("commits", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let mut endpoints = Vec::new();
    for i in 0..3 {
        let e = endpoint(&db, t.id, format!("https://c{i}.example.com/")).await;
        endpoints.push(e.id);
    }
    const N: usize = 600;
    for i in 0..N {
        enqueue(&db, t.id, endpoints[i % endpoints.len()]).await;
    }
    let worker = |name: &'static str| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut stored = 0usize;
            loop {
                let got = db
                    .claim_webhook_messages(&ClaimRequest {
                        owner: name.into(),
                        now: Utc::now(),
                        lease: std::time::Duration::from_secs(600),
                        limit: 40,
                        per_endpoint: 40,
                        exclude_endpoints: vec![],
                    })
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                // Odd messages fail for good (dead), even ones are delivered.
                let results: Vec<AttemptResult> = got
                    .iter()
                    .enumerate()
                    .map(|(i, c)| AttemptResult {
                        message_id: c.message.id,
                        lease_owner: name.into(),
                        body: Some("b".into()),
                        attempt: WebhookAttempt {
                            id: Uuid::now_v7(),
                            message_id: c.message.id,
                            attempt: 1,
                            outcome: if i % 2 == 0 { "success" } else { "failure" }.into(),
                            status_code: Some(if i % 2 == 0 { 200 } else { 500 }),
                            duration_ms: 1,
                            response_excerpt: None,
                            response_truncated: false,
                            error: None,
                            error_kind: None,
                            at: Utc::now(),
                        },
                        next: if i % 2 == 0 {
                            MessageNext::Delivered
                        } else {
                            MessageNext::Dead
                        },
                        success: i % 2 == 0,
                        disable_endpoint: None,
                    })
                    .collect();
                let ok = db.complete_webhook_attempts(&results).await.unwrap();
                assert!(ok.iter().all(|b| *b), "the owner's own leases are stored");
                stored += ok.len();
            }
            stored
        })
    };
    let (a, b) = (worker("a"), worker("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a + b, N);
    let mut ids = Vec::new();
    for e in &endpoints {
        let ms = db
            .list_webhook_messages(
                t.id,
                *e,
                Page {
                    after: None,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert!(ms
            .iter()
            .all(|m| m.status != MessageStatus::Pending && m.attempts == 1));
        ids.extend(ms.iter().map(|m| m.id));
    }
    assert_eq!(ids.len(), N);
    let attempts = db.list_webhook_attempts(t.id, &ids).await.unwrap();
    assert_eq!(attempts.len(), N, "one attempt row per message");
    let distinct: HashSet<Uuid> = attempts.iter().map(|a| a.message_id).collect();
    assert_eq!(distinct.len(), N);
}

/// What the management API does to an endpoint while a group commit is in flight.
#[derive(Clone, Copy, Debug)]
enum EndpointChange {
    Delete,
    Update,
}

/// A group commit (`complete_webhook_attempts`) locks its messages, then their endpoint.
/// Deleting or editing the endpoint in between must wait for it, not deadlock with it:
/// PostgreSQL would abort one side (a 500 to the operator, or the attempt records lost).
/// The commit is replayed here step by step in its lock order on a raw transaction, so
/// the interleaving that deadlocked is forced rather than hoped for.
async fn endpoint_change_waits_for_a_commit(change: EndpointChange) {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let db = Arc::new(db);
    let t = db
        .create_tenant("lock-order", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let e = endpoint(&db, t.id, "https://lock.example.com/".into()).await;
    let m = enqueue(&db, t.id, e.id).await;

    // The commit's first statement: the message row (it keeps the body it rendered).
    let mut tx = db.pool().begin().await.unwrap();
    let commit_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE webhook_messages SET body = 'rendered before the edit' WHERE id = $1")
        .bind(m.id)
        .execute(&mut *tx)
        .await
        .unwrap();

    let op = {
        let (db, e) = (db.clone(), e.clone());
        tokio::spawn(async move {
            match change {
                EndpointChange::Delete => db
                    .delete_webhook_endpoint(t.id, e.id, audit(t.id, "webhook.delete"))
                    .await
                    .map(|_| ()),
                EndpointChange::Update => {
                    let mut e = e;
                    e.url = "https://lock2.example.com/".into();
                    db.update_webhook_endpoint(&e, audit(t.id, "webhook.update"))
                        .await
                        .map(|_| ())
                }
            }
        })
    };
    // Until the operation waits on the commit's lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(commit_pid)
        .fetch_one(db.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{change:?} never waited on the commit's message lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The commit's last statement: the endpoint row (its failure clock); then it ends.
    sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
        .bind(e.id)
        .execute(&mut *tx)
        .await
        .expect("the commit is not the deadlock victim");
    tx.commit().await.unwrap();
    op.await
        .unwrap()
        .unwrap_or_else(|err| panic!("{change:?} after the commit: {err}"));

    let after = db.get_webhook_endpoint(t.id, e.id).await.unwrap();
    match change {
        EndpointChange::Delete => {
            assert!(after.is_none(), "the endpoint is gone");
            assert!(db.get_webhook_message(t.id, m.id).await.unwrap().is_none());
        }
        EndpointChange::Update => {
            assert_eq!(after.unwrap().url, "https://lock2.example.com/");
            let m = db.get_webhook_message(t.id, m.id).await.unwrap().unwrap();
            assert!(
                m.body.is_none(),
                "the undelivered message is rendered again"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_delete_waits_for_a_group_commit() {
    endpoint_change_waits_for_a_commit(EndpointChange::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_update_waits_for_a_group_commit() {
    endpoint_change_waits_for_a_commit(EndpointChange::Update).await;
}
