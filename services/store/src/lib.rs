//! keytrap's storage contract: one [`Database`] trait with its models and [`StoreError`],
//! implemented by `keytrap-store-sqlite` (embedded default) and `keytrap-store-postgres`
//! (production). The backend is chosen once at start from the database URL.
//!
//! Every mutation that an operator would want to account for takes a [`NewAudit`] and
//! writes it in the same transaction, so there is no change without its audit line.
//!
//! With the `testsuite` feature, [`conformance`] holds the behaviour tests that every
//! backend runs on itself (see [`conformance_suite!`]).

pub mod models;
pub mod trap;
pub mod webhooks;

#[cfg(feature = "testsuite")]
pub mod conformance;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use models::*;
pub use trap::*;
use uuid::Uuid;
pub use webhooks::*;

/// Errors a backend reports. Handlers map `NotFound`/`Conflict` to 4xx; the rest is a 5xx
/// that is logged with context and answered without internals.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated; the string names what (e.g. "store name").
    #[error("{0} already exists")]
    Conflict(String),
    /// A stored value the code cannot read (e.g. an unknown exchange id).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A concurrent transaction won (deadlock, serialization failure, lock timeout, a
    /// locked database file): nothing was changed, and the same call may succeed if
    /// retried.
    #[error("database busy: {0}")]
    Busy(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A database driver's error: `Busy` when the backend's `busy` reads it as a lost
    /// race with a concurrent transaction (retryable), `Backend` otherwise.
    pub fn from_database(
        e: impl std::error::Error + Send + Sync + 'static,
        busy: impl FnOnce(&(dyn std::error::Error + 'static)) -> bool,
    ) -> StoreError {
        if busy(&e) {
            StoreError::Busy(Box::new(e))
        } else {
            StoreError::Backend(Box::new(e))
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The trap's group commit, run synchronously on the recorder's own thread (see
/// [`Database::trap_writer`]). Same contract as [`Database::record_trap_events`].
pub trait TrapWriter: Send {
    /// Records `batch` in one transaction, all or nothing; blocks until it is durable.
    /// `queued()`: requests wait for the next batch now. While they do, a backend may
    /// leave work that no answer depends on to a later batch (SQLite: folded incident
    /// counters); a batch with nothing queued behind it when it commits leaves nothing.
    fn record(&mut self, batch: &[TrapEvent], queued: &dyn Fn() -> bool) -> Result<()>;
    /// After a batch's requests have their answers: upkeep no request waits for.
    /// `queued`: requests are waiting for the next batch already (upkeep that can wait
    /// should).
    fn maintain(&mut self, _queued: bool) {}
    /// Nothing is queued: one step of upkeep that waits for a quiet moment. `true` while
    /// more is due; the recorder calls it again only while nothing arrives, so a request
    /// that comes meanwhile waits for one step at most, never for the whole of the upkeep.
    fn idle_step(&mut self) -> bool {
        false
    }
    /// Nothing more is queued: release whatever keeps other writers waiting.
    fn idle(&mut self) {}
}

/// The storage contract. Object-safe (`Arc<dyn Database>`): one copy of every handler is
/// compiled instead of one per backend, and a boxed future per call costs nothing next to
/// an SQL round trip.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    // ---- meta: installation-wide key/value facts (e.g. the master key check value)

    async fn get_meta(&self, key: &str) -> Result<Option<String>>;
    /// Inserts `value` unless `key` is set; returns the value now stored.
    async fn init_meta(&self, key: &str, value: &str) -> Result<String>;

    // ---- tenants and tokens

    async fn create_tenant(&self, name: &str, is_root: bool, audit: NewAudit) -> Result<Tenant>;
    async fn root_tenant(&self) -> Result<Option<Tenant>>;
    async fn get_tenant(&self, id: Uuid) -> Result<Option<Tenant>>;
    async fn create_token(&self, token: NewToken, audit: NewAudit) -> Result<ApiToken>;
    /// The unrevoked token with this digest, in any tenant.
    async fn token_by_digest(&self, digest: &[u8; 32]) -> Result<Option<ApiToken>>;
    async fn list_tokens(&self, tenant: Uuid) -> Result<Vec<ApiToken>>;
    async fn revoke_token(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<ApiToken>;

    // ---- stores

    /// `Conflict("store name")` when the tenant already has a store of that name.
    async fn create_store(&self, store: NewStore, audit: NewAudit) -> Result<Store>;
    async fn get_store(&self, tenant: Uuid, id: Uuid) -> Result<Option<Store>>;
    async fn get_store_by_name(&self, tenant: Uuid, name: &str) -> Result<Option<Store>>;
    async fn list_stores(&self, tenant: Uuid, page: Page) -> Result<Vec<Store>>;

    // ---- canaries

    /// Inserts all or none. `Conflict("canary key")` if a lookup digest already exists.
    async fn insert_canaries(&self, canaries: &[NewCanary], audit: NewAudit) -> Result<()>;
    async fn get_canary(&self, tenant: Uuid, id: Uuid) -> Result<Option<Canary>>;
    async fn list_canaries(&self, tenant: Uuid, filter: &CanaryFilter) -> Result<Vec<Canary>>;
    /// Disables an active canary (idempotent); `NotFound` if it is not the tenant's.
    async fn disable_canary(
        &self,
        tenant: Uuid,
        id: Uuid,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<Canary>;
    /// The canary a presented API key belongs to, across tenants (the trap's lookup).
    async fn canary_by_digest(&self, digest: &[u8; 32]) -> Result<Option<Canary>>;

    // ---- audit

    /// For reads worth recording (credential reveals); mutations carry theirs.
    async fn append_audit(&self, audit: NewAudit) -> Result<()>;
    async fn list_audit(&self, tenant: Uuid, page: Page) -> Result<Vec<AuditEntry>>;

    // ---- trap

    /// The group commit: every hit (with its incident changes and events) and every
    /// unknown-key sighting of the batch, in one transaction. All or nothing.
    async fn record_trap_events(&self, batch: &[TrapEvent]) -> Result<()>;
    /// A synchronous writer for the same group commit, for the trap's recorder to run on
    /// a thread of its own. SQLite's (sqlx's driver hands every statement to another
    /// thread) runs a batch without a hop between threads per statement; PostgreSQL's runs
    /// it on a runtime and a connection of its own, so no round trip's answer waits behind
    /// the request tasks. `None` (the default): the recorder awaits
    /// [`record_trap_events`](Self::record_trap_events) on the runtime.
    fn trap_writer(&self) -> Option<Box<dyn TrapWriter>> {
        None
    }
    /// Called once by a process that runs the trap, before it serves anything: settles
    /// what a trap writer of an earlier process left unfinished, so that no listing
    /// served afterwards shows it (SQLite: the right to fold counts is taken and counts
    /// folded by a process that stopped are recounted; docs/storage.md). The default
    /// does nothing.
    async fn prepare_trap(&self) -> Result<()> {
        Ok(())
    }
    async fn list_hits(&self, tenant: Uuid, filter: &HitFilter) -> Result<Vec<Hit>>;
    async fn get_incident(&self, tenant: Uuid, id: Uuid) -> Result<Option<Incident>>;
    async fn list_incidents(&self, tenant: Uuid, filter: &IncidentFilter) -> Result<Vec<Incident>>;
    /// Acknowledge or resolve. A resolved incident stays resolved; the next hit opens a
    /// new one.
    async fn set_incident_status(
        &self,
        tenant: Uuid,
        id: Uuid,
        status: IncidentStatus,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<Incident>;
    async fn list_events(&self, tenant: Uuid, page: Page) -> Result<Vec<Event>>;
    async fn list_unknown_sources(&self, limit: u32) -> Result<Vec<UnknownSource>>;

    /// Orders a canary placed at the trap.
    async fn put_order(&self, order: &TrapOrder) -> Result<()>;
    async fn get_order(&self, canary: Uuid, order_id: &str) -> Result<Option<TrapOrder>>;
    async fn list_orders(&self, canary: Uuid, open_only: bool) -> Result<Vec<TrapOrder>>;
    /// Marks an open order cancelled and returns it; `None` if the canary has no such
    /// order (by order id or client order id).
    async fn cancel_order(&self, canary: Uuid, order_id: &str) -> Result<Option<TrapOrder>>;
    /// For exchanges whose nonce must strictly increase per key (Kraken): stores `nonce`
    /// as the canary's last one and returns `true` if it is larger than the last one
    /// seen; `false` (nothing changed) for a replayed or stale nonce. Atomic, so
    /// concurrent trap replicas agree.
    async fn advance_nonce(&self, canary: Uuid, nonce: u64) -> Result<bool>;

    // ---- placements (issue 5: planting) -------------------------------------------
    // Kept as one block at the end of the trait to ease merging with other branches.

    /// Records placements, all or none, with one audit line. `NotFound` when a canary
    /// is not the tenant's; `Conflict("placement")` when a canary is already placed.
    async fn insert_placements(
        &self,
        placements: &[NewPlacement],
        audit: NewAudit,
    ) -> Result<Vec<Placement>>;
    async fn list_placements(
        &self,
        tenant: Uuid,
        filter: &PlacementFilter,
    ) -> Result<Vec<Placement>>;
    /// Deletes the tenant's placements with these ids (e.g. a plant whose target
    /// transaction failed after recording); returns how many were deleted.
    async fn delete_placements(&self, tenant: Uuid, ids: &[Uuid], audit: NewAudit) -> Result<u64>;
    /// Sets (or clears) a canary's expiry, e.g. the grace period of a rotated
    /// generation. `NotFound` if it is not the tenant's.
    async fn set_canary_expiry(
        &self,
        tenant: Uuid,
        id: Uuid,
        expires_at: Option<DateTime<Utc>>,
        audit: NewAudit,
    ) -> Result<Canary>;
    // ---- end placements
    // ==== webhooks (alerts) — begin block. Endpoints, the delivery queue, attempts.

    /// Registers an endpoint (enabled, secret version 1).
    async fn create_webhook_endpoint(
        &self,
        endpoint: NewWebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint>;
    async fn get_webhook_endpoint(&self, tenant: Uuid, id: Uuid)
        -> Result<Option<WebhookEndpoint>>;
    async fn list_webhook_endpoints(&self, tenant: Uuid) -> Result<Vec<WebhookEndpoint>>;
    /// Stores the configuration fields of `endpoint` (url, format, filters, headers,
    /// routing key); `NotFound` if it is not the tenant's.
    async fn update_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpoint,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint>;
    /// Enables (clearing the reason and the failure clock) or disables with a reason.
    async fn set_webhook_endpoint_enabled(
        &self,
        tenant: Uuid,
        id: Uuid,
        enabled: bool,
        reason: Option<&str>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint>;
    /// Makes `sealed` the current secret (version + 1); the old one stays valid for
    /// signing until `previous_expires_at`.
    async fn rotate_webhook_secret(
        &self,
        tenant: Uuid,
        id: Uuid,
        sealed: &str,
        previous_expires_at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookEndpoint>;
    /// Deletes the endpoint with its messages and attempts.
    async fn delete_webhook_endpoint(&self, tenant: Uuid, id: Uuid, audit: NewAudit) -> Result<()>;
    /// Queues a message directly (`webhook.test`); the endpoint must be the tenant's.
    async fn enqueue_webhook_message(
        &self,
        message: NewWebhookMessage,
        audit: NewAudit,
    ) -> Result<WebhookMessage>;
    async fn get_webhook_message(&self, tenant: Uuid, id: Uuid) -> Result<Option<WebhookMessage>>;
    /// An endpoint's messages, oldest first.
    async fn list_webhook_messages(
        &self,
        tenant: Uuid,
        endpoint: Uuid,
        page: Page,
    ) -> Result<Vec<WebhookMessage>>;
    /// The attempts of these messages (of the tenant), by message then attempt number.
    async fn list_webhook_attempts(
        &self,
        tenant: Uuid,
        messages: &[Uuid],
    ) -> Result<Vec<WebhookAttempt>>;
    /// Puts a dead message back in the queue for a full new schedule; `Conflict` if it is
    /// not dead.
    async fn retry_webhook_message(
        &self,
        tenant: Uuid,
        id: Uuid,
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> Result<WebhookMessage>;
    /// Fan-out: up to `limit` undispatched events become one message per matching
    /// enabled endpoint, in one transaction that also marks them dispatched. Returns the
    /// number of events dispatched (0: nothing left).
    async fn dispatch_webhook_events(&self, limit: u32) -> Result<u32>;
    /// Leases due pending messages of enabled endpoints (never one leased by a live
    /// claim); an expired lease is claimable again.
    async fn claim_webhook_messages(&self, req: &ClaimRequest) -> Result<Vec<ClaimedMessage>>;
    /// Stores an attempt and the message's next state; `false` (nothing stored) if the
    /// lease is no longer `lease_owner`'s.
    async fn complete_webhook_attempt(&self, result: &AttemptResult) -> Result<bool> {
        Ok(self
            .complete_webhook_attempts(std::slice::from_ref(result))
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }
    /// [`complete_webhook_attempt`](Self::complete_webhook_attempt) for several attempts in
    /// one transaction (one durable commit for all: the worker's group commit).
    async fn complete_webhook_attempts(&self, results: &[AttemptResult]) -> Result<Vec<bool>>;
    /// A hit by id (for rendering alerts).
    async fn get_hit(&self, tenant: Uuid, id: Uuid) -> Result<Option<Hit>>;
    /// Gives back, with no attempt recorded, the leases `owner` still holds on these
    /// pending messages (a worker shutting down, for the ones it claimed but never
    /// started): they are claimable again at once instead of after the lease. Returns how
    /// many were released.
    async fn release_webhook_leases(&self, owner: &str, ids: &[Uuid]) -> Result<u64>;

    // ==== webhooks (alerts) — end block.
}

#[cfg(test)]
mod store_error_tests {
    use super::StoreError;

    #[test]
    fn from_database_is_busy_only_when_the_backend_says_so() {
        let io = || std::io::Error::other("locked");
        assert!(matches!(
            StoreError::from_database(io(), |e| e.downcast_ref::<std::io::Error>().is_some()),
            StoreError::Busy(_)
        ));
        assert!(matches!(
            StoreError::from_database(io(), |_| false),
            StoreError::Backend(_)
        ));
    }
}
