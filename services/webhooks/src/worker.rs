//! The alert worker: turns outbox events into messages (fan-out), claims due messages
//! with a lease, delivers each with its endpoint's own concurrency limit, records the
//! attempt and schedules what follows.
//!
//! One loop does fan-out and claims; every delivery runs in its own task behind its
//! endpoint's semaphore, so a slow or dead endpoint only ever holds its own slots. The
//! loop sleeps until woken ([`Worker::waker`]: the trap's recorder after a commit, a
//! PostgreSQL `NOTIFY`, a finished delivery), the earliest retry it scheduled, or the
//! poll interval, whichever comes first.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keytrap_store::{
    AttemptResult, ClaimRequest, ClaimedMessage, Database, MessageNext, WebhookAttempt,
    WebhookEndpoint, WebhookMessage,
};
use tokio::sync::{mpsc, Notify, Semaphore};
use url::Url;
use uuid::Uuid;

use crate::deliver::{AttemptRecord, CustomHeaders, DeliveryRequest};
use crate::format::{render, Alert, EventType, Format, RenderOptions};
use crate::retry::{self, Next, Outcome, Schedule};
use crate::sign::{Secret, SecretCipher};
use crate::DeliveryClient;

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name; unique per process (a restarted worker is a new owner).
    pub owner: String,
    /// Longest sleep without a wake-up (the fallback when a notification is lost).
    pub poll: Duration,
    /// Most messages claimed at once.
    pub batch: u32,
    /// Concurrent deliveries per endpoint.
    pub per_endpoint: usize,
    pub schedule: Schedule,
    /// Disable an endpoint failing this long without a success (5 days).
    pub disable_after: Duration,
    /// CloudEvents `source` (e.g. the instance URL).
    pub source: String,
    /// At shutdown, how long in-flight deliveries may take to finish and be stored
    /// (`None`: the client timeout plus 5 s).
    pub shutdown_grace: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            owner: format!("worker-{}", Uuid::new_v4().simple()),
            poll: Duration::from_secs(1),
            batch: 256,
            per_endpoint: 16,
            schedule: Schedule::default(),
            disable_after: retry::DISABLE_AFTER,
            source: "keytrap".into(),
            shutdown_grace: None,
        }
    }
}

/// The worker. Build once, [`run`](Worker::run) in a task.
pub struct Worker {
    inner: Arc<Inner>,
    done_rx: mpsc::Receiver<AttemptResult>,
}

/// Most attempts stored in one transaction.
const MAX_COMMIT: usize = 256;

struct Inner {
    db: Arc<dyn Database>,
    client: DeliveryClient,
    cipher: Arc<SecretCipher>,
    cfg: WorkerConfig,
    wake: Arc<Notify>,
    /// Deliveries in flight per endpoint, with the endpoint's semaphore.
    endpoints: Mutex<HashMap<Uuid, EndpointSlots>>,
    /// The earliest retry this worker scheduled that is still to come.
    next_due: Mutex<Option<DateTime<Utc>>>,
    /// Finished attempts, stored by one task in group commits (one durable commit per
    /// batch instead of per attempt).
    done_tx: mpsc::Sender<AttemptResult>,
    /// Set at shutdown: claimed messages not yet started are not started any more.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Delivery tasks alive (waiting for a slot or delivering).
    active: Arc<TaskCount>,
    /// Of those, the ones still waiting for their endpoint's slot.
    waiting: Arc<TaskCount>,
    /// Messages claimed but never started because of the shutdown (their leases are
    /// given back).
    unstarted: Mutex<Vec<Uuid>>,
    /// Rendering rows per event, shared by its messages ([`Inner::rows`]).
    rows: Mutex<HashMap<RowsKey, (std::time::Instant, RowsCell)>>,
}

struct EndpointSlots {
    in_flight: usize,
    permits: Arc<Semaphore>,
}

/// A number of tasks in some state, and a way to wait until there are none.
#[derive(Default)]
struct TaskCount {
    n: std::sync::atomic::AtomicUsize,
    zero: Notify,
}

/// Counts one task until dropped.
struct Counted(Arc<TaskCount>);

impl TaskCount {
    fn enter(self: &Arc<Self>) -> Counted {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Counted(self.clone())
    }

