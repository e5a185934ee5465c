//! The whole alert pipeline against real receivers on 127.0.0.1: trap events recorded in
//! a real store (SQLite, and PostgreSQL with `KEYTRAP_TEST_POSTGRES_URL`), the worker's
//! fan-out, leased claims, deliveries, retries and endpoint disabling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use keytrap_core::Exchange;
use keytrap_store::*;
use keytrap_webhooks::retry::Schedule;
use keytrap_webhooks::sign::{self, Secret, SecretCipher};
use keytrap_webhooks::ssrf::AddrPolicy;
use keytrap_webhooks::{ClientConfig, DeliveryClient, Worker, WorkerConfig};
use serde_json::json;
use uuid::Uuid;

// ---- receivers

#[derive(Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
}

impl Receiver {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A receiver whose answer to its n-th request (1-based) is `reply(n)`, awaited.
async fn receiver<F, Fut>(reply: F) -> (SocketAddr, Receiver)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let r = Receiver::default();
    let rr = r.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (r, reply) = (rr.clone(), reply.clone());
        async move {
            r.seen.lock().unwrap().push(Seen { headers, body });
            let n = r.count.fetch_add(1, Ordering::SeqCst) + 1;
            reply(n).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, r)
}

async fn status_receiver(
    f: impl Fn(usize) -> StatusCode + Clone + Send + Sync + 'static,
) -> (SocketAddr, Receiver) {
    receiver(move |n| {
        let s = f(n);
        async move { (s, "ok").into_response() }
    })
    .await
}

// ---- setup

struct Env {
    /// Keeps a temporary database alive.
    _guard: Box<dyn std::any::Any + Send + Sync>,
    db: Arc<dyn Database>,
    cipher: Arc<SecretCipher>,
    tenant: Tenant,
    store: Store,
    canaries: Vec<NewCanary>,
}

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

async fn env(db: Arc<dyn Database>, guard: Box<dyn std::any::Any + Send + Sync>) -> Env {
    let tenant = db
        .create_tenant("alerts", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let store = db
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: tenant.id,
                name: "prod-users-db".into(),
                kind: StoreKind::Database,
                location: Some("postgres://db/users".into()),
                labels: Labels::new(),
            },
            audit(tenant.id, "store.create"),
        )
        .await
        .unwrap();
    let canaries: Vec<NewCanary> = (0..8u8)
        .map(|i| NewCanary {
            id: Uuid::now_v7(),
            tenant_id: tenant.id,
            store_id: store.id,
            exchange: Exchange::Binance,
            lookup_digest: [i; 32],
            key_version: 1,
            memo: None,
            labels: Labels::new(),
            created_at: Utc::now(),
            expires_at: None,
        })
        .collect();
    db.insert_canaries(&canaries, audit(tenant.id, "canary.mint"))
        .await
        .unwrap();
    Env {
        _guard: guard,
        db,
        cipher: Arc::new(SecretCipher::new(1, &[7u8; 32])),
        tenant,
        store,
        canaries,
    }
}

impl Env {
    async fn endpoint(&self, addr: SocketAddr, path: &str) -> (WebhookEndpoint, Secret) {
        let id = Uuid::now_v7();
        let secret = Secret::generate();
        let e = self
            .db
            .create_webhook_endpoint(
                NewWebhookEndpoint {
                    id,
                    tenant_id: self.tenant.id,
                    url: format!("http://{addr}{path}"),
                    format: "standard".into(),
                    events: vec![],
                    min_severity: None,
                    store_ids: vec![],
                    exchanges: vec![],
                    headers: BTreeMap::new(),
                    routing_key: None,
                    secret_sealed: self.cipher.seal_secret(&secret, id),
                },
                audit(self.tenant.id, "webhook.create"),
            )
            .await
            .unwrap();
        (e, secret)
    }

    /// A first, signed read with canary `i`: `incident.opened` + (first canary of the
    /// store) `store.compromised`.
    async fn hit(&self, i: usize) {
        let c = &self.canaries[i];
        self.db
            .record_trap_events(&[TrapEvent::Hit(Box::new(Hit {
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
                client_fingerprint: Some("ccxt".into()),
                signature_state: SignatureState::Valid,
                action_class: "read".into(),
                action_params: json!({}),
                severity: Severity::High,
                received_at: Utc::now(),
            }))])
            .await
            .unwrap();
    }

