//! The contract between the trap's shared request path and each exchange emulator.
//!
//! The shared path (lib.rs) does everything that must be identical for every exchange and
//! for canary and unknown keys alike: parse the request, find the presented key, look it
//! up, derive credentials (a pseudo canary's for unknown keys, so the work is the same),
//! ask the emulator to check the signature, record the hit or the unknown sighting through
//! the group commit, and only then answer. An emulator is the exchange-specific part:
//! where the key is, how the signature is computed, what the exchange answers.

use std::borrow::Cow;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keytrap_core::{Credentials, Exchange};
use serde_json::Value;
use uuid::Uuid;

/// One request as the trap received it. Bounded: the body is at most
/// [`crate::MAX_BODY_BYTES`], headers and query are limited by the server.
#[derive(Debug, Clone)]
pub struct TrapRequest {
    pub exchange: Exchange,
    pub method: Method,
    /// Path below the exchange prefix, e.g. `/api/v3/account` (for host-routed requests
    /// the path as received).
    pub path: String,
    /// The path exactly as received, prefix included (Coinbase JWTs sign it).
    pub full_path: String,
    /// The raw query string as received (not decoded), without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `Host` header (or authority) as received.
    pub host: String,
    pub source_ip: IpAddr,
    pub received_at: DateTime<Utc>,
}

impl TrapRequest {
    /// A header as UTF-8 text, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Decoded query parameters, in order (percent-decoding; `+` as space).
    pub fn query_params(&self) -> Vec<(String, String)> {
        self.query.as_deref().map(form_pairs).unwrap_or_default()
    }

    /// Body as `application/x-www-form-urlencoded` pairs (empty if it is not).
    pub fn form_params(&self) -> Vec<(String, String)> {
        std::str::from_utf8(&self.body)
            .map(form_pairs)
            .unwrap_or_default()
    }

    /// Body as JSON, if it is JSON.
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// First value of `name` among query parameters, then form body parameters.
    /// Equal to the first match in `query_params()` then `form_params()`, without
    /// decoding every pair (emulators ask for several parameters per request).
    pub fn param(&self, name: &str) -> Option<String> {
        self.param_cow(name).map(Cow::into_owned)
    }

    /// [`param`](Self::param), borrowing the value when it needs no decoding.
    pub fn param_cow(&self, name: &str) -> Option<Cow<'_, str>> {
        let query = self.query.as_deref().unwrap_or("");
        let body = std::str::from_utf8(&self.body).unwrap_or("");
        find_pair(query, name).or_else(|| find_pair(body, name))
    }
}

/// `a=1&b=x%20y` into pairs; invalid escapes are kept as they are.
pub fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The decoded value of the first pair of `s` (as [`form_pairs`] splits it) whose decoded
/// key is `name`.
fn find_pair<'a>(s: &'a str, name: &str) -> Option<Cow<'a, str>> {
    s.split('&').filter(|p| !p.is_empty()).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode_cow(k) == name).then(|| percent_decode_cow(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    percent_decode_cow(s).into_owned()
}

/// [`percent_decode`], borrowing `s` when it holds nothing to decode (no `%`, no `+`):
/// what every signing client sends for timestamps, windows and signatures.
pub fn percent_decode_cow(s: &str) -> Cow<'_, str> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    // Valid UTF-8 (the usual case) is taken as it is; anything else gets U+FFFD.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Exactly 64 hex digits (either case) as 32 bytes: an HMAC-SHA256 signature as Binance
/// and Bybit send it. `None` for anything else, like `hex::decode_to_slice`, through a
/// table and without stopping early at a bad digit.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    const fn table() -> [u8; 256] {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    }
    static HEX: [u8; 256] = table();
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // Every digit is below 16; the table's 0xff marks anything else.
    (bad & 0xf0 == 0).then_some(out)
}

/// Why a request is refused. Each emulator answers each with the exchange's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A private endpoint called without any API key.
    MissingKey,
    /// A key that does not have the exchange's key format.
    MalformedKey,
    /// A well-formed key the exchange does not know.
    UnknownKey,
    /// A known key, but no signature (or missing signing headers).
    MissingSignature,
    /// A known key, wrong signature.
    BadSignature,
    /// A known key, timestamp outside the window (or a non-increasing nonce).
    StaleTimestamp,
    /// A known key, wrong passphrase.
    BadPassphrase,
    /// The endpoint does not exist.
    NotFound,
    /// The trap could not record the request (database down): answer like an exchange
    /// that is briefly unavailable.
    Unavailable,
}

/// The result of checking a request's signature with a canary's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck {
    Valid,
    /// The request carried the key but not the signing material.
    Missing,
    /// Signed, but wrong: the rejection says how the exchange reports it.
    Invalid(Rejection),
}

