//! The trap's group commit on PostgreSQL, on a connection and a runtime of its own.
//!
//! On the shared runtime, the writer was a task like every request's: each of a batch's
//! round trips (BEGIN, counters, incidents, hits, notify, COMMIT) woke it behind the
//! request tasks queued on the same two workers, and the socket's readiness was noticed
//! only when a busy worker polled the I/O driver. The writer was busy 96-99% of the time
//! at 7-9k canary requests/s (docs/benchmarks.md). Here the recorder's own thread runs
//! each batch to its end on a single-threaded runtime that owns the writer's connection:
//! between round trips that thread waits for PostgreSQL alone.
//!
//! The connection is opened on first use, with the pool's options, and dropped after any
//! error (a batch that fails is retried event by event by the recorder, on a fresh
//! connection), so a restarted server or a dropped connection costs one reconnect. Work
//! the batch starts in the background (the subscriber cache's refresh) goes to the pool's
//! runtime, never to this one, which runs only while a batch commits.

use keytrap_store::{Result, TrapEvent, TrapWriter};
use sqlx::{ConnectOptions, PgConnection};

use crate::{backend, PgDatabase};

/// The writer's connection's `application_name` (in `pg_stat_activity`), after the
/// pool's own name in parentheses when the pool has one.
pub const APPLICATION_NAME: &str = "keytrap-trap-writer";

pub(crate) struct PgTrapWriter {
    db: PgDatabase,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    conn: Option<PgConnection>,
}

impl PgTrapWriter {
    /// `None` (the recorder then awaits `record_trap_events` on the shared runtime) if
    /// the runtime cannot be built.
    pub(crate) fn new(db: PgDatabase) -> Option<PgTrapWriter> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => Some(PgTrapWriter {
                db,
                runtime: Some(rt),
                conn: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the trap writer; it shares the server's");
                None
            }
        }
    }
}

impl TrapWriter for PgTrapWriter {
    fn record(&mut self, batch: &[TrapEvent], _queued: &dyn Fn() -> bool) -> Result<()> {
        let Some(rt) = &self.runtime else {
            return Err(keytrap_store::StoreError::Backend(
                "the trap writer is shutting down".into(),
            ));
        };
        let (db, conn) = (&self.db, &mut self.conn);
        rt.block_on(async {
            let c = match conn {
                Some(c) => c,
                None => {
                    let opts = db.pool().connect_options();
                    let name = match opts.get_application_name() {
                        Some(pool) => format!("{pool} ({APPLICATION_NAME})"),
                        None => APPLICATION_NAME.to_owned(),
                    };
                    let opts = opts.as_ref().clone().application_name(&name);
                    conn.insert(opts.connect().await.map_err(backend)?)
                }
            };
            let result = db.trap_record_on(c, batch).await;
            if result.is_err() {
                // Whatever state the connection is in, the next batch starts afresh.
                *conn = None;
            }
            result
        })
    }
}

impl Drop for PgTrapWriter {
    fn drop(&mut self) {
        self.conn = None;
        if let Some(rt) = self.runtime.take() {
            // Never blocks: the writer may be dropped where blocking is not allowed.
            rt.shutdown_background();
        }
    }
}