    fn worker(&self, timeout: Duration, per_endpoint: usize, poll: Duration) -> Worker {
        let client = DeliveryClient::new(ClientConfig {
            timeout,
            connect_timeout: Duration::from_secs(2),
            addrs: AddrPolicy::parse_allow_list("127.0.0.0/8").unwrap(),
            ..ClientConfig::default()
        })
        .unwrap();
        Worker::new(
            self.db.clone(),
            client,
            self.cipher.clone(),
            WorkerConfig {
                poll,
                per_endpoint,
                // 5 ms, 150 ms, 900 ms, 3.6 s...
                schedule: Schedule::scaled(0.001),
                ..WorkerConfig::default()
            },
        )
    }

    async fn messages(&self, endpoint: Uuid) -> Vec<WebhookMessage> {
        self.db
            .list_webhook_messages(self.tenant.id, endpoint, Page::default())
            .await
            .unwrap()
    }

    /// Waits (bounded, as a failsafe: never a timing claim) until `pred` holds.
    async fn until<F, Fut>(&self, what: &str, pred: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if pred().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

fn run(worker: Worker) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(worker.run(async move {
        let _ = rx.await;
    }));
    tx
}

fn verify(secret: &Secret, s: &Seen) -> Result<(), sign::VerifyError> {
    sign::verify(
        secret,
        |n| s.headers.get(n).and_then(|v| v.to_str().ok()),
        &s.body,
        Utc::now().timestamp(),
        sign::TOLERANCE_SECS,
    )
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

// ---- scenarios

async fn outage_then_recovery(e: Env) {
    // 503 for the first five requests, then 200.
    let (addr, rx) = status_receiver(|n| {
        if n <= 5 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    })
    .await;
    let (ep, secret) = e.endpoint(addr, "/hook").await;
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(200));
    let wake = w.waker();
    let _stop = run(w);
    e.hit(0).await;
    wake.notify_one();
    e.until("both messages delivered", || async {
        let m = e.messages(ep.id).await;
        m.len() == 2 && m.iter().all(|m| m.status == MessageStatus::Delivered)
    })
    .await;

    let msgs = e.messages(ep.id).await;
    let mut types: Vec<&str> = msgs.iter().map(|m| m.event_type.as_str()).collect();
    types.sort();
    assert_eq!(types, ["incident.opened", "store.compromised"]);
    let seen = rx.seen();
    assert!(rx.count() > 5, "the outage was seen: {}", rx.count());
    // Every request carries one of the two webhook-ids, identical body per id, and a
    // valid signature.
    let mut bodies: HashMap<String, Bytes> = HashMap::new();
    for s in &seen {
        let id = header(&s.headers, "webhook-id").to_string();
        assert!(
            msgs.iter().any(|m| m.webhook_id == id),
            "unknown webhook-id {id}"
        );
        if let Some(prev) = bodies.insert(id.clone(), s.body.clone()) {
            assert_eq!(prev, s.body, "retries of {id} send the same body");
        }
        verify(&secret, s).expect("signature verifies");
    }
    assert_eq!(bodies.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&bodies[&msgs[0].webhook_id]).unwrap();
    assert_eq!(body["data"]["store"]["name"], "prod-users-db", "{body}");

    let ids: Vec<Uuid> = msgs.iter().map(|m| m.id).collect();
    let attempts = e.db.list_webhook_attempts(e.tenant.id, &ids).await.unwrap();
    assert_eq!(attempts.len(), rx.count(), "one stored attempt per request");
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.status_code == Some(200))
            .count(),
        2
    );
    assert!(attempts
        .iter()
        .filter(|a| a.status_code == Some(503))
        .all(|a| a.outcome == "failure"));
    let ep =
        e.db.get_webhook_endpoint(e.tenant.id, ep.id)
            .await
            .unwrap()
            .unwrap();
    assert!(
        ep.enabled && ep.failing_since.is_none(),
        "success reset the failure clock"
    );
    assert_eq!(ep.id, msgs[0].endpoint_id);
    let _ = e.store.id;
}

