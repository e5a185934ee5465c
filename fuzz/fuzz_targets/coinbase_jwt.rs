//! Coinbase Advanced Trade JWTs with fuzzed header and claims, signed with the canary's
//! EC key so that parsing, claim checks and the private endpoints behind them are reached.
//!
//! Input:
//!
//! ```text
//! <METHOD> <path>[?<query>]
//! <JWT header JSON>
//! <JWT claims JSON>
//! <empty line>
//! <body>
//! ```
//!
//! In the JSON, `$KEY` becomes the canary's key name, `$URI` the `uri` claim ccxt would
//! send for the request and `$NOW` the current unix time, so mutations elsewhere keep a
//! token that can still be valid.
#![no_main]

use axum::http::HeaderValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use keytrap_core::Exchange;
use keytrap_fuzz::{credentials, drive, emulator, parse, request};
use keytrap_trap::emulator::{MemoryOrderBook, SigCheck};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use std::sync::OnceLock;

/// The header and claims that ccxt sends; with them the token must be accepted.
const CANON_HEADER: &str = r#"{"alg":"ES256","typ":"JWT","kid":"$KEY","nonce":"00"}"#;
const CANON_CLAIMS: &str = r#"{"aud":["retail_rest_api_proxy"],"iss":"coinbase-cloud","nbf":$NOW,"exp":$NOW+120,"sub":"$KEY","iat":$NOW,"uri":"$URI"}"#;

fn signing_key() -> &'static SigningKey {
    static SK: OnceLock<SigningKey> = OnceLock::new();
    SK.get_or_init(|| {
        let pem = &credentials(Exchange::Coinbase).api_secret;
        let secret = p256::SecretKey::from_sec1_pem(pem.trim()).expect("the canary key is a PEM");
        SigningKey::from(secret)
    })
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("GET /api/v3/brokerage/accounts");
    let header_t = lines.next().unwrap_or(CANON_HEADER);
    let claims_t = lines.next().unwrap_or(CANON_CLAIMS);

    let mut input = parse(format!("coinbase {first}").as_bytes());
    input.body = axum::body::Bytes::copy_from_slice(body);
    let creds = credentials(Exchange::Coinbase);
    let now = Utc::now().timestamp();
    let uri = format!(
        "{} 127.0.0.1:8701/coinbase{}",
        input.method.as_str(),
        input.path
    );
    // `$URI` is filled last: the path in it is fuzzed and may itself hold `$NOW` or
    // `$KEY`, which must reach the claim as written, or the claim no longer names the
    // request's path and ccxt's own token would rightly be refused.
    let fill = |t: &str| {
        t.replace("$KEY", &creds.api_key)
            .replace("$NOW+120", &(now + 120).to_string())
            .replace("$NOW", &now.to_string())
            .replace("$URI", &uri)
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(fill(header_t)),
        URL_SAFE_NO_PAD.encode(fill(claims_t))
    );
    let sig: Signature = signing_key().sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return;
    };
    input.headers.insert("authorization", auth);
    let req = request(&input, Exchange::Coinbase);

    let emu = emulator(Exchange::Coinbase);
    let check = emu.check_signature(&req, creds);
    // The URI claim carries the path: a path that JSON would need to escape is not the
    // canonical case.
    let plain_path = input
        .path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        && !first.contains('\t');
    if header_t == CANON_HEADER && claims_t == CANON_CLAIMS && plain_path {
        assert_eq!(
            check,
            SigCheck::Valid,
            "ccxt's own token is accepted: {first}"
        );
        assert_eq!(emu.api_key(&req).as_deref(), Some(creds.api_key.as_str()));
    }
    drive(Exchange::Coinbase, &req, &MemoryOrderBook::default());
});
