//! Placements (issue 5): where each canary was planted.

use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::CANARY_COLS;
use crate::{backend, canary_row, conflict, from_ms, insert_audit, ms, now, SqliteDatabase};

fn placement_row(r: &SqliteRow) -> Result<Placement> {
    let kind: &str = r.try_get("kind").map_err(backend)?;
    let details: &str = r.try_get("details").map_err(backend)?;
    Ok(Placement {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        canary_id: r.try_get("canary_id").map_err(backend)?,
        store_id: r.try_get("store_id").map_err(backend)?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        target: r.try_get("target").map_err(backend)?,
        location: r.try_get("location").map_err(backend)?,
        row_key: r.try_get("row_key").map_err(backend)?,
        snapshot: r.try_get("snapshot").map_err(backend)?,
        details: serde_json::from_str(details)
            .map_err(|e| StoreError::Corrupt(format!("placement details: {e}")))?,
        created_at: from_ms(r.try_get("created_at").map_err(backend)?)?,
    })
}

impl SqliteDatabase {
    pub(crate) async fn placements_insert(
        &self,
        placements: &[NewPlacement],
        audit: NewAudit,
    ) -> Result<Vec<Placement>> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let mut out = Vec::with_capacity(placements.len());
        for p in placements {
            // The store comes from the canary, and the tenant check is the WHERE.
            let row = sqlx::query(
                "INSERT INTO placements (id, tenant_id, canary_id, store_id, kind, target, location, row_key, snapshot, details, created_at)
                 SELECT ?, tenant_id, id, store_id, ?, ?, ?, ?, ?, ?, ? FROM canaries
                 WHERE id = ? AND tenant_id = ? RETURNING *",
            )
            .bind(p.id)
            .bind(p.kind.as_str())
            .bind(&p.target)
            .bind(&p.location)
            .bind(&p.row_key)
            .bind(&p.snapshot)
            .bind(p.details.to_string())
            .bind(ms(now))
            .bind(p.canary_id)
            .bind(p.tenant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(conflict("placement"))?
            .ok_or(StoreError::NotFound)?;
            out.push(placement_row(&row)?);
        }
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    pub(crate) async fn placements_list(
        &self,
        tenant: Uuid,
        f: &PlacementFilter,
    ) -> Result<Vec<Placement>> {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT * FROM placements WHERE tenant_id = ");
        q.push_bind(tenant);
        if let Some(s) = f.store_id {
            q.push(" AND store_id = ").push_bind(s);
        }
        if let Some(c) = f.canary_id {
            q.push(" AND canary_id = ").push_bind(c);
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
            .map(placement_row)
            .collect()
    }

    pub(crate) async fn placements_delete(
        &self,
        tenant: Uuid,
        ids: &[Uuid],
        audit: NewAudit,
    ) -> Result<u64> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query("DELETE FROM placements WHERE tenant_id = ? AND id = ?")
                .bind(tenant)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    pub(crate) async fn canary_set_expiry(
        &self,
        tenant: Uuid,
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        audit: NewAudit,
    ) -> Result<Canary> {
        let now = now();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let row = sqlx::query(&format!(
            "UPDATE canaries SET expires_at = ? WHERE tenant_id = ? AND id = ? RETURNING {CANARY_COLS}"
        ))
        .bind(expires_at.map(ms))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        insert_audit(&mut *tx, audit, now).await?;
        tx.commit().await.map_err(backend)?;
        canary_row(&row, now)
    }
}
