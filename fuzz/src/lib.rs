//! Shared parts of the trap's fuzz targets: a plain-text request format (so the seed
//! corpus is readable and libFuzzer's mutations stay close to HTTP), fixed canary
//! credentials, and one pass through every entry point of an emulator.
//!
//! Request format (`\n` line ends, a trailing `\r` is dropped):
//!
//! ```text
//! <exchange|*> <METHOD> <path>[?<query>]
//! Header-Name: value
//! ...
//! <empty line>
//! <body bytes>
//! ```
//!
//! An unknown exchange (or `*`) drives all seven emulators with the same request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use chrono::Utc;
use keytrap_core::{Credentials, Exchange, MasterKey};
use keytrap_trap::emulator::{Account, Emulator, MemoryOrderBook, Rejection, TrapRequest};
use uuid::Uuid;

/// The canary the fuzz targets sign as.
pub const CANARY: Uuid = Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);

/// Every refusal an emulator must be able to answer.
pub const REJECTIONS: [Rejection; 9] = [
    Rejection::MissingKey,
    Rejection::MalformedKey,
    Rejection::UnknownKey,
    Rejection::MissingSignature,
    Rejection::BadSignature,
    Rejection::StaleTimestamp,
    Rejection::BadPassphrase,
    Rejection::NotFound,
    Rejection::Unavailable,
];

/// Largest serialized action parameters stored (the request body may be 64 KiB).
pub const MAX_ACTION_PARAMS: usize = 8 * 1024;

/// The emulator for `x` (the same unit structs the trap's registry serves).
pub fn emulator(x: Exchange) -> Arc<dyn Emulator> {
    use keytrap_trap::*;
    match x {
        Exchange::Binance => Arc::new(binance::Binance),
        Exchange::Bybit => Arc::new(bybit::Bybit),
        Exchange::Kraken => Arc::new(kraken::Kraken),
        Exchange::Kucoin => Arc::new(kucoin::Kucoin),
        Exchange::Okx => Arc::new(okx::Okx),
        Exchange::Coinbase => Arc::new(coinbase::Coinbase),
        Exchange::CoinbaseExchange => Arc::new(coinbase_exchange::CoinbaseExchange),
    }
}

/// The canary's credentials for `x`, derived once per process (Coinbase's EC key
/// derivation is too slow to repeat per input).
pub fn credentials(x: Exchange) -> &'static Credentials {
    static CREDS: OnceLock<Vec<Credentials>> = OnceLock::new();
    let all = CREDS.get_or_init(|| {
        let keys = MasterKey::from_bytes([0x5a; 32]).keys();
        Exchange::ALL
            .iter()
            .map(|&x| keys.credentials(x, CANARY))
            .collect()
    });
    let i = Exchange::ALL
        .iter()
        .position(|&e| e == x)
        .expect("every exchange is in ALL");
    &all[i]
}

/// One current-thread runtime per process for the async `private` calls.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

