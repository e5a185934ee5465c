//! `keytrap-bench trap`: throughput and latency of the trap, against a bare axum handler
//! measured in the same run on the same machine.
//!
//! Three servers, each a child process (this binary re-executed, so its RSS and CPU are
//! its own): the baseline (a bare axum handler returning a small JSON), and the real
//! `keytrap serve` (API + trap roles) on a fresh database per backend. The load
//! generator (this process) signs every request on the fly with credentials it got from
//! `POST /v1/canaries` (or random well-formed keys for the unknown-key case). The
//! baseline is measured again before each backend's trap runs, and that backend's
//! ratios are to it (the host's speed drifts over minutes).
//!
//! Every closed loop runs at each of the `--connections` levels, and each server's peak
//! over them is its throughput: the bare handler is CPU-bound from the lowest level on,
//! while the trap, which holds every authenticated answer until its group commit, needs
//! more requests in flight to fill its batches (docs/benchmarks.md).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::load::{self, Cred, Expect, Plan, Report, Venue};
use crate::{cleanup, free_port, machine, prepare, ADMIN_TOKEN};

/// Inputs of `keytrap-bench trap`.
pub struct TrapArgs {
    pub duration: Duration,
    pub warmup: Duration,
    /// Connection levels, ascending; each closed-loop run is made at every level.
    pub connections: Vec<usize>,
    pub canaries: u32,
    pub unknown_keys: usize,
    pub rate_fraction: f64,
    pub backends: Vec<String>,
    pub postgres_url: String,
}

