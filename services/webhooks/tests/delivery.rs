//! Deliveries against real HTTP receivers on 127.0.0.1 (axum), with the allow-list
//! `127.0.0.0/8` that tests need, and without it to show the SSRF guard.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use keytrap_core::Exchange;
use keytrap_store::{
    Canary, CanaryStatus, Hit, Incident, IncidentKind, IncidentStatus, Labels, Severity,
    SignatureState, Store, StoreKind,
};
use keytrap_webhooks::deliver::ErrorKind;
use keytrap_webhooks::retry::{self, Next, Outcome, Schedule};
use keytrap_webhooks::sign::{self, Secret};
use keytrap_webhooks::ssrf::AddrPolicy;
use keytrap_webhooks::{
    render, Alert, ClientConfig, CustomHeaders, DeliveryClient, DeliveryRequest, EventType, Format,
    RenderOptions,
};
use url::Url;
use uuid::Uuid;

/// What a receiver saw.
#[derive(Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
    query: Option<String>,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    fn record(&self, headers: &HeaderMap, body: &Bytes, query: Option<String>) -> usize {
        if let Ok(mut s) = self.seen.lock() {
            s.push(Seen {
                headers: headers.clone(),
                body: body.clone(),
                query,
            });
        }
        self.hits.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn spawn(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A receiver answering `reply(n)` to its n-th request (1-based).
async fn receiver(
    reply: impl Fn(usize) -> Response + Clone + Send + Sync + 'static,
) -> (SocketAddr, Receiver) {
    let r = Receiver::default();
    let app = Router::new()
        .fallback(post(
            move |State(r): State<Receiver>,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let reply = reply.clone();
                async move {
                    let n = r.record(&headers, &body, uri.query().map(str::to_string));
                    reply(n)
                }
            },
        ))
        .with_state(r.clone());
    (spawn(app).await, r)
}

fn allow_local() -> AddrPolicy {
    AddrPolicy::parse_allow_list("127.0.0.0/8").expect("allow list")
}

fn client(addrs: AddrPolicy, timeout: Duration) -> DeliveryClient {
    DeliveryClient::new(ClientConfig {
        timeout,
        connect_timeout: Duration::from_secs(2),
        addrs,
        ..ClientConfig::default()
    })
    .expect("client")
}

fn local_client() -> DeliveryClient {
    client(allow_local(), Duration::from_secs(5))
}

fn url(addr: SocketAddr, path: &str) -> Url {
    Url::parse(&format!("http://{addr}{path}")).expect("url")
}

struct Rows {
    store: Store,
    canary: Canary,
    hit: Hit,
    incident: Incident,
}

fn rows() -> Rows {
    let now = Utc::now();
    let tenant = Uuid::now_v7();
    let store = Store {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        name: "prod-users-db".into(),
        kind: StoreKind::Database,
        location: None,
        labels: Labels::new(),
        created_at: now,
    };
    let canary = Canary {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        store_id: store.id,
        exchange: Exchange::Binance,
        key_version: 1,
        memo: None,
        labels: Labels::new(),
        status: CanaryStatus::Active,
        created_at: now,
        expires_at: None,
        disabled_at: None,
    };
    let incident_id = Uuid::now_v7();
    let hit = Hit {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        canary_id: canary.id,
        store_id: store.id,
        incident_id: Some(incident_id),
        exchange: Exchange::Binance,
        method: "POST".into(),
        path: "/api/v3/order".into(),
        query: None,
        body_excerpt: None,
        source_ip: "203.0.113.9".into(),
        forwarded_for: None,
        user_agent: Some("<!channel> @everyone".into()),
        client_fingerprint: Some("ccxt".into()),
        signature_state: SignatureState::Valid,
        action_class: "trade".into(),
        action_params: serde_json::json!({"symbol": "PEPEUSDT"}),
        severity: Severity::Critical,
        received_at: now,
    };
    let incident = Incident {
        id: incident_id,
        tenant_id: tenant,
        kind: IncidentKind::Canary,
        canary_id: Some(canary.id),
        store_id: store.id,
        status: IncidentStatus::Open,
        severity: Severity::Critical,
        hit_count: 1,
        canary_count: 1,
        first_seen: now,
        last_seen: now,
        last_hit_id: Some(hit.id),
        acknowledged_at: None,
        resolved_at: None,
    };
    Rows {
        store,
        canary,
        hit,
        incident,
    }
}

const BODY: &[u8] = br#"{"type":"webhook.test"}"#;

fn request<'a>(
    url: &'a Url,
    secrets: &'a [Secret],
    headers: &'a CustomHeaders,
    body: &'a [u8],
) -> DeliveryRequest<'a> {
    DeliveryRequest {
        url,
        body,
        content_type: "application/json",
        message_id: "msg_test_1",
        secrets,
        headers,
    }
}

