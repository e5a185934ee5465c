//! Bad input against the whole trap (router, recorder, a real database), in process with
//! `oneshot`, for every exchange, on SQLite and (with `KEYTRAP_TEST_POSTGRES_URL`) on
//! PostgreSQL: oversized bodies, huge queries and paths, invalid UTF-8, garbage and
//! overlong keys, signatures and timestamps, wrong-typed JSON. No answer may be a 5xx
//! (the database is healthy, so not even "unavailable"), nothing may panic, and every hit
//! stored as evidence must be bounded and free of control characters. At the end, the
//! order memory: what a canary's own order and cancel change, its next request sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::Router;
use chrono::Utc;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use keytrap_core::{Credentials, Exchange, Keys, MasterKey};
use keytrap_store::{Database, HitFilter, NewAudit, NewCanary, NewStore, Page, StoreKind};
use keytrap_trap::{router, TrapConfig, TrapState};
use serde_json::json;
use sha2::Sha256;
use tower::ServiceExt;
use uuid::Uuid;

/// The evidence bounds the trap promises (lib.rs).
const MAX_PATH: usize = 512;
const MAX_QUERY: usize = 2_048;
const MAX_BODY_EXCERPT: usize = 2_048;
const MAX_HEADER_TEXT: usize = 256;
/// Generous bound on stored action parameters: far below what the inputs could carry.
const MAX_ACTION_PARAMS: usize = 8 * 1024;

/// Records a violation instead of stopping at the first, so one run shows them all.
macro_rules! check {
    ($problems:ident, $ok:expr, $($msg:tt)+) => {
        if !$ok {
            $problems.push(format!($($msg)+));
        }
    };
}

struct Env {
    router: Router,
    db: Arc<dyn Database>,
    tenant: Uuid,
    creds: HashMap<Exchange, Credentials>,
    _guard: Option<keytrap_store_sqlite::testing::TempSqlite>,
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

/// A tenant, a store and one canary per exchange, minted through the `Database` trait
/// the way the API does (the lookup digest of the derived key).
async fn env(
    db: Arc<dyn Database>,
    guard: Option<keytrap_store_sqlite::testing::TempSqlite>,
) -> Env {
    let keys: Keys = MasterKey::from_bytes([0x3c; 32]).keys();
    let tenant = db
        .create_tenant("bad-input", false, audit(Uuid::nil(), "tenant.create"))
        .await
        .unwrap();
    let store = db
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: tenant.id,
                name: "users-db".into(),
                kind: StoreKind::Database,
                location: None,
                labels: Default::default(),
            },
            audit(tenant.id, "store.create"),
        )
        .await
        .unwrap();
    let mut creds = HashMap::new();
    let mut rows = Vec::new();
    for x in Exchange::ALL {
        let id = Uuid::now_v7();
        let c = keys.credentials(x, id);
        rows.push(NewCanary {
            id,
            tenant_id: tenant.id,
            store_id: store.id,
            exchange: x,
            lookup_digest: keys.lookup_digest(x, &c.api_key),
            key_version: 1,
            memo: None,
            labels: Default::default(),
            created_at: Utc::now(),
            expires_at: None,
        });
        creds.insert(x, c);
    }
    db.insert_canaries(&rows, audit(tenant.id, "canary.mint"))
        .await
        .unwrap();
    let state = TrapState::new(db.clone(), keys, TrapConfig::default());
    Env {
        router: router(state),
        db,
        tenant: tenant.id,
        creds,
        _guard: guard,
    }
}

async fn sqlite_env() -> Option<Env> {
    let tmp = keytrap_store_sqlite::testing::TempSqlite::new()
        .await
        .unwrap();
    let db: Arc<dyn Database> = Arc::new(tmp.db.clone());
    Some(env(db, Some(tmp)).await)
}

