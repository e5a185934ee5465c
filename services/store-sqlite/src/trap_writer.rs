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
    /// Counts folded across batches, and what lets them be (see [`Deferred`]).
    deferred: Mutex<Deferred>,
    /// The file whose lock gives this process the right to fold (see [`Deferred`]).
    lock_path: std::path::PathBuf,
    /// What [`SqliteDatabase::prepare_trap`] claimed, until the trap writer takes it:
    /// `Some(Some(lock))` the right to fold, `Some(None)` not this process's.
    claimed: Mutex<Option<Option<std::fs::File>>>,
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
            deferred: Mutex::new(Deferred::default()),
            lock_path: lock_path(path),
            claimed: Mutex::new(None),
        })
    }
}

/// The lock file beside the database (`<file>-trap-lock`).
pub fn lock_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-trap-lock");
    p.into()
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

/// What [`apply_hits`] did besides writing: counts it folded instead of writing, and
/// canary incidents it now knows open at a severity.
#[derive(Default)]
struct Applied {
    /// Each hit's canary incident, in the batch's order.
    incidents: Vec<Uuid>,
    /// Groups counted in memory only (their incident was known open at their severity).
    folded: Vec<(Uuid, IncidentGroup)>,
    /// (canary, its open incident, a severity rank that incident has at least).
    learned: Vec<(Uuid, Uuid, i64)>,
}