    fn get(&self) -> usize {
        self.n.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn none_left(&self) {
        loop {
            let zero = self.zero.notified();
            if self.get() == 0 {
                return;
            }
            zero.await;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Worker {
    pub fn new(
        db: Arc<dyn Database>,
        client: DeliveryClient,
        cipher: Arc<SecretCipher>,
        cfg: WorkerConfig,
    ) -> Worker {
        let (done_tx, done_rx) = mpsc::channel(4 * MAX_COMMIT);
        Worker {
            inner: Arc::new(Inner {
                db,
                client,
                cipher,
                cfg,
                wake: Arc::new(Notify::new()),
                endpoints: Mutex::new(HashMap::new()),
                next_due: Mutex::new(None),
                done_tx,
                stopping: tokio::sync::watch::Sender::new(false),
                active: Default::default(),
                waiting: Default::default(),
                unstarted: Mutex::new(Vec::new()),
                rows: Mutex::new(HashMap::new()),
            }),
            done_rx,
        }
    }

    /// Notify this to make the worker look for work now (e.g. after a hit committed).
    pub fn waker(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Runs until `stop` resolves, then shuts down gracefully: no more claims; messages
    /// claimed but not started get their leases back at once (another worker, or this
    /// one after a restart, takes them without waiting for the lease to run out);
    /// deliveries in flight finish, bounded by the client timeout plus 5 s
    /// ([`WorkerConfig::shutdown_grace`]), and their attempts are stored. A delivery
    /// still running after that keeps its lease and is retried when it expires.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let inner = self.inner;
        let (flush_tx, flush_rx) = tokio::sync::watch::channel(false);
        let store = tokio::spawn(inner.clone().store_attempts(self.done_rx, flush_rx));
        tracing::info!(owner = %inner.cfg.owner, "alert worker started");
        // `stop` is checked between rounds too (a round is never cut short: a claim it
        // made must reach its delivery tasks).
        loop {
            if is_ready(stop.as_mut()) {
                break;
            }
            let full = inner.clone().round().await;
            if full {
                // A full claim: there is probably more, go again at once.
                tokio::task::yield_now().await;
                continue;
            }
            let wait = inner.wait_time();
            tokio::select! {
                _ = &mut stop => break,
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        inner.shutdown(store, flush_tx).await;
    }
}

impl Inner {
    /// The graceful part of [`Worker::run`], after the last claim.
    async fn shutdown(
        self: &Arc<Self>,
        store: tokio::task::JoinHandle<()>,
        flush: tokio::sync::watch::Sender<bool>,
    ) {
        self.stopping.send_replace(true);
        let grace = self
            .cfg
            .shutdown_grace
            .unwrap_or_else(|| self.client.timeout() + Duration::from_secs(5));
        // The tasks still waiting for a slot give up at once; their messages' leases go
        // back now, so another worker can take them while these deliveries finish.
        let _ = tokio::time::timeout(grace, self.waiting.none_left()).await;
        let unstarted =
            std::mem::take(&mut *self.unstarted.lock().unwrap_or_else(|e| e.into_inner()));
        let released = match self
            .db
            .release_webhook_leases(&self.cfg.owner, &unstarted)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, n = unstarted.len(), "giving back leases failed; those messages are delivered when their leases expire");
                0
            }
        };
        tracing::info!(
            in_flight = self.active.get(),
            released,
            grace_secs = grace.as_secs_f64(),
            "alert worker stopping: finishing the deliveries in flight"
        );
        if tokio::time::timeout(grace, self.active.none_left())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.active.get(),
                "deliveries still running after the shutdown grace; they keep their leases and are retried when those expire"
            );
        }
        // Every finished attempt is in the channel now: store them, then stop the task.
        flush.send_replace(true);
        if tokio::time::timeout(grace, store).await.is_err() {
            tracing::error!("storing the last attempts did not finish; those messages are retried when their leases expire");
        }
        tracing::info!(released, "alert worker stopped");
    }

    /// The attempts' group commit: whatever finished while the previous transaction
    /// committed goes into the next one. Runs until `flush` is set and the channel is
    /// empty.
    async fn store_attempts(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<AttemptResult>,
        mut flush: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut batch = Vec::with_capacity(MAX_COMMIT);
        loop {
            let first = tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
                _ = flush.wait_for(|f| *f) => match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            batch.push(first);
            while batch.len() < MAX_COMMIT {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let stored = match self.db.complete_webhook_attempts(&batch).await {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => {
                    // One bad row must not lose the others: store each on its own.
                    tracing::error!(error = %e, n = batch.len(), "storing attempts failed; retrying one by one");
                    let mut v = Vec::with_capacity(batch.len());
                    for r in &batch {
                        v.push(self.db.complete_webhook_attempt(r).await);
                    }
                    v
                }
            };
            for (r, res) in batch.drain(..).zip(stored) {
                match res {
                    Ok(true) => {
                        if let MessageNext::RetryAt(t) = r.next {
                            let mut due = self.next_due.lock().unwrap_or_else(|e| e.into_inner());
                            if due.is_none_or(|d| t < d) {
                                *due = Some(t);
                            }
                        }
                    }
                    Ok(false) => tracing::warn!(
                        message = %r.message_id,
                        "lease lost before the attempt was stored (another worker has the message)"
                    ),
                    Err(e) => tracing::error!(
                        error = %e, message = %r.message_id,
                        "storing an attempt failed; the message is retried when its lease expires"
                    ),
                }
            }
            // Stored: the endpoint may have more due, and retries may be scheduled.
            self.wake.notify_one();
        }
    }

    fn wait_time(&self) -> Duration {
        let mut due = self.next_due.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        match *due {
            Some(t) if t > now => (t - now).to_std().unwrap_or_default().min(self.cfg.poll),
            Some(_) => {
                *due = None;
                Duration::ZERO
            }
            None => self.cfg.poll,
        }
    }

    /// One fan-out and claim round; `true` if the claim came back full.
    async fn round(self: Arc<Self>) -> bool {
        loop {
            match self.db.dispatch_webhook_events(500).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "alert fan-out failed; retrying at the next round");
                    break;
                }
            }
        }
        let exclude: Vec<Uuid> = {
            let eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            eps.iter()
                .filter(|(_, s)| s.in_flight >= self.cfg.per_endpoint)
                .map(|(id, _)| *id)
                .collect()
        };
        // Long enough for the deliveries queued behind an endpoint's slots (at most one
        // claim's worth) plus its own attempt, each bounded by the client timeout.
        let lease = self.client.timeout() * 3 + Duration::from_secs(30);
        let claimed = match self
            .db
            .claim_webhook_messages(&ClaimRequest {
                owner: self.cfg.owner.clone(),
                now: Utc::now(),
                lease,
                limit: self.cfg.batch,
                per_endpoint: self.cfg.per_endpoint as u32,
                exclude_endpoints: exclude,
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "claiming alert messages failed");
                return false;
            }
        };
        let full = claimed.len() as u32 >= self.cfg.batch;
        for c in claimed {
            let permits = {
                let mut eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
                let slot = eps.entry(c.endpoint.id).or_insert_with(|| EndpointSlots {
                    in_flight: 0,
                    permits: Arc::new(Semaphore::new(self.cfg.per_endpoint.max(1))),
                });
                slot.in_flight += 1;
                slot.permits.clone()
            };
            let me = self.clone();
            let active = self.active.enter();
            let waiting = self.waiting.enter();
            let mut stopping = self.stopping.subscribe();
            tokio::spawn(async move {
                let _active = active;
                let endpoint = c.endpoint.id;
                // A shutdown before the slot frees up: never started, lease given back.
                let permit = tokio::select! {
                    biased;
                    _ = stopping.wait_for(|s| *s) => None,
                    p = permits.acquire_owned() => p.ok(),
                };
                if permit.is_none() {
                    me.unstarted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(c.message.id);
                }
                drop(waiting);
                if let Some(_permit) = permit {
                    me.process(c).await;
                }
                {
                    let mut eps = me.endpoints.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(slot) = eps.get_mut(&endpoint) {
                        slot.in_flight = slot.in_flight.saturating_sub(1);
                        if slot.in_flight == 0 {
                            eps.remove(&endpoint);
                        }
                    }
                }
                // A slot is free: the endpoint may have more waiting.
                me.wake.notify_one();
            });
        }
        full
    }

    /// Delivers one claimed message and stores the result.
    async fn process(&self, c: ClaimedMessage) {
        let ClaimedMessage { message, endpoint } = c;
        let attempt_no = message.attempts + 1;
        let now = Utc::now();
        let (rec, body, permanent) = match self.prepare(&message, &endpoint, now).await {
            Ok(p) => {
                let rec = self
                    .client
                    .deliver(&DeliveryRequest {
                        url: &p.url,
                        body: p.body.as_bytes(),
                        content_type: p.format.content_type(),
                        message_id: &message.webhook_id,
                        secrets: &p.secrets,
                        headers: &p.headers,
                    })
                    .await;
                (rec, Some(p.body), false)
            }
            Err(Prepare::Permanent(error)) => (failed_record(now, error), None, true),
            Err(Prepare::Transient(error)) => (failed_record(now, error), None, false),
        };
        let done = Utc::now();
        let next = if permanent {
            Next::DeadLetter
        } else {
            self.cfg
                .schedule
                .next(attempt_no as u32, rec.outcome, done, &mut rand::rng())
        };
        let (msg_next, mut disable) = match next {
            Next::Delivered => (MessageNext::Delivered, None),
            Next::RetryAt(t) => (MessageNext::RetryAt(t), None),
            Next::DeadLetter => (MessageNext::Dead, None),
            Next::DisableEndpoint => (MessageNext::Dead, Some("gone".to_string())),
        };
        let success = rec.outcome == Outcome::Success;
        let failing = retry::failing_since(endpoint.failing_since, rec.outcome, done);
        if disable.is_none() && retry::should_disable(failing, done, self.cfg.disable_after) {
            disable = Some("failing".into());
        }
        if let Some(reason) = &disable {
            tracing::warn!(endpoint = %endpoint.id, reason, "disabling webhook endpoint");
        }
        let result = AttemptResult {
            message_id: message.id,
            lease_owner: self.cfg.owner.clone(),
            // Kept for the retries only: a message delivered at once is never sent again
            // (and writing its ~2 kB body more than doubled the message update's cost).
            body: if msg_next == MessageNext::Delivered {
                None
            } else {
                body
            },
            attempt: WebhookAttempt {
                id: Uuid::now_v7(),
                message_id: message.id,
                attempt: attempt_no,
                outcome: rec.outcome.as_str().into(),
                status_code: rec.status.map(i32::from),
                duration_ms: rec.duration_ms.min(i64::MAX as u64) as i64,
                response_excerpt: rec.response_excerpt.clone(),
                response_truncated: rec.response_truncated,
                error: rec.error.clone(),
                error_kind: rec.error_kind.map(|k| {
                    serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_else(|| "other".into())
                }),
                at: rec.started_at,
            },
            next: msg_next,
            success,
            disable_endpoint: disable,
        };
        if self.done_tx.send(result).await.is_err() {
            tracing::error!(message = %message.id, "attempt store stopped; the message is retried when its lease expires");
        }
    }

    async fn prepare(
        &self,
        m: &WebhookMessage,
        ep: &WebhookEndpoint,
        now: DateTime<Utc>,
    ) -> Result<Prepared, Prepare> {
        let format = Format::from_str(&ep.format).map_err(Prepare::permanent)?;
        let url = Url::parse(&ep.url).map_err(|e| Prepare::permanent(e.to_string()))?;
        let headers =
            CustomHeaders::parse(&ep.headers).map_err(|e| Prepare::permanent(e.to_string()))?;
        let mut secrets: Vec<Secret> = vec![self
            .cipher
            .open_secret(&ep.secret_sealed, ep.id)
            .map_err(|e| Prepare::permanent(e.to_string()))?];
        if let (Some(prev), Some(until)) = (&ep.previous_secret_sealed, ep.previous_expires_at) {
            if until > now {
                match self.cipher.open_secret(prev, ep.id) {
                    Ok(s) => secrets.push(s),
                    Err(e) => {
                        tracing::warn!(endpoint = %ep.id, error = %e, "previous secret unreadable; signing with the current one only")
                    }
                }
            }
        }
        let body = match &m.body {
            Some(b) => b.clone(),
            None => self.render(m, ep, format).await?,
        };
        Ok(Prepared {
            url: format.delivery_url(&url),
            format,
            headers,
            secrets,
            body,
        })
    }

    /// The rows an alert of `m` is rendered from, shared by every message of the same
    /// event: the first of them loads (four reads), the others (one per endpoint) reuse
    /// it for [`ROWS_TTL`], so every endpoint renders the same snapshot.
    async fn rows(&self, m: &WebhookMessage) -> keytrap_store::Result<Arc<AlertRows>> {
        let key = (m.tenant_id, m.incident_id, m.hit_id);
        let cell = {
            let mut map = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if map.len() >= ROWS_MAX {
                map.retain(|_, (at, _)| now.duration_since(*at) < ROWS_TTL);
                if map.len() >= ROWS_MAX {
                    map.clear();
                }
            }
            match map.get(&key) {
                Some((at, cell)) if now.duration_since(*at) < ROWS_TTL => cell.clone(),
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    map.insert(key, (now, cell.clone()));
                    cell
                }
            }
        };
        // A failed load is not kept: the next message of the event tries again.
        cell.get_or_try_init(|| self.load_rows(m)).await.cloned()
    }

    async fn load_rows(&self, m: &WebhookMessage) -> keytrap_store::Result<Arc<AlertRows>> {
        let t = m.tenant_id;
        let db = &self.db;
        let incident = match m.incident_id {
            Some(id) => db.get_incident(t, id).await?,
            None => None,
        };
        let hit = match m.hit_id {
            Some(id) => db.get_hit(t, id).await?,
            None => None,
        };
        let canary_id = hit
            .as_ref()
            .map(|h| h.canary_id)
            .or(incident.as_ref().and_then(|i| i.canary_id));
        let canary = match canary_id {
            Some(id) => db.get_canary(t, id).await?,
            None => None,
        };
        let store_id = hit
            .as_ref()
            .map(|h| h.store_id)
            .or(incident.as_ref().map(|i| i.store_id));
        let store = match store_id {
            Some(id) => db.get_store(t, id).await?,
            None => None,
        };
        Ok(Arc::new(AlertRows {
            incident,
            hit,
            canary,
            store,
        }))
    }

    async fn render(
        &self,
        m: &WebhookMessage,
        ep: &WebhookEndpoint,
        format: Format,
    ) -> Result<String, Prepare> {
        let event = EventType::from_str(&m.event_type).map_err(Prepare::permanent)?;
        let rows = self
            .rows(m)
            .await
            .map_err(|e| Prepare::Transient(e.to_string()))?;
        let (incident, hit, canary, store) = (&rows.incident, &rows.hit, &rows.canary, &rows.store);
        let alert = Alert {
            event,
            message_id: &m.webhook_id,
            occurred_at: m.occurred_at,
            incident: incident.as_ref(),
            canary: canary.as_ref(),
            store: store.as_ref(),
            hit: hit.as_ref(),
        };
        let rendered = render(
            format,
            &alert,
            &RenderOptions {
                source: &self.cfg.source,
                pagerduty_routing_key: ep.routing_key.as_deref(),
            },
        )
        .map_err(|e| Prepare::permanent(e.to_string()))?;
        String::from_utf8(rendered.body).map_err(|e| Prepare::permanent(e.to_string()))
    }
}

