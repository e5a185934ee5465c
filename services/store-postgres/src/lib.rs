//! keytrap storage on PostgreSQL (production). Same contract and conformance suite as
//! the SQLite backend; SQL written for PostgreSQL (UNNEST bulk inserts, JSONB labels).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

mod placements;
mod trap;
mod trap_fused;
mod trap_writer;
mod webhooks;

pub use trap_writer::APPLICATION_NAME as TRAP_WRITER_APPLICATION_NAME;
pub use webhooks::WAKE_CHANNEL;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgDatabase {
    pool: PgPool,
    /// `hit.recorded` subscribers, cached for the trap (see `webhooks.rs`).
    hit_subscribers: std::sync::Arc<HitSubscribers>,
    /// The runtime the pool was made on: background work goes there, also when started
    /// from the trap writer's own runtime (see `trap_writer.rs`).
    runtime: tokio::runtime::Handle,
    /// What the one-statement group commit remembers and counts (`trap_fused.rs`).
    fused: std::sync::Arc<trap_fused::Fused>,
}

impl PgDatabase {
    /// Connects to `url` (`postgres://...`) and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(backend)?;
        Self::connect_with(opts, 16).await
    }

    pub async fn connect_with(opts: PgConnectOptions, max_connections: u32) -> Result<Self> {
        let pool = pool_options(max_connections)
            .connect_with(opts)
            .await
            .map_err(backend)?;
        MIGRATOR.run(&pool).await.map_err(backend)?;
        Ok(Self::on(pool))
    }

    /// A handle on a database that is already migrated (by the process's main
    /// connection), connecting only when first used: no round trip, and no wait for the
    /// migration lock (which sqlx takes per database, across schemas and processes).
    pub fn connect_lazy_migrated(opts: PgConnectOptions, max_connections: u32) -> Self {
        Self::on(pool_options(max_connections).connect_lazy_with(opts))
    }

    fn on(pool: PgPool) -> Self {
        PgDatabase {
            pool,
            hit_subscribers: Default::default(),
            runtime: tokio::runtime::Handle::current(),
            fused: Default::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_database(e, |e| e.downcast_ref::<sqlx::Error>().is_some_and(is_busy))
}

/// SQLSTATEs of a transaction that lost to a concurrent one and changed nothing:
/// serialization failure, deadlock detected, lock not available.
pub fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if matches!(d.code().as_deref(), Some("40001" | "40P01" | "55P03")))
}

fn conflict(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => backend(e),
    }
}

fn tenant_row(r: &PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get("id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        is_root: r.try_get("is_root").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
    })
}

fn digest_col(r: &PgRow) -> Result<[u8; 32]> {
    let v: Vec<u8> = r.try_get("digest").map_err(backend)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt("token digest is not 32 bytes".into()))
}

fn token_row(r: &PgRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        scopes: scopes_from_string(r.try_get("scopes").map_err(backend)?),
        created_at: r.try_get("created_at").map_err(backend)?,
        revoked_at: r.try_get("revoked_at").map_err(backend)?,
        digest: digest_col(r)?,
    })
}

fn store_row(r: &PgRow) -> Result<Store> {
    let kind: &str = r.try_get("kind").map_err(backend)?;
    let labels: Json<Labels> = r.try_get("labels").map_err(backend)?;
    Ok(Store {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        location: r.try_get("location").map_err(backend)?,
        labels: labels.0,
        created_at: r.try_get("created_at").map_err(backend)?,
    })
}

fn canary_row(r: &PgRow, now: DateTime<Utc>) -> Result<Canary> {
    let labels: Json<Labels> = r.try_get("labels").map_err(backend)?;
    Canary::from_row(
        r.try_get("id").map_err(backend)?,
        r.try_get("tenant_id").map_err(backend)?,
        r.try_get("store_id").map_err(backend)?,
        r.try_get("exchange").map_err(backend)?,
        r.try_get("key_version").map_err(backend)?,
        r.try_get("memo").map_err(backend)?,
        labels.0,
        r.try_get("status").map_err(backend)?,
        r.try_get("created_at").map_err(backend)?,
        r.try_get("expires_at").map_err(backend)?,
        r.try_get("disabled_at").map_err(backend)?,
        now,
    )
}

async fn insert_audit<'c, E>(exec: E, audit: NewAudit, at: DateTime<Utc>) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let e = audit.into_entry(at);
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor_token_id, action, target_type, target_id, details, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(e.tenant_id)
    .bind(e.actor_token_id)
    .bind(&e.action)
    .bind(&e.target_type)
    .bind(&e.target_id)
    .bind(Json(&e.details))
    .bind(e.at)
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

