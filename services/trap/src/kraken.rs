//! Kraken spot REST emulator (`api.kraken.com/0/...`).
//!
//! Sources: Kraken's REST docs (authentication guide with its test vector, `Assets`,
//! `AssetPairs`, `Ticker`, `BalanceEx`, `AddOrder`, `OpenOrders`, `QueryOrders`,
//! `CancelOrder`, `DepositMethods`, `DepositAddresses`, `Withdraw`) and ccxt 4.5.90
//! `kraken.py` (`sign()`, `handle_errors()`, `fetch_markets`, `fetch_currencies`,
//! `fetch_balance`, `parse_order`, `order_request`, `fetch_deposit_address`).
//!
//! Signature: `API-Sign = base64(HMAC-SHA512(base64decode(secret), path ||
//! SHA256(nonce + POST data)))`, path the URI path (`/0/private/AddOrder`), POST data
//! the raw body (form-encoded, or JSON for batch calls, where the nonce is a JSON field).
//!
//! Nonce: Kraken requires it to increase strictly per key. An emulator is a pure
//! function of the request, so [`Emulator::check_signature`] only checks that the nonce
//! is a sane positive integer; [`Emulator::nonce`] hands it to the shared path, which
//! keeps the last nonce per canary in the database (shared by trap replicas) and answers
//! [`Rejection::StaleTimestamp`] ("EAPI:Invalid nonce") for a replayed or older one.
//!
//! Errors: HTTP 200 with `{"error":["EAPI:Invalid key"]}` and the like; success is
//! `{"error":[],"result":...}`. Naming: Kraken's legacy asset ids (`XXBT`, `XETH`,
//! `ZUSD`...), pair ids like `XXBTZUSD` with altname `XBTUSD` and wsname `XBT/USD`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use keytrap_core::{Credentials, Exchange};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha512};

use crate::emulator::{
    Account, Action, ActionClass, Emulator, Order, Rejection, SigCheck, TrapRequest,
};
use crate::market::{self, Market, CURRENCIES, MARKETS};

/// Kraken answers `application/json; charset=utf-8`.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The Kraken emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Kraken;

// ---------------------------------------------------------------------------------------
// Naming
// ---------------------------------------------------------------------------------------

/// Kraken's asset id and altname for a currency code.
fn asset(code: &str) -> (&str, &str) {
    match code {
        "BTC" => ("XXBT", "XBT"),
        "ETH" => ("XETH", "ETH"),
        "XRP" => ("XXRP", "XRP"),
        "LTC" => ("XLTC", "LTC"),
        "DOGE" => ("XXDG", "XDG"),
        "USD" => ("ZUSD", "ZUSD"),
        other => (other, other),
    }
}

/// The currency code of a Kraken asset id or altname (`XXBT`, `XBT`, `ZUSD`, `USD`...).
fn code_of(asset_id: &str) -> Option<&'static str> {
    let a = asset_id.to_ascii_uppercase();
    all_codes().into_iter().find(|c| {
        let (id, alt) = asset(c);
        id == a || alt == a || *c == a || (*c == "USD" && a == "USD")
    })
}

/// How a currency is written inside a pair name: `XBT`, `XDG`, `USD`.
fn pair_alt(code: &str) -> &str {
    match code {
        "BTC" => "XBT",
        "DOGE" => "XDG",
        other => other,
    }
}

/// Assets whose pair ids keep the X/Z prefixes (`XXBTZUSD`, `XETHXXBT`).
fn legacy(code: &str) -> bool {
    matches!(code, "BTC" | "ETH" | "XRP" | "LTC" | "USD")
}

/// Every currency listed: the shared ones plus USD.
fn all_codes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = CURRENCIES.iter().map(|(c, _, _)| *c).collect();
    v.push("USD");
    v
}

/// A spot pair in Kraken's naming.
#[derive(Debug, Clone)]
struct Pair {
    base: &'static str,
    quote: &'static str,
    /// `XXBTZUSD`, `XBTUSDT`.
    id: String,
    /// `XBTUSD`.
    altname: String,
    /// `XBT/USD`.
    wsname: String,
    price: f64,
    price_decimals: u32,
    qty_decimals: u32,
}

fn make_pair(m: &Market, quote: &'static str) -> Pair {
    let altname = format!("{}{}", pair_alt(m.base), pair_alt(quote));
    let id = if legacy(m.base) && legacy(quote) {
        format!("{}{}", asset(m.base).0, asset(quote).0)
    } else {
        altname.clone()
    };
    Pair {
        base: m.base,
        quote,
        id,
        wsname: format!("{}/{}", pair_alt(m.base), pair_alt(quote)),
        altname,
        price: m.price,
        price_decimals: m.price_decimals,
        qty_decimals: m.qty_decimals,
    }
}

/// The shared markets, plus a USD pair next to each USDT pair (Kraken's main quote).
fn pairs() -> Vec<Pair> {
    let mut out = Vec::with_capacity(MARKETS.len() * 2);
    for m in MARKETS {
        out.push(make_pair(m, m.quote));
        if m.quote == "USDT" {
            out.push(make_pair(m, "USD"));
        }
    }
    out
}

/// A pair by id or altname (Kraken accepts both), or by wsname.
fn find_pair(name: &str) -> Option<Pair> {
    let n = name.trim().to_ascii_uppercase();
    pairs()
        .into_iter()
        .find(|p| p.id == n || p.altname == n || p.wsname == n)
}

fn step(decimals: u32) -> String {
    if decimals == 0 {
        "1".to_owned()
    } else {
        format!("0.{}1", "0".repeat(decimals as usize - 1))
    }
}

fn usd_price(code: &str) -> f64 {
    match code {
        "USD" | "USDT" | "USDC" => 1.0,
        _ => MARKETS
            .iter()
            .find(|m| m.base == code && m.quote == "USDT")
            .map_or(0.0, |m| m.price),
    }
}

/// Decimals Kraken keeps for an asset's balances.
fn asset_decimals(code: &str) -> u32 {
    match code {
        "USD" => 4,
        "USDT" | "USDC" => 8,
        _ => 10,
    }
}

