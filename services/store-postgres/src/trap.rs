//! The trap's tables on PostgreSQL. Several trap replicas may commit at once: incident
//! rows are locked (`FOR UPDATE`), and a lost race to open one is caught with
//! `ON CONFLICT DO NOTHING` on the partial unique index and retried as an update.

use chrono::{DateTime, Utc};
use keytrap_store::*;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::{backend, PgDatabase};

fn corrupt(e: keytrap_core::UnknownExchange) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn hit_row(r: &PgRow) -> Result<Hit> {
    let exchange: &str = r.try_get("exchange").map_err(backend)?;
    let params: Json<serde_json::Value> = r.try_get("action_params").map_err(backend)?;
    Ok(Hit {
        id: r.try_get("id").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        canary_id: r.try_get("canary_id").map_err(backend)?,
        store_id: r.try_get("store_id").map_err(backend)?,
        incident_id: r.try_get("incident_id").map_err(backend)?,
        exchange: exchange.parse().map_err(corrupt)?,
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
        action_params: params.0,
        severity: parse_text(r.try_get("severity").map_err(backend)?)?,
        received_at: r.try_get("received_at").map_err(backend)?,
    })
}

fn incident_row(r: &PgRow) -> Result<Incident> {
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
        first_seen: r.try_get("first_seen").map_err(backend)?,
        last_seen: r.try_get("last_seen").map_err(backend)?,
        last_hit_id: r.try_get("last_hit_id").map_err(backend)?,
        acknowledged_at: r.try_get("acknowledged_at").map_err(backend)?,
        resolved_at: r.try_get("resolved_at").map_err(backend)?,
    })
}

fn order_row(r: &PgRow) -> Result<TrapOrder> {
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
        created_at: r.try_get("created_at").map_err(backend)?,
    })
}

async fn locked_open(
    c: &mut PgConnection,
    kind: IncidentKind,
    hit: &Hit,
) -> Result<Option<OpenIncident>> {
    let q = match kind {
        IncidentKind::Canary => sqlx::query(
            "SELECT id, severity FROM incidents WHERE kind = 'canary' AND canary_id = $1 AND status <> 'resolved' FOR UPDATE",
        )
        .bind(hit.canary_id),
        IncidentKind::Store => sqlx::query(
            "SELECT id, severity FROM incidents WHERE kind = 'store' AND store_id = $1 AND status <> 'resolved' FOR UPDATE",
        )
        .bind(hit.store_id),
    };
    q.fetch_optional(&mut *c)
        .await
        .map_err(backend)?
        .map(|r| -> Result<OpenIncident> {
            Ok(OpenIncident {
                id: r.try_get("id").map_err(backend)?,
                severity: parse_text(r.try_get("severity").map_err(backend)?)?,
            })
        })
        .transpose()
}

