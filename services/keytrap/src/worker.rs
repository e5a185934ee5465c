//! The `worker` role: the alert pipeline (outbox fan-out, leased deliveries, retries).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keytrap_api::AppState;
use keytrap_webhooks::{ClientConfig, DeliveryClient, Schedule, Worker, WorkerConfig};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

use crate::config::Resolved;

/// The worker for this process, with the API's cipher and the configured SSRF policy,
/// timeout and retry scale.
pub async fn build(cfg: &Resolved, state: &AppState) -> anyhow::Result<Worker> {
    let w = &cfg.webhooks;
    let client = DeliveryClient::new(ClientConfig {
        timeout: w.timeout,
        connect_timeout: Duration::from_secs(5).min(w.timeout),
        addrs: w.addrs.clone(),
        https_only: w.https_only,
        ..ClientConfig::default()
    })
    .context("cannot build the webhook client")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "keytrap".into());
    let owner = format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    tracing::info!(
        %owner,
        timeout_secs = w.timeout.as_secs(),
        retry_scale = w.retry_scale,
        allowed = ?w.addrs.allowed(),
        "alert worker configured"
    );
    Ok(Worker::new(
        state.db.clone(),
        client,
        state.webhooks.cipher.clone(),
        WorkerConfig {
            owner,
            schedule: Schedule::scaled(w.retry_scale),
            source: format!("keytrap://{host}"),
            ..WorkerConfig::default()
        },
    ))
}

/// On PostgreSQL, wakes `notify` on every `NOTIFY` from a hit or a queued message in any
/// replica (one extra connection). Polling stays as the fallback. The connection is made
/// by the listening task (retried every second while it fails), so startup never waits
/// for it; the schema was migrated by the main connection already.
pub fn listen_postgres(url: &str, notify: Arc<Notify>) -> anyhow::Result<()> {
    let opts = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
    let db = keytrap_store_postgres::PgDatabase::connect_lazy_migrated(opts, 2);
    db.spawn_alert_wakeups(notify);
    Ok(())
}