async fn gone_disables(e: Env) {
    let (addr, rx) = status_receiver(|_| StatusCode::GONE).await;
    let (ep, _) = e.endpoint(addr, "/gone").await;
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(200));
    let wake = w.waker();
    let _stop = run(w);
    e.hit(0).await;
    wake.notify_one();
    e.until("endpoint disabled", || async {
        !e.db
            .get_webhook_endpoint(e.tenant.id, ep.id)
            .await
            .unwrap()
            .unwrap()
            .enabled
    })
    .await;
    let ep =
        e.db.get_webhook_endpoint(e.tenant.id, ep.id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(ep.disabled_reason.as_deref(), Some("gone"));
    // Give the other message time to be attempted if the worker still claimed it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = e.messages(ep.id).await;
    let dead = msgs
        .iter()
        .filter(|m| m.status == MessageStatus::Dead)
        .count();
    assert!(dead >= 1, "the 410 message is dead-lettered");
    assert_eq!(
        rx.count(),
        dead,
        "no request after the endpoint was disabled"
    );
    // A later event is not fanned out to the disabled endpoint.
    e.hit(1).await;
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.messages(ep.id).await.len(), msgs.len());
}

async fn redirect_is_failure(e: Env) {
    let (target, target_rx) = status_receiver(|_| StatusCode::OK).await;
    let location = format!("http://{target}/stolen");
    let (addr, rx) = receiver(move |_| {
        let l = location.clone();
        async move { (StatusCode::FOUND, [("location", l)], "moved").into_response() }
    })
    .await;
    let (ep, _) = e.endpoint(addr, "/redirect").await;
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(100));
    let wake = w.waker();
    let _stop = run(w);
    e.hit(0).await;
    wake.notify_one();
    e.until("three attempts per message", || async {
        e.messages(ep.id).await.iter().all(|m| m.attempts >= 3) && rx.count() >= 6
    })
    .await;
    let msgs = e.messages(ep.id).await;
    let ids: Vec<Uuid> = msgs.iter().map(|m| m.id).collect();
    let attempts = e.db.list_webhook_attempts(e.tenant.id, &ids).await.unwrap();
    assert!(!attempts.is_empty());
    assert!(attempts
        .iter()
        .all(|a| a.status_code == Some(302) && a.outcome == "failure"));
    assert!(
        msgs.iter().all(|m| m.status == MessageStatus::Pending),
        "retried, not delivered"
    );
    assert_eq!(
        target_rx.count(),
        0,
        "the redirect target is never contacted"
    );
    let ep =
        e.db.get_webhook_endpoint(e.tenant.id, ep.id)
            .await
            .unwrap()
            .unwrap();
    assert!(ep.failing_since.is_some());
}