/// What kind of thing the caller tried to do; decides severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    /// Balances, account info, orders, trades, market data with a key.
    Read,
    /// Checking the key's permissions or restrictions.
    Permissions,
    /// Placing an order.
    Trade,
    /// Cancelling an order.
    Cancel,
    /// Asking for a deposit address.
    Address,
    /// Withdrawing funds.
    Withdraw,
    /// Moving funds between accounts or sub-accounts.
    Transfer,
}

impl ActionClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Read => "read",
            ActionClass::Permissions => "permissions",
            ActionClass::Trade => "trade",
            ActionClass::Cancel => "cancel",
            ActionClass::Address => "address",
            ActionClass::Withdraw => "withdraw",
            ActionClass::Transfer => "transfer",
        }
    }
}

/// The action and its parameters, as evidence: symbol, side, amount, price, address...
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub class: ActionClass,
    /// A short JSON object: e.g. `{"symbol":"PEPEUSDT","side":"BUY","quantity":"1000"}`
    /// or `{"coin":"USDT","address":"0x...","network":"ETH","amount":"5000"}`.
    pub params: Value,
}

/// What the emulator knows about the account behind a valid canary signature.
pub struct Account<'a> {
    pub canary_id: Uuid,
    pub exchange: Exchange,
    pub credentials: &'a Credentials,
    pub now: DateTime<Utc>,
    /// Orders this canary placed earlier (remembered by the trap, never executed).
    pub orders: &'a dyn OrderBook,
}

/// Per-canary order memory, kept by the trap (in its database).
#[async_trait::async_trait]
pub trait OrderBook: Send + Sync {
    async fn place(&self, order: Order) -> Result<Order, String>;
    async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String>;
    /// Every order the canary placed, open and cancelled, oldest first.
    async fn all_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String>;
    async fn get(&self, order_id: &str) -> Result<Option<Order>, String>;
    /// Marks an open order cancelled; returns it, or `None` if unknown.
    async fn cancel(&self, order_id: &str) -> Result<Option<Order>, String>;
}

/// An accepted (never executed) order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// The exchange-style order id the trap handed out.
    pub order_id: String,
    pub client_order_id: Option<String>,
    /// The exchange's own symbol (`BTCUSDT`, `BTC-USDT`, `XBTUSD`...).
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `limit`, `market`...
    pub order_type: String,
    pub price: Option<String>,
    pub amount: String,
    /// `open` or `cancelled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// One exchange's emulator. Implementations live in `src/<exchange>.rs` and are pure
/// functions of the request except for [`Emulator::private`], which may use the order book.
#[async_trait::async_trait]
pub trait Emulator: Send + Sync {
    fn exchange(&self) -> Exchange;

    /// The API key the request presents, if any (header or parameter, as the exchange
    /// reads it). For Coinbase CDP it is the JWT's `sub`/`kid` key name.
    fn api_key(&self, req: &TrapRequest) -> Option<String>;

    /// Public endpoints (time, ping, markets, currencies, tickers): answered without a
    /// key. `None` when the path is not public (the shared path then authenticates).
    fn public(&self, req: &TrapRequest) -> Option<Response>;

    /// Checks the request's signature, timestamp window and passphrase with `creds`, as
    /// the exchange does.
    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck;

    /// The exchange's exact answer (status, body, content type) for a refusal.
    fn reject(&self, req: &TrapRequest, why: Rejection) -> Response;

    /// What the request tries to do, with its evidence.
    fn classify(&self, req: &TrapRequest) -> Action;

    /// For exchanges whose nonce must strictly increase per key (Kraken): the request's
    /// nonce. The shared path checks it against the canary's last one once the signature
    /// is valid, and answers [`Rejection::StaleTimestamp`] for a replayed or old nonce.
    fn nonce(&self, _req: &TrapRequest) -> Option<u64> {
        None
    }

    /// The answer to a validly signed private request: a funded, real-looking account.
    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response;
}

/// Longest string (value or key) kept in stored action parameters.
pub const MAX_EVIDENCE_TEXT: usize = 256;
/// Most entries kept per object or array in stored action parameters.
pub const MAX_EVIDENCE_ITEMS: usize = 64;
/// Deepest nesting kept in stored action parameters.
const MAX_EVIDENCE_DEPTH: usize = 8;

