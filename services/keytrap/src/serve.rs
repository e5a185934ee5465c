//! Opening the database, the master key, the bootstrap, and running the roles.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use keytrap_api::AppState;
use keytrap_core::MasterKey;
use keytrap_store::Database;
use keytrap_store_postgres::PgDatabase;
use keytrap_store_sqlite::SqliteDatabase;
use tokio::net::TcpListener;

use crate::config::{Resolved, Role, MASTER_KEY_FILE};

/// Opens the backend named by the URL scheme and runs pending migrations.
/// Async worker threads for a `serve` process running `roles` on `cores` cores: one
/// fewer than the cores when the trap runs without the alert worker, else as many.
///
/// The trap's recorder is a thread of its own (docs/trap.md) and every authenticated
/// request waits for its commits: with as many runtime workers as cores, request tasks
/// competed with it for the cores and the commits stretched (on 2 cores, unknown keys at
/// 20-23 µs of server CPU per request with one worker against 25-27 with two, two
/// alternating pairs; docs/benchmarks.md, session 8). With the alert worker in the same
/// process its deliveries want the cores too (6,500-6,700 webhooks/s with one runtime
/// worker against 7,400-8,300 with two on 2 cores), so such a process keeps them all.
/// `TOKIO_WORKER_THREADS`, when set, wins (see [`runtime`]).
pub fn runtime_workers(roles: &[Role], cores: usize) -> usize {
    if cores >= 2 && roles.contains(&Role::Trap) && !roles.contains(&Role::Worker) {
        cores - 1
    } else {
        cores.max(1)
    }
}

/// The multi-threaded runtime `serve` runs on, sized by [`runtime_workers`] unless
/// `TOKIO_WORKER_THREADS` is set (tokio reads it itself then).
pub fn runtime(roles: &[Role]) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    // Tasks woken from outside the runtime wait in its global queue, which a busy worker
    // otherwise looks at only every 61 polls, after its own queue. Here those tasks are
    // answers ready to go out: the trap's requests whose group commit just ended (woken
    // by the recorder thread) and SQLite queries done on sqlx's thread. Taking them first
    // answers committed requests before reading new ones: on the trap benchmark the first
    // answer of a commit went out ~35 µs after it instead of ~150 µs (docs/benchmarks.md,
    // session 13).
    b.global_queue_interval(1);
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        b.worker_threads(runtime_workers(roles, cores));
    }
    b.build()
}

pub async fn open_database(url: &str) -> anyhow::Result<Arc<dyn Database>> {
    if is_embedded(url)? {
        let db = SqliteDatabase::connect(url)
            .await
            .with_context(|| format!("cannot open SQLite database {url}"))?;
        Ok(Arc::new(db))
    } else {
        let db = PgDatabase::connect(url)
            .await
            .context("cannot open the PostgreSQL database (check KEYTRAP_DATABASE_URL)")?;
        Ok(Arc::new(db))
    }
}

/// `true` for SQLite, `false` for PostgreSQL, an error for anything else.
pub fn is_embedded(url: &str) -> anyhow::Result<bool> {
    if url.starts_with("sqlite:") {
        Ok(true)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(false)
    } else {
        // Never echo the URL: it may carry a password.
        let scheme = url.split(':').next().unwrap_or("");
        bail!("unsupported database URL scheme {scheme:?}: use sqlite://PATH or postgres://...")
    }
}

/// The master key: `KEYTRAP_MASTER_KEY`, else the key file (`KEYTRAP_MASTER_KEY_FILE`,
/// else `<data dir>/keytrap.master-key`). On SQLite a missing file is generated (mode
/// 0600); on PostgreSQL, where replicas must share it, a missing key is an error.
pub fn load_master_key(cfg: &Resolved, embedded: bool) -> anyhow::Result<(MasterKey, bool)> {
    if let Some(k) = &cfg.master_key {
        return Ok((
            MasterKey::parse(k).context("KEYTRAP_MASTER_KEY is not a valid master key")?,
            false,
        ));
    }
    let path = cfg
        .master_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(MASTER_KEY_FILE));
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((
            MasterKey::parse(&text)
                .with_context(|| format!("{} does not hold a valid master key", path.display()))?,
            false,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && embedded => {
            let key = MasterKey::generate();
            write_key_file(&path, &key)?;
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no master key: set KEYTRAP_MASTER_KEY (32 bytes, base64) from a Secret, or \
             KEYTRAP_MASTER_KEY_FILE; generate one with `keytrap gen-master-key`"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create master key file {}", path.display()))?;
    f.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Everything set up: database migrated, key checked, root tenant and admin token there.
pub struct Ready {
    pub state: AppState,
    /// The generated bootstrap token, to print once.
    pub bootstrap_token: Option<String>,
    pub generated_key_file: Option<PathBuf>,
}

pub async fn prepare(cfg: &Resolved) -> anyhow::Result<Ready> {
    let embedded = is_embedded(&cfg.database_url)?;
    // Load the key before touching the database, so a missing production key fails fast
    // without creating anything.
    let (master, generated) = load_master_key(cfg, embedded)?;
    let db = open_database(&cfg.database_url).await?;
    let keys = master.keys();

    // A database is bound to the master key it was created with: starting with another
    // would make every canary unrecognisable and every token invalid, silently.
    let check = hex::encode(keys.key_check());
    let stored = db.init_meta("master_key_check", &check).await?;
    if stored != check {
        bail!(
            "the master key does not match the one this database was created with; \
             refusing to start (check KEYTRAP_MASTER_KEY or the key file)"
        );
    }

    let state = AppState {
        db: db.clone(),
        webhooks: keytrap_api::webhooks::WebhookSettings::new(
            &keys,
            cfg.webhooks.addrs.clone(),
            cfg.webhooks.https_only,
        ),
        keys,
        key_version: 1,
    };
    let bootstrap_token = keytrap_api::tokens::bootstrap(&state, cfg.admin_token.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Ready {
        state,
        bootstrap_token,
        generated_key_file: generated.then(|| {
            cfg.master_key_file
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join(MASTER_KEY_FILE))
        }),
    })
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that resolves on
/// either. Installed before anything else starts, so a signal that arrives while
/// keytrap is still starting (migrations, listeners, the alert wake-up connection) stops
/// it gracefully once it is up, instead of killing it with the signal's default action.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let wait = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
    };
    #[cfg(not(unix))]
    let wait = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Ok(async move {
        wait.await;
        tracing::info!("shutdown signal received; finishing in-flight requests");
    })
}

