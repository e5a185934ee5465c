//! `keytrap-bench plant`: the two planting figures of issue 5, each with a baseline
//! measured in the same run.
//!
//! - `is_canary` ns/call over canary and random keys of every exchange, against one
//!   HMAC-SHA256 of the key (a fresh keyed HMAC per call, the naive way to check a tag).
//! - `keytrap plant db --apply` of N rows into a PostgreSQL table (mint through a real
//!   API on 127.0.0.1, insert in one transaction, placements recorded), against the
//!   same INSERT statements with random values and no keytrap.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use hmac::{Hmac, Mac};
use keytrap::plant::{plant_db, ApiArgs, PlantDbArgs, RecordArgs};
use keytrap_core::{Exchange, MasterKey};
use rand::Rng;
use sha2::Sha256;
use uuid::Uuid;

fn random_like(exchange: Exchange, rng: &mut impl Rng) -> String {
    // A canary's body with its tag replaced: same shape, (almost surely) not a canary.
    let keys = MasterKey::from_bytes(rng.random()).keys();
    keys.api_key(exchange, Uuid::now_v7())
}

/// ns per `is_canary` call and per baseline HMAC, over `n` keys.
pub fn detect(n: usize) -> (f64, f64, usize) {
    let keys = MasterKey::from_bytes([5; 32]).keys();
    let dk = keys.detection_key();
    let mut rng = rand::rng();
    // Half canaries, half foreign keys of the same shapes, all exchanges.
    let inputs: Vec<String> = (0..n)
        .map(|i| {
            let ex = Exchange::ALL[i % Exchange::ALL.len()];
            if i % 2 == 0 {
                keys.api_key(ex, Uuid::now_v7())
            } else {
                random_like(ex, &mut rng)
            }
        })
        .collect();
    let start = Instant::now();
    let mut hits = 0usize;
    for k in &inputs {
        if dk.is_canary(std::hint::black_box(k)).is_some() {
            hits += 1;
        }
    }
    let per_call = start.elapsed().as_nanos() as f64 / n as f64;
    let secret = [5u8; 32];
    let start = Instant::now();
    let mut sink = 0u8;
    for k in &inputs {
        let mut m = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length");
        m.update(std::hint::black_box(k).as_bytes());
        sink ^= m.finalize().into_bytes()[0];
    }
    std::hint::black_box(sink);
    let baseline = start.elapsed().as_nanos() as f64 / n as f64;
    (per_call, baseline, hits)
}

/// rows/s of `plant db --apply` and of the bare inserts.
pub async fn plant(pg: &str, rows: u32) -> anyhow::Result<(f64, f64)> {
    let tmp = keytrap_store_sqlite::testing::TempSqlite::new().await?;
    let state = keytrap_api::AppState {
        db: Arc::new(tmp.db.clone()),
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &MasterKey::from_bytes([5; 32]).keys(),
            keytrap_webhooks::AddrPolicy::strict(),
            false,
        ),

        keys: MasterKey::from_bytes([5; 32]).keys(),
        key_version: 1,
    };
    let token = keytrap_api::tokens::bootstrap(&state, None)
        .await
        .map_err(anyhow::Error::msg)?
        .context("bootstrap gave no token")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = keytrap_api::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let pool = sqlx::PgPool::connect(pg)
        .await
        .context("connect to PostgreSQL")?;
    let suffix = &Uuid::new_v4().simple().to_string()[..10];
    let (t1, t2) = (
        format!("bench_keys_plant_{suffix}"),
        format!("bench_keys_base_{suffix}"),
    );
    for t in [&t1, &t2] {
        sqlx::query(&format!(
            "CREATE TABLE {t} (id BIGSERIAL PRIMARY KEY, user_id BIGINT NOT NULL,
             exchange VARCHAR(32) NOT NULL, label VARCHAR(64), api_key VARCHAR(128) NOT NULL UNIQUE,
             api_secret TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .execute(&pool)
        .await?;
    }
    let args = PlantDbArgs {
        url: pg.to_string(),
        table: t1.clone(),
        map: "user_id={user_id},exchange={exchange},label={label},api_key={api_key},api_secret={api_secret},created_at={created_at}".into(),
        exchange: Exchange::Binance,
        store: "bench".into(),
        create_store: true,
        count: rows,
        apply: true,
        additional: false,
        record: RecordArgs {
            label: None,
            user_id: None,
            created_at: None,
            base_url: None,
        },
        api: ApiArgs {
            keytrap_url: format!("http://{addr}"),
            token,
        },
    };
    let start = Instant::now();
    let report = plant_db(&args).await?;
    let planted = f64::from(rows) / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.placements.len() == rows as usize,
        "not every row was recorded"
    );

    // Baseline: the same shape of INSERTs (200 rows each) in one transaction.
    let mut rng = rand::rng();
    let start = Instant::now();
    let mut tx = pool.begin().await?;
    for chunk in 0..rows.div_ceil(200) {
        let n = 200.min(rows - chunk * 200);
        let vals: Vec<String> = (0..n)
            .map(|i| {
                let key: String = (0..64)
                    .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
                    .collect();
                let sec: String = (0..64)
                    .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
                    .collect();
                format!(
                    "({}, 'binance', 'trading-bot', '{key}', '{sec}', '2026-11-20 10:00:00')",
                    1000 + chunk * 200 + i
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO {t2} (user_id, exchange, label, api_key, api_secret, created_at) VALUES {}",
            vals.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let base = f64::from(rows) / start.elapsed().as_secs_f64();
    for t in [&t1, &t2] {
        sqlx::query(&format!("DROP TABLE {t}"))
            .execute(&pool)
            .await?;
    }
    Ok((planted, base))
}