#[tokio::test]
async fn every_format_is_delivered_and_verified_by_the_receiver() {
    let secret = Secret::generate();
    let reference = Arc::new(
        standardwebhooks::Webhook::new(&secret.expose()).expect("reference takes our secret"),
    );
    let verified = Arc::new(AtomicUsize::new(0));
    let v = verified.clone();
    let r = Receiver::default();
    let app = Router::new()
        .fallback(post(
            move |State(r): State<Receiver>,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let ok = reference.verify(&body, &headers).is_ok();
                if ok {
                    v.fetch_add(1, Ordering::SeqCst);
                }
                r.record(&headers, &body, uri.query().map(str::to_string));
                async move {
                    if ok {
                        (StatusCode::OK, "thanks").into_response()
                    } else {
                        (StatusCode::UNAUTHORIZED, "bad signature").into_response()
                    }
                }
            },
        ))
        .with_state(r.clone());
    let addr = spawn(app).await;
    let c = local_client();
    let rows = rows();
    let alert = Alert {
        event: EventType::IncidentOpened,
        message_id: "msg_formats",
        occurred_at: Utc::now(),
        incident: Some(&rows.incident),
        canary: Some(&rows.canary),
        store: Some(&rows.store),
        hit: Some(&rows.hit),
    };
    let opts = RenderOptions {
        source: "https://keytrap.test",
        pagerduty_routing_key: Some("rk"),
    };
    let custom = CustomHeaders::parse(&BTreeMap::from([(
        "Authorization".to_string(),
        "Bearer receiver-token".to_string(),
    )]))
    .expect("headers");
    let endpoint = url(addr, "/hook");
    for format in Format::ALL {
        let rendered = render(format, &alert, &opts).expect("renders");
        let target = format.delivery_url(&endpoint);
        let rec = c
            .deliver(&DeliveryRequest {
                url: &target,
                body: &rendered.body,
                content_type: rendered.content_type,
                message_id: alert.message_id,
                secrets: std::slice::from_ref(&secret),
                headers: &custom,
            })
            .await;
        assert_eq!(rec.status, Some(200), "{format}: {rec:?}");
        assert_eq!(rec.outcome, Outcome::Success, "{format}");
        assert_eq!(rec.response_excerpt.as_deref(), Some("thanks"));
        assert_eq!(rec.error, None);
    }
    assert_eq!(verified.load(Ordering::SeqCst), Format::ALL.len());
    let seen = r.seen();
    assert_eq!(seen.len(), Format::ALL.len());
    for (format, s) in Format::ALL.iter().zip(&seen) {
        assert_eq!(s.headers["authorization"], "Bearer receiver-token");
        assert_eq!(s.headers["webhook-id"], "msg_formats");
        assert!(s.headers["user-agent"]
            .to_str()
            .expect("ua")
            .starts_with("keytrap-webhooks/"));
        let body: serde_json::Value = serde_json::from_slice(&s.body).expect("json");
        let text = body.to_string();
        assert!(
            text.contains("prod-users-db") || text.contains("prod\\\\-users\\\\-db"),
            "{format}: {text}"
        );
        // Our own verifier agrees with the reference one.
        let get = |n: &str| s.headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(
            sign::verify(
                &secret,
                get,
                &s.body,
                Utc::now().timestamp(),
                sign::TOLERANCE_SECS
            ),
            Ok(())
        );
        if *format == Format::Discord {
            assert_eq!(s.query.as_deref(), Some("wait=true"));
        } else {
            assert_eq!(s.query, None);
        }
    }
    assert_eq!(
        seen[1].headers["content-type"],
        "application/cloudevents+json; charset=utf-8"
    );
}

