//! The `keytrap` binary end to end: `serve`, then `mint`, `render`, `plant db` (dry run
//! and --apply into a SQLite file) and `verify db` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bootstrap_token, command, mint_cli, temp_dir, Server};

fn run(dir: &std::path::Path, api: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = command(dir)
        .args(args)
        .env("KEYTRAP_URL", api)
        .env("KEYTRAP_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn render_plant_and_verify_through_the_cli() {
    let dir = temp_dir();
    let mut s = Server::start(&dir, &[], &[]);
    s.wait_ready().await;
    let token = bootstrap_token(&s);

    let minted = mint_cli(
        &dir,
        &s.api,
        &token,
        &["--exchange", "okx", "--store", "cfg", "--create-store"],
    );
    let v: serde_json::Value = serde_json::from_str(&minted).unwrap();
    let id = v[0]["id"].as_str().unwrap();
    let key = v[0]["credentials"]["api_key"].as_str().unwrap();
    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &["render", "--canary", id, "--template", "env"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("OKX_API_KEY={key}\n")), "{out}");
    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &[
            "render",
            "--canary",
            id,
            "--template",
            "sql",
            "--table",
            "keys",
            "--map",
            "k={api_key},l={label}",
            "--label",
            "it's",
            "--dialect",
            "mysql",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        format!("INSERT INTO `keys` (`k`, `l`) VALUES ('{key}', 'it''s');\n")
    );
    let (ok, _, err) = run(
        &dir,
        &s.api,
        &token,
        &["render", "--canary", id, "--template", "xml"],
    );
    assert!(!ok);
    assert!(err.contains("xml"), "{err}");

    // A SQLite users' key table.
    let db = dir.join("users.db");
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE exchange_api_keys (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, api_key TEXT NOT NULL UNIQUE, api_secret TEXT NOT NULL, created_at TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO exchange_api_keys (user_id, api_key, api_secret, created_at) VALUES (7, 'k', 's', '2026-11-01T10:00:00Z')")
        .execute(&pool)
        .await
        .unwrap();
    let plant = |apply: bool| {
        let mut a = vec![
            "plant",
            "db",
            "--url",
            &url,
            "--table",
            "exchange_api_keys",
            "--map",
            "user_id={user_id},api_key={api_key},api_secret={api_secret},created_at={created_at}",
            "--exchange",
            "bybit",
            "--store",
            "users-db",
            "--create-store",
            "--count",
            "3",
        ];
        if apply {
            a.push("--apply");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = plant(false);
    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("-- dry run"), "{out}");
    assert!(out.contains("INSERT INTO \"exchange_api_keys\""), "{out}");
    let args = plant(true);
    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(ok, "{err}");
    assert!(
        out.starts_with("planted 3 bybit canaries in exchange_api_keys"),
        "{out}"
    );
    assert_eq!(out.matches(" -> id=").count(), 3, "{out}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM exchange_api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 4);
    // Timestamps follow the table's RFC 3339 style.
    let t: String =
        sqlx::query_scalar("SELECT created_at FROM exchange_api_keys ORDER BY id DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");

    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &["verify", "db", "--url", &url, "--store", "users-db"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("verified 3 placements: 3 ok, 0 missing, 0 altered"),
        "{out}"
    );
    sqlx::query("DELETE FROM exchange_api_keys WHERE id = (SELECT MAX(id) FROM exchange_api_keys)")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, out, err) = run(
        &dir,
        &s.api,
        &token,
        &["verify", "db", "--url", &url, "--store", "users-db"],
    );
    assert!(!ok);
    assert!(out.contains("MISSING"), "{out}");
    assert!(
        err.contains("1 planted canaries are missing or altered"),
        "{err}"
    );
    s.terminate();
}

/// A key planted with `plant db` and then used at the trap (signed like a real client)
/// opens an incident on its store, and the placement names the table and row.
#[tokio::test]
async fn a_planted_key_used_at_the_trap_names_store_and_table() {
    use hmac::Mac;
    let dir = temp_dir();
    let mut s = Server::start(&dir, &[], &[]);
    s.wait_ready().await;
    let token = bootstrap_token(&s);
    let db = dir.join("users.db");
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE exchange_api_keys (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, api_key TEXT NOT NULL, api_secret TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let (ok, _, err) = run(
        &dir,
        &s.api,
        &token,
        &[
            "plant",
            "db",
            "--url",
            &url,
            "--table",
            "exchange_api_keys",
            "--map",
            "user_id={user_id},api_key={api_key},api_secret={api_secret}",
            "--exchange",
            "binance",
            "--store",
            "users-db",
            "--create-store",
            "--count",
            "2",
            "--apply",
        ],
    );
    assert!(ok, "{err}");
    let (id, key, secret): (i64, String, String) =
        sqlx::query_as("SELECT id, api_key, api_secret FROM exchange_api_keys ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let q = format!("recvWindow=10000&timestamp={now}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(q.as_bytes());
    let q = format!("{q}&signature={}", hex::encode(mac.finalize().into_bytes()));
    let r = reqwest::Client::new()
        .get(format!("{}/binance/api/v3/account?{q}", s.trap))
        .header("X-MBX-APIKEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // The trap commits hits in batches: poll briefly.
    let mut incident = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, v) = common::call(
            reqwest::Method::GET,
            &format!("{}/v1/incidents", s.api),
            &token,
            None,
        )
        .await;
        if let Some(i) = v["incidents"].as_array().and_then(|a| a.first()) {
            incident = i.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!incident.is_null(), "no incident opened");
    let (_, stores) = common::call(
        reqwest::Method::GET,
        &format!("{}/v1/stores?name=users-db", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(incident["store_id"], stores["stores"][0]["id"]);
    let canary = incident["canary_id"].as_str().unwrap();
    let (_, p) = common::call(
        reqwest::Method::GET,
        &format!("{}/v1/placements?canary_id={canary}", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(p["placements"][0]["location"], "exchange_api_keys");
    assert_eq!(p["placements"][0]["row_key"], format!("id={id}"));
    s.terminate();
}
