//! The trap's tables on SQLite. The group commit runs on the single writer connection,
//! so incident reads and writes inside it never race.

use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::{backend, from_ms, ms, opt_from_ms, SqliteDatabase};

pub(crate) fn hit_row(r: &SqliteRow) -> Result<Hit> {
    let exchange: &str = r.try_get("exchange").map_err(backend)?;
    let params: &str = r.try_get("action_params").map_err(backend)?;
    Ok(Hit {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        canary_id: r.try_get("canary_id").map_err(backend)?,
        store_id: r.try_get("store_id").map_err(backend)?,
        incident_id: r.try_get("incident_id").map_err(backend)?,
        exchange: exchange
            .parse()
            .map_err(|e: keytrap_core::UnknownExchange| StoreError::Corrupt(e.to_string()))?,
        method: r.try_get("method").map_err(backend)?,
        path: r.try_get("path").map_err(backend)?,
        query: r.try_get("query").map_err(backend)?,
        body_excerpt: r.try_get("body_excerpt").map_err(backend)?,
        source_ip: r.try_get("source_ip").map_err(backend)?,
        forwarded_for: r.try_get("forwarded_for").map_err(backend)?,
        user_agent: r.try_get("user_agent").map_err(backend)?,
        client_fingerprint: r.try_get("client_fingerprint").map_err(backend)?,
        signature_state: parse_text(r.try_get("signature_state").map_err(backend)?)?,
        action_class: r.try_get("action_class").map_err(backend)?,
        action_params: serde_json::from_str(params)
            .map_err(|e| StoreError::Corrupt(format!("action_params: {e}")))?,
        severity: parse_text(r.try_get("severity").map_err(backend)?)?,
        received_at: from_ms(r.try_get("received_at").map_err(backend)?)?,
    })
}

fn incident_row(r: &SqliteRow) -> Result<Incident> {
    Ok(Incident {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        kind: parse_text(r.try_get("kind").map_err(backend)?)?,
        canary_id: r.try_get("canary_id").map_err(backend)?,
        store_id: r.try_get("store_id").map_err(backend)?,
        status: parse_text(r.try_get("status").map_err(backend)?)?,
        severity: parse_text(r.try_get("severity").map_err(backend)?)?,
        hit_count: r.try_get("hit_count").map_err(backend)?,
        canary_count: r.try_get("canary_count").map_err(backend)?,
        first_seen: from_ms(r.try_get("first_seen").map_err(backend)?)?,
        last_seen: from_ms(r.try_get("last_seen").map_err(backend)?)?,
        last_hit_id: r.try_get("last_hit_id").map_err(backend)?,
        acknowledged_at: opt_from_ms(r.try_get("acknowledged_at").map_err(backend)?)?,
        resolved_at: opt_from_ms(r.try_get("resolved_at").map_err(backend)?)?,
    })
}

fn order_row(r: &SqliteRow) -> Result<TrapOrder> {
    Ok(TrapOrder {
        canary_id: r.try_get("canary_id").map_err(backend)?,
        order_id: r.try_get("order_id").map_err(backend)?,
        client_order_id: r.try_get("client_order_id").map_err(backend)?,
        symbol: r.try_get("symbol").map_err(backend)?,
        side: r.try_get("side").map_err(backend)?,
        order_type: r.try_get("order_type").map_err(backend)?,
        price: r.try_get("price").map_err(backend)?,
        amount: r.try_get("amount").map_err(backend)?,
        status: r.try_get("status").map_err(backend)?,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
    })
}