/// Action parameters made safe to store and show, whatever the request carried: every
/// string (keys too) cut to [`MAX_EVIDENCE_TEXT`] characters with control characters
/// replaced by U+FFFD, objects and arrays cut to [`MAX_EVIDENCE_ITEMS`] entries, nesting
/// cut at a fixed depth. Control characters matter twice: PostgreSQL's `jsonb` refuses
/// `\u0000` (the whole hit would fail to record and the caller would go unseen), and
/// escape sequences reach an operator's terminal through logs and the CLI.
pub fn evidence_params(v: Value) -> Value {
    fn text(s: &str) -> String {
        s.chars()
            .take(MAX_EVIDENCE_TEXT)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect()
    }
    fn walk(v: Value, depth: usize) -> Value {
        match v {
            Value::String(s) => Value::String(text(&s)),
            Value::Array(_) | Value::Object(_) if depth >= MAX_EVIDENCE_DEPTH => {
                Value::String("\u{2026}".into())
            }
            Value::Array(a) => Value::Array(
                a.into_iter()
                    .take(MAX_EVIDENCE_ITEMS)
                    .map(|x| walk(x, depth + 1))
                    .collect(),
            ),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .take(MAX_EVIDENCE_ITEMS)
                    .map(|(k, x)| (text(&k), walk(x, depth + 1)))
                    .collect(),
            ),
            other => other,
        }
    }
    walk(v, 0)
}

/// A JSON response with the given status, `application/json`.
pub fn json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A response with an exact body and content type (for byte-identical errors).
pub fn raw(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response()
}

/// An order book in memory: for emulator unit tests (the trap itself keeps orders in the
/// database).
#[derive(Default)]
pub struct MemoryOrderBook {
    orders: std::sync::Mutex<Vec<Order>>,
}

#[async_trait::async_trait]
impl OrderBook for MemoryOrderBook {
    async fn place(&self, order: Order) -> Result<Order, String> {
        let mut o = self.orders.lock().map_err(|e| e.to_string())?;
        o.push(order.clone());
        Ok(order)
    }

    async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String> {
        let o = self.orders.lock().map_err(|e| e.to_string())?;
        Ok(o.iter()
            .filter(|x| x.status == "open" && symbol.is_none_or(|s| x.symbol == s))
            .cloned()
            .collect())
    }

