//! `keytrap-bench mint`: mints canaries through the management API of a real
//! `keytrap serve` (this binary re-executed as the server, so its peak RSS is its own)
//! into SQLite and PostgreSQL, and prints canaries/s, the server's peak RSS, and the
//! ratio to two baselines measured in the same run: credential derivation alone, and the
//! storage insert alone (no HTTP).
//!
//! `keytrap-bench trap`: the trap's throughput and latency for unknown keys and valid
//! canary requests, against a bare axum baseline, with a load generator that signs every
//! request on the fly (see `trap.rs`, `load.rs`).
//!
//! `keytrap-bench alerts`: alert latency (trap response -> receiver receipt) and
//! delivery throughput through a real `keytrap serve` with the worker role (`alerts.rs`).
//!
//! Run: `cargo run --release -p keytrap-bench -- mint`, `-- trap` or `-- alerts` (see
//! docs/benchmarks.md).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod alerts;
mod load;
mod trap;

use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use keytrap_core::{Exchange, MasterKey};
use keytrap_store::{Database, NewAudit, NewCanary, NewStore, StoreKind};
use serde_json::json;
use uuid::Uuid;

mod plant;

const MASTER_KEY: &str = "YmVuY2htYXJrLW1hc3Rlci1rZXktMzItYnl0ZXMhISE=";
pub(crate) const ADMIN_TOKEN: &str = "keytrap_benchmarkbenchmarkbenchmarkbenchmark0";
const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint canaries through the API into each backend.
    Mint {
        /// Canaries to mint per backend.
        #[arg(long, default_value_t = 100_000)]
        count: u32,
        /// Canaries per API call (at most 10,000).
        #[arg(long, default_value_t = 10_000)]
        batch: u32,
        /// Concurrent API calls.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        /// PostgreSQL server; the benchmark creates and drops its own database there.
        #[arg(long, env = "KEYTRAP_BENCH_POSTGRES_URL", default_value = DEFAULT_PG)]
        postgres_url: String,
        #[arg(long, default_value = "binance")]
        exchange: Exchange,
    },
    /// Trap throughput and latency: baseline, unknown keys, valid canaries.
    Trap {
        /// Seconds per measured closed-loop run (and for the open-loop run).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of unmeasured warm-up before each closed-loop run.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Concurrent keep-alive connections: each closed-loop run is repeated at every
        /// level, and each server's peak over the levels is its throughput.
        #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
        connections: Vec<usize>,
        /// Canaries minted per exchange (Binance and Bybit).
        #[arg(long, default_value_t = 100)]
        canaries: u32,
        /// Random well-formed unknown keys (half Binance, half Bybit).
        #[arg(long, default_value_t = 1000)]
        unknown_keys: usize,
        /// Open-loop rate as a fraction of the measured closed-loop canary throughput.
        #[arg(long, default_value_t = 0.5)]
        rate_fraction: f64,
        #[arg(long, value_delimiter = ',', default_value = "sqlite")]
        backends: Vec<String>,
        /// PostgreSQL server; the benchmark creates and drops its own database there.
        #[arg(long, env = "KEYTRAP_BENCH_POSTGRES_URL", default_value = DEFAULT_PG)]
        postgres_url: String,
    },
    /// is_canary ns/call and `plant db` rows/s into PostgreSQL, with baselines.
    Plant {
        /// Keys checked by is_canary.
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        /// Rows planted into PostgreSQL.
        #[arg(long, default_value_t = 10_000)]
        rows: u32,
        #[arg(long, env = "KEYTRAP_BENCH_POSTGRES_URL", default_value = DEFAULT_PG)]
        postgres_url: String,
    },
    /// (internal) run `keytrap serve` in this process.
    #[command(hide = true)]
    Serve {
        database_url: String,
        api_listen: String,
        /// Also run the trap role, listening here.
        #[arg(long)]
        trap_listen: Option<String>,
        /// Serve /metrics here (the trap benchmark reads the group-commit counters).
        #[arg(long)]
        health_listen: Option<String>,
        /// Also run the worker role (webhooks may reach 127.0.0.0/8).
        #[arg(long)]
        worker: bool,
    },
    /// Alert latency and delivery throughput (API, trap and worker in one server).
    Alerts {
        /// Sequential hits for the idle latency, one alert each.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Endpoints in the throughput run (each receives every alert).
        #[arg(long, default_value_t = 20)]
        endpoints: usize,
        /// Canaries hit once each in the throughput run.
        #[arg(long, default_value_t = 500)]
        canaries: u32,
        /// Background valid canary hits/s at the trap during the latency-under-load run
        /// (open loop; 0 skips that run).
        #[arg(long, default_value_t = 500.0)]
        load_rate: f64,
        /// Canaries the background load cycles through.
        #[arg(long, default_value_t = 100)]
        load_canaries: u32,
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        #[arg(long, env = "KEYTRAP_BENCH_POSTGRES_URL", default_value = DEFAULT_PG)]
        postgres_url: String,
    },
    /// (internal) serve the bare axum baseline handler.
    #[command(hide = true)]
    BaselineServe { listen: String },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The trap's server process runs on the runtime `keytrap serve` would give it.
    let rt = match &cli.cmd {
        Cmd::Serve {
            trap_listen,
            worker,
            ..
        } => keytrap::serve::runtime(&serve_roles(trap_listen.is_some(), *worker))?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    match cli.cmd {
        Cmd::Serve {
            database_url,
            api_listen,
            trap_listen,
            health_listen,
            worker,
        } => rt.block_on(serve(
            database_url,
            api_listen,
            trap_listen,
            health_listen,
            worker,
        )),
        Cmd::Alerts {
            samples,
            endpoints,
            canaries,
            load_rate,
            load_canaries,
            backends,
            postgres_url,
        } => rt.block_on(alerts::run(alerts::AlertArgs {
            samples: samples.max(1),
            endpoints: endpoints.max(1),
            canaries: canaries.max(1),
            load_rate: if load_rate.is_finite() {
                load_rate.max(0.0)
            } else {
                0.0
            },
            load_canaries: load_canaries.max(1),
            backends,
            postgres_url,
        })),
        Cmd::BaselineServe { listen } => rt.block_on(trap::baseline_serve(listen)),
        Cmd::Trap {
            duration,
            warmup,
            connections,
            canaries,
            unknown_keys,
            rate_fraction,
            backends,
            postgres_url,
        } => {
            let secs = |s: f64, what: &str| {
                Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("bad --{what}: {s}"))
            };
            if !(rate_fraction > 0.0 && rate_fraction <= 1.0) {
                bail!("--rate-fraction must be in (0, 1]");
            }
            rt.block_on(trap::run(trap::TrapArgs {
                duration: secs(duration, "duration")?,
                warmup: secs(warmup, "warmup")?,
                connections: {
                    let mut levels: Vec<usize> =
                        connections.into_iter().map(|c| c.max(1)).collect();
                    levels.sort_unstable();
                    levels.dedup();
                    if levels.is_empty() {
                        bail!("--connections needs at least one level");
                    }
                    levels
                },
                canaries: canaries.max(1),
                unknown_keys,
                rate_fraction,
                backends,
                postgres_url,
            }))
        }
        Cmd::Plant {
            keys,
            rows,
            postgres_url,
        } => {
            println!("machine: {}", machine());
            let (ns, base, hits) = plant::detect(keys.max(14));
            println!(
                "is_canary: {ns:.0} ns/call over {keys} keys ({hits} canaries); baseline one HMAC-SHA256 of the key: {base:.0} ns; ratio {:.2}",
                ns / base
            );
            let (planted, bare) = rt.block_on(plant::plant(&postgres_url, rows.max(1)))?;
            println!(
                "plant db --apply into PostgreSQL: {planted:.0} rows/s ({rows} rows, minted, inserted in one transaction, placements recorded); baseline bare INSERTs: {bare:.0} rows/s; ratio {:.2}",
                planted / bare
            );
            Ok(())
        }
        Cmd::Mint {
            count,
            batch,
            concurrency,
            backends,
            postgres_url,
            exchange,
        } => rt.block_on(mint(MintArgs {
            count,
            batch: batch.clamp(1, 10_000),
            concurrency: concurrency.max(1),
            backends,
            postgres_url,
            exchange,
        })),
    }
}

