//! The shared storage conformance suite, on PostgreSQL (`KEYTRAP_TEST_POSTGRES_URL`).

use keytrap_store_postgres::{testing, PgDatabase};

async fn make() -> Option<Box<PgDatabase>> {
    testing::fresh().await.map(Box::new)
}

keytrap_store::conformance_suite!(make);
