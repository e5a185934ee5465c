//! Two replicas on one database: a `hit.recorded` subscription made through the API
//! replica reaches the trap replica's cached subscriber list by its background refresh
//! (the trap never reads it inside a hit's transaction once it has an answer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use keytrap_core::Exchange;
use keytrap_store::*;
use keytrap_store_postgres::{testing, PgDatabase};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
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

fn hit(c: &NewCanary) -> TrapEvent {
    TrapEvent::Hit(Box::new(Hit {
        id: Uuid::now_v7(),
        tenant_id: c.tenant_id,
        canary_id: c.id,
        store_id: c.store_id,
        incident_id: None,
        exchange: c.exchange,
        method: "GET".into(),
        path: "/api/v3/account".into(),
        query: None,
        body_excerpt: None,
        source_ip: "203.0.113.9".into(),
        forwarded_for: None,
        user_agent: Some("ccxt/4.5".into()),
        client_fingerprint: None,
        signature_state: SignatureState::Valid,
        action_class: "read".into(),
        action_params: json!({}),
        severity: Severity::High,
        received_at: Utc::now(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_on_another_replica_reaches_the_trap() {
    let Ok(url) = std::env::var(testing::URL_VAR) else {
        // `testing::fresh` explains the skip (and fails under CI).
        assert!(testing::fresh().await.is_none());
        return;
    };
    let schema_url = testing::fresh_schema_url(&url).await;
    let connect = || async {
        PgDatabase::connect_with(PgConnectOptions::from_str(&schema_url).unwrap(), 2)
            .await
            .unwrap()
    };
    let (trap, api) = (connect().await, connect().await);
    let t = api
        .create_tenant("replicas", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let s = api
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: t.id,
                name: "prod-users-db".into(),
                kind: StoreKind::Database,
                location: None,
                labels: Labels::new(),
            },
            audit(t.id, "store.create"),
        )
        .await
        .unwrap();
    let c = NewCanary {
        id: Uuid::now_v7(),
        tenant_id: t.id,
        store_id: s.id,
        exchange: Exchange::Binance,
        lookup_digest: [9; 32],
        key_version: 1,
        memo: None,
        labels: Labels::new(),
        created_at: Utc::now(),
        expires_at: None,
    };
    api.insert_canaries(std::slice::from_ref(&c), audit(t.id, "canary.mint"))
        .await
        .unwrap();
    let hit_events = || async {
        api.list_events(t.id, Page::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == HIT_RECORDED)
            .count()
    };
    // The trap learns "nobody subscribes".
    trap.record_trap_events(&[hit(&c)]).await.unwrap();
    assert_eq!(hit_events().await, 0);

    api.create_webhook_endpoint(
        NewWebhookEndpoint {
            id: Uuid::now_v7(),
            tenant_id: t.id,
            url: "https://hits.example.com/".into(),
            format: "standard".into(),
            events: vec![HIT_RECORDED.into()],
            min_severity: None,
            store_ids: vec![],
            exchanges: vec![],
            headers: Default::default(),
            routing_key: None,
            secret_sealed: "x".into(),
        },
        audit(t.id, "webhook.create"),
    )
    .await
    .unwrap();
    // Hits keep coming; after the refresh interval the background read brings the
    // subscription in (bounded wait, a failsafe: no timing claim).
    let mut recorded = 0;
    for _ in 0..300 {
        trap.record_trap_events(&[hit(&c)]).await.unwrap();
        recorded += 1;
        if hit_events().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = hit_events().await;
    assert!(n > 0, "the subscription never reached the trap replica");
    assert!(
        n < recorded,
        "the stale answer was used meanwhile ({n} of {recorded})"
    );
    // From then on every hit has its event.
    for _ in 0..3 {
        trap.record_trap_events(&[hit(&c)]).await.unwrap();
    }
    assert_eq!(hit_events().await, n + 3);
}
