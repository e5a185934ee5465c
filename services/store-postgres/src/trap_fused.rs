//! The trap's group commit as one statement, for the batches that need nothing else.
//!
//! The transaction of [`PgDatabase::trap_record_on`] takes six round trips for a batch of
//! hits (`BEGIN`, the canary incidents, the store incidents, the hits, `pg_notify`,
//! `COMMIT`) and five for a batch of unknown keys. On two busy cores each round trip
//! waits for PostgreSQL's backend and then for the writer's thread to be scheduled, and
//! the single writer spent most of a commit in those waits (docs/benchmarks.md, session
//! 9). Most batches under load, an attack going on or a flood of unknown keys, only
//! count: every hit's canary and store already have an open incident at or above the
//! hit's severity, no tenant subscribes to `hit.recorded`, and every unknown-key source
//! has used up its first sightings. Such a batch is one statement here (data-modifying
//! `WITH` queries over arrays, so its text never changes and stays prepared), committed
//! on its own: one round trip.
//!
//! The statement checks that it counted every group and stored every hit, each joined to
//! its canary in its store (what the foreign keys of `hits` checked row by row before
//! migration 0006); if not (an incident must open or escalate, a concurrent replica
//! resolved one, or a hit names no stored canary), it fails on purpose with a division by
//! zero, nothing of it is kept, and the batch goes through the transaction as before.
//! Either way the batch is all or nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use keytrap_core::Exchange;
use keytrap_store::*;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{backend, PgDatabase};

/// Most sources remembered as full; beyond it, more sources just take the transaction.
const FULL_SOURCES_MAX: usize = 65_536;

/// SQLSTATE of the statement's own check failing (`division_by_zero`).
const NOT_ONLY_COUNTS: &str = "22012";

/// Most canaries and stores whose incident severity is remembered; past it, the memory
/// starts over (the statement is then tried again only after each one's next commit).
const RANKS_MAX: usize = 1 << 20;

/// The one-statement path's state, per [`PgDatabase`] (and its clones).
#[derive(Debug, Default)]
pub(crate) struct Fused {
    full_sources: FullSources,
    /// For each canary and store whose hits this process committed: the severity rank
    /// its open incident had at least then. It only decides whether to try the statement
    /// (the statement's own check decides whether it may count), so a canary's first
    /// hit, or an escalation, goes straight to the transaction instead of first spending
    /// a round trip on a statement bound to refuse: the first use of a canary costs no
    /// more than it did before this path existed.
    ranks: Mutex<HashMap<Uuid, i64>>,
    /// Batches committed by the one statement.
    commits: AtomicU64,
    /// Batches the statement refused (then committed by the transaction).
    refusals: AtomicU64,
}

impl Fused {
    fn ranks(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i64>> {
        self.ranks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every group's incident is known open at or above the group's severity.
    fn may_count(&self, groups: &[&IncidentGroup]) -> bool {
        let ranks = self.ranks();
        groups
            .iter()
            .all(|g| ranks.get(&g.key).is_some_and(|r| *r >= g.max_rank))
    }

    fn learn(&self, groups: &[&IncidentGroup]) {
        let mut ranks = self.ranks();
        if ranks.len() >= RANKS_MAX {
            ranks.clear();
        }
        for g in groups {
            let r = ranks.entry(g.key).or_insert(g.max_rank);
            *r = (*r).max(g.max_rank);
        }
    }

    fn forget(&self, groups: &[&IncidentGroup]) {
        let mut ranks = self.ranks();
        for g in groups {
            ranks.remove(&g.key);
        }
    }
}

/// A batch's canary groups, then its store groups.
fn groups_of(hits: &[&Hit]) -> (Vec<IncidentGroup>, Vec<IncidentGroup>) {
    (
        incident_groups(hits, |h| h.canary_id, None),
        incident_groups(hits, |h| h.store_id, None),
    )
}

/// Unknown-key sources whose first sightings are all taken (`distinct_keys` reached
/// [`UNKNOWN_KEYS_PER_SOURCE`]). Nothing deletes an `unknown_sources` row or lowers its
/// `distinct_keys`, so a source seen full stays full; only such sources can be counted
/// without looking for new keys.
#[derive(Debug, Default)]
struct FullSources(Mutex<HashMap<Exchange, HashSet<String>>>);

impl FullSources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Exchange, HashSet<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, exchange: Exchange, source: &str) -> bool {
        self.lock()
            .get(&exchange)
            .is_some_and(|s| s.contains(source))
    }

    fn insert(&self, exchange: Exchange, source: &str) {
        let mut m = self.lock();
        if m.values().map(HashSet::len).sum::<usize>() < FULL_SOURCES_MAX {
            m.entry(exchange).or_default().insert(source.to_string());
        }
    }
}

