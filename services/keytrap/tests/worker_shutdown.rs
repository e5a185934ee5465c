//! SIGTERM while an alert is being delivered: `keytrap serve` waits for the delivery in
//! flight, stores its attempt, and exits 0; after a restart the message is delivered (not
//! pending behind a lease) and never sent again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_delivery_in_flight_finish() {
    // A receiver that holds every request until the test opens the gate.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let count = Arc::new(AtomicUsize::new(0));
    let (g, c) = (gate.clone(), count.clone());
    let app = axum::Router::new().fallback(move || {
        let (g, c) = (g.clone(), c.clone());
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            g.acquire().await.unwrap().forget();
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rx_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = temp_dir();
    let env = [("KEYTRAP_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")];
    let mut s = Server::start(&dir, &env, &[]);
    s.wait_ready().await;
    let token = bootstrap_token(&s);
    let (st, hook) = call(
        reqwest::Method::POST,
        &format!("{}/v1/webhooks", s.api),
        &token,
        Some(json!({"url": format!("http://{rx_addr}/hook")})),
    )
    .await;
    assert_eq!(st, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    let (st, queued) = call(
        reqwest::Method::POST,
        &format!("{}/v1/webhooks/{id}/test", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 202, "{queued}");

    // The delivery reaches the receiver and hangs there; then SIGTERM.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the test alert never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Still running: it waits for the delivery (the receiver has not answered).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "keytrap exited with a delivery in flight"
    );
    gate.add_permits(100);
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "graceful shutdown exits 0");
    let logs = s.logs();
    assert!(logs.contains("alert worker stopped"), "{logs:.3000}");
    drop(s);

    // After a restart the attempt is there and the message is delivered: nothing waits
    // for a lease to run out, nothing is sent again.
    let mut s = Server::start(&dir, &env, &[]);
    s.wait_ready().await;
    let (st, list) = call(
        reqwest::Method::GET,
        &format!("{}/v1/webhooks/{id}/deliveries", s.api),
        &token,
        None,
    )
    .await;
    assert_eq!(st, 200, "{list}");
    let d = &list["deliveries"][0];
    assert_eq!(d["status"], "delivered", "{list}");
    assert_eq!(d["attempt_count"], 1, "{list}");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(d["attempts"][0]["status_code"], 200, "{list}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "sent once");
    s.terminate_cleanly();
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