const CANARY_COLS: &str = "id, tenant_id, store_id, exchange, key_version, memo, labels, status, created_at, expires_at, disabled_at";

#[async_trait]
impl Database for PgDatabase {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn init_meta(&self, key: &str, value: &str) -> Result<String> {
        // Concurrent starters race here; the first insert wins and all read it back.
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    async fn create_tenant(&self, name: &str, is_root: bool, audit: NewAudit) -> Result<Tenant> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO tenants (id, name, is_root, created_at) VALUES ($1, $2, $3, now()) RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(is_root)
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict("tenant"))?;
        let t = tenant_row(&row)?;
        insert_audit(&mut *tx, audit, t.created_at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(t)
    }

    async fn root_tenant(&self) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE is_root")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    async fn get_tenant(&self, id: Uuid) -> Result<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(tenant_row)
            .transpose()
    }

    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<ApiToken> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, scopes, digest, created_at)
             VALUES ($1, $2, $3, $4, $5, now()) RETURNING *",
        )
        .bind(token.id)
        .bind(token.tenant_id)
        .bind(&token.name)
        .bind(scopes_to_string(&token.scopes))
        .bind(&token.digest[..])
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict("token"))?;
        let t = token_row(&row)?;
        insert_audit(&mut *tx, audit, t.created_at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(t)
    }

    async fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL")
            .bind(&digest[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(token_row)
            .transpose()
    }

    async fn list_tokens(&self, tenant: Uuid) -> Result<Vec<ApiToken>> {
        sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(token_row)
            .collect()
    }

    async fn revoke_token(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<ApiToken> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
             WHERE tenant_id = $1 AND id = $2 RETURNING *",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, Utc::now()).await?;
        tx.commit().await.map_err(backend)?;
        token_row(&row)
    }

    async fn create_store(&self, store: NewStore, audit: NewAudit) -> Result<Store> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(
            "INSERT INTO stores (id, tenant_id, name, kind, location, labels, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING *",
        )
        .bind(store.id)
        .bind(store.tenant_id)
        .bind(&store.name)
        .bind(store.kind.as_str())
        .bind(&store.location)
        .bind(Json(&store.labels))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict("store name"))?;
        let s = store_row(&row)?;
        insert_audit(&mut *tx, audit, s.created_at).await?;
        tx.commit().await.map_err(backend)?;
        Ok(s)
    }

    async fn get_store(&self, tenant: Uuid, id: Uuid) -> Result<Option<Store>> {
        sqlx::query("SELECT * FROM stores WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(store_row)
            .transpose()
    }

    async fn get_store_by_name(&self, tenant: Uuid, name: &str) -> Result<Option<Store>> {
        sqlx::query("SELECT * FROM stores WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(store_row)
            .transpose()
    }

    async fn list_stores(&self, tenant: Uuid, page: Page) -> Result<Vec<Store>> {
        sqlx::query(
            "SELECT * FROM stores WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(store_row)
        .collect()
    }

    async fn insert_canaries(&self, canaries: &[NewCanary], audit: NewAudit) -> Result<()> {
        let n = canaries.len();
        let mut ids = Vec::with_capacity(n);
        let mut tenants = Vec::with_capacity(n);
        let mut stores = Vec::with_capacity(n);
        let mut exchanges = Vec::with_capacity(n);
        let mut digests = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut memos = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        let mut expires = Vec::with_capacity(n);
        for c in canaries {
            ids.push(c.id);
            tenants.push(c.tenant_id);
            stores.push(c.store_id);
            exchanges.push(c.exchange.as_str());
            digests.push(c.lookup_digest.to_vec());
            versions.push(c.key_version);
            memos.push(c.memo.clone());
            labels.push(serde_json::to_value(&c.labels).unwrap_or_default());
            created.push(c.created_at);
            expires.push(c.expires_at);
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // One statement for the whole batch: arrays in, rows out.
        sqlx::query(
            "INSERT INTO canaries (id, tenant_id, store_id, exchange, lookup_digest, key_version, memo, labels, created_at, expires_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bytea[], $6::int4[], $7::text[], $8::jsonb[], $9::timestamptz[], $10::timestamptz[])",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&stores)
        .bind(&exchanges)
        .bind(&digests)
        .bind(&versions)
        .bind(&memos)
        .bind(&labels)
        .bind(&created)
        .bind(&expires)
        .execute(&mut *tx)
        .await
        .map_err(conflict("canary key"))?;
        insert_audit(&mut *tx, audit, Utc::now()).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn get_canary(&self, tenant: Uuid, id: Uuid) -> Result<Option<Canary>> {
        let now = Utc::now();
        sqlx::query(&format!(
            "SELECT {CANARY_COLS} FROM canaries WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|r| canary_row(&r, now))
        .transpose()
    }

    async fn list_canaries(&self, tenant: Uuid, f: &CanaryFilter) -> Result<Vec<Canary>> {
        let now = Utc::now();
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
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
                    .push_bind(now)
                    .push(")");
            }
            Some(CanaryStatus::Expired) => {
                q.push(" AND status = 'active' AND expires_at <= ")
                    .push_bind(now);
            }
        }
        if let Some((k, v)) = &f.label {
            q.push(" AND labels ->> ")
                .push_bind(k)
                .push(" = ")
                .push_bind(v);
        }
        if let Some(a) = f.page.after {
            q.push(" AND id > ").push_bind(a);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(f.page.limit));
        q.build()
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query(&format!(
            "UPDATE canaries SET status = 'disabled', disabled_at = COALESCE(disabled_at, $1)
             WHERE tenant_id = $2 AND id = $3 RETURNING {CANARY_COLS}"
        ))
        .bind(at)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        canary_row(&row, Utc::now())
    }

    async fn canary_by_digest(&self, digest: &[u8; 32]) -> Result<Option<Canary>> {
        let now = Utc::now();
        sqlx::query(&format!(
            "SELECT {CANARY_COLS} FROM canaries WHERE lookup_digest = $1"
        ))
        .bind(&digest[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|r| canary_row(&r, now))
        .transpose()
    }

    async fn append_audit(&self, audit: NewAudit) -> Result<()> {
        insert_audit(&self.pool, audit, Utc::now()).await
    }

    async fn list_audit(&self, tenant: Uuid, page: Page) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let details: Json<serde_json::Value> = r.try_get("details").map_err(backend)?;
                Ok(AuditEntry {
                    id: r.try_get("id").map_err(backend)?,
                    tenant_id: r.try_get("tenant_id").map_err(backend)?,
                    actor_token_id: r.try_get("actor_token_id").map_err(backend)?,
                    action: r.try_get("action").map_err(backend)?,
                    target_type: r.try_get("target_type").map_err(backend)?,
                    target_id: r.try_get("target_id").map_err(backend)?,
                    details: details.0,
                    at: r.try_get("at").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn record_trap_events(&self, batch: &[TrapEvent]) -> Result<()> {
        self.trap_record(batch).await
    }

    fn trap_writer(&self) -> Option<Box<dyn TrapWriter>> {
        trap_writer::PgTrapWriter::new(self.clone()).map(|w| Box::new(w) as Box<dyn TrapWriter>)
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

/// Test support: each test gets its own schema in the server named by
/// `KEYTRAP_TEST_POSTGRES_URL`, so tests run in parallel on one database.
pub mod testing {
    use super::*;

    pub const URL_VAR: &str = "KEYTRAP_TEST_POSTGRES_URL";

    /// A migrated database in a fresh schema, or `None` (with a message) when
    /// `KEYTRAP_TEST_POSTGRES_URL` is unset. Under `CI` an unset URL is a failure, not a
    /// skip: PostgreSQL coverage must never silently vanish.
    pub async fn fresh() -> Option<PgDatabase> {
        let Ok(url) = std::env::var(URL_VAR) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{URL_VAR} is not set under CI: the PostgreSQL suite must run"
            );
            eprintln!("SKIPPED: PostgreSQL test ({URL_VAR} is not set)");
            return None;
        };
        Some(fresh_at(&url).await)
    }

    /// A migrated database in a fresh schema of the server at `url`.
    #[allow(clippy::expect_used)]
    pub async fn fresh_at(url: &str) -> PgDatabase {
        let schema_url = fresh_schema_url(url).await;
        PgDatabase::connect_with(
            PgConnectOptions::from_str(&schema_url).expect("schema URL"),
            4,
        )
        .await
        .expect("connect to test schema")
    }

    /// Creates schema `kt_test_<unix seconds>_<random>` and returns a URL whose
    /// search_path is that schema (for a spawned `keytrap serve`). Schemas left by crashed
    /// runs over an hour old are dropped on the way.
    #[allow(clippy::expect_used)]
    pub async fn fresh_schema_url(url: &str) -> String {
        let base = PgConnectOptions::from_str(url).expect("KEYTRAP_TEST_POSTGRES_URL");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
        let now = Utc::now().timestamp();
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'kt\\_test\\_%'",
        )
        .fetch_all(&admin)
        .await
        .expect("list schemas");
        for s in stale {
            let born = s
                .split('_')
                .nth(2)
                .and_then(|x| x.parse::<i64>().ok())
                .unwrap_or(now);
            if now - born > 3600 {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                    .execute(&admin)
                    .await;
            }
        }
        let schema = format!("kt_test_{now}_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options[search_path]={schema}")
    }
}
