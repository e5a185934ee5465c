//! `keytrap-bench alerts`: alert latency from the trap's response to the receiver's
//! receipt, and delivery throughput to a fast receiver, through a real `keytrap serve`
//! (API, trap and worker roles in one child process) per backend.
//!
//! Three runs per backend: idle latency (one hit at a time), throughput, and latency
//! under load (as at idle, while a steady open-loop background of valid canary hits,
//! 500/s by default, runs at the trap through the load generator of `load.rs`).
//!
//! The receiver runs in this process, so the request's send time, the trap's response
//! and the receipt are read from one clock. Baselines measured in the same run: a plain
//! HTTP POST of a same-sized body straight to the receiver (latency), and as many plain
//! POSTs as alerts at the same concurrency as the worker (throughput).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Bytes;
use hmac::Mac;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{cleanup, free_port, machine, prepare, ADMIN_TOKEN};

/// Inputs of `keytrap-bench alerts`.
pub struct AlertArgs {
    /// Sequential hits (each opening an incident) for the idle latency.
    pub samples: usize,
    /// Endpoints for the throughput run (each gets every alert).
    pub endpoints: usize,
    /// Canaries hit once each in the throughput run (alerts = canaries x endpoints).
    pub canaries: u32,
    /// Background canary hits/s during the latency-under-load run (0: skip it).
    pub load_rate: f64,
    /// Canaries the background load cycles through.
    pub load_canaries: u32,
    pub backends: Vec<String>,
    pub postgres_url: String,
}

