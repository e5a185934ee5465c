//! `keytrap plant` and `keytrap verify` against the machine's real PostgreSQL and MariaDB
//! and a SQLite file, with a real keytrap API on 127.0.0.1: plant into a realistic
//! `exchange_api_keys` table, read the rows back, verify, and refuse bad input leaving
//! the target unchanged. PostgreSQL and MariaDB tests skip (saying so) when the
//! server is unreachable (and fail under `CI`); KEYTRAP_TEST_POSTGRES_URL and
//! KEYTRAP_TEST_MYSQL_URL override the default local servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use keytrap::plant::{
    plant_db, plant_file, rotate, verify_db, verify_file, ApiArgs, Finding, PlantDbArgs,
    PlantFileArgs, RecordArgs, RotateArgs, VerifyDbArgs, VerifyFileArgs,
};
use keytrap_core::render::Template;
use keytrap_core::{Exchange, MasterKey};
use sqlx::{AnyPool, Row};

const MASTER: [u8; 32] = [21; 32];

struct Keytrap {
    url: String,
    token: String,
    db: keytrap_store_sqlite::testing::TempSqlite,
}

async fn keytrap() -> Keytrap {
    let db = keytrap_store_sqlite::testing::TempSqlite::new()
        .await
        .unwrap();
    let state = keytrap_api::AppState {
        db: Arc::new(db.db.clone()),
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &MasterKey::from_bytes(MASTER).keys(),
            keytrap_webhooks::AddrPolicy::strict(),
            false,
        ),
        keys: MasterKey::from_bytes(MASTER).keys(),
        key_version: 1,
    };
    let token = keytrap_api::tokens::bootstrap(&state, None)
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = keytrap_api::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Keytrap {
        url: format!("http://{addr}"),
        token,
        db,
    }
}

impl Keytrap {
    fn api(&self) -> ApiArgs {
        ApiArgs {
            keytrap_url: self.url.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Postgres,
    Mysql,
    Sqlite,
}

struct TargetDb {
    url: String,
    pool: AnyPool,
    table: String,
    _file: Option<std::path::PathBuf>,
}

impl Drop for TargetDb {
    fn drop(&mut self) {
        if let Some(f) = &self._file {
            let _ = std::fs::remove_file(f);
        }
    }
}

async fn target(kind: Kind) -> Option<TargetDb> {
    sqlx::any::install_default_drivers();
    let table = format!(
        "exchange_api_keys_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (url, file) = match kind {
        Kind::Postgres => (
            std::env::var("KEYTRAP_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            None,
        ),
        Kind::Mysql => (
            std::env::var("KEYTRAP_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into()),
            None,
        ),
        Kind::Sqlite => {
            let p = std::env::temp_dir().join(format!("keytrap-plant-{table}.db"));
            (format!("sqlite://{}?mode=rwc", p.display()), Some(p))
        }
    };
    let pool = match AnyPool::connect(&url).await {
        Ok(p) => p,
        // Under CI the servers must be there: fail rather than skip.
        Err(e) if std::env::var_os("CI").is_some() => panic!("cannot connect to {url}: {e}"),
        Err(e) => {
            let name = if kind == Kind::Mysql {
                "MariaDB"
            } else {
                "PostgreSQL"
            };
            eprintln!("SKIPPED: {name} unreachable at {url}: {e}");
            return None;
        }
    };
    let ddl = match kind {
        Kind::Postgres => format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL,
             exchange VARCHAR(32) NOT NULL, label VARCHAR(64) CHECK (label <> 'forbidden'),
             api_key VARCHAR(128) NOT NULL UNIQUE, api_secret TEXT NOT NULL,
             passphrase VARCHAR(64), created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ),
        Kind::Mysql => format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, user_id BIGINT NOT NULL,
             exchange VARCHAR(32) NOT NULL, label VARCHAR(64) CHECK (label <> 'forbidden'),
             api_key VARCHAR(128) NOT NULL UNIQUE, api_secret TEXT NOT NULL,
             passphrase VARCHAR(64), created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        ),
        Kind::Sqlite => format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,
             exchange TEXT NOT NULL, label TEXT CHECK (label <> 'forbidden'),
             api_key TEXT NOT NULL UNIQUE, api_secret TEXT NOT NULL, passphrase TEXT,
             created_at TEXT NOT NULL)"
        ),
    };
    sqlx::query(&ddl).execute(&pool).await.unwrap();
    for (u, key, at) in [
        (100, "real-key-aaaa", "2026-10-01 09:00:00"),
        (205, "real-key-bbbb", "2026-10-15 18:30:00"),
        (310, "real-key-cccc", "2026-11-02 07:45:10"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {table} (user_id, exchange, label, api_key, api_secret, created_at)
             VALUES ({u}, 'kucoin', 'bot', '{key}', 'secret', '{at}')"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    Some(TargetDb {
        url,
        pool,
        table,
        _file: file,
    })
}

