//! Well-signed Binance requests with fuzzed parameters, so the fuzzer gets past the
//! signature check into the account, order and withdrawal code.
//!
//! Input: requests separated by `---` lines, sharing one order book (so a place can be
//! followed by a query or cancel). Each request:
//!
//! ```text
//! <METHOD> <path>
//! #body            (optional: parameters go in the form body instead of the query)
//! #t <offset ms>   (optional: timestamp relative to now; default -100)
//! key=value        (any number; the harness percent-encodes both sides)
//! ```
#![no_main]

use axum::http::HeaderValue;
use chrono::Utc;
use hmac::{Hmac, Mac};
use keytrap_core::Exchange;
use keytrap_fuzz::{credentials, drive, encode, parse, request};
use keytrap_trap::emulator::{MemoryOrderBook, SigCheck};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let creds = credentials(Exchange::Binance);
    let book = MemoryOrderBook::default();
    for (n, chunk) in text.split("\n---\n").enumerate() {
        // Bounded work per input: a few requests are enough to chain place/cancel.
        if n >= 8 {
            break;
        }
        let mut lines = chunk.lines();
        let first = lines.next().unwrap_or("GET /api/v3/account");
        let mut in_body = false;
        let mut offset: i64 = -100;
        let mut params = Vec::new();
        for l in lines {
            if l == "#body" {
                in_body = true;
            } else if let Some(t) = l.strip_prefix("#t ") {
                offset = t.trim().parse().unwrap_or(offset);
            } else {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                params.push(format!("{}={}", encode(k), encode(v)));
            }
        }
        // Names the harness itself sets: a fuzzed duplicate changes what is signed or
        // which timestamp counts, so validity is only asserted without them.
        let clean = params.iter().all(|p| {
            let k = p.split('=').next().unwrap_or("");
            !matches!(k, "signature" | "timestamp" | "recvWindow")
        });
        let ts = Utc::now().timestamp_millis().saturating_add(offset);
        params.push(format!("timestamp={}", ts.max(0)));
        let payload = params.join("&");
        let mut mac = Hmac::<Sha256>::new_from_slice(creds.api_secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let signed = format!("{payload}&signature={sig}");
        let (target, body) = if in_body {
            (first.to_string(), signed.clone())
        } else {
            (format!("{first}?{signed}"), String::new())
        };
        let mut input = parse(format!("binance {target}").as_bytes());
        // Only what the harness signed reaches the emulator (a first line without a
        // space, or with its own `?`, is not the request the harness meant).
        let as_signed = if in_body {
            input.query.is_none()
        } else {
            input.query.as_deref() == Some(signed.as_str())
        };
        input.body = body.into_bytes().into();
        let key = HeaderValue::from_str(&creds.api_key).expect("a canary key is a header");
        input.headers.insert("x-mbx-apikey", key);
        if in_body {
            input.headers.insert(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        let req = request(&input, Exchange::Binance);
        let fresh = (-4_000..=0).contains(&offset);
        if clean && fresh && as_signed {
            let emu = keytrap_fuzz::emulator(Exchange::Binance);
            assert_eq!(
                emu.check_signature(&req, creds),
                SigCheck::Valid,
                "a correctly signed request is accepted: {target}"
            );
        }
        drive(Exchange::Binance, &req, &book);
    }
});
