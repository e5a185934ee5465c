//! keytrap storage on embedded SQLite.
//!
//! Tuning: WAL journal (readers never block the writer), `synchronous=FULL` (a committed
//! hit survives power loss), `busy_timeout`, foreign keys on. Writes go through a pool of
//! exactly one connection, so there is one writer and no `SQLITE_BUSY` between writers;
//! reads use a separate read-only pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use keytrap_store::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

mod placements;
mod trap;
mod trap_writer;
pub use trap_writer::{slice_of as index_slice, INDEX_EVERY};
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a connection waits for a lock held by another (a backup tool, a second
/// process on the same file) before giving up with `Busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per INSERT statement in bulk inserts (12 binds a row, well under SQLite's 32766).
const INSERT_CHUNK: usize = 1_000;

/// The SQLite backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteDatabase {
    writer: SqlitePool,
    reader: SqlitePool,
    /// `hit.recorded` subscribers, cached for the trap (see `trap_writer.rs`).
    hit_subscribers: std::sync::Arc<HitSubscribers>,
    /// The trap's own connection for its group commit (see `trap_writer.rs`).
    trap: trap_writer::SharedTrapConn,
    /// The runtime the pools were opened on (the trap writer's thread blocks on it).
    runtime: tokio::runtime::Handle,
}

impl SqliteDatabase {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or
    /// `sqlite:path`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // No liveness ping before each acquire: the connections are in-process (a ping is
        // one more hop to the connection's thread and back, on every group commit).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .synchronous(SqliteSynchronous::Full)
                    // Statement journals in memory: a group commit's multi-row hit INSERT
                    // (not the transaction's only statement) spills its journal to a
                    // temporary file past 64 KiB; in an isolated profile of the one-script
                    // experiment (docs/benchmarks.md) that was 12% of a batch, 3% after.
                    .pragma("temp_store", "memory")
                    // Batched statements differ by their row count; keep them prepared.
                    .statement_cache_capacity(400),
            )
            .await
            .map_err(backend)?;
        MIGRATOR.run(&writer).await.map_err(backend)?;
        let trap = trap_writer::TrapConn::open(base.get_filename(), BUSY_TIMEOUT)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(12)
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await
            .map_err(backend)?;
        Ok(SqliteDatabase {
            writer,
            reader,
            hit_subscribers: Default::default(),
            trap: std::sync::Arc::new(trap),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The single-connection pool every write goes through (later issues add tables).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_database(e, |e| e.downcast_ref::<sqlx::Error>().is_some_and(is_busy))
}

/// `SQLITE_BUSY` or `SQLITE_LOCKED` (any extended code): another connection, e.g. a
/// backup tool or a second process on the same file, held the lock past the busy timeout.
pub fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6)))
}

/// Maps a unique violation to `Conflict(what)`, anything else to `Backend`.
fn conflict(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => backend(e),
    }
}

/// Now, at the millisecond precision SQLite stores, so returned rows equal stored ones.
fn now() -> DateTime<Utc> {
    let n = Utc::now();
    DateTime::from_timestamp_millis(n.timestamp_millis()).unwrap_or(n)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v)
        .single()
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

fn opt_from_ms(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(from_ms).transpose()
}

fn labels_json(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "{}".into())
}

fn labels_from(s: &str) -> Result<Labels> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))
}

fn tenant_row(r: &SqliteRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get("id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        is_root: r.try_get::<i64, _>("is_root").map_err(backend)? != 0,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
    })
}

fn digest_col(r: &SqliteRow) -> Result<[u8; 32]> {
    let v: Vec<u8> = r.try_get("digest").map_err(backend)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt("token digest is not 32 bytes".into()))
}

fn token_row(r: &SqliteRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        scopes: scopes_from_string(r.try_get("scopes").map_err(backend)?),
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
        revoked_at: opt_from_ms(r.try_get("revoked_at").map_err(backend)?)?,
        digest: digest_col(r)?,
    })
}