#[tokio::test]
async fn outage_503_with_retry_after_then_delivered_with_the_same_id() {
    let (addr, r) = receiver(|n| {
        if n <= 2 {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "down",
            )
                .into_response()
        } else {
            (StatusCode::OK, "up").into_response()
        }
    })
    .await;
    let c = local_client();
    let secret = [Secret::generate()];
    let none = CustomHeaders::default();
    let target = url(addr, "/");
    let schedule = Schedule::scaled(0.001);
    let mut rng = rand::rng();
    let mut attempt = 1;
    loop {
        let rec = c.deliver(&request(&target, &secret, &none, BODY)).await;
        let now = Utc::now();
        match schedule.next(attempt, rec.outcome, now, &mut rng) {
            Next::Delivered => break,
            Next::RetryAt(at) => {
                assert_eq!(rec.status, Some(503));
                assert_eq!(
                    rec.outcome,
                    Outcome::Failure {
                        retry_after: Some(Duration::from_secs(1))
                    }
                );
                // The scaled schedule says a few ms; Retry-After wins, within the cap.
                let wait = (at - now).to_std().expect("future");
                assert!(wait >= Duration::from_secs(1), "{wait:?}");
                tokio::time::sleep(wait).await;
            }
            other => panic!("unexpected {other:?}"),
        }
        attempt += 1;
    }
    assert_eq!(attempt, 3);
    let seen = r.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.headers["webhook-id"] == "msg_test_1"));
    // Every attempt is signed afresh and each one verifies.
    for s in &seen {
        let get = |n: &str| s.headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(
            sign::verify(&secret[0], get, &s.body, Utc::now().timestamp(), 300),
            Ok(())
        );
    }
}