/// The roles of the benchmark's server process: the API, and the trap and the alert
/// worker when asked for.
fn serve_roles(trap: bool, worker: bool) -> Vec<keytrap::config::Role> {
    let mut roles = vec![keytrap::config::Role::Api];
    if trap {
        roles.push(keytrap::config::Role::Trap);
    }
    if worker {
        roles.push(keytrap::config::Role::Worker);
    }
    roles
}

async fn serve(
    database_url: String,
    api_listen: String,
    trap_listen: Option<String>,
    health_listen: Option<String>,
    worker: bool,
) -> anyhow::Result<()> {
    let roles = serve_roles(trap_listen.is_some(), worker);
    let mut webhooks = keytrap::config::WebhookConfig::default();
    if worker {
        webhooks.addrs = keytrap_webhooks::AddrPolicy::parse_allow_list("127.0.0.0/8")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let cfg = keytrap::config::Resolved {
        database_url,
        data_dir: std::env::temp_dir(),
        master_key: Some(MASTER_KEY.into()),
        master_key_file: None,
        admin_token: Some(ADMIN_TOKEN.into()),
        api_listen: api_listen.parse()?,
        trap_listen: trap_listen.as_deref().unwrap_or("127.0.0.1:0").parse()?,
        health_listen: health_listen.as_deref().map(str::parse).transpose()?,
        http: keytrap::http::Limits::default(),
        roles,
        trap: Default::default(),
        webhooks,
    };
    keytrap::serve::run(cfg).await
}

struct MintArgs {
    count: u32,
    batch: u32,
    concurrency: usize,
    backends: Vec<String>,
    postgres_url: String,
    exchange: Exchange,
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

/// Baseline 1: derive credentials and lookup digests, one thread, no IO.
fn derivation_rate(exchange: Exchange, n: u32) -> f64 {
    let keys = MasterKey::parse(MASTER_KEY).map(|k| k.keys());
    let Ok(keys) = keys else { return 0.0 };
    let start = Instant::now();
    let mut sink = 0u8;
    for _ in 0..n {
        let id = Uuid::now_v7();
        let c = keys.credentials(exchange, id);
        sink ^= keys.lookup_digest(exchange, &c.api_key)[0];
    }
    std::hint::black_box(sink);
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Baseline 2: the storage insert alone, in process, same batch size.
async fn insert_rate(db: &dyn Database, n: u32, batch: u32) -> anyhow::Result<f64> {
    let tenant = db
        .create_tenant(
            &format!("bench-{}", Uuid::now_v7()),
            false,
            audit(Uuid::nil()),
        )
        .await?;
    let store = db
        .create_store(
            NewStore {
                id: Uuid::now_v7(),
                tenant_id: tenant.id,
                name: "bench".into(),
                kind: StoreKind::Database,
                location: None,
                labels: Default::default(),
            },
            audit(tenant.id),
        )
        .await?;
    let rows: Vec<NewCanary> = (0..n)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..16].copy_from_slice(Uuid::new_v4().as_bytes());
            d[16..20].copy_from_slice(&i.to_be_bytes());
            NewCanary {
                id: Uuid::now_v7(),
                tenant_id: tenant.id,
                store_id: store.id,
                exchange: Exchange::Binance,
                lookup_digest: d,
                key_version: 1,
                memo: None,
                labels: Default::default(),
                created_at: chrono::Utc::now(),
                expires_at: None,
            }
        })
        .collect();
    let start = Instant::now();
    for chunk in rows.chunks(batch as usize) {
        db.insert_canaries(chunk, audit(tenant.id)).await?;
    }
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

fn audit(tenant: Uuid) -> NewAudit {
    NewAudit {
        tenant_id: tenant,
        actor_token_id: None,
        action: "bench",
        target_type: "bench",
        target_id: None,
        details: json!({}),
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub(crate) struct Target {
    name: String,
    pub(crate) url: String,
    cleanup: Option<(String, String)>,
}

pub(crate) async fn prepare(backend: &str, postgres_url: &str) -> anyhow::Result<Target> {
    match backend {
        "sqlite" => {
            let path = std::env::temp_dir().join(format!("keytrap-bench-{}.db", Uuid::new_v4()));
            Ok(Target {
                name: "sqlite".into(),
                url: format!("sqlite://{}", path.display()),
                cleanup: None,
            })
        }
        "postgres" => {
            use sqlx::Connection;
            let db = format!(
                "keytrap_bench_{}_{}",
                std::process::id(),
                Uuid::new_v4().simple()
            );
            let mut conn = sqlx::PgConnection::connect(postgres_url)
                .await
                .with_context(|| format!("cannot reach PostgreSQL at {}", postgres_url))?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute(&mut conn)
                .await?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await?;
            let base = postgres_url.rsplit_once('/').map_or("", |(b, _)| b);
            Ok(Target {
                name: "postgres".into(),
                url: format!("{base}/{db}"),
                cleanup: Some((postgres_url.to_string(), db)),
            })
        }
        other => bail!("unknown backend {other:?} (sqlite or postgres)"),
    }
}

pub(crate) async fn cleanup(t: &Target) {
    if let Some((url, db)) = &t.cleanup {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    } else if let Some(path) = t.url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

async fn mint(args: MintArgs) -> anyhow::Result<()> {
    println!("keytrap-bench mint");
    println!("machine: {}", machine());
    println!(
        "inputs: {} {} canaries per backend, {} per API call, {} concurrent calls",
        args.count, args.exchange, args.batch, args.concurrency
    );
    let derive = derivation_rate(args.exchange, args.count.min(50_000));
    println!("baseline derivation (1 thread, no IO): {derive:.0} canaries/s");
    for backend in &args.backends {
        let target = prepare(backend, &args.postgres_url).await?;
        let result = run_backend(&target, &args, derive).await;
        cleanup(&target).await;
        result?;
    }
    Ok(())
}

async fn run_backend(t: &Target, args: &MintArgs, derive: f64) -> anyhow::Result<()> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["serve", &t.url, &format!("127.0.0.1:{port}")])
        .env("KEYTRAP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("server pid")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let store: serde_json::Value = http
        .post(format!("{base}/v1/stores"))
        .header("authorization", &auth)
        .json(&json!({"name": "bench", "kind": "database"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let store_id = store["id"].as_str().context("store id")?.to_string();

    let calls = args.count.div_ceil(args.batch);
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (http, base, auth, store_id, next) = (
            http.clone(),
            base.clone(),
            auth.clone(),
            store_id.clone(),
            next.clone(),
        );
        let (batch, count, exchange) = (args.batch, args.count, args.exchange);
        workers.spawn(async move {
            let mut minted = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return anyhow::Ok(minted);
                }
                let n = batch.min(count - i * batch);
                let resp = http
                    .post(format!("{base}/v1/canaries"))
                    .header("authorization", &auth)
                    .json(&json!({"exchange": exchange, "store_id": store_id, "count": n}))
                    .send()
                    .await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                if status.as_u16() != 201 {
                    bail!("mint failed: {status} {}", String::from_utf8_lossy(&body));
                }
                minted += u64::from(n);
            }
        });
    }
    let mut minted = 0;
    while let Some(r) = workers.join_next().await {
        minted += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mb(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;

    // Baseline 2: the same rows straight into a fresh database of the same backend, in
    // this process, after the server has exited.
    let fresh = prepare(&t.name, &args.postgres_url).await?;
    let insert = async {
        let db: Box<dyn Database> = if t.name == "sqlite" {
            Box::new(keytrap_store_sqlite::SqliteDatabase::connect(&fresh.url).await?)
        } else {
            Box::new(keytrap_store_postgres::PgDatabase::connect(&fresh.url).await?)
        };
        let rate = insert_rate(db.as_ref(), args.count, args.batch).await;
        drop(db);
        rate
    }
    .await;
    cleanup(&fresh).await;
    let insert = insert?;
    let rate = minted as f64 / secs;
    println!(
        "{:<8} API mint: {minted} canaries in {secs:.2} s = {rate:.0} canaries/s; server peak RSS {} MB; \
         ratio to derivation baseline {:.2}, to storage-insert baseline ({insert:.0} rows/s) {:.2}",
        t.name,
        rss.map_or("?".into(), |r| format!("{r:.1}")),
        rate / derive,
        rate / insert,
    );
    Ok(())
}
