//! Behaviour every backend must show. Each function takes a fresh, migrated database.
//! Backends run all of them with [`conformance_suite!`](crate::conformance_suite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, Utc};
use keytrap_core::Exchange;
use serde_json::json;
use uuid::Uuid;

use crate::*;

/// Expands to one `#[tokio::test]` per conformance behaviour. `$make` is an async fn
/// returning `Option<impl Deref<Target = dyn Database>>`; `None` skips (it must say why).
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@each $make;
            meta_first_writer_wins,
            tenants_and_tokens,
            stores_crud_and_tenant_isolation,
            canaries_insert_get_list,
            canary_batch_is_all_or_nothing,
            canary_disable_is_audited_and_scoped,
            canary_expiry_is_derived,
            canary_by_digest_crosses_tenants,
            bulk_insert_ten_thousand,
            text_roundtrips_unchanged,
            trap_hits_open_and_escalate_incidents,
            trap_batch_is_all_or_nothing,
            trap_unknown_keys_are_counted_and_bounded,
            trap_orders_are_remembered_per_canary,
            trap_nonces_strictly_increase_per_canary,
            trap_batches_count_open_incidents_in_bulk,
            trap_writer_records_like_record_trap_events,
            incident_status_is_scoped_and_audited,
            // ---- placements (issue 5)
            placements_record_list_and_delete,
            placements_are_all_or_nothing_and_unique,
            canary_expiry_can_be_set_and_cleared,
            webhook_endpoints_crud_and_scoping,
            webhook_fanout_is_filtered_and_idempotent,
            webhook_claims_lease_retry_and_dead_letter,
            webhook_group_commit_equals_one_by_one,
            webhook_leases_released_on_shutdown,
            webhook_hit_recorded_only_when_subscribed,
        );
    };
    (@each $make:path; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let Some(db) = $make().await else { return };
                $crate::conformance::$name(&*db).await;
            }
        )*
    };
}

/// An audit entry for a test action (shared with the backends' own tests).
pub fn audit(tenant: Uuid, action: &'static str) -> NewAudit {
    NewAudit {
        tenant_id: tenant,
        actor_token_id: None,
        action,
        target_type: "test",
        target_id: None,
        details: json!({}),
    }
}

