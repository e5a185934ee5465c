//! Webhook endpoints, their delivery queue (one message per endpoint per event) and the
//! attempts made for each message. The `events` table is the outbox; fan-out turns each
//! undispatched event into messages in one transaction with marking it dispatched.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Event, Severity};

/// The events an endpoint gets when it names none.
pub const DEFAULT_WEBHOOK_EVENTS: [&str; 3] =
    ["incident.opened", "incident.escalated", "store.compromised"];

/// The `webhook.test` event (always delivered to the endpoint it was queued for).
pub const TEST_EVENT: &str = "webhook.test";

/// One event per hit, for endpoints that list it in `events` (never a default). Its
/// outbox rows are written with the hit only while some enabled endpoint of the hit's
/// tenant wants them ([`HitSubscribers`]), so the trap pays nothing otherwise.
pub const HIT_RECORDED: &str = "hit.recorded";

/// The payload of a `hit.recorded` outbox row (the worker joins the hit's evidence,
/// the canary without its secret, the store and the incident when rendering).
pub fn hit_event_payload(hit: &crate::Hit, incident: Uuid) -> serde_json::Value {
    serde_json::json!({
        "kind": "hit",
        "hit_id": hit.id,
        "incident_id": incident,
        "canary_id": hit.canary_id,
        "store_id": hit.store_id,
        "exchange": hit.exchange,
        "severity": hit.severity,
        "action_class": hit.action_class,
        "source_ip": hit.source_ip,
    })
}

/// The tenants with an enabled endpoint subscribed to [`HIT_RECORDED`], cached for the
/// trap's recorder so that its transaction never waits for them: an answer older than
/// the refresh interval (1 s) is still used while one background read replaces it
/// (stale-while-revalidate). Only with no answer at all (first use, or right after an
/// endpoint change through this process, which invalidates it) is the read done in the
/// hit's transaction. An endpoint created or enabled through another replica thus takes
/// effect within about the refresh interval.
#[derive(Debug)]
pub struct HitSubscribers {
    refresh: Duration,
    state: std::sync::RwLock<HitState>,
}

#[derive(Debug, Default)]
struct HitState {
    /// Bumped by every invalidation: a read started before one is not kept.
    generation: u64,
    answer: Option<(std::time::Instant, std::sync::Arc<Vec<Uuid>>)>,
    refreshing: bool,
}

/// What [`HitSubscribers::lookup`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum HitLookup {
    /// Use these tenants.
    Fresh(std::sync::Arc<Vec<Uuid>>),
    /// Use these tenants; with `Some(generation)` the caller must start the background
    /// read and report it with [`HitSubscribers::set`] (or
    /// [`HitSubscribers::refresh_failed`]).
    Stale {
        tenants: std::sync::Arc<Vec<Uuid>>,
        refresh: Option<u64>,
    },
    /// Nothing known: read now (in the transaction) and [`HitSubscribers::set`] it.
    Missing(u64),
}

impl Default for HitSubscribers {
    fn default() -> Self {
        HitSubscribers::with_refresh(Duration::from_secs(1))
    }
}

impl HitSubscribers {
    /// A cache whose answers are refreshed after `refresh`.
    pub fn with_refresh(refresh: Duration) -> Self {
        HitSubscribers {
            refresh,
            state: Default::default(),
        }
    }

    /// The answer to use now, and whether a refresh must start.
    pub fn lookup(&self) -> HitLookup {
        {
            let g = self.state.read().unwrap_or_else(|e| e.into_inner());
            match &g.answer {
                Some((at, t)) if at.elapsed() < self.refresh => return HitLookup::Fresh(t.clone()),
                Some((_, t)) if g.refreshing => {
                    return HitLookup::Stale {
                        tenants: t.clone(),
                        refresh: None,
                    }
                }
                None => return HitLookup::Missing(g.generation),
                Some(_) => {}
            }
        }
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        let generation = g.generation;
        match g.answer.clone() {
            Some((at, t)) if at.elapsed() < self.refresh => HitLookup::Fresh(t),
            Some((_, t)) => {
                let refresh = (!g.refreshing).then_some(generation);
                g.refreshing = true;
                HitLookup::Stale {
                    tenants: t,
                    refresh,
                }
            }
            None => HitLookup::Missing(generation),
        }
    }

    /// Stores the tenants read for `generation` (dropped if an invalidation came since)
    /// and returns them.
    pub fn set(&self, generation: u64, mut tenants: Vec<Uuid>) -> std::sync::Arc<Vec<Uuid>> {
        tenants.sort();
        tenants.dedup();
        let t = std::sync::Arc::new(tenants);
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        if g.generation == generation {
            g.answer = Some((std::time::Instant::now(), t.clone()));
        }
        g.refreshing = false;
        t
    }

