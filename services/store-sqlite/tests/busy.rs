//! A write that loses the file lock to another connection is `Busy` (retryable), not a
//! generic backend error; other database errors are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

#[tokio::test]
async fn a_held_write_lock_is_busy_and_a_constraint_is_not() {
    let path = std::env::temp_dir().join(format!("keytrap-busy-{}.db", uuid::Uuid::new_v4()));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::ZERO);
    let mut a = opts.connect().await.unwrap();
    let mut b = opts.connect().await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut a)
        .await
        .unwrap();
    let err = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut b)
        .await
        .expect_err("the second writer cannot take the lock");
    assert!(keytrap_store_sqlite::is_busy(&err), "{err:?}");
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();

    sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&mut a)
        .await
        .unwrap();
    let dup = sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&mut b)
        .await
        .expect_err("duplicate key");
    assert!(!keytrap_store_sqlite::is_busy(&dup), "{dup:?}");

    a.close().await.unwrap();
    b.close().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