async fn tenant(db: &dyn Database, name: &str) -> Tenant {
    db.create_tenant(name, false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap()
}

async fn store(db: &dyn Database, tenant: Uuid, name: &str) -> Store {
    db.create_store(
        NewStore {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name: name.into(),
            kind: StoreKind::Database,
            location: Some("postgres://db/users#exchange_api_keys".into()),
            labels: [("env".to_string(), "prod".to_string())].into(),
        },
        audit(tenant, "store.create"),
    )
    .await
    .unwrap()
}

fn digest(n: u64) -> [u8; 32] {
    let mut d = [7u8; 32];
    d[..8].copy_from_slice(&n.to_be_bytes());
    d
}

fn new_canary(tenant: Uuid, store: Uuid, exchange: Exchange, n: u64) -> NewCanary {
    NewCanary {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        store_id: store,
        exchange,
        lookup_digest: digest(n),
        key_version: 1,
        memo: Some(format!("canary {n}")),
        labels: [("batch".to_string(), (n % 2).to_string())].into(),
        created_at: Utc::now(),
        expires_at: None,
    }
}

pub async fn meta_first_writer_wins(db: &dyn Database) {
    assert_eq!(db.get_meta("k").await.unwrap(), None);
    assert_eq!(db.init_meta("k", "first").await.unwrap(), "first");
    assert_eq!(db.init_meta("k", "second").await.unwrap(), "first");
    assert_eq!(db.get_meta("k").await.unwrap().as_deref(), Some("first"));
    db.ping().await.unwrap();
}

pub async fn tenants_and_tokens(db: &dyn Database) {
    assert!(db.root_tenant().await.unwrap().is_none());
    let root = db
        .create_tenant("default", true, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    assert_eq!(db.root_tenant().await.unwrap().unwrap().id, root.id);
    assert_eq!(db.get_tenant(root.id).await.unwrap().unwrap(), root);
    let dup = db
        .create_tenant("default", false, audit(Uuid::nil(), "tenant.create"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let token = db
        .create_token(
            NewToken {
                id: Uuid::now_v7(),
                tenant_id: root.id,
                name: "ci".into(),
                scopes: vec![Scope::Mint, Scope::Read],
                digest: digest(1),
            },
            audit(root.id, "token.create"),
        )
        .await
        .unwrap();
    assert_eq!(token.scopes, vec![Scope::Mint, Scope::Read]);
    assert!(token.allows(Scope::Read) && !token.allows(Scope::Admin));
    let found = db.token_by_digest(&digest(1)).await.unwrap().unwrap();
    assert_eq!(found, token);
    assert!(db.token_by_digest(&digest(2)).await.unwrap().is_none());
    assert_eq!(db.list_tokens(root.id).await.unwrap().len(), 1);

    let other = tenant(db, "other").await;
    let wrong = db
        .revoke_token(other.id, token.id, audit(other.id, "token.revoke"))
        .await;
    assert!(matches!(wrong, Err(StoreError::NotFound)), "{wrong:?}");
    let revoked = db
        .revoke_token(root.id, token.id, audit(root.id, "token.revoke"))
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(db.token_by_digest(&digest(1)).await.unwrap().is_none());

    let log = db.list_audit(root.id, Page::default()).await.unwrap();
    let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.create", "token.revoke"]);
    assert!(db
        .list_audit(other.id, Page::default())
        .await
        .unwrap()
        .iter()
        .all(|e| e.action != "token.create"));
}

pub async fn stores_crud_and_tenant_isolation(db: &dyn Database) {
    let a = tenant(db, "a").await;
    let b = tenant(db, "b").await;
    let s1 = store(db, a.id, "prod-users-db").await;
    let s2 = store(db, a.id, "nightly-backup").await;
    assert_eq!(s1.kind, StoreKind::Database);
    assert_eq!(s1.labels.get("env").map(String::as_str), Some("prod"));

    assert_eq!(db.get_store(a.id, s1.id).await.unwrap().unwrap(), s1);
    assert_eq!(
        db.get_store_by_name(a.id, "nightly-backup")
            .await
            .unwrap()
            .unwrap(),
        s2
    );
    // Tenant b sees none of tenant a's stores, and may reuse a name.
    assert!(db.get_store(b.id, s1.id).await.unwrap().is_none());
    assert!(db
        .get_store_by_name(b.id, "prod-users-db")
        .await
        .unwrap()
        .is_none());
    assert!(db
        .list_stores(b.id, Page::default())
        .await
        .unwrap()
        .is_empty());
    store(db, b.id, "prod-users-db").await;

    let dup = db
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: a.id,
                name: "prod-users-db".into(),
                kind: StoreKind::Backup,
                location: None,
                labels: Labels::new(),
            },
            audit(a.id, "store.create"),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let listed = db.list_stores(a.id, Page::default()).await.unwrap();
    assert_eq!(listed, vec![s1.clone(), s2.clone()]);
    let page = db
        .list_stores(
            a.id,
            Page {
                after: Some(s1.id),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page, vec![s2]);
    // The failed duplicate left no audit line behind.
    let log = db.list_audit(a.id, Page::default()).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "store.create").count(), 2);
}

pub async fn canaries_insert_get_list(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let other = tenant(db, "other").await;
    let s1 = store(db, t.id, "s1").await;
    let s2 = store(db, t.id, "s2").await;
    let batch = vec![
        new_canary(t.id, s1.id, Exchange::Binance, 1),
        new_canary(t.id, s1.id, Exchange::Kucoin, 2),
        new_canary(t.id, s2.id, Exchange::Binance, 3),
    ];
    db.insert_canaries(&batch, audit(t.id, "canary.mint"))
        .await
        .unwrap();

    let got = db.get_canary(t.id, batch[1].id).await.unwrap().unwrap();
    assert_eq!(got.exchange, Exchange::Kucoin);
    assert_eq!(got.store_id, s1.id);
    assert_eq!(got.status, CanaryStatus::Active);
    assert_eq!(got.memo.as_deref(), Some("canary 2"));
    assert_eq!(got.key_version, 1);
    assert!(
        (got.created_at - batch[1].created_at)
            .num_milliseconds()
            .abs()
            <= 1
    );
    assert!(db
        .get_canary(other.id, batch[1].id)
        .await
        .unwrap()
        .is_none());

    let all = db
        .list_canaries(t.id, &CanaryFilter::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|c| c.id).collect::<Vec<_>>(),
        batch.iter().map(|c| c.id).collect::<Vec<_>>()
    );
    let by_store = db
        .list_canaries(
            t.id,
            &CanaryFilter {
                store_id: Some(s1.id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_store.len(), 2);
    let by_exchange = db
        .list_canaries(
            t.id,
            &CanaryFilter {
                exchange: Some(Exchange::Binance),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_exchange.len(), 2);
    let by_label = db
        .list_canaries(
            t.id,
            &CanaryFilter {
                label: Some(("batch".into(), "1".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_label.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![batch[0].id, batch[2].id]
    );
    let paged = db
        .list_canaries(
            t.id,
            &CanaryFilter {
                page: Page {
                    after: Some(batch[0].id),
                    limit: 1,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0].id, batch[1].id);
    assert!(db
        .list_canaries(other.id, &CanaryFilter::default())
        .await
        .unwrap()
        .is_empty());
}

pub async fn canary_batch_is_all_or_nothing(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let s = store(db, t.id, "s").await;
    db.insert_canaries(
        &[new_canary(t.id, s.id, Exchange::Okx, 10)],
        audit(t.id, "canary.mint"),
    )
    .await
    .unwrap();
    // The third canary's digest collides with the stored one: nothing of the batch lands.
    let batch = vec![
        new_canary(t.id, s.id, Exchange::Okx, 11),
        new_canary(t.id, s.id, Exchange::Okx, 12),
        new_canary(t.id, s.id, Exchange::Okx, 10),
    ];
    let err = db.insert_canaries(&batch, audit(t.id, "canary.mint")).await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let all = db
        .list_canaries(t.id, &CanaryFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let log = db.list_audit(t.id, Page::default()).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "canary.mint").count(), 1);
}

pub async fn canary_disable_is_audited_and_scoped(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let other = tenant(db, "other").await;
    let s = store(db, t.id, "s").await;
    let c = new_canary(t.id, s.id, Exchange::Bybit, 20);
    db.insert_canaries(std::slice::from_ref(&c), audit(t.id, "canary.mint"))
        .await
        .unwrap();

    let wrong = db
        .disable_canary(
            other.id,
            c.id,
            Utc::now(),
            audit(other.id, "canary.disable"),
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::NotFound)), "{wrong:?}");
    assert_eq!(
        db.get_canary(t.id, c.id).await.unwrap().unwrap().status,
        CanaryStatus::Active
    );

    let at = Utc::now();
    let d = db
        .disable_canary(t.id, c.id, at, audit(t.id, "canary.disable"))
        .await
        .unwrap();
    assert_eq!(d.status, CanaryStatus::Disabled);
    let first_at = d.disabled_at.unwrap();
    // Idempotent: a second disable keeps the first time.
    let again = db
        .disable_canary(
            t.id,
            c.id,
            at + Duration::seconds(5),
            audit(t.id, "canary.disable"),
        )
        .await
        .unwrap();
    assert_eq!(again.disabled_at, Some(first_at));
    let disabled = db
        .list_canaries(
            t.id,
            &CanaryFilter {
                status: Some(CanaryStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1);
    let log = db.list_audit(t.id, Page::default()).await.unwrap();
    assert!(log.iter().any(|e| e.action == "canary.disable"));
    assert!(db
        .list_audit(other.id, Page::default())
        .await
        .unwrap()
        .iter()
        .all(|e| e.action != "canary.disable"));
}

pub async fn canary_expiry_is_derived(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let s = store(db, t.id, "s").await;
    let mut past = new_canary(t.id, s.id, Exchange::Kraken, 30);
    past.expires_at = Some(Utc::now() - Duration::seconds(1));
    let mut future = new_canary(t.id, s.id, Exchange::Kraken, 31);
    future.expires_at = Some(Utc::now() + Duration::days(1));
    db.insert_canaries(&[past.clone(), future.clone()], audit(t.id, "canary.mint"))
        .await
        .unwrap();
    assert_eq!(
        db.get_canary(t.id, past.id).await.unwrap().unwrap().status,
        CanaryStatus::Expired
    );
    assert_eq!(
        db.get_canary(t.id, future.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        CanaryStatus::Active
    );
    for (status, id) in [
        (CanaryStatus::Expired, past.id),
        (CanaryStatus::Active, future.id),
    ] {
        let got = db
            .list_canaries(
                t.id,
                &CanaryFilter {
                    status: Some(status),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id]);
    }
}

pub async fn canary_by_digest_crosses_tenants(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let s = store(db, t.id, "s").await;
    let c = new_canary(t.id, s.id, Exchange::Coinbase, 40);
    db.insert_canaries(std::slice::from_ref(&c), audit(t.id, "canary.mint"))
        .await
        .unwrap();
    let found = db.canary_by_digest(&digest(40)).await.unwrap().unwrap();
    assert_eq!((found.id, found.tenant_id), (c.id, t.id));
    assert!(db.canary_by_digest(&digest(41)).await.unwrap().is_none());
}

pub async fn bulk_insert_ten_thousand(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let s = store(db, t.id, "s").await;
    let batch: Vec<_> = (0..10_000)
        .map(|n| new_canary(t.id, s.id, Exchange::Binance, 1_000 + n))
        .collect();
    db.insert_canaries(&batch, audit(t.id, "canary.mint"))
        .await
        .unwrap();
    let mut seen = 0;
    let mut after = None;
    loop {
        let page = db
            .list_canaries(
                t.id,
                &CanaryFilter {
                    page: Page { after, limit: 1000 },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen += page.len();
        after = page.last().map(|c| c.id);
    }
    assert_eq!(seen, 10_000);
}

pub async fn text_roundtrips_unchanged(db: &dyn Database) {
    let t = tenant(db, "t").await;
    let name = "d\u{e9}p\u{f4}t \u{1f511} '; DROP TABLE stores; --";
    let s = db
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: t.id,
                name: name.into(),
                kind: StoreKind::KubernetesSecret,
                location: Some("ns/secret \"x\"".into()),
                labels: [("k\"ey".to_string(), "v\nal".to_string())].into(),
            },
            audit(t.id, "store.create"),
        )
        .await
        .unwrap();
    let got = db.get_store(t.id, s.id).await.unwrap().unwrap();
    assert_eq!(got.name, name);
    assert_eq!(got.kind, StoreKind::KubernetesSecret);
    assert_eq!(got.labels.get("k\"ey").map(String::as_str), Some("v\nal"));
    let mut c = new_canary(t.id, s.id, Exchange::CoinbaseExchange, 50);
    c.memo = Some("\u{0}nul and \u{202e}bidi".replace('\u{0}', ""));
    db.insert_canaries(std::slice::from_ref(&c), audit(t.id, "canary.mint"))
        .await
        .unwrap();
    let got = db.get_canary(t.id, c.id).await.unwrap().unwrap();
    assert_eq!(got.memo, c.memo);
    assert_eq!(got.exchange, Exchange::CoinbaseExchange);
}

/// A hit of canary `c` (shared with the backends' own tests).
pub fn hit(c: &NewCanary, severity: Severity, sig: SignatureState, action: &str) -> TrapEvent {
    TrapEvent::Hit(Box::new(Hit {
        id: Uuid::now_v7(),
        tenant_id: c.tenant_id,
        canary_id: c.id,
        store_id: c.store_id,
        incident_id: None,
        exchange: c.exchange,
        method: "GET".into(),
        path: "/api/v3/account".into(),
        query: Some("timestamp=1&signature=x".into()),
        body_excerpt: None,
        source_ip: "203.0.113.9".into(),
        forwarded_for: None,
        user_agent: Some("python-requests/2.32".into()),
        client_fingerprint: Some("ccxt".into()),
        signature_state: sig,
        action_class: action.into(),
        action_params: json!({"symbol": "PEPEUSDT"}),
        severity,
        received_at: Utc::now(),
    }))
}

/// A tenant `t{n}` with one store and two Binance canaries in it (shared with the
/// backends' own tests).
pub async fn planted(db: &dyn Database, n: u64) -> (Tenant, Store, Vec<NewCanary>) {
    let t = tenant(db, &format!("t{n}")).await;
    let s = store(db, t.id, "prod-users-db").await;
    let cs: Vec<NewCanary> = (0..2)
        .map(|i| new_canary(t.id, s.id, Exchange::Binance, n * 10 + i))
        .collect();
    db.insert_canaries(&cs, audit(t.id, "canary.mint"))
        .await
        .unwrap();
    (t, s, cs)
}

pub async fn trap_hits_open_and_escalate_incidents(db: &dyn Database) {
    let (t, s, cs) = planted(db, 100).await;
    db.record_trap_events(&[hit(&cs[0], Severity::Low, SignatureState::Invalid, "read")])
        .await
        .unwrap();
    let incidents = db
        .list_incidents(t.id, &IncidentFilter::default())
        .await
        .unwrap();
    assert_eq!(incidents.len(), 2, "a canary incident and a store incident");
    let canary_inc = incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Canary)
        .unwrap();
    let store_inc = incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Store)
        .unwrap();
    assert_eq!(canary_inc.canary_id, Some(cs[0].id));
    assert_eq!(store_inc.store_id, s.id);
    assert_eq!(
        (canary_inc.severity, canary_inc.status),
        (Severity::Low, IncidentStatus::Open)
    );

    // Same severity: counted. Higher: escalated. Lower afterwards: still critical.
    db.record_trap_events(&[
        hit(&cs[0], Severity::Low, SignatureState::Missing, "read"),
        hit(&cs[0], Severity::Critical, SignatureState::Valid, "trade"),
        hit(&cs[0], Severity::High, SignatureState::Valid, "read"),
    ])
    .await
    .unwrap();
    let inc = db.get_incident(t.id, canary_inc.id).await.unwrap().unwrap();
    assert_eq!((inc.severity, inc.hit_count), (Severity::Critical, 4));
    // A second canary of the same store: its own incident; the store incident counts it.
    db.record_trap_events(&[hit(&cs[1], Severity::High, SignatureState::Valid, "read")])
        .await
        .unwrap();
    let st = db.get_incident(t.id, store_inc.id).await.unwrap().unwrap();
    assert_eq!(
        (st.hit_count, st.canary_count, st.severity),
        (5, 2, Severity::Critical)
    );

    let events: Vec<String> = db
        .list_events(t.id, Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        events,
        [
            "incident.opened",
            "store.compromised",
            "incident.escalated",
            "incident.escalated",
            "incident.opened",
        ],
        "{events:?}"
    );

    let hits = db
        .list_hits(
            t.id,
            &HitFilter {
                canary_id: Some(cs[0].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.incident_id == Some(canary_inc.id)));
    assert_eq!(hits[2].action_params["symbol"], "PEPEUSDT");
    assert_eq!(hits[2].signature_state, SignatureState::Valid);
    let by_store = db
        .list_hits(
            t.id,
            &HitFilter {
                store_id: Some(s.id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_store.len(), 5);

    // Resolved incidents stay closed: the next hit opens a new one.
    db.set_incident_status(
        t.id,
        canary_inc.id,
        IncidentStatus::Resolved,
        Utc::now(),
        audit(t.id, "incident.resolve"),
    )
    .await
    .unwrap();
    db.record_trap_events(&[hit(&cs[0], Severity::Low, SignatureState::Invalid, "read")])
        .await
        .unwrap();
    let open = db
        .list_incidents(
            t.id,
            &IncidentFilter {
                status: Some(IncidentStatus::Open),
                kind: Some(IncidentKind::Canary),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|i| i.id != canary_inc.id));
}

pub async fn trap_batch_is_all_or_nothing(db: &dyn Database) {
    let (t, _, cs) = planted(db, 200).await;
    let mut ghost = cs[0].clone();
    ghost.id = Uuid::now_v7(); // not a stored canary: violates the foreign key
    let err = db
        .record_trap_events(&[
            hit(&cs[0], Severity::Low, SignatureState::Invalid, "read"),
            hit(&ghost, Severity::Low, SignatureState::Invalid, "read"),
        ])
        .await;
    assert!(err.is_err());
    assert!(db
        .list_hits(t.id, &HitFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .list_incidents(t.id, &IncidentFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .list_events(t.id, Page::default())
        .await
        .unwrap()
        .is_empty());
}

pub async fn trap_unknown_keys_are_counted_and_bounded(db: &dyn Database) {
    let at = Utc::now();
    let batch: Vec<TrapEvent> = (0..250u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&(i % 150).to_be_bytes());
            TrapEvent::Unknown(UnknownUse {
                exchange: Exchange::Kucoin,
                source: "198.51.100.7".into(),
                key_hash: h,
                key_hint: "5c2d...1734".into(),
                malformed: false,
                path: "/api/v1/accounts".into(),
                user_agent: None,
                at,
            })
        })
        .collect();
    db.record_trap_events(&batch).await.unwrap();
    let sources = db.list_unknown_sources(10).await.unwrap();
    let s = sources.iter().find(|s| s.source == "198.51.100.7").unwrap();
    assert_eq!(s.requests, 250);
    assert_eq!(
        s.distinct_keys, UNKNOWN_KEYS_PER_SOURCE,
        "first sightings are bounded per source"
    );
}

pub async fn trap_orders_are_remembered_per_canary(db: &dyn Database) {
    let (_, _, cs) = planted(db, 300).await;
    let order = TrapOrder {
        canary_id: cs[0].id,
        order_id: "28457".into(),
        client_order_id: Some("x-TKT5PX2Fabc".into()),
        symbol: "PEPEUSDT".into(),
        side: "buy".into(),
        order_type: "limit".into(),
        price: Some("0.00002".into()),
        amount: "1000000".into(),
        status: "open".into(),
        created_at: Utc::now(),
    };
    db.put_order(&order).await.unwrap();
    assert!(matches!(
        db.put_order(&order).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        db.get_order(cs[0].id, "x-TKT5PX2Fabc")
            .await
            .unwrap()
            .unwrap()
            .order_id,
        "28457"
    );
    assert!(
        db.get_order(cs[1].id, "28457").await.unwrap().is_none(),
        "orders are per canary"
    );
    assert_eq!(db.list_orders(cs[0].id, true).await.unwrap().len(), 1);
    let c = db.cancel_order(cs[0].id, "28457").await.unwrap().unwrap();
    assert_eq!(c.status, "cancelled");
    assert!(db.list_orders(cs[0].id, true).await.unwrap().is_empty());
    assert_eq!(db.list_orders(cs[0].id, false).await.unwrap().len(), 1);
    assert!(db.cancel_order(cs[0].id, "nope").await.unwrap().is_none());
}

/// A batch mixing counted hits (open incident already at or above) for one canary with
/// an escalation for another: counts, canary counts, escalation events and each hit's
/// incident come out exactly as if the hits had been committed one by one.
/// Records `batch` through [`Database::record_trap_events`], or with `writer` through
/// the backend's synchronous [`TrapWriter`] on a blocking thread (as the trap's recorder
/// runs it); returns the writer for the next batch.
async fn record_via(
    db: &dyn Database,
    writer: Option<Box<dyn TrapWriter>>,
    batch: Vec<TrapEvent>,
) -> Option<Box<dyn TrapWriter>> {
    match writer {
        None => {
            db.record_trap_events(&batch).await.unwrap();
            None
        }
        Some(mut w) => tokio::task::spawn_blocking(move || {
            w.record(&batch, &|| false).unwrap();
            w.idle();
            w
        })
        .await
        .map(Some)
        .unwrap(),
    }
}

pub async fn trap_batches_count_open_incidents_in_bulk(db: &dyn Database) {
    count_open_incidents_in_bulk(db, 360, None).await;
}

/// The same batches through the backend's synchronous writer, where it has one, give
/// the same incidents, hits and events.
pub async fn trap_writer_records_like_record_trap_events(db: &dyn Database) {
    if let Some(w) = db.trap_writer() {
        count_open_incidents_in_bulk(db, 370, Some(w)).await;
    }
}

async fn count_open_incidents_in_bulk(
    db: &dyn Database,
    n: u64,
    writer: Option<Box<dyn TrapWriter>>,
) {
    let (t, s, cs) = planted(db, n).await;
    let writer = record_via(
        db,
        writer,
        vec![
            hit(&cs[0], Severity::Critical, SignatureState::Valid, "trade"),
            hit(&cs[1], Severity::Low, SignatureState::Invalid, "read"),
        ],
    )
    .await;
    let before = db.list_events(t.id, Page::default()).await.unwrap().len();
    record_via(
        db,
        writer,
        vec![
            hit(&cs[0], Severity::Low, SignatureState::Missing, "read"),
            hit(&cs[1], Severity::Low, SignatureState::Invalid, "read"),
            hit(&cs[0], Severity::High, SignatureState::Valid, "read"),
            hit(&cs[1], Severity::High, SignatureState::Valid, "read"),
            hit(&cs[0], Severity::Critical, SignatureState::Valid, "trade"),
        ],
    )
    .await;
    let incidents = db
        .list_incidents(t.id, &IncidentFilter::default())
        .await
        .unwrap();
    let of = |c: &NewCanary| {
        incidents
            .iter()
            .find(|i| i.kind == IncidentKind::Canary && i.canary_id == Some(c.id))
            .unwrap()
            .clone()
    };
    let (i0, i1) = (of(&cs[0]), of(&cs[1]));
    assert_eq!((i0.hit_count, i0.severity), (4, Severity::Critical));
    assert_eq!(
        (i1.hit_count, i1.severity),
        (3, Severity::High),
        "escalated in the batch"
    );
    let store_inc = incidents
        .iter()
        .find(|i| i.kind == IncidentKind::Store)
        .unwrap();
    assert_eq!(store_inc.store_id, s.id);
    assert_eq!(store_inc.hit_count, 7);
    assert_eq!(store_inc.canary_count, 2);
    assert_eq!(store_inc.severity, Severity::Critical);
    // Only cs[1]'s escalation is news.
    let events = db.list_events(t.id, Page::default()).await.unwrap();
    assert_eq!(events.len(), before + 1, "{events:?}");
    let hits = db.list_hits(t.id, &HitFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 7);
    for h in &hits {
        let expect = if h.canary_id == cs[0].id {
            i0.id
        } else {
            i1.id
        };
        assert_eq!(h.incident_id, Some(expect));
    }
    assert_eq!(
        i0.last_hit_id,
        hits.iter()
            .filter(|h| h.canary_id == cs[0].id)
            .map(|h| h.id)
            .max()
    );
}

pub async fn trap_nonces_strictly_increase_per_canary(db: &dyn Database) {
    let (_, _, cs) = planted(db, 350).await;
    assert!(
        db.advance_nonce(cs[0].id, 1_616_492_376_594).await.unwrap(),
        "first nonce"
    );
    assert!(
        !db.advance_nonce(cs[0].id, 1_616_492_376_594).await.unwrap(),
        "replay"
    );
    assert!(
        !db.advance_nonce(cs[0].id, 1_616_492_376_000).await.unwrap(),
        "older"
    );
    assert!(
        db.advance_nonce(cs[0].id, 1_616_492_376_595).await.unwrap(),
        "larger"
    );
    // Per canary: another key starts from nothing.
    assert!(db.advance_nonce(cs[1].id, 5).await.unwrap());
    assert!(!db.advance_nonce(cs[1].id, 5).await.unwrap());
    // Beyond what any client sends: refused, not an error.
    assert!(!db.advance_nonce(cs[1].id, u64::MAX).await.unwrap());
    // Concurrent presentations of one nonce (polled together, interleaving at the
    // database): exactly one wins.
    let n = 1_700_000_000_000_u64;
    let id = cs[0].id;
    let (a, b, c, d) = tokio::join!(
        db.advance_nonce(id, n),
        db.advance_nonce(id, n),
        db.advance_nonce(id, n),
        db.advance_nonce(id, n)
    );
    let wins = [a, b, c, d]
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
}

pub async fn incident_status_is_scoped_and_audited(db: &dyn Database) {
    let (t, _, cs) = planted(db, 400).await;
    let other = tenant(db, "other-400").await;
    db.record_trap_events(&[hit(&cs[0], Severity::High, SignatureState::Valid, "read")])
        .await
        .unwrap();
    let inc = db
        .list_incidents(t.id, &IncidentFilter::default())
        .await
        .unwrap()[0]
        .clone();
    assert!(db.get_incident(other.id, inc.id).await.unwrap().is_none());
    assert!(db
        .list_incidents(other.id, &IncidentFilter::default())
        .await
        .unwrap()
        .is_empty());
    assert!(db
        .list_hits(other.id, &HitFilter::default())
        .await
        .unwrap()
        .is_empty());
    let wrong = db
        .set_incident_status(
            other.id,
            inc.id,
            IncidentStatus::Resolved,
            Utc::now(),
            audit(other.id, "incident.resolve"),
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::NotFound)));
    let acked = db
        .set_incident_status(
            t.id,
            inc.id,
            IncidentStatus::Acknowledged,
            Utc::now(),
            audit(t.id, "incident.ack"),
        )
        .await
        .unwrap();
    assert_eq!(acked.status, IncidentStatus::Acknowledged);
    assert!(acked.acknowledged_at.is_some());
    let resolved = db
        .set_incident_status(
            t.id,
            inc.id,
            IncidentStatus::Resolved,
            Utc::now(),
            audit(t.id, "incident.resolve"),
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, IncidentStatus::Resolved);
    assert_eq!(resolved.acknowledged_at, acked.acknowledged_at);
    // Acknowledging a resolved incident does not reopen it.
    let still = db
        .set_incident_status(
            t.id,
            inc.id,
            IncidentStatus::Acknowledged,
            Utc::now(),
            audit(t.id, "incident.ack"),
        )
        .await
        .unwrap();
    assert_eq!(still.status, IncidentStatus::Resolved);
    let log = db.list_audit(t.id, Page::default()).await.unwrap();
    assert!(log.iter().any(|e| e.action == "incident.resolve"));
}

// ---- placements (issue 5) ------------------------------------------------------------

fn new_placement(tenant: Uuid, canary: Uuid, row: &str) -> NewPlacement {
    NewPlacement {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        canary_id: canary,
        kind: PlacementKind::Database,
        target: "postgres://db.internal:5432/users".into(),
        location: "exchange_api_keys".into(),
        row_key: Some(format!("id={row}")),
        snapshot: None,
        details: json!({ "key_column": "api_key", "columns": ["api_key", "api_secret"] }),
    }
}

async fn placed_canaries(
    db: &dyn Database,
    tenant: Uuid,
    store: Uuid,
    n: u64,
    base: u64,
) -> Vec<NewCanary> {
    let rows: Vec<NewCanary> = (0..n)
        .map(|i| new_canary(tenant, store, Exchange::Kucoin, base + i))
        .collect();
    db.insert_canaries(&rows, audit(tenant, "canary.mint"))
        .await
        .unwrap();
    rows
}

pub async fn placements_record_list_and_delete(db: &dyn Database) {
    let t = tenant(db, "acme").await;
    let other = tenant(db, "other").await;
    let s = store(db, t.id, "users-db").await;
    let s2 = store(db, t.id, "backups").await;
    let c = placed_canaries(db, t.id, s.id, 3, 100).await;
    let c2 = placed_canaries(db, t.id, s2.id, 1, 200).await;
    let recorded = db
        .insert_placements(
            &[
                new_placement(t.id, c[0].id, "1"),
                new_placement(t.id, c[1].id, "2"),
            ],
            audit(t.id, "placement.create"),
        )
        .await
        .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].store_id, s.id);
    assert_eq!(recorded[0].row_key.as_deref(), Some("id=1"));
    assert_eq!(recorded[0].details["key_column"], "api_key");
    let mut file = new_placement(t.id, c2[0].id, "x");
    file.kind = PlacementKind::File;
    file.row_key = None;
    file.snapshot = Some("2026-11-20".into());
    db.insert_placements(&[file], audit(t.id, "placement.create"))
        .await
        .unwrap();

    let all = db
        .list_placements(t.id, &PlacementFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[..2], recorded[..]);
    let by_store = db
        .list_placements(
            t.id,
            &PlacementFilter {
                store_id: Some(s2.id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_store.len(), 1);
    assert_eq!(by_store[0].kind, PlacementKind::File);
    assert_eq!(by_store[0].snapshot.as_deref(), Some("2026-11-20"));
    let by_canary = db
        .list_placements(
            t.id,
            &PlacementFilter {
                canary_id: Some(c[1].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_canary, [recorded[1].clone()]);
    let page = db
        .list_placements(
            t.id,
            &PlacementFilter {
                page: Page {
                    after: Some(recorded[0].id),
                    limit: 1,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page, [recorded[1].clone()]);
    // Another tenant sees none and deletes none.
    assert!(db
        .list_placements(other.id, &PlacementFilter::default())
        .await
        .unwrap()
        .is_empty());
    let ids: Vec<Uuid> = recorded.iter().map(|p| p.id).collect();
    assert_eq!(
        db.delete_placements(other.id, &ids, audit(other.id, "placement.delete"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        db.delete_placements(t.id, &ids, audit(t.id, "placement.delete"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.list_placements(t.id, &PlacementFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let log = db.list_audit(t.id, Page::default()).await.unwrap();
    assert!(log.iter().any(|a| a.action == "placement.delete"));
    assert!(
        log.iter()
            .filter(|a| a.action == "placement.create")
            .count()
            == 2
    );
}

pub async fn placements_are_all_or_nothing_and_unique(db: &dyn Database) {
    let t = tenant(db, "acme").await;
    let other = tenant(db, "other").await;
    let s = store(db, t.id, "users-db").await;
    let so = store(db, other.id, "theirs").await;
    let c = placed_canaries(db, t.id, s.id, 2, 300).await;
    let theirs = placed_canaries(db, other.id, so.id, 1, 400).await;
    db.insert_placements(&[new_placement(t.id, c[0].id, "1")], audit(t.id, "p"))
        .await
        .unwrap();
    // A second placement of a placed canary fails, and takes the good one with it.
    let dup = db
        .insert_placements(
            &[
                new_placement(t.id, c[1].id, "2"),
                new_placement(t.id, c[0].id, "3"),
            ],
            audit(t.id, "p"),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    // Another tenant's canary is not found, and nothing of the batch stays.
    let foreign = db
        .insert_placements(
            &[
                new_placement(t.id, c[1].id, "2"),
                new_placement(t.id, theirs[0].id, "4"),
            ],
            audit(t.id, "p"),
        )
        .await;
    assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
    let unknown = db
        .insert_placements(
            &[new_placement(t.id, Uuid::now_v7(), "5")],
            audit(t.id, "p"),
        )
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");
    let all = db
        .list_placements(t.id, &PlacementFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].canary_id, c[0].id);
}

pub async fn canary_expiry_can_be_set_and_cleared(db: &dyn Database) {
    let t = tenant(db, "acme").await;
    let other = tenant(db, "other").await;
    let s = store(db, t.id, "users-db").await;
    let c = placed_canaries(db, t.id, s.id, 1, 500).await;
    let soon = Utc::now() + Duration::days(7);
    let got = db
        .set_canary_expiry(t.id, c[0].id, Some(soon), audit(t.id, "canary.expire"))
        .await
        .unwrap();
    assert_eq!(
        got.expires_at.map(|e| e.timestamp_millis()),
        Some(soon.timestamp_millis())
    );
    assert_eq!(got.status, CanaryStatus::Active);
    let past = Utc::now() - Duration::seconds(1);
    let got = db
        .set_canary_expiry(t.id, c[0].id, Some(past), audit(t.id, "canary.expire"))
        .await
        .unwrap();
    assert_eq!(got.status, CanaryStatus::Expired);
    let got = db
        .set_canary_expiry(t.id, c[0].id, None, audit(t.id, "canary.expire"))
        .await
        .unwrap();
    assert_eq!(got.expires_at, None);
    assert_eq!(got.status, CanaryStatus::Active);
    let foreign = db
        .set_canary_expiry(
            other.id,
            c[0].id,
            Some(soon),
            audit(other.id, "canary.expire"),
        )
        .await;
    assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
}
// ==== webhooks (alerts) — begin block.

/// A webhook endpoint of `tenant` with the default event set (shared with the backends' own tests).
pub fn new_endpoint(tenant: Uuid, url: &str) -> NewWebhookEndpoint {
    NewWebhookEndpoint {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        url: url.into(),
        format: "standard".into(),
        events: vec![],
        min_severity: None,
        store_ids: vec![],
        exchanges: vec![],
        headers: [("Authorization".to_string(), "Bearer r".to_string())].into(),
        routing_key: None,
        secret_sealed: "ks1.1.sealed".into(),
    }
}

fn claim(owner: &str, now: chrono::DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        now,
        lease: std::time::Duration::from_secs(30),
        limit: 100,
        per_endpoint: 100,
        exclude_endpoints: vec![],
    }
}

fn attempt_result(
    m: &WebhookMessage,
    owner: &str,
    n: i32,
    status: i32,
    next: MessageNext,
) -> AttemptResult {
    AttemptResult {
        message_id: m.id,
        lease_owner: owner.into(),
        body: Some(format!("body of {}", m.webhook_id)),
        attempt: WebhookAttempt {
            id: Uuid::now_v7(),
            message_id: m.id,
            attempt: n,
            outcome: if status < 300 { "success" } else { "failure" }.into(),
            status_code: Some(status),
            duration_ms: 12,
            response_excerpt: Some("busy".into()),
            response_truncated: false,
            error: None,
            error_kind: None,
            at: Utc::now(),
        },
        next,
        success: status < 300,
        disable_endpoint: None,
    }
}

pub async fn webhook_endpoints_crud_and_scoping(db: &dyn Database) {
    let t = tenant(db, "wh-a").await;
    let other = tenant(db, "wh-b").await;
    let e = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://hooks.example.com/a"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    assert!(e.enabled && e.secret_version == 1 && e.failing_since.is_none());
    assert_eq!(
        e.headers.get("Authorization").map(String::as_str),
        Some("Bearer r")
    );
    assert_eq!(
        db.get_webhook_endpoint(t.id, e.id).await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(db.get_webhook_endpoint(other.id, e.id).await.unwrap(), None);
    assert!(db
        .list_webhook_endpoints(other.id)
        .await
        .unwrap()
        .is_empty());

    let mut changed = e.clone();
    changed.url = "https://hooks.example.com/b".into();
    changed.events = vec!["store.compromised".into()];
    changed.min_severity = Some(Severity::High);
    changed.exchanges = vec!["binance".into()];
    let u = db
        .update_webhook_endpoint(&changed, audit(t.id, "webhook.update"))
        .await
        .unwrap();
    assert_eq!(
        (u.url.as_str(), u.min_severity),
        ("https://hooks.example.com/b", Some(Severity::High))
    );
    assert_eq!(u.events, vec!["store.compromised".to_string()]);
    let mut foreign = changed.clone();
    foreign.tenant_id = other.id;
    assert!(matches!(
        db.update_webhook_endpoint(&foreign, audit(other.id, "webhook.update"))
            .await,
        Err(StoreError::NotFound)
    ));

    let d = db
        .set_webhook_endpoint_enabled(
            t.id,
            e.id,
            false,
            Some("api"),
            audit(t.id, "webhook.disable"),
        )
        .await
        .unwrap();
    assert!(!d.enabled && d.disabled_reason.as_deref() == Some("api"));
    let en = db
        .set_webhook_endpoint_enabled(t.id, e.id, true, None, audit(t.id, "webhook.enable"))
        .await
        .unwrap();
    assert!(en.enabled && en.disabled_reason.is_none());

    let until = Utc::now() + Duration::hours(24);
    let r = db
        .rotate_webhook_secret(
            t.id,
            e.id,
            "ks1.1.new",
            until,
            audit(t.id, "webhook.rotate"),
        )
        .await
        .unwrap();
    assert_eq!(r.secret_version, 2);
    assert_eq!(r.secret_sealed, "ks1.1.new");
    assert_eq!(r.previous_secret_sealed.as_deref(), Some("ks1.1.sealed"));
    assert!(r.previous_expires_at.is_some());

    let actions: Vec<String> = db
        .list_audit(t.id, Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    for a in [
        "webhook.create",
        "webhook.update",
        "webhook.disable",
        "webhook.rotate",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
    assert!(matches!(
        db.delete_webhook_endpoint(other.id, e.id, audit(other.id, "webhook.delete"))
            .await,
        Err(StoreError::NotFound)
    ));
    db.delete_webhook_endpoint(t.id, e.id, audit(t.id, "webhook.delete"))
        .await
        .unwrap();
    assert_eq!(db.get_webhook_endpoint(t.id, e.id).await.unwrap(), None);
}

pub async fn webhook_fanout_is_filtered_and_idempotent(db: &dyn Database) {
    let (t, s, cs) = planted(db, 300).await;
    let all = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://a.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    let mut critical_only = new_endpoint(t.id, "https://b.example.com/");
    critical_only.min_severity = Some(Severity::Critical);
    let critical_only = db
        .create_webhook_endpoint(critical_only, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    let mut other_store = new_endpoint(t.id, "https://c.example.com/");
    other_store.store_ids = vec![Uuid::now_v7()];
    let other_store = db
        .create_webhook_endpoint(other_store, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    let mut kraken = new_endpoint(t.id, "https://d.example.com/");
    kraken.exchanges = vec!["kraken".into()];
    let kraken = db
        .create_webhook_endpoint(kraken, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    let mut this_store = new_endpoint(t.id, "https://e.example.com/");
    this_store.store_ids = vec![s.id];
    this_store.events = vec!["store.compromised".into()];
    let this_store = db
        .create_webhook_endpoint(this_store, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    let disabled = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://f.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    db.set_webhook_endpoint_enabled(
        t.id,
        disabled.id,
        false,
        Some("api"),
        audit(t.id, "webhook.disable"),
    )
    .await
    .unwrap();
    // Another tenant's endpoint never sees this tenant's events.
    let stranger = tenant(db, "wh-stranger").await;
    let foreign = db
        .create_webhook_endpoint(
            new_endpoint(stranger.id, "https://g.example.com/"),
            audit(stranger.id, "webhook.create"),
        )
        .await
        .unwrap();

    // incident.opened + store.compromised (low), then incident.escalated (critical).
    db.record_trap_events(&[hit(&cs[0], Severity::Low, SignatureState::Invalid, "read")])
        .await
        .unwrap();
    db.record_trap_events(&[hit(
        &cs[0],
        Severity::Critical,
        SignatureState::Valid,
        "trade",
    )])
    .await
    .unwrap();
    let mut dispatched = 0;
    loop {
        let n = db.dispatch_webhook_events(1).await.unwrap();
        if n == 0 {
            break;
        }
        dispatched += n;
    }
    // The canary and the store incident both escalate.
    assert_eq!(dispatched, 4, "four events, one per fan-out call");
    assert_eq!(
        db.dispatch_webhook_events(100).await.unwrap(),
        0,
        "marked dispatched"
    );

    let types = |ms: Vec<WebhookMessage>| {
        let mut v: Vec<String> = ms.into_iter().map(|m| m.event_type).collect();
        v.sort();
        v
    };
    let msgs = |id| db.list_webhook_messages(t.id, id, Page::default());
    assert_eq!(
        types(msgs(all.id).await.unwrap()),
        vec![
            "incident.escalated",
            "incident.escalated",
            "incident.opened",
            "store.compromised"
        ]
    );
    assert_eq!(
        types(msgs(critical_only.id).await.unwrap()),
        vec!["incident.escalated", "incident.escalated"]
    );
    assert!(msgs(other_store.id).await.unwrap().is_empty());
    assert!(msgs(kraken.id).await.unwrap().is_empty());
    assert_eq!(
        types(msgs(this_store.id).await.unwrap()),
        vec!["store.compromised"]
    );
    assert!(msgs(disabled.id).await.unwrap().is_empty());
    assert!(db
        .list_webhook_messages(stranger.id, foreign.id, Page::default())
        .await
        .unwrap()
        .is_empty());

    let m = &msgs(all.id).await.unwrap()[0];
    assert_eq!(m.status, MessageStatus::Pending);
    assert_eq!(m.webhook_id, webhook_id(m.id));
    assert!(m.incident_id.is_some() && m.hit_id.is_some() && m.event_id.is_some());
    let hit = db.get_hit(t.id, m.hit_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(hit.canary_id, cs[0].id);
    assert_eq!(db.get_hit(stranger.id, hit.id).await.unwrap(), None);
}

pub async fn webhook_claims_lease_retry_and_dead_letter(db: &dyn Database) {
    let t = tenant(db, "wh-claim").await;
    let e = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://a.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    let e2 = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://b.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    let stranger = tenant(db, "wh-claim-2").await;
    let queue = |ep: Uuid, tenant: Uuid| {
        db.enqueue_webhook_message(
            NewWebhookMessage {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                endpoint_id: ep,
                event_type: TEST_EVENT.into(),
                payload: json!({}),
                at: Utc::now(),
            },
            audit(tenant, "webhook.test"),
        )
    };
    assert!(matches!(
        queue(e.id, stranger.id).await,
        Err(StoreError::NotFound)
    ));
    let m1 = queue(e.id, t.id).await.unwrap();
    let m2 = queue(e.id, t.id).await.unwrap();
    let m3 = queue(e2.id, t.id).await.unwrap();
    let now = Utc::now() + Duration::seconds(1);

    // The per-endpoint cap and exclusions.
    let mut req = claim("w1", now);
    req.per_endpoint = 1;
    let got = db.claim_webhook_messages(&req).await.unwrap();
    assert_eq!(got.len(), 2, "one per endpoint");
    assert!(got
        .iter()
        .any(|c| c.message.id == m1.id && c.endpoint.id == e.id));
    assert!(got
        .iter()
        .any(|c| c.message.id == m3.id && c.endpoint.id == e2.id));
    // Leased messages are not claimed again; the next one of e is.
    let mut req2 = claim("w2", now);
    req2.exclude_endpoints = vec![e2.id];
    let got2 = db.claim_webhook_messages(&req2).await.unwrap();
    assert_eq!(
        got2.iter().map(|c| c.message.id).collect::<Vec<_>>(),
        vec![m2.id]
    );
    assert!(db
        .claim_webhook_messages(&claim("w3", now))
        .await
        .unwrap()
        .is_empty());

    // A stale owner cannot complete; the holder can, and a retry is due later.
    assert!(!db
        .complete_webhook_attempt(&attempt_result(&m1, "w2", 1, 503, MessageNext::Dead))
        .await
        .unwrap());
    let later = now + Duration::seconds(60);
    assert!(db
        .complete_webhook_attempt(&attempt_result(
            &m1,
            "w1",
            1,
            503,
            MessageNext::RetryAt(later)
        ))
        .await
        .unwrap());
    let ep = db.get_webhook_endpoint(t.id, e.id).await.unwrap().unwrap();
    assert!(ep.failing_since.is_some(), "a failure starts the clock");
    assert!(db
        .claim_webhook_messages(&claim("w3", now))
        .await
        .unwrap()
        .is_empty());
    let retried = db
        .claim_webhook_messages(&claim("w3", later))
        .await
        .unwrap();
    // m1 is due again; m2 and m3 are still leased (30 s) at `later`? No: the lease ran
    // out after 30 s, so a crashed worker's messages come back too.
    let mut ids: Vec<Uuid> = retried.iter().map(|c| c.message.id).collect();
    ids.sort();
    let mut want = vec![m1.id, m2.id, m3.id];
    want.sort();
    assert_eq!(ids, want, "due retry and expired leases are claimable");
    let m1c = retried.iter().find(|c| c.message.id == m1.id).unwrap();
    assert_eq!(m1c.message.attempts, 1);
    assert_eq!(m1c.message.webhook_id, m1.webhook_id, "stable webhook-id");
    assert_eq!(
        m1c.message.body.as_deref(),
        Some(format!("body of {}", m1.webhook_id).as_str())
    );
    // Changing the endpoint drops the kept bodies of undelivered messages (re-rendered).
    db.update_webhook_endpoint(&e, audit(t.id, "webhook.update"))
        .await
        .unwrap();
    assert_eq!(
        db.get_webhook_message(t.id, m1.id)
            .await
            .unwrap()
            .unwrap()
            .body,
        None
    );
    // The old holder's lease is gone.
    assert!(!db
        .complete_webhook_attempt(&attempt_result(&m2, "w2", 1, 200, MessageNext::Delivered))
        .await
        .unwrap());
    assert!(db
        .complete_webhook_attempt(&attempt_result(&m1, "w3", 2, 200, MessageNext::Delivered))
        .await
        .unwrap());
    let ep = db.get_webhook_endpoint(t.id, e.id).await.unwrap().unwrap();
    assert!(ep.failing_since.is_none(), "a success resets the clock");
    let mut dead = attempt_result(&m2, "w3", 1, 410, MessageNext::Dead);
    dead.disable_endpoint = Some("gone".into());
    assert!(db.complete_webhook_attempt(&dead).await.unwrap());
    let ep = db.get_webhook_endpoint(t.id, e.id).await.unwrap().unwrap();
    assert!(!ep.enabled && ep.disabled_reason.as_deref() == Some("gone"));

    let attempts = db
        .list_webhook_attempts(t.id, &[m1.id, m2.id])
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.message_id, a.attempt, a.status_code))
            .collect::<Vec<_>>(),
        {
            let mut v = vec![
                (m1.id, 1, Some(503)),
                (m1.id, 2, Some(200)),
                (m2.id, 1, Some(410)),
            ];
            v.sort();
            v
        }
    );
    assert!(db
        .list_webhook_attempts(stranger.id, &[m1.id])
        .await
        .unwrap()
        .is_empty());

    // Dead letters are retried by API, delivered ones are not.
    assert!(matches!(
        db.retry_webhook_message(t.id, m1.id, Utc::now(), audit(t.id, "delivery.retry"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        db.retry_webhook_message(
            stranger.id,
            m2.id,
            Utc::now(),
            audit(stranger.id, "delivery.retry")
        )
        .await,
        Err(StoreError::NotFound)
    ));
    let back = db
        .retry_webhook_message(t.id, m2.id, Utc::now(), audit(t.id, "delivery.retry"))
        .await
        .unwrap();
    assert_eq!((back.status, back.attempts), (MessageStatus::Pending, 0));
    // Not claimable while its endpoint is disabled; claimable once enabled.
    let far = Utc::now() + Duration::hours(1);
    assert!(!db
        .claim_webhook_messages(&claim("w4", far))
        .await
        .unwrap()
        .iter()
        .any(|c| c.message.id == m2.id));
    db.set_webhook_endpoint_enabled(t.id, e.id, true, None, audit(t.id, "webhook.enable"))
        .await
        .unwrap();
    assert!(db
        .claim_webhook_messages(&claim("w4", far))
        .await
        .unwrap()
        .iter()
        .any(|c| c.message.id == m2.id));
    // A group commit stores what its owner holds and skips the rest.
    assert_eq!(
        db.complete_webhook_attempts(&[
            attempt_result(&m2, "w4", 1, 200, MessageNext::Delivered),
            attempt_result(&m3, "nobody", 1, 200, MessageNext::Delivered),
        ])
        .await
        .unwrap(),
        vec![true, false]
    );
    assert_eq!(
        db.get_webhook_message(t.id, m2.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Delivered
    );
    assert_eq!(
        db.get_webhook_message(t.id, m1.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Delivered
    );
}

/// Milliseconds since the epoch (both backends keep at least that precision).
fn at_ms(ms: i64) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

/// One group commit of mixed results (successes and failures interleaved per endpoint,
/// a duplicate, a foreign owner, a 410) leaves messages, attempts and endpoints exactly
/// as storing the same results one at a time does.
pub async fn webhook_group_commit_equals_one_by_one(db: &dyn Database) {
    struct Run {
        endpoints: Vec<WebhookEndpoint>,
        messages: Vec<WebhookMessage>,
        stored: Vec<bool>,
        tenant: Uuid,
    }
    let base = Utc::now().timestamp_millis() - 60_000;
    let later = at_ms(base + 3_600_000);
    async fn run(db: &dyn Database, name: &str, grouped: bool, base: i64) -> Run {
        let later = at_ms(base + 3_600_000);
        let t = tenant(db, name).await;
        let mut endpoints = Vec::new();
        for i in 0..3 {
            endpoints.push(
                db.create_webhook_endpoint(
                    new_endpoint(t.id, &format!("https://g{i}.example.com/")),
                    audit(t.id, "webhook.create"),
                )
                .await
                .unwrap(),
            );
        }
        // Messages 0-4 on endpoint 0, 5-6 on endpoint 1, 7-8 on endpoint 2.
        let on = [0, 0, 0, 0, 0, 1, 1, 2, 2];
        let mut messages = Vec::new();
        for e in on {
            messages.push(
                db.enqueue_webhook_message(
                    NewWebhookMessage {
                        id: Uuid::now_v7(),
                        tenant_id: t.id,
                        endpoint_id: endpoints[e].id,
                        event_type: TEST_EVENT.into(),
                        payload: json!({}),
                        at: at_ms(base),
                    },
                    audit(t.id, "webhook.test"),
                )
                .await
                .unwrap(),
            );
        }
        let mut req = claim("w", at_ms(base + 1000));
        req.lease = std::time::Duration::from_secs(7200);
        assert_eq!(db.claim_webhook_messages(&req).await.unwrap().len(), 9);
        let m = &messages;
        let r = |i: usize, owner: &str, status: i32, next: MessageNext, t: i64| {
            let mut a = attempt_result(&m[i], owner, 1, status, next);
            a.attempt.at = at_ms(base + t);
            a
        };
        // Before the batch: endpoint 0 and 1 are already failing (since base+2 s).
        let before = [
            r(4, "w", 500, MessageNext::RetryAt(later), 2000),
            r(6, "w", 500, MessageNext::RetryAt(later), 2000),
        ];
        assert_eq!(
            db.complete_webhook_attempts(&before).await.unwrap(),
            vec![true, true]
        );
        let mut gone = r(5, "w", 410, MessageNext::Dead, 5000);
        gone.disable_endpoint = Some("gone".into());
        let batch = vec![
            // Endpoint 0: failure, success, failure: the clock restarts at the last.
            r(0, "w", 503, MessageNext::RetryAt(later), 3000),
            r(1, "w", 200, MessageNext::Delivered, 4000),
            r(2, "w", 503, MessageNext::RetryAt(later), 6000),
            // Listed again in the same batch: its lease is released by then.
            r(0, "w", 200, MessageNext::Delivered, 6500),
            // Not this owner's.
            r(3, "intruder", 200, MessageNext::Delivered, 7000),
            // Endpoint 1: a 410 after an earlier failure keeps the earlier clock.
            gone,
            // Endpoint 2: success then failure.
            r(7, "w", 200, MessageNext::Delivered, 8000),
            r(8, "w", 500, MessageNext::Dead, 9000),
        ];
        let stored = if grouped {
            db.complete_webhook_attempts(&batch).await.unwrap()
        } else {
            let mut v = Vec::new();
            for one in &batch {
                v.push(db.complete_webhook_attempt(one).await.unwrap());
            }
            v
        };
        let mut endpoints_after = Vec::new();
        for e in &endpoints {
            endpoints_after.push(db.get_webhook_endpoint(t.id, e.id).await.unwrap().unwrap());
        }
        let mut messages_after = Vec::new();
        for msg in &messages {
            messages_after.push(db.get_webhook_message(t.id, msg.id).await.unwrap().unwrap());
        }
        Run {
            endpoints: endpoints_after,
            messages: messages_after,
            stored,
            tenant: t.id,
        }
    }
    let g = run(db, "group-commit", true, base).await;
    let one = run(db, "one-by-one", false, base).await;

    let want = vec![true, true, true, false, false, true, true, true];
    assert_eq!(g.stored, want, "grouped");
    assert_eq!(one.stored, want, "one by one");
    for (name, r) in [("grouped", &g), ("one by one", &one)] {
        let e = &r.endpoints;
        assert_eq!(e[0].failing_since, Some(at_ms(base + 6000)), "{name}");
        assert!(e[0].enabled, "{name}");
        assert_eq!(e[1].failing_since, Some(at_ms(base + 2000)), "{name}");
        assert!(!e[1].enabled, "{name}");
        assert_eq!(e[1].disabled_reason.as_deref(), Some("gone"), "{name}");
        assert_eq!(e[2].failing_since, Some(at_ms(base + 9000)), "{name}");
        assert!(e[2].enabled, "{name}");
        let m = &r.messages;
        let states: Vec<(MessageStatus, i32, bool)> = m
            .iter()
            .map(|x| (x.status, x.attempts, x.lease_owner.is_some()))
            .collect();
        use MessageStatus::*;
        assert_eq!(
            states,
            vec![
                (Pending, 1, false),
                (Delivered, 1, false),
                (Pending, 1, false),
                (Pending, 0, true),
                (Pending, 1, false),
                (Dead, 1, false),
                (Pending, 1, false),
                (Delivered, 1, false),
                (Dead, 1, false),
            ],
            "{name}"
        );
        assert_eq!(
            m[0].next_attempt_at, later,
            "{name}: the first result of m0 won"
        );
        assert_eq!(
            m[1].body.as_deref(),
            Some(format!("body of {}", m[1].webhook_id).as_str()),
            "{name}"
        );
        let ids: Vec<Uuid> = m.iter().map(|x| x.id).collect();
        let attempts = db.list_webhook_attempts(r.tenant, &ids).await.unwrap();
        let mut got: Vec<(Uuid, Option<i32>)> = attempts
            .iter()
            .map(|a| (a.message_id, a.status_code))
            .collect();
        got.sort();
        let mut expect = vec![
            (ids[0], Some(503)),
            (ids[1], Some(200)),
            (ids[2], Some(503)),
            (ids[4], Some(500)),
            (ids[5], Some(410)),
            (ids[6], Some(500)),
            (ids[7], Some(200)),
            (ids[8], Some(500)),
        ];
        expect.sort();
        assert_eq!(got, expect, "{name}: one attempt row per stored result");
        let a0 = attempts.iter().find(|a| a.message_id == ids[0]).unwrap();
        assert_eq!(a0.at, at_ms(base + 3000), "{name}");
        assert_eq!(a0.duration_ms, 12, "{name}");
        assert_eq!(a0.response_excerpt.as_deref(), Some("busy"), "{name}");
    }
    // An empty batch stores nothing and is not an error.
    assert!(db.complete_webhook_attempts(&[]).await.unwrap().is_empty());
}

/// A worker shutting down gives back the leases of messages it never started: they are
/// claimable at once, with no attempt counted; leases of another owner and messages
/// already completed are left alone.
pub async fn webhook_leases_released_on_shutdown(db: &dyn Database) {
    let t = tenant(db, "wh-release").await;
    let e = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://r.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    let mut ms = Vec::new();
    for _ in 0..4 {
        ms.push(
            db.enqueue_webhook_message(
                NewWebhookMessage {
                    id: Uuid::now_v7(),
                    tenant_id: t.id,
                    endpoint_id: e.id,
                    event_type: TEST_EVENT.into(),
                    payload: json!({}),
                    at: Utc::now(),
                },
                audit(t.id, "webhook.test"),
            )
            .await
            .unwrap(),
        );
    }
    let now = Utc::now() + Duration::seconds(1);
    let mut req = claim("stopping", now);
    req.limit = 3;
    let got = db.claim_webhook_messages(&req).await.unwrap();
    assert_eq!(got.len(), 3);
    let mut other = claim("other", now);
    other.limit = 1;
    let theirs = db.claim_webhook_messages(&other).await.unwrap();
    assert_eq!(theirs.len(), 1);
    let mine: Vec<Uuid> = got.iter().map(|c| c.message.id).collect();
    // One of mine finished before the shutdown.
    assert!(db
        .complete_webhook_attempt(&attempt_result(
            &got[0].message,
            "stopping",
            1,
            200,
            MessageNext::Delivered
        ))
        .await
        .unwrap());
    assert_eq!(db.release_webhook_leases("stopping", &[]).await.unwrap(), 0);
    // Wrong owner: nothing.
    assert_eq!(db.release_webhook_leases("nobody", &mine).await.unwrap(), 0);
    let mut ask: Vec<Uuid> = mine.clone();
    ask.push(theirs[0].message.id);
    assert_eq!(
        db.release_webhook_leases("stopping", &ask).await.unwrap(),
        2,
        "the two unstarted ones; not the delivered one, not another owner's"
    );
    let again = db
        .claim_webhook_messages(&claim("next", now))
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = again.iter().map(|c| c.message.id).collect();
    ids.sort();
    let mut want = mine[1..].to_vec();
    want.sort();
    assert_eq!(
        ids, want,
        "claimable at once, long before the lease would end"
    );
    assert!(again.iter().all(|c| c.message.attempts == 0));
    assert!(db
        .list_webhook_attempts(t.id, &want)
        .await
        .unwrap()
        .is_empty());
    let m0 = db
        .get_webhook_message(t.id, mine[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m0.status, MessageStatus::Delivered);
    let held = db
        .get_webhook_message(t.id, theirs[0].message.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.lease_owner.as_deref(), Some("other"));
}

/// `hit.recorded` outbox rows are written with the hit only while an enabled endpoint of
/// the hit's tenant lists the event, one per hit (counted hits too), and fan out only to
/// endpoints that list it.
pub async fn webhook_hit_recorded_only_when_subscribed(db: &dyn Database) {
    let (t, _s, cs) = planted(db, 400).await;
    let (other, _, other_cs) = planted(db, 401).await;
    let hit_events = |tenant: Uuid| async move {
        db.list_events(tenant, Page::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == HIT_RECORDED)
            .collect::<Vec<Event>>()
    };
    let default_ep = db
        .create_webhook_endpoint(
            new_endpoint(t.id, "https://default.example.com/"),
            audit(t.id, "webhook.create"),
        )
        .await
        .unwrap();
    db.record_trap_events(&[hit(&cs[0], Severity::Low, SignatureState::Valid, "read")])
        .await
        .unwrap();
    assert!(hit_events(t.id).await.is_empty(), "nobody subscribes yet");

    let mut sub = new_endpoint(t.id, "https://hits.example.com/");
    sub.events = vec![HIT_RECORDED.into()];
    let sub = db
        .create_webhook_endpoint(sub, audit(t.id, "webhook.create"))
        .await
        .unwrap();
    // Counted (no incident event) and a new canary (incident event), one batch; and a
    // hit of a tenant without a subscriber.
    let h1 = hit(&cs[0], Severity::Low, SignatureState::Valid, "read");
    let h2 = hit(&cs[1], Severity::High, SignatureState::Valid, "trade");
    let h3 = hit(&other_cs[0], Severity::Low, SignatureState::Valid, "read");
    db.record_trap_events(&[h1.clone(), h2.clone(), h3])
        .await
        .unwrap();
    let evs = hit_events(t.id).await;
    assert_eq!(evs.len(), 2, "one per hit after the subscription");
    assert!(hit_events(other.id).await.is_empty(), "other tenants: none");
    let ids = |e: &TrapEvent| match e {
        TrapEvent::Hit(h) => h.id,
        TrapEvent::Unknown(_) => unreachable!(),
    };
    let mut got: Vec<Uuid> = evs.iter().map(|e| e.hit_id.unwrap()).collect();
    got.sort();
    let mut want = vec![ids(&h1), ids(&h2)];
    want.sort();
    assert_eq!(got, want);
    let e2 = evs.iter().find(|e| e.hit_id == Some(ids(&h2))).unwrap();
    assert_eq!(e2.payload["severity"], "high", "{}", e2.payload);
    assert_eq!(e2.payload["action_class"], "trade");
    assert_eq!(e2.payload["canary_id"], json!(cs[1].id));
    assert_eq!(e2.payload["exchange"], "binance");
    let hit_row = db.get_hit(t.id, ids(&h2)).await.unwrap().unwrap();
    assert_eq!(e2.incident_id, hit_row.incident_id);
    assert!(e2.incident_id.is_some());

    while db.dispatch_webhook_events(100).await.unwrap() > 0 {}
    let types = |ep: Uuid| async move {
        let mut v: Vec<String> = db
            .list_webhook_messages(t.id, ep, Page::default())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.event_type)
            .collect();
        v.sort();
        v
    };
    assert_eq!(types(sub.id).await, vec![HIT_RECORDED, HIT_RECORDED]);
    assert!(
        !types(default_ep.id).await.iter().any(|t| t == HIT_RECORDED),
        "not in the default set"
    );

    // Disabled: no more rows (the change is seen at once through this handle).
    db.set_webhook_endpoint_enabled(
        t.id,
        sub.id,
        false,
        Some("api"),
        audit(t.id, "webhook.disable"),
    )
    .await
    .unwrap();
    db.record_trap_events(&[hit(&cs[0], Severity::Low, SignatureState::Valid, "read")])
        .await
        .unwrap();
    assert_eq!(hit_events(t.id).await.len(), 2);
}

// ==== webhooks (alerts) — end block.