fn store_row(r: &SqliteRow) -> Result<Store> {
    let kind: &str = r.try_get("kind").map_err(backend)?;
    Ok(Store {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        location: r.try_get("location").map_err(backend)?,
        labels: labels_from(r.try_get("labels").map_err(backend)?)?,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
    })
}

fn canary_row(r: &SqliteRow, now: DateTime<Utc>) -> Result<Canary> {
    Canary::from_row(
        r.try_get("id").map_err(backend)?,
        r.try_get("tenant_id").map_err(backend)?,
        r.try_get("store_id").map_err(backend)?,
        r.try_get("exchange").map_err(backend)?,
        r.try_get("key_version").map_err(backend)?,
        r.try_get("memo").map_err(backend)?,
        labels_from(r.try_get("labels").map_err(backend)?)?,
        r.try_get("status").map_err(backend)?,
        from_ms(r.try_get("created_at").map_err(backend)?)?,
        opt_from_ms(r.try_get("expires_at").map_err(backend)?)?,
        opt_from_ms(r.try_get("disabled_at").map_err(backend)?)?,
        now,
    )
}

async fn insert_audit<'c, E>(exec: E, audit: NewAudit, at: DateTime<Utc>) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let e = audit.into_entry(at);
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_token_id, action, target_type, target_id, details, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id)
    .bind(e.tenant_id)
    .bind(e.actor_token_id)
    .bind(&e.action)
    .bind(&e.target_type)
    .bind(&e.target_id)
    .bind(e.details.to_string())
    .bind(ms(e.at))
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

const CANARY_COLS: &str = "id, tenant_id, store_id, exchange, key_version, memo, labels, status, created_at, expires_at, disabled_at";

#[async_trait]
impl Database for SqliteDatabase {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let stored: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn create_tenant(&self, name: &str, is_root: bool, audit: NewAudit) -> Result<Tenant> {
        let t = Tenant {
            id: Uuid::now_v7(),
            name: name.to_string(),
            is_root,
            created_at: now(),
        };
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query("INSERT INTO tenants (id, name, is_root, created_at) VALUES (?, ?, ?, ?)")
            .bind(t.id)
            .bind(&t.name)
            .bind(i64::from(t.is_root))
            .bind(ms(t.created_at))
            .execute(&mut *tx)
            .await
            .map_err(conflict("tenant"))?;
        insert_audit(&mut *tx, audit, t.created_at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(t)
    }