async fn hanging_does_not_delay_healthy(e: Env) {
    let release = Arc::new(tokio::sync::Notify::new());
    let released = Arc::new(AtomicBool::new(false));
    let (rel, done) = (release.clone(), released.clone());
    let (slow, slow_rx) = receiver(move |_| {
        let (rel, done) = (rel.clone(), done.clone());
        async move {
            rel.notified().await;
            done.store(true, Ordering::SeqCst);
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (fast, fast_rx) = status_receiver(|_| StatusCode::OK).await;
    let (slow_ep, _) = e.endpoint(slow, "/hang").await;
    let (fast_ep, _) = e.endpoint(fast, "/fast").await;
    // Two slots per endpoint; the hanging one gets far more messages than slots.
    let w = e.worker(Duration::from_secs(60), 2, Duration::from_millis(200));
    let wake = w.waker();
    let _stop = run(w);
    for i in 0..6 {
        e.hit(i).await;
        wake.notify_one();
    }
    // 6 incident.opened + 1 store.compromised per endpoint.
    e.until("every healthy delivery done", || async {
        let m = e.messages(fast_ep.id).await;
        m.len() == 7 && m.iter().all(|m| m.status == MessageStatus::Delivered)
    })
    .await;
    assert_eq!(fast_rx.count(), 7);
    assert!(slow_rx.count() >= 1, "the hanging endpoint was tried");
    assert!(
        slow_rx.count() <= 2,
        "never more than its two slots at once"
    );
    assert!(
        !released.load(Ordering::SeqCst),
        "the healthy endpoint finished while the hanging one had not answered"
    );
    release.notify_waiters();
    let _ = slow_ep;
}

async fn expired_lease_is_reclaimed(e: Env) {
    let (addr, rx) = status_receiver(|_| StatusCode::OK).await;
    let (ep, _) = e.endpoint(addr, "/resume").await;
    e.hit(0).await;
    assert_eq!(e.db.dispatch_webhook_events(100).await.unwrap(), 2);
    // A worker that claims and then dies (never completes).
    let claimed =
        e.db.claim_webhook_messages(&ClaimRequest {
            owner: "crashed".into(),
            now: Utc::now(),
            lease: Duration::from_millis(500),
            limit: 10,
            per_endpoint: 10,
            exclude_endpoints: vec![],
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(100));
    let _stop = run(w);
    e.until("delivered after the lease expired", || async {
        e.messages(ep.id)
            .await
            .iter()
            .all(|m| m.status == MessageStatus::Delivered)
    })
    .await;
    assert_eq!(rx.count(), 2, "each message delivered once");
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.message.id).collect();
    assert_eq!(
        e.db.list_webhook_attempts(e.tenant.id, &ids)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn rotation_sends_both_signatures(e: Env) {
    let (addr, rx) = status_receiver(|_| StatusCode::OK).await;
    let (ep, old) = e.endpoint(addr, "/rotate").await;
    let new = Secret::generate();
    e.db.rotate_webhook_secret(
        e.tenant.id,
        ep.id,
        &e.cipher.seal_secret(&new, ep.id),
        Utc::now() + chrono::Duration::hours(24),
        audit(e.tenant.id, "webhook.rotate"),
    )
    .await
    .unwrap();
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(100));
    let wake = w.waker();
    let _stop = run(w);
    e.hit(0).await;
    wake.notify_one();
    e.until("delivered", || async { rx.count() >= 2 }).await;
    for s in rx.seen() {
        let sig = header(&s.headers, "webhook-signature");
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
        for secret in [&old, &new] {
            verify(secret, &s).expect("each secret verifies");
        }
    }
}

/// SIGTERM in the middle of a burst: deliveries in flight finish and are stored, a
/// claimed message still waiting for its endpoint's slot gets its lease back at once
/// (the next worker delivers it without waiting 2 minutes for the lease to expire), and
/// nothing is sent twice or after the stop.
async fn graceful_shutdown(e: Env) {
    // Each request waits for a permit: the test decides when each one is answered.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let (addr, rx) = receiver(move |_| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (ep, _) = e.endpoint(addr, "/drain").await;
    for i in 0..6 {
        e.hit(i).await;
    }
    // 6 incident.opened + 1 store.compromised, two slots, a 30 s timeout (lease 2 min).
    let w = e.worker(Duration::from_secs(30), 2, Duration::from_millis(100));
    let owner_msgs = || async {
        let m = e.messages(ep.id).await;
        let leased = m
            .iter()
            .filter(|m| m.status == MessageStatus::Pending && m.lease_owner.is_some())
            .count();
        let delivered = m
            .iter()
            .filter(|m| m.status == MessageStatus::Delivered)
            .count();
        (m.len(), leased, delivered)
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run(async move {
        let _ = stop_rx.await;
    }));
    e.until("two deliveries hanging", || async { rx.count() == 2 })
        .await;
    // Answer one: its slot frees, the next claim takes two more (one starts, one waits
    // for the slot the other hanging request holds).
    gate.add_permits(1);
    e.until(
        "one delivered, three leased, the third request in flight",
        || async { owner_msgs().await == (7, 3, 1) && rx.count() == 3 },
    )
    .await;
    let _ = stop_tx.send(());
    e.until("the waiting message's lease given back", || async {
        owner_msgs().await == (7, 2, 1)
    })
    .await;
    let released: Vec<WebhookMessage> = e
        .messages(ep.id)
        .await
        .into_iter()
        .filter(|m| m.status == MessageStatus::Pending && m.lease_owner.is_none())
        .collect();
    assert_eq!(
        released.len(),
        4,
        "the released one and the three never claimed"
    );
    assert!(released.iter().all(|m| m.attempts == 0));
    assert!(
        !handle.is_finished(),
        "the worker waits for its two deliveries in flight"
    );
    // The hanging deliveries are answered: they complete and are stored, then the
    // worker returns.
    gate.add_permits(100);
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("worker stops once its deliveries are done")
        .unwrap();
    assert_eq!(
        owner_msgs().await,
        (7, 0, 3),
        "both in-flight attempts stored"
    );
    assert_eq!(rx.count(), 3, "nothing sent after the stop");
    let ids: Vec<Uuid> = e.messages(ep.id).await.iter().map(|m| m.id).collect();
    assert_eq!(
        e.db.list_webhook_attempts(e.tenant.id, &ids)
            .await
            .unwrap()
            .len(),
        3
    );
    // A new worker delivers the rest at once: no lease to wait out, nothing twice.
    let w = e.worker(Duration::from_secs(30), 2, Duration::from_millis(100));
    let _stop = run(w);
    e.until("all delivered by the next worker", || async {
        owner_msgs().await == (7, 0, 7)
    })
    .await;
    let mut ids: Vec<String> = rx
        .seen()
        .iter()
        .map(|s| header(&s.headers, "webhook-id").to_string())
        .collect();
    assert_eq!(ids.len(), 7);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "each message sent exactly once");
}

/// `hit.recorded`: one alert per hit (also for hits that open nothing), only to the
/// endpoints that list it, with the hit's evidence, the canary (no secret) and the store.
async fn hit_recorded_is_opt_in(e: Env) {
    let (addr, rx) = status_receiver(|_| StatusCode::OK).await;
    let (default_ep, _) = e.endpoint(addr, "/default").await;
    // A hit before anyone subscribes writes no hit.recorded event.
    e.hit(0).await;
    let events =
        e.db.list_events(e.tenant.id, Page::default())
            .await
            .unwrap();
    assert!(events.iter().all(|ev| ev.event_type != HIT_RECORDED));
    let (hits_ep, secret) = e.endpoint(addr, "/hits").await;
    let mut sub = hits_ep.clone();
    sub.events = vec![HIT_RECORDED.into()];
    e.db.update_webhook_endpoint(&sub, audit(e.tenant.id, "webhook.update"))
        .await
        .unwrap();
    // Two more hits with the same canary: counted, no new incident event.
    e.hit(0).await;
    e.hit(0).await;
    let w = e.worker(Duration::from_secs(5), 4, Duration::from_millis(100));
    let _stop = run(w);
    e.until("both hit alerts delivered", || async {
        let m = e.messages(hits_ep.id).await;
        m.len() == 2 && m.iter().all(|m| m.status == MessageStatus::Delivered)
    })
    .await;
    e.until("the incident alerts delivered", || async {
        let m = e.messages(default_ep.id).await;
        m.len() == 2 && m.iter().all(|m| m.status == MessageStatus::Delivered)
    })
    .await;
    let mut types: Vec<String> = e
        .messages(default_ep.id)
        .await
        .into_iter()
        .map(|m| m.event_type)
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["incident.opened", "store.compromised"],
        "not a default"
    );
    let hit_msgs = e.messages(hits_ep.id).await;
    assert!(hit_msgs.iter().all(|m| m.event_type == HIT_RECORDED));
    let hits =
        e.db.list_hits(
            e.tenant.id,
            &HitFilter {
                canary_id: Some(e.canaries[0].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 3);
    let mut alerted: Vec<Uuid> = hit_msgs.iter().map(|m| m.hit_id.unwrap()).collect();
    alerted.sort();
    let mut later: Vec<Uuid> = hits[1..].iter().map(|h| h.id).collect();
    later.sort();
    assert_eq!(alerted, later, "one alert per hit after the subscription");
    let seen: Vec<Seen> = rx
        .seen()
        .into_iter()
        .filter(|s| {
            hit_msgs
                .iter()
                .any(|m| m.webhook_id == header(&s.headers, "webhook-id"))
        })
        .collect();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        verify(&secret, s).expect("signed");
        let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body["type"], HIT_RECORDED, "{body}");
        let d = &body["data"];
        assert_eq!(d["hit"]["source_ip"], "203.0.113.9", "{body}");
        assert_eq!(d["hit"]["user_agent"], "ccxt/4.5", "{body}");
        assert_eq!(d["canary"]["id"], json!(e.canaries[0].id), "{body}");
        assert_eq!(d["store"]["name"], "prod-users-db", "{body}");
        let text = body.to_string();
        assert!(!text.contains("secret"), "no secret in {text}");
    }
}

// ---- backends

mod sqlite {
    use super::*;
    use keytrap_store_sqlite::testing::TempSqlite;

    async fn e() -> Env {
        let t = TempSqlite::new().await.unwrap();
        env(Arc::new(t.db.clone()), Box::new(t)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_then_recovery_keeps_the_webhook_id() {
        outage_then_recovery(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gone_disables_the_endpoint() {
        gone_disables(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirect_is_a_failure_and_not_followed() {
        redirect_is_failure(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_endpoint_does_not_delay_a_healthy_one() {
        hanging_does_not_delay_healthy(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_workers_lease_is_reclaimed() {
        expired_lease_is_reclaimed(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_signs_with_both_secrets() {
        rotation_sends_both_signatures(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_in_flight_and_releases_the_rest() {
        graceful_shutdown(e().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hit_recorded_only_to_subscribers() {
        hit_recorded_is_opt_in(e().await).await
    }
}

mod postgres {
    use super::*;
    use keytrap_store_postgres::{testing, PgDatabase};

    async fn e() -> Option<Env> {
        let pg: PgDatabase = testing::fresh().await?;
        Some(env(Arc::new(pg), Box::new(())).await)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_then_recovery_keeps_the_webhook_id() {
        let Some(e) = e().await else { return };
        outage_then_recovery(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gone_disables_the_endpoint() {
        let Some(e) = e().await else { return };
        gone_disables(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirect_is_a_failure_and_not_followed() {
        let Some(e) = e().await else { return };
        redirect_is_failure(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hanging_endpoint_does_not_delay_a_healthy_one() {
        let Some(e) = e().await else { return };
        hanging_does_not_delay_healthy(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crashed_workers_lease_is_reclaimed() {
        let Some(e) = e().await else { return };
        expired_lease_is_reclaimed(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_in_flight_and_releases_the_rest() {
        let Some(e) = e().await else { return };
        graceful_shutdown(e).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hit_recorded_only_to_subscribers() {
        let Some(e) = e().await else { return };
        hit_recorded_is_opt_in(e).await
    }

    /// With a one-minute poll, only the NOTIFY sent in the hit's transaction can wake
    /// the worker in time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listen_notify_wakes_the_worker() {
        let Some(pg) = testing::fresh().await else {
            return;
        };
        let listener_db = pg.clone();
        let e = env(Arc::new(pg), Box::new(())).await;
        let (addr, rx) = status_receiver(|_| StatusCode::OK).await;
        let (ep, _) = e.endpoint(addr, "/notify").await;
        let w = e.worker(Duration::from_secs(5), 4, Duration::from_secs(60));
        let wake = w.waker();
        let _stop = run(w);
        // Let the first (startup) round run and go to sleep.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _l = listener_db.spawn_alert_wakeups(wake);
        tokio::time::sleep(Duration::from_millis(300)).await;
        e.hit(0).await;
        e.until("delivered without polling", || async {
            e.messages(ep.id)
                .await
                .iter()
                .filter(|m| m.status == MessageStatus::Delivered)
                .count()
                == 2
        })
        .await;
        assert_eq!(rx.count(), 2);
    }
}