/// The bare baseline server: one axum handler answering every path with a small JSON,
/// served like the trap (axum::serve with connect info) on tokio's default multi-threaded
/// runtime: a worker per core, where the trap's `keytrap serve` runtime has one worker
/// fewer and its recorder thread.
pub async fn baseline_serve(listen: String) -> anyhow::Result<()> {
    use axum::response::IntoResponse;
    async fn answer() -> axum::response::Response {
        // About the size of the trap's invalid-key answers (80-120 bytes).
        axum::Json(json!({
            "code": 0,
            "msg": "baseline: a bare axum handler answering every path",
            "serverTime": chrono::Utc::now().timestamp_millis(),
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let app = axum::Router::new().fallback(answer);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// A server child process, killed on drop.
struct Child {
    child: tokio::process::Child,
    pid: u32,
}

impl Child {
    fn spawn(args: &[&str]) -> anyhow::Result<Child> {
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        // For experiments: the trap server's runtime workers alone (the baseline and the
        // load generator keep their default runtimes).
        if let (Some("serve"), Some(n)) = (
            args.first().copied(),
            std::env::var_os("KEYTRAP_BENCH_SERVE_WORKERS"),
        ) {
            cmd.env("TOKIO_WORKER_THREADS", n);
        }
        let child = cmd
            .args(args)
            .env("KEYTRAP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("child pid")?;
        Ok(Child { child, pid })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

pub(crate) async fn wait_tcp(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("server at {addr} did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Samples a child's VmRSS every 50 ms until stopped; keeps the peak (kB).
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmRSS:") {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { peak, stop, task }
    }

    async fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// One measured run with the server's and the client's CPU over it.
struct Measured {
    report: Report,
    server_cpu: f64,
    client_cpu: f64,
    wall: f64,
}

async fn measure(pid: u32, plan: Plan) -> anyhow::Result<Measured> {
    let tick = 100.0; // USER_HZ on Linux
    let (s0, c0) = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let t0 = Instant::now();
    let report = load::run(plan).await?;
    let wall = t0.elapsed().as_secs_f64();
    let (s1, c1) = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let share = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 / tick / wall,
        _ => f64::NAN,
    };
    Ok(Measured {
        report,
        server_cpu: share(s0, s1),
        client_cpu: share(c0, c1),
        wall,
    })
}

fn line(name: &str, m: &Measured, baseline: Option<f64>) {
    let r = &m.report;
    let ratio = baseline.map_or(String::new(), |b| {
        format!("; ratio to baseline {:.2}", r.rate() / b)
    });
    // Server CPU per request: less sensitive than req/s to what else runs on the cores.
    let us_per_req = m.server_cpu * m.wall / r.completed.max(1) as f64 * 1e6;
    println!(
        "  {name:<34} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}/{}  body {:.0} B  \
         CPU server {:.2} client {:.2} cores, server {us_per_req:.0} us/req{ratio}",
        r.rate(),
        r.quantile_ms(0.50),
        r.quantile_ms(0.99),
        r.errors,
        r.count,
        r.mean_body,
        m.server_cpu,
        m.client_cpu,
    );
    for s in &r.error_samples {
        println!("      error: {s}");
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn unknown_creds(n: usize) -> anyhow::Result<Arc<Vec<Cred>>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n.max(2) {
        let venue = if i % 2 == 0 {
            Venue::Binance
        } else {
            Venue::Bybit
        };
        v.push(Cred::random(venue)?);
    }
    Ok(Arc::new(v))
}

/// The bare handler at every connection level, printed; returns its peak (req/s).
async fn baseline(args: &TrapArgs, unknown: &Arc<Vec<Cred>>) -> anyhow::Result<f64> {
    // The same signed requests (so the client does the same work) against a bare handler.
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = Child::spawn(&["baseline-serve", &addr.to_string()])?;
    wait_tcp(addr).await?;
    let rss = RssSampler::start(child.pid);
    let mut base = Vec::new();
    for &connections in &args.connections {
        let plan = Plan {
            addr,
            creds: unknown.clone(),
            expect: Expect::Ok200,
            connections,
            warmup: args.warmup,
            duration: args.duration,
            rate: None,
        };
        base.push((connections, measure(child.pid, plan).await?));
    }
    let base_rss = rss.finish().await;
    child.stop().await;
    println!("baseline (bare axum handler, peak RSS {base_rss:.1} MB):");
    for (connections, m) in &base {
        line(&format!("closed loop, {connections} conns"), m, None);
    }
    let (base_conns, base_peak) = &base[peak_index(base.iter().map(|(_, m)| m.report.rate()))];
    let base_rate = base_peak.report.rate();
    println!(
        "  peak: {base_rate:.0} req/s at {base_conns} connections: the baseline of the ratios \
         of the trap run that follows"
    );
    Ok(base_rate)
}

/// Runs the whole benchmark.
pub async fn run(args: TrapArgs) -> anyhow::Result<()> {
    println!("keytrap-bench trap");
    println!(
        "machine: {}; load average at start {}",
        machine(),
        loadavg()
    );
    println!(
        "inputs: closed loops at {} keep-alive connections (HTTP/1.1), each server's peak over \
         those levels taken as its throughput; {:.1} s warm-up + {:.1} s per closed-loop run, \
         {} canaries per exchange (Binance, Bybit), {} random unknown keys, open loop at {:.0}% \
         of the measured canary maximum; backends {}",
        args.connections
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64(),
        args.canaries,
        args.unknown_keys,
        args.rate_fraction * 100.0,
        args.backends.join(","),
    );
    println!(
        "requests: GET /binance/api/v3/account (HMAC-SHA256 of the query, X-MBX-APIKEY) and \
         GET /bybit/v5/account/wallet-balance?accountType=UNIFIED (X-BAPI-* headers), alternating, \
         each signed when sent"
    );
    println!(
        "note: the load generator runs in this process on the same cores as the server; \
         both CPU shares are printed per run"
    );
    let unknown = unknown_creds(args.unknown_keys)?;

    for backend in &args.backends {
        // Each backend's ratios are to a baseline measured just before its own runs: the
        // host's speed drifts over minutes (docs/benchmarks.md, session 17), and a second
        // backend's runs start minutes after the first one's.
        let base_rate = baseline(&args, &unknown).await?;
        let target = prepare(backend, &args.postgres_url).await?;
        let result = run_backend(&target.url, backend, &args, &unknown, base_rate).await;
        cleanup(&target).await;
        result?;
    }
    Ok(())
}

async fn run_backend(
    db_url: &str,
    backend: &str,
    args: &TrapArgs,
    unknown: &Arc<Vec<Cred>>,
    base_rate: f64,
) -> anyhow::Result<()> {
    let api_port = free_port()?;
    let trap_port = free_port()?;
    let health_port = free_port()?;
    let metrics = format!("http://127.0.0.1:{health_port}/metrics");
    let api = format!("http://127.0.0.1:{api_port}");
    let trap: SocketAddr = format!("127.0.0.1:{trap_port}").parse()?;
    let child = Child::spawn(&[
        "serve",
        db_url,
        &format!("127.0.0.1:{api_port}"),
        "--trap-listen",
        &trap.to_string(),
        "--health-listen",
        &format!("127.0.0.1:{health_port}"),
    ])?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{api}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("keytrap serve did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_tcp(trap).await?;

    // PostgreSQL's checkpoint activity is read around each run, so that slow commits
    // and latency tails can be checked against it (docs/benchmarks.md, session 16).
    let pg = (backend == "postgres").then_some(db_url);
    let creds = mint(&http, &api, args.canaries).await?;
    let rss = RssSampler::start(child.pid);
    let plan = |creds: &Arc<Vec<Cred>>, expect, connections, rate: Option<f64>| Plan {
        addr: trap,
        creds: creds.clone(),
        expect,
        connections,
        warmup: if rate.is_some() {
            Duration::ZERO
        } else {
            args.warmup
        },
        duration: args.duration,
        rate,
    };
    // Each closed loop at every level, with the group-commit counters around each run.
    let mut unk = Vec::new();
    let mut valid = Vec::new();
    for (runs, set, expect) in [
        (&mut unk, unknown, Expect::InvalidKey),
        (&mut valid, &creds, Expect::Valid),
    ] {
        for &connections in &args.connections {
            let before = Commits::read(&http, &metrics, pg).await?;
            let m = measure(child.pid, plan(set, expect, connections, None)).await?;
            let after = Commits::read(&http, &metrics, pg).await?;
            runs.push((connections, m, after.minus(&before)));
        }
    }
    let (unk_conns, unk_peak, _) = &unk[peak_index(unk.iter().map(|(_, m, _)| m.report.rate()))];
    let (valid_conns, valid_peak, _) =
        &valid[peak_index(valid.iter().map(|(_, m, _)| m.report.rate()))];
    // The open loop at a fraction of the canary peak, over as many connections as the
    // peak took (latency counts from each request's scheduled time).
    let target_rate = valid_peak.report.rate() * args.rate_fraction;
    let before = Commits::read(&http, &metrics, pg).await?;
    let open = measure(
        child.pid,
        plan(
            &creds,
            Expect::Valid,
            *valid_conns,
            Some(target_rate.max(1.0)),
        ),
    )
    .await?;
    let open_commits = Commits::read(&http, &metrics, pg).await?.minus(&before);
    let peak_rss = rss.finish().await;
    let hwm = status_kb(child.pid, "VmHWM:").map_or(f64::NAN, |k| k as f64 / 1024.0);

    // Every 200 must be a committed hit: count valid-signature hits through the API.
    let answered =
        valid.iter().map(|(_, m, _)| m.report.ok_total).sum::<u64>() + open.report.ok_total;
    let recorded = count_valid_hits(&http, &api).await?;
    child.stop().await;

    println!("trap on {backend} (keytrap serve, API + trap roles; peak RSS sampled {peak_rss:.1} MB, VmHWM {hwm:.1} MB):");
    for (what, runs) in [("unknown keys", &unk), ("valid canaries", &valid)] {
        for (connections, m, commits) in runs {
            line(&format!("{what}, {connections} conns"), m, Some(base_rate));
            commits.print(m);
        }
    }
    println!(
        "  peaks: unknown keys {:.0} req/s at {unk_conns} connections, valid canaries {:.0} req/s \
         at {valid_conns}",
        unk_peak.report.rate(),
        valid_peak.report.rate()
    );
    line(
        &format!("valid canaries, open loop {target_rate:.0}/s"),
        &open,
        Some(base_rate),
    );
    open_commits.print(&open);
    let (late, from_send) = (&open.report.late_us, &open.report.from_send_us);
    println!(
        "      where the latency went: sent after its scheduled time p50 {:.2} ms, p99 {:.2} ms, \
         max {:.2} ms (tokio's millisecond timer, and the load generator waiting for a core); from the send \
         to the whole answer p50 {:.2} ms, p99 {:.2} ms",
        load::quantile_ms(late, 0.50),
        load::quantile_ms(late, 0.99),
        load::quantile_ms(late, 1.0),
        load::quantile_ms(from_send, 0.50),
        load::quantile_ms(from_send, 0.99),
    );
    println!(
        "  hits: {answered} answered 200 (warm-up included), {recorded} valid-signature hits \
         recorded -> {}",
        if recorded >= answered {
            "every answered hit was committed"
        } else {
            "MISSING HITS"
        }
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let vr = valid_peak.report.rate() / base_rate;
    let ur = unk_peak.report.rate() / base_rate;
    let p99 = open.report.quantile_ms(0.99);
    println!(
        "  targets: canary throughput >= 0.25 x baseline: {vr:.3} {}; p99 < 20 ms at half that rate: \
         {p99:.2} ms {}; unknown keys >= 0.60 x baseline: {ur:.3} {}; RSS < 100 MB: {:.1} MB {}",
        verdict(vr >= 0.25),
        verdict(p99 < 20.0),
        verdict(ur >= 0.60),
        peak_rss.max(hwm),
        verdict(peak_rss.max(hwm) < 100.0),
    );
    let errors = unk
        .iter()
        .chain(&valid)
        .map(|(_, m, _)| m.report.errors)
        .sum::<u64>()
        + open.report.errors;
    if errors > 0 {
        bail!("{errors} wrong answers from the trap on {backend}");
    }
    if recorded < answered {
        bail!("{answered} canary requests answered 200 but only {recorded} hits recorded");
    }
    Ok(())
}

/// The trap's group-commit counters from `/metrics`.
#[derive(Debug, Default)]
struct Commits {
    events: f64,
    commits: f64,
    busy_seconds: f64,
    /// Database calls timed, and those done within 5 ms and within 20 ms.
    timed: f64,
    within_5ms: f64,
    within_20ms: f64,
    /// The idle floor answers that commit alone are held to (timing stealth), seconds.
    idle_floor: f64,
    /// PostgreSQL's checkpoints so far and the buffers they wrote (cluster-wide), when
    /// the backend is PostgreSQL and its statistics could be read.
    pg_checkpoints: Option<(i64, i64)>,
}

/// Checkpoints the PostgreSQL cluster has started (timed and requested) and the buffers
/// checkpoints have written, from `pg_stat_checkpointer` (PostgreSQL 17+) or
/// `pg_stat_bgwriter`; `None` if neither can be read. A checkpoint spreads its writes
/// over minutes (`checkpoint_completion_target`), so buffers written during a run show
/// one in progress even when none started in it.
async fn pg_checkpoints(url: &str) -> Option<(i64, i64)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    for sql in [
        "SELECT (num_timed + num_requested)::int8, buffers_written::int8 FROM pg_stat_checkpointer",
        "SELECT (checkpoints_timed + checkpoints_req)::int8, buffers_checkpoint::int8 FROM pg_stat_bgwriter",
    ] {
        if let Ok(n) = sqlx::query_as::<_, (i64, i64)>(sql)
            .fetch_one(&mut conn)
            .await
        {
            let _ = conn.close().await;
            return Some(n);
        }
    }
    None
}

impl Commits {
    async fn read(http: &reqwest::Client, url: &str, pg: Option<&str>) -> anyhow::Result<Commits> {
        let text = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let value = |name: &str| -> anyhow::Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("{name} missing from /metrics"))?
                .trim()
                .parse()
                .with_context(|| format!("{name} is not a number"))
        };
        Ok(Commits {
            events: value("keytrap_trap_events_committed_total")?,
            commits: value("keytrap_trap_commits_total")?,
            busy_seconds: value("keytrap_trap_commit_seconds_total")?,
            timed: value("keytrap_trap_commit_duration_seconds_count")?,
            within_5ms: value("keytrap_trap_commit_duration_seconds_bucket{le=\"0.005\"}")?,
            within_20ms: value("keytrap_trap_commit_duration_seconds_bucket{le=\"0.02\"}")?,
            idle_floor: value("keytrap_trap_idle_floor_seconds")?,
            pg_checkpoints: match pg {
                Some(u) => pg_checkpoints(u).await,
                None => None,
            },
        })
    }

    /// The counters' change since `before` (the idle floor as it is now).
    fn minus(&self, before: &Commits) -> Commits {
        Commits {
            events: self.events - before.events,
            commits: self.commits - before.commits,
            busy_seconds: self.busy_seconds - before.busy_seconds,
            timed: self.timed - before.timed,
            within_5ms: self.within_5ms - before.within_5ms,
            within_20ms: self.within_20ms - before.within_20ms,
            idle_floor: self.idle_floor,
            pg_checkpoints: self
                .pg_checkpoints
                .zip(before.pg_checkpoints)
                .map(|((n, w), (n0, w0))| (n - n0, w - w0)),
        }
    }

    /// Prints a run's share of the counters (from [`minus`](Self::minus)): events per
    /// transaction, transactions per second, and how busy the single writer was (its time
    /// in the database over wall time).
    fn print(&self, m: &Measured) {
        let (events, commits, busy) = (self.events, self.commits, self.busy_seconds);
        // Both the counters and the wall time span the warm-up too.
        let wall = m.wall.max(1e-9);
        let timed = self.timed;
        println!(
            "      group commit: {:.1} events/commit, {:.0} commits/s, {:.0} us/commit, writer busy {:.0}%; \
             commits over 5 ms: {:.0}, over 20 ms: {:.0}; idle floor at the end {:.1} ms",
            events / commits.max(1.0),
            commits / wall,
            busy / commits.max(1.0) * 1e6,
            busy / wall * 100.0,
            timed - self.within_5ms,
            timed - self.within_20ms,
            self.idle_floor * 1e3,
        );
        if let Some((started, written)) = self.pg_checkpoints {
            println!(
                "      PostgreSQL during the run: {started} checkpoints started, {written} \
                 buffers written by checkpoints"
            );
        }
    }
}

/// Index of the highest rate (the first on ties; NaN, a run with no rate, never wins
/// over a number). `rates` is never empty.
fn peak_index(rates: impl IntoIterator<Item = f64>) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, rate) in rates.into_iter().enumerate() {
        match best {
            Some((_, top)) if !(rate > top || (top.is_nan() && !rate.is_nan())) => {}
            _ => best = Some((i, rate)),
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Mints `n` Binance and `n` Bybit canaries through the API; returns their credentials,
/// interleaved, exactly as the mint response gave them.
async fn mint(http: &reqwest::Client, api: &str, n: u32) -> anyhow::Result<Arc<Vec<Cred>>> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let store: serde_json::Value = http
        .post(format!("{api}/v1/stores"))
        .header("authorization", &auth)
        .json(&json!({"name": "bench-trap", "kind": "database"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let store_id = store["id"].as_str().context("store id")?;
    let mut per = Vec::new();
    for (exchange, venue) in [("binance", Venue::Binance), ("bybit", Venue::Bybit)] {
        let resp = http
            .post(format!("{api}/v1/canaries"))
            .header("authorization", &auth)
            .json(&json!({"exchange": exchange, "store_id": store_id, "count": n.max(1)}))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        if status.as_u16() != 201 {
            bail!("mint {exchange} failed: {status} {body}");
        }
        let mut v = Vec::new();
        for c in body["canaries"].as_array().context("canaries")? {
            let cr = &c["credentials"];
            v.push(Cred::new(
                venue,
                cr["api_key"].as_str().context("api_key")?,
                cr["api_secret"].as_str().context("api_secret")?,
            )?);
        }
        per.push(v);
    }
    let mut out = Vec::new();
    let mut its: Vec<_> = per.into_iter().map(Vec::into_iter).collect();
    loop {
        let mut any = false;
        for it in &mut its {
            if let Some(c) = it.next() {
                out.push(c);
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    Ok(Arc::new(out))
}

/// Pages through `GET /v1/hits` and counts hits whose signature was valid.
async fn count_valid_hits(http: &reqwest::Client, api: &str) -> anyhow::Result<u64> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut after: Option<String> = None;
    let mut n = 0u64;
    loop {
        let mut url = format!("{api}/v1/hits?limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: serde_json::Value = http
            .get(url)
            .header("authorization", &auth)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let hits = page["hits"].as_array().context("hits")?;
        n += hits
            .iter()
            .filter(|h| h["signature_state"] == "valid")
            .count() as u64;
        match page["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_fastest_run() {
        assert_eq!(peak_index([100.0, 300.0, 200.0]), 1);
        assert_eq!(peak_index([100.0, 90.0, 80.0]), 0);
        assert_eq!(peak_index([5.0, 5.0, 7.0, 7.0]), 2, "first of equals");
        assert_eq!(peak_index([f64::NAN, 1.0, f64::NAN]), 1, "NaN never wins");
        assert_eq!(peak_index([42.0]), 0);
    }
}
