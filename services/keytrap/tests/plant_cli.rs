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