/// The whole batch: unknown-key counters, canary and store incident counts, hit rows;
/// each incident update names its keys as an index condition too (`= ANY`), so even a
/// generic plan made while `incidents` was small reads only the batch's incidents, never
/// every open one (docs/storage.md);
/// then the check (the last `SELECT`), which divides by zero unless every group was
/// counted and every hit stored. It sends the workers' wake-up (`pg_notify`) although it
/// queues nothing for them, as the transaction does for every batch: which of the two a
/// batch takes differs between unknown keys and canaries (an unknown key takes the
/// transaction while its source has first sightings left, a canary on an open incident
/// takes this statement), and a wake-up after one kind only made the alert worker run
/// after that kind only. Without it here, unknown keys answered 0.01-0.05 ms later than
/// canaries on an idle trap, enough for the timing test's KS check to fail
/// (docs/trap.md).
const FUSED: &str = "
WITH u AS (
    INSERT INTO unknown_sources (exchange, source, requests, distinct_keys, first_seen, last_seen)
    SELECT x.exchange, x.source, x.requests, 0, x.first_seen, x.last_seen
    FROM unnest($1::text[], $2::text[], $3::int8[], $4::timestamptz[], $5::timestamptz[])
        AS x(exchange, source, requests, first_seen, last_seen)
    ON CONFLICT (exchange, source) DO UPDATE SET requests = unknown_sources.requests + excluded.requests,
        last_seen = GREATEST(unknown_sources.last_seen, excluded.last_seen)
    RETURNING 1
), c AS (
    UPDATE incidents SET hit_count = incidents.hit_count + v.hits,
        last_seen = GREATEST(incidents.last_seen, v.last_seen), last_hit_id = v.last_hit
    FROM unnest($6::uuid[], $7::int8[], $8::timestamptz[], $9::uuid[], $10::int8[])
        AS v(key, hits, last_seen, last_hit, max_rank)
    WHERE incidents.kind = 'canary' AND incidents.canary_id = ANY($6) AND incidents.canary_id = v.key
      AND incidents.status <> 'resolved'
      AND (CASE incidents.severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= v.max_rank
    RETURNING incidents.canary_id, incidents.id
), s AS (
    UPDATE incidents SET hit_count = incidents.hit_count + v.hits,
        last_seen = GREATEST(incidents.last_seen, v.last_seen), last_hit_id = v.last_hit
    FROM unnest($11::uuid[], $12::int8[], $13::timestamptz[], $14::uuid[], $15::int8[])
        AS v(key, hits, last_seen, last_hit, max_rank)
    WHERE incidents.kind = 'store' AND incidents.store_id = ANY($11) AND incidents.store_id = v.key
      AND incidents.status <> 'resolved'
      AND (CASE incidents.severity WHEN 'low' THEN 0 WHEN 'high' THEN 1 ELSE 2 END) >= v.max_rank
    RETURNING 1
), h AS (
    INSERT INTO hits (id, tenant_id, canary_id, store_id, incident_id, exchange, method, path, query,
        body_excerpt, source_ip, forwarded_for, user_agent, client_fingerprint, signature_state,
        action_class, action_params, severity, received_at)
    SELECT v.id, v.tenant_id, v.canary_id, v.store_id, c.id, v.exchange, v.method, v.path, v.query,
        v.body_excerpt, v.source_ip, v.forwarded_for, v.user_agent, v.client_fingerprint,
        v.signature_state, v.action_class, v.action_params::jsonb, v.severity, v.received_at
    FROM unnest($16::uuid[], $17::uuid[], $18::uuid[], $19::uuid[], $20::text[], $21::text[],
            $22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[],
            $28::text[], $29::text[], $30::text[], $31::text[], $32::text[], $33::timestamptz[])
        AS v(id, tenant_id, canary_id, store_id, exchange, method, path, query, body_excerpt,
             source_ip, forwarded_for, user_agent, client_fingerprint, signature_state,
             action_class, action_params, severity, received_at)
    JOIN c ON c.canary_id = v.canary_id
    JOIN canaries k ON k.id = v.canary_id AND k.store_id = v.store_id
    RETURNING 1
)
SELECT pg_notify($37, ''), 1 / ((SELECT count(*) FROM c) = $34 AND (SELECT count(*) FROM s) = $35
    AND (SELECT count(*) FROM h) = $36)::int";

/// One incident kind's groups as the statement's columns.
struct Groups {
    keys: Vec<Uuid>,
    hits: Vec<i64>,
    last_seen: Vec<DateTime<Utc>>,
    last_hit: Vec<Uuid>,
    max_rank: Vec<i64>,
}

impl Groups {
    fn of(groups: &[IncidentGroup]) -> Groups {
        Groups {
            keys: groups.iter().map(|g| g.key).collect(),
            hits: groups.iter().map(|g| g.hits).collect(),
            last_seen: groups.iter().map(|g| g.last_seen).collect(),
            last_hit: groups.iter().map(|g| g.last_hit).collect(),
            max_rank: groups.iter().map(|g| g.max_rank).collect(),
        }
    }
}

impl PgDatabase {
    /// Remembers that `exchange`/`source` has no first sightings left (after a commit
    /// that saw it so).
    pub(crate) fn source_full(&self, exchange: Exchange, source: &str) {
        self.fused.full_sources.insert(exchange, source);
    }

    /// Trap batches committed by the one statement since this handle was made (the
    /// rest went through the transaction).
    pub fn one_statement_commits(&self) -> u64 {
        self.fused.commits.load(Ordering::Relaxed)
    }

    /// Trap batches the one statement was tried for and refused.
    pub fn one_statement_refusals(&self) -> u64 {
        self.fused.refusals.load(Ordering::Relaxed)
    }

    /// Remembers the severities the transaction left `hits`' incidents at (at least).
    pub(crate) fn hits_committed(&self, hits: &[&Hit]) {
        let (canary, store) = groups_of(hits);
        self.fused
            .learn(&canary.iter().chain(&store).collect::<Vec<_>>());
    }

    /// Records `batch` with the one statement when the batch only counts: `Ok(true)` when
    /// it is committed, `Ok(false)` when it needs the transaction (nothing of it kept).
    pub(crate) async fn trap_record_fused(
        &self,
        c: &mut PgConnection,
        batch: &[TrapEvent],
    ) -> Result<bool> {
        let unknown = unknown_groups(batch);
        if !unknown
            .iter()
            .all(|g| self.fused.full_sources.contains(g.exchange, g.source))
        {
            return Ok(false);
        }
        let hits = batch_hits(batch);
        let (canary, store) = groups_of(&hits);
        let groups: Vec<&IncidentGroup> = canary.iter().chain(&store).collect();
        if !self.fused.may_count(&groups) {
            return Ok(false);
        }
        if !hits.is_empty() {
            let tenants = self.hit_event_tenants(c).await?;
            if hits
                .iter()
                .any(|h| tenants.binary_search(&h.tenant_id).is_ok())
            {
                return Ok(false);
            }
        }
        let (cg, sg) = (Groups::of(&canary), Groups::of(&store));
        let col = |f: fn(&Hit) -> Option<&str>| hits.iter().map(|h| f(h)).collect::<Vec<_>>();
        let text = |f: fn(&Hit) -> &str| hits.iter().map(|h| f(h)).collect::<Vec<_>>();
        let uuid = |f: fn(&Hit) -> Uuid| hits.iter().map(|h| f(h)).collect::<Vec<_>>();
        let params: Vec<String> = hits.iter().map(|h| h.action_params.to_string()).collect();
        let done = sqlx::query(FUSED)
            .bind(
                unknown
                    .iter()
                    .map(|g| g.exchange.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(unknown.iter().map(|g| g.source).collect::<Vec<_>>())
            .bind(unknown.iter().map(|g| g.requests).collect::<Vec<_>>())
            .bind(unknown.iter().map(|g| g.first_at).collect::<Vec<_>>())
            .bind(unknown.iter().map(|g| g.last_at).collect::<Vec<_>>())
            .bind(&cg.keys)
            .bind(&cg.hits)
            .bind(&cg.last_seen)
            .bind(&cg.last_hit)
            .bind(&cg.max_rank)
            .bind(&sg.keys)
            .bind(&sg.hits)
            .bind(&sg.last_seen)
            .bind(&sg.last_hit)
            .bind(&sg.max_rank)
            .bind(uuid(|h| h.id))
            .bind(uuid(|h| h.tenant_id))
            .bind(uuid(|h| h.canary_id))
            .bind(uuid(|h| h.store_id))
            .bind(text(|h| h.exchange.as_str()))
            .bind(text(|h| &h.method))
            .bind(text(|h| &h.path))
            .bind(col(|h| h.query.as_deref()))
            .bind(col(|h| h.body_excerpt.as_deref()))
            .bind(text(|h| &h.source_ip))
            .bind(col(|h| h.forwarded_for.as_deref()))
            .bind(col(|h| h.user_agent.as_deref()))
            .bind(col(|h| h.client_fingerprint.as_deref()))
            .bind(text(|h| h.signature_state.as_str()))
            .bind(text(|h| &h.action_class))
            .bind(&params)
            .bind(text(|h| h.severity.as_str()))
            .bind(hits.iter().map(|h| h.received_at).collect::<Vec<_>>())
            .bind(canary.len() as i64)
            .bind(store.len() as i64)
            .bind(hits.len() as i64)
            .bind(crate::webhooks::WAKE_CHANNEL)
            .execute(&mut *c)
            .await;
        match done {
            Ok(_) => {
                self.fused.commits.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(NOT_ONLY_COUNTS) => {
                // An incident was resolved since (through the API, or by another
                // replica's view of it): the transaction takes the batch, and what it
                // commits is remembered anew.
                self.fused.refusals.fetch_add(1, Ordering::Relaxed);
                self.fused.forget(&groups);
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }
}
