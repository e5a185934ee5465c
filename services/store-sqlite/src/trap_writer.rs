//! The trap's group commit on SQLite, run synchronously on a connection of its own.
//!
//! sqlx's SQLite driver runs every statement on the connection's own thread and wakes
//! the async caller with each result. Under load that wake-up waits behind the queued
//! request tasks (0.1-0.7 ms a hop on two busy cores, docs/benchmarks.md), and a group
//! commit of BEGIN, counter upserts, incident updates, hit inserts and COMMIT spent most
//! of its time in those hops while every trap request waited for it. Here the whole
//! batch runs, statement after statement, on the thread that calls it: the trap
//! recorder's own thread ([`keytrap_store::Database::trap_writer`]), or a blocking
//! thread for [`keytrap_store::Database::record_trap_events`]. Both go through
//! [`record_batch`], the only code that writes the trap's tables.
//!
//! One writer at a time. The rest of the backend writes through sqlx's single-connection
//! writer pool; before writing, a batch checks that connection out of the pool and holds
//! it (the *write gate*), so the two connections never contend for SQLite's write lock
//! (no `SQLITE_BUSY` sleeps) and other writers queue fairly behind the trap, as before.
//! The recorder's thread keeps the gate across back-to-back batches for at most
//! [`GATE_HOLD`], then lets any waiting writer in.
//!
//! Checkpoints. SQLite checkpoints the WAL by itself inside the COMMIT that takes it past
//! 1,000 pages: that commit's requests waited for the copy and two more `fsync`s (the
//! canary benchmark's commits over 5 ms, docs/benchmarks.md). The trap's connection has
//! the automatic checkpoint off and checkpoints when no request waits for it: after a
//! batch's requests have their answers, like the index's upkeep, at most every
//! [`CHECKPOINT_EVERY`] (and at least every [`CHECKPOINT_BOUND`] while it wrote, so the
//! WAL stays bounded under a flood).
//! The pool's connections keep the automatic checkpoint for what the API writes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keytrap_store::*;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sqlx::pool::PoolConnection;
use sqlx::Sqlite;
use uuid::Uuid;

use crate::{ms, SqliteDatabase};

/// Longest time the recorder keeps the write gate across back-to-back batches.
const GATE_HOLD: Duration = Duration::from_millis(5);

/// Hits waiting in `hits_unindexed` at which the recorder starts moving them into
/// `hits_by_canary` (migration 0006, docs/storage.md), one slice of the canaries after
/// each of its next batches that no request queues behind (after every batch from twice
/// this many): what `GET /v1/hits?canary_id=` reads besides the index stays about that.
pub const INDEX_EVERY: usize = 4_096;
/// Canary slices (migration 0006: the low four bits of the id's last byte).
const SLICES: u8 = 16;
/// When the trap is idle, fewer waiting hits are moved too, at most this often.
const INDEX_WHEN_IDLE: Duration = Duration::from_secs(1);

/// The trap's connection checkpoints what it wrote at most this often, after a batch no
/// request queues behind or when idle.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// ... and at least this often while it writes, queued requests or not.
const CHECKPOINT_BOUND: Duration = Duration::from_millis(100);

/// A canary's slice of the per-canary index upkeep.
pub fn slice_of(canary: Uuid) -> u8 {
    canary.as_bytes()[15] & (SLICES - 1)
}

/// A pass moving the hits waiting up to `upto` (a `seq`) into the index, slice by slice.
#[derive(Debug, Clone, Copy)]
struct Pass {
    upto: i64,
    next: u8,
}

/// The trap's own connection (opened with the writer pool's settings).
pub(crate) struct TrapConn {
    conn: Mutex<Connection>,
    /// Rows in `hits_unindexed` (read at open, then counted by the writers).
    unindexed: AtomicUsize,
    /// The move under way, if any (kept with the connection it runs on).
    pass: Mutex<Option<Pass>>,
    /// The connection committed since its last checkpoint.
    written: AtomicBool,
    /// When it last checkpointed.
    checkpointed_at: Mutex<Instant>,
}

impl std::fmt::Debug for TrapConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrapConn")
    }
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::from_database(e, |e| {
        e.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(|c| {
                matches!(
                    c,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
            })
    })
}