    /// Resolves [`lookup`](Self::lookup) the way both backends use it: an answer in the
    /// cache comes back at once (when it is stale, `refresh` gets the generation and must
    /// start the background read, reporting it with [`refreshed`](Self::refreshed)); with
    /// none, `read_now` reads it (in the hit's transaction) and it is kept.
    pub async fn tenants<E, Fut>(
        &self,
        refresh: impl FnOnce(u64),
        read_now: impl FnOnce() -> Fut,
    ) -> std::result::Result<std::sync::Arc<Vec<Uuid>>, E>
    where
        Fut: std::future::Future<Output = std::result::Result<Vec<Uuid>, E>>,
    {
        match self.cached(refresh) {
            Ok(t) => Ok(t),
            Err(generation) => Ok(self.set(generation, read_now().await?)),
        }
    }

    /// [`tenants`](Self::tenants) with a blocking `read_now`, for a backend whose group
    /// commit runs on a thread of its own (SQLite).
    pub fn tenants_blocking<E>(
        &self,
        refresh: impl FnOnce(u64),
        read_now: impl FnOnce() -> std::result::Result<Vec<Uuid>, E>,
    ) -> std::result::Result<std::sync::Arc<Vec<Uuid>>, E> {
        match self.cached(refresh) {
            Ok(t) => Ok(t),
            Err(generation) => Ok(self.set(generation, read_now()?)),
        }
    }

    /// The cached part of [`tenants`](Self::tenants): the answer (a stale one once
    /// `refresh` has been started), or the generation to read and [`set`](Self::set) now.
    fn cached(
        &self,
        refresh: impl FnOnce(u64),
    ) -> std::result::Result<std::sync::Arc<Vec<Uuid>>, u64> {
        match self.lookup() {
            HitLookup::Fresh(t) => Ok(t),
            HitLookup::Stale {
                tenants,
                refresh: due,
            } => {
                if let Some(generation) = due {
                    refresh(generation);
                }
                Ok(tenants)
            }
            HitLookup::Missing(generation) => Err(generation),
        }
    }

    /// Reports the background read that [`tenants`](Self::tenants) asked for: kept when
    /// it succeeded; after a failure (returned, for the caller to log) the next lookup
    /// past the interval tries again.
    pub fn refreshed<E>(
        &self,
        generation: u64,
        read: std::result::Result<Vec<Uuid>, E>,
    ) -> std::result::Result<(), E> {
        match read {
            Ok(t) => {
                self.set(generation, t);
                Ok(())
            }
            Err(e) => {
                self.refresh_failed();
                Err(e)
            }
        }
    }

    /// The background read failed: the next lookup after the interval tries again.
    pub fn refresh_failed(&self) {
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .refreshing = false;
    }

    /// Forgets the answer (an endpoint was created, changed, enabled or deleted): the
    /// next hit reads it again, in its transaction.
    pub fn invalidate(&self) {
        let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
        g.generation += 1;
        g.answer = None;
    }
}

/// Message states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Out of attempts (or the endpoint answered 410); redeliverable by API.
    Dead,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Dead => "dead",
        }
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(MessageStatus::Pending),
            "delivered" => Ok(MessageStatus::Delivered),
            "dead" => Ok(MessageStatus::Dead),
            _ => Err(format!("unknown message status {s:?}")),
        }
    }
}