/// Applies one hit to its incident of `kind`; returns the incident id and transition.
async fn apply_to_incident(
    c: &mut PgConnection,
    kind: IncidentKind,
    hit: &Hit,
    new_canary: bool,
) -> Result<(Uuid, Transition)> {
    // Fast path, one statement: an open incident at or above the hit's severity is only
    // counted (the common case while an attack goes on). The UPDATE locks the row like
    // the slow path's FOR UPDATE, so concurrent replicas stay consistent.
    let counted: Option<Uuid> = match kind {
        IncidentKind::Canary => sqlx::query_scalar(
            "UPDATE incidents SET hit_count = hit_count + 1, last_seen = GREATEST(last_seen, $1), last_hit_id = $2
             WHERE kind = 'canary' AND canary_id = $3 AND status <> 'resolved'
               AND (CASE severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= $4
             RETURNING id",
        )
        .bind(hit.received_at)
        .bind(hit.id)
        .bind(hit.canary_id),
        IncidentKind::Store => sqlx::query_scalar(
            "UPDATE incidents SET hit_count = hit_count + 1, last_seen = GREATEST(last_seen, $1), last_hit_id = $2,
               canary_count = canary_count + $3
             WHERE kind = 'store' AND store_id = $4 AND status <> 'resolved'
               AND (CASE severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= $5
             RETURNING id",
        )
        .bind(hit.received_at)
        .bind(hit.id)
        .bind(i32::from(new_canary))
        .bind(hit.store_id),
    }
    .bind(severity_rank(hit.severity) as i32)
    .fetch_optional(&mut *c)
    .await
    .map_err(backend)?;
    if let Some(id) = counted {
        return Ok((id, Transition::Counted));
    }
    let mut current = locked_open(c, kind, hit).await?;
    if current.is_none() {
        let target = match kind {
            IncidentKind::Canary => "(canary_id) WHERE kind = 'canary' AND status <> 'resolved'",
            IncidentKind::Store => "(store_id) WHERE kind = 'store' AND status <> 'resolved'",
        };
        let id = Uuid::now_v7();
        let inserted = sqlx::query(&format!(
            "INSERT INTO incidents (id, tenant_id, kind, canary_id, store_id, status, severity, hit_count, canary_count, first_seen, last_seen, last_hit_id)
             VALUES ($1, $2, $3, $4, $5, 'open', $6, 1, 1, $7, $7, $8)
             ON CONFLICT {target} DO NOTHING"
        ))
        .bind(id)
        .bind(hit.tenant_id)
        .bind(kind.as_str())
        .bind((kind == IncidentKind::Canary).then_some(hit.canary_id))
        .bind(hit.store_id)
        .bind(hit.severity.as_str())
        .bind(hit.received_at)
        .bind(hit.id)
        .execute(&mut *c)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 1 {
            insert_event(c, kind, id, hit, Transition::Opened).await?;
            return Ok((id, Transition::Opened));
        }
        // Another replica opened it between our SELECT and INSERT: update that one.
        current = locked_open(c, kind, hit).await?;
    }
    let cur = current.ok_or_else(|| StoreError::Corrupt("open incident vanished".into()))?;
    let t = match transition(Some(cur), hit.severity) {
        Transition::Opened => Transition::Counted,
        other => other,
    };
    let severity = match t {
        Transition::Escalated(s) => s,
        _ => cur.severity,
    };
    sqlx::query(
        "UPDATE incidents SET severity = $1, hit_count = hit_count + 1,
         canary_count = canary_count + $2, last_seen = GREATEST(last_seen, $3), last_hit_id = $4
         WHERE id = $5",
    )
    .bind(severity.as_str())
    .bind(i64::from(new_canary && kind == IncidentKind::Store))
    .bind(hit.received_at)
    .bind(hit.id)
    .bind(cur.id)
    .execute(&mut *c)
    .await
    .map_err(backend)?;
    insert_event(c, kind, cur.id, hit, t).await?;
    Ok((cur.id, t))
}

async fn insert_event(
    c: &mut PgConnection,
    kind: IncidentKind,
    incident: Uuid,
    hit: &Hit,
    t: Transition,
) -> Result<()> {
    if let Some(event) = event_type(kind, t) {
        sqlx::query(
            "INSERT INTO events (id, tenant_id, event_type, incident_id, hit_id, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(hit.tenant_id)
        .bind(event)
        .bind(incident)
        .bind(hit.id)
        .bind(Json(event_payload(kind, incident, hit, t)))
        .bind(hit.received_at)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    }
    Ok(())
}

/// The batched fast path: one statement counts every group whose open incident is at or
/// above the group's severity; returns (group key, incident id) for those. Groups not
/// returned go through [`apply_to_incident`] hit by hit (open, escalate).
async fn count_open_incidents(
    c: &mut PgConnection,
    kind: IncidentKind,
    groups: &[IncidentGroup],
) -> Result<std::collections::HashMap<Uuid, Uuid>> {
    let mut out = std::collections::HashMap::new();
    let key_col = match kind {
        IncidentKind::Canary => "canary_id",
        IncidentKind::Store => "store_id",
    };
    for chunk in groups.chunks(512) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "UPDATE incidents SET hit_count = incidents.hit_count + v.column2,
               last_seen = GREATEST(incidents.last_seen, v.column3), last_hit_id = v.column4,
               canary_count = incidents.canary_count + v.column6
             FROM (",
        );
        q.push_values(chunk, |mut b, g| {
            b.push_bind(g.key)
                .push_bind(g.hits)
                .push_bind(g.last_seen)
                .push_bind(g.last_hit)
                .push_bind(g.max_rank)
                .push_bind(g.new_canaries);
        });
        q.push(format!(
            ") AS v WHERE incidents.kind = '{}' AND incidents.{key_col} = v.column1
               AND incidents.status <> 'resolved'
               AND (CASE incidents.severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= v.column5
             RETURNING incidents.{key_col}, incidents.id",
            kind.as_str()
        ));
        for row in q.build().fetch_all(&mut *c).await.map_err(backend)? {
            out.insert(
                row.try_get::<Uuid, _>(0).map_err(backend)?,
                row.try_get::<Uuid, _>(1).map_err(backend)?,
            );
        }
    }
    Ok(out)
}

/// Incident changes for every hit of a batch; returns each hit's canary incident.
async fn apply_hits(c: &mut PgConnection, hits: &[&Hit]) -> Result<Vec<Uuid>> {
    let canary_groups = incident_groups(hits, |h| h.canary_id, None);
    let fast = count_open_incidents(c, IncidentKind::Canary, &canary_groups).await?;
    let mut incidents = Vec::with_capacity(hits.len());
    let mut opened = Vec::with_capacity(hits.len());
    for h in hits {
        match fast.get(&h.canary_id) {
            Some(id) => {
                incidents.push(*id);
                opened.push(false);
            }
            None => {
                let (id, t) = apply_to_incident(c, IncidentKind::Canary, h, false).await?;
                incidents.push(id);
                opened.push(t == Transition::Opened);
            }
        }
    }
    let store_groups = incident_groups(hits, |h| h.store_id, Some(&opened));
    let fast = count_open_incidents(c, IncidentKind::Store, &store_groups).await?;
    for (h, new) in hits.iter().zip(&opened) {
        if !fast.contains_key(&h.store_id) {
            apply_to_incident(c, IncidentKind::Store, h, *new).await?;
        }
    }
    Ok(incidents)
}

/// Fails unless every hit's canary is stored, in the hit's store: what the foreign keys
/// of `hits` checked row by row before migration 0006, once for the whole batch (the
/// one-statement path joins `canaries` instead). Canaries and stores are never deleted
/// (the migration's triggers refuse it), so what is checked here stays true.
async fn check_hit_parents(c: &mut PgConnection, hits: &[&Hit]) -> Result<()> {
    let mut pairs: Vec<(Uuid, Uuid)> = hits.iter().map(|h| (h.canary_id, h.store_id)).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let (canaries, stores): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM canaries k
         JOIN unnest($1::uuid[], $2::uuid[]) AS v(id, store_id) ON k.id = v.id AND k.store_id = v.store_id",
    )
    .bind(&canaries)
    .bind(&stores)
    .fetch_one(&mut *c)
    .await
    .map_err(backend)?;
    if found != pairs.len() as i64 {
        return Err(StoreError::Backend(
            "a hit names a canary that is not stored, or not in the hit's store".into(),
        ));
    }
    Ok(())
}

/// The batch's hit rows in multi-row inserts.
async fn insert_hits(c: &mut PgConnection, rows: &[(&Hit, Uuid)]) -> Result<()> {
    // 19 parameters a row; PostgreSQL allows 65,535 per statement.
    for chunk in rows.chunks(512) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO hits (id, tenant_id, canary_id, store_id, incident_id, exchange, method, path, query, body_excerpt,
                source_ip, forwarded_for, user_agent, client_fingerprint, signature_state, action_class, action_params, severity, received_at) ",
        );
        q.push_values(chunk, |mut b, (hit, incident)| {
            b.push_bind(hit.id)
                .push_bind(hit.tenant_id)
                .push_bind(hit.canary_id)
                .push_bind(hit.store_id)
                .push_bind(*incident)
                .push_bind(hit.exchange.as_str())
                .push_bind(&hit.method)
                .push_bind(&hit.path)
                .push_bind(&hit.query)
                .push_bind(&hit.body_excerpt)
                .push_bind(&hit.source_ip)
                .push_bind(&hit.forwarded_for)
                .push_bind(&hit.user_agent)
                .push_bind(&hit.client_fingerprint)
                .push_bind(hit.signature_state.as_str())
                .push_bind(&hit.action_class)
                .push_bind(Json(&hit.action_params))
                .push_bind(hit.severity.as_str())
                .push_bind(hit.received_at);
        });
        q.build().execute(&mut *c).await.map_err(backend)?;
    }
    Ok(())
}

