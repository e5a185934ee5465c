//! The SDK against a real keytrap API served on 127.0.0.1 (SQLite): the client, the
//! detection key, offline recognition of every exchange's canaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use keytrap_core::MasterKey;
use keytrap_sdk::{
    CanaryFilter, Client, Exchange, MintRequest, NewPlacement, NewStore, PlacementFilter,
    RenderSpec, Template,
};

struct Server {
    url: String,
    admin: String,
    _db: keytrap_store_sqlite::testing::TempSqlite,
}

async fn server() -> Server {
    let tmp = keytrap_store_sqlite::testing::TempSqlite::new()
        .await
        .unwrap();
    let state = keytrap_api::AppState {
        db: Arc::new(tmp.db.clone()),
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &MasterKey::from_bytes([9; 32]).keys(),
            // Loopback receivers are allowed here, as KEYTRAP_WEBHOOK_ALLOW_CIDRS would.
            keytrap_webhooks::AddrPolicy::parse_allow_list("127.0.0.0/8").unwrap(),
            false,
        ),
        keys: MasterKey::from_bytes([9; 32]).keys(),
        key_version: 1,
    };
    let admin = keytrap_api::tokens::bootstrap(&state, None)
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = keytrap_api::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        url: format!("http://{addr}"),
        admin,
        _db: tmp,
    }
}