/// A registered receiver with its filters. The sealed secrets are never serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    /// `standard`, `cloudevents`, `slack`, `discord`, `teams`, `pagerduty`.
    pub format: String,
    /// Event types delivered; empty means [`DEFAULT_WEBHOOK_EVENTS`].
    pub events: Vec<String>,
    /// Only alerts at least this severe.
    pub min_severity: Option<Severity>,
    /// Only alerts about these stores (empty: all).
    pub store_ids: Vec<Uuid>,
    /// Only alerts about canaries of these exchanges (empty: all).
    pub exchanges: Vec<String>,
    /// Extra request headers (e.g. `Authorization` for the receiver).
    pub headers: BTreeMap<String, String>,
    /// PagerDuty routing key (never serialized; `has_routing_key` says if set).
    #[serde(skip)]
    #[schema(ignore)]
    pub routing_key: Option<String>,
    /// The current signing secret, sealed (`ks1.<version>...`).
    #[serde(skip)]
    #[schema(ignore)]
    pub secret_sealed: String,
    /// Version of the secret (1, then +1 per rotation).
    pub secret_version: i32,
    /// The secret before the last rotation, still signed with until `previous_expires_at`.
    #[serde(skip)]
    #[schema(ignore)]
    pub previous_secret_sealed: Option<String>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    /// Why it was disabled: `api`, `gone` (410), `failing` (failing for 5 days).
    pub disabled_reason: Option<String>,
    /// First failure since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookEndpoint {
    /// Whether `event` is one this endpoint wants (type, severity, store, exchange).
    /// `webhook.test` is never fanned out from the outbox; it is queued directly.
    pub fn matches(&self, event: &Event) -> bool {
        let wanted = if self.events.is_empty() {
            DEFAULT_WEBHOOK_EVENTS.contains(&event.event_type.as_str())
        } else {
            self.events.contains(&event.event_type)
        };
        if !wanted || event.event_type == TEST_EVENT || event.tenant_id != self.tenant_id {
            return false;
        }
        let p = &event.payload;
        if let Some(min) = self.min_severity {
            let sev = p
                .get("severity")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<Severity>().ok());
            if sev.is_none_or(|s| s < min) {
                return false;
            }
        }
        if !self.store_ids.is_empty() {
            let store = p
                .get("store_id")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<Uuid>().ok());
            if !store.is_some_and(|s| self.store_ids.contains(&s)) {
                return false;
            }
        }
        if !self.exchanges.is_empty() {
            let ex = p.get("exchange").and_then(|s| s.as_str());
            if !ex.is_some_and(|x| self.exchanges.iter().any(|e| e == x)) {
                return false;
            }
        }
        true
    }
}

/// A new endpoint, as the API validated it.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub format: String,
    pub events: Vec<String>,
    pub min_severity: Option<Severity>,
    pub store_ids: Vec<Uuid>,
    pub exchanges: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub routing_key: Option<String>,
    pub secret_sealed: String,
}

/// One alert for one endpoint. `webhook_id` is the `webhook-id` header, stable across
/// retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookMessage {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    /// The outbox event (none for `webhook.test`).
    pub event_id: Option<Uuid>,
    pub event_type: String,
    pub webhook_id: String,
    pub incident_id: Option<Uuid>,
    pub hit_id: Option<Uuid>,
    /// The event's payload.
    pub payload: serde_json::Value,
    /// The body as first rendered, reused by every retry.
    #[serde(skip)]
    #[schema(ignore)]
    pub body: Option<String>,
    pub status: MessageStatus,
    /// Attempts made so far (named so in JSON: a delivery view also lists the attempts).
    #[serde(rename = "attempt_count")]
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(skip)]
    #[schema(ignore)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message queued directly (`webhook.test`).
#[derive(Debug, Clone)]
pub struct NewWebhookMessage {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// One delivery attempt as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookAttempt {
    pub id: Uuid,
    pub message_id: Uuid,
    /// 1-based.
    pub attempt: i32,
    /// `success`, `failure`, `gone`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub duration_ms: i64,
    /// The first 20 kB of the response body.
    pub response_excerpt: Option<String>,
    pub response_truncated: bool,
    pub error: Option<String>,
    /// `blocked`, `timeout`, `connect`, `other`.
    pub error_kind: Option<String>,
    pub at: DateTime<Utc>,
}

/// What follows an attempt for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    Dead,
}

/// The worker's report of one attempt: stored with the message's next state, in one
/// transaction, only if the worker still holds the lease.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub message_id: Uuid,
    pub lease_owner: String,
    /// The rendered body, kept on the first attempt for the retries.
    pub body: Option<String>,
    pub attempt: WebhookAttempt,
    pub next: MessageNext,
    /// `true`: success resets the endpoint's failure clock, otherwise it starts it.
    pub success: bool,
    /// Disable the endpoint with this reason (`gone`, `failing`).
    pub disable_endpoint: Option<String>,
}

/// What one group commit does to each endpoint it touches, folded in batch order: one
/// update per endpoint then leaves it exactly as applying the attempts one by one would
/// (a success clears the failure clock, a failure starts it if it is not running, a
/// disable turns the endpoint off with the last reason given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointClocks {
    changes: std::collections::BTreeMap<Uuid, EndpointChange>,
}

/// One endpoint's share of a group commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointChange {
    /// A success was among the attempts: the clock restarts from `fail_at`.
    pub reset: bool,
    /// The first failure after the last success (or of the batch, without one).
    pub fail_at: Option<DateTime<Utc>>,
    /// Disable with this reason (the last one given).
    pub disable: Option<String>,
}

