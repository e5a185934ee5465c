//! The trap's writer on PostgreSQL runs on a connection of its own; losing that
//! connection (a restarted server, a killed backend) costs one failed batch, which the
//! recorder retries, and the next batch reconnects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use keytrap_store::conformance;
use keytrap_store::*;
use keytrap_store_postgres::{testing, PgDatabase, TRAP_WRITER_APPLICATION_NAME};
use sqlx::postgres::PgConnectOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trap_writer_reconnects_after_losing_its_connection() {
    let Ok(url) = std::env::var(testing::URL_VAR) else {
        // Same rule as testing::fresh(): a skip outside CI, a failure under it.
        assert!(testing::fresh().await.is_none());
        return;
    };
    // A pool name of this test's own, so only this writer's backend is terminated.
    let pool_name = format!("kt-test-{}", uuid::Uuid::new_v4().simple());
    let opts = PgConnectOptions::from_str(&testing::fresh_schema_url(&url).await)
        .unwrap()
        .application_name(&pool_name);
    let db = PgDatabase::connect_with(opts, 4).await.unwrap();
    let writer_name = format!("{pool_name} ({TRAP_WRITER_APPLICATION_NAME})");
    let (tenant, _, canaries) = conformance::planted(&db, 1).await;
    let c = canaries[0].clone();
    let hit = move || conformance::hit(&c, Severity::High, SignatureState::Valid, "read");
    let writer = db.trap_writer().expect("PostgreSQL has a trap writer");
    let record = |mut w: Box<dyn TrapWriter>, batch: Vec<TrapEvent>| {
        tokio::task::spawn_blocking(move || {
            let r = w.record(&batch, &|| false).map_err(|e| e.to_string());
            (w, r)
        })
    };
    let (writer, first) = record(writer, vec![hit(), hit()]).await.unwrap();
    first.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&writer_name)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true], "the writer's own connection, by its name");
    // The batch on the dead connection fails (nothing of it is recorded)...
    let (writer, lost) = record(writer, vec![hit()]).await.unwrap();
    assert!(
        lost.is_err(),
        "a batch on a terminated connection succeeded"
    );
    // ... and the next one reconnects.
    let (writer, again) = record(writer, vec![hit(), hit(), hit()]).await.unwrap();
    again.unwrap();
    let hits = db
        .list_hits(
            tenant.id,
            &HitFilter {
                page: Page {
                    limit: 100,
                    after: None,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 5);
    drop(writer);
}
