//! The load generator: signs exchange requests on the fly, like the exchanges' clients,
//! and sends them over N keep-alive HTTP/1.1 connections (one hyper connection per
//! worker, no pool, so the client's own cost stays small next to the server's).
//!
//! Two modes: closed loop (each connection sends its next request as soon as the answer
//! is in: maximum throughput) and open loop (requests scheduled at a fixed rate; each
//! latency runs from the request's scheduled time, so a stalled server is not hidden by
//! the client waiting for it). The open loop waits for each slot on tokio's timer, which
//! fires on whole milliseconds: requests go out about 1 ms after their scheduled time,
//! and that is inside every latency (the report keeps how late each was sent). A thread
//! releasing slots after a precise sleep cost the client more CPU than it took off the
//! latency on two cores (docs/benchmarks.md, session 17).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rand::distr::{Alphanumeric, SampleString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The exchange a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Venue {
    Binance,
    Bybit,
}

/// A key pair the generator signs with, HMAC state keyed once.
#[derive(Clone)]
pub struct Cred {
    venue: Venue,
    key: String,
    mac: HmacSha256,
}

impl Cred {
    /// A credential from a mint response (or any key/secret pair).
    pub fn new(venue: Venue, key: &str, secret: &str) -> anyhow::Result<Cred> {
        let mac = HmacSha256::new_from_slice(secret.as_bytes()).context("hmac key")?;
        Ok(Cred {
            venue,
            key: key.to_string(),
            mac,
        })
    }

    /// A random key of the exchange's own format (Binance 64 alphanumerics with a 64-char
    /// secret; Bybit 18 with a 36-char secret): one the trap has never minted.
    pub fn random(venue: Venue) -> anyhow::Result<Cred> {
        let mut rng = rand::rng();
        let (k, s) = match venue {
            Venue::Binance => (64, 64),
            Venue::Bybit => (18, 36),
        };
        Cred::new(
            venue,
            &Alphanumeric.sample_string(&mut rng, k),
            &Alphanumeric.sample_string(&mut rng, s),
        )
    }

    fn sign(&self, payload: &str) -> String {
        let mut m = self.mac.clone();
        m.update(payload.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// A balance request signed now, as ccxt signs it.
    fn request(&self, host: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
        let now = chrono::Utc::now().timestamp_millis();
        let b = Request::get("/")
            .header("host", host)
            .header("user-agent", "keytrap-bench/0.1");
        let req = match self.venue {
            Venue::Binance => {
                // Signed payload: the query string itself (GET has no body).
                let q = format!("timestamp={now}&recvWindow=10000");
                let sig = self.sign(&q);
                b.uri(format!("/binance/api/v3/account?{q}&signature={sig}"))
                    .header("x-mbx-apikey", &self.key)
            }
            Venue::Bybit => {
                let q = "accountType=UNIFIED";
                let recv = "5000";
                let sig = self.sign(&format!("{now}{}{recv}{q}", self.key));
                b.uri(format!("/bybit/v5/account/wallet-balance?{q}"))
                    .header("x-bapi-api-key", &self.key)
                    .header("x-bapi-timestamp", now.to_string())
                    .header("x-bapi-recv-window", recv)
                    .header("x-bapi-sign", sig)
            }
        };
        Ok(req.body(Empty::new())?)
    }
}

/// What a correct answer looks like in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any 200 (the bare baseline server).
    Ok200,
    /// The exchange's "invalid API key" answer: Binance 401 `-2015`, Bybit 200 `10003`.
    InvalidKey,
    /// A funded account: HTTP 200 (Bybit also `retCode` 0).
    Valid,
}

fn check(expect: Expect, venue: Venue, status: u16, body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    match (expect, venue) {
        (Expect::Ok200, _) => status == 200,
        (Expect::InvalidKey, Venue::Binance) => status == 401 && has(b"\"code\":-2015"),
        (Expect::InvalidKey, Venue::Bybit) => status == 200 && has(b"\"retCode\":10003"),
        (Expect::Valid, Venue::Binance) => status == 200,
        (Expect::Valid, Venue::Bybit) => status == 200 && has(b"\"retCode\":0,"),
    }
}

/// One run's inputs.
#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    /// Cycled through by the workers (worker w starts at w).
    pub creds: Arc<Vec<Cred>>,
    pub expect: Expect,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// `Some(r)`: open loop at r requests/s; `None`: closed loop.
    pub rate: Option<f64>,
}

/// One run's outcome.
#[derive(Default)]
pub struct Report {
    /// Requests completed in the measured window (closed loop) or scheduled (open loop).
    pub count: u64,
    /// Of those, wrong answers or transport errors.
    pub errors: u64,
    /// A few wrong answers, for the output.
    pub error_samples: Vec<String>,
    /// Correct answers over the whole run, warm-up included (for the hit count check).
    pub ok_total: u64,
    /// Every answer received over the whole run, warm-up included (for CPU per request).
    pub completed: u64,
    /// Latency of every measured request, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Open loop only: how late each request was sent after its scheduled time (timer
    /// slack, and the generator's own threads waiting for a core), microseconds, sorted.
    /// It is inside [`latencies_us`](Self::latencies_us), which counts from the schedule.
    pub late_us: Vec<u32>,
    /// Open loop only: each request's latency from the moment it was actually sent,
    /// microseconds, sorted (what the server and the network took).
    pub from_send_us: Vec<u32>,
    /// Measured window, seconds.
    pub secs: f64,
    /// Mean response body size, bytes.
    pub mean_body: f64,
}