impl TrapConn {
    /// Opens `path` (already created and migrated by the writer pool) with the writer's
    /// settings: WAL, `synchronous=FULL` (a committed hit survives power loss), foreign
    /// keys, statement journals in memory, the same busy timeout.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> Result<TrapConn> {
        if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            // A second connection to an in-memory database would see another database.
            return Err(StoreError::Backend(
                "keytrap needs an SQLite database file, not an in-memory database".into(),
            ));
        }
        let conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(busy_timeout).map_err(sql_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;",
        )
        .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(32);
        let unindexed: i64 = conn
            .query_row("SELECT COUNT(*) FROM hits_unindexed", [], |r| r.get(0))
            .map_err(sql_err)?;
        Ok(TrapConn {
            conn: Mutex::new(conn),
            unindexed: AtomicUsize::new(usize::try_from(unindexed).unwrap_or(0)),
            pass: Mutex::new(None),
            written: AtomicBool::new(false),
            checkpointed_at: Mutex::new(Instant::now()),
        })
    }
}

fn uuid_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Uuid> {
    let b: Vec<u8> = row.get(i)?;
    Uuid::from_slice(&b).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn opt(u: &Option<Uuid>) -> Option<&[u8]> {
    u.as_ref().map(|u| &u.as_bytes()[..])
}

/// The statement counting hits into an open incident of `kind` at or above a severity.
/// Two texts, not one with the kind as a parameter: each must name its key column and
/// kind literally for SQLite to use that kind's partial index of open incidents.
fn count_sql(kind: IncidentKind) -> &'static str {
    match kind {
        IncidentKind::Canary => {
            "UPDATE incidents SET hit_count = hit_count + ?1, last_seen = MAX(last_seen, ?2),
               last_hit_id = ?3, canary_count = canary_count + ?4
             WHERE kind = 'canary' AND canary_id = ?5 AND status <> 'resolved'
               AND (CASE severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= ?6
             RETURNING id"
        }
        IncidentKind::Store => {
            "UPDATE incidents SET hit_count = hit_count + ?1, last_seen = MAX(last_seen, ?2),
               last_hit_id = ?3, canary_count = canary_count + ?4
             WHERE kind = 'store' AND store_id = ?5 AND status <> 'resolved'
               AND (CASE severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= ?6
             RETURNING id"
        }
    }
}

/// Counts `g`'s hits into its open incident when that incident's severity is at least
/// the group's highest: the common case while an attack goes on. `None` when the
/// incident must open or escalate (hit by hit, [`apply_to_incident`]).
fn count_open(c: &Connection, kind: IncidentKind, g: &IncidentGroup) -> Result<Option<Uuid>> {
    c.prepare_cached(count_sql(kind))
        .map_err(sql_err)?
        .query_row(
            params![
                g.hits,
                ms(g.last_seen),
                &g.last_hit.as_bytes()[..],
                g.new_canaries,
                &g.key.as_bytes()[..],
                g.max_rank
            ],
            |r| uuid_at(r, 0),
        )
        .optional()
        .map_err(sql_err)
}

/// Applies one hit to its incident of `kind`: opens, escalates or counts it, and queues
/// the event the transition emits. Returns the incident and the transition.
fn apply_to_incident(
    c: &Connection,
    kind: IncidentKind,
    hit: &Hit,
    new_canary: bool,
) -> Result<(Uuid, Transition)> {
    let single = IncidentGroup {
        key: match kind {
            IncidentKind::Canary => hit.canary_id,
            IncidentKind::Store => hit.store_id,
        },
        hits: 1,
        max_rank: severity_rank(hit.severity),
        last_seen: hit.received_at,
        last_hit: hit.id,
        new_canaries: i64::from(new_canary && kind == IncidentKind::Store),
    };
    if let Some(id) = count_open(c, kind, &single)? {
        return Ok((id, Transition::Counted));
    }
    let select = match kind {
        IncidentKind::Canary => "SELECT id, severity FROM incidents WHERE kind = 'canary' AND canary_id = ?1 AND status <> 'resolved'",
        IncidentKind::Store => "SELECT id, severity FROM incidents WHERE kind = 'store' AND store_id = ?1 AND status <> 'resolved'",
    };
    let current = c
        .prepare_cached(select)
        .map_err(sql_err)?
        .query_row([&single.key.as_bytes()[..]], |r| {
            Ok((uuid_at(r, 0)?, r.get::<_, String>(1)?))
        })
        .optional()
        .map_err(sql_err)?
        .map(|(id, severity)| -> Result<OpenIncident> {
            Ok(OpenIncident {
                id,
                severity: parse_text(&severity)?,
            })
        })
        .transpose()?;
    let t = transition(current, hit.severity);
    let at = ms(hit.received_at);
    let id = match (t, current) {
        (Transition::Opened, _) | (_, None) => {
            let id = Uuid::now_v7();
            c.prepare_cached(
                "INSERT INTO incidents (id, tenant_id, kind, canary_id, store_id, status, severity, hit_count, canary_count, first_seen, last_seen, last_hit_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, 1, 1, ?7, ?7, ?8)",
            )
            .map_err(sql_err)?
            .execute(params![
                &id.as_bytes()[..],
                &hit.tenant_id.as_bytes()[..],
                kind.as_str(),
                opt(&(kind == IncidentKind::Canary).then_some(hit.canary_id)),
                &hit.store_id.as_bytes()[..],
                hit.severity.as_str(),
                at,
                &hit.id.as_bytes()[..],
            ])
            .map_err(sql_err)?;
            id
        }
        (_, Some(cur)) => {
            let severity = match t {
                Transition::Escalated(s) => s,
                _ => cur.severity,
            };
            c.prepare_cached(
                "UPDATE incidents SET severity = ?1, hit_count = hit_count + 1,
                 canary_count = canary_count + ?2, last_seen = MAX(last_seen, ?3), last_hit_id = ?4
                 WHERE id = ?5",
            )
            .map_err(sql_err)?
            .execute(params![
                severity.as_str(),
                single.new_canaries,
                at,
                &hit.id.as_bytes()[..],
                &cur.id.as_bytes()[..],
            ])
            .map_err(sql_err)?;
            cur.id
        }
    };
    if let Some(event) = event_type(kind, t) {
        insert_event(c, hit, event, id, &event_payload(kind, id, hit, t))?;
    }
    Ok((id, t))
}

fn insert_event(
    c: &Connection,
    hit: &Hit,
    event: &str,
    incident: Uuid,
    payload: &serde_json::Value,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO events (id, tenant_id, event_type, incident_id, hit_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(sql_err)?
    .execute(params![
        &Uuid::now_v7().as_bytes()[..],
        &hit.tenant_id.as_bytes()[..],
        event,
        &incident.as_bytes()[..],
        &hit.id.as_bytes()[..],
        payload.to_string(),
        ms(hit.received_at),
    ])
    .map_err(sql_err)?;
    Ok(())
}

/// Incident changes for every hit of a batch; returns each hit's canary incident.
/// Groups whose open incident already has their severity are counted with one statement
/// each; the others go hit by hit.
fn apply_hits(c: &Connection, hits: &[&Hit]) -> Result<Vec<Uuid>> {
    let mut counted = std::collections::HashMap::new();
    for g in incident_groups(hits, |h| h.canary_id, None) {
        if let Some(id) = count_open(c, IncidentKind::Canary, &g)? {
            counted.insert(g.key, id);
        }
    }
    let mut incidents = Vec::with_capacity(hits.len());
    let mut opened = Vec::with_capacity(hits.len());
    for h in hits {
        match counted.get(&h.canary_id) {
            Some(id) => {
                incidents.push(*id);
                opened.push(false);
            }
            None => {
                let (id, t) = apply_to_incident(c, IncidentKind::Canary, h, false)?;
                incidents.push(id);
                opened.push(t == Transition::Opened);
            }
        }
    }
    let mut stores_counted = std::collections::HashSet::new();
    for g in incident_groups(hits, |h| h.store_id, Some(&opened)) {
        if count_open(c, IncidentKind::Store, &g)?.is_some() {
            stores_counted.insert(g.key);
        }
    }
    for (h, new) in hits.iter().zip(&opened) {
        if !stores_counted.contains(&h.store_id) {
            apply_to_incident(c, IncidentKind::Store, h, *new)?;
        }
    }
    Ok(incidents)
}

fn insert_hits(c: &Connection, rows: &[(&Hit, Uuid)]) -> Result<()> {
    let mut insert = c
        .prepare_cached(
            "INSERT INTO hits (id, tenant_id, canary_id, store_id, incident_id, exchange, method, path, query, body_excerpt,
                source_ip, forwarded_for, user_agent, client_fingerprint, signature_state, action_class, action_params, severity, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )
        .map_err(sql_err)?;
    let mut unindexed = c
        .prepare_cached("INSERT INTO hits_unindexed (slice, canary_id, hit_id) VALUES (?1, ?2, ?3)")
        .map_err(sql_err)?;
    for (hit, incident) in rows {
        unindexed
            .execute(params![
                slice_of(hit.canary_id),
                &hit.canary_id.as_bytes()[..],
                &hit.id.as_bytes()[..]
            ])
            .map_err(sql_err)?;
        insert
            .execute(params![
                &hit.id.as_bytes()[..],
                &hit.tenant_id.as_bytes()[..],
                &hit.canary_id.as_bytes()[..],
                &hit.store_id.as_bytes()[..],
                &incident.as_bytes()[..],
                hit.exchange.as_str(),
                hit.method,
                hit.path,
                hit.query,
                hit.body_excerpt,
                hit.source_ip,
                hit.forwarded_for,
                hit.user_agent,
                hit.client_fingerprint,
                hit.signature_state.as_str(),
                hit.action_class,
                hit.action_params.to_string(),
                hit.severity.as_str(),
                ms(hit.received_at),
            ])
            .map_err(sql_err)?;
    }
    Ok(())
}

/// One source's sightings of a batch: one counter upsert, then first sightings while
/// the source has room.
fn apply_unknown_group(c: &Connection, g: &UnknownGroup<'_>) -> Result<()> {
    let distinct: i64 = c
        .prepare_cached(
            "INSERT INTO unknown_sources (exchange, source, requests, distinct_keys, first_seen, last_seen)
             VALUES (?1, ?2, ?3, 0, ?4, ?5)
             ON CONFLICT (exchange, source) DO UPDATE SET requests = requests + excluded.requests,
                 last_seen = MAX(last_seen, excluded.last_seen)
             RETURNING distinct_keys",
        )
        .map_err(sql_err)?
        .query_row(
            params![
                g.exchange.as_str(),
                g.source,
                g.requests,
                ms(g.first_at),
                ms(g.last_at)
            ],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let mut room = UNKNOWN_KEYS_PER_SOURCE - distinct;
    if room <= 0 || g.keys.is_empty() {
        return Ok(());
    }
    let mut added = 0i64;
    let mut insert = c
        .prepare_cached(
            "INSERT INTO unknown_keys (exchange, source, key_hash, key_hint, malformed, first_path, first_user_agent, first_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )
        .map_err(sql_err)?;
    for u in &g.keys {
        if room <= 0 {
            break;
        }
        let inserted = insert
            .execute(params![
                u.exchange.as_str(),
                u.source,
                &u.key_hash[..],
                u.key_hint,
                i64::from(u.malformed),
                u.path,
                u.user_agent,
                ms(u.at),
            ])
            .map_err(sql_err)? as i64;
        room -= inserted;
        added += inserted;
    }
    if added > 0 {
        c.prepare_cached(
            "UPDATE unknown_sources SET distinct_keys = distinct_keys + ?1 WHERE exchange = ?2 AND source = ?3",
        )
        .map_err(sql_err)?
        .execute(params![added, g.exchange.as_str(), g.source])
        .map_err(sql_err)?;
    }
    Ok(())
}

/// `hit.recorded` outbox rows for the hits of tenants with a subscribed, enabled
/// endpoint. With none (the usual case) this is the cached check alone; a stale answer
/// is used while `refresh` reads a new one in the background.
fn insert_hit_events(
    c: &Connection,
    subscribers: &HitSubscribers,
    refresh: impl FnOnce(u64),
    rows: &[(&Hit, Uuid)],
) -> Result<()> {
    let tenants = subscribers.tenants_blocking(refresh, || {
        c.prepare_cached(crate::webhooks::HIT_SUBSCRIBERS)
            .map_err(sql_err)?
            .query_map([], |r| uuid_at(r, 0))
            .map_err(sql_err)?
            .collect::<rusqlite::Result<Vec<Uuid>>>()
            .map_err(sql_err)
    })?;
    if tenants.is_empty() {
        return Ok(());
    }
    for (h, incident) in rows {
        if tenants.binary_search(&h.tenant_id).is_ok() {
            insert_event(
                c,
                h,
                HIT_RECORDED,
                *incident,
                &hit_event_payload(h, *incident),
            )?;
        }
    }
    Ok(())
}

/// The group commit: every unknown-key sighting and every hit (with its incident
/// changes and events) of `batch` in one transaction. All or nothing. Returns the number
/// of hits recorded.
pub(crate) fn record_batch(
    conn: &mut Connection,
    subscribers: &HitSubscribers,
    refresh: impl FnOnce(u64),
    batch: &[TrapEvent],
) -> Result<usize> {
    // IMMEDIATE: the write lock is taken at BEGIN (the write gate makes it free).
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    for g in unknown_groups(batch) {
        apply_unknown_group(&tx, &g)?;
    }
    let hits = batch_hits(batch);
    if !hits.is_empty() {
        let incidents = apply_hits(&tx, &hits)?;
        let rows: Vec<(&Hit, Uuid)> = hits.iter().copied().zip(incidents).collect();
        insert_hits(&tx, &rows)?;
        insert_hit_events(&tx, subscribers, refresh, &rows)?;
    }
    // Dropped without commit (an error above), the transaction rolls back.
    tx.commit().map_err(sql_err)?;
    Ok(hits.len())
}

/// Moves one slice's waiting hits with `seq <= upto` into `hits_by_canary`, in the
/// index's order (each leaf written once for all its new entries), and advances the
/// slice's mark; the last slice of a pass also deletes the rows every mark has passed.
/// One transaction. Returns the rows deleted from `hits_unindexed`.
fn index_slice(conn: &mut Connection, slice: u8, upto: i64) -> Result<usize> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    // OR IGNORE: a hit already indexed (it cannot be, but the move must not fail on it).
    tx.prepare_cached(
        "INSERT OR IGNORE INTO hits_by_canary (canary_id, hit_id)
         SELECT canary_id, hit_id FROM hits_unindexed
         WHERE slice = ?1 AND seq <= ?2
           AND seq > (SELECT through FROM hits_index_marks WHERE slice = ?1)
         ORDER BY canary_id, hit_id",
    )
    .map_err(sql_err)?
    .execute(params![slice, upto])
    .map_err(sql_err)?;
    tx.prepare_cached("UPDATE hits_index_marks SET through = ?2 WHERE slice = ?1 AND through < ?2")
        .map_err(sql_err)?
        .execute(params![slice, upto])
        .map_err(sql_err)?;
    let deleted = if slice + 1 == SLICES {
        let deleted = tx.prepare_cached(
            "DELETE FROM hits_unindexed WHERE seq <= (SELECT MIN(through) FROM hits_index_marks)",
        )
        .map_err(sql_err)?
        .execute([])
        .map_err(sql_err)?;
        // Emptied, the table numbers its next row 1 again: the marks start over with it,
        // so a new row is never taken for one already moved.
        tx.prepare_cached(
            "UPDATE hits_index_marks SET through = 0 WHERE NOT EXISTS (SELECT 1 FROM hits_unindexed)",
        )
        .map_err(sql_err)?
        .execute([])
        .map_err(sql_err)?;
        deleted
    } else {
        0
    };
    tx.commit().map_err(sql_err)?;
    Ok(deleted)
}

/// The newest waiting hit's `seq` (0 when none waits).
fn newest_waiting(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM hits_unindexed")
        .map_err(sql_err)?
        .query_row([], |r| r.get(0))
        .map_err(sql_err)
}

impl SqliteDatabase {
    /// Starts the background read of `hit.recorded` subscribers for `generation`.
    fn refresh_hit_subscribers(&self, generation: u64) {
        let db = self.clone();
        self.runtime.spawn(async move {
            let read = sqlx::query_scalar(crate::webhooks::HIT_SUBSCRIBERS)
                .fetch_all(db.reader())
                .await;
            if let Err(e) = db.hit_subscribers.refreshed(generation, read) {
                tracing::warn!(error = %e, "reading hit.recorded subscribers failed");
            }
        });
    }

    fn trap_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.trap
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one batch on the trap's connection; the caller holds the write gate.
    fn record_locked(&self, batch: &[TrapEvent]) -> Result<()> {
        let hits = record_batch(
            &mut self.trap_conn(),
            &self.hit_subscribers,
            |g| self.refresh_hit_subscribers(g),
            batch,
        )?;
        self.trap.unindexed.fetch_add(hits, Ordering::Relaxed);
        self.trap.written.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// One step of the index's upkeep (the caller holds the write gate): starts a pass
    /// over the hits waiting now when `start` allows, or moves the next slice of the
    /// pass under way; `all` runs the pass to its end.
    fn index_step(&self, start: bool, all: bool) -> Result<()> {
        let mut conn = self.trap_conn();
        let mut pass = self
            .trap
            .pass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pass.is_none() && start {
            let upto = newest_waiting(&conn)?;
            if upto > 0 {
                *pass = Some(Pass { upto, next: 0 });
            }
        }
        while let Some(p) = *pass {
            let deleted = index_slice(&mut conn, p.next, p.upto)?;
            self.trap.written.store(true, Ordering::Relaxed);
            *pass = (p.next + 1 < SLICES).then_some(Pass {
                next: p.next + 1,
                ..p
            });
            if pass.is_none() {
                // Saturating: hits recorded meanwhile are counted in, never below zero.
                let _ =
                    self.trap
                        .unindexed
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            Some(n.saturating_sub(deleted))
                        });
            }
            if !all {
                break;
            }
        }
        Ok(())
    }

    /// The trap's connection wrote since its last checkpoint, at least `after` ago.
    fn checkpoint_due(&self, after: Duration) -> bool {
        self.trap.written.load(Ordering::Relaxed)
            && self
                .trap
                .checkpointed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed()
                >= after
    }

    /// A passive checkpoint on the trap's connection: copies into the database file what
    /// no reader still needs, never waiting for readers or writers. What it could not copy
    /// (a checkpoint under way on another connection, a reader on an older snapshot) is
    /// tried again at the next due time.
    fn checkpoint(&self) -> Result<()> {
        let conn = self.trap_conn();
        *self
            .trap
            .checkpointed_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        // (busy, frames in the WAL, frames copied)
        let done = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(sql_err);
        let complete = matches!(done, Ok((0, log, copied)) if copied >= log);
        self.trap.written.store(!complete, Ordering::Relaxed);
        done.map(|_| ())
    }

    /// [`index_step`](Self::index_step) after a committed batch: a failure loses nothing
    /// (the hits stay in `hits_unindexed`, still listed) and must not count the batch as
    /// failed; it is logged, and the step is tried again later. `true` if it went through.
    fn index_step_logged(&self, start: bool, all: bool) -> bool {
        match self.index_step(start, all) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "moving hits into the per-canary index failed");
                false
            }
        }
    }

    /// [`checkpoint`](Self::checkpoint) after a committed batch, likewise logged only.
    fn checkpoint_logged(&self) {
        if let Err(e) = self.checkpoint() {
            tracing::debug!(error = %e, "checkpoint of the trap's WAL failed");
        }
    }

    /// A pass over the waiting hits has moved some slices, not all.
    fn pass_under_way(&self) -> bool {
        self.trap
            .pass
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Hits committed but not yet deleted from `hits_unindexed`.
    fn unindexed(&self) -> usize {
        self.trap.unindexed.load(Ordering::Relaxed)
    }

    /// [`Database::record_trap_events`]: the gate is awaited, the batch runs on a
    /// blocking thread (and so does the index's upkeep when the batch calls for it).
    pub(crate) async fn trap_record(&self, batch: &[TrapEvent]) -> Result<()> {
        let gate = self.writer().acquire().await.map_err(crate::backend)?;
        let db = self.clone();
        let batch = batch.to_vec();
        let done = tokio::task::spawn_blocking(move || {
            db.record_locked(&batch)?;
            // The batch is committed: upkeep that fails now must not report it failed
            // (its events would be recorded again). This path has no "after the
            // answer": a whole pass at once.
            if db.unindexed() >= INDEX_EVERY {
                db.index_step_logged(true, true);
            }
            if db.checkpoint_due(CHECKPOINT_EVERY) {
                db.checkpoint_logged();
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
        drop(gate);
        done
    }

    /// Moves every committed hit into the per-canary index now (normally the trap's
    /// writer does this by itself, see [`INDEX_EVERY`]).
    pub async fn index_hits(&self) -> Result<()> {
        let gate = self.writer().acquire().await.map_err(crate::backend)?;
        let db = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            // A pass under way first, then one over everything waiting now.
            db.index_step(false, true)?;
            db.index_step(true, true)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
        drop(gate);
        done
    }
}

/// [`Database::trap_writer`] for SQLite: batches run on the calling (recorder) thread.
pub(crate) struct SqliteTrapWriter {
    db: SqliteDatabase,
    /// The write gate while the recorder keeps it, and since when.
    gate: Option<(PoolConnection<Sqlite>, Instant)>,
    /// When waiting hits were last moved into `hits_by_canary`.
    indexed_at: Instant,
}

impl SqliteTrapWriter {
    pub(crate) fn new(db: SqliteDatabase) -> Self {
        SqliteTrapWriter {
            db,
            gate: None,
            indexed_at: Instant::now(),
        }
    }

    /// Takes the write gate unless the recorder keeps it already.
    fn gate(&mut self) -> Result<()> {
        if self.gate.is_none() {
            let conn = self
                .db
                .runtime
                .block_on(self.db.writer().acquire())
                .map_err(crate::backend)?;
            self.gate = Some((conn, Instant::now()));
        }
        Ok(())
    }

    /// One step of the index's upkeep (see [`SqliteDatabase::index_step`]). A failure
    /// loses nothing (the hits stay in `hits_unindexed`, still listed); it is logged and
    /// the step is tried again later.
    fn index(&mut self, start: bool, all: bool) -> bool {
        if start {
            self.indexed_at = Instant::now();
        }
        match self.gate() {
            Ok(()) => self.db.index_step_logged(start, all),
            Err(e) => {
                tracing::warn!(error = %e, "moving hits into the per-canary index failed");
                false
            }
        }
    }

    fn release(&mut self) {
        if let Some((conn, _)) = self.gate.take() {
            // Returning a pooled connection spawns a task on the runtime.
            let _enter = self.db.runtime.enter();
            drop(conn);
        }
    }
}

impl TrapWriter for SqliteTrapWriter {
    fn record(&mut self, batch: &[TrapEvent]) -> Result<()> {
        if self
            .gate
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() > GATE_HOLD)
        {
            // Let a writer that queued meanwhile go first (the pool's queue is fair).
            self.release();
        }
        self.gate()?;
        self.db.record_locked(batch)
    }

    fn maintain(&mut self, queued: bool) {
        // One slice after a batch: a pass under way goes on, a new one starts once enough
        // hits wait. While requests queue for the next batch the slice waits (slices
        // back to back under load made the queue, and the next batch, longer each time),
        // unless twice the usual number of hits wait: the bound on what a canary listing
        // reads besides the index.
        let waiting = self.db.unindexed();
        let index_due = waiting >= INDEX_EVERY || self.db.pass_under_way();
        if index_due && (!queued || waiting >= 2 * INDEX_EVERY) {
            self.index(waiting >= INDEX_EVERY, false);
            return;
        }
        // Else the checkpoint, on the same terms: one piece of upkeep per batch.
        let after = if queued {
            CHECKPOINT_BOUND
        } else {
            CHECKPOINT_EVERY
        };
        if self.db.checkpoint_due(after) {
            self.db.checkpoint_logged();
        }
    }

    fn idle_step(&mut self) -> bool {
        // A pass under way goes on; a new one starts over whatever waits, at most once per
        // INDEX_WHEN_IDLE. One slice per call: the recorder stops calling as soon as a
        // request arrives (a whole pass in one go held arriving requests 10-17 ms). A
        // failed step is tried again at the next quiet moment, not in a loop here.
        let under_way = self.db.pass_under_way();
        if under_way || (self.db.unindexed() > 0 && self.indexed_at.elapsed() >= INDEX_WHEN_IDLE) {
            // True after a slice: more slices, or the checkpoint, may be due.
            return self.index(!under_way, false);
        }
        if self.db.checkpoint_due(CHECKPOINT_EVERY) {
            self.db.checkpoint_logged();
        }
        false
    }

    fn idle(&mut self) {
        self.release();
    }
}

impl Drop for SqliteTrapWriter {
    fn drop(&mut self) {
        self.release();
    }
}

/// Shared handle to the trap connection.
pub(crate) type SharedTrapConn = Arc<TrapConn>;