async fn postgres_env() -> Option<Env> {
    // None (with a SKIPPED line) without KEYTRAP_TEST_POSTGRES_URL; a failure under CI.
    let db = keytrap_store_postgres::testing::fresh().await?;
    Some(env(Arc::new(db), None).await)
}

/// One request the test sends: where, which headers (raw bytes: some are not UTF-8),
/// and the body.
#[derive(Clone)]
struct Case {
    name: String,
    method: Method,
    /// Path and query as raw bytes after the exchange prefix.
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// The exchange's usual private endpoint (method, path below the prefix).
fn private_endpoint(x: Exchange) -> (Method, &'static str) {
    match x {
        Exchange::Binance => (Method::GET, "/api/v3/account"),
        Exchange::Bybit => (Method::GET, "/v5/account/wallet-balance"),
        Exchange::Kraken => (Method::POST, "/0/private/Balance"),
        Exchange::Kucoin => (Method::GET, "/api/v1/accounts"),
        Exchange::Okx => (Method::GET, "/api/v5/account/balance"),
        Exchange::Coinbase => (Method::GET, "/api/v3/brokerage/accounts"),
        Exchange::CoinbaseExchange => (Method::GET, "/accounts"),
    }
}

/// The exchange's order endpoint (JSON or form body).
fn order_endpoint(x: Exchange) -> &'static str {
    match x {
        Exchange::Binance => "/api/v3/order",
        Exchange::Bybit => "/v5/order/create",
        Exchange::Kraken => "/0/private/AddOrder",
        Exchange::Kucoin => "/api/v1/hf/orders",
        Exchange::Okx => "/api/v5/trade/order",
        Exchange::Coinbase => "/api/v3/brokerage/orders",
        Exchange::CoinbaseExchange => "/orders",
    }
}

/// Percent-encodes every byte that is not unreserved.
fn pct(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// The authentication headers (and Binance's query suffix) for `key`, with the given
/// signature and timestamp bytes in the exchange's places.
fn auth(
    x: Exchange,
    c: &Credentials,
    key: &[u8],
    sig: &[u8],
    ts: &[u8],
) -> (Vec<(String, Vec<u8>)>, String) {
    let h = |n: &str, v: &[u8]| (n.to_string(), v.to_vec());
    let pass = c.passphrase.clone().unwrap_or_default().into_bytes();
    match x {
        Exchange::Binance => (
            vec![h("x-mbx-apikey", key)],
            format!("timestamp={}&signature={}", pct(ts), pct(sig)),
        ),
        Exchange::Bybit => (
            vec![
                h("x-bapi-api-key", key),
                h("x-bapi-sign", sig),
                h("x-bapi-timestamp", ts),
                h("x-bapi-recv-window", b"5000"),
            ],
            String::new(),
        ),
        Exchange::Kraken => (vec![h("api-key", key), h("api-sign", sig)], String::new()),
        Exchange::Kucoin => (
            vec![
                h("kc-api-key", key),
                h("kc-api-sign", sig),
                h("kc-api-timestamp", ts),
                h("kc-api-passphrase", &pass),
                h("kc-api-key-version", b"2"),
            ],
            String::new(),
        ),
        Exchange::Okx => (
            vec![
                h("ok-access-key", key),
                h("ok-access-sign", sig),
                h("ok-access-timestamp", ts),
                h("ok-access-passphrase", &pass),
            ],
            String::new(),
        ),
        Exchange::CoinbaseExchange => (
            vec![
                h("cb-access-key", key),
                h("cb-access-sign", sig),
                h("cb-access-timestamp", ts),
                h("cb-access-passphrase", &pass),
            ],
            String::new(),
        ),
        Exchange::Coinbase => {
            // The key name travels in the JWT: a JWT header and claims naming `key`,
            // with the garbage as its signature and `ts` as its expiry.
            let b64 = |v: &[u8]| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
            };
            let key = String::from_utf8_lossy(key);
            let header = json!({"alg": "ES256", "kid": key});
            let claims = json!({"iss": "cdp", "sub": key, "exp": String::from_utf8_lossy(ts),
                "uri": "GET 127.0.0.1/coinbase/api/v3/brokerage/accounts"});
            let mut token = format!(
                "Bearer {}.{}.",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            )
            .into_bytes();
            token.extend_from_slice(sig);
            (vec![h("authorization", &token)], String::new())
        }
    }
}