    async fn root_tenant(&self) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE is_root = 1")
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    async fn get_tenant(&self, id: Uuid) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<ApiToken> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, scopes, digest, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id)
        .bind(token.tenant_id)
        .bind(&token.name)
        .bind(scopes_to_string(&token.scopes))
        .bind(&token.digest[..])
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(conflict("token"))?;
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(ApiToken {
            id: token.id,
            tenant_id: token.tenant_id,
            name: token.name,
            scopes: token.scopes,
            created_at: now,
            revoked_at: None,
            digest: token.digest,
        })
    }

    async fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE digest = ? AND revoked_at IS NULL")
            .bind(&digest[..])
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn list_tokens(&self, tenant: Uuid) -> Result<Vec<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = ? ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_token(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<ApiToken> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(ms(now))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        token_row(&row)
    }

    async fn create_store(&self, store: NewStore, audit: NewAudit) -> Result<Store> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO stores (id, tenant_id, name, kind, location, labels, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(store.id)
        .bind(store.tenant_id)
        .bind(&store.name)
        .bind(store.kind.as_str())
        .bind(&store.location)
        .bind(labels_json(&store.labels))
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict("store name"))?;
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        store_row(&row)
    }

    async fn get_store(&self, tenant: Uuid, id: Uuid) -> Result<Option<Store>> {
        sqlx::query("SELECT * FROM stores WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(store_row)
            .transpose()
    }

    async fn get_store_by_name(&self, tenant: Uuid, name: &str) -> Result<Option<Store>> {
        sqlx::query("SELECT * FROM stores WHERE tenant_id = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?
            .as_ref()
            .map(store_row)
            .transpose()
    }

    async fn list_stores(&self, tenant: Uuid, page: Page) -> Result<Vec<Store>> {
        sqlx::query("SELECT * FROM stores WHERE tenant_id = ? AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?")
            .bind(tenant)
            .bind(page.after)
            .bind(page.after)
            .bind(i64::from(page.limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?
            .iter()
            .map(store_row)
            .collect()
    }

    async fn insert_canaries(&self, canaries: &[NewCanary], audit: NewAudit) -> Result<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        for chunk in canaries.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO canaries (id, tenant_id, store_id, exchange, lookup_digest, key_version, memo, labels, status, created_at, expires_at) ",
            );
            q.push_values(chunk, |mut b, c| {
                b.push_bind(c.id)
                    .push_bind(c.tenant_id)
                    .push_bind(c.store_id)
                    .push_bind(c.exchange.as_str())
                    .push_bind(&c.lookup_digest[..])
                    .push_bind(c.key_version)
                    .push_bind(&c.memo)
                    .push_bind(labels_json(&c.labels))
                    .push_bind("active")
                    .push_bind(ms(c.created_at))
                    .push_bind(c.expires_at.map(ms));
            });
            q.build()
                .execute(&mut *tx)
                .await
                .map_err(conflict("canary key"))?;
        }
        insert_audit(&mut *tx, audit, now()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn get_canary(&self, tenant: Uuid, id: Uuid) -> Result<Option<Canary>> {
        let now = now();
        sqlx::query(&format!(
            "SELECT {CANARY_COLS} FROM canaries WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?
        .map(|r| canary_row(&r, now))
        .transpose()
    }

    async fn list_canaries(&self, tenant: Uuid, f: &CanaryFilter) -> Result<Vec<Canary>> {
        let now = now();
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {CANARY_COLS} FROM canaries WHERE tenant_id = "
        ));
        q.push_bind(tenant);
        if let Some(s) = f.store_id {
            q.push(" AND store_id = ").push_bind(s);
        }
        if let Some(x) = f.exchange {
            q.push(" AND exchange = ").push_bind(x.as_str());
        }
        match f.status {
            None => {}
            Some(CanaryStatus::Disabled) => {
                q.push(" AND status = 'disabled'");
            }
            Some(CanaryStatus::Active) => {
                q.push(" AND status = 'active' AND (expires_at IS NULL OR expires_at > ")
                    .push_bind(ms(now))
                    .push(")");
            }
            Some(CanaryStatus::Expired) => {
                q.push(" AND status = 'active' AND expires_at <= ")
                    .push_bind(ms(now));
            }
        }
        if let Some((k, v)) = &f.label {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(canaries.labels) j WHERE j.key = ")
                .push_bind(k)
                .push(" AND j.value = ")
                .push_bind(v)
                .push(")");
        }
        if let Some(a) = f.page.after {
            q.push(" AND id > ").push_bind(a);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(f.page.limit));
        q.build()
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?
            .iter()
            .map(|r| canary_row(r, now))
            .collect()
    }

    async fn disable_canary(
        &self,
        tenant: Uuid,
        id: Uuid,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<Canary> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(&format!(
            "UPDATE canaries SET status = 'disabled', disabled_at = COALESCE(disabled_at, ?)
             WHERE tenant_id = ? AND id = ? RETURNING {CANARY_COLS}"
        ))
        .bind(ms(at))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        canary_row(&row, now())
    }

    async fn canary_by_digest(&self, digest: &[u8; 32]) -> Result<Option<Canary>> {
        let now = now();
        sqlx::query(&format!(
            "SELECT {CANARY_COLS} FROM canaries WHERE lookup_digest = ?"
        ))
        .bind(&digest[..])
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?
        .map(|r| canary_row(&r, now))
        .transpose()
    }

    async fn append_audit(&self, audit: NewAudit) -> Result<()> {
        insert_audit(&self.writer, audit, now()).await
    }

    async fn list_audit(&self, tenant: Uuid, page: Page) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE tenant_id = ? AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
        )
        .bind(tenant)
        .bind(page.after)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let details: &str = r.try_get("details").map_err(backend)?;
                Ok(AuditEntry {
                    id: r.try_get("id").map_err(backend)?,
                    tenant_id: r.try_get("tenant_id").map_err(backend)?,
                    actor_token_id: r.try_get("actor_token_id").map_err(backend)?,
                    action: r.try_get("action").map_err(backend)?,
                    target_type: r.try_get("target_type").map_err(backend)?,
                    target_id: r.try_get("target_id").map_err(backend)?,
                    details: serde_json::from_str(details)
                        .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?,
                    at: from_ms(r.try_get("at").map_err(backend)?)?,
                })
            })
            .collect()
    }

    async fn record_trap_events(&self, batch: &[TrapEvent]) -> Result<()> {
        self.trap_record(batch).await
    }

    fn trap_writer(&self) -> Option<Box<dyn TrapWriter>> {
        Some(Box::new(trap_writer::SqliteTrapWriter::new(self.clone())))
    }

    async fn prepare_trap(&self) -> Result<()> {
        self.trap_prepare().await
    }

    async fn list_hits(&self, tenant: Uuid, filter: &HitFilter) -> Result<Vec<Hit>> {
        self.trap_list_hits(tenant, filter).await
    }

    async fn get_incident(&self, tenant: Uuid, id: Uuid) -> Result<Option<Incident>> {
        self.trap_get_incident(tenant, id).await
    }

    async fn list_incidents(&self, tenant: Uuid, filter: &IncidentFilter) -> Result<Vec<Incident>> {
        self.trap_list_incidents(tenant, filter).await
    }

    async fn set_incident_status(
        &self,
        tenant: Uuid,
        id: Uuid,
        status: IncidentStatus,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<Incident> {
        self.trap_set_incident_status(tenant, id, status, at, audit)
            .await
    }

    async fn list_events(&self, tenant: Uuid, page: Page) -> Result<Vec<Event>> {
        self.trap_list_events(tenant, page).await
    }

    async fn list_unknown_sources(&self, limit: u32) -> Result<Vec<UnknownSource>> {
        self.trap_unknown_sources(limit).await
    }

    async fn put_order(&self, order: &TrapOrder) -> Result<()> {
        self.trap_put_order(order).await
    }

    async fn get_order(&self, canary: Uuid, order_id: &str) -> Result<Option<TrapOrder>> {
        self.trap_get_order(canary, order_id).await
    }

    async fn list_orders(&self, canary: Uuid, open_only: bool) -> Result<Vec<TrapOrder>> {
        self.trap_list_orders(canary, open_only).await
    }

    async fn advance_nonce(&self, canary: Uuid, nonce: u64) -> Result<bool> {
        self.trap_advance_nonce(canary, nonce).await
    }

    async fn cancel_order(&self, canary: Uuid, order_id: &str) -> Result<Option<TrapOrder>> {
        self.trap_cancel_order(canary, order_id).await
    }

    // ---- placements (issue 5) -------------------------------------------------------

    async fn insert_placements(
        &self,
        placements: &[NewPlacement],
        audit: NewAudit,
    ) -> Result<Vec<Placement>> {
        self.placements_insert(placements, audit).await
    }

    async fn list_placements(
        &self,
        tenant: Uuid,
        filter: &PlacementFilter,
    ) -> Result<Vec<Placement>> {
        self.placements_list(tenant, filter).await
    }

    async fn delete_placements(&self, tenant: Uuid, ids: &[Uuid], audit: NewAudit) -> Result<u64> {
        self.placements_delete(tenant, ids, audit).await
    }

    async fn set_canary_expiry(
        &self,
        tenant: Uuid,
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        audit: NewAudit,
    ) -> Result<Canary> {
        self.canary_set_expiry(tenant, id, expires_at, audit).await
    }
    // ==== webhooks (alerts) — begin block.

    async fn create_webhook_endpoint(
        &self,
        endpoint: NewWebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        self.wh_create(endpoint, audit).await
    }

    async fn get_webhook_endpoint(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<Option<WebhookEndpoint>> {
        self.wh_get(tenant, id).await
    }

    async fn list_webhook_endpoints(&self, tenant: Uuid) -> Result<Vec<WebhookEndpoint>> {
        self.wh_list(tenant).await
    }

    async fn update_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        self.wh_update(endpoint, audit).await
    }

    async fn set_webhook_endpoint_enabled(
        &self,
        tenant: Uuid,
        id: Uuid,
        enabled: bool,
        reason: Option<&str>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        self.wh_set_enabled(tenant, id, enabled, reason, audit)
            .await
    }

    async fn rotate_webhook_secret(
        &self,
        tenant: Uuid,
        id: Uuid,
        sealed: &str,
        previous_expires_at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint> {
        self.wh_rotate(tenant, id, sealed, previous_expires_at, audit)
            .await
    }

    async fn delete_webhook_endpoint(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<()> {
        self.wh_delete(tenant, id, audit).await
    }

    async fn enqueue_webhook_message(
        &self,
        message: NewWebhookMessage,
        audit: NewAudit,
    ) -> Result<WebhookMessage> {
        self.wh_enqueue(message, audit).await
    }

    async fn get_webhook_message(&self, tenant: Uuid, id: Uuid) -> Result<Option<WebhookMessage>> {
        self.wh_get_message(tenant, id).await
    }

    async fn list_webhook_messages(
        &self,
        tenant: Uuid,
        endpoint: Uuid,
        page: Page,
    ) -> Result<Vec<WebhookMessage>> {
        self.wh_list_messages(tenant, endpoint, page).await
    }

    async fn list_webhook_attempts(
        &self,
        tenant: Uuid,
        messages: &[Uuid],
    ) -> Result<Vec<WebhookAttempt>> {
        self.wh_list_attempts(tenant, messages).await
    }

    async fn retry_webhook_message(
        &self,
        tenant: Uuid,
        id: Uuid,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookMessage> {
        self.wh_retry(tenant, id, at, audit).await
    }

    async fn dispatch_webhook_events(&self, limit: u32) -> Result<u32> {
        self.wh_dispatch(limit).await
    }

    async fn claim_webhook_messages(&self, req: &ClaimRequest) -> Result<Vec<ClaimedMessage>> {
        self.wh_claim(req).await
    }

    async fn complete_webhook_attempts(&self, results: &[AttemptResult]) -> Result<Vec<bool>> {
        self.wh_complete(results).await
    }

    async fn get_hit(&self, tenant: Uuid, id: Uuid) -> Result<Option<Hit>> {
        self.wh_get_hit(tenant, id).await
    }

    async fn release_webhook_leases(&self, owner: &str, ids: &[Uuid]) -> Result<u64> {
        self.wh_release(owner, ids).await
    }

    // ==== webhooks (alerts) — end block.
}

/// Test support: a database in a fresh temporary file, removed on drop.
pub mod testing {
    use super::*;

    pub struct TempSqlite {
        pub db: SqliteDatabase,
        path: std::path::PathBuf,
    }

    impl TempSqlite {
        pub async fn new() -> Result<TempSqlite> {
            let path =
                std::env::temp_dir().join(format!("keytrap-test-{}.db", Uuid::new_v4().simple()));
            let db = SqliteDatabase::connect(&format!("sqlite://{}", path.display())).await?;
            Ok(TempSqlite { db, path })
        }

        /// The database file.
        pub fn path(&self) -> &std::path::Path {
            &self.path
        }
    }

    impl std::ops::Deref for TempSqlite {
        type Target = SqliteDatabase;
        fn deref(&self) -> &SqliteDatabase {
            &self.db
        }
    }

    impl Drop for TempSqlite {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm", "-trap-lock"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