async fn token(s: &Server, scopes: &[&str]) -> String {
    let http = reqwest::Client::new();
    let v: serde_json::Value = http
        .post(format!("{}/v1/tokens", s.url))
        .bearer_auth(&s.admin)
        .json(&serde_json::json!({"name": "sdk", "scopes": scopes}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn detector_has_no_false_negatives_on_minted_canaries() {
    let s = server().await;
    let minter = Client::new(&s.url, token(&s, &["mint"]).await).unwrap();
    let detect = Client::new(&s.url, token(&s, &["detect"]).await).unwrap();
    let store = minter
        .create_store(&NewStore {
            name: "users-db".into(),
            kind: "database".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The detect token may fetch the key and nothing else; the mint token not the key.
    let e = minter.detector().await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"), "{e}");
    let e = detect.list_stores(None, None).await.unwrap_err();
    assert_eq!(e.code(), Some("forbidden"), "{e}");
    let detector = detect.detector().await.unwrap();
    for ex in Exchange::ALL {
        let mut req = MintRequest::new(ex, store.id);
        req.count = 300;
        let minted = minter.mint(&req).await.unwrap();
        assert_eq!(minted.len(), 300);
        for c in &minted {
            let key = &c.credentials.as_ref().unwrap().api_key;
            assert_eq!(detector.is_canary(key), Some(ex), "{key}");
            assert!(detector.is_canary_for(ex, key));
            // One changed character and it is not a canary any more.
            let mut altered = key.clone().into_bytes();
            let last = altered.len() - 1;
            altered[last] = if altered[last] == b'a' { b'b' } else { b'a' };
            assert_eq!(
                detector.is_canary(std::str::from_utf8(&altered).unwrap()),
                None
            );
        }
    }
    // A detector of another installation recognises none of them.
    let other = Detector::from_base64(
        &MasterKey::from_bytes([1; 32])
            .keys()
            .detection_key()
            .to_base64(),
    )
    .unwrap();
    let some = minter
        .list_canaries(&CanaryFilter {
            reveal: true,
            limit: Some(50),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(some.len(), 50);
    for c in some {
        assert_eq!(other.is_canary(&c.credentials.unwrap().api_key), None);
    }
}

use keytrap_sdk::Detector;

#[tokio::test]
async fn client_covers_stores_canaries_render_placements_and_errors() {
    let s = server().await;
    let c = Client::new(&format!("{}/", s.url), token(&s, &["mint", "read"]).await).unwrap();
    let store = c
        .create_store(&NewStore {
            name: "nightly-backup".into(),
            kind: "backup".into(),
            location: Some("s3://backups/users".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.get_store(store.id).await.unwrap(), store);
    assert_eq!(
        c.store_by_name("nightly-backup").await.unwrap(),
        Some(store.clone())
    );
    assert_eq!(c.store_by_name("nope").await.unwrap(), None);
    let dup = c
        .create_store(&NewStore {
            name: "nightly-backup".into(),
            kind: "backup".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some("conflict"));

    let minted = c
        .mint(&MintRequest::new(Exchange::Okx, store.id))
        .await
        .unwrap();
    let canary = &minted[0];
    let creds = canary.credentials.clone().unwrap();
    let got = c.get_canary(canary.id, false).await.unwrap();
    assert!(got.credentials.is_none());
    assert_eq!(
        c.get_canary(canary.id, true).await.unwrap().credentials,
        Some(creds.clone())
    );

    let r = c
        .render(canary.id, &RenderSpec::new(Template::Env))
        .await
        .unwrap();
    assert_eq!(r.template, Template::Env);
    assert!(r.text.contains(&format!("OKX_API_KEY={}", creds.api_key)));
    let bad = c
        .render(canary.id, &RenderSpec::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_request"));

    let placed = c
        .record_placements(&[NewPlacement {
            canary_id: canary.id,
            kind: "file".into(),
            target: "/backups/users-2026-11-20.sql".into(),
            location: "sql".into(),
            row_key: None,
            snapshot: Some("2026-11-20".into()),
            details: serde_json::json!({}),
        }])
        .await
        .unwrap();
    assert_eq!(placed[0].store_id, store.id);
    assert_eq!(c.all_placements(store.id).await.unwrap(), placed);
    let by_canary = c
        .list_placements(&PlacementFilter {
            canary_id: Some(canary.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_canary, placed);

    let when = chrono::Utc::now() + chrono::Duration::days(2);
    let exp = c.set_expiry(canary.id, Some(when)).await.unwrap();
    assert_eq!(exp.expires_at.unwrap().timestamp(), when.timestamp());
    assert_eq!(c.delete_placements(&[placed[0].id]).await.unwrap(), 1);

    assert!(c.list_hits(&Default::default()).await.unwrap().is_empty());
    assert!(c
        .list_incidents(&Default::default())
        .await
        .unwrap()
        .is_empty());
    let e = c.get_incident(uuid::Uuid::now_v7()).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"));

    let anon = Client::new(&s.url, "keytrap_wrong").unwrap();
    let e = anon.list_stores(None, None).await.unwrap_err();
    assert!(
        matches!(e, keytrap_sdk::Error::Api { status: 401, .. }),
        "{e}"
    );
    assert!(Client::new("ftp://x", "t").is_err());
    assert!(Client::new("not a url", "t").is_err());
    // Nothing listens on port 9 of loopback.
    let dead = Client::new("http://127.0.0.1:9", "t").unwrap();
    assert!(matches!(
        dead.list_stores(None, None).await.unwrap_err(),
        keytrap_sdk::Error::Http(_)
    ));
}

#[tokio::test]
async fn client_manages_webhook_endpoints() {
    use keytrap_sdk::{Client, NewWebhook};
    let s = server().await;
    let c = Client::new(&s.url, &s.admin).unwrap();
    let created = c
        .create_webhook(&NewWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            format: Some("slack".into()),
            headers: [(
                "Authorization".to_string(),
                "Bearer receiver-secret".to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    let w = c.get_webhook(created.id).await.unwrap();
    assert_eq!((w.format.as_str(), w.enabled), ("slack", true));
    assert!(
        w.header_names
            .iter()
            .any(|h| h.eq_ignore_ascii_case("authorization")),
        "{:?}",
        w.header_names
    );
    assert_eq!(c.list_webhooks().await.unwrap().len(), 1);

    // Refused with the API's own error: an internal address outside the allow-list.
    let e = c
        .create_webhook(&NewWebhook {
            url: "http://169.254.169.254/latest".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, keytrap_sdk::Error::Api { status: 400, .. }),
        "{e}"
    );

    let queued = c.test_webhook(created.id).await.unwrap();
    let deliveries = c.list_deliveries(created.id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].webhook_id, queued.webhook_id);
    assert_eq!(deliveries[0].event_type, "webhook.test");

    assert!(!c.disable_webhook(created.id).await.unwrap().enabled);
    assert!(c.enable_webhook(created.id).await.unwrap().enabled);
    let rotated = c
        .rotate_webhook_secret(created.id, Some(std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    assert_ne!(rotated.secret, created.secret);
    assert_eq!(rotated.webhook.secret_version, 2);
    assert!(rotated.webhook.previous_secret_expires_at.is_some());

    c.delete_webhook(created.id).await.unwrap();
    let gone = c.get_webhook(created.id).await.unwrap_err();
    assert_eq!(gone.code(), Some("not_found"), "{gone}");
}