    async fn all_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String> {
        let o = self.orders.lock().map_err(|e| e.to_string())?;
        Ok(o.iter()
            .filter(|x| symbol.is_none_or(|s| x.symbol == s))
            .cloned()
            .collect())
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, String> {
        let o = self.orders.lock().map_err(|e| e.to_string())?;
        Ok(o.iter()
            .find(|x| x.order_id == order_id || x.client_order_id.as_deref() == Some(order_id))
            .cloned())
    }

    async fn cancel(&self, order_id: &str) -> Result<Option<Order>, String> {
        let mut o = self.orders.lock().map_err(|e| e.to_string())?;
        Ok(o.iter_mut()
            .find(|x| x.order_id == order_id || x.client_order_id.as_deref() == Some(order_id))
            .map(|x| {
                x.status = "cancelled".into();
                x.clone()
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex32_decodes_like_the_hex_crate() {
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let good = hex::encode((0..32).map(|i| (i * 37 + 11) as u8).collect::<Vec<_>>());
        let mut cases = vec![
            good.clone(),
            good.to_ascii_uppercase(),
            String::new(),
            good[..62].to_string(),
            format!("{good}00"),
            format!(" {}", &good[1..]),
        ];
        // Every ASCII character at every position, and random mixes of hex and not.
        for pos in 0..64 {
            for c in 0u8..128 {
                let mut b = good.clone().into_bytes();
                b[pos] = c;
                cases.push(String::from_utf8(b).expect("ASCII"));
            }
        }
        let alphabet = b"0123456789abcdefABCDEFgxG /%+";
        for _ in 0..2_000 {
            let s: String = (0..64)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect();
            cases.push(s);
        }
        cases.push(format!("{}\u{e9}", &good[..62]));
        for s in &cases {
            let mut want = [0u8; 32];
            let want = hex::decode_to_slice(s, &mut want).ok().map(|()| want);
            assert_eq!(hex32(s), want, "{s:?}");
        }
    }

    #[test]
    fn percent_decoding_borrows_only_what_needs_no_decoding() {
        // The form before the borrowing fast path.
        fn general(s: &str) -> String {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'+' => out.push(b' '),
                    b'%' if i + 2 < b.len() => {
                        match (
                            (b[i + 1] as char).to_digit(16),
                            (b[i + 2] as char).to_digit(16),
                        ) {
                            (Some(h), Some(l)) => {
                                out.push((h << 4 | l) as u8);
                                i += 2;
                            }
                            _ => out.push(b'%'),
                        }
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        for s in [
            "1717171717171",
            "a+b",
            "a%20b",
            "%e2%82%ac",
            "%ff%fe",
            "%zz",
            "100%",
            "%4",
            "",
            "caf\u{e9}",
        ] {
            let got = percent_decode_cow(s);
            assert_eq!(got, general(s), "{s:?}");
            assert_eq!(percent_decode(s), general(s), "{s:?}");
            let borrowed = matches!(got, Cow::Borrowed(_));
            assert_eq!(borrowed, !s.contains(['%', '+']), "{s:?}");
        }
        let r = TrapRequest {
            exchange: Exchange::Binance,
            method: Method::GET,
            path: "/api/v3/account".into(),
            full_path: "/binance/api/v3/account".into(),
            query: Some("timestamp=17&recv%57indow=5000&x=a+b".into()),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"timestamp=99&y=1"),
            host: String::new(),
            source_ip: IpAddr::from([127, 0, 0, 1]),
            received_at: Utc::now(),
        };
        assert_eq!(r.param_cow("timestamp").as_deref(), Some("17"));
        assert_eq!(r.param_cow("recvWindow").as_deref(), Some("5000"));
        assert_eq!(r.param_cow("x").as_deref(), Some("a b"));
        assert_eq!(r.param_cow("y").as_deref(), Some("1"));
        assert_eq!(r.param("x"), Some("a b".to_string()));
        assert_eq!(r.param_cow("z"), None);
    }

    #[test]
    fn evidence_params_are_printable_and_bounded() {
        // Found by the bad-input tests: a NUL in a parameter made PostgreSQL refuse the
        // hit (the trap answered 503 and recorded nothing), and a 20 kB path was stored
        // whole.
        let long = "p".repeat(20_000);
        let v = evidence_params(json!({
            "symbol": "\u{0}BTC\u{1b}[2J",
            "path": long,
            "nested": [[[[[[[[[[1]]]]]]]]]],
            "list": (0..500).collect::<Vec<_>>(),
            "k\u{7}ey": 1.5,
            "ok": "BTCUSDT",
        }));
        assert_eq!(v["symbol"], "\u{fffd}BTC\u{fffd}[2J");
        assert_eq!(
            v["path"].as_str().map(|s| s.chars().count()),
            Some(MAX_EVIDENCE_TEXT)
        );
        assert_eq!(v["list"].as_array().map(Vec::len), Some(MAX_EVIDENCE_ITEMS));
        assert_eq!(v["k\u{fffd}ey"], 1.5);
        assert_eq!(v["ok"], "BTCUSDT");
        assert!(v.to_string().len() < 2_000, "{v}");
        assert!(!v.to_string().contains("\\u0000"));
        // Objects past the item bound are cut too.
        let wide: serde_json::Map<String, Value> =
            (0..200).map(|i| (format!("k{i}"), json!(i))).collect();
        let w = evidence_params(Value::Object(wide));
        assert_eq!(w.as_object().map(|o| o.len()), Some(MAX_EVIDENCE_ITEMS));
    }

    #[test]
    fn param_is_the_first_decoded_match_in_query_then_body() {
        let req = |query: Option<&str>, body: &[u8]| TrapRequest {
            exchange: Exchange::Binance,
            method: Method::POST,
            path: "/x".into(),
            full_path: "/binance/x".into(),
            query: query.map(str::to_string),
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body),
            host: String::new(),
            source_ip: IpAddr::from([127, 0, 0, 1]),
            received_at: Utc::now(),
        };
        let cases: [(Option<&str>, &[u8]); 7] = [
            (Some("a=1&b=2&a=3"), b"a=4&c=5"),
            (Some("sym%62ol=BTC%2BUSDT&x+y=1+2"), b""),
            (Some("&&a&b=&=c&%zz=%4"), b"b=body"),
            (None, b"timestamp=1&signature=ab%20cd"),
            (Some("a=%FF%FE"), b"\xff\xfe=1"),
            (Some("k=v"), &[0xff, b'=', b'1', b'&', b'q', b'=', b'2']),
            (Some(""), b""),
        ];
        let names = [
            "a",
            "b",
            "c",
            "symbol",
            "x y",
            "",
            "%zz",
            "timestamp",
            "signature",
            "q",
            "k",
            "zz",
        ];
        for (q, body) in cases {
            let r = req(q, body);
            for name in names {
                // The definition: decode everything, take the first match.
                let want = r
                    .query_params()
                    .into_iter()
                    .chain(r.form_params())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v);
                assert_eq!(r.param(name), want, "{q:?} {body:?} {name:?}");
            }
        }
        assert_eq!(
            req(Some("sym%62ol=BTC%2BUSDT"), b"")
                .param("symbol")
                .as_deref(),
            Some("BTC+USDT")
        );
    }
}
