//! The real `keytrap` binary, as a new user runs it: first start on SQLite (master key
//! file, bootstrap token printed once), the README walk-through over HTTP, `keytrap mint`
//! in each output format, SIGTERM, restart, a wrong master key refused, no secret in the
//! logs; and the same binary on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

use keytrap_core::{matches_key_format, Exchange, MasterKey};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_first_start_walkthrough_cli_restart() {
    let dir = temp_dir();
    let mut s = Server::start(&dir, &[], &[]);
    s.wait_ready().await;
    let token = bootstrap_token(&s);
    assert!(token.len() > 40);

    // The master key file exists, is private, and holds a valid key.
    let key_path = dir.join("keytrap.master-key");
    let meta = std::fs::metadata(&key_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    let master = MasterKey::parse(&key_text).unwrap();
    assert!(dir.join("keytrap.db").exists());

    // README walk-through: create a store, mint a Binance canary, list it.
    let (st, store) = call(
        reqwest::Method::POST,
        &format!("{}/v1/stores", s.api),
        &token,
        Some(
            json!({"name": "prod-users-db", "kind": "database", "location": "postgres://db/users"}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{store}");
    let store_id = store["id"].as_str().unwrap();
    let (st, minted) = call(
        reqwest::Method::POST,
        &format!("{}/v1/canaries", s.api),
        &token,
        Some(json!({"exchange": "binance", "store_id": store_id})),
    )
    .await;
    assert_eq!(st, 201, "{minted}");
    let key = minted["canaries"][0]["credentials"]["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(matches_key_format(Exchange::Binance, &key));
    // The key is a canary under the master key written to disk.
    assert_eq!(
        master.keys().detection_key().is_canary(&key),
        Some(Exchange::Binance)
    );
    let (st, list) = call(
        reqwest::Method::GET,
        &format!("{}/v1/canaries", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(list["canaries"].as_array().unwrap().len(), 1);
    // Until the trap issue lands, the trap listener answers 404.
    assert_eq!(
        reqwest::get(format!("{}/api/v3/account", s.trap))
            .await
            .unwrap()
            .status(),
        404
    );

    // The CLI, in its three formats.
    let csv = mint_cli(
        &dir,
        &s.api,
        &token,
        &[
            "--exchange",
            "kucoin",
            "--store",
            "backup-2026-11-20",
            "--create-store",
            "--count",
            "3",
            "--format",
            "csv",
        ],
    );
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "id,exchange,store_id,api_key,api_secret,passphrase,created_at"
    );
    assert_eq!(rows.len(), 4, "{csv}");
    for r in &rows[1..] {
        let f: Vec<&str> = r.split(',').collect();
        assert_eq!(f[1], "kucoin");
        assert!(matches_key_format(Exchange::Kucoin, f[3]), "{r}");
        assert!(!f[5].is_empty(), "kucoin has a passphrase");
    }
    let env = mint_cli(
        &dir,
        &s.api,
        &token,
        &[
            "--exchange",
            "coinbase",
            "--store",
            "prod-users-db",
            "--format",
            "env",
        ],
    );
    assert!(env.contains("COINBASE_API_KEY=organizations/"), "{env}");
    assert!(
        env.contains("COINBASE_API_SECRET=\"-----BEGIN EC PRIVATE KEY-----\\n"),
        "{env}"
    );
    let json_out = mint_cli(
        &dir,
        &s.api,
        &token,
        &[
            "--exchange",
            "okx",
            "--store",
            "prod-users-db",
            "--count",
            "2",
        ],
    );
    let arr: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(arr.len(), 2);
    assert!(arr
        .iter()
        .all(|c| c["credentials"]["passphrase"].is_string()));
    // A missing store is a clear error, not a silent creation.
    let out = command(&dir)
        .args(["mint", "--exchange", "bybit", "--store", "nope"])
        .env("KEYTRAP_URL", &s.api)
        .env("KEYTRAP_TOKEN", &token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // Reveal once more, then stop with SIGTERM: a clean exit.
    let id = minted["canaries"][0]["id"].as_str().unwrap();
    let (st, revealed) = call(
        reqwest::Method::GET,
        &format!("{}/v1/canaries/{id}?reveal=true", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let secret = revealed["credentials"]["api_secret"]
        .as_str()
        .unwrap()
        .to_string();
    s.terminate_cleanly();

    // Even at trace level, the logs hold no token, key or secret.
    let logs = s.logs();
    assert!(logs.contains("management API listening"), "{logs:.2000}");
    for secret in [&token, &key, &secret] {
        assert!(!logs.contains(secret.as_str()), "secret in logs");
    }
    assert!(!logs.contains(key_text.trim()), "master key in logs");
    drop(s);

    // Restart: no new token printed; the old one still works.
    let mut s = Server::start(&dir, &[], &[]);
    s.wait_ready().await;
    let (st, _) = call(
        reqwest::Method::GET,
        &format!("{}/v1/stores", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        s.stdout().iter().all(|l| !l.starts_with("keytrap_")),
        "token printed once only"
    );
    s.terminate_cleanly();
    drop(s);

    // A different master key is refused rather than silently orphaning every canary.
    let other = MasterKey::generate().to_base64();
    let mut s = Server::start(&dir, &[("KEYTRAP_MASTER_KEY", &other)], &[]);
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(s.logs().contains("does not match"), "{}", s.logs());
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_bad_config_are_handled() {
    let dir = temp_dir();
    let port = free_port();
    std::fs::write(
        dir.join("keytrap.toml"),
        format!("api_listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://from-file.db\"\nroles = [\"api\"]\n"),
    )
    .unwrap();
    // The file sets the API address; KEYTRAP_API_LISTEN (set by start) is removed so the
    // file's value is the one used.
    let mut c = command(&dir);
    let mut child = c
        .args(["serve", "--config", "keytrap.toml"])
        .env(
            "KEYTRAP_ADMIN_TOKEN",
            "keytrap_supplied_admin_token_0123456789abcdef",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "keytrap exited");
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dir.join("from-file.db").exists());
    let (st, _) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/stores"),
        "keytrap_supplied_admin_token_0123456789abcdef",
        None,
    )
    .await;
    assert_eq!(st, 200, "KEYTRAP_ADMIN_TOKEN is an admin token");
    let _ = child.kill();
    let _ = child.wait();

    // Typos in the file, bad URLs and weak tokens stop the start with a clear message.
    std::fs::write(dir.join("bad.toml"), "databse_url = \"x\"\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["serve", "--config", "bad.toml"], vec![], "databse_url"),
        (
            vec!["serve", "--database-url", "mysql://x"],
            vec![],
            "unsupported database URL scheme",
        ),
        (
            vec!["serve"],
            vec![("KEYTRAP_ADMIN_TOKEN", "short")],
            "KEYTRAP_ADMIN_TOKEN",
        ),
        (
            vec!["serve"],
            vec![("KEYTRAP_MASTER_KEY", "not-a-key")],
            "KEYTRAP_MASTER_KEY",
        ),
        (vec!["serve", "--role", "nosuch"], vec![], "nosuch"),
    ];
    for (args, env, needle) in cases {
        let mut c = command(&dir);
        c.args(&args)
            .env("KEYTRAP_API_LISTEN", format!("127.0.0.1:{}", free_port()));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serve_needs_a_master_key_and_works() {
    let Some(pg) = postgres_url() else {
        return;
    };
    let url = keytrap_store_postgres::testing::fresh_schema_url(&pg).await;
    let dir = temp_dir();
    // No key: refuse, and say how to fix it.
    let mut s = Server::start(&dir, &[("KEYTRAP_DATABASE_URL", &url)], &[]);
    assert!(!s.wait_exit(Duration::from_secs(30)).success());
    assert!(s.logs().contains("KEYTRAP_MASTER_KEY"), "{}", s.logs());
    assert!(
        !dir.join("keytrap.master-key").exists(),
        "no key file is generated for PostgreSQL"
    );
    drop(s);

    let key = MasterKey::generate().to_base64();
    let admin = "keytrap_postgres_admin_token_0123456789abcdef";
    let mut s = Server::start(
        &dir,
        &[("KEYTRAP_MASTER_KEY", &key), ("KEYTRAP_ADMIN_TOKEN", admin)],
        &["--database-url", &url],
    );
    s.wait_ready().await;
    let (st, ready) = call(
        reqwest::Method::GET,
        &format!("{}/readyz", s.api),
        admin,
        None,
    )
    .await;
    assert_eq!((st, ready["database"].as_str()), (200, Some("postgres")));
    let (st, store) = call(
        reqwest::Method::POST,
        &format!("{}/v1/stores", s.api),
        admin,
        Some(json!({"name": "pg-store", "kind": "database"})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, minted) = call(
        reqwest::Method::POST,
        &format!("{}/v1/canaries", s.api),
        admin,
        Some(json!({"exchange": "kraken", "store_id": store["id"], "count": 50})),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(minted["canaries"].as_array().unwrap().len(), 50);
    assert!(
        s.stdout().iter().all(|l| !l.starts_with("keytrap_")),
        "supplied token is not printed"
    );
    s.terminate_cleanly();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Slow clients and oversized heads cannot hold the trap: a request head not sent within
/// the header-read timeout closes the connection; a head over the limit is refused with
/// 431; the health listener answers probes and metrics on its own port, and the trap's
/// port does not serve health paths (they would mark it as not an exchange).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_big_heads_and_the_health_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir();
    let health_port = free_port();
    let health = format!("127.0.0.1:{health_port}");
    let mut s = Server::start(
        &dir,
        &[
            ("KEYTRAP_HEALTH_LISTEN", health.as_str()),
            ("KEYTRAP_HEADER_READ_TIMEOUT_SECS", "1"),
        ],
        &[],
    );
    s.wait_ready().await;
    let trap_addr = s.trap.trim_start_matches("http://").to_string();

    // Slowloris: half a request head, then silence. The server must close the
    // connection soon after the 1 s timeout (read returns 0 or an error), not wait.
    let mut slow = tokio::net::TcpStream::connect(&trap_addr).await.unwrap();
    slow.write_all(b"GET /binance/api/v3/account HTTP/1.1\r\nHost: x\r\nX-MBX-APIKEY: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await;
    let waited = started.elapsed();
    match read {
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                n == 0 || text.starts_with("HTTP/1.1 408"),
                "unexpected answer: {text}"
            );
        }
        Ok(Err(_)) => {}
        Err(_) => panic!("a client that never finished its headers was kept for 10 s"),
    }
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the timeout: {waited:?}"
    );

    // A 100 KiB header is refused (431) without the server falling over.
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/binance/api/v3/account", s.trap))
        .header("X-Filler", "a".repeat(100 * 1024))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 431, "oversized head must be refused");
    }
    // ... and the trap still answers normally afterwards.
    let r = client
        .get(format!("{}/binance/api/v3/time", s.trap))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An unknown (well-formed) key goes through the group commit: the counters below move.
    let r = client
        .get(format!(
            "{}/binance/api/v3/account?timestamp=1&signature=00",
            s.trap
        ))
        .header("X-MBX-APIKEY", "A".repeat(64))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The health listener.
    let r = client
        .get(format!("http://{health}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("http://{health}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = client
        .get(format!("http://{health}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("keytrap_database_up{backend=\"sqlite\"} 1"),
        "{text}"
    );
    assert!(text.contains("keytrap_role{role=\"trap\"} 1"), "{text}");
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
            .parse()
            .unwrap()
    };
    assert!(
        metric("keytrap_trap_events_committed_total") >= 1.0,
        "{text}"
    );
    assert!(metric("keytrap_trap_commits_total") >= 1.0, "{text}");
    assert!(metric("keytrap_trap_commit_seconds_total") > 0.0, "{text}");
    // The histogram is cumulative and counts every timed commit.
    let count = metric("keytrap_trap_commit_duration_seconds_count");
    assert!(count >= 1.0, "{text}");
    let fast = metric("keytrap_trap_commit_duration_seconds_bucket{le=\"0.001\"}");
    let slow = metric("keytrap_trap_commit_duration_seconds_bucket{le=\"0.1\"}");
    assert!(fast <= slow && slow <= count, "{text}");
    assert_eq!(
        metric("keytrap_trap_commit_duration_seconds_bucket{le=\"+Inf\"}"),
        count
    );
    // The trap's port has no health paths: it answers like a web server that does not
    // know them.
    let r = client
        .get(format!("{}/healthz", s.trap))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    s.child.kill().unwrap();
    let _ = s.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SIGTERM that arrives while `keytrap serve` is still starting (here: held in its
/// migrations by a lock this test takes) stops it cleanly once it is up, never by the
/// signal's default action. The handlers are installed before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_while_starting_stops_cleanly() {
    use sqlx::{Connection, Executor};
    let Some(pg) = postgres_url() else {
        return;
    };
    let url = keytrap_store_postgres::testing::fresh_schema_url(&pg).await;
    // Migrated first, so the table the server's migrator reads exists; then locked.
    keytrap_store_postgres::PgDatabase::connect(&url)
        .await
        .unwrap()
        .close()
        .await;
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    lock.execute("BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut watch = sqlx::PgConnection::connect(&pg).await.unwrap();

    let dir = temp_dir();
    let key = MasterKey::generate().to_base64();
    let mut s = Server::start(
        &dir,
        &[("KEYTRAP_MASTER_KEY", &key)],
        &["--database-url", &url],
    );
    // The server waits on the lock (blocked on our table, not on another test's lock).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity a
             WHERE a.wait_event_type = 'Lock' AND a.wait_event = 'relation'
               AND a.query LIKE '%_sqlx_migrations%'
               AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted
                           AND l.relation = $1::regclass)",
        )
        .bind(format!(
            "{}._sqlx_migrations",
            url.rsplit_once("search_path]=").unwrap().1
        ))
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if blocked > 0 {
            break;
        }
        assert!(
            s.child.try_wait().unwrap().is_none(),
            "keytrap exited early: {}",
            s.logs()
        );
        assert!(
            Instant::now() < deadline,
            "keytrap never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "SIGTERM during startup killed keytrap outright"
    );
    lock.execute("COMMIT").await.unwrap();
    let status = s.wait_exit(Duration::from_secs(20));
    let logs = s.logs();
    assert!(status.success(), "{status}: {logs:.4000}");
    assert!(logs.contains("shutdown signal received"), "{logs:.4000}");
    let _ = std::fs::remove_dir_all(&dir);
}