impl EndpointChange {
    /// The endpoint's `failing_since` after the batch, from the one before it.
    pub fn failing_since(&self, before: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        if self.reset {
            self.fail_at
        } else {
            before.or(self.fail_at)
        }
    }
}

impl EndpointClocks {
    /// Folds in the stored attempt `r` of a message of `endpoint`.
    pub fn apply(&mut self, endpoint: Uuid, r: &AttemptResult) {
        let c = self.changes.entry(endpoint).or_default();
        if r.success {
            c.reset = true;
            c.fail_at = None;
        } else if c.fail_at.is_none() {
            c.fail_at = Some(r.attempt.at);
        }
        if let Some(reason) = &r.disable_endpoint {
            c.disable = Some(reason.clone());
        }
    }

    /// Each touched endpoint's change, in endpoint id order (a stable lock order).
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, &EndpointChange)> {
        self.changes.iter().map(|(k, v)| (*k, v))
    }

    /// Column arrays for a bulk update: ids, resets, first failures, disable reasons.
    #[allow(clippy::type_complexity)]
    pub fn columns(
        &self,
    ) -> (
        Vec<Uuid>,
        Vec<bool>,
        Vec<Option<DateTime<Utc>>>,
        Vec<Option<String>>,
    ) {
        let n = self.changes.len();
        let (mut id, mut reset, mut fail, mut reason) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (k, c) in &self.changes {
            id.push(*k);
            reset.push(c.reset);
            fail.push(c.fail_at);
            reason.push(c.disable.clone());
        }
        (id, reset, fail, reason)
    }
}

/// What to claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub owner: String,
    pub now: DateTime<Utc>,
    /// How long the claim holds before another worker may take the message.
    pub lease: Duration,
    pub limit: u32,
    /// Most messages of one endpoint in one claim.
    pub per_endpoint: u32,
    /// Endpoints not to claim for (the worker's saturated ones).
    pub exclude_endpoints: Vec<Uuid>,
}

/// A claimed message with its endpoint.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub message: WebhookMessage,
    pub endpoint: WebhookEndpoint,
}

/// The `webhook-id` of a message: stable, derived from its row id.
pub fn webhook_id(message_id: Uuid) -> String {
    format!("msg_{}", message_id.simple())
}

/// A chrono duration from a std one, saturating at a day (leases are short).
pub fn lease_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1))
}

/// Reads a list column stored as JSON text.
pub fn json_list<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, crate::StoreError> {
    serde_json::from_str(s).map_err(|e| crate::StoreError::Corrupt(format!("webhook column: {e}")))
}

/// JSON text of a list or map column (SQLite stores them as text).
pub trait ToJsonText {
    fn to_json_text(&self) -> String;
}

impl<T: Serialize> ToJsonText for T {
    fn to_json_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_subscribers_refresh_in_the_background_and_respect_invalidation() {
        let c = HitSubscribers::with_refresh(Duration::ZERO);
        let HitLookup::Missing(g0) = c.lookup() else {
            panic!("nothing known at first")
        };
        let t = Uuid::now_v7();
        assert_eq!(*c.set(g0, vec![t, t]), vec![t]);
        // Refresh interval zero: always stale; one caller refreshes, the others wait.
        let HitLookup::Stale {
            tenants,
            refresh: Some(g1),
        } = c.lookup()
        else {
            panic!("stale, refresh now")
        };
        assert_eq!(*tenants, vec![t]);
        assert_eq!(
            c.lookup(),
            HitLookup::Stale {
                tenants: tenants.clone(),
                refresh: None
            },
            "one refresh at a time"
        );
        // An endpoint change lands while the background read runs: its older answer is
        // not kept, and the next lookup reads in the transaction.
        c.invalidate();
        c.set(g1, vec![]);
        let HitLookup::Missing(g2) = c.lookup() else {
            panic!("invalidated")
        };
        assert_ne!(g1, g2);
        c.set(g2, vec![]);
        let HitLookup::Stale {
            tenants,
            refresh: Some(_),
        } = c.lookup()
        else {
            panic!("refresh after the new answer")
        };
        assert!(tenants.is_empty());
        c.refresh_failed();
        assert!(matches!(
            c.lookup(),
            HitLookup::Stale {
                refresh: Some(_),
                ..
            }
        ));
        // With a long interval the answer is fresh.
        let long = HitSubscribers::default();
        let HitLookup::Missing(g) = long.lookup() else {
            panic!()
        };
        long.set(g, vec![t]);
        assert_eq!(
            long.lookup(),
            HitLookup::Fresh(std::sync::Arc::new(vec![t]))
        );
    }
}
