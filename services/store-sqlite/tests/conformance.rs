//! The shared storage conformance suite, on SQLite.

use keytrap_store_sqlite::testing::TempSqlite;

#[allow(clippy::expect_used)]
async fn make() -> Option<TempSqlite> {
    Some(TempSqlite::new().await.expect("temporary SQLite database"))
}

keytrap_store::conformance_suite!(make);
