//! Planting endpoints in process, on SQLite and PostgreSQL: render, detection key,
//! placements, expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use keytrap_api::{router, AppState};
use keytrap_core::{DetectionKey, Exchange, MasterKey};
use keytrap_store::Database;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    router: Router,
    admin: String,
    _guard: Option<keytrap_store_sqlite::testing::TempSqlite>,
}

async fn make_state(db: Arc<dyn Database>) -> (AppState, String) {
    let state = AppState {
        db,
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &MasterKey::from_bytes([42; 32]).keys(),
            keytrap_webhooks::AddrPolicy::strict(),
            false,
        ),

        keys: MasterKey::from_bytes([42; 32]).keys(),
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
        router: router(state),
        admin,
        _guard: Some(tmp),
    })
}

async fn postgres_app() -> Option<App> {
    let db = keytrap_store_postgres::testing::fresh().await?;
    let (state, admin) = make_state(Arc::new(db)).await;
    Some(App {
        router: router(state),
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
    render_every_template_and_audit_it,
    render_bad_input_and_scopes,
    detection_key_needs_its_scope_and_recognises_canaries,
    placements_record_list_delete,
    expiry_for_rotation,
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
        if status != StatusCode::OK && status != StatusCode::CREATED {
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

async fn mint(app: &App, token: &str, exchange: &str, store: &str) -> Value {
    let (s, v) = app
        .post(
            "/v1/canaries",
            token,
            json!({"exchange": exchange, "store_id": store}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["canaries"][0].clone()
}

async fn render_canary_text(app: &App, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/canaries/{id}/render"), token, body)
        .await
}

async fn render_every_template_and_audit_it(app: App) {
    let minter = app.token(&["mint"]).await;
    let store = app.store(&minter, "users-db").await;
    for ex in Exchange::ALL {
        let c = mint(&app, &minter, ex.as_str(), &store).await;
        let id = c["id"].as_str().unwrap();
        let key = c["credentials"]["api_key"].as_str().unwrap();
        for t in ["env", "json", "yaml", "csv", "ccxt", "k8s", "cdp"] {
            let (s, v) = render_canary_text(
                &app,
                &minter,
                id,
                json!({"template": t, "label": "nightly", "base_url": "http://127.0.0.1:8701"}),
            )
            .await;
            if t == "cdp" && ex != Exchange::Coinbase {
                assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
                assert_eq!(error_code(&v), "invalid_request");
                continue;
            }
            assert_eq!(s, StatusCode::OK, "{t} {ex}: {v}");
            assert_eq!(v["canary_id"], id);
            assert_eq!(v["template"], t);
            let text = v["text"].as_str().unwrap();
            if t != "k8s" {
                assert!(text.contains(key), "{t}: {text}");
            }
        }
        let (s, v) = render_canary_text(
            &app,
            &minter,
            id,
            json!({"template": "sql", "table": "exchange_api_keys", "dialect": "mysql",
                   "user_id": "17",
                   "columns": [{"column": "user_id", "value": "{user_id}"},
                               {"column": "api_key", "value": "{api_key}"}]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["text"],
            format!(
                "INSERT INTO `exchange_api_keys` (`user_id`, `api_key`) VALUES ('17', '{key}');\n"
            )
        );
    }
    let (_, log) = app.get("/v1/audit?limit=1000", &app.admin).await;
    let renders = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "canary.render")
        .count();
    // 6 templates for each of 7 exchanges, cdp for one, sql for all.
    assert_eq!(renders, 7 * 6 + 1 + 7);
}

async fn render_bad_input_and_scopes(app: App) {
    let minter = app.token(&["mint"]).await;
    let reader = app.token(&["read"]).await;
    let store = app.store(&minter, "users-db").await;
    let c = mint(&app, &minter, "kucoin", &store).await;
    let id = c["id"].as_str().unwrap();
    let (s, v) = render_canary_text(&app, &reader, id, json!({"template": "env"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    for (body, needle) in [
        (json!({}), "template is required"),
        (json!({"template": "xml"}), "unknown variant"),
        (json!({"template": "env", "bogus": 1}), "unknown field"),
        (
            json!({"template": "sql", "columns": [{"column": "k", "value": "{api_key}"}]}),
            "needs table",
        ),
        (
            json!({"template": "sql", "table": "t; drop table x", "columns": [{"column": "k", "value": "{api_key}"}]}),
            "plain SQL name",
        ),
        (
            json!({"template": "sql", "table": "t", "columns": [{"column": "k", "value": "{nope}"}]}),
            "unknown placeholder",
        ),
        (
            json!({"template": "k8s", "name": "Not Valid"}),
            "Secret name",
        ),
        (
            json!({"template": "env", "label": "a\nb"}),
            "control characters",
        ),
    ] {
        let (s, v) = render_canary_text(&app, &minter, id, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (s, v) = render_canary_text(
        &app,
        &minter,
        "0190a0a0-0000-7000-8000-000000000000",
        json!({"template": "env"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = render_canary_text(&app, &minter, "not-a-uuid", json!({"template": "env"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn detection_key_needs_its_scope_and_recognises_canaries(app: App) {
    let minter = app.token(&["mint"]).await;
    let reader = app.token(&["read"]).await;
    let detector = app.token(&["detect"]).await;
    for t in [&minter, &reader] {
        let (s, v) = app.get("/v1/detection-key", t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(error_code(&v), "forbidden");
    }
    // The detect scope grants nothing else.
    let (s, _) = app.get("/v1/stores", &detector).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = app.get("/v1/detection-key", &detector).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["derivation_version"], 1);
    let dk = DetectionKey::parse(v["detection_key"].as_str().unwrap()).unwrap();
    let store = app.store(&minter, "users-db").await;
    for ex in Exchange::ALL {
        let c = mint(&app, &minter, ex.as_str(), &store).await;
        let key = c["credentials"]["api_key"].as_str().unwrap();
        assert_eq!(dk.is_canary(key), Some(ex));
    }
    let (s, _) = app.get("/v1/detection-key", &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    let (_, log) = app.get("/v1/audit?limit=1000", &app.admin).await;
    let reads = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "detection_key.read")
        .count();
    assert_eq!(reads, 2);
}

async fn placements_record_list_delete(app: App) {
    let minter = app.token(&["mint"]).await;
    let reader = app.token(&["read"]).await;
    let store = app.store(&minter, "users-db").await;
    let a = mint(&app, &minter, "binance", &store).await;
    let b = mint(&app, &minter, "okx", &store).await;
    let p = |c: &Value, row: &str| {
        json!({"canary_id": c["id"], "kind": "database", "target": "postgres://db/users",
               "location": "exchange_api_keys", "row_key": row,
               "details": {"key_column": "api_key"}})
    };
    let (s, v) = app
        .post(
            "/v1/placements",
            &reader,
            json!({"placements": [p(&a, "id=1")]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = app
        .post(
            "/v1/placements",
            &minter,
            json!({"placements": [p(&a, "id=1"), p(&b, "id=2")]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["placements"][0]["store_id"], store.as_str());
    assert_eq!(v["placements"][1]["row_key"], "id=2");
    let ids: Vec<Value> = v["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    // Placing a canary twice is a conflict.
    let (s, v) = app
        .post(
            "/v1/placements",
            &minter,
            json!({"placements": [p(&a, "id=9")]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    for (body, code) in [
        (json!({"placements": []}), "invalid_request"),
        (
            json!({"placements": [{"canary_id": a["id"], "kind": "database", "target": "", "location": "t"}]}),
            "invalid_request",
        ),
        (
            json!({"placements": [{"canary_id": a["id"], "kind": "file", "target": "x", "location": "t", "details": [1]}]}),
            "invalid_request",
        ),
        (
            json!({"placements": [{"canary_id": "0190a0a0-0000-7000-8000-000000000000", "kind": "file", "target": "x", "location": "t"}]}),
            "not_found",
        ),
    ] {
        let (_, v) = app.post("/v1/placements", &minter, body.clone()).await;
        assert_eq!(error_code(&v), code, "{body}: {v}");
    }
    let (s, v) = app
        .get(&format!("/v1/placements?store_id={store}"), &reader)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["placements"].as_array().unwrap().len(), 2);
    let (_, v) = app
        .get(
            &format!("/v1/placements?canary_id={}", b["id"].as_str().unwrap()),
            &reader,
        )
        .await;
    assert_eq!(v["placements"][0]["row_key"], "id=2");
    let (s, v) = app
        .post("/v1/placements/delete", &minter, json!({"ids": ids}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], 2);
    let (_, v) = app.get("/v1/placements", &reader).await;
    assert!(v["placements"].as_array().unwrap().is_empty());
}

async fn expiry_for_rotation(app: App) {
    let minter = app.token(&["mint"]).await;
    let store = app.store(&minter, "backups").await;
    let c = mint(&app, &minter, "kraken", &store).await;
    let id = c["id"].as_str().unwrap();
    let when = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let (s, v) = app
        .post(
            &format!("/v1/canaries/{id}/expiry"),
            &minter,
            json!({"expires_at": when}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "active");
    assert!(v["expires_at"].is_string());
    assert!(v.get("credentials").is_none());
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (s, v) = app
        .post(
            &format!("/v1/canaries/{id}/expiry"),
            &minter,
            json!({"expires_at": past}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post(
            &format!("/v1/canaries/{id}/expiry"),
            &minter,
            json!({"expires_at": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["expires_at"].is_null());
    let (s, _) = app
        .post(
            "/v1/canaries/0190a0a0-0000-7000-8000-000000000000/expiry",
            &minter,
            json!({"expires_at": when}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
