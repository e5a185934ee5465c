//! Group commit. Every authenticated trap request (canary hit or unknown key) hands its
//! event to one writer (a thread or a task, see below) and waits until the transaction
//! holding it has committed; only then does the trap answer. While one transaction
//! commits, the next requests queue up and go into the following one, so the cost of a
//! durable commit is shared by everything that arrived meanwhile, and an idle trap
//! commits at once (no timer).
//!
//! Canary and unknown-key requests wait for the same commits: the answer to a canary is
//! neither less durable nor slower than the answer to an unknown key.
//!
//! Where the backend offers a synchronous writer ([`Database::trap_writer`]: SQLite,
//! PostgreSQL), the writer is a thread of its own that runs each batch straight through:
//! no hop to another thread and back per statement (SQLite), no wait behind the request
//! tasks for each round trip's answer (PostgreSQL, on a runtime of its own), and no wait
//! for a runtime worker between batches while request tasks fill the run queues.
//! Otherwise it is a task on the runtime that awaits [`Database::record_trap_events`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use keytrap_store::{Database, TrapEvent, TrapWriter};
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

/// Handle to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    in_flight: Arc<AtomicUsize>,
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
    /// Starts the writer: its own thread where the backend has a synchronous writer,
    /// else a task on the current runtime.
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let busy = in_flight.clone();
        let mut batcher = Batcher {
            events: Vec::with_capacity(MAX_BATCH),
            waiters: Vec::with_capacity(MAX_BATCH),
            stats: stats.clone(),
            notify,
        };
        match db.trap_writer() {
            Some(writer) => {
                let thread = std::thread::Builder::new()
                    .name("keytrap-recorder".into())
                    .spawn(move || run_blocking(writer, rx, batcher, &busy));
                if let Err(e) = thread {
                    // No thread: the requests queued get "unavailable" (their senders are
                    // dropped with the receiver); say why once.
                    tracing::error!(error = %e, "the trap recorder thread could not start");
                }
            }
            None => {
                tokio::spawn(async move {
                    let mut rx = rx;
                    while let Some(first) = rx.recv().await {
                        batcher.fill(first, &mut rx);
                        let started = std::time::Instant::now();
                        let result = db.record_trap_events(&batcher.events).await;
                        if let Some(failed) = batcher.committed(result, started) {
                            for (event, w) in failed {
                                let started = std::time::Instant::now();
                                let ok = db.record_trap_events(std::slice::from_ref(&event)).await;
                                batcher.settle_one(ok, started, w);
                            }
                        }
                        batcher.done();
                    }
                });
            }
        }
        Recorder {
            tx,
            stats,
            in_flight,
        }
    }

    /// Authenticated requests being handled now (counted by the trap): more of them
    /// than the batch committing holds means more events are on their way.
    pub fn in_flight(&self) -> &AtomicUsize {
        &self.in_flight
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

/// The writer thread's loop (see the module docs).
fn run_blocking(
    mut writer: Box<dyn TrapWriter>,
    mut rx: mpsc::Receiver<Job>,
    mut batcher: Batcher,
    in_flight: &AtomicUsize,
) {
    loop {
        let first = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing queued: upkeep, a step at a time while nothing arrives; then let
                // other writers in while this thread sleeps.
                while rx.is_empty() && writer.idle_step() {}
                writer.idle();
                match rx.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        };
        batcher.fill(first, &mut rx);
        let started = std::time::Instant::now();
        // Requests wait behind this batch: queued already, or past authentication and
        // on their way (more in flight than the batch holds).
        let n = batcher.events.len();
        let result = writer.record(&batcher.events, &|| {
            !rx.is_empty() || in_flight.load(Ordering::Relaxed) > n
        });
        if let Some(failed) = batcher.committed(result, started) {
            for (event, w) in failed {
                let started = std::time::Instant::now();
                let ok = writer.record(std::slice::from_ref(&event), &|| false);
                batcher.settle_one(ok, started, w);
            }
        }
        batcher.done();
        writer.maintain(!rx.is_empty());
    }
}

/// One batch's events and waiters, and what settling them updates.
struct Batcher {
    events: Vec<TrapEvent>,
    waiters: Vec<oneshot::Sender<Commit>>,
    stats: Arc<Stats>,
    notify: Option<Arc<Notify>>,
}

impl Batcher {
    /// Takes `first` and whatever else is queued now, up to [`MAX_BATCH`].
    fn fill(&mut self, first: Job, rx: &mut mpsc::Receiver<Job>) {
        let mut next = Some(first);
        while let Some(Job { event, done }) = next.take() {
            self.events.push(event);
            self.waiters.push(done);
            if self.events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
    }

    /// Settles the batch after its transaction. On failure the events come back, each
    /// with its waiter, to be retried one by one: one bad event must not lose the others.
    fn committed(
        &mut self,
        result: keytrap_store::Result<()>,
        started: std::time::Instant,
    ) -> Option<Vec<(TrapEvent, oneshot::Sender<Commit>)>> {
        self.stats.observe(started.elapsed());
        let batch = self.events.len();
        match result {
            Ok(()) => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .committed
                    .fetch_add(batch as u64, Ordering::Relaxed);
                for w in self.waiters.drain(..) {
                    let _ = w.send(Commit { ok: true, batch });
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, batch, "trap batch failed; retrying events one by one");
                Some(self.events.drain(..).zip(self.waiters.drain(..)).collect())
            }
        }
    }

    /// Settles one event retried alone.
    fn settle_one(
        &self,
        result: keytrap_store::Result<()>,
        started: std::time::Instant,
        waiter: oneshot::Sender<Commit>,
    ) {
        self.stats.observe(started.elapsed());
        let ok = result
            .map_err(|e| tracing::error!(error = %e, "trap event could not be recorded"))
            .is_ok();
        let counter = if ok {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            &self.stats.committed
        } else {
            &self.stats.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = waiter.send(Commit { ok, batch: 1 });
    }

    /// After a batch: wake the alert worker, make room for the next.
    fn done(&mut self) {
        if let Some(n) = &self.notify {
            n.notify_one();
        }
        self.events.clear();
    }
}
