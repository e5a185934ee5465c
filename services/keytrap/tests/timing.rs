//! Stealth by timing, against the real binary: unknown keys and canary keys with a wrong
//! signature answer in indistinguishable time. In a test binary of its own, so no other
//! test competes for the CPU while it measures; the backends run one after the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::Instant;

use rand::seq::SliceRandom;

use keytrap_core::MasterKey;
use serde_json::json;

/// Two-sample Kolmogorov-Smirnov: the statistic D and its asymptotic p-value.
fn ks_two_sample(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    let mut p = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let sign = if k as u64 % 2 == 1 { 1.0 } else { -1.0 };
        p += sign * 2.0 * (-2.0 * k * k * lambda * lambda).exp();
    }
    (d, p.clamp(0.0, 1.0))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn ks_statistic_tells_different_distributions_apart() {
    // The check that the timing test relies on: same distribution -> large p; shifted
    // distribution -> tiny p.
    let a: Vec<f64> = (0..400).map(|i| f64::from(i % 97) * 0.01).collect();
    let b: Vec<f64> = (0..400).map(|i| f64::from((i * 7) % 97) * 0.01).collect();
    let c: Vec<f64> = a.iter().map(|x| x + 0.2).collect();
    assert!(ks_two_sample(&a, &b).1 > 0.5);
    assert!(ks_two_sample(&a, &c).1 < 1e-6);
}

fn binance_query(secret: &str) -> String {
    use hmac::Mac;
    let now = chrono::Utc::now().timestamp_millis();
    let q = format!("recvWindow=10000&timestamp={now}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(q.as_bytes());
    format!("{q}&signature={}", hex::encode(mac.finalize().into_bytes()))
}

fn random_alnum(n: usize) -> String {
    use rand::Rng;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::rng();
    (0..n)
        .map(|_| A[r.random_range(0..A.len())] as char)
        .collect()
}

/// Stealth: an unknown key and a canary key with a wrong signature must not be told
/// apart by timing. Both go through the same lookup, derivation, signature check and
/// group commit before the answer. Requests come in pairs of one of each kind, in random
/// order within the pair (so drift in the machine's load hits both alike) and each latency is measured by a real HTTP client.
async fn timing_is_indistinguishable(extra: &[(&str, &str)]) {
    let dir = temp_dir();
    let admin = "keytrap_timing_admin_token_0123456789abcdef01";
    let key = MasterKey::generate().to_base64();
    let mut env = vec![
        ("KEYTRAP_MASTER_KEY", key.as_str()),
        ("KEYTRAP_ADMIN_TOKEN", admin),
    ];
    env.extend_from_slice(extra);
    let health = format!("127.0.0.1:{}", free_port());
    env.push(("KEYTRAP_HEALTH_LISTEN", health.as_str()));
    let mut s = Server::start(&dir, &env, &[]);
    s.wait_ready().await;
    let (_, store) = call(
        reqwest::Method::POST,
        &format!("{}/v1/stores", s.api),
        admin,
        Some(json!({"name": "timing", "kind": "database"})),
    )
    .await;
    let (st, minted) = call(
        reqwest::Method::POST,
        &format!("{}/v1/canaries", s.api),
        admin,
        Some(json!({"exchange": "binance", "store_id": store["id"]})),
    )
    .await;
    assert_eq!(st, 201, "{minted}");
    let canary_key = minted["canaries"][0]["credentials"]["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let unknown_keys: Vec<String> = (0..5).map(|_| random_alnum(64)).collect();
    let client = reqwest::Client::new();
    let url = format!("{}/binance/api/v3/account", s.trap);
    let wrong_secret = random_alnum(64);

    // A KS test at p > 0.01 fails 1% of the time even for identical distributions, and a
    // burst of load on the machine mid-sample can shift one half: up to three samples,
    // every one reported; the first that passes ends the test.
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        match sample_once(&client, &url, &canary_key, &unknown_keys, &wrong_secret).await {
            Ok(()) => break,
            Err(e) => {
                let metrics = reqwest::get(format!("http://{health}/metrics"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let floor = metrics
                    .lines()
                    .find(|l| l.starts_with("keytrap_trap_idle_floor_seconds "))
                    .unwrap_or("");
                eprintln!("timing attempt {attempt}: {e} ({floor})");
                failures.push(e);
            }
        }
    }
    assert!(
        failures.len() < 3,
        "timing differs in every attempt: {failures:#?}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One sample of 300 + 300 requests in random order; `Err` says how they differ.
async fn sample_once(
    client: &reqwest::Client,
    url: &str,
    canary_key: &str,
    unknown_keys: &[String],
    wrong_secret: &str,
) -> Result<(), String> {
    // true = canary with a wrong signature, false = unknown key.
    let n = 300;
    // Blocks of one of each, in random order within the block: drift in the machine's
    // load (or in the learned floor) then falls on both kinds alike at every moment, while
    // a per-kind offset, whichever comes first, still shows.
    let mut rng = rand::rng();
    let plan: Vec<bool> = (0..n)
        .flat_map(|_| {
            let mut block = [true, false];
            block.shuffle(&mut rng);
            block
        })
        .collect();
    let warmup: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
    let (mut canary, mut unknown) = (Vec::new(), Vec::new());
    let mut bodies = std::collections::BTreeSet::new();
    for (i, is_canary) in warmup.iter().chain(plan.iter()).enumerate() {
        let key = if *is_canary {
            canary_key.to_string()
        } else {
            unknown_keys[i % unknown_keys.len()].clone()
        };
        let q = binance_query(wrong_secret);
        let started = Instant::now();
        let r = client
            .get(format!("{url}?{q}"))
            .header("X-MBX-APIKEY", key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        bodies.insert((*is_canary, status, body));
        if i < warmup.len() {
            continue;
        }
        if *is_canary {
            canary.push(ms)
        } else {
            unknown.push(ms)
        }
    }
    let deciles = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (1..10)
            .map(|i| format!("{:.2}", v[v.len() * i / 10]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!("timing deciles (ms): canary  {}", deciles(&canary));
    eprintln!("timing deciles (ms): unknown {}", deciles(&unknown));
    let (d, p) = ks_two_sample(&canary, &unknown);
    let (mc, mu) = (median(&canary), median(&unknown));
    eprintln!(
        "timing: canary-with-wrong-signature median {mc:.3} ms, unknown-key median {mu:.3} ms, KS D={d:.3} p={p:.3}"
    );
    // The answers differ as Binance's do (-1022 vs -2015), but every answer of a kind is
    // the same.
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    if p <= 0.01 {
        return Err(format!(
            "latency distributions differ: KS D={d:.3}, p={p:.4}"
        ));
    }
    if (mc - mu).abs() >= 1.0 {
        return Err(format!(
            "medians differ by more than 1 ms: {mc:.3} vs {mu:.3}"
        ));
    }
    Ok(())
}

/// SQLite, then PostgreSQL (when configured): one test, so the two never run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_canary_keys_take_the_same_time() {
    timing_is_indistinguishable(&[]).await;
    let Some(pg) = postgres_url() else {
        return;
    };
    let url = keytrap_store_postgres::testing::fresh_schema_url(&pg).await;
    timing_is_indistinguishable(&[("KEYTRAP_DATABASE_URL", url.as_str())]).await;
}