/// The bad requests for exchange `x`.
fn cases(x: Exchange, c: &Credentials) -> Vec<Case> {
    let key = c.api_key.as_bytes();
    let (pm, ppath) = private_endpoint(x);
    let now_ms = Utc::now().timestamp_millis().to_string();
    let mut out = Vec::new();
    let mut push = |name: &str,
                    method: Method,
                    path: &str,
                    query: &[u8],
                    (headers, auth_q): (Vec<(String, Vec<u8>)>, String),
                    body: &[u8]| {
        let mut target = path.as_bytes().to_vec();
        let mut q = query.to_vec();
        if !auth_q.is_empty() {
            if !q.is_empty() {
                q.push(b'&');
            }
            q.extend_from_slice(auth_q.as_bytes());
        }
        if !q.is_empty() {
            target.push(b'?');
            target.extend_from_slice(&q);
        }
        out.push(Case {
            name: format!("{x} {name}"),
            method,
            target,
            headers,
            body: body.to_vec(),
        });
    };
    let ok_auth = || auth(x, c, key, b"deadbeef", now_ms.as_bytes());

    push(
        "oversized body",
        Method::POST,
        order_endpoint(x),
        b"",
        ok_auth(),
        &vec![b'{'; keytrap_trap::MAX_BODY_BYTES + 1024],
    );
    push(
        "huge query",
        pm.clone(),
        ppath,
        // `http` caps a URI at 64 KiB; this is as long as one can be.
        format!("filler={}", "q".repeat(60_000)).as_bytes(),
        ok_auth(),
        b"",
    );
    push(
        "huge path",
        pm.clone(),
        &format!("{ppath}/{}", "p".repeat(20_000)),
        b"",
        ok_auth(),
        b"",
    );
    push(
        "invalid UTF-8 percent-encoded in path and query",
        pm.clone(),
        &format!("{ppath}/%FF%FE%00%C3%28"),
        b"symbol=%FF%C3%28&currency=%00%1B%5B31m&ccy=%E2%82",
        ok_auth(),
        b"",
    );
    // Raw bytes >= 0x80 in the query: hyper refuses them on the wire, but `http` may
    // accept them in a URI; when it does, the trap must cope.
    push(
        "raw non-UTF-8 bytes in query",
        pm.clone(),
        ppath,
        b"symbol=\xff\xfe&x=\xc3\x28",
        ok_auth(),
        b"",
    );
    let mut bad_headers = ok_auth();
    bad_headers
        .0
        .push(("user-agent".into(), b"ccxt\xff\xfe\tpy".to_vec()));
    bad_headers
        .0
        .push(("x-forwarded-for".into(), b"\xff, 1.2.3.4, ::1".to_vec()));
    bad_headers
        .0
        .push(("content-type".into(), b"application/\xffjson".to_vec()));
    push(
        "invalid UTF-8 headers",
        pm.clone(),
        ppath,
        b"",
        bad_headers,
        b"",
    );
    push(
        "invalid UTF-8 key, signature and timestamp",
        pm.clone(),
        ppath,
        b"",
        auth(x, c, b"\xff\xfe\xfd\x80key", b"\xff\xc3\x28", b"\xe2\x82"),
        b"",
    );
    push(
        "invalid UTF-8 body with control characters",
        Method::POST,
        order_endpoint(x),
        b"",
        ok_auth(),
        b"\x00\x1b[31m\xff\xfe\r\n\x07symbol=BTCUSDT&side=\x00BUY&{\"a\":\"\xc3\x28\"}",
    );
    for (i, sig) in [
        &b""[..],
        b"x",
        b"====",
        b"zz".repeat(4096).as_slice(),
        "\u{fffd}\u{202e}sig".as_bytes(),
        b"0000000000000000000000000000000000000000000000000000000000000000",
        b"AAAA/+==",
    ]
    .iter()
    .enumerate()
    {
        push(
            &format!("garbage signature #{i}"),
            pm.clone(),
            ppath,
            b"",
            auth(x, c, key, sig, now_ms.as_bytes()),
            b"nonce=1&",
        );
    }
    let long_key = [key, &b"K".repeat(8192)[..]].concat();
    for (i, k) in [
        &b"x"[..],
        &long_key[..],
        &key[..key.len() - 1],
        b"organizations/../apiKeys/%00",
        "\u{fffd}".repeat(40).as_bytes(),
    ]
    .iter()
    .enumerate()
    {
        push(
            &format!("garbage key #{i}"),
            pm.clone(),
            ppath,
            b"",
            auth(x, c, k, b"deadbeef", now_ms.as_bytes()),
            b"",
        );
    }
    for ts in [
        &b""[..],
        b"-1",
        b"0",
        b"99999999999999999999999999999999999999",
        b"18446744073709551616",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"1e308",
        b"NaN",
        b"inf",
        b"2025-13-45T99:99:99.999Z",
        b"1735689600.99999999999999999999",
        "\u{ff11}\u{ff17}".as_bytes(),
    ] {
        push(
            &format!("garbage timestamp {:?}", String::from_utf8_lossy(ts)),
            pm.clone(),
            ppath,
            format!("nonce={}", pct(ts)).as_bytes(),
            auth(x, c, key, b"deadbeef", ts),
            format!("nonce={}", pct(ts)).as_bytes(),
        );
    }
    let nested = "[".repeat(10_000);
    for (i, body) in [
        "[]",
        "\"order\"",
        "1e999",
        "null",
        r#"{"symbol":1,"side":[],"quantity":{},"price":true,"instId":null,"size":-1e308}"#,
        r#"{"symbol":"\u0000\u001b[2J","side":"\u0000","clientOid":"\ud800"}"#,
        nested.as_str(),
        r#"[{"instId":1},{"instId":"BTC-USDT","sz":[1]}]"#,
    ]
    .iter()
    .enumerate()
    {
        let mut a = ok_auth();
        a.0.push(("content-type".into(), b"application/json".to_vec()));
        push(
            &format!("wrong-typed JSON body #{i}"),
            Method::POST,
            order_endpoint(x),
            b"",
            a,
            body.as_bytes(),
        );
    }
    out
}