/// Kraken's deposit/withdraw method name for a coin on one of our networks (ccxt's
/// `options.depositMethods` uses these names, e.g. `Tether USD (TRC20)`).
fn method_name(code: &str, name: &str, network: &str) -> String {
    match (code, network) {
        ("BTC", _) => "Bitcoin".into(),
        ("ETH", "ETH") => "Ether (Hex)".into(),
        ("USDT", "ETH") => "Tether USD (ERC20)".into(),
        ("USDT", "TRX") => "Tether USD (TRC20)".into(),
        ("USDT", "SOL") => "Tether USD (SPL)".into(),
        ("USDT", "BSC") => "Tether USD (BEP20)".into(),
        ("USDC", "ETH") => "USDC".into(),
        ("USDC", "SOL") => "USDC (SPL)".into(),
        ("XRP", _) => "Ripple XRP".into(),
        ("TRX", _) => "Tron".into(),
        ("LINK", _) => "Link".into(),
        ("ADA", _) => "ADA".into(),
        (_, "ARBITRUM") => "Arbitrum One".into(),
        (_, "AVAXC") => "Avalanche C-Chain".into(),
        (_, "BSC") => format!("{name} (BEP20)"),
        (c, "ETH") if c != "ETH" => format!("{name} (ERC20)"),
        _ => name.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn respond(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

fn ok(result: Value) -> Response {
    respond(
        StatusCode::OK,
        format!("{{\"error\":[],\"result\":{result}}}"),
    )
}

/// Kraken's error answer: HTTP 200, `{"error":["..."]}`.
fn fail(error: &str) -> Response {
    respond(
        StatusCode::OK,
        format!("{{\"error\":[{}]}}", Value::String(error.to_owned())),
    )
}

/// Private parameters: the form body, or the JSON body (batch calls), values as text.
fn params(req: &TrapRequest) -> Map<String, Value> {
    let body = req.body.as_ref();
    if body.first() == Some(&b'{') {
        if let Some(Value::Object(m)) = req.json_body() {
            return m;
        }
        return Map::new();
    }
    let mut out = Map::new();
    for (k, v) in req.form_params().into_iter().chain(req.query_params()) {
        out.entry(k).or_insert(Value::String(v));
    }
    out
}

fn pstr(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

fn positive(s: &str) -> Option<f64> {
    if s.len() > 64 {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A plausible Kraken id (`OQCLML-BW3P3-BUCMWZ`, `FTQcuak-...`): uppercase alphanumerics
/// in groups, derived from a hash.
fn kraken_id(seed: &[&[u8]], groups: &[usize]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = fnv(seed);
    let mut out = String::new();
    for (gi, n) in groups.iter().enumerate() {
        if gi > 0 {
            out.push('-');
        }
        for _ in 0..*n {
            h ^= h >> 29;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            out.push(A[(h >> 59) as usize] as char);
        }
    }
    out
}

fn time_result() -> Value {
    let now = Utc::now();
    json!({
        "unixtime": now.timestamp(),
        "rfc1123": now.format("%a, %d %b %y %H:%M:%S +0000").to_string(),
    })
}

fn assets_result(filter: Option<&str>) -> Value {
    let wanted: Option<Vec<String>> = filter.map(|f| {
        f.split(',')
            .map(|s| s.trim().to_ascii_uppercase())
            .collect()
    });
    let mut out = Map::new();
    for code in all_codes() {
        let (id, alt) = asset(code);
        if let Some(w) = &wanted {
            if !w.iter().any(|x| x == id || x == alt || x == code) {
                continue;
            }
        }
        let decimals = asset_decimals(code);
        out.insert(
            id.to_owned(),
            json!({
                "aclass": "currency",
                "altname": alt,
                "decimals": decimals,
                "display_decimals": if decimals == 10 { 5 } else { 2.max(decimals as i64 - 4) },
                "collateral_value": if code == "BTC" || code == "ETH" || code == "USD" { json!(1.0) } else { json!(0.9) },
                "status": "enabled",
            }),
        );
    }
    Value::Object(out)
}

fn fee_schedule(maker: bool) -> Value {
    if maker {
        json!([
            [0, 0.25],
            [10000, 0.2],
            [50000, 0.14],
            [100000, 0.12],
            [250000, 0.1],
            [500000, 0.08],
            [1000000, 0.06],
            [2500000, 0.04],
            [5000000, 0.02],
            [10000000, 0.0]
        ])
    } else {
        json!([
            [0, 0.4],
            [10000, 0.35],
            [50000, 0.24],
            [100000, 0.22],
            [250000, 0.2],
            [500000, 0.18],
            [1000000, 0.16],
            [2500000, 0.14],
            [5000000, 0.12],
            [10000000, 0.1]
        ])
    }
}

fn pair_json(p: &Pair) -> Value {
    let crypto_quote = !matches!(p.quote, "USD" | "USDT" | "USDC");
    let leverage: Vec<u32> = if matches!(p.base, "BTC" | "ETH") && !crypto_quote {
        vec![2, 3, 4, 5]
    } else {
        vec![]
    };
    json!({
        "altname": p.altname,
        "wsname": p.wsname,
        "aclass_base": "currency",
        "base": asset(p.base).0,
        "aclass_quote": "currency",
        "quote": asset(p.quote).0,
        "lot": "unit",
        "cost_decimals": if crypto_quote { 10 } else { 5 },
        "pair_decimals": p.price_decimals,
        "lot_decimals": 8,
        "lot_multiplier": 1,
        "leverage_buy": leverage,
        "leverage_sell": leverage,
        "fees": fee_schedule(false),
        "fees_maker": fee_schedule(true),
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": step(p.qty_decimals),
        "costmin": if crypto_quote { "0.00002" } else { "0.5" },
        "tick_size": step(p.price_decimals),
        "status": "online",
    })
}

fn ticker_json(p: &Pair) -> Value {
    let d = p.price_decimals;
    let f = |x: f64| market::fixed(x, d);
    let v = 25_000_000.0 / (p.price * usd_price(p.quote)).max(1e-12);
    json!({
        "a": [f(p.price * 1.0001), "1", "1.000"],
        "b": [f(p.price * 0.9999), "2", "2.000"],
        "c": [f(p.price), "0.01500000"],
        "v": [format!("{:.8}", v * 0.4), format!("{v:.8}")],
        "p": [f(p.price * 0.998), f(p.price * 0.997)],
        "t": [14211, 38907],
        "l": [f(p.price * 0.978), f(p.price * 0.978)],
        "h": [f(p.price * 1.021), f(p.price * 1.021)],
        "o": f(p.price * 0.985),
    })
}

/// Kraken's order object (OpenOrders, QueryOrders).
fn order_json(o: &Order) -> Value {
    let pair = find_pair(&o.symbol);
    let decimals = pair.as_ref().map_or(2, |p| p.price_decimals);
    let price = o
        .price
        .as_deref()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|v| market::fixed(v, decimals));
    let vol = o
        .amount
        .parse::<f64>()
        .map_or_else(|_| o.amount.clone(), |v| format!("{v:.8}"));
    let descr_order = match &price {
        Some(p) => format!("{} {vol} {} @ {} {p}", o.side, o.symbol, o.order_type),
        None => format!("{} {vol} {} @ {}", o.side, o.symbol, o.order_type),
    };
    let opentm = o.created_at.timestamp_millis() as f64 / 1000.0;
    let mut v = json!({
        "refid": null,
        "userref": 0,
        "status": if o.status == "open" { "open" } else { "canceled" },
        "opentm": opentm,
        "starttm": 0,
        "expiretm": 0,
        "descr": {
            "pair": o.symbol,
            "type": o.side,
            "ordertype": o.order_type,
            "price": price.clone().unwrap_or_else(|| "0".into()),
            "price2": "0",
            "leverage": "none",
            "order": descr_order,
            "close": "",
        },
        "vol": vol,
        "vol_exec": "0.00000000",
        "cost": "0.00000",
        "fee": "0.00000",
        "price": "0.00000",
        "stopprice": "0.00000",
        "limitprice": "0.00000",
        "misc": "",
        "oflags": "fciq",
    });
    if let Some(c) = &o.client_order_id {
        // A number is a userref, anything else Kraken's cl_ord_id.
        match c.parse::<i64>() {
            Ok(n) => v["userref"] = json!(n),
            Err(_) => v["cl_ord_id"] = json!(c),
        }
    }
    if o.status != "open" {
        v["closetm"] = json!(opentm + 1.0);
        v["reason"] = json!("User requested");
    }
    v
}

// ---------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------

/// Kraken's signature of one request: base64(HMAC-SHA512(secret, path || SHA256(nonce +
/// POST data))).
pub fn sign(secret_b64: &str, path: &str, nonce: &str, post_data: &[u8]) -> Option<String> {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret_b64)
        .ok()?;
    let mut sha = Sha256::new();
    sha.update(nonce.as_bytes());
    sha.update(post_data);
    let digest = sha.finalize();
    let mut mac = Hmac::<Sha512>::new_from_slice(&secret).ok()?;
    mac.update(path.as_bytes());
    mac.update(&digest);
    Some(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The nonce of a request: the `nonce` field of a JSON body, else of the form body.
fn nonce_of(req: &TrapRequest) -> Option<String> {
    let p = params(req);
    match p.get("nonce")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A nonce Kraken could accept from some client: a positive integer that fits in 64
/// bits (clients use ms, µs or ns clocks or plain counters). Monotonicity is the trap's.
fn sane_nonce(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 20
        && n.bytes().all(|b| b.is_ascii_digit())
        && n.parse::<u64>().is_ok_and(|v| v > 0)
}

fn private_path(path: &str) -> bool {
    path.starts_with("/0/private/")
}

// ---------------------------------------------------------------------------------------
// Emulator
// ---------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl Emulator for Kraken {
    fn exchange(&self) -> Exchange {
        Exchange::Kraken
    }

    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        req.header("API-Key")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        let path = req.path.as_str();
        if !path.starts_with("/0/public/") {
            return None;
        }
        // Kraken's public calls take GET or POST, parameters in the query or the form.
        let p = params(req);
        let r = match path {
            "/0/public/Time" => ok(time_result()),
            "/0/public/SystemStatus" => ok(json!({
                "status": "online",
                "timestamp": Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            })),
            "/0/public/Assets" => {
                let a = assets_result(pstr(&p, "asset").as_deref());
                if a.as_object().is_some_and(Map::is_empty) {
                    fail("EQuery:Unknown asset")
                } else {
                    ok(a)
                }
            }
            "/0/public/AssetPairs" => {
                let wanted = pstr(&p, "pair");
                let mut out = Map::new();
                for pr in pairs() {
                    let hit = match &wanted {
                        None => true,
                        Some(w) => w.split(',').any(|x| {
                            let x = x.trim().to_ascii_uppercase();
                            x == pr.id || x == pr.altname || x == pr.wsname
                        }),
                    };
                    if hit {
                        out.insert(pr.id.clone(), pair_json(&pr));
                    }
                }
                if out.is_empty() {
                    fail("EQuery:Unknown asset pair")
                } else {
                    ok(Value::Object(out))
                }
            }
            "/0/public/Ticker" => {
                let wanted = pstr(&p, "pair");
                let mut out = Map::new();
                match wanted {
                    None => {
                        for pr in pairs() {
                            out.insert(pr.id.clone(), ticker_json(&pr));
                        }
                    }
                    Some(w) => {
                        for x in w.split(',').take(200) {
                            match find_pair(x) {
                                Some(pr) => {
                                    out.insert(pr.id.clone(), ticker_json(&pr));
                                }
                                None => return Some(fail("EQuery:Unknown asset pair")),
                            }
                        }
                    }
                }
                ok(Value::Object(out))
            }
            _ => return Some(self.reject(req, Rejection::NotFound)),
        };
        Some(r)
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        let sign_header = req.header("API-Sign").map(str::trim).unwrap_or("");
        if sign_header.is_empty() {
            return SigCheck::Missing;
        }
        let Some(nonce) = nonce_of(req) else {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let Ok(presented) = b64
            .decode(sign_header)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(sign_header))
        else {
            return SigCheck::Invalid(Rejection::BadSignature);
        };
        let Ok(secret) = b64.decode(creds.api_secret.trim()) else {
            return SigCheck::Invalid(Rejection::BadSignature);
        };
        let mut sha = Sha256::new();
        sha.update(nonce.as_bytes());
        sha.update(&req.body);
        let digest = sha.finalize();
        // The path as the client signed it: below the trap's prefix (ccxt, the SDKs), or
        // with it (a client that signs its whole URL path).
        let mut paths = vec![req.path.as_str()];
        if req.full_path != req.path {
            paths.push(req.full_path.as_str());
        }
        let valid = paths.iter().any(|path| {
            let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(&secret) else {
                return false;
            };
            mac.update(path.as_bytes());
            mac.update(&digest);
            mac.verify_slice(&presented).is_ok()
        });
        if !valid {
            return SigCheck::Invalid(Rejection::BadSignature);
        }
        if !sane_nonce(&nonce) {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        }
        SigCheck::Valid
    }

    fn nonce(&self, req: &TrapRequest) -> Option<u64> {
        nonce_of(req).filter(|n| sane_nonce(n))?.parse().ok()
    }

    fn reject(&self, _req: &TrapRequest, why: Rejection) -> Response {
        match why {
            Rejection::MissingKey | Rejection::MalformedKey | Rejection::UnknownKey => {
                fail("EAPI:Invalid key")
            }
            Rejection::MissingSignature | Rejection::BadSignature => fail("EAPI:Invalid signature"),
            Rejection::StaleTimestamp => fail("EAPI:Invalid nonce"),
            // Kraken keys have an optional 2FA password (`otp`), not a passphrase.
            Rejection::BadPassphrase => fail("EAPI:Invalid key"),
            // *unverified* status: Kraken names unknown endpoints "EGeneral:Unknown method".
            Rejection::NotFound => respond(
                StatusCode::NOT_FOUND,
                "{\"error\":[\"EGeneral:Unknown method\"]}".to_owned(),
            ),
            Rejection::Unavailable => fail("EService:Unavailable"),
        }
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let p = params(req);
        let pick = |keys: &[&str]| -> Value {
            let mut out = Map::new();
            for k in keys {
                if let Some(v) = pstr(&p, k) {
                    out.insert(
                        (*k).to_owned(),
                        Value::String(v.chars().take(128).collect()),
                    );
                }
            }
            Value::Object(out)
        };
        let method = req.path.rsplit('/').next().unwrap_or("");
        let (class, params) = if !private_path(&req.path) {
            (
                ActionClass::Read,
                json!({"path": req.path.chars().take(128).collect::<String>()}),
            )
        } else {
            match method {
                "AddOrder" | "EditOrder" | "AmendOrder" | "AddOrderBatch" => (
                    ActionClass::Trade,
                    pick(&[
                        "pair",
                        "type",
                        "ordertype",
                        "volume",
                        "price",
                        "price2",
                        "leverage",
                        "oflags",
                        "cl_ord_id",
                        "userref",
                        "validate",
                        "txid",
                    ]),
                ),
                "CancelOrder" | "CancelAll" | "CancelOrderBatch" | "CancelAllOrdersAfter" => {
                    (ActionClass::Cancel, pick(&["txid", "cl_ord_id", "userref"]))
                }
                "DepositAddresses" => (ActionClass::Address, pick(&["asset", "method", "new"])),
                "Withdraw" => (
                    ActionClass::Withdraw,
                    pick(&["asset", "key", "amount", "address", "method", "max_fee"]),
                ),
                "WalletTransfer" => (
                    ActionClass::Transfer,
                    pick(&["asset", "from", "to", "amount"]),
                ),
                // A withdrawal being prepared: its destination key and amount are evidence.
                "WithdrawInfo" | "WithdrawMethods" | "WithdrawAddresses" => (ActionClass::Read, {
                    let mut v = pick(&["asset", "key", "amount", "method"]);
                    v["path"] = json!(req.path);
                    v
                }),
                _ => (
                    ActionClass::Read,
                    json!({"path": req.path.chars().take(128).collect::<String>()}),
                ),
            }
        };
        Action { class, params }
    }

    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response {
        let p = params(req);
        let method = req.path.strip_prefix("/0/private/").unwrap_or("");
        match method {
            "Balance" => {
                let mut out = Map::new();
                for (code, amount) in market::balances(account.canary_id) {
                    out.insert(
                        asset(code).0.to_owned(),
                        json!(market::fixed(amount, asset_decimals(code))),
                    );
                }
                ok(Value::Object(out))
            }
            "BalanceEx" => {
                let holds = match self.holds(account).await {
                    Ok(h) => h,
                    Err(r) => return r,
                };
                let mut out = Map::new();
                for (code, amount) in market::balances(account.canary_id) {
                    let d = asset_decimals(code);
                    let hold = holds
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map_or(0.0, |(_, v)| *v);
                    out.insert(
                        asset(code).0.to_owned(),
                        json!({
                            "balance": market::fixed(amount, d),
                            "hold_trade": market::fixed(hold.min(amount), d),
                        }),
                    );
                }
                ok(Value::Object(out))
            }
            "TradeBalance" => {
                let total: f64 = market::balances(account.canary_id)
                    .iter()
                    .map(|(c, a)| a * usd_price(c))
                    .sum();
                let t = market::fixed(total, 4);
                ok(
                    json!({"eb": t, "tb": t, "m": "0.0000", "n": "0.0000", "c": "0.0000", "v": "0.0000", "e": t, "mf": t, "uv": "0.0000"}),
                )
            }
            "AddOrder" => self.add_order(req, &p, account).await,
            "CancelOrder" => {
                let Some(id) = pstr(&p, "txid").or_else(|| pstr(&p, "cl_ord_id")) else {
                    return fail("EGeneral:Invalid arguments");
                };
                match account.orders.get(&id).await {
                    Ok(Some(o)) if o.status == "open" => match account.orders.cancel(&id).await {
                        Ok(_) => ok(json!({"count": 1})),
                        Err(_) => self.reject(req, Rejection::Unavailable),
                    },
                    Ok(_) => fail("EOrder:Unknown order"),
                    Err(_) => self.reject(req, Rejection::Unavailable),
                }
            }
            "CancelAll" => {
                let open = match account.orders.open_orders(None).await {
                    Ok(o) => o,
                    Err(_) => return self.reject(req, Rejection::Unavailable),
                };
                let mut count = 0;
                for o in open {
                    if let Ok(Some(_)) = account.orders.cancel(&o.order_id).await {
                        count += 1;
                    }
                }
                ok(json!({"count": count}))
            }
            "OpenOrders" => {
                let open = match account.orders.open_orders(None).await {
                    Ok(o) => o,
                    Err(_) => return self.reject(req, Rejection::Unavailable),
                };
                let want = pstr(&p, "cl_ord_id").or_else(|| pstr(&p, "userref"));
                let mut out = Map::new();
                for o in open
                    .iter()
                    .filter(|o| want.is_none() || o.client_order_id == want)
                {
                    out.insert(o.order_id.clone(), order_json(o));
                }
                ok(json!({"open": out}))
            }
            "QueryOrders" => {
                let Some(ids) = pstr(&p, "txid") else {
                    return fail("EGeneral:Invalid arguments");
                };
                let mut out = Map::new();
                for id in ids.split(',').take(50) {
                    match account.orders.get(id.trim()).await {
                        Ok(Some(o)) => {
                            out.insert(o.order_id.clone(), order_json(&o));
                        }
                        Ok(None) => {}
                        Err(_) => return self.reject(req, Rejection::Unavailable),
                    }
                }
                if out.is_empty() {
                    return fail("EOrder:Invalid order");
                }
                ok(Value::Object(out))
            }
            // Cancelled orders (nothing is ever filled: no trades).
            "ClosedOrders" => {
                let all = match account.orders.all_orders(None).await {
                    Ok(o) => o,
                    Err(_) => return self.reject(req, Rejection::Unavailable),
                };
                let mut out = Map::new();
                for o in all.iter().filter(|o| o.status != "open") {
                    out.insert(o.order_id.clone(), order_json(o));
                }
                let count = out.len();
                ok(json!({"closed": out, "count": count}))
            }
            "TradesHistory" => ok(json!({"trades": {}, "count": 0})),
            "Ledgers" => ok(json!({"ledger": {}, "count": 0})),
            "DepositStatus" | "WithdrawStatus" => ok(json!([])),
            "DepositMethods" => {
                let Some(currency) = pstr(&p, "asset").and_then(|a| currency_of(&a)) else {
                    return fail("EFunding:Unknown asset");
                };
                let (code, name, networks) = currency;
                let list: Vec<Value> = networks
                    .iter()
                    .map(|n| {
                        json!({
                            "method": method_name(code, name, n),
                            "limit": false,
                            "fee": "0.0000000000",
                            "gen-address": true,
                            "minimum": "0.00010000",
                        })
                    })
                    .collect();
                ok(json!(list))
            }
            "DepositAddresses" => {
                let Some((code, name, networks)) = pstr(&p, "asset").and_then(|a| currency_of(&a))
                else {
                    return fail("EFunding:Unknown asset");
                };
                let wanted = pstr(&p, "method");
                let network = match &wanted {
                    None => networks.first().copied(),
                    Some(m) => networks
                        .iter()
                        .find(|n| method_name(code, name, n).eq_ignore_ascii_case(m.trim()))
                        .copied(),
                };
                let Some(network) = network else {
                    return fail("EFunding:No funding method");
                };
                let address = market::deposit_address(account.canary_id, code, network);
                let mut entry = json!({
                    "address": address,
                    "expiretm": "0",
                    "new": pstr(&p, "new").is_some_and(|v| v == "true"),
                });
                if code == "XRP" {
                    let tag = 100_000_000
                        + fnv(&[account.canary_id.as_bytes(), b"kraken/xrp-tag"]) % 900_000_000;
                    entry["tag"] = json!(tag.to_string());
                }
                ok(json!([entry]))
            }
            "WithdrawInfo" => {
                let Some((code, name, networks)) = pstr(&p, "asset").and_then(|a| currency_of(&a))
                else {
                    return fail("EFunding:Unknown asset");
                };
                let amount = pstr(&p, "amount").and_then(|a| positive(&a));
                if pstr(&p, "key").is_none() || amount.is_none() {
                    return fail("EGeneral:Invalid arguments");
                }
                let balance = market::balances(account.canary_id)
                    .iter()
                    .find(|(c, _)| *c == code)
                    .map_or(0.0, |(_, a)| *a);
                let d = asset_decimals(code);
                ok(json!({
                    "method": method_name(code, name, networks.first().copied().unwrap_or("")),
                    "limit": market::fixed(balance, d),
                    "amount": market::fixed(amount.unwrap_or(0.0), d),
                    "fee": market::fixed(if code == "BTC" { 0.00015 } else { 0.0 }, d),
                }))
            }
            "Withdraw" => {
                if pstr(&p, "asset").and_then(|a| currency_of(&a)).is_none() {
                    return fail("EFunding:Unknown asset");
                }
                if pstr(&p, "key").is_none()
                    || pstr(&p, "amount").and_then(|a| positive(&a)).is_none()
                {
                    return fail("EGeneral:Invalid arguments");
                }
                let refid = kraken_id(
                    &[account.canary_id.as_bytes(), &req.body, b"withdraw"],
                    &[7, 14, 9],
                );
                ok(json!({"refid": refid}))
            }
            "GetWebSocketsToken" => ok(json!({
                "token": base64::engine::general_purpose::STANDARD_NO_PAD.encode(
                    kraken_id(&[account.canary_id.as_bytes(), &req.body], &[30]).as_bytes()
                ),
                "expires": 900,
            })),
            _ => self.reject(req, Rejection::NotFound),
        }
    }
}

/// A listed currency by Kraken asset id or altname.
fn currency_of(a: &str) -> Option<(&'static str, &'static str, &'static [&'static str])> {
    let code = code_of(a)?;
    CURRENCIES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(c, n, nets)| (*c, *n, *nets))
}

impl Kraken {
    /// Amounts held by open orders, per currency (a buy holds quote, a sell base).
    async fn holds(&self, account: &Account<'_>) -> Result<Vec<(&'static str, f64)>, Response> {
        let open = account
            .orders
            .open_orders(None)
            .await
            .map_err(|_| fail("EService:Unavailable"))?;
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for o in open {
            let Some(pair) = find_pair(&o.symbol) else {
                continue;
            };
            let amount = o.amount.parse::<f64>().unwrap_or(0.0);
            let price = o
                .price
                .as_deref()
                .and_then(|p| p.parse::<f64>().ok())
                .unwrap_or(pair.price);
            let (code, v) = if o.side == "buy" {
                (pair.quote, amount * price)
            } else {
                (pair.base, amount)
            };
            if !v.is_finite() {
                continue;
            }
            match out.iter_mut().find(|(c, _)| *c == code) {
                Some((_, x)) => *x += v,
                None => out.push((code, v)),
            }
        }
        Ok(out)
    }

    async fn add_order(
        &self,
        req: &TrapRequest,
        p: &Map<String, Value>,
        account: &Account<'_>,
    ) -> Response {
        let Some(pair) = pstr(p, "pair").and_then(|x| find_pair(&x)) else {
            return fail("EQuery:Unknown asset pair");
        };
        let side = match pstr(p, "type").as_deref() {
            Some("buy") => "buy",
            Some("sell") => "sell",
            _ => return fail("EGeneral:Invalid arguments:type"),
        };
        const ORDER_TYPES: &[&str] = &[
            "limit",
            "market",
            "stop-loss",
            "take-profit",
            "stop-loss-limit",
            "take-profit-limit",
            "trailing-stop",
            "trailing-stop-limit",
            "iceberg",
            "settle-position",
        ];
        let Some(order_type) =
            pstr(p, "ordertype").and_then(|t| ORDER_TYPES.iter().find(|x| **x == t).copied())
        else {
            return fail("EGeneral:Invalid arguments:ordertype");
        };
        let Some(volume) = pstr(p, "volume").and_then(|v| positive(&v)) else {
            return fail("EGeneral:Invalid arguments:volume");
        };
        let viqc = pstr(p, "oflags").is_some_and(|f| f.contains("viqc"));
        let ordermin = 10f64.powi(-(pair.qty_decimals as i32));
        if !viqc && volume < ordermin {
            return fail("EOrder:Order minimum not met");
        }
        let price = pstr(p, "price");
        let price_value = price.as_deref().and_then(positive);
        if order_type != "market" && price_value.is_none() {
            return fail("EGeneral:Invalid arguments:price");
        }
        let client = pstr(p, "cl_ord_id")
            .or_else(|| pstr(p, "userref"))
            .map(|s| s.chars().take(64).collect::<String>());
        let vol = format!("{volume:.8}");
        let descr = match (order_type, price_value) {
            ("market", _) | (_, None) => format!("{side} {vol} {} @ market", pair.altname),
            (t, Some(px)) => format!(
                "{side} {vol} {} @ {t} {}",
                pair.altname,
                market::fixed(px, pair.price_decimals)
            ),
        };
        if pstr(p, "validate").is_some_and(|v| v == "true" || v == "1") {
            return ok(json!({"descr": {"order": descr}}));
        }
        let nanos = account.now.timestamp_nanos_opt().unwrap_or(0).to_le_bytes();
        let order = Order {
            // Kraken order ids start with `O` (`OQCLML-BW3P3-BUCMWZ`).
            order_id: format!(
                "O{}",
                &kraken_id(
                    &[account.canary_id.as_bytes(), &req.body, &nanos],
                    &[6, 5, 6]
                )[1..]
            ),
            client_order_id: client,
            symbol: pair.altname.clone(),
            side: side.to_owned(),
            order_type: order_type.to_owned(),
            price: if order_type == "market" { None } else { price },
            amount: vol,
            status: "open".to_owned(),
            created_at: account.now,
        };
        match account.orders.place(order).await {
            Ok(o) => ok(json!({"descr": {"order": descr}, "txid": [o.order_id]})),
            Err(_) => self.reject(req, Rejection::Unavailable),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bybit::tests::{body_of, request};
    use crate::emulator::MemoryOrderBook;
    use axum::body::Bytes;
    use axum::http::Method;
    use uuid::Uuid;

    // Kraken's documented test vector (exchanges.md §6).
    const DOC_SECRET: &str =
        "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
    const DOC_BODY: &str =
        "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
    const DOC_SIGN: &str =
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==";

    // ccxt 4.5.90 offline: ex = ccxt.kraken({'apiKey': KEY, 'secret': SECRET});
    // ex.milliseconds = lambda: 1717171717171; ex.sign(path, ['private'], 'POST', params)
    const KEY: &str = "KvipEEs/ZO1kDYx+KY0tSA8Do2EMvCszR0Mh7FkCSkhZLqhUXkHgnV0R";
    const SECRET: &str =
        "LB7mg3IhWxzgZEJrXNvU7yWBrODdOyH6K+J/NkgnJC6D9otovgP1s+JL5dG0MV+YoKltGXE/s6GdxFX7atw0MQ==";
    const ADD_BODY: &str = "nonce=1717171717171&pair=XBTUSDT&type=buy&ordertype=limit&volume=0.001&price=50000&cl_ord_id=abc%201";

    fn creds() -> Credentials {
        Credentials {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            passphrase: None,
        }
    }

    fn post(path: &str, body: &str, sign: Option<&str>) -> TrapRequest {
        let mut h = vec![
            ("API-Key", KEY),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        if let Some(s) = sign {
            h.push(("API-Sign", s));
        }
        request(Exchange::Kraken, Method::POST, path, None, &h, body)
    }

    fn ccxt_vectors() -> Vec<TrapRequest> {
        vec![
            post(
                "/0/private/BalanceEx",
                "nonce=1717171717171",
                Some("hHmm3UF3lc4pNdeWy6uWQcoCO3VyssBt35pt8g01Y8JKzaOxmyE+8FayPo0jw8xHxHQ2xsn6AdIhJIfdGeoxVw=="),
            ),
            post(
                "/0/private/AddOrder",
                ADD_BODY,
                Some("zq95QgkAaZD7fNh5I0e+s1lrv53AF2W/PBzhFL2FUg6j6XrX+AQtw/BnB1+LuK9cqIFBZR4//SNw3417lmmNXg=="),
            ),
            // JSON body (batch calls): the nonce is a JSON field.
            post(
                "/0/private/CancelOrderBatch",
                r#"{"nonce":"1717171717171","orders":["OABCDE-FGHIJ-KLMNOP"]}"#,
                Some("B48ZCEbKaPlxAOR1PeTDykMTYAB3CWvkeBjqClm0dXekTjtXku0razKj8mVZccHCfh3M8bRFpnRyNBd07/pLbA=="),
            ),
        ]
    }

    #[test]
    fn documented_test_vector() {
        assert_eq!(
            sign(
                DOC_SECRET,
                "/0/private/AddOrder",
                "1616492376594",
                DOC_BODY.as_bytes()
            )
            .unwrap(),
            DOC_SIGN
        );
        let c = Credentials {
            api_key: KEY.into(),
            api_secret: DOC_SECRET.into(),
            passphrase: None,
        };
        let r = post("/0/private/AddOrder", DOC_BODY, Some(DOC_SIGN));
        assert_eq!(Kraken.check_signature(&r, &c), SigCheck::Valid);
    }

    #[test]
    fn ccxt_signed_requests_are_valid() {
        for r in ccxt_vectors() {
            assert_eq!(
                Kraken.check_signature(&r, &creds()),
                SigCheck::Valid,
                "{}",
                r.path
            );
        }
        // Behind the trap's prefix, the client signs the path below it.
        let mut r = ccxt_vectors().remove(0);
        r.full_path = "/kraken/0/private/BalanceEx".into();
        assert_eq!(Kraken.check_signature(&r, &creds()), SigCheck::Valid);
    }

    #[test]
    fn wrong_secret_tampering_nonce_and_missing() {
        let bad = Credentials {
            api_secret: DOC_SECRET.into(),
            ..creds()
        };
        for r in ccxt_vectors() {
            assert_eq!(
                Kraken.check_signature(&r, &bad),
                SigCheck::Invalid(Rejection::BadSignature)
            );
        }
        let mut r = ccxt_vectors().remove(1);
        r.body = Bytes::from(ADD_BODY.replace("0.001", "0.002"));
        assert_eq!(
            Kraken.check_signature(&r, &creds()),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        let mut r = ccxt_vectors().remove(1);
        r.path = "/0/private/Withdraw".into();
        r.full_path = "/kraken/0/private/Withdraw".into();
        assert_eq!(
            Kraken.check_signature(&r, &creds()),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Not base64.
        let r = post("/0/private/Balance", "nonce=1", Some("!!!"));
        assert_eq!(
            Kraken.check_signature(&r, &creds()),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // No signature.
        let r = post("/0/private/Balance", "nonce=1", None);
        assert_eq!(Kraken.check_signature(&r, &creds()), SigCheck::Missing);
        // Correctly signed, but a nonce no client sends: missing, zero, negative, huge.
        for body in [
            "a=1",
            "nonce=0",
            "nonce=-5",
            "nonce=99999999999999999999999",
            "nonce=12x",
        ] {
            let nonce = form_nonce(body);
            let s = sign(SECRET, "/0/private/Balance", &nonce, body.as_bytes()).unwrap();
            let r = post("/0/private/Balance", body, Some(&s));
            assert_eq!(
                Kraken.check_signature(&r, &creds()),
                SigCheck::Invalid(Rejection::StaleTimestamp),
                "{body}"
            );
        }
        // A counter-style nonce is fine: monotonicity is the trap's business.
        let s = sign(SECRET, "/0/private/Balance", "42", b"nonce=42").unwrap();
        assert_eq!(
            Kraken.check_signature(&post("/0/private/Balance", "nonce=42", Some(&s)), &creds()),
            SigCheck::Valid
        );
        // Garbage bodies never panic.
        for body in ["\u{0}\u{ff}", "{", "{\"nonce\":[1]}", "nonce=%ZZ&&&=="] {
            let _ =
                Kraken.check_signature(&post("/0/private/Balance", body, Some("AAAA")), &creds());
            let _ = Kraken.classify(&post("/0/private/AddOrder", body, None));
        }
    }

    fn form_nonce(body: &str) -> String {
        crate::emulator::form_pairs(body)
            .into_iter()
            .find(|(k, _)| k == "nonce")
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn reject_bodies_are_krakens() {
        let r = ccxt_vectors().remove(0);
        for (why, status, want) in [
            (
                Rejection::MissingKey,
                200,
                r#"{"error":["EAPI:Invalid key"]}"#,
            ),
            (
                Rejection::MalformedKey,
                200,
                r#"{"error":["EAPI:Invalid key"]}"#,
            ),
            (
                Rejection::UnknownKey,
                200,
                r#"{"error":["EAPI:Invalid key"]}"#,
            ),
            (
                Rejection::MissingSignature,
                200,
                r#"{"error":["EAPI:Invalid signature"]}"#,
            ),
            (
                Rejection::BadSignature,
                200,
                r#"{"error":["EAPI:Invalid signature"]}"#,
            ),
            (
                Rejection::StaleTimestamp,
                200,
                r#"{"error":["EAPI:Invalid nonce"]}"#,
            ),
            (
                Rejection::NotFound,
                404,
                r#"{"error":["EGeneral:Unknown method"]}"#,
            ),
            (
                Rejection::Unavailable,
                200,
                r#"{"error":["EService:Unavailable"]}"#,
            ),
        ] {
            let (s, ct, body) = body_of(Kraken.reject(&r, why)).await;
            assert_eq!(
                (s.as_u16(), ct.as_str(), body.as_str()),
                (status, CONTENT_TYPE, want),
                "{why:?}"
            );
        }
    }

    #[test]
    fn api_key_and_classify() {
        assert_eq!(Kraken.api_key(&ccxt_vectors()[0]).as_deref(), Some(KEY));
        let a = Kraken.classify(&ccxt_vectors()[1]);
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(
            a.params,
            json!({"pair":"XBTUSDT","type":"buy","ordertype":"limit","volume":"0.001","price":"50000","cl_ord_id":"abc 1"})
        );
        let r = post(
            "/0/private/Withdraw",
            "nonce=1&asset=USDT&key=my%20cold%20wallet&amount=5000&address=TXyz&otp=123456",
            None,
        );
        let a = Kraken.classify(&r);
        assert_eq!(a.class, ActionClass::Withdraw);
        // The 2FA password is never evidence.
        assert_eq!(
            a.params,
            json!({"asset":"USDT","key":"my cold wallet","amount":"5000","address":"TXyz"})
        );
        let r = post(
            "/0/private/DepositAddresses",
            "nonce=1&asset=XXBT&method=Bitcoin",
            None,
        );
        assert_eq!(Kraken.classify(&r).class, ActionClass::Address);
        let r = post(
            "/0/private/CancelOrder",
            "nonce=1&txid=OABCDE-FGHIJ-KLMNOP",
            None,
        );
        assert_eq!(Kraken.classify(&r).class, ActionClass::Cancel);
        let r = post("/0/private/BalanceEx", "nonce=1", None);
        assert_eq!(Kraken.classify(&r).class, ActionClass::Read);
    }

    async fn call(req: &TrapRequest, account: &Account<'_>) -> Value {
        let (s, _, body) = body_of(Kraken.private(req, account).await).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    #[tokio::test]
    async fn private_round_trip() {
        let book = MemoryOrderBook::default();
        let c = creds();
        let id = Uuid::now_v7();
        let account = crate::testkit::account(Exchange::Kraken, id, &c, &book);
        let v = call(&post("/0/private/BalanceEx", "nonce=1", None), &account).await;
        assert_eq!(v["error"], json!([]));
        let bal = market::balances(id);
        let usdt: f64 = v["result"]["USDT"]["balance"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((usdt - bal[0].1).abs() < 1e-6);
        assert!(v["result"]["XXBT"]["balance"].is_string());
        assert_eq!(v["result"]["USDT"]["hold_trade"], "0.00000000");

        let v = call(&ccxt_vectors()[1], &account).await;
        assert_eq!(v["error"], json!([]));
        assert_eq!(
            v["result"]["descr"]["order"],
            "buy 0.00100000 XBTUSDT @ limit 50000.00"
        );
        let txid = v["result"]["txid"][0].as_str().unwrap().to_owned();
        assert_eq!(txid.len(), 19);
        assert_eq!(txid.matches('-').count(), 2);
        assert!(txid.starts_with('O'));

        let v = call(&post("/0/private/BalanceEx", "nonce=2", None), &account).await;
        assert_eq!(v["result"]["USDT"]["hold_trade"], "50.00000000");

        let v = call(&post("/0/private/OpenOrders", "nonce=3", None), &account).await;
        let o = &v["result"]["open"][&txid];
        assert_eq!(o["status"], "open");
        assert_eq!(o["descr"]["pair"], "XBTUSDT");
        assert_eq!(o["descr"]["price"], "50000.00");
        assert_eq!(o["vol"], "0.00100000");
        assert_eq!(o["cl_ord_id"], "abc 1");

        let v = call(
            &post(
                "/0/private/CancelOrder",
                &format!("nonce=4&txid={txid}"),
                None,
            ),
            &account,
        )
        .await;
        assert_eq!(v["result"]["count"], 1);
        let v = call(
            &post(
                "/0/private/CancelOrder",
                &format!("nonce=5&txid={txid}"),
                None,
            ),
            &account,
        )
        .await;
        assert_eq!(v["error"], json!(["EOrder:Unknown order"]));
        let v = call(&post("/0/private/OpenOrders", "nonce=6", None), &account).await;
        assert_eq!(v["result"]["open"], json!({}));
        let v = call(
            &post(
                "/0/private/QueryOrders",
                &format!("nonce=7&txid={txid}"),
                None,
            ),
            &account,
        )
        .await;
        assert_eq!(v["result"][&txid]["status"], "canceled");

        let v = call(
            &post("/0/private/DepositMethods", "nonce=8&asset=USDT", None),
            &account,
        )
        .await;
        let methods: Vec<&str> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap())
            .collect();
        assert!(methods.contains(&"Tether USD (TRC20)"));
        let v = call(
            &post(
                "/0/private/DepositAddresses",
                "nonce=9&asset=USDT&method=Tether%20USD%20(TRC20)",
                None,
            ),
            &account,
        )
        .await;
        assert_eq!(
            v["result"][0]["address"],
            market::deposit_address(id, "USDT", "TRX")
        );
        let v = call(
            &post(
                "/0/private/DepositAddresses",
                "nonce=9&asset=XXBT&method=Bitcoin",
                None,
            ),
            &account,
        )
        .await;
        assert!(v["result"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("bc1q"));
        let v = call(
            &post(
                "/0/private/Withdraw",
                "nonce=10&asset=USDT&key=cold&amount=5000",
                None,
            ),
            &account,
        )
        .await;
        assert!(v["result"]["refid"].is_string());

        // Bad input: Kraken errors, never a panic.
        for (path, body) in [
            (
                "/0/private/AddOrder",
                "nonce=1&pair=NOPE&type=buy&ordertype=limit&volume=1&price=1",
            ),
            (
                "/0/private/AddOrder",
                "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=1e400&price=1",
            ),
            (
                "/0/private/AddOrder",
                "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=0.0000001&price=1",
            ),
            (
                "/0/private/AddOrder",
                "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=1",
            ),
            ("/0/private/AddOrder", "\u{0}"),
            ("/0/private/CancelOrder", "nonce=1"),
            ("/0/private/Withdraw", "nonce=1&asset=NOPE&key=k&amount=1"),
            (
                "/0/private/DepositAddresses",
                "nonce=1&asset=USDT&method=Nope",
            ),
        ] {
            let v = call(&post(path, body, None), &account).await;
            assert!(!v["error"].as_array().unwrap().is_empty(), "{path} {body}");
        }
        let (s, _, _) = body_of(
            Kraken
                .private(&post("/0/private/Nope", "nonce=1", None), &account)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn public_data_in_krakens_naming() {
        let get =
            |path: &str, q: Option<&str>| request(Exchange::Kraken, Method::GET, path, q, &[], "");
        let (s, ct, body) =
            body_of(Kraken.public(&get("/0/public/AssetPairs", None)).unwrap()).await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, CONTENT_TYPE));
        let v: Value = serde_json::from_str(&body).unwrap();
        let r = &v["result"];
        let xbt = &r["XXBTZUSD"];
        assert_eq!(xbt["altname"], "XBTUSD");
        assert_eq!(xbt["wsname"], "XBT/USD");
        assert_eq!(
            (xbt["base"].as_str(), xbt["quote"].as_str()),
            (Some("XXBT"), Some("ZUSD"))
        );
        assert_eq!(r["XBTUSDT"]["quote"], "USDT");
        assert_eq!(r["XETHXXBT"]["altname"], "ETHXBT");
        assert_eq!(r["XDGUSD"]["base"], "XXDG");
        for (_, p) in r.as_object().unwrap() {
            for k in ["pair_decimals", "lot_decimals", "cost_decimals"] {
                assert!(p[k].is_u64(), "{k}");
            }
            for k in [
                "ordermin",
                "costmin",
                "tick_size",
                "status",
                "base",
                "quote",
                "altname",
                "wsname",
            ] {
                assert!(p[k].is_string(), "{k}");
            }
            assert!(p["fees"][0][1].is_f64() && p["fees_maker"][0][1].is_f64());
        }
        let (_, _, body) = body_of(Kraken.public(&get("/0/public/Assets", None)).unwrap()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["result"]["XXBT"]["altname"], "XBT");
        assert_eq!(v["result"]["ZUSD"]["altname"], "ZUSD");
        assert_eq!(v["result"]["USDT"]["decimals"], 8);
        let (_, _, body) = body_of(
            Kraken
                .public(&get("/0/public/Ticker", Some("pair=XBTUSD")))
                .unwrap(),
        )
        .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["result"]["XXBTZUSD"]["c"][0].is_string());
        let (_, _, body) = body_of(
            Kraken
                .public(&get("/0/public/Ticker", Some("pair=NOPE")))
                .unwrap(),
        )
        .await;
        assert_eq!(body, r#"{"error":["EQuery:Unknown asset pair"]}"#);
        let (_, _, body) = body_of(Kraken.public(&get("/0/public/Time", None)).unwrap()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["result"]["unixtime"].as_i64().unwrap() > 1_700_000_000);
        assert!(Kraken
            .public(&post("/0/private/Balance", "nonce=1", None))
            .is_none());
    }
}