pub async fn run(cfg: Resolved) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let ready = prepare(&cfg).await?;
    if let Some(path) = &ready.generated_key_file {
        tracing::warn!(
            path = %path.display(),
            "generated a new master key; back it up: without it no canary can be recognised"
        );
    }
    if let Some(token) = &ready.bootstrap_token {
        // Printed once, to stdout, never logged.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "keytrap: bootstrap admin token (shown once; store it now):\n{token}"
        )?;
        out.flush()?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    // The worker is built first so the trap's recorder can wake it after each commit.
    let worker = if cfg.roles.contains(&Role::Worker) {
        Some(crate::worker::build(&cfg, &ready.state).await?)
    } else {
        None
    };
    let wake = worker.as_ref().map(|w| w.waker());

    if cfg.roles.contains(&Role::Trap) {
        // Before any listener opens: nothing is served from what an earlier trap process
        // left unsettled (SQLite: counts folded when it stopped are recounted).
        ready
            .state
            .db
            .prepare_trap()
            .await
            .context("cannot prepare the trap's writer")?;
    }
    let mut trap_state = None;
    if cfg.roles.contains(&Role::Api) {
        let listener = bind(cfg.api_listen, "api").await?;
        tracing::info!(addr = %cfg.api_listen, backend = ready.state.db.backend(), "management API listening");
        let app = keytrap_api::router(ready.state.clone());
        let (rx, limits) = (stop_rx.clone(), cfg.http);
        tasks.spawn(async move {
            crate::http::serve(listener, app, limits, wait_stop(rx))
                .await
                .context("api server failed")
        });
    }
    if cfg.roles.contains(&Role::Trap) {
        let listener = bind(cfg.trap_listen, "trap").await?;
        tracing::info!(addr = %cfg.trap_listen, "trap listening");
        let trap = keytrap_trap::TrapState::with_alert_notify(
            ready.state.db.clone(),
            ready.state.keys.clone(),
            cfg.trap.clone(),
            wake.clone(),
        );
        tracing::info!(exchanges = ?trap.exchanges(), "trap emulators");
        trap_state = Some(trap.clone());
        // Every connection's service answers through the trap's one request path.
        let make = move |peer: std::net::SocketAddr| {
            let trap = trap.clone();
            hyper::service::service_fn(move |req| {
                let trap = trap.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        keytrap_trap::serve_request(trap, peer, req).await,
                    )
                }
            })
        };
        let (rx, limits) = (stop_rx.clone(), cfg.http);
        tasks.spawn(async move {
            crate::http::serve_with(listener, make, limits, wait_stop(rx))
                .await
                .context("trap server failed")
        });
    }
    if let Some(addr) = cfg.health_listen {
        let listener = bind(addr, "health").await?;
        tracing::info!(%addr, "health listening");
        let app = crate::health::router(crate::health::Health {
            db: ready.state.db.clone(),
            roles: cfg.roles.clone(),
            trap: trap_state,
        });
        let (rx, limits) = (stop_rx.clone(), cfg.http);
        tasks.spawn(async move {
            crate::http::serve(listener, app, limits, wait_stop(rx))
                .await
                .context("health server failed")
        });
    }
    if let Some(worker) = worker {
        if !is_embedded(&cfg.database_url)? {
            crate::worker::listen_postgres(&cfg.database_url, worker.waker())?;
        }
        let rx = stop_rx.clone();
        tasks.spawn(async move {
            worker.run(wait_stop(rx)).await;
            Ok(())
        });
    }

    tokio::select! {
        _ = shutdown => {}
        Some(res) = tasks.join_next() => {
            // A server stopped on its own: that is an error worth exiting on.
            let _ = stop_tx.send(true);
            res.context("server task panicked")??;
            bail!("a server stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        res.context("server task panicked")??;
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_without_the_alert_worker_leaves_a_core_to_its_recorder() {
        use Role::{Api, Trap, Worker};
        assert_eq!(runtime_workers(&[Api, Trap], 2), 1);
        assert_eq!(runtime_workers(&[Trap], 8), 7);
        // The alert worker's deliveries want every core; so does a process without a trap.
        assert_eq!(runtime_workers(&[Api, Trap, Worker], 2), 2);
        assert_eq!(runtime_workers(&[Api], 4), 4);
        assert_eq!(runtime_workers(&[Worker], 2), 2);
        // Never fewer than one.
        assert_eq!(runtime_workers(&[Trap], 1), 1);
        assert_eq!(runtime_workers(&[Api], 0), 1);
    }
}
