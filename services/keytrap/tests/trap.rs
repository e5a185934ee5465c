//! Trap behaviour that needs state across requests, against the real binary on SQLite
//! and PostgreSQL: Kraken's per-key nonce must strictly increase (a replayed request is
//! refused and recorded as refused), shared by every trap replica through the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use base64::Engine;
use hmac::Mac;
use keytrap_core::MasterKey;
use serde_json::{json, Value};

fn kraken_sign(secret_b64: &str, path: &str, nonce: &str, body: &str) -> String {
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = b64.decode(secret_b64).unwrap();
    let mut sha = sha2::Sha256::new();
    sha.update(nonce.as_bytes());
    sha.update(body.as_bytes());
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(&secret).unwrap();
    mac.update(path.as_bytes());
    mac.update(&sha.finalize());
    b64.encode(mac.finalize().into_bytes())
}

async fn kraken_nonces(extra: &[(&str, &str)]) {
    let dir = temp_dir();
    let admin = "keytrap_trap_test_admin_token_0123456789abcdef";
    let key = MasterKey::generate().to_base64();
    let mut env = vec![
        ("KEYTRAP_MASTER_KEY", key.as_str()),
        ("KEYTRAP_ADMIN_TOKEN", admin),
    ];
    env.extend_from_slice(extra);
    let mut s = Server::start(&dir, &env, &[]);
    s.wait_ready().await;
    let (_, store) = call(
        reqwest::Method::POST,
        &format!("{}/v1/stores", s.api),
        admin,
        Some(json!({"name": "kraken-store", "kind": "backup"})),
    )
    .await;
    let (st, minted) = call(
        reqwest::Method::POST,
        &format!("{}/v1/canaries", s.api),
        admin,
        Some(json!({"exchange": "kraken", "store_id": store["id"]})),
    )
    .await;
    assert_eq!(st, 201, "{minted}");
    let c = &minted["canaries"][0];
    let (api_key, secret) = (
        c["credentials"]["api_key"].as_str().unwrap().to_string(),
        c["credentials"]["api_secret"].as_str().unwrap().to_string(),
    );
    let client = reqwest::Client::new();
    let post = |nonce: u64| {
        let body = format!("nonce={nonce}");
        let sig = kraken_sign(&secret, "/0/private/Balance", &nonce.to_string(), &body);
        client
            .post(format!("{}/kraken/0/private/Balance", s.trap))
            .header("API-Key", &api_key)
            .header("API-Sign", sig)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let answer = |r: reqwest::Response| async move { r.json::<Value>().await.unwrap() };
    let n = 1_764_000_000_000u64;
    // The first request names a client behind the peer: believed only from a trusted
    // proxy, and kept as evidence either way.
    let first = answer(
        post(n)
            .header("X-Forwarded-For", "203.0.113.7")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(first["error"], json!([]), "{first}");
    assert!(first["result"].is_object(), "{first}");
    // The same request again (a replay) and an older nonce: refused as Kraken does.
    for nonce in [n, n - 1] {
        let again = answer(post(nonce).send().await.unwrap()).await;
        assert_eq!(
            again,
            json!({"error": ["EAPI:Invalid nonce"]}),
            "nonce {nonce}"
        );
    }
    let later = answer(post(n + 1).send().await.unwrap()).await;
    assert_eq!(later["error"], json!([]), "{later}");

    // Every request is evidence: four hits, the two refused ones not valid.
    let (_, hits) = call(
        reqwest::Method::GET,
        &format!("{}/v1/hits?canary_id={}", s.api, c["id"].as_str().unwrap()),
        admin,
        None,
    )
    .await;
    let states: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["signature_state"].as_str().unwrap())
        .collect();
    let mut sorted = states.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["invalid", "invalid", "valid", "valid"], "{hits}");
    // The source is the socket peer as the trap listener saw it, or the forwarded client
    // when that peer is a trusted proxy.
    let trusted = extra.iter().any(|(k, _)| *k == "KEYTRAP_TRUSTED_PROXIES");
    let mut sources: Vec<(&str, Option<&str>)> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["source_ip"].as_str().unwrap(),
                h["forwarded_for"].as_str(),
            )
        })
        .collect();
    sources.sort_unstable();
    let forwarded_from = if trusted { "203.0.113.7" } else { "127.0.0.1" };
    let mut want = vec![
        ("127.0.0.1", None),
        ("127.0.0.1", None),
        ("127.0.0.1", None),
        (forwarded_from, Some("203.0.113.7")),
    ];
    want.sort_unstable();
    assert_eq!(sources, want, "{hits}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kraken_nonce_must_increase() {
    kraken_nonces(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_behind_a_trusted_proxy_the_forwarded_client_is_the_source() {
    kraken_nonces(&[("KEYTRAP_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kraken_nonce_must_increase() {
    let Some(pg) = postgres_url() else {
        return;
    };
    let url = keytrap_store_postgres::testing::fresh_schema_url(&pg).await;
    kraken_nonces(&[("KEYTRAP_DATABASE_URL", url.as_str())]).await;
}
