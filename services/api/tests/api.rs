//! The management API in process (`oneshot`, no port), on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keytrap_api::{router, AppState};
use keytrap_core::{matches_key_format, Exchange, MasterKey};
use keytrap_store::Database;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    router: Router,
    state: AppState,
    admin: String,
    _guard: Option<keytrap_store_sqlite::testing::TempSqlite>,
}

async fn make_state(db: Arc<dyn Database>) -> (AppState, String) {
    let keys = MasterKey::from_bytes([42; 32]).keys();
    let state = AppState {
        db,
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &keys,
            keytrap_webhooks::AddrPolicy::parse_allow_list("127.0.0.0/8").unwrap(),
            false,
        ),
        keys,
        key_version: 1,
    };
    let admin = keytrap_api::tokens::bootstrap(&state, None)
        .await
        .unwrap()
        .expect("first bootstrap returns a token");
    (state, admin)
}

async fn sqlite_app() -> Option<App> {
    let tmp = keytrap_store_sqlite::testing::TempSqlite::new()
        .await
        .unwrap();
    let (state, admin) = make_state(Arc::new(tmp.db.clone())).await;
    Some(App {
        router: router(state.clone()),
        state,
        admin,
        _guard: Some(tmp),
    })
}

async fn postgres_app() -> Option<App> {
    let db = keytrap_store_postgres::testing::fresh().await?;
    let (state, admin) = make_state(Arc::new(db)).await;
    Some(App {
        router: router(state.clone()),
        state,
        admin,
        _guard: None,
    })
}

/// Runs each listed test on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(app) = super::sqlite_app().await else { return };
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(app) = super::postgres_app().await else { return };
                    super::$name(app).await;
                }
            )*
        }
    };
}

on_both_backends!(
    walkthrough_store_mint_list_reveal,
    every_exchange_mints_recognisable_credentials,
    bad_input_gets_clear_4xx,
    auth_and_scopes,
    tenants_are_isolated,
    bulk_mint_ten_thousand,
    disable_and_filters,
    tokens_can_be_revoked,
    routing_errors_are_json,
    webhooks_lifecycle,
);