/// One source's sightings of a batch: one counter upsert, then first sightings while
/// the source has room. Returns whether the source has no room left.
async fn apply_unknown_group(c: &mut PgConnection, g: &UnknownGroup<'_>) -> Result<bool> {
    let distinct: i64 = sqlx::query_scalar(
        "INSERT INTO unknown_sources (exchange, source, requests, distinct_keys, first_seen, last_seen)
         VALUES ($1, $2, $3, 0, $4, $5)
         ON CONFLICT (exchange, source) DO UPDATE SET requests = unknown_sources.requests + excluded.requests,
             last_seen = GREATEST(unknown_sources.last_seen, excluded.last_seen)
         RETURNING distinct_keys",
    )
    .bind(g.exchange.as_str())
    .bind(g.source)
    .bind(g.requests)
    .bind(g.first_at)
    .bind(g.last_at)
    .fetch_one(&mut *c)
    .await
    .map_err(backend)?;
    let mut room = UNKNOWN_KEYS_PER_SOURCE - distinct;
    let mut added = 0i64;
    for u in &g.keys {
        if room <= 0 {
            break;
        }
        let inserted = sqlx::query(
            "INSERT INTO unknown_keys (exchange, source, key_hash, key_hint, malformed, first_path, first_user_agent, first_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(u.exchange.as_str())
        .bind(&u.source)
        .bind(&u.key_hash[..])
        .bind(&u.key_hint)
        .bind(u.malformed)
        .bind(&u.path)
        .bind(&u.user_agent)
        .bind(u.at)
        .execute(&mut *c)
        .await
        .map_err(backend)?
        .rows_affected() as i64;
        room -= inserted;
        added += inserted;
    }
    if added > 0 {
        sqlx::query(
            "UPDATE unknown_sources SET distinct_keys = distinct_keys + $1 WHERE exchange = $2 AND source = $3",
        )
        .bind(added)
        .bind(g.exchange.as_str())
        .bind(g.source)
        .execute(&mut *c)
        .await
        .map_err(backend)?;
    }
    Ok(room <= 0)
}

impl PgDatabase {
    pub(crate) async fn trap_record(&self, batch: &[TrapEvent]) -> Result<()> {
        let mut conn = self.pool().acquire().await.map_err(backend)?;
        self.trap_record_on(&mut conn, batch).await
    }

    /// The group commit on `conn`: every event of `batch` in one transaction.
    pub(crate) async fn trap_record_on(
        &self,
        conn: &mut PgConnection,
        batch: &[TrapEvent],
    ) -> Result<()> {
        use sqlx::Connection;
        // Most batches under load only count: one statement (`trap_fused.rs`).
        if self.trap_record_fused(conn, batch).await? {
            return Ok(());
        }
        let mut tx = conn.begin().await.map_err(backend)?;
        let unknown = unknown_groups(batch);
        let mut full = Vec::new();
        for g in &unknown {
            if apply_unknown_group(&mut tx, g).await? {
                full.push((g.exchange, g.source));
            }
        }
        let hits = batch_hits(batch);
        if !hits.is_empty() {
            check_hit_parents(&mut tx, &hits).await?;
            let incidents = apply_hits(&mut tx, &hits).await?;
            let rows: Vec<(&Hit, Uuid)> = hits.iter().copied().zip(incidents).collect();
            insert_hits(&mut tx, &rows).await?;
            // hit.recorded outbox rows, only while someone subscribes (cached check).
            self.insert_hit_events(&mut tx, &rows).await?;
        }
        // Delivered to listening workers at commit, never before, so a woken worker
        // finds the events. Sent for every batch, unknown keys included: a canary's
        // transaction must not do anything an unknown key's does not (stealth).
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(crate::webhooks::WAKE_CHANNEL)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        for (exchange, source) in full {
            self.source_full(exchange, source);
        }
        self.hits_committed(&hits);
        Ok(())
    }

    pub(crate) async fn trap_list_hits(&self, tenant: Uuid, f: &HitFilter) -> Result<Vec<Hit>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new("SELECT * FROM hits WHERE tenant_id = ");
        q.push_bind(tenant);
        if let Some(c) = f.canary_id {
            q.push(" AND canary_id = ").push_bind(c);
        }
        if let Some(s) = f.store_id {
            q.push(" AND store_id = ").push_bind(s);
        }
        if let Some(t) = f.since {
            q.push(" AND received_at >= ").push_bind(t);
        }
        if let Some(a) = f.page.after {
            q.push(" AND id > ").push_bind(a);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(f.page.limit));
        q.build()
            .fetch_all(self.pool())
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
        sqlx::query("SELECT * FROM incidents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.pool())
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
        let mut q: QueryBuilder<Postgres> =
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
            .fetch_all(self.pool())
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
        let mut tx = self.pool().begin().await.map_err(backend)?;
        // A resolved incident stays resolved; acknowledging keeps the first time.
        let row = sqlx::query(
            "UPDATE incidents SET
               status = CASE WHEN status = 'resolved' THEN 'resolved' ELSE $1 END,
               acknowledged_at = CASE WHEN $1 IN ('acknowledged', 'resolved') THEN COALESCE(acknowledged_at, $2) ELSE acknowledged_at END,
               resolved_at = CASE WHEN $1 = 'resolved' THEN COALESCE(resolved_at, $2) ELSE resolved_at END
             WHERE tenant_id = $3 AND id = $4 RETURNING *",
        )
        .bind(status.as_str())
        .bind(at)
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
            "SELECT * FROM events WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let payload: Json<serde_json::Value> = r.try_get("payload").map_err(backend)?;
                Ok(Event {
                    id: r.try_get("id").map_err(backend)?,
                    tenant_id: r.try_get("tenant_id").map_err(backend)?,
                    event_type: r.try_get("event_type").map_err(backend)?,
                    incident_id: r.try_get("incident_id").map_err(backend)?,
                    hit_id: r.try_get("hit_id").map_err(backend)?,
                    payload: payload.0,
                    created_at: r.try_get("created_at").map_err(backend)?,
                })
            })
            .collect()
    }

    pub(crate) async fn trap_unknown_sources(&self, limit: u32) -> Result<Vec<UnknownSource>> {
        let rows = sqlx::query("SELECT * FROM unknown_sources ORDER BY requests DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let exchange: &str = r.try_get("exchange").map_err(backend)?;
                Ok(UnknownSource {
                    exchange: exchange.parse().map_err(corrupt)?,
                    source: r.try_get("source").map_err(backend)?,
                    requests: r.try_get("requests").map_err(backend)?,
                    distinct_keys: r.try_get("distinct_keys").map_err(backend)?,
                    first_seen: r.try_get("first_seen").map_err(backend)?,
                    last_seen: r.try_get("last_seen").map_err(backend)?,
                })
            })
            .collect()
    }

    pub(crate) async fn trap_put_order(&self, o: &TrapOrder) -> Result<()> {
        sqlx::query(
            "INSERT INTO trap_orders (canary_id, order_id, client_order_id, symbol, side, order_type, price, amount, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .bind(o.created_at)
        .execute(self.pool())
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
            "SELECT * FROM trap_orders WHERE canary_id = $1 AND (order_id = $2 OR client_order_id = $2) LIMIT 1",
        )
        .bind(canary)
        .bind(id)
        .fetch_optional(self.pool())
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
            "SELECT * FROM trap_orders WHERE canary_id = $1 AND (NOT $2 OR status = 'open') ORDER BY created_at, order_id",
        )
        .bind(canary)
        .bind(open_only)
        .fetch_all(self.pool())
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
             WHERE canary_id = $1 AND (order_id = $2 OR client_order_id = $2) RETURNING *",
        )
        .bind(canary)
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(backend)?
        .as_ref()
        .map(order_row)
        .transpose()
    }

    pub(crate) async fn trap_advance_nonce(&self, canary: Uuid, nonce: u64) -> Result<bool> {
        // BIGINT is signed; no client sends a nonce above i64::MAX (ms or µs since 1970),
        // and such a nonce is refused as stale.
        let Ok(n) = i64::try_from(nonce) else {
            return Ok(false);
        };
        let done = sqlx::query(
            "INSERT INTO trap_nonces (canary_id, last_nonce) VALUES ($1, $2)
             ON CONFLICT (canary_id) DO UPDATE SET last_nonce = EXCLUDED.last_nonce
             WHERE trap_nonces.last_nonce < EXCLUDED.last_nonce",
        )
        .bind(canary)
        .bind(n)
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }
}