impl TargetDb {
    async fn count(&self) -> i64 {
        let r = sqlx::query(&format!("SELECT COUNT(*) FROM {}", self.table))
            .fetch_one(&self.pool)
            .await
            .unwrap();
        r.try_get::<i64, _>(0).unwrap()
    }

    async fn drop_table(&self) {
        let _ = sqlx::query(&format!("DROP TABLE {}", self.table))
            .execute(&self.pool)
            .await;
    }
}

const MAP: &str = "user_id={user_id},exchange={exchange},label={label},api_key={api_key},api_secret={api_secret},passphrase={passphrase},created_at={created_at}";

fn args(k: &Keytrap, t: &TargetDb, map: &str, count: u32, apply: bool) -> PlantDbArgs {
    PlantDbArgs {
        url: t.url.clone(),
        table: t.table.clone(),
        map: map.into(),
        exchange: Exchange::Kucoin,
        store: "users-db".into(),
        create_store: true,
        count,
        apply,
        additional: false,
        record: RecordArgs {
            label: None,
            user_id: None,
            created_at: None,
            base_url: None,
        },
        api: k.api(),
    }
}

async fn err_of(a: &PlantDbArgs) -> String {
    format!("{:#}", plant_db(a).await.expect_err("must be refused"))
}

async fn plant_read_back_verify_and_refuse(kind: Kind) {
    let Some(t) = target(kind).await else { return };
    let k = keytrap().await;
    let detector = MasterKey::from_bytes(MASTER).keys().detection_key();

    // Dry run: the SQL, nothing written, nothing minted.
    let dry = plant_db(&args(&k, &t, MAP, 2, false)).await.unwrap();
    assert!(dry.sql.starts_with("-- dry run"), "{}", dry.sql);
    assert!(dry.sql.contains("INSERT INTO"), "{}", dry.sql);
    assert!(dry.placements.is_empty());
    assert_eq!(t.count().await, 3);

    // Apply: 5 rows in one transaction, each placement recorded with its row id.
    let r = plant_db(&args(&k, &t, MAP, 5, true)).await.unwrap();
    assert_eq!(r.placements.len(), 5, "{}", r.sql);
    assert_eq!(t.count().await, 8);
    let rows = sqlx::query(&format!(
        "SELECT CAST(id AS {txt}), CAST(user_id AS {txt}), api_key, api_secret, passphrase, CAST(created_at AS {txt}), label FROM {} ORDER BY id",
        t.table,
        txt = if kind == Kind::Mysql { "CHAR" } else { "TEXT" }
    ))
    .fetch_all(&t.pool)
    .await
    .unwrap();
    let mut planted = 0;
    for row in &rows {
        let id: String = row.try_get(0).unwrap();
        let user: String = row.try_get(1).unwrap();
        let key: String = row.try_get(2).unwrap();
        let pass: Option<String> = row.try_get(4).unwrap();
        let created: String = row.try_get(5).unwrap();
        let label: Option<String> = row.try_get(6).unwrap();
        if key.starts_with("real-key") {
            assert_eq!(detector.is_canary(&key), None);
            continue;
        }
        planted += 1;
        assert_eq!(detector.is_canary(&key), Some(Exchange::Kucoin), "{key}");
        assert!(pass.is_some());
        // Companions look like the neighbours: new users just above the largest id,
        // creation times within the existing rows' recent range, a plausible label.
        let u: i64 = user.parse().unwrap();
        assert!((311..=310 + 9 * 5).contains(&u), "user {u}");
        assert!(created.starts_with("2026-1"), "{created}");
        assert!(!label.unwrap().is_empty());
        let p = r
            .placements
            .iter()
            .find(|p| p.row_key.as_deref() == Some(&format!("id={id}")))
            .unwrap_or_else(|| panic!("no placement for row {id}"));
        assert_eq!(p.location, t.table);
        assert_eq!(p.kind, "database");
        assert!(!p.target.contains("postgres@"), "{}", p.target);
    }
    assert_eq!(planted, 5);

    // Verify: all five in place.
    let v = VerifyDbArgs {
        url: t.url.clone(),
        store: "users-db".into(),
        table: None,
        api: k.api(),
    };
    let rep = verify_db(&v).await.unwrap();
    assert_eq!(rep.findings.len(), 5);
    assert_eq!(rep.problems(), 0, "{:?}", rep.findings);
    // Someone edits one planted row and deletes another.
    let ids: Vec<String> = r
        .placements
        .iter()
        .map(|p| {
            p.row_key
                .clone()
                .unwrap()
                .trim_start_matches("id=")
                .to_string()
        })
        .collect();
    sqlx::query(&format!(
        "UPDATE {} SET api_secret = 'rotated' WHERE id = {}",
        t.table, ids[0]
    ))
    .execute(&t.pool)
    .await
    .unwrap();
    sqlx::query(&format!("DELETE FROM {} WHERE id = {}", t.table, ids[1]))
        .execute(&t.pool)
        .await
        .unwrap();
    let rep = verify_db(&v).await.unwrap();
    assert_eq!(rep.problems(), 2);
    let altered = rep
        .findings
        .iter()
        .find(|(p, _)| p.row_key.as_deref() == Some(&format!("id={}", ids[0])))
        .unwrap();
    assert!(
        matches!(&altered.1, Finding::Altered(w) if w.contains("api_secret")),
        "{altered:?}"
    );
    let missing = rep
        .findings
        .iter()
        .find(|(p, _)| p.row_key.as_deref() == Some(&format!("id={}", ids[1])))
        .unwrap();
    assert!(matches!(&missing.1, Finding::Missing(_)), "{missing:?}");

    // Bad inputs: clear errors, the target unchanged (7 rows now).
    let before = t.count().await;
    let mut a = args(&k, &t, MAP, 1, true);
    let e = err_of(&a).await;
    assert!(e.contains("already has 5 canaries planted"), "{e}");
    a.table = format!("{}_missing", t.table);
    let e = err_of(&a).await;
    assert!(e.contains("does not exist"), "{e}");
    let e = err_of(&args(
        &k,
        &t,
        &MAP.replace("label={label}", "labl={label}"),
        1,
        true,
    ))
    .await;
    assert!(e.contains("has no column \"labl\""), "{e}");
    let e = err_of(&args(
        &k,
        &t,
        &MAP.replace("user_id={user_id}", "user_id={label}"),
        1,
        true,
    ))
    .await;
    assert!(
        e.contains("column user_id is") && e.contains("gets \"{label}\""),
        "{e}"
    );
    if kind != Kind::Sqlite {
        // VARCHAR(32) cannot hold a 36-char UUID secret.
        let e = err_of(&args(
            &k,
            &t,
            &MAP.replace("exchange={exchange}", "exchange={api_secret}"),
            1,
            true,
        ))
        .await;
        assert!(e.contains("(32) but {api_secret} is 36 characters"), "{e}");
    }
    let e = err_of(&args(
        &k,
        &t,
        "user_id={user_id},api_secret={api_secret}",
        1,
        true,
    ))
    .await;
    assert!(e.contains("{api_key} alone"), "{e}");
    let e = err_of(&args(
        &k,
        &t,
        "user_id={user_id},api_key={api_key}",
        1,
        true,
    ))
    .await;
    assert!(e.contains("NOT NULL without a default"), "{e}");
    let e = err_of(&args(&k, &t, "api_key={api_key}; drop table x", 1, true)).await;
    assert!(!e.is_empty());
    // The target refuses a row (CHECK constraint): rolled back, nothing recorded.
    let mut a = args(&k, &t, MAP, 3, true);
    a.additional = true;
    a.record.label = Some("forbidden".into());
    let e = err_of(&a).await;
    assert!(e.contains("nothing was planted"), "{e}");
    assert_eq!(t.count().await, before);
    let placements = keytrap_sdk::Client::new(&k.url, k.token.clone())
        .unwrap()
        .list_placements(&Default::default())
        .await
        .unwrap();
    assert_eq!(placements.len(), 5);
    // keytrap fails to record after the insert: the insert is rolled back.
    sqlx::query("CREATE TRIGGER fail_placements BEFORE INSERT ON placements BEGIN SELECT RAISE(ABORT, 'boom'); END")
        .execute(k.db.writer())
        .await
        .unwrap();
    let mut a = args(&k, &t, MAP, 4, true);
    a.additional = true;
    let e = err_of(&a).await;
    assert!(e.contains("insert was rolled back"), "{e}");
    assert_eq!(t.count().await, before);
    t.drop_table().await;
}

