//! TLS to PostgreSQL: `sslmode=require` encrypts the connection (the server here has the
//! Debian snakeoil certificate; `require`, like libpq's, does not verify it), and
//! `sslmode=disable` does not, so the check below tells the two apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keytrap_store_postgres::{testing, PgDatabase};

async fn uses_tls(url: &str, mode: &str) -> bool {
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = PgDatabase::connect(&format!("{url}{sep}sslmode={mode}"))
        .await
        .unwrap_or_else(|e| panic!("connect with sslmode={mode}: {e}"));
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    db.pool().close().await;
    ssl
}

#[tokio::test]
async fn sslmode_require_encrypts_and_disable_does_not() {
    let Ok(url) = std::env::var(testing::URL_VAR) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} must be set in CI",
            testing::URL_VAR
        );
        eprintln!("SKIPPED: PostgreSQL test ({} is not set)", testing::URL_VAR);
        return;
    };
    let url = testing::fresh_schema_url(&url).await;
    assert!(
        uses_tls(&url, "require").await,
        "sslmode=require gave plain TCP"
    );
    assert!(!uses_tls(&url, "disable").await, "sslmode=disable gave TLS");
}