#[tokio::test]
async fn gone_410_disables_the_endpoint() {
    let (addr, _r) = receiver(|_| (StatusCode::GONE, "bye").into_response()).await;
    let rec = local_client()
        .deliver(&request(
            &url(addr, "/"),
            &[Secret::generate()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert_eq!(rec.status, Some(410));
    assert_eq!(rec.outcome, Outcome::Gone);
    assert_eq!(
        Schedule::default().next(1, rec.outcome, Utc::now(), &mut rand::rng()),
        Next::DisableEndpoint
    );
}

#[tokio::test]
async fn redirect_is_a_failure_and_its_target_never_contacted() {
    let (target_addr, target) = receiver(|_| (StatusCode::OK, "stolen").into_response()).await;
    let location = format!("http://{target_addr}/steal");
    let r = Receiver::default();
    let app = Router::new()
        .fallback(post(move |State(r): State<Receiver>, headers: HeaderMap, body: Bytes| {
            r.record(&headers, &body, None);
            let location = location.clone();
            async move { (StatusCode::FOUND, [("location", location)], "moved").into_response() }
        }))
        .with_state(r.clone());
    let addr = spawn(app).await;
    let rec = local_client()
        .deliver(&request(
            &url(addr, "/"),
            &[Secret::generate()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert_eq!(rec.status, Some(302));
    assert_eq!(rec.outcome, Outcome::Failure { retry_after: None });
    assert_eq!(r.count(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        target.count(),
        0,
        "the redirect target must never be contacted"
    );
}

#[tokio::test]
async fn a_hanging_receiver_times_out_without_delaying_a_healthy_one() {
    // Accepts the request, then never answers.
    let hang = Router::new().fallback(post(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    }));
    let hang_addr = spawn(hang).await;
    let (fast_addr, fast) = receiver(|_| (StatusCode::OK, "ok").into_response()).await;
    let c = client(allow_local(), Duration::from_millis(1500));
    let secrets = [Secret::generate()];

    let (c1, s1) = (c.clone(), secrets.clone());
    let hanging = tokio::spawn(async move {
        let u = url(hang_addr, "/");
        c1.deliver(&request(&u, &s1, &CustomHeaders::default(), BODY))
            .await
    });
    let (c2, s2) = (c.clone(), secrets.clone());
    let healthy = tokio::spawn(async move {
        let u = url(fast_addr, "/");
        c2.deliver(&request(&u, &s2, &CustomHeaders::default(), BODY))
            .await
    });
    let ok = healthy.await.expect("task");
    assert_eq!(ok.outcome, Outcome::Success);
    assert_eq!(fast.count(), 1);
    assert!(
        !hanging.is_finished(),
        "the healthy delivery finished first"
    );
    let timed_out = hanging.await.expect("task");
    assert_eq!(timed_out.status, None);
    assert_eq!(
        timed_out.error_kind,
        Some(ErrorKind::Timeout),
        "{timed_out:?}"
    );
    assert_eq!(timed_out.outcome, Outcome::Failure { retry_after: None });
    assert!(timed_out.error.is_some());
}

#[tokio::test]
async fn blocked_addresses_are_refused_without_connecting() {
    let (addr, r) = receiver(|_| (StatusCode::OK, "should not happen").into_response()).await;
    let strict = client(AddrPolicy::strict(), Duration::from_secs(5));
    let secrets = [Secret::generate()];
    let none = CustomHeaders::default();
    let port = addr.port();
    for raw in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://LocalHost:{port}/"),
    ] {
        let u = Url::parse(&raw).expect("url");
        let rec = strict.deliver(&request(&u, &secrets, &none, BODY)).await;
        assert_eq!(rec.error_kind, Some(ErrorKind::Blocked), "{raw}: {rec:?}");
        assert_eq!(rec.status, None);
        assert!(matches!(rec.outcome, Outcome::Failure { .. }));
        let err = rec.error.expect("error text");
        assert!(
            err.contains("loopback") || err.contains("IPv4-mapped"),
            "{raw}: {err}"
        );
    }
    assert_eq!(r.count(), 0, "nothing reached the receiver");

    // The same names go through once the operator allows 127.0.0.0/8, and `localhost`
    // connects to the checked IPv4 address (::1 is dropped by the resolver).
    let allowed = local_client();
    for raw in [
        format!("http://localhost:{port}/"),
        format!("http://0x7f.1:{port}/"),
    ] {
        let u = Url::parse(&raw).expect("url");
        let rec = allowed.deliver(&request(&u, &secrets, &none, BODY)).await;
        assert_eq!(rec.outcome, Outcome::Success, "{raw}: {rec:?}");
    }
    assert_eq!(r.count(), 2);

    // https-only refuses plain http before sending.
    let https_only = DeliveryClient::new(ClientConfig {
        https_only: true,
        addrs: allow_local(),
        ..ClientConfig::default()
    })
    .expect("client");
    let rec = https_only
        .deliver(&request(&url(addr, "/"), &secrets, &none, BODY))
        .await;
    assert_eq!(rec.error_kind, Some(ErrorKind::Other));
    assert!(rec.error.expect("error").contains("https"));
    assert_eq!(r.count(), 2);
}

#[tokio::test]
async fn connection_refused_is_a_connect_failure() {
    // Bind then drop, so nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let u = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let rec = local_client()
        .deliver(&request(
            &u,
            &[Secret::generate()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert_eq!(rec.error_kind, Some(ErrorKind::Connect), "{rec:?}");
    assert_eq!(rec.outcome, Outcome::Failure { retry_after: None });
    assert_eq!(retry::classify(rec.status, None, Utc::now()), rec.outcome);
}

#[tokio::test]
async fn response_body_is_capped() {
    let (addr, _r) =
        receiver(|_| (StatusCode::BAD_REQUEST, "e".repeat(1_000_000)).into_response()).await;
    let rec = local_client()
        .deliver(&request(
            &url(addr, "/"),
            &[Secret::generate()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert_eq!(rec.status, Some(400));
    assert_eq!(rec.outcome, Outcome::Failure { retry_after: None });
    let excerpt = rec.response_excerpt.expect("excerpt");
    assert_eq!(excerpt.len(), keytrap_webhooks::client::MAX_RESPONSE_BYTES);
    assert!(rec.response_truncated);

    let (addr, _r) = receiver(|_| (StatusCode::OK, "short").into_response()).await;
    let rec = local_client()
        .deliver(&request(
            &url(addr, "/"),
            &[Secret::generate()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert!(!rec.response_truncated);
}

#[tokio::test]
async fn rotation_sends_both_signatures() {
    let old = Secret::generate();
    let new = Secret::generate();
    let old_ref = standardwebhooks::Webhook::new(&old.expose()).expect("old");
    let (addr, r) = receiver(|_| (StatusCode::NO_CONTENT, "").into_response()).await;
    let rec = local_client()
        .deliver(&request(
            &url(addr, "/"),
            &[new.clone(), old.clone()],
            &CustomHeaders::default(),
            BODY,
        ))
        .await;
    assert_eq!(rec.outcome, Outcome::Success);
    let seen = r.seen();
    let sig = seen[0].headers["webhook-signature"].to_str().expect("sig");
    assert_eq!(sig.split(' ').count(), 2);
    // A receiver still configured with the old secret verifies during the overlap.
    assert!(old_ref.verify(&seen[0].body, &seen[0].headers).is_ok());
    let get = |n: &str| seen[0].headers.get(n).and_then(|v| v.to_str().ok());
    assert_eq!(
        sign::verify(&new, get, &seen[0].body, Utc::now().timestamp(), 300),
        Ok(())
    );
}
