//! Group commit. Every authenticated trap request (canary hit or unknown key) hands its
//! event to one writer task and waits until the transaction holding it has committed;
//! only then does the trap answer. While one transaction commits, the next requests
//! queue up and go into the following one, so the cost of a durable commit is shared by
//! everything that arrived meanwhile, and an idle trap commits at once (no timer).
//!
//! Canary and unknown-key requests wait for the same commits: the answer to a canary is
//! neither less durable nor slower than the answer to an unknown key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keytrap_store::{Database, TrapEvent};
use tokio::sync::{mpsc, oneshot, Notify};

/// Most events in one transaction.
const MAX_BATCH: usize = 512;
/// Queued events before callers wait for room (bounds memory under a flood).
const QUEUE: usize = 8_192;

struct Job {
    event: TrapEvent,
    done: oneshot::Sender<Commit>,
}

/// How an event's commit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The event is durably recorded.
    pub ok: bool,
    /// Events in the transaction that held it (1 when the trap was otherwise idle).
    pub batch: usize,
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// Counters of the writer, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events committed.
    pub committed: AtomicU64,
    /// Events that could not be recorded (their requests got "unavailable").
    pub failed: AtomicU64,
    /// Transactions committed (events / batches = the group-commit sharing).
    pub batches: AtomicU64,
    /// Nanoseconds the writer spent in the database (committing or failing): over wall
    /// time, how busy the single writer is.
    pub busy_nanos: AtomicU64,
    /// Transactions by how long they took: `commit_buckets[i]` counts those that took at
    /// most [`COMMIT_BUCKETS`]`[i]` seconds (cumulative, as a Prometheus histogram).
    pub commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    /// Database calls timed (the histogram's count: batches, failed ones and retries).
    pub commit_observations: AtomicU64,
}

/// Upper bounds (seconds) of the commit-duration histogram.
pub const COMMIT_BUCKETS: [f64; 6] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.1];

impl Stats {
    fn observe(&self, took: std::time::Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(ns, Ordering::Relaxed);
        self.commit_observations.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, n) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            if secs <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Recorder {
    /// Starts the writer task on the current runtime.
    pub fn spawn(db: Arc<dyn Database>) -> Recorder {
        Recorder::spawn_with_notify(db, None)
    }

    /// Like [`spawn`](Self::spawn); `notify` is woken after every commit (the alert
    /// worker in the same process: a hit's events are in the outbox now). Commits of
    /// unknown keys wake it too, so what follows an answer never differs between a
    /// canary and an unknown key.
    pub fn spawn_with_notify(db: Arc<dyn Database>, notify: Option<Arc<Notify>>) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        tokio::spawn(run(db, rx, stats.clone(), notify));
        Recorder { tx, stats }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Records `event` durably; `ok` once committed, not `ok` if it could not be.
    pub async fn record(&self, event: TrapEvent) -> Commit {
        let failed = Commit {
            ok: false,
            batch: 1,
        };
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job { event, done }).await.is_err() {
            return failed;
        }
        wait.await.unwrap_or(failed)
    }
}

async fn run(
    db: Arc<dyn Database>,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    notify: Option<Arc<Notify>>,
) {
    let mut events: Vec<TrapEvent> = Vec::with_capacity(MAX_BATCH);
    let mut waiters: Vec<oneshot::Sender<Commit>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Job { event, done }) = next.take() {
            events.push(event);
            waiters.push(done);
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let batch = events.len();
        let started = std::time::Instant::now();
        let result = db.record_trap_events(&events).await;
        stats.observe(started.elapsed());
        match result {
            Ok(()) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .committed
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                for w in waiters.drain(..) {
                    let _ = w.send(Commit { ok: true, batch });
                }
            }
            Err(e) => {
                // One bad event must not lose the others: retry each on its own.
                tracing::error!(error = %e, batch = events.len(), "trap batch failed; retrying events one by one");
                for (event, w) in events.iter().zip(waiters.drain(..)) {
                    let started = std::time::Instant::now();
                    let ok = db
                        .record_trap_events(std::slice::from_ref(event))
                        .await
                        .map_err(
                            |e| tracing::error!(error = %e, "trap event could not be recorded"),
                        )
                        .is_ok();
                    stats.observe(started.elapsed());
                    let counter = if ok {
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        &stats.committed
                    } else {
                        &stats.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = w.send(Commit { ok, batch: 1 });
                }
            }
        }
        if let Some(n) = &notify {
            n.notify_one();
        }
        events.clear();
    }
}