impl App {
    async fn raw(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let (status, headers, body) = self.raw(req).await;
        if !status.is_success() {
            assert_eq!(
                headers.get(header::CONTENT_TYPE).unwrap(),
                "application/json",
                "errors are JSON"
            );
        }
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        (status, v)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn store(&self, token: &str, name: &str) -> String {
        let (s, v) = self
            .post(
                "/v1/stores",
                token,
                json!({"name": name, "kind": "database"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn token(&self, scopes: &[&str]) -> String {
        let (s, v) = self
            .post(
                "/v1/tokens",
                &self.admin,
                json!({"name": "t", "scopes": scopes}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

async fn walkthrough_store_mint_list_reveal(app: App) {
    let store = app.store(&app.admin, "prod-users-db").await;
    let (s, v) = app
        .post(
            "/v1/canaries",
            &app.admin,
            json!({"exchange": "binance", "store_id": store, "memo": "row 17", "labels": {"env": "prod"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let c = &v["canaries"][0];
    let key = c["credentials"]["api_key"].as_str().unwrap();
    let secret = c["credentials"]["api_secret"].as_str().unwrap();
    assert!(matches_key_format(Exchange::Binance, key), "{key}");
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(c["credentials"].get("passphrase").is_none());
    assert_eq!(c["store_id"], store.as_str());
    assert_eq!(c["status"], "active");
    let id = c["id"].as_str().unwrap();

    // Listing never shows credentials unless asked.
    let (s, list) = app
        .get(&format!("/v1/canaries?store_id={store}"), &app.admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["canaries"].as_array().unwrap().len(), 1);
    assert!(list["canaries"][0].get("credentials").is_none());
    assert_eq!(list["canaries"][0]["memo"], "row 17");
    assert_eq!(list["canaries"][0]["labels"]["env"], "prod");

    let (s, got) = app.get(&format!("/v1/canaries/{id}"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got.get("credentials").is_none());
    let (s, revealed) = app
        .get(&format!("/v1/canaries/{id}?reveal=true"), &app.admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(revealed["credentials"]["api_key"], key);
    assert_eq!(revealed["credentials"]["api_secret"], secret);

    // Nothing secret is stored: the key is not in the canaries table in any form we wrote.
    let found = app
        .state
        .db
        .canary_by_digest(&app.state.keys.lookup_digest(Exchange::Binance, key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.to_string(), id);

    let (s, audit) = app.get("/v1/audit", &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["store.create", "canary.mint", "canary.reveal"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let (s, st) = app.get(&format!("/v1/stores/{store}"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["name"], "prod-users-db");
}

async fn every_exchange_mints_recognisable_credentials(app: App) {
    let store = app.store(&app.admin, "s").await;
    let detect = app.state.keys.detection_key();
    for x in Exchange::ALL {
        let (s, v) = app
            .post(
                "/v1/canaries",
                &app.admin,
                json!({"exchange": x.as_str(), "store_id": store, "count": 3}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{x}: {v}");
        for c in v["canaries"].as_array().unwrap() {
            assert_eq!(c["exchange"], x.as_str());
            let creds = &c["credentials"];
            let key = creds["api_key"].as_str().unwrap();
            assert!(matches_key_format(x, key), "{x}: {key}");
            assert_eq!(detect.is_canary(key), Some(x));
            assert_eq!(creds.get("passphrase").is_some(), x.has_passphrase(), "{x}");
            let (s, r) = app
                .get(
                    &format!("/v1/canaries/{}?reveal=true", c["id"].as_str().unwrap()),
                    &app.admin,
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(
                &r["credentials"], creds,
                "reveal re-derives the same credentials"
            );
        }
    }
}

async fn bad_input_gets_clear_4xx(app: App) {
    let store = app.store(&app.admin, "s").await;
    let t = app.admin.clone();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"exchange": "ftx", "store_id": store}),
            "unknown variant",
        ),
        (json!({"exchange": "binance"}), "store_id"),
        (
            json!({"exchange": "binance", "store_id": "nope"}),
            "store_id",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "count": "ten"}),
            "count",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "count": 0}),
            "between 1 and 10000",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "count": 10001}),
            "between 1 and 10000",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "count": -1}),
            "count",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "expires_at": "2001-01-01T00:00:00Z"}),
            "future",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "labels": {"k": 5}}),
            "labels",
        ),
        (
            json!({"exchange": "binance", "store_id": store, "memo": "a\u{7}b"}),
            "control",
        ),
        (json!([1, 2, 3]), "expected"),
    ];
    for (body, needle) in cases {
        let (s, v) = app.post("/v1/canaries", &t, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert_eq!(error_code(&v), "invalid_request");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: {msg:?} should mention {needle:?}"
        );
    }
    // Store that does not exist (or is not ours).
    let (s, v) = app
        .post(
            "/v1/canaries",
            &t,
            json!({"exchange": "binance", "store_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));

    let send = |body: Body, ctype: Option<&str>| {
        let mut r =
            Request::post("/v1/canaries").header(header::AUTHORIZATION, format!("Bearer {t}"));
        if let Some(c) = ctype {
            r = r.header(header::CONTENT_TYPE, c);
        }
        r.body(body).unwrap()
    };
    let (s, _, b) = app
        .raw(send(Body::from("{\"exchange\":"), Some("application/json")))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("not valid JSON"));
    let (s, _, b) = app
        .raw(send(
            Body::from(vec![0xff, 0xfe, b'{']),
            Some("application/json"),
        ))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, _) = app
        .raw(send(Body::from("exchange=binance"), Some("text/plain")))
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = app.raw(send(Body::from("{}"), None)).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(
        "{{\"exchange\":\"binance\",\"memo\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    let (s, _, b) = app
        .raw(send(Body::from(huge), Some("application/json")))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["error"]["code"],
        "payload_too_large"
    );

    // Stores: empty name, wrong kind, duplicate.
    let (s, v) = app
        .post("/v1/stores", &t, json!({"name": " ", "kind": "database"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post("/v1/stores", &t, json!({"name": "x", "kind": "floppy"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("kind"));
    let (s, v) = app
        .post("/v1/stores", &t, json!({"name": "s", "kind": "database"}))
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (s, v) = app
        .post(
            "/v1/stores",
            &t,
            json!({"name": "y".repeat(201), "kind": "bucket"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Query and path errors.
    let (s, v) = app.get("/v1/canaries?limit=0", &t).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app.get("/v1/canaries?limit=lots", &t).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (s, v) = app.get("/v1/canaries?exchange=ftx", &t).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app.get("/v1/canaries?label=novalue", &t).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app.get("/v1/canaries/not-a-uuid", &t).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let (s, v) = app
        .get(&format!("/v1/canaries/{}", uuid::Uuid::now_v7()), &t)
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = app
        .post("/v1/tokens", &t, json!({"name": "x", "scopes": ["root"]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post("/v1/tokens", &t, json!({"name": "x", "scopes": []}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

async fn auth_and_scopes(app: App) {
    let (s, v) = app.call(Method::GET, "/v1/stores", None, None).await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (s, v) = app.get("/v1/stores", "keytrap_notarealtoken").await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let req = Request::get("/v1/stores")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .unwrap();
    let (s, h, _) = app.raw(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    let req = Request::get("/v1/stores")
        .header(header::AUTHORIZATION, &b"Bearer \xff\xfe"[..])
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.raw(req).await.0, StatusCode::UNAUTHORIZED);

    let read = app.token(&["read"]).await;
    let mint = app.token(&["mint"]).await;
    let store = app.store(&mint, "s").await;
    let (s, v) = app
        .post("/v1/stores", &read, json!({"name": "r", "kind": "file"}))
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, _) = app
        .post(
            "/v1/canaries",
            &read,
            json!({"exchange": "okx", "store_id": store}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app
        .post(
            "/v1/canaries",
            &mint,
            json!({"exchange": "okx", "store_id": store}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["canaries"][0]["id"].as_str().unwrap().to_string();
    // read may list but not reveal.
    assert_eq!(app.get("/v1/canaries", &read).await.0, StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/canaries/{id}?reveal=true"), &read)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/canaries?reveal=true", &read).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v1/canaries/{id}?reveal=true"), &mint)
            .await
            .0,
        StatusCode::OK
    );
    // Only admins disable, manage tokens, read the audit log.
    let disable = format!("/v1/canaries/{id}/disable");
    assert_eq!(
        app.post(&disable, &mint, json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(
            "/v1/tokens",
            &mint,
            json!({"name": "x", "scopes": ["admin"]})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.get("/v1/audit", &mint).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.post(&disable, &app.admin, json!({})).await.0,
        StatusCode::OK
    );
}

async fn tenants_are_isolated(app: App) {
    let store_a = app.store(&app.admin, "shared-name").await;
    let (_, v) = app
        .post(
            "/v1/canaries",
            &app.admin,
            json!({"exchange": "kucoin", "store_id": store_a}),
        )
        .await;
    let canary_a = v["canaries"][0]["id"].as_str().unwrap().to_string();

    let (s, v) = app
        .post("/v1/tenants", &app.admin, json!({"name": "acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let b = v["admin_token"]["token"].as_str().unwrap().to_string();
    assert!(b.starts_with("keytrap_"));
    let (s, _) = app
        .post("/v1/tenants", &app.admin, json!({"name": "acme"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Tenant b sees and touches nothing of tenant a's.
    assert_eq!(
        app.get(&format!("/v1/stores/{store_a}"), &b).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/v1/canaries/{canary_a}"), &b).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/v1/canaries/{canary_a}?reveal=true"), &b)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/v1/canaries/{canary_a}/disable"), &b, json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = app
        .post(
            "/v1/canaries",
            &b,
            json!({"exchange": "kucoin", "store_id": store_a}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = app.get("/v1/stores", &b).await;
    assert_eq!(v["stores"].as_array().unwrap().len(), 0);
    let (_, v) = app.get("/v1/stores?name=shared-name", &b).await;
    assert_eq!(v["stores"].as_array().unwrap().len(), 0);
    let (_, v) = app.get("/v1/canaries", &b).await;
    assert_eq!(v["canaries"].as_array().unwrap().len(), 0);
    let (_, v) = app.get("/v1/audit", &b).await;
    assert!(v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] != "canary.mint"));
    let (_, v) = app.get("/v1/tokens", &b).await;
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1);
    // Tenant b is not root: it may not create tenants.
    assert_eq!(
        app.post("/v1/tenants", &b, json!({"name": "evil"})).await.0,
        StatusCode::FORBIDDEN
    );
    // The same store name is free in tenant b, and a's canary is still active.
    app.store(&b, "shared-name").await;
    let (_, v) = app
        .get(&format!("/v1/canaries/{canary_a}"), &app.admin)
        .await;
    assert_eq!(v["status"], "active");
}

async fn bulk_mint_ten_thousand(app: App) {
    let store = app.store(&app.admin, "bulk").await;
    let (s, v) = app
        .post(
            "/v1/canaries",
            &app.admin,
            json!({"exchange": "bybit", "store_id": store, "count": 10000}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let canaries = v["canaries"].as_array().unwrap();
    assert_eq!(canaries.len(), 10_000);
    let keys: std::collections::HashSet<&str> = canaries
        .iter()
        .map(|c| c["credentials"]["api_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 10_000, "keys are unique");
    assert!(keys.iter().all(|k| matches_key_format(Exchange::Bybit, k)));
    // Paging through the list sees each exactly once.
    let mut seen = 0;
    let mut after = String::new();
    loop {
        let path = format!("/v1/canaries?store_id={store}&limit=1000{after}");
        let (s, v) = app.get(&path, &app.admin).await;
        assert_eq!(s, StatusCode::OK);
        seen += v["canaries"].as_array().unwrap().len();
        match v["next_after"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(seen, 10_000);
}

async fn disable_and_filters(app: App) {
    let store = app.store(&app.admin, "s").await;
    let (_, v) = app
        .post(
            "/v1/canaries",
            &app.admin,
            json!({"exchange": "kraken", "store_id": store, "count": 2, "labels": {"gen": "2026-11-20"}}),
        )
        .await;
    let id = v["canaries"][0]["id"].as_str().unwrap().to_string();
    let (_, v) = app
        .post(
            "/v1/canaries",
            &app.admin,
            json!({"exchange": "coinbase", "store_id": store, "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(v["canaries"][0]["expires_at"], "2099-01-01T00:00:00Z");
    let (s, v) = app
        .post(&format!("/v1/canaries/{id}/disable"), &app.admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "disabled");
    assert!(v["disabled_at"].is_string());
    let count = |v: &Value| v["canaries"].as_array().unwrap().len();
    assert_eq!(
        count(&app.get("/v1/canaries?status=disabled", &app.admin).await.1),
        1
    );
    assert_eq!(
        count(&app.get("/v1/canaries?status=active", &app.admin).await.1),
        2
    );
    assert_eq!(
        count(
            &app.get("/v1/canaries?exchange=coinbase", &app.admin)
                .await
                .1
        ),
        1
    );
    assert_eq!(
        count(
            &app.get("/v1/canaries?label=gen:2026-11-20", &app.admin)
                .await
                .1
        ),
        2
    );
    assert_eq!(
        count(&app.get("/v1/canaries?label=gen:other", &app.admin).await.1),
        0
    );
}

async fn tokens_can_be_revoked(app: App) {
    let (s, v) = app
        .post(
            "/v1/tokens",
            &app.admin,
            json!({"name": "ci", "scopes": ["read", "mint", "read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["scopes"], json!(["mint", "read"]));
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("keytrap_") && token.len() == 8 + 43);
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(app.get("/v1/stores", &token).await.0, StatusCode::OK);
    let (_, list) = app.get("/v1/tokens", &app.admin).await;
    assert!(
        list.to_string().find(&token).is_none(),
        "token values are never listed"
    );
    let (s, _) = app
        .post(&format!("/v1/tokens/{id}/revoke"), &app.admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/v1/stores", &token).await.0,
        StatusCode::UNAUTHORIZED
    );
}

async fn routing_errors_are_json(app: App) {
    let (s, v) = app.get("/v2/nothing", &app.admin).await;
    assert_eq!((s, error_code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = app
        .call(Method::DELETE, "/v1/stores", Some(&app.admin), None)
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, v) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["database"], app.state.db.backend());
    let (s, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/v1/stores",
        "/v1/stores/{id}",
        "/v1/canaries",
        "/v1/canaries/{id}",
        "/v1/canaries/{id}/disable",
        "/v1/tokens",
        "/v1/tenants",
        "/v1/audit",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    let req = Request::get("/docs").body(Body::empty()).unwrap();
    let (s, _, body) = app.raw(req).await;
    assert_eq!(s, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/v1/canaries/{id}/disable"));
}

/// The committed `docs/openapi.json` is the document the code generates. Refresh it with
/// `KEYTRAP_UPDATE_OPENAPI=1 cargo test -p keytrap-api --test api openapi_snapshot`.
#[test]
fn openapi_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = keytrap_api::openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("KEYTRAP_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run KEYTRAP_UPDATE_OPENAPI=1 cargo test -p keytrap-api --test api openapi_snapshot"
    );
}

/// Minting and revealing leave no credential or token in the logs, at every level.
#[tokio::test]
async fn logs_carry_no_secrets() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = sqlite_app().await.unwrap();
    let store = app.store(&app.admin, "s").await;
    let mut secrets = vec![app.admin.clone()];
    for x in Exchange::ALL {
        let (s, v) = app
            .post(
                "/v1/canaries",
                &app.admin,
                json!({"exchange": x.as_str(), "store_id": store}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let id = v["canaries"][0]["id"].as_str().unwrap().to_string();
        let (_, r) = app
            .get(&format!("/v1/canaries/{id}?reveal=true"), &app.admin)
            .await;
        for f in ["api_key", "api_secret", "passphrase"] {
            if let Some(s) = r["credentials"][f].as_str() {
                secrets.push(s.to_string());
                // PEM secrets: every base64 line counts on its own.
                secrets.extend(
                    s.lines()
                        .filter(|l| l.len() > 20 && !l.starts_with("-----"))
                        .map(String::from),
                );
            }
        }
    }
    let t = app.token(&["read"]).await;
    secrets.push(t.clone());
    app.get("/v1/stores", &t).await;
    app.get("/v1/stores", "keytrap_wrongwrongwrongwrongwrongwrongwrong")
        .await;

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request"), "the capture works: {logs:.500}");
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret leaked into the logs: {s:.12}..."
        );
    }
    assert!(
        !logs.contains("keytrap_wrong"),
        "presented tokens are not logged"
    );
}

/// Replicas starting together with the same `KEYTRAP_ADMIN_TOKEN` all start, and the
/// token is stored once.
#[tokio::test]
async fn concurrent_bootstrap_with_a_supplied_token() {
    for app in [sqlite_app().await, postgres_app().await]
        .into_iter()
        .flatten()
    {
        let t = "keytrap_supplied_admin_token_for_replicas_0123456789";
        let boot = || keytrap_api::tokens::bootstrap(&app.state, Some(t.to_string()));
        let (a, b, c, d) = tokio::join!(boot(), boot(), boot(), boot());
        for r in [a, b, c, d] {
            assert_eq!(r, Ok(None), "every replica starts, none prints a token");
        }
        let root = app.state.db.root_tenant().await.unwrap().unwrap();
        let named = app
            .state
            .db
            .list_tokens(root.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.name == "admin (KEYTRAP_ADMIN_TOKEN)")
            .count();
        assert_eq!(named, 1);
    }
}

async fn webhooks_lifecycle(app: App) {
    let store = app.store(&app.admin, "prod-users-db").await;
    // Refused at creation, each with a clear 400.
    for (body, why) in [
        (
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
            "metadata",
        ),
        (json!({"url": "http://10.1.2.3/hook"}), "private"),
        (
            json!({"url": "http://167772161/hook"}),
            "10.0.0.1 in decimal",
        ),
        (json!({"url": "ftp://127.0.0.1/x"}), "scheme"),
        (
            json!({"url": "http://127.0.0.1:9/h", "format": "pagerduty"}),
            "no routing key",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "format": "irc"}),
            "format",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "events": ["hit.everything"]}),
            "event",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "exchanges": ["mtgox"]}),
            "exchange",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "headers": {"Host": "x"}}),
            "header",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "store_ids": [uuid::Uuid::now_v7()]}),
            "store",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "surprise": 1}),
            "unknown field",
        ),
    ] {
        let (s, v) = app.post("/v1/webhooks", &app.admin, body).await;
        assert_eq!(
            (s, error_code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{why}: {v}"
        );
    }
    let mint = app.token(&["mint"]).await;
    let (s, _) = app
        .post(
            "/v1/webhooks",
            &mint,
            json!({"url": "http://127.0.0.1:9/h"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "webhooks need admin");

    let (s, v) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({
                "url": "http://127.0.0.1:9/hook",
                "events": ["store.compromised"],
                "exchanges": ["binance"],
                "store_ids": [store],
                "headers": {"Authorization": "Bearer receiver-token"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(v["webhook"]["format"], "standard");
    let (s, got) = app.get(&format!("/v1/webhooks/{id}"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let text = got.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("receiver-token"),
        "{text}"
    );
    assert_eq!(got["header_names"], json!(["Authorization"]));
    assert_eq!(got["exchanges"], json!(["binance"]));
    let (_, list) = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&secret));

    // hit.recorded is subscribable (never a default), alone or with others.
    let (s, v) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": "http://127.0.0.1:9/hits", "events": ["incident.opened", "hit.recorded"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["webhook"]["events"],
        json!(["hit.recorded", "incident.opened"])
    );
    let hits_path = format!("/v1/webhooks/{}", v["id"].as_str().unwrap());
    let (s, v) = app
        .call(
            Method::PATCH,
            &hits_path,
            Some(&app.admin),
            Some(json!({"events": ["hit.recorded"]})),
        )
        .await;
    assert_eq!(
        (s, &v["events"]),
        (StatusCode::OK, &json!(["hit.recorded"])),
        "{v}"
    );
    let (s, v) = app
        .call(
            Method::PATCH,
            &hits_path,
            Some(&app.admin),
            Some(json!({"events": ["webhook.test"]})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "webhook.test is always delivered, never subscribed: {v}"
    );
    let (s, _) = app
        .call(Method::DELETE, &hits_path, Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // PATCH: set, then clear with null; a bad URL is refused like at creation.
    let path = format!("/v1/webhooks/{id}");
    let (s, v) = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"min_severity": "critical"})),
        )
        .await;
    assert_eq!(
        (s, v["min_severity"].as_str()),
        (StatusCode::OK, Some("critical")),
        "{v}"
    );
    let (s, v) = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"min_severity": null})),
        )
        .await;
    assert_eq!(
        (s, v["min_severity"].clone()),
        (StatusCode::OK, Value::Null),
        "{v}"
    );
    assert_eq!(v["exchanges"], json!(["binance"]), "absent fields are kept");
    let (s, v) = app
        .call(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"url": "http://192.168.1.1/"})),
        )
        .await;
    assert_eq!(
        (s, error_code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    // Disabled: no test; enabled: the test is queued and listed as a delivery.
    let (s, v) = app
        .post(&format!("{path}/disable"), &app.admin, json!({}))
        .await;
    assert_eq!(
        (s, v["enabled"].as_bool(), v["disabled_reason"].as_str()),
        (StatusCode::OK, Some(false), Some("api"))
    );
    let (s, v) = app
        .post(&format!("{path}/test"), &app.admin, json!({}))
        .await;
    assert_eq!((s, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let (s, v) = app
        .post(&format!("{path}/enable"), &app.admin, json!({}))
        .await;
    assert_eq!((s, v["enabled"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = app
        .post(&format!("{path}/test"), &app.admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let msg = v["message_id"].as_str().unwrap().to_string();
    assert!(v["webhook_id"].as_str().unwrap().starts_with("msg_"));
    let (s, d) = app.get(&format!("{path}/deliveries"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["deliveries"][0]["id"], msg.as_str());
    assert_eq!(d["deliveries"][0]["event_type"], "webhook.test");
    assert_eq!(d["deliveries"][0]["status"], "pending");
    assert_eq!(d["deliveries"][0]["attempts"], json!([]));

    // Only dead letters can be retried. Make it dead as a worker would.
    let retry = format!("/v1/deliveries/{msg}/retry");
    let (s, v) = app.post(&retry, &app.admin, json!({})).await;
    assert_eq!((s, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    let db = &app.state.db;
    let claimed = db
        .claim_webhook_messages(&keytrap_store::ClaimRequest {
            owner: "w".into(),
            now: chrono::Utc::now(),
            lease: std::time::Duration::from_secs(30),
            limit: 10,
            per_endpoint: 10,
            exclude_endpoints: vec![],
        })
        .await
        .unwrap();
    let m = &claimed[0].message;
    assert!(db
        .complete_webhook_attempt(&keytrap_store::AttemptResult {
            message_id: m.id,
            lease_owner: "w".into(),
            body: None,
            attempt: keytrap_store::WebhookAttempt {
                id: uuid::Uuid::now_v7(),
                message_id: m.id,
                attempt: 1,
                outcome: "failure".into(),
                status_code: Some(500),
                duration_ms: 3,
                response_excerpt: Some("boom".into()),
                response_truncated: false,
                error: None,
                error_kind: None,
                at: chrono::Utc::now(),
            },
            next: keytrap_store::MessageNext::Dead,
            success: false,
            disable_endpoint: None,
        })
        .await
        .unwrap());
    let (_, d) = app.get(&format!("{path}/deliveries"), &app.admin).await;
    assert_eq!(d["deliveries"][0]["status"], "dead");
    assert_eq!(d["deliveries"][0]["attempts"][0]["status_code"], 500);
    assert_eq!(
        d["deliveries"][0]["attempts"][0]["response_excerpt"],
        "boom"
    );
    let (s, v) = app.post(&retry, &app.admin, json!({})).await;
    assert_eq!(
        (s, v["status"].as_str(), v["attempt_count"].as_i64()),
        (StatusCode::OK, Some("pending"), Some(0)),
        "{v}"
    );
    let (s, _) = app
        .post(
            &format!("/v1/deliveries/{}/retry", uuid::Uuid::now_v7()),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Rotation: a new secret once, version 2, the old one signs for the overlap.
    let (s, v) = app
        .post(&format!("{path}/rotate"), &app.admin, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_secret = v["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert_eq!(v["webhook"]["secret_version"], 2);
    assert!(v["webhook"]["previous_secret_expires_at"].is_string());
    let (s, _) = app
        .post(
            &format!("{path}/rotate?overlap_secs=99999999"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, audit) = app.get("/v1/audit", &app.admin).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for a in [
        "webhook.create",
        "webhook.update",
        "webhook.disable",
        "webhook.enable",
        "webhook.test",
        "delivery.retry",
        "webhook.rotate",
    ] {
        assert!(actions.contains(&a), "{a} audited: {audit}");
    }

    let (s, _) = app
        .call(Method::DELETE, &path, Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &app.admin).await.0, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(Method::DELETE, &path, Some(&app.admin), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