/// Incident changes for every hit of a batch. Groups whose open incident already has
/// their severity are counted with one statement each, or, when `known` says so, not
/// written at all but folded (see [`Deferred`]); the others go hit by hit.
fn apply_hits(
    c: &Connection,
    hits: &[&Hit],
    known: Option<&std::collections::HashMap<Uuid, (Uuid, i64)>>,
) -> Result<Applied> {
    let mut out = Applied::default();
    let mut counted = std::collections::HashMap::new();
    for g in incident_groups(hits, |h| h.canary_id, None) {
        if let Some(&(id, rank)) = known.and_then(|k| k.get(&g.key)) {
            if rank >= g.max_rank {
                counted.insert(g.key, id);
                out.folded.push((id, g));
                continue;
            }
        }
        if let Some(id) = count_open(c, IncidentKind::Canary, &g)? {
            counted.insert(g.key, id);
            out.learned.push((g.key, id, g.max_rank));
        }
    }
    let mut opened = Vec::with_capacity(hits.len());
    for h in hits {
        match counted.get(&h.canary_id) {
            Some(id) => {
                out.incidents.push(*id);
                opened.push(false);
            }
            None => {
                let (id, t) = apply_to_incident(c, IncidentKind::Canary, h, false)?;
                out.incidents.push(id);
                out.learned
                    .push((h.canary_id, id, severity_rank(h.severity)));
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
    Ok(out)
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

/// Canary incidents' counters folded across group commits (docs/storage.md, "Counters
/// under load").
///
/// Counting a group's hits into its canary's open incident was an `UPDATE` per canary
/// per commit, each dirtying a page of `incidents` for the WAL: with many canaries in use,
/// about a quarter of the writer's time and a fifth of the canary benchmark's throughput.
/// While requests queue for the next batch (sustained load), a group whose incident is
/// known open at the group's severity is counted here instead, and written by the first
/// batch with nothing queued behind it (when a burst ends, its last answer goes out after
/// every count is in), at the writer's first quiet moment, or within [`FOLD_FOR`]. Incidents that open or escalate, and
/// store incidents, are written by every batch as before, so no alert waits.
///
/// What it knows is checked against the API's writes: resolving or acknowledging an
/// incident (the only other writer of `incidents`) bumps `incident_writes` in the same
/// transaction, in whichever process it runs, and a batch that reads a new value there
/// forgets what it knew before it counts anything.
///
/// Only one process folds: the one whose trap writer holds the lock on the file beside
/// the database ([`lock_path`]); another trap process on the same file writes every
/// count. A process that dies with counts folded leaves the `trap_deferred_counts` row
/// behind (and its lock goes with it); the next writer to take the lock recounts those
/// incidents from their hits ([`recount`]) before it records anything.
#[derive(Default)]
pub(crate) struct Deferred {
    /// Canary -> its incident, known open at least at this severity rank.
    known: std::collections::HashMap<Uuid, (Uuid, i64)>,
    /// `incident_writes` when `known` was learned.
    generation: i64,
    /// Incident -> hits counted here, not yet written.
    pending: std::collections::HashMap<Uuid, Folded>,
    /// When the oldest count in `pending` was committed.
    since: Option<Instant>,
}

/// Hits of one incident folded since its counters were last written.
#[derive(Debug, Clone, Copy)]
struct Folded {
    hits: i64,
    last_seen: chrono::DateTime<chrono::Utc>,
    last_hit: Uuid,
}

/// Longest time a folded count waits to be written while the trap stays busy.
pub const FOLD_FOR: Duration = Duration::from_millis(100);
/// Canaries remembered at most (then forgotten and learned again): about 4 MB.
const KNOWN_MAX: usize = 1 << 16;

impl Deferred {
    /// Folded counts wait to be written.
    pub(crate) fn pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// After a committed batch: what it folded (written already when `flushed`), and
    /// learned.
    fn committed(&mut self, flushed: bool, applied: Applied) {
        if flushed {
            self.pending.clear();
            self.since = None;
        } else {
            for (incident, g) in &applied.folded {
                fold(&mut self.pending, *incident, g);
                self.since.get_or_insert_with(Instant::now);
            }
        }
        if self.known.len() + applied.learned.len() > KNOWN_MAX {
            self.known.clear();
        }
        for (canary, incident, rank) in applied.learned {
            let e = self.known.entry(canary).or_insert((incident, rank));
            if e.0 != incident || e.1 < rank {
                *e = (incident, rank);
            }
        }
    }
}

/// Adds a group's hits to its incident's folded count.
fn fold(pending: &mut std::collections::HashMap<Uuid, Folded>, incident: Uuid, g: &IncidentGroup) {
    let f = pending.entry(incident).or_insert(Folded {
        hits: 0,
        last_seen: g.last_seen,
        last_hit: g.last_hit,
    });
    f.hits += g.hits;
    if g.last_seen >= f.last_seen {
        f.last_seen = g.last_seen;
        f.last_hit = g.last_hit;
    }
}

/// Writes folded counts (see [`Deferred`]) and clears the marker row.
fn write_folded(c: &Connection, pending: &std::collections::HashMap<Uuid, Folded>) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut update = c
        .prepare_cached(
            "UPDATE incidents SET hit_count = hit_count + ?1,
               last_hit_id = CASE WHEN ?2 >= last_seen THEN ?3 ELSE last_hit_id END,
               last_seen = MAX(last_seen, ?2)
             WHERE id = ?4",
        )
        .map_err(sql_err)?;
    for (incident, f) in pending {
        update
            .execute(params![
                f.hits,
                ms(f.last_seen),
                &f.last_hit.as_bytes()[..],
                &incident.as_bytes()[..]
            ])
            .map_err(sql_err)?;
    }
    c.prepare_cached("DELETE FROM trap_deferred_counts")
        .map_err(sql_err)?
        .execute([])
        .map_err(sql_err)?;
    Ok(())
}

/// Recounts, from their hits, the canary incidents of every hit after `rowid`: after a
/// start that found counts folded by a process that died (see [`Deferred`]). A canary
/// incident's counters are its hits' by definition: every hit names the incident it was
/// counted into (`hits.incident_id`).
fn recount(c: &Connection, rowid: i64) -> Result<usize> {
    let affected: Vec<(Uuid, Uuid)> = c
        .prepare(
            "SELECT DISTINCT i.id, i.canary_id FROM hits h JOIN incidents i ON i.id = h.incident_id
             WHERE h.rowid > ?1 AND i.kind = 'canary'",
        )
        .map_err(sql_err)?
        .query_map([rowid], |r| Ok((uuid_at(r, 0)?, uuid_at(r, 1)?)))
        .map_err(sql_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sql_err)?;
    // A canary's hits are in the per-canary index or still waiting to be moved into it.
    let mut latest = c
        .prepare(
            "SELECT COUNT(*) OVER (), h.received_at, h.id FROM hits h
             WHERE h.incident_id = ?1 AND h.id IN (
               SELECT hit_id FROM hits_by_canary WHERE canary_id = ?2
               UNION SELECT hit_id FROM hits_unindexed WHERE canary_id = ?2)
             ORDER BY h.received_at DESC, h.id DESC LIMIT 1",
        )
        .map_err(sql_err)?;
    let mut update = c
        .prepare(
            "UPDATE incidents SET hit_count = ?1, last_seen = MAX(first_seen, ?2), last_hit_id = ?3
             WHERE id = ?4",
        )
        .map_err(sql_err)?;
    for (incident, canary) in &affected {
        let found = latest
            .query_row(
                params![&incident.as_bytes()[..], &canary.as_bytes()[..]],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql_err)?;
        if let Some((n, at, last)) = found {
            update
                .execute(params![n, at, last, &incident.as_bytes()[..]])
                .map_err(sql_err)?;
        }
    }
    Ok(affected.len())
}

/// The group commit: every unknown-key sighting and every hit (with its incident
/// changes and events) of `batch` in one transaction. All or nothing. Counts may be
/// folded (see [`Deferred`]) only while `queued()` says requests wait for the next batch
/// when this one is about to commit; otherwise every folded count is written with it.
/// Returns the number of hits recorded.
pub(crate) fn record_batch(
    conn: &mut Connection,
    deferred: &mut Deferred,
    subscribers: &HitSubscribers,
    refresh: impl FnOnce(u64),
    batch: &[TrapEvent],
    queued: &dyn Fn() -> bool,
) -> Result<usize> {
    let overdue = deferred.since.is_some_and(|t| t.elapsed() >= FOLD_FOR);
    // IMMEDIATE: the write lock is taken at BEGIN (the write gate makes it free).
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let generation: i64 = tx
        .prepare_cached("SELECT n FROM incident_writes")
        .map_err(sql_err)?
        .query_row([], |r| r.get(0))
        .map_err(sql_err)?;
    if deferred.generation != generation {
        // The API changed an incident: what was known may no longer hold.
        deferred.known.clear();
        deferred.generation = generation;
    }
    for g in unknown_groups(batch) {
        apply_unknown_group(&tx, &g)?;
    }
    let hits = batch_hits(batch);
    let mut applied = Applied::default();
    // The newest hit before this batch's, if counts start to wait with it.
    let mut marker = None;
    if !hits.is_empty() {
        applied = apply_hits(&tx, &hits, (!overdue).then_some(&deferred.known))?;
        if !applied.folded.is_empty() && !deferred.pending() {
            marker = Some(
                tx.prepare_cached("SELECT COALESCE(MAX(rowid), 0) FROM hits")
                    .map_err(sql_err)?
                    .query_row([], |r| r.get::<_, i64>(0))
                    .map_err(sql_err)?,
            );
        }
        let rows: Vec<(&Hit, Uuid)> = hits
            .iter()
            .copied()
            .zip(applied.incidents.iter().copied())
            .collect();
        insert_hits(&tx, &rows)?;
        insert_hit_events(&tx, subscribers, refresh, &rows)?;
    }
    // Nothing queued behind this batch (or counts waited long enough): every count is
    // written before its answers go out.
    let flush = overdue || !queued();
    if flush {
        let mut all = deferred.pending.clone();
        for (incident, g) in &applied.folded {
            fold(&mut all, *incident, g);
        }
        write_folded(&tx, &all)?;
    } else if let Some(rowid) = marker {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO trap_deferred_counts (id, hits_rowid) VALUES (1, ?1)",
        )
        .map_err(sql_err)?
        .execute([rowid])
        .map_err(sql_err)?;
    }
    // Dropped without commit (an error above), the transaction rolls back; `deferred`
    // changes only once it committed.
    match tx.commit() {
        Ok(()) => {
            deferred.committed(flush, applied);
            Ok(hits.len())
        }
        Err(e) => Err(sql_err(e)),
    }
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

    /// The counts folded across batches (see [`Deferred`]).
    fn deferred(&self) -> std::sync::MutexGuard<'_, Deferred> {
        self.trap
            .deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one batch on the trap's connection; the caller holds the write gate.
    /// `queued`: requests wait for the next batch (see [`record_batch`]).
    fn record_locked(&self, batch: &[TrapEvent], queued: &dyn Fn() -> bool) -> Result<()> {
        let mut conn = self.trap_conn();
        let mut deferred = self.deferred();
        let recorded = record_batch(
            &mut conn,
            &mut deferred,
            &self.hit_subscribers,
            |g| self.refresh_hit_subscribers(g),
            batch,
            queued,
        );
        let hits = match recorded {
            Ok(n) => n,
            Err(e) => {
                // Whatever made it fail, the retries must not rest on what was known.
                deferred.known.clear();
                return Err(e);
            }
        };
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

    /// Takes the right to fold counts (see [`Deferred`]) for this process's trap writer:
    /// the lock on [`lock_path`], then, if a process that held it died with counts
    /// folded, the recount. `None` (every count written by its batch) when another
    /// process holds the lock or the recount failed. The caller holds the write gate.
    fn claim_folding(&self) -> Option<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.trap.lock_path)
            .and_then(|f| match f.try_lock() {
                Ok(()) => Ok(Some(f)),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            });
        let file = match file {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::info!(
                    "another process runs the trap on this database: this one writes every incident count with its batch"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %self.trap.lock_path.display(), "cannot lock the trap's lock file: incident counts are written with every batch");
                return None;
            }
        };
        let own = self.deferred().pending();
        if own {
            // The marker is this process's own (an earlier writer of it folded them).
            return Some(file);
        }
        match self.recount_if_marked() {
            Ok(()) => Some(file),
            Err(e) => {
                tracing::error!(error = %e, "recounting incidents after an unclean stop failed; retried at the next start, no counts folded meanwhile");
                None
            }
        }
    }

    /// The recount after a process died with counts folded (see [`recount`]), if the
    /// marker says so.
    fn recount_if_marked(&self) -> Result<()> {
        let mut conn = self.trap_conn();
        let marker: Option<i64> = conn
            .query_row("SELECT hits_rowid FROM trap_deferred_counts", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql_err)?;
        let Some(rowid) = marker else {
            return Ok(());
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let n = recount(&tx, rowid)?;
        tx.execute("DELETE FROM trap_deferred_counts", [])
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        self.trap.written.store(true, Ordering::Relaxed);
        tracing::info!(
            incidents = n,
            "recounted canary incidents whose counts a stopped process had not written"
        );
        Ok(())
    }

    /// Counts folded across batches wait to be written.
    fn folded_pending(&self) -> bool {
        self.deferred().pending()
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
            db.record_locked(&batch, &|| false)?;
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

    /// [`Database::prepare_trap`]: takes the right to fold counts and, if a process that
    /// held it stopped with counts folded, recounts them, before the trap serves anything
    /// (else the recount waited for the trap's first request, and listings served until
    /// then showed those counts short). The trap writer takes over the lock.
    pub(crate) async fn trap_prepare(&self) -> Result<()> {
        let gate = self.writer().acquire().await.map_err(crate::backend)?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut claimed = db.claimed();
            if claimed.is_none() {
                *claimed = Some(db.claim_folding());
            }
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
        drop(gate);
        Ok(())
    }

    fn claimed(&self) -> std::sync::MutexGuard<'_, Option<Option<std::fs::File>>> {
        self.trap
            .claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    /// Whether it tried to take the right to fold counts yet, and the lock if it has.
    claimed: bool,
    fold_lock: Option<std::fs::File>,
}

impl SqliteTrapWriter {
    pub(crate) fn new(db: SqliteDatabase) -> Self {
        SqliteTrapWriter {
            db,
            gate: None,
            indexed_at: Instant::now(),
            claimed: false,
            fold_lock: None,
        }
    }

    /// Takes the write gate unless the recorder keeps it already; the first time, also
    /// the right to fold counts (see [`Deferred`]).
    fn gate(&mut self) -> Result<()> {
        if self.gate.is_none() {
            let conn = self
                .db
                .runtime
                .block_on(self.db.writer().acquire())
                .map_err(crate::backend)?;
            self.gate = Some((conn, Instant::now()));
        }
        if !self.claimed {
            self.claimed = true;
            // What `prepare_trap` claimed at the start, else claimed now.
            let prepared = self.db.claimed().take();
            self.fold_lock = prepared.unwrap_or_else(|| self.db.claim_folding());
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

    /// Writes the counts folded under load (see [`Deferred`]) in a transaction of their
    /// own; a failure is logged, and the next batch or quiet moment tries again. `true`
    /// if they were written.
    fn write_folded_now(&mut self) -> bool {
        match self
            .gate()
            .and_then(|()| self.db.record_locked(&[], &|| false))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "writing folded incident counts failed");
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
    fn record(&mut self, batch: &[TrapEvent], queued: &dyn Fn() -> bool) -> Result<()> {
        if self
            .gate
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() > GATE_HOLD)
        {
            // Let a writer that queued meanwhile go first (the pool's queue is fair).
            self.release();
        }
        self.gate()?;
        let fold = self.fold_lock.is_some();
        self.db.record_locked(batch, &|| fold && queued())
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
        // Counts folded under load are written first: the trap went quiet.
        if self.db.folded_pending() {
            return self.write_folded_now();
        }
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
        // Counts still folded (the idle step that writes them failed): once more before
        // the gate goes.
        if self.db.folded_pending() {
            self.write_folded_now();
        }
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
