//! Delivery throughput to a fast local receiver, with a baseline measured in the same
//! run: a plain reqwest client POSTing the same bytes (no rendering, signing, SSRF
//! resolver or response capture).
//!
//!     cargo run --release -p keytrap-webhooks --example throughput [-- <messages> <concurrency>]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use chrono::Utc;
use keytrap_webhooks::{
    render, Alert, ClientConfig, CustomHeaders, DeliveryClient, DeliveryRequest, Format, Outcome,
    RenderOptions, Secret,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let app = Router::new().route("/hook", post(|| async { "ok" }));
        let _ = axum::serve(listener, app).await;
    });
    let url = url::Url::parse(&format!("http://{addr}/hook"))?;

    let client = DeliveryClient::new(ClientConfig {
        addrs: keytrap_webhooks::AddrPolicy::parse_allow_list("127.0.0.0/8")?,
        ..ClientConfig::default()
    })?;
    let secret = Arc::new([Secret::generate()]);
    let baseline = reqwest::Client::builder().no_proxy().build()?;
    let sample = render(
        Format::Standard,
        &Alert::test("msg_bench", Utc::now()),
        &RenderOptions::default(),
    )?
    .body;

    // Warm up both clients' connection pools.
    run(concurrency, 2 * concurrency, {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        move |i| deliver_one(client.clone(), url.clone(), secret.clone(), i)
    })
    .await?;

    let b = run(concurrency, messages, {
        let (baseline, url, body) = (baseline.clone(), url.clone(), sample.clone());
        move |_| {
            let (c, u, body) = (baseline.clone(), url.clone(), body.clone());
            async move {
                let r = c
                    .post(u)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                r.bytes().await?;
                anyhow::Ok(())
            }
        }
    })
    .await?;
    let k = run(concurrency, messages, {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        move |i| deliver_one(client.clone(), url.clone(), secret.clone(), i)
    })
    .await?;

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "machine: {} cores; {messages} messages, concurrency {concurrency}, receiver on {addr}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("baseline (plain reqwest POST): {:.0} req/s", rate(b));
    println!(
        "keytrap-webhooks (render + sign + SSRF resolver + deliver): {:.0} webhooks/s",
        rate(k)
    );
    println!("ratio to baseline: {:.2}", rate(k) / rate(b));
    Ok(())
}

async fn deliver_one(
    client: DeliveryClient,
    url: url::Url,
    secret: Arc<[Secret; 1]>,
    i: usize,
) -> anyhow::Result<()> {
    let id = format!("msg_{i}");
    let body = render(
        Format::Standard,
        &Alert::test(&id, Utc::now()),
        &RenderOptions::default(),
    )?;
    let rec = client
        .deliver(&DeliveryRequest {
            url: &url,
            body: &body.body,
            content_type: body.content_type,
            message_id: &id,
            secrets: secret.as_slice(),
            headers: &CustomHeaders::default(),
        })
        .await;
    anyhow::ensure!(rec.outcome == Outcome::Success, "delivery failed: {rec:?}");
    Ok(())
}

/// Runs `total` jobs on `workers` tasks and returns the elapsed time.
async fn run<F, Fut>(workers: usize, total: usize, job: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let job = job.clone();
        set.spawn(async move {
            let mut i = w;
            while i < total {
                job(i).await?;
                i += workers;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t0.elapsed())
}