struct Receipt {
    at: Instant,
    path: String,
    canary: Option<String>,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Receipt>>>,
    notify: Arc<Notify>,
    /// Requests to `/tp` wait until this is true: the throughput run queues its alerts
    /// behind held requests, then releases them all at once.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Receiver {
    fn take(&self) -> Vec<Receipt> {
        std::mem::take(&mut *self.got.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn count(&self, path: &str) -> usize {
        self.got
            .lock()
            .map(|g| g.iter().filter(|r| r.path == path).count())
            .unwrap_or(0)
    }
    /// The receipt time of the first alert about `canary`, waiting up to `limit`.
    async fn wait_canary(&self, canary: &str, limit: Duration) -> Option<Instant> {
        let end = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if let Ok(g) = self.got.lock() {
                if let Some(r) = g.iter().find(|r| r.canary.as_deref() == Some(canary)) {
                    return Some(r.at);
                }
            }
            let left = end.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn start_receiver() -> anyhow::Result<(SocketAddr, Receiver)> {
    let r = Receiver {
        got: Default::default(),
        notify: Default::default(),
        gate: tokio::sync::watch::Sender::new(true),
    };
    let rr = r.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
        let r = rr.clone();
        async move {
            let at = Instant::now();
            let canary = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["data"]["canary"]["id"].as_str().map(str::to_string));
            if let Ok(mut g) = r.got.lock() {
                g.push(Receipt {
                    at,
                    path: uri.path().to_string(),
                    canary,
                });
            }
            r.notify.notify_waiters();
            if uri.path() == "/tp" {
                let _ = r.gate.subscribe().wait_for(|open| *open).await;
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, r))
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn ms_between(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// (canary id, api key, secret) of `n` new Binance canaries in a new store.
    async fn canaries(&self, store: &str, n: u32) -> anyhow::Result<Vec<(String, String, String)>> {
        Ok(self.canaries_in(store, n).await?.1)
    }

    /// The new store's id and (canary id, api key, secret) of `n` Binance canaries in it.
    async fn canaries_in(
        &self,
        store: &str,
        n: u32,
    ) -> anyhow::Result<(String, Vec<(String, String, String)>)> {
        let s = self
            .call(
                reqwest::Method::POST,
                "/v1/stores",
                Some(json!({"name": store, "kind": "database"})),
            )
            .await?;
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(10_000);
            let m = self
                .call(
                    reqwest::Method::POST,
                    "/v1/canaries",
                    Some(json!({"exchange": "binance", "store_id": s["id"], "count": k})),
                )
                .await?;
            for c in m["canaries"].as_array().context("mint answer")? {
                out.push((
                    c["id"].as_str().context("id")?.to_string(),
                    c["credentials"]["api_key"]
                        .as_str()
                        .context("key")?
                        .to_string(),
                    c["credentials"]["api_secret"]
                        .as_str()
                        .context("secret")?
                        .to_string(),
                ));
            }
            left -= k;
        }
        Ok((s["id"].as_str().context("store id")?.to_string(), out))
    }
}

/// A signed Binance account read with the canary: opens its incident.
async fn hit(http: &reqwest::Client, trap: &str, key: &str, secret: &str) -> anyhow::Result<()> {
    let q = format!(
        "recvWindow=10000&timestamp={}",
        chrono::Utc::now().timestamp_millis()
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(q.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let url = format!("{trap}/binance/api/v3/account?{q}&signature={sig}");
    let send = || http.get(&url).header("X-MBX-APIKEY", key).send();
    let r = match send().await {
        Ok(r) => r,
        // A pooled keep-alive connection the trap closed as idle (its header-read
        // timeout) is reset when reused: once, send again on a new one (should the first
        // have reached the trap after all, the second only counts on its incident).
        Err(e) if !e.is_timeout() => {
            eprintln!("note: trap request failed ({e}); sending it again");
            send().await?
        }
        Err(e) => return Err(e.into()),
    };
    if !r.status().is_success() {
        bail!("trap answered {}", r.status());
    }
    r.bytes().await?;
    Ok(())
}

/// One canary hit at a time (each opens its incident), `gap` apart: for each, the
/// alert's receipt minus the trap's response, and minus the request's send time (ms).
async fn latency_samples(
    http: &reqwest::Client,
    trap: &str,
    rx: &Receiver,
    canaries: &[(String, String, String)],
    gap: Duration,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut from_resp, mut from_req) = (Vec::new(), Vec::new());
    for (id, key, secret) in canaries {
        let t0 = Instant::now();
        hit(http, trap, key, secret).await?;
        let t_resp = Instant::now();
        let at = rx
            .wait_canary(id, Duration::from_secs(10))
            .await
            .with_context(|| format!("no alert for canary {id} within 10 s"))?;
        from_resp.push(ms_between(at, t_resp));
        from_req.push(ms_between(at, t0));
        tokio::time::sleep(gap).await;
    }
    Ok((from_resp, from_req))
}

/// Alert latency while a steady background of valid canary hits (signed Binance account
/// reads, open loop at `load_rate`/s over `load_canaries` canaries) runs at the trap.
/// The background canaries are hit once first, so during the measurement they only
/// count hits on open incidents (no alert of their own); the sampled canaries each open
/// a new incident, alerted to one endpoint filtered to their store.
async fn under_load(
    args: &AlertArgs,
    backend: &str,
    api: &Api,
    trap_addr: SocketAddr,
    rx_addr: SocketAddr,
    rx: &Receiver,
) -> anyhow::Result<()> {
    let trap = format!("http://{trap_addr}");
    let http = reqwest::Client::new();
    let (_, bg) = api.canaries_in("bench-load", args.load_canaries).await?;
    let (lat_store, lat) = api
        .canaries_in("bench-latency-load", args.samples as u32)
        .await?;
    let hook = api
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(json!({
                "url": format!("http://{rx_addr}/latency-load"),
                "events": ["incident.opened"],
                "store_ids": [lat_store],
            })),
        )
        .await?;
    let mut creds = Vec::with_capacity(bg.len());
    for (_, key, secret) in &bg {
        hit(&http, &trap, key, secret).await?;
        creds.push(crate::load::Cred::new(
            crate::load::Venue::Binance,
            key,
            secret,
        )?);
    }
    rx.take();
    // Samples 50 ms apart (about 12 alerts/s on top of the load), after 1 s of load. The
    // open-loop load has a fixed length: twice the gap per sample leaves each sample
    // 50 ms for its alert before the samples would outlast the load (warned below).
    let gap = Duration::from_millis(50);
    let span = Duration::from_secs(2) + gap * (lat.len() as u32) * 2;
    let load = tokio::spawn(crate::load::run(crate::load::Plan {
        addr: trap_addr,
        creds: Arc::new(creds),
        expect: crate::load::Expect::Valid,
        connections: 32,
        warmup: Duration::ZERO,
        duration: span,
        rate: Some(args.load_rate),
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let sampled = latency_samples(&http, &trap, rx, &lat, gap).await;
    let sampled_for = t0.elapsed();
    let report = load.await.context("load generator panicked")??;
    let (mut from_resp, mut from_req) = sampled?;
    if sampled_for + Duration::from_secs(1) > span {
        println!(
            "{backend}: warning: the samples took {:.1} s, longer than the load ({:.1} s)",
            sampled_for.as_secs_f64(),
            span.as_secs_f64() - 1.0
        );
    }
    println!(
        "{backend}: alert latency under load ({:.0} canary hits/s achieved, target {:.0}; \
         {} background requests, {} errors, trap p50 {:.2} ms, p99 {:.2} ms): \
         trap response -> receipt: p50 {:.2} ms, p99 {:.2} ms; request sent -> receipt: \
         p50 {:.2} ms, p99 {:.2} ms ({} alerts)",
        report.rate(),
        args.load_rate,
        report.count,
        report.errors,
        report.quantile_ms(0.5),
        report.quantile_ms(0.99),
        quantile(&mut from_resp, 0.5),
        quantile(&mut from_resp, 0.99),
        quantile(&mut from_req, 0.5),
        quantile(&mut from_req, 0.99),
        from_resp.len(),
    );
    for e in &report.error_samples {
        println!("{backend}:   background error: {e}");
    }
    let id = hook["id"].as_str().context("webhook id")?;
    api.call(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await?;
    Ok(())
}

/// `n` plain POSTs of `body` to `url`, `conc` at a time; requests/s.
async fn plain_posts(url: &str, body: &[u8], n: usize, conc: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (http, next, url, body) = (http.clone(), next.clone(), url.to_string(), body.to_vec());
        tasks.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                http.post(&url)
                    .body(body.clone())
                    .send()
                    .await?
                    .bytes()
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

pub async fn run(args: AlertArgs) -> anyhow::Result<()> {
    println!("keytrap-bench alerts");
    println!("machine: {}", machine());
    let (rx_addr, rx) = start_receiver().await?;
    let sample_body = vec![b'x'; 2048];

    // Baseline latency: a plain POST of an alert-sized body, send -> receipt.
    let http = reqwest::Client::new();
    let mut base = Vec::new();
    for _ in 0..args.samples.max(1) {
        let t0 = Instant::now();
        http.post(format!("http://{rx_addr}/baseline"))
            .body(sample_body.clone())
            .send()
            .await?
            .bytes()
            .await?;
        if let Some(r) = rx.take().into_iter().next() {
            base.push(ms_between(r.at, t0));
        }
    }
    let base_p50 = quantile(&mut base, 0.5);
    println!(
        "baseline: plain POST send -> receipt p50 {base_p50:.2} ms, p99 {:.2} ms ({} samples)",
        quantile(&mut base, 0.99),
        base.len()
    );

    for backend in &args.backends {
        let target = prepare(backend, &args.postgres_url).await?;
        let api_port = free_port()?;
        let trap_port = free_port()?;
        let api_addr: SocketAddr = format!("127.0.0.1:{api_port}").parse()?;
        let trap_addr: SocketAddr = format!("127.0.0.1:{trap_port}").parse()?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "serve",
                &target.url,
                &api_addr.to_string(),
                "--trap-listen",
                &trap_addr.to_string(),
                "--worker",
            ])
            .env("KEYTRAP_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let res = run_backend(&args, backend, api_addr, trap_addr, rx_addr, &rx, base_p50).await;
        drop(child);
        tokio::time::sleep(Duration::from_millis(200)).await;
        cleanup(&target).await;
        res?;
    }
    Ok(())
}

async fn run_backend(
    args: &AlertArgs,
    backend: &str,
    api_addr: SocketAddr,
    trap_addr: SocketAddr,
    rx_addr: SocketAddr,
    rx: &Receiver,
    base_p50: f64,
) -> anyhow::Result<()> {
    crate::trap::wait_tcp(api_addr).await?;
    crate::trap::wait_tcp(trap_addr).await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{api_addr}"),
    };
    let trap = format!("http://{trap_addr}");
    let http = reqwest::Client::new();

    // Idle latency: one hit at a time, each opening a new canary incident.
    let lat = api.canaries("bench-latency", args.samples as u32).await?;
    let hook = api
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(
                json!({"url": format!("http://{rx_addr}/latency"), "events": ["incident.opened"]}),
            ),
        )
        .await?;
    rx.take();
    // Idle: 30 ms between hits lets the worker go back to sleep before the next one.
    let (mut from_resp, mut from_req) =
        latency_samples(&http, &trap, rx, &lat, Duration::from_millis(30)).await?;
    let p50 = quantile(&mut from_resp, 0.5);
    let req_p50 = quantile(&mut from_req, 0.5);
    println!(
        "{backend}: alert latency at idle, trap response -> receipt: p50 {p50:.2} ms, p99 {:.2} ms; \
         request sent -> receipt: p50 {req_p50:.2} ms, p99 {:.2} ms ({} alerts); \
         ratio of the request -> receipt p50 to a plain POST's {:.0}",
        quantile(&mut from_resp, 0.99),
        quantile(&mut from_req, 0.99),
        from_resp.len(),
        req_p50 / base_p50,
    );
    let id = hook["id"].as_str().context("webhook id")?;
    api.call(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None)
        .await?;

    // Throughput: every canary hit once, every endpoint gets every incident.opened.
    let tp = api.canaries("bench-throughput", args.canaries).await?;
    let mut tp_hooks = Vec::with_capacity(args.endpoints);
    for _ in 0..args.endpoints {
        let h = api
            .call(
                reqwest::Method::POST,
                "/v1/webhooks",
                Some(json!({"url": format!("http://{rx_addr}/tp"), "events": ["incident.opened"]})),
            )
            .await?;
        tp_hooks.push(h["id"].as_str().context("webhook id")?.to_string());
    }
    rx.take();
    rx.gate.send_replace(false);
    let want = tp.len() * args.endpoints;
    let t0 = Instant::now();
    let tp = Arc::new(tp);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, tp, next, trap) = (http.clone(), tp.clone(), next.clone(), trap.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, key, secret)) = tp.get(i) else {
                    break;
                };
                hit(&http, &trap, key, secret).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let hits_done = t0.elapsed();
    // Every endpoint's slots are now held by the closed gate and the rest of the alerts
    // wait in the queue; give fan-out a moment, then open the gate and time the drain.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = Instant::now();
    rx.gate.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(300);
    while rx.count("/tp") < want {
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} alerts arrived within 300 s",
                rx.count("/tp")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rx.take();
    let held = got.iter().filter(|r| r.at < released).count();
    let last = got.iter().map(|r| r.at).max().context("no receipt")?;
    let span = last.duration_since(released).as_secs_f64().max(1e-6);
    let rate = (want - held) as f64 / span;
    let baseline = plain_posts(
        &format!("http://{rx_addr}/baseline"),
        &vec![b'x'; 2048],
        want,
        64,
    )
    .await?;
    rx.take();
    println!(
        "{backend}: delivery throughput {rate:.0} webhooks/s ({want} alerts = {} hits x {} endpoints; \
         {held} held at the closed receiver, the other {} delivered in {span:.2} s after release; \
         hits sent in {:.2} s); plain POSTs of 2 kB at concurrency 64: {baseline:.0} req/s; ratio {:.2}",
        args.canaries,
        args.endpoints,
        want - held,
        hits_done.as_secs_f64(),
        rate / baseline,
    );

    // Last, so the throughput run starts from the same state as before it existed.
    for id in &tp_hooks {
        api.call(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None)
            .await?;
    }
    if args.load_rate > 0.0 {
        under_load(args, backend, &api, trap_addr, rx_addr, rx).await?;
    }
    Ok(())
}