#[tokio::test]
async fn postgres_plant_read_back_verify_and_refuse() {
    plant_read_back_verify_and_refuse(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_plant_read_back_verify_and_refuse() {
    plant_read_back_verify_and_refuse(Kind::Mysql).await;
}

#[tokio::test]
async fn sqlite_plant_read_back_verify_and_refuse() {
    plant_read_back_verify_and_refuse(Kind::Sqlite).await;
}

#[tokio::test]
async fn unreachable_and_unsupported_databases_are_clear_errors() {
    let k = keytrap().await;
    let mut a = PlantDbArgs {
        url: "postgres://postgres@127.0.0.1:1/test".into(),
        table: "exchange_api_keys".into(),
        map: "api_key={api_key}".into(),
        exchange: Exchange::Binance,
        store: "users-db".into(),
        create_store: true,
        count: 1,
        apply: true,
        additional: false,
        record: RecordArgs {
            label: None,
            user_id: None,
            created_at: None,
            base_url: None,
        },
        api: k.api(),
    };
    let e = err_of(&a).await;
    assert!(
        e.contains("cannot connect to postgres://127.0.0.1:1/test"),
        "{e}"
    );
    a.url = "oracle://db/x".into();
    let e = err_of(&a).await;
    assert!(e.contains("unsupported database URL scheme"), "{e}");
    a.url = "sqlite:///nonexistent/dir/x.db".into();
    let e = err_of(&a).await;
    assert!(e.contains("cannot connect"), "{e}");
    a.count = 0;
    assert!(err_of(&a).await.contains("--count"));
    // Nothing was minted by any of these.
    let c = keytrap_sdk::Client::new(&k.url, k.token.clone()).unwrap();
    assert!(c
        .list_canaries(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn plant_file_per_snapshot_rotate_and_verify() {
    let k = keytrap().await;
    let dir = std::env::temp_dir().join(format!("keytrap-files-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let detector = MasterKey::from_bytes(MASTER).keys().detection_key();
    let file_args =
        |format: Template, snapshot: &str, name: &str, exchange: Exchange, append: bool| {
            PlantFileArgs {
                format,
                snapshot: snapshot.into(),
                path: dir.join(name),
                exchange,
                store: "nightly-backup".into(),
                create_store: true,
                append,
                record: RecordArgs {
                    label: None,
                    user_id: None,
                    created_at: None,
                    base_url: None,
                },
                api: k.api(),
            }
        };
    let mut placed = Vec::new();
    for (t, ex, name) in [
        (Template::Env, Exchange::Kucoin, "app.env"),
        (Template::Json, Exchange::Kraken, "keys.json"),
        (Template::Yaml, Exchange::Okx, "keys.yaml"),
        (Template::Csv, Exchange::Binance, "export.csv"),
        (Template::K8s, Exchange::Bybit, "secret.yaml"),
        (Template::Ccxt, Exchange::CoinbaseExchange, "bot.py"),
        (Template::Cdp, Exchange::Coinbase, "cdp_api_key.json"),
    ] {
        let p = plant_file(&file_args(t, "2026-11-20", name, ex, false))
            .await
            .unwrap();
        assert_eq!(p.snapshot.as_deref(), Some("2026-11-20"));
        assert_eq!(p.location, t.as_str());
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        if t != Template::K8s {
            assert!(
                text.split(|c: char| !(c.is_ascii_alphanumeric() || "/+-".contains(c)))
                    .any(|w| detector.is_canary(w) == Some(ex)),
                "{t:?}: {text}"
            );
        }
        placed.push(p);
    }
    // One fresh canary per snapshot; files are not overwritten; JSON is not appended to.
    let e = plant_file(&file_args(
        Template::Env,
        "2026-11-20",
        "app.env",
        Exchange::Kucoin,
        true,
    ))
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("one fresh canary per snapshot"),
        "{e:#}"
    );
    let e = plant_file(&file_args(
        Template::Env,
        "2026-11-21",
        "app.env",
        Exchange::Kucoin,
        false,
    ))
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("already exists"), "{e:#}");
    let e = plant_file(&file_args(
        Template::Json,
        "2026-11-21",
        "keys.json",
        Exchange::Kraken,
        true,
    ))
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("--append is not possible"),
        "{e:#}"
    );
    let e = plant_file(&file_args(
        Template::Cdp,
        "x",
        "c.json",
        Exchange::Okx,
        false,
    ))
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("coinbase"), "{e:#}");
    // A second snapshot appended to the env file.
    let p2 = plant_file(&file_args(
        Template::Env,
        "2026-11-21",
        "app.env",
        Exchange::Kucoin,
        true,
    ))
    .await
    .unwrap();
    assert_ne!(p2.canary_id, placed[0].canary_id);

    let v = VerifyFileArgs {
        store: "nightly-backup".into(),
        api: k.api(),
    };
    let rep = verify_file(&v).await.unwrap();
    assert_eq!(rep.findings.len(), 8);
    assert_eq!(rep.problems(), 0, "{:?}", rep.findings);

    // Rotation: a new generation; every earlier one gets an expiry after the grace.
    let (newest, expired) = rotate(&RotateArgs {
        file: file_args(
            Template::Env,
            "2026-11-22",
            "app-2026-11-22.env",
            Exchange::Kucoin,
            false,
        ),
        grace: "3d".into(),
    })
    .await
    .unwrap();
    assert_eq!(expired.len(), 8);
    assert!(!expired.contains(&newest.canary_id));
    let c = keytrap_sdk::Client::new(&k.url, k.token.clone()).unwrap();
    let old = c.get_canary(placed[0].canary_id, false).await.unwrap();
    let exp = old.expires_at.unwrap();
    let in3d = chrono::Utc::now() + chrono::Duration::days(3);
    assert!((exp - in3d).num_seconds().abs() < 60, "{exp}");
    assert!(c
        .get_canary(newest.canary_id, false)
        .await
        .unwrap()
        .expires_at
        .is_none());

    // Tampering shows up: a file removed, a key cut from another.
    std::fs::remove_file(dir.join("keys.yaml")).unwrap();
    let csv = std::fs::read_to_string(dir.join("export.csv")).unwrap();
    std::fs::write(dir.join("export.csv"), csv.lines().next().unwrap()).unwrap();
    let rep = verify_file(&v).await.unwrap();
    assert_eq!(rep.problems(), 2, "{:?}", rep.findings);
    let _ = std::fs::remove_dir_all(&dir);
}
