//! A transaction PostgreSQL aborts to break a deadlock is `Busy` (retryable); other
//! database errors are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keytrap_store_postgres::{is_busy, testing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_victim_is_busy_and_a_constraint_is_not() {
    let Some(db) = testing::fresh().await else {
        return;
    };
    let pool = db.pool();
    sqlx::query("CREATE TABLE busy_t (id INT PRIMARY KEY, v INT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO busy_t VALUES (1, 0), (2, 0)")
        .execute(pool)
        .await
        .unwrap();
    // Two transactions lock rows 1 and 2, then each wants the other's: PostgreSQL aborts one.
    let mut a = pool.begin().await.unwrap();
    let mut b = pool.begin().await.unwrap();
    let lock = |id: i32| format!("UPDATE busy_t SET v = v + 1 WHERE id = {id}");
    sqlx::query(&lock(1)).execute(&mut *a).await.unwrap();
    sqlx::query(&lock(2)).execute(&mut *b).await.unwrap();
    let (la, lb) = (lock(2), lock(1));
    let (ra, rb) = tokio::join!(
        sqlx::query(&la).execute(&mut *a),
        sqlx::query(&lb).execute(&mut *b)
    );
    let err = match (ra, rb) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    assert!(is_busy(&err), "{err:?}");
    drop((a, b));

    let dup = sqlx::query("INSERT INTO busy_t VALUES (1, 0)")
        .execute(pool)
        .await
        .expect_err("duplicate key");
    assert!(!is_busy(&dup), "{dup:?}");
}