impl Report {
    /// Requests per second over the measured window.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.secs.max(1e-9)
    }

    /// The q-quantile latency in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_us, q)
    }
}

/// The q-quantile of sorted microseconds, in milliseconds (NaN when empty).
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

#[derive(Default)]
struct Worker {
    count: u64,
    errors: u64,
    samples: Vec<String>,
    ok_total: u64,
    completed: u64,
    lat: Vec<u32>,
    late: Vec<u32>,
    from_send: Vec<u32>,
    body_bytes: u64,
}

impl Worker {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < 3 {
            self.samples.push(what);
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer: (status, body).
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs the plan and returns the merged report.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let host = plan.addr.to_string();
    let mut senders = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        senders.push(connect(plan.addr).await.context("load generator connect")?);
    }
    let t0 = Instant::now();
    let (start, total) = match plan.rate {
        None => (t0 + plan.warmup, 0),
        Some(r) => (t0, (r * plan.duration.as_secs_f64()).round() as u64),
    };
    let end = start + plan.duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut sender) in senders.into_iter().enumerate() {
        let (plan, host, next) = (plan.clone(), host.clone(), next.clone());
        tasks.spawn(async move {
            let mut st = Worker::default();
            let n = plan.creds.len();
            let mut i = w;
            loop {
                // Open loop: take the next scheduled slot and wait for its time.
                let scheduled = match plan.rate {
                    Some(rate) => {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= total {
                            break;
                        }
                        let at = start + Duration::from_secs_f64(k as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        Some(at)
                    }
                    None if Instant::now() >= end => break,
                    None => None,
                };
                let cred = &plan.creds[i % n];
                i += plan.connections;
                let req = cred.request(&host)?;
                let actual = Instant::now();
                let sent = scheduled.unwrap_or(actual);
                let res = exchange(&mut sender, req).await;
                let done = Instant::now();
                let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                st.completed += 1;
                let measured = scheduled.is_some() || (done >= start && done <= end);
                match res {
                    Ok((status, body)) => {
                        let good = check(plan.expect, cred.venue, status, &body);
                        st.ok_total += u64::from(good);
                        if measured {
                            st.count += 1;
                            st.body_bytes += body.len() as u64;
                            st.lat.push(us(done.duration_since(sent)));
                            if scheduled.is_some() {
                                st.late.push(us(actual.duration_since(sent)));
                                st.from_send.push(us(done.duration_since(actual)));
                            }
                            if !good {
                                let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                                    .into_owned();
                                st.error(format!("{:?} HTTP {status}: {text}", cred.venue));
                            }
                        }
                    }
                    Err(e) => {
                        if measured {
                            st.count += 1;
                            st.error(format!("{:?} transport: {e}", cred.venue));
                        }
                        // The connection is gone: open a new one and go on.
                        sender = connect(plan.addr).await?;
                    }
                }
            }
            anyhow::Ok(st)
        });
    }
    let mut report = Report::default();
    let mut body_bytes = 0u64;
    while let Some(r) = tasks.join_next().await {
        let w = r.context("load worker panicked")??;
        report.count += w.count;
        report.errors += w.errors;
        report.ok_total += w.ok_total;
        report.completed += w.completed;
        body_bytes += w.body_bytes;
        report.latencies_us.extend(w.lat);
        report.late_us.extend(w.late);
        report.from_send_us.extend(w.from_send);
        for s in w.samples {
            if report.error_samples.len() < 5 {
                report.error_samples.push(s);
            }
        }
    }
    report.secs = match plan.rate {
        None => plan.duration.as_secs_f64(),
        // Open loop: until the last answer came in (at least the scheduled span).
        Some(_) => t0.elapsed().as_secs_f64().max(plan.duration.as_secs_f64()),
    };
    report.latencies_us.sort_unstable();
    report.late_us.sort_unstable();
    report.from_send_us.sort_unstable();
    report.mean_body = body_bytes as f64 / report.count.max(1) as f64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_signature_matches_the_documented_vector() {
        // exchanges.md §1: the Binance docs' own example.
        let c = Cred::new(
            Venue::Binance,
            "k",
            "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
        )
        .expect("cred");
        assert_eq!(
            c.sign("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let us: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&us, 0.0), 1.0);
        assert_eq!(quantile_ms(&us, 0.5), 51.0);
        assert_eq!(quantile_ms(&us, 0.99), 99.0);
        assert_eq!(quantile_ms(&us, 1.0), 100.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }

    #[test]
    fn random_keys_have_the_exchange_format() {
        let b = Cred::random(Venue::Binance).expect("cred");
        assert!(keytrap_core::matches_key_format(
            keytrap_core::Exchange::Binance,
            &b.key
        ));
        let y = Cred::random(Venue::Bybit).expect("cred");
        assert!(keytrap_core::matches_key_format(
            keytrap_core::Exchange::Bybit,
            &y.key
        ));
    }

    #[test]
    fn answers_are_checked_per_exchange() {
        let bad_key = br#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#;
        assert!(check(Expect::InvalidKey, Venue::Binance, 401, bad_key));
        assert!(!check(Expect::InvalidKey, Venue::Binance, 400, bad_key));
        assert!(!check(Expect::Valid, Venue::Binance, 401, bad_key));
        let y = br#"{"retCode":10003,"retMsg":"API key is invalid.","result":{}}"#;
        assert!(check(Expect::InvalidKey, Venue::Bybit, 200, y));
        assert!(!check(Expect::Valid, Venue::Bybit, 200, y));
        assert!(check(
            Expect::Valid,
            Venue::Bybit,
            200,
            br#"{"retCode":0,"retMsg":"OK"}"#
        ));
    }
}
