//! Test helpers shared by the emulators' unit tests.
#![allow(clippy::unwrap_used)]

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::Utc;
use keytrap_core::{Credentials, Exchange};
use uuid::Uuid;

use crate::emulator::{Account, OrderBook, TrapRequest};

/// A canary's account as the shared path hands it to an emulator, at the current time.
pub fn account<'a>(
    exchange: Exchange,
    canary_id: Uuid,
    credentials: &'a Credentials,
    orders: &'a dyn OrderBook,
) -> Account<'a> {
    Account {
        canary_id,
        exchange,
        credentials,
        now: Utc::now(),
        orders,
    }
}

/// Builds a request as the shared path would.
pub fn request(
    exchange: Exchange,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TrapRequest {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    TrapRequest {
        exchange,
        method: method.parse().unwrap(),
        full_path: path.clone(),
        path,
        query,
        headers: h,
        body: Bytes::copy_from_slice(body),
        host: "localhost".into(),
        source_ip: "127.0.0.1".parse().unwrap(),
        received_at: Utc::now(),
    }
}