impl SqliteDatabase {
    pub(crate) async fn trap_list_hits(&self, tenant: Uuid, f: &HitFilter) -> Result<Vec<Hit>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("");
        // Everything but the canary, on `h` (a row of hits).
        let filters = |q: &mut QueryBuilder<Sqlite>| {
            q.push(" AND h.tenant_id = ").push_bind(tenant);
            if let Some(s) = f.store_id {
                q.push(" AND h.store_id = ").push_bind(s);
            }
            if let Some(t) = f.since {
                q.push(" AND h.received_at >= ").push_bind(ms(t));
            }
            if let Some(a) = f.page.after {
                q.push(" AND h.id > ").push_bind(a);
            }
        };
        let limit = i64::from(f.page.limit);
        match f.canary_id {
            // A canary's hits are in hits_by_canary, or still in hits_unindexed
            // (migration 0006): both, in one statement, so one snapshot.
            Some(c) => {
                q.push(
                    "SELECT * FROM (SELECT h.* FROM hits_by_canary x CROSS JOIN hits h ON h.id = x.hit_id \
                     WHERE x.canary_id = ",
                )
                .push_bind(c);
                if let Some(a) = f.page.after {
                    q.push(" AND x.hit_id > ").push_bind(a);
                }
                filters(&mut q);
                q.push(" ORDER BY x.hit_id LIMIT ").push_bind(limit);
                q.push(
                    ") UNION ALL SELECT * FROM (SELECT h.* FROM hits_unindexed u CROSS \
                     JOIN hits h ON h.id = u.hit_id WHERE u.canary_id = ",
                )
                .push_bind(c)
                .push(" AND u.seq > (SELECT through FROM hits_index_marks WHERE slice = ")
                .push_bind(i64::from(crate::trap_writer::slice_of(c)))
                .push(")");
                filters(&mut q);
                q.push(" ORDER BY h.id LIMIT ").push_bind(limit);
                q.push(") ORDER BY id LIMIT ").push_bind(limit);
            }
            None => {
                q.push("SELECT * FROM hits h WHERE 1");
                filters(&mut q);
                q.push(" ORDER BY h.id LIMIT ").push_bind(limit);
            }
        }
        q.build()
            .fetch_all(self.reader())
            .await
            .map_err(backend)?
            .iter()
            .map(hit_row)
            .collect()
    }

    pub(crate) async fn trap_get_incident(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<Option<Incident>> {
        sqlx::query("SELECT * FROM incidents WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.reader())
            .await
            .map_err(backend)?
            .as_ref()
            .map(incident_row)
            .transpose()
    }

    pub(crate) async fn trap_list_incidents(
        &self,
        tenant: Uuid,
        f: &IncidentFilter,
    ) -> Result<Vec<Incident>> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT * FROM incidents WHERE tenant_id = ");
        q.push_bind(tenant);
        if let Some(s) = f.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(k) = f.kind {
            q.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(s) = f.store_id {
            q.push(" AND store_id = ").push_bind(s);
        }
        if let Some(a) = f.page.after {
            q.push(" AND id > ").push_bind(a);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(f.page.limit));
        q.build()
            .fetch_all(self.reader())
            .await
            .map_err(backend)?
            .iter()
            .map(incident_row)
            .collect()
    }

    pub(crate) async fn trap_set_incident_status(
        &self,
        tenant: Uuid,
        id: Uuid,
        status: IncidentStatus,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<Incident> {
        let mut tx = self.writer().begin().await.map_err(backend)?;
        // The trap's writer forgets which incidents it knew open (trap_writer.rs,
        // `Deferred`) when it sees this change, in this process or another.
        sqlx::query("UPDATE incident_writes SET n = n + 1")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        // A resolved incident stays resolved; acknowledging keeps the first time.
        let row = sqlx::query(
            "UPDATE incidents SET
               status = CASE WHEN status = 'resolved' THEN 'resolved' ELSE ? END,
               acknowledged_at = CASE WHEN ? IN ('acknowledged', 'resolved') THEN COALESCE(acknowledged_at, ?) ELSE acknowledged_at END,
               resolved_at = CASE WHEN ? = 'resolved' THEN COALESCE(resolved_at, ?) ELSE resolved_at END
             WHERE tenant_id = ? AND id = ? RETURNING *",
        )
        .bind(status.as_str())
        .bind(status.as_str())
        .bind(ms(at))
        .bind(status.as_str())
        .bind(ms(at))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        crate::insert_audit(&mut *tx, audit, at).await?;
        tx.commit().await.map_err(backend)?;
        incident_row(&row)
    }

    pub(crate) async fn trap_list_events(&self, tenant: Uuid, page: Page) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE tenant_id = ? AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
        )
        .bind(tenant)
        .bind(page.after)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.reader())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let payload: &str = r.try_get("payload").map_err(backend)?;
                Ok(Event {
                    id: r.try_get("id").map_err(backend)?,
                    tenant_id: r.try_get("tenant_id").map_err(backend)?,
                    event_type: r.try_get("event_type").map_err(backend)?,
                    incident_id: r.try_get("incident_id").map_err(backend)?,
                    hit_id: r.try_get("hit_id").map_err(backend)?,
                    payload: serde_json::from_str(payload)
                        .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
                    created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn trap_unknown_sources(&self, limit: u32) -> Result<Vec<UnknownSource>> {
        let rows = sqlx::query("SELECT * FROM unknown_sources ORDER BY requests DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let exchange: &str = r.try_get("exchange").map_err(backend)?;
                Ok(UnknownSource {
                    exchange: exchange
                        .parse()
                        .map_err(|e: keytrap_core::UnknownExchange| {
                            StoreError::Corrupt(e.to_string())
                        })?,
                    source: r.try_get("source").map_err(backend)?,
                    requests: r.try_get("requests").map_err(backend)?,
                    distinct_keys: r.try_get("distinct_keys").map_err(backend)?,
                    first_seen: from_ms(r.try_get("first_seen").map_err(backend)?)?,
                    last_seen: from_ms(r.try_get("last_seen").map_err(backend)?)?,
                })
            })
            .collect()
    }

    pub(crate) async fn trap_put_order(&self, o: &TrapOrder) -> Result<()> {
        sqlx::query(
            "INSERT INTO trap_orders (canary_id, order_id, client_order_id, symbol, side, order_type, price, amount, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(o.canary_id)
        .bind(&o.order_id)
        .bind(&o.client_order_id)
        .bind(&o.symbol)
        .bind(&o.side)
        .bind(&o.order_type)
        .bind(&o.price)
        .bind(&o.amount)
        .bind(&o.status)
        .bind(ms(o.created_at))
        .execute(self.writer())
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict("order id".into())
            }
            _ => backend(e),
        })?;
        Ok(())
    }

    pub(crate) async fn trap_get_order(&self, canary: Uuid, id: &str) -> Result<Option<TrapOrder>> {
        sqlx::query(
            "SELECT * FROM trap_orders WHERE canary_id = ? AND (order_id = ? OR client_order_id = ?) LIMIT 1",
        )
        .bind(canary)
        .bind(id)
        .bind(id)
        .fetch_optional(self.reader())
        .await
        .map_err(backend)?
        .as_ref()
        .map(order_row)
        .transpose()
    }

    pub(crate) async fn trap_list_orders(
        &self,
        canary: Uuid,
        open_only: bool,
    ) -> Result<Vec<TrapOrder>> {
        sqlx::query(
            "SELECT * FROM trap_orders WHERE canary_id = ? AND (? = 0 OR status = 'open') ORDER BY created_at, order_id",
        )
        .bind(canary)
        .bind(i64::from(open_only))
        .fetch_all(self.reader())
        .await
        .map_err(backend)?
        .iter()
        .map(order_row)
        .collect()
    }

    pub(crate) async fn trap_cancel_order(
        &self,
        canary: Uuid,
        id: &str,
    ) -> Result<Option<TrapOrder>> {
        sqlx::query(
            "UPDATE trap_orders SET status = CASE WHEN status = 'open' THEN 'cancelled' ELSE status END
             WHERE canary_id = ? AND (order_id = ? OR client_order_id = ?) RETURNING *",
        )
        .bind(canary)
        .bind(id)
        .bind(id)
        .fetch_optional(self.writer())
        .await
        .map_err(backend)?
        .as_ref()
        .map(order_row)
        .transpose()
    }

    pub(crate) async fn trap_advance_nonce(&self, canary: Uuid, nonce: u64) -> Result<bool> {
        // SQLite integers are 64-bit signed; no client sends a nonce above i64::MAX
        // (ms or µs since 1970), and such a nonce is refused as stale.
        let Ok(n) = i64::try_from(nonce) else {
            return Ok(false);
        };
        let done = sqlx::query(
            "INSERT INTO trap_nonces (canary_id, last_nonce) VALUES (?, ?)
             ON CONFLICT (canary_id) DO UPDATE SET last_nonce = excluded.last_nonce
             WHERE trap_nonces.last_nonce < excluded.last_nonce",
        )
        .bind(canary)
        .bind(n)
        .execute(self.writer())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }
}