/// Sends one case; `None` when `http` itself refuses to build the request (then no
/// server could deliver it either).
async fn send(env: &Env, x: Exchange, case: &Case) -> Option<(StatusCode, Bytes)> {
    let mut uri = format!("/{}", x.as_str()).into_bytes();
    uri.extend_from_slice(&case.target);
    let uri = Uri::try_from(uri).ok()?;
    let mut b = Request::builder().method(case.method.clone()).uri(uri);
    for (n, v) in &case.headers {
        let n = HeaderName::from_bytes(n.as_bytes()).expect("header names are fixed");
        // Header values `http` refuses (control bytes) cannot arrive either.
        if let Ok(v) = HeaderValue::from_bytes(v) {
            b = b.header(n, v);
        }
    }
    let req = b.body(Body::from(case.body.clone())).expect("request");
    let resp = env.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Some((status, body))
}

/// A validly signed Binance request with the given parameters (query for GET/DELETE,
/// form body for POST), so bad values reach the private handlers.
fn binance_signed(c: &Credentials, method: Method, path: &str, params: &[(&[u8], &[u8])]) -> Case {
    let mut p: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect();
    p.push(format!("timestamp={}", Utc::now().timestamp_millis()));
    let payload = p.join("&");
    let mut mac = Hmac::<Sha256>::new_from_slice(c.api_secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    let signed = format!(
        "{payload}&signature={}",
        hex::encode(mac.finalize().into_bytes())
    );
    let mut headers = vec![("x-mbx-apikey".to_string(), c.api_key.clone().into_bytes())];
    let (target, body) = if method == Method::POST {
        headers.push((
            "content-type".into(),
            b"application/x-www-form-urlencoded".to_vec(),
        ));
        (path.as_bytes().to_vec(), signed.into_bytes())
    } else {
        (format!("{path}?{signed}").into_bytes(), Vec::new())
    };
    Case {
        name: format!("binance signed {method} {path} {params:?}"),
        method,
        target,
        headers,
        body,
    }
}

/// A valid Coinbase CDP JWT (as ccxt makes it) with a wrong-typed JSON body.
fn coinbase_signed(c: &Credentials, method: Method, path: &str, body: &str) -> Case {
    let url = format!("http://127.0.0.1/coinbase{path}");
    let jwt = keytrap_trap::coinbase::create_jwt(
        &c.api_key,
        &c.api_secret,
        method.as_str(),
        &url,
        Utc::now().timestamp(),
    )
    .expect("jwt");
    Case {
        name: format!("coinbase signed {method} {path} {body}"),
        method,
        target: path.as_bytes().to_vec(),
        headers: vec![
            ("authorization".into(), format!("Bearer {jwt}").into_bytes()),
            ("content-type".into(), b"application/json".to_vec()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn has_control(s: &str, allow_newline: bool) -> bool {
    s.chars()
        .any(|c| c.is_control() && !(allow_newline && c == '\n'))
}

/// Every string inside a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
            out.push(k.clone());
            strings(x, out)
        }),
        _ => {}
    }
}

async fn bad_input_never_5xx_and_evidence_bounded(env: Env) {
    // Every violation is collected, so one run shows them all.
    let mut problems: Vec<String> = Vec::new();
    let mut sent = 0usize;
    for x in Exchange::ALL {
        let c = env.creds[&x].clone();
        let mut all = cases(x, &c);
        if x == Exchange::Binance {
            for (m, path, params) in [
                (
                    Method::POST,
                    "/api/v3/order",
                    vec![
                        (&b"symbol"[..], &b"BTCUSDT"[..]),
                        (b"side", b"BUY"),
                        (b"type", b"LIMIT"),
                        (b"quantity", b"abc"),
                        (b"price", b"-1e999"),
                    ],
                ),
                (
                    Method::POST,
                    "/api/v3/order",
                    vec![
                        (&b"symbol"[..], &b"\x00\xff"[..]),
                        (b"side", b"\x1b[2J"),
                        (b"type", b"MARKET"),
                        (b"quoteOrderQty", b"NaN"),
                    ],
                ),
                (
                    Method::POST,
                    "/api/v3/order",
                    vec![
                        (&b"symbol"[..], &b"BTCUSDT"[..]),
                        (b"side", b"SELL"),
                        (b"type", b"LIMIT"),
                        (b"quantity", &b"9".repeat(5000)[..]),
                        (b"price", b"1"),
                        (b"newClientOrderId", &b"c".repeat(5000)[..]),
                    ],
                ),
                (
                    Method::DELETE,
                    "/api/v3/order",
                    vec![
                        (&b"symbol"[..], &b"BTCUSDT"[..]),
                        (b"orderId", b"-99999999999999999999999"),
                    ],
                ),
                (
                    Method::GET,
                    "/api/v3/order",
                    vec![
                        (&b"symbol"[..], &b"BTCUSDT"[..]),
                        (b"origClientOrderId", b"\xff\xfe"),
                    ],
                ),
                (
                    Method::POST,
                    "/sapi/v1/capital/withdraw/apply",
                    vec![
                        (&b"coin"[..], &b"USDT"[..]),
                        (b"address", &b"\x00a".repeat(3000)[..]),
                        (b"amount", b"1e400"),
                        (b"network", b"\xff"),
                    ],
                ),
                (
                    Method::GET,
                    "/sapi/v1/capital/deposit/address",
                    vec![
                        (&b"coin"[..], &b"\x1b"[..]),
                        (b"network", &b"n".repeat(10_000)[..]),
                    ],
                ),
            ] {
                all.push(binance_signed(&c, m, path, &params));
            }
        }
        if x == Exchange::Coinbase {
            for body in [
                "[]",
                "7",
                r#"{"product_id":5,"side":null,"order_configuration":[]}"#,
                r#"{"client_order_id":"\u0000","product_id":"BTC-USD","side":"BUY","order_configuration":{"market_market_ioc":{"quote_size":{"x":1}}}}"#,
                r#"{"order_ids":"not-a-list"}"#,
            ] {
                all.push(coinbase_signed(
                    &c,
                    Method::POST,
                    "/api/v3/brokerage/orders",
                    body,
                ));
                all.push(coinbase_signed(
                    &c,
                    Method::POST,
                    "/api/v3/brokerage/orders/batch_cancel",
                    body,
                ));
            }
        }
        for case in &all {
            let Some((status, body)) = send(&env, x, case).await else {
                // Only raw non-ASCII query bytes may be refused by `http` itself; every
                // other case must really be sent.
                if !case.name.ends_with("raw non-UTF-8 bytes in query") {
                    problems.push(format!("{}: the request could not be built", case.name));
                }
                continue;
            };
            sent += 1;
            check!(
                problems,
                !status.is_server_error(),
                "{}: answered {status} {:?}",
                case.name,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
            if case.name.ends_with("oversized body") {
                check!(
                    problems,
                    status == StatusCode::PAYLOAD_TOO_LARGE || status.is_client_error(),
                    "{}: {status}",
                    case.name
                );
            }
        }
    }
    check!(
        problems,
        sent > 7 * 40,
        "only {sent} requests could be built"
    );

    // Every stored hit: bounded and printable.
    let mut hits = Vec::new();
    let mut page = Page::default();
    loop {
        let batch = env
            .db
            .list_hits(
                env.tenant,
                &HitFilter {
                    page,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = batch.last() else { break };
        page.after = Some(last.id);
        hits.extend(batch);
    }
    for x in Exchange::ALL {
        check!(
            problems,
            hits.iter().filter(|h| h.exchange == x).count() >= 10,
            "{x}: canary-keyed bad requests are recorded as hits"
        );
        // The 60 kB query was stored, cut to the bound: the bound was exercised.
        check!(
            problems,
            hits.iter().any(|h| {
                h.exchange == x
                    && h.query
                        .as_deref()
                        .is_some_and(|q| q.chars().count() == MAX_QUERY)
            }),
            "{x}: the huge query is recorded, truncated to {MAX_QUERY}"
        );
        check!(
            problems,
            hits.iter()
                .any(|h| h.exchange == x && h.path.chars().count() == MAX_PATH),
            "{x}: the huge path is recorded, truncated to {MAX_PATH}"
        );
    }
    for h in &hits {
        let what = format!("{} {} hit {}", h.exchange, h.method, h.id);
        check!(problems, h.path.chars().count() <= MAX_PATH, "{what}: path");
        check!(
            problems,
            !has_control(&h.path, false),
            "{what}: path {:?}",
            h.path
        );
        if let Some(q) = &h.query {
            check!(problems, q.chars().count() <= MAX_QUERY, "{what}: query");
            check!(problems, !has_control(q, false), "{what}: query {q:?}");
        }
        if let Some(b) = &h.body_excerpt {
            check!(
                problems,
                b.chars().count() <= MAX_BODY_EXCERPT,
                "{what}: body"
            );
            // The trap keeps line breaks in body excerpts (multi-line JSON stays
            // readable); every other control character is replaced.
            check!(problems, !has_control(b, true), "{what}: body {b:?}");
        }
        for (name, v) in [
            ("user agent", &h.user_agent),
            ("forwarded for", &h.forwarded_for),
            ("fingerprint", &h.client_fingerprint),
        ] {
            if let Some(v) = v {
                check!(
                    problems,
                    v.chars().count() <= MAX_HEADER_TEXT,
                    "{what}: {name}"
                );
                check!(problems, !has_control(v, false), "{what}: {name} {v:?}");
            }
        }
        let params = h.action_params.to_string();
        check!(
            problems,
            params.len() <= MAX_ACTION_PARAMS,
            "{what}: action params are {} bytes",
            params.len()
        );
        let mut ss = Vec::new();
        strings(&h.action_params, &mut ss);
        for s in ss {
            check!(
                problems,
                !has_control(&s, false),
                "{what}: action param {s:?}"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn sqlite_bad_input_never_5xx_and_evidence_bounded() {
    let Some(env) = sqlite_env().await else {
        return;
    };
    bad_input_never_5xx_and_evidence_bounded(env).await;
}

#[tokio::test]
async fn postgres_bad_input_never_5xx_and_evidence_bounded() {
    let Some(env) = postgres_env().await else {
        return;
    };
    bad_input_never_5xx_and_evidence_bounded(env).await;
}

// ---------------------------------------------------------------------------------------
// Order memory through the real database and the trap's open-order cache: what a
// canary's own requests change, its next request sees at once.
// ---------------------------------------------------------------------------------------

async fn binance_json(
    env: &Env,
    method: Method,
    path: &str,
    params: &[(&str, &str)],
) -> serde_json::Value {
    let c = &env.creds[&Exchange::Binance];
    let p: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    let case = binance_signed(c, method, path, &p);
    let (status, body) = send(env, Exchange::Binance, &case).await.expect("sent");
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("json")
}

fn usdt_locked(account: &serde_json::Value) -> f64 {
    account["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .find(|b| b["asset"] == "USDT")
        .and_then(|b| b["locked"].as_str())
        .and_then(|l| l.parse().ok())
        .expect("USDT balance")
}

async fn open_btc(env: &Env) -> serde_json::Value {
    binance_json(
        env,
        Method::GET,
        "/api/v3/openOrders",
        &[("symbol", "BTCUSDT")],
    )
    .await
}

async fn orders_placed_and_cancelled_show_at_once(env: Env) {
    // Both reads fill the cache with "no open orders".
    assert_eq!(open_btc(&env).await, json!([]));
    let before = binance_json(&env, Method::GET, "/api/v3/account", &[]).await;
    assert_eq!(usdt_locked(&before), 0.0);
    let placed = binance_json(
        &env,
        Method::POST,
        "/api/v3/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.01"),
            ("price", "1000"),
        ],
    )
    .await;
    let id = placed["orderId"].to_string();
    let listed = open_btc(&env).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["orderId"].to_string(), id);
    let during = binance_json(&env, Method::GET, "/api/v3/account", &[]).await;
    assert_eq!(usdt_locked(&during), 10.0, "{during}");
    binance_json(
        &env,
        Method::DELETE,
        "/api/v3/order",
        &[("symbol", "BTCUSDT"), ("orderId", &id)],
    )
    .await;
    assert_eq!(open_btc(&env).await, json!([]));
    let after = binance_json(&env, Method::GET, "/api/v3/account", &[]).await;
    assert_eq!(usdt_locked(&after), 0.0);
}

#[tokio::test]
async fn sqlite_orders_placed_and_cancelled_show_at_once() {
    let Some(env) = sqlite_env().await else {
        return;
    };
    orders_placed_and_cancelled_show_at_once(env).await;
}

#[tokio::test]
async fn postgres_orders_placed_and_cancelled_show_at_once() {
    let Some(env) = postgres_env().await else {
        return;
    };
    orders_placed_and_cancelled_show_at_once(env).await;
}