/// A parsed fuzz input; `exchange` is `None` for "every emulator".
pub struct Input {
    pub exchange: Option<Exchange>,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Parses the text format above. Never fails: unusable parts get defaults, headers that
/// `http` would not accept are skipped (the server could never deliver them).
pub fn parse(data: &[u8]) -> Input {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = trim_cr(lines.next().unwrap_or(b""));
    let mut parts = first.splitn(3, |&b| b == b' ');
    let exchange = std::str::from_utf8(parts.next().unwrap_or(b""))
        .ok()
        .and_then(|s| s.parse::<Exchange>().ok());
    let method = Method::from_bytes(parts.next().unwrap_or(b"GET")).unwrap_or(Method::GET);
    let target = String::from_utf8_lossy(parts.next().unwrap_or(b"/")).into_owned();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = trim_cr(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    Input {
        exchange,
        method,
        path,
        query,
        headers,
        body: Bytes::copy_from_slice(body),
    }
}

/// The request as the trap's shared path would hand it to `x`'s emulator.
pub fn request(input: &Input, x: Exchange) -> TrapRequest {
    TrapRequest {
        exchange: x,
        method: input.method.clone(),
        path: input.path.clone(),
        full_path: format!("/{}{}", x.as_str(), input.path),
        query: input.query.clone(),
        headers: input.headers.clone(),
        body: input.body.clone(),
        host: "127.0.0.1:8701".into(),
        source_ip: IpAddr::from([203, 0, 113, 7]),
        received_at: Utc::now(),
    }
}

/// Reads the whole response: a body that fails to produce is a bug too.
pub async fn drain(r: Response) -> (u16, Bytes) {
    let status = r.status().as_u16();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("a response body that can be read");
    (status, body)
}

/// Asserts an answer is not a server error: the trap's only 5xx is "unavailable".
pub fn assert_not_5xx(what: &str, x: Exchange, status: u16) {
    assert!(
        status < 500,
        "{x} {what} answered {status}: only Rejection::Unavailable may be a 5xx"
    );
}

/// Every entry point of `x`'s emulator on `req`, with the canary's credentials and a
/// fresh order book. Panics (the fuzz failure) on a panic inside or on a 5xx answer.
pub fn drive(x: Exchange, req: &TrapRequest, book: &MemoryOrderBook) {
    let emu = emulator(x);
    let creds = credentials(x);
    let rt = runtime();
    let _ = emu.api_key(req);
    if let Some(r) = emu.public(req) {
        let (s, _) = rt.block_on(drain(r));
        assert_not_5xx("public", x, s);
    }
    let _ = emu.check_signature(req, creds);
    for why in REJECTIONS {
        let (s, _) = rt.block_on(drain(emu.reject(req, why)));
        if why != Rejection::Unavailable {
            assert_not_5xx("reject", x, s);
        }
    }
    // Action parameters are stored as evidence through `evidence_params`: whatever the
    // emulator extracted, what is stored must be small and printable.
    let action = emu.classify(req);
    let stored = keytrap_trap::emulator::evidence_params(action.params);
    let text = stored.to_string();
    assert!(
        stored.is_object() && text.len() <= MAX_ACTION_PARAMS,
        "{x} classify: stored params must be a small object, got {} bytes",
        text.len()
    );
    assert!(
        !text.contains("\\u0000") && !text.chars().any(char::is_control),
        "{x} classify: stored params must be printable: {text}"
    );
    let account = Account {
        canary_id: CANARY,
        exchange: x,
        credentials: creds,
        now: Utc::now(),
        orders: book,
    };
    let (s, _) = rt.block_on(async { drain(emu.private(req, &account).await).await });
    assert_not_5xx("private", x, s);
}

/// Percent-encodes everything but RFC 3986 unreserved characters (as ccxt's urlencode
/// does), so a fuzzed value survives the query string intact.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_format() {
        let i = parse(b"binance POST /api/v3/order?symbol=BTCUSDT\r\nX-MBX-APIKEY: abc\nbad header\n\nside=BUY");
        assert_eq!(i.exchange, Some(Exchange::Binance));
        assert_eq!(i.method, Method::POST);
        assert_eq!(i.path, "/api/v3/order");
        assert_eq!(i.query.as_deref(), Some("symbol=BTCUSDT"));
        assert_eq!(i.headers.get("x-mbx-apikey").unwrap(), "abc");
        assert_eq!(i.headers.len(), 1);
        assert_eq!(&i.body[..], b"side=BUY");
        assert!(parse(b"").exchange.is_none());
    }

    #[test]
    fn encode_keeps_unreserved_only() {
        assert_eq!(encode("a b&c=d~"), "a%20b%26c%3Dd~");
        assert_eq!(
            keytrap_trap::emulator::percent_decode(&encode("x\u{e9}%+")),
            "x\u{e9}%+"
        );
    }
}