/// Polls `f` once: `true` if it is done.
fn is_ready<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.poll(&mut cx).is_ready()
}

/// The rows an alert is rendered from.
struct AlertRows {
    incident: Option<keytrap_store::Incident>,
    hit: Option<keytrap_store::Hit>,
    canary: Option<keytrap_store::Canary>,
    store: Option<keytrap_store::Store>,
}

/// (tenant, incident, hit): the same for every endpoint's message of one event.
type RowsKey = (Uuid, Option<Uuid>, Option<Uuid>);
type RowsCell = Arc<tokio::sync::OnceCell<Arc<AlertRows>>>;

/// How long the rows of an event are reused for its other endpoints' messages.
const ROWS_TTL: Duration = Duration::from_secs(5);
/// Most events whose rows are kept.
const ROWS_MAX: usize = 8192;

struct Prepared {
    url: Url,
    format: Format,
    headers: CustomHeaders,
    secrets: Vec<Secret>,
    body: String,
}

/// Why a message could not be sent at all.
enum Prepare {
    /// It never will be (bad stored configuration, PagerDuty without routing key):
    /// dead-letter it at once, with the reason as the attempt's error.
    Permanent(String),
    /// The database failed while loading the rows to render: retry on schedule.
    Transient(String),
}

impl Prepare {
    fn permanent(e: impl std::fmt::Display) -> Prepare {
        Prepare::Permanent(format!("not deliverable: {e}"))
    }
}

fn failed_record(at: DateTime<Utc>, error: String) -> AttemptRecord {
    AttemptRecord {
        started_at: at,
        signed_timestamp: at.timestamp(),
        status: None,
        duration_ms: 0,
        response_excerpt: None,
        response_truncated: false,
        error: Some(error),
        error_kind: Some(crate::ErrorKind::Other),
        outcome: Outcome::Failure { retry_after: None },
    }
}
