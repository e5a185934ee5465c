//! Binance spot emulator: `api.binance.com` as ccxt (`ccxt.binance`) and the Binance
//! SDKs see it.
//!
//! Serves the public spot endpoints (`/api/v3/ping`, `time`, `exchangeInfo`, tickers,
//! `depth`), the futures listings ccxt's `load_markets()` fetches
//! (`/fapi/v1/exchangeInfo`, `/dapi/v1/exchangeInfo`, answered with no symbols), and the
//! signed endpoints an attacker with a stolen key uses: account, orders, trades, the key's
//! restrictions, deposit address, withdraw, plus the signed `sapi` listings ccxt calls
//! inside `load_markets()` (`capital/config/getall`, `margin/allPairs`,
//! `margin/isolated/allPairs`).
//!
//! Sources: `/work/shared/design/exchanges.md` §1 (signing, time rule, error bodies, test
//! vector), the Binance spot API docs (response shapes, error codes), and ccxt 4.5.90
//! `binance.py` (`sign()`, `parse_market`, `parse_currency`, `parse_balance_custom`,
//! `parse_order`, `parse_deposit_address`), which reads every field served here.
//!
//! Signing (HMAC keys): `signature = hex(HMAC-SHA256(secret, query + body))` over the raw
//! query string and raw body as received, `signature=...` removed, no separator. Valid
//! when `timestamp < now + 1000` and `now - timestamp <= recvWindow` (default 5000, at
//! most 60000; `timestamp` may be in microseconds).

// Handlers return the exchange's finished error answer as `Err(Response)`: built at most
// once per request, boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::fmt::Write;

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hmac::{Hmac, Mac};
use keytrap_core::{Credentials, Exchange};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::emulator::{
    Account, Action, ActionClass, Emulator, Order, Rejection, SigCheck, TrapRequest,
};
use crate::market::{self, Market, CURRENCIES, MARKETS};
use crate::rendered::{Answer, Rendered, Split};

/// Binance answers JSON with this exact content type.
const JSON_CT: &str = "application/json;charset=UTF-8";

/// Default and maximum `recvWindow` (ms).
const DEFAULT_RECV_WINDOW: f64 = 5000.0;
const MAX_RECV_WINDOW: f64 = 60000.0;

/// The Binance spot emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Binance;

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// A Binance success answer.
fn ok(body: Value) -> Response {
    ok_text(body.to_string())
}

/// [`ok`] with the body already serialized.
fn ok_text(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, JSON_CT)], body).into_response()
}

/// A Binance error answer: `{"code":-1022,"msg":"..."}` in that key order.
fn err(status: StatusCode, code: i32, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, JSON_CT)],
        err_body(code, msg),
    )
        .into_response()
}

/// [`err`]'s body, written straight out: every refused request has one (unknown keys
/// included), and `format!` through a `Value` was a measurable part of them.
fn err_body(code: i32, msg: &str) -> String {
    let mut body = String::with_capacity(msg.len() + 28);
    body.push_str("{\"code\":");
    let _ = write!(body, "{code},\"msg\":");
    // What serde_json escapes: quotes, backslashes and control characters.
    if msg.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        body.push_str(&Value::from(msg).to_string());
    } else {
        body.push('"');
        body.push_str(msg);
        body.push('"');
    }
    body.push('}');
    body
}

fn mandatory(name: &str) -> Response {
    err(
        StatusCode::BAD_REQUEST,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn invalid_symbol() -> Response {
    err(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.")
}

fn illegal_decimal(name: &str) -> Response {
    err(
        StatusCode::BAD_REQUEST,
        -1100,
        &format!(
            "Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'."
        ),
    )
}

fn filter_failure(filter: &str) -> Response {
    err(
        StatusCode::BAD_REQUEST,
        -1013,
        &format!("Filter failure: {filter}"),
    )
}

/// Binance's own 404 is its HTML error page; this is a short stand-in (*unverified*: the
/// real page is long and changes).
const NOT_FOUND_HTML: &str = "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1></center></body></html>";

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// FNV-1a: deterministic, cheap, not a secret (for ids and plausible numbers).
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

fn symbol_of(m: &Market) -> String {
    format!("{}{}", m.base, m.quote)
}

fn find_market(symbol: &str) -> Option<&'static Market> {
    MARKETS
        .iter()
        .find(|m| m.base.len() + m.quote.len() == symbol.len() && symbol_of(m) == symbol)
}

/// Binance prints decimals with 8 places.
fn d8(v: f64) -> String {
    // An empty f64 sum is -0.0: Binance never prints a negative zero.
    market::fixed(if v == 0.0 { 0.0 } else { v }, 8)
}

/// Binance's decimal parameter rule `^([0-9]{1,20})(\.[0-9]{1,20})?$`.
fn parse_decimal(s: &str) -> Option<f64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Whether `v` is a whole multiple of `step` (tolerant of float noise).
fn is_multiple(v: f64, step: f64) -> bool {
    let n = v / step;
    (n - n.round()).abs() < 1e-9 * n.abs().max(1.0)
}

fn tick(m: &Market) -> f64 {
    10f64.powi(-(m.price_decimals as i32))
}

fn step(m: &Market) -> f64 {
    10f64.powi(-(m.qty_decimals as i32))
}

fn min_notional(m: &Market) -> f64 {
    if m.quote == "BTC" {
        0.0001
    } else {
        5.0
    }
}

const MAX_PRICE: f64 = 1_000_000.0;

/// LOT_SIZE maxQty: meme coins trade in the billions.
fn max_qty(m: &Market) -> f64 {
    if m.price < 0.01 {
        92_233_720_368.0
    } else {
        9_000_000.0
    }
}

/// The request's parameters (query, then form body) without the signature.
fn params(req: &TrapRequest) -> Vec<(String, String)> {
    req.query_params()
        .into_iter()
        .chain(req.form_params())
        .filter(|(k, _)| k != "signature")
        .collect()
}

fn non_empty<'a>(req: &'a TrapRequest, name: &str) -> Option<Cow<'a, str>> {
    req.param_cow(name).filter(|v| !v.is_empty())
}

/// `symbol=X` or `symbols=["X","Y"]`, each checked; `Err` is Binance's answer.
fn symbols_param(req: &TrapRequest) -> Result<Option<Vec<&'static Market>>, Response> {
    if let Some(s) = req.param("symbol") {
        return find_market(&s)
            .map(|m| Some(vec![m]))
            .ok_or_else(invalid_symbol);
    }
    if let Some(list) = req.param("symbols") {
        let names: Vec<String> = serde_json::from_str(&list).map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                -1100,
                "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.",
            )
        })?;
        let mut out = Vec::with_capacity(names.len());
        for n in &names {
            out.push(find_market(n).ok_or_else(invalid_symbol)?);
        }
        return Ok(Some(out));
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------

/// `a=1&signature=x&b=2` -> (`a=1&b=2`, first signature value).
fn strip_signature(s: &str) -> (Cow<'_, str>, Option<Cow<'_, str>>) {
    // What every client sends: one `signature` pair, the last. The payload is then what
    // precedes it, as the general form below would join it, without a copy.
    const LAST: &str = "signature=";
    if let Some(at) = s.rfind(LAST) {
        let value = &s[at + LAST.len()..];
        let starts_pair = at == 0 || s.as_bytes()[at - 1] == b'&';
        if starts_pair && !value.contains('&') && !s[..at].contains("signature") {
            let kept = &s[..at.saturating_sub(1)];
            return (
                Cow::Borrowed(kept),
                Some(crate::emulator::percent_decode_cow(value)),
            );
        }
    }
    let (kept, sig) = strip_signature_pairs(s);
    (Cow::Owned(kept), sig.map(Cow::Owned))
}

/// [`strip_signature`]'s general form: every pair whose raw key is `signature` removed,
/// the first one's value decoded.
fn strip_signature_pairs(s: &str) -> (String, Option<String>) {
    let mut sig = None;
    let kept: Vec<&str> = s
        .split('&')
        .filter(|seg| {
            let (k, v) = seg.split_once('=').unwrap_or((seg, ""));
            if k == "signature" {
                if sig.is_none() {
                    sig = Some(crate::emulator::percent_decode(v));
                }
                false
            } else {
                true
            }
        })
        .collect();
    (kept.join("&"), sig)
}

/// The signed payload (query + body, signature removed) and the presented signature.
fn signed_payload(req: &TrapRequest) -> (Vec<u8>, Option<Cow<'_, str>>) {
    let (query, qsig) = strip_signature(req.query.as_deref().unwrap_or(""));
    let mut payload = Vec::with_capacity(query.len() + req.body.len());
    payload.extend_from_slice(query.as_bytes());
    let mut sig = qsig;
    match std::str::from_utf8(&req.body) {
        Ok(body) if !body.is_empty() => {
            let (body, bsig) = strip_signature(body);
            payload.extend_from_slice(body.as_bytes());
            sig = sig.or(bsig);
        }
        // Not text: it cannot carry a signature parameter; it is still signed content.
        _ => payload.extend_from_slice(&req.body),
    }
    (payload, sig.filter(|s| !s.is_empty()))
}

/// Why the signing parameters are unusable (Binance's own answer), if they are.
fn signing_param_problem(req: &TrapRequest) -> Option<Response> {
    signing_problem(req, signed_payload(req).1.is_some())
}

/// [`signing_param_problem`] once the signature's presence is known.
fn signing_problem(req: &TrapRequest, signed: bool) -> Option<Response> {
    if !signed {
        return Some(mandatory("signature"));
    }
    let Some(ts) = non_empty(req, "timestamp") else {
        return Some(mandatory("timestamp"));
    };
    if timestamp_ms(&ts).is_none() {
        return Some(err(
            StatusCode::BAD_REQUEST,
            -1100,
            "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.",
        ));
    }
    if let Some(rw) = req.param_cow("recvWindow") {
        if recv_window(&rw).is_none() {
            return Some(err(
                StatusCode::BAD_REQUEST,
                -1100,
                "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}(\\.[0-9]{1,3})?$'.",
            ));
        }
    }
    None
}

/// `timestamp` in ms; values with 16 digits are microseconds (Binance accepts both).
fn timestamp_ms(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    Some(if v >= 1e15 { v / 1000.0 } else { v })
}

/// `recvWindow` in ms (up to three decimals: microsecond precision).
fn recv_window(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = !int.is_empty()
        && int.len() <= 20
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.contains('.') && frac.is_empty());
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// The time rule against `now` (ms); `Err` is the rejection.
fn time_rule(req: &TrapRequest, now: f64) -> Result<(), Rejection> {
    let ts = non_empty(req, "timestamp")
        .as_deref()
        .and_then(timestamp_ms)
        .ok_or(Rejection::MissingSignature)?;
    let rw = match req.param_cow("recvWindow") {
        Some(s) => recv_window(&s).ok_or(Rejection::MissingSignature)?,
        None => DEFAULT_RECV_WINDOW,
    };
    if rw > MAX_RECV_WINDOW || ts >= now + 1000.0 || now - ts > rw {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

/// The full check at a given server time (ms): the unit tests pin the clock here.
fn verify_at(req: &TrapRequest, creds: &Credentials, now: f64) -> SigCheck {
    let (payload, sig) = signed_payload(req);
    if signing_problem(req, sig.is_some()).is_some() {
        return SigCheck::Missing;
    }
    // Binance checks the time window before the signature (a clock-skewed client sees
    // -1021 even with a wrong secret).
    if let Err(why) = time_rule(req, now) {
        return if why == Rejection::MissingSignature {
            SigCheck::Missing
        } else {
            SigCheck::Invalid(why)
        };
    }
    let Some(sig) = sig else {
        return SigCheck::Missing;
    };
    // hex decoding accepts either case: Binance compares case-insensitively. Anything but
    // 64 hex digits cannot be an HMAC-SHA256 and fails like a wrong one.
    let Some(sig) = crate::emulator::hex32(sig.trim()) else {
        return SigCheck::Invalid(Rejection::BadSignature);
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(creds.api_secret.as_bytes()) else {
        return SigCheck::Invalid(Rejection::BadSignature);
    };
    mac.update(&payload);
    // verify_slice compares in constant time.
    match mac.verify_slice(&sig) {
        Ok(()) => SigCheck::Valid,
        Err(_) => SigCheck::Invalid(Rejection::BadSignature),
    }
}

// ---------------------------------------------------------------------------------------
// Public data
// ---------------------------------------------------------------------------------------

fn rate_limits() -> Value {
    json!([
        {"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000},
        {"rateLimitType":"ORDERS","interval":"SECOND","intervalNum":10,"limit":100},
        {"rateLimitType":"ORDERS","interval":"DAY","intervalNum":1,"limit":200000},
        {"rateLimitType":"RAW_REQUESTS","interval":"MINUTE","intervalNum":5,"limit":61000}
    ])
}

fn symbol_info(m: &Market) -> Value {
    json!({
        "symbol": symbol_of(m),
        "status": "TRADING",
        "baseAsset": m.base,
        "baseAssetPrecision": 8,
        "quoteAsset": m.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT","LIMIT_MAKER","MARKET","STOP_LOSS","STOP_LOSS_LIMIT","TAKE_PROFIT","TAKE_PROFIT_LIMIT"],
        "icebergAllowed": true,
        "ocoAllowed": true,
        "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": true,
        "cancelReplaceAllowed": true,
        "amendAllowed": true,
        "pegInstructionsAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": m.quote != "USDC",
        "filters": [
            {"filterType":"PRICE_FILTER","minPrice":d8(tick(m)),"maxPrice":d8(MAX_PRICE),"tickSize":d8(tick(m))},
            {"filterType":"LOT_SIZE","minQty":d8(step(m)),"maxQty":d8(max_qty(m)),"stepSize":d8(step(m))},
            {"filterType":"ICEBERG_PARTS","limit":10},
            {"filterType":"MARKET_LOT_SIZE","minQty":d8(0.0),"maxQty":d8(max_qty(m) / 10.0),"stepSize":d8(0.0)},
            {"filterType":"TRAILING_DELTA","minTrailingAboveDelta":10,"maxTrailingAboveDelta":2000,"minTrailingBelowDelta":10,"maxTrailingBelowDelta":2000},
            {"filterType":"PERCENT_PRICE_BY_SIDE","bidMultiplierUp":"5","bidMultiplierDown":"0.2","askMultiplierUp":"5","askMultiplierDown":"0.2","avgPriceMins":5},
            {"filterType":"NOTIONAL","minNotional":d8(min_notional(m)),"applyMinToMarket":true,"maxNotional":"9000000.00000000","applyMaxToMarket":false,"avgPriceMins":5},
            {"filterType":"MAX_NUM_ORDERS","maxNumOrders":200},
            {"filterType":"MAX_NUM_ALGO_ORDERS","maxNumAlgoOrders":5}
        ],
        "permissions": [],
        "permissionSets": [["SPOT","MARGIN","TRD_GRP_004","TRD_GRP_005","TRD_GRP_006"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER","EXPIRE_MAKER","EXPIRE_BOTH","DECREMENT"]
    })
}

fn exchange_info(req: &TrapRequest) -> Response {
    let markets: Vec<&Market> = match symbols_param(req) {
        Ok(Some(list)) => list,
        Ok(None) => MARKETS.iter().collect(),
        Err(r) => return r,
    };
    ok(json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": rate_limits(),
        "exchangeFilters": [],
        "symbols": markets.into_iter().map(symbol_info).collect::<Vec<_>>(),
    }))
}

/// USDⓈ-M / COIN-M listings: valid documents without symbols (the trap is a spot account).
fn futures_info(usd_margined: bool) -> Response {
    let mut doc = json!({
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": rate_limits(),
        "exchangeFilters": [],
        "symbols": [],
    });
    if usd_margined {
        doc["futuresType"] = json!("U_MARGINED");
        doc["assets"] = json!([]);
    }
    ok(doc)
}

/// A plausible daily change for a symbol, in percent (-6..+6), stable per symbol.
fn daily_change(m: &Market) -> f64 {
    let h = fnv(&[symbol_of(m).as_bytes(), b"24h"]);
    ((h % 1201) as f64 - 600.0) / 100.0
}

fn ticker_24h(m: &Market, now: i64) -> Value {
    let sym = symbol_of(m);
    let h = fnv(&[sym.as_bytes(), b"vol"]);
    let pct = daily_change(m);
    let last = m.price;
    let open = last / (1.0 + pct / 100.0);
    let high = last.max(open) * 1.012;
    let low = last.min(open) * 0.988;
    let t = tick(m);
    let volume = (1_000_000.0 + (h % 50_000_000) as f64) / last.max(1e-9).sqrt();
    let count = 100_000 + h % 2_000_000;
    let last_id = 3_000_000_000 + (h % 1_000_000_000);
    json!({
        "symbol": sym,
        "priceChange": d8(last - open),
        "priceChangePercent": market::fixed(pct, 3),
        "weightedAvgPrice": d8((open + last) / 2.0),
        "prevClosePrice": d8(open),
        "lastPrice": d8(last),
        "lastQty": d8(step(m) * 37.0),
        "bidPrice": d8(last - t),
        "bidQty": d8(step(m) * 1234.0),
        "askPrice": d8(last),
        "askQty": d8(step(m) * 871.0),
        "openPrice": d8(open),
        "highPrice": d8(high),
        "lowPrice": d8(low),
        "volume": d8(volume),
        "quoteVolume": d8(volume * last),
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": last_id - count + 1,
        "lastId": last_id,
        "count": count,
    })
}

fn one_or_list(req: &TrapRequest, f: impl Fn(&Market) -> Value) -> Response {
    match symbols_param(req) {
        Ok(Some(list)) if req.param("symbol").is_some() => ok(f(list[0])),
        Ok(Some(list)) => ok(Value::Array(list.into_iter().map(f).collect())),
        Ok(None) => ok(Value::Array(MARKETS.iter().map(f).collect())),
        Err(r) => r,
    }
}

fn depth(req: &TrapRequest) -> Response {
    let Some(sym) = non_empty(req, "symbol") else {
        return mandatory("symbol");
    };
    let Some(m) = find_market(&sym) else {
        return invalid_symbol();
    };
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 5000)
        .min(100);
    let t = tick(m);
    let h = fnv(&[sym.as_bytes(), b"depth"]);
    let level = |i: usize| -> String {
        let q = step(m) * (50.0 + ((h >> (i % 48)) % 5000) as f64);
        d8(q)
    };
    let bids: Vec<Value> = (0..limit)
        .map(|i| json!([d8(m.price - t * (i as f64 + 1.0)), level(i)]))
        .collect();
    let asks: Vec<Value> = (0..limit)
        .map(|i| json!([d8(m.price + t * i as f64), level(i + 7)]))
        .collect();
    ok(json!({
        "lastUpdateId": 60_000_000_000u64 + (now_ms() as u64 / 100) % 1_000_000_000,
        "bids": bids,
        "asks": asks,
    }))
}

// ---------------------------------------------------------------------------------------
// Private data
// ---------------------------------------------------------------------------------------

fn held(canary: Uuid, asset: &str) -> f64 {
    market::balances(canary)
        .into_iter()
        .find(|(a, _)| *a == asset)
        .map_or(0.0, |(_, v)| v)
}

/// What open orders lock: the quote of a limit buy, the base of a sell.
fn locked(orders: &[Order], asset: &str) -> f64 {
    orders
        .iter()
        .filter_map(|o| {
            let m = find_market(&o.symbol)?;
            let qty: f64 = o.amount.parse().ok()?;
            if o.side == "buy" && m.quote == asset {
                let price = o
                    .price
                    .as_deref()
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|p| *p > 0.0)
                    .unwrap_or(m.price);
                Some(qty * price)
            } else if o.side == "sell" && m.base == asset {
                Some(qty)
            } else {
                None
            }
        })
        .sum()
}

fn uid(canary: Uuid) -> u64 {
    100_000_000 + fnv(&[canary.as_bytes(), b"uid"]) % 900_000_000
}

#[derive(serde::Serialize)]
struct Balance<'a> {
    asset: &'a str,
    free: String,
    locked: String,
}

#[derive(serde::Serialize)]
struct CommissionRates {
    maker: &'static str,
    taker: &'static str,
    buyer: &'static str,
    seller: &'static str,
}

/// `GET /api/v3/account`, in Binance's field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountInfo<'a> {
    maker_commission: u32,
    taker_commission: u32,
    buyer_commission: u32,
    seller_commission: u32,
    commission_rates: CommissionRates,
    can_trade: bool,
    can_withdraw: bool,
    can_deposit: bool,
    brokered: bool,
    require_self_trade_prevention: bool,
    prevent_sor: bool,
    update_time: i64,
    account_type: &'static str,
    balances: Vec<Balance<'a>>,
    permissions: [&'static str; 1],
    uid: u64,
}

/// How long before the moment of the call the account says it was last updated: fixed
/// per canary, so `updateTime` moves with the clock as a real account's stays put for a
/// while but never runs ahead of it.
fn update_lag(canary: Uuid) -> i64 {
    3_600_000 + (fnv(&[canary.as_bytes(), b"upd"]) % 86_400_000) as i64
}

/// The account answer, serialized straight from [`AccountInfo`]: the call every client
/// makes first and most often (a `Value` tree of it was a tenth of the trap's CPU under
/// load, docs/benchmarks.md).
fn account_json(canary: Uuid, open: &[Order], now: i64, omit_zero: bool) -> String {
    account_info_json(canary, open, now - update_lag(canary), omit_zero)
}

/// [`account_json`] cut around its `updateTime`, for [`Rendered`].
fn account_split(canary: Uuid, open: &[Order], omit_zero: bool) -> Option<Split> {
    // No real `updateTime` is 0, and the field comes before the balances.
    Split::around(
        &account_info_json(canary, open, 0, omit_zero),
        "\"updateTime\":",
        "0",
    )
}

fn account_info_json(canary: Uuid, open: &[Order], update_time: i64, omit_zero: bool) -> String {
    let held_list = market::balances(canary);
    let mut assets: Vec<&str> = held_list.iter().map(|(a, _)| *a).collect();
    for (c, _, _) in CURRENCIES {
        if !assets.contains(c) {
            assets.push(c);
        }
    }
    let balances = assets
        .into_iter()
        .filter_map(|a| {
            // From the one list computed above (held() recomputes it per asset).
            let total = held_list
                .iter()
                .find(|(h, _)| *h == a)
                .map_or(0.0, |(_, v)| *v);
            if omit_zero && total == 0.0 {
                return None;
            }
            let lock = locked(open, a).min(total);
            Some(Balance {
                asset: a,
                free: d8(total - lock),
                locked: d8(lock),
            })
        })
        .collect();
    let info = AccountInfo {
        maker_commission: 10,
        taker_commission: 10,
        buyer_commission: 0,
        seller_commission: 0,
        commission_rates: CommissionRates {
            maker: "0.00100000",
            taker: "0.00100000",
            buyer: "0.00000000",
            seller: "0.00000000",
        },
        can_trade: true,
        can_withdraw: true,
        can_deposit: true,
        brokered: false,
        require_self_trade_prevention: false,
        prevent_sor: false,
        update_time,
        account_type: "SPOT",
        balances,
        permissions: ["SPOT"],
        uid: uid(canary),
    };
    serde_json::to_string(&info).unwrap_or_else(|_| "{}".to_owned())
}

fn network_name(n: &str) -> &'static str {
    match n {
        "ETH" => "Ethereum (ERC20)",
        "BSC" => "BNB Smart Chain (BEP20)",
        "TRX" => "Tron (TRC20)",
        "SOL" => "Solana",
        "ARBITRUM" => "Arbitrum One",
        "BTC" => "Bitcoin",
        "XRP" => "XRP Ledger",
        "ADA" => "Cardano",
        "DOGE" => "DogeCoin",
        "DOT" => "Polkadot",
        "LTC" => "Litecoin",
        "AVAXC" => "AVAX C-Chain",
        "SYS" => "Syscoin",
        _ => "Ethereum (ERC20)",
    }
}

fn explorer(n: &str) -> &'static str {
    match n {
        "ETH" => "https://etherscan.io/address/",
        "BSC" => "https://bscscan.com/address/",
        "TRX" => "https://tronscan.org/#/address/",
        "SOL" => "https://solscan.io/account/",
        "ARBITRUM" => "https://arbiscan.io/address/",
        "BTC" => "https://www.blockchain.com/btc/address/",
        "XRP" => "https://bithomp.com/explorer/",
        "ADA" => "https://cardanoscan.io/address/",
        "DOGE" => "https://dogechain.info/address/",
        "DOT" => "https://polkadot.subscan.io/account/",
        "LTC" => "https://litecoinspace.org/address/",
        "AVAXC" => "https://snowtrace.io/address/",
        _ => "https://etherscan.io/address/",
    }
}

fn address_regex(n: &str) -> &'static str {
    match n {
        "ETH" | "BSC" | "ARBITRUM" | "AVAXC" => "^(0x)[0-9A-Fa-f]{40}$",
        "TRX" => "^T[1-9A-HJ-NP-Za-km-z]{33}$",
        "SOL" => "^[1-9A-HJ-NP-Za-km-z]{32,44}$",
        "BTC" => "^(bc1|[13])[a-zA-HJ-NP-Z0-9]{25,62}$",
        "XRP" => "^r[1-9A-HJ-NP-Za-km-z]{25,34}$",
        "LTC" => "^(L|M|ltc1)[a-zA-HJ-NP-Z0-9]{26,40}$",
        "DOGE" => "^(D|A|9)[a-km-zA-HJ-NP-Z1-9]{33,34}$",
        _ => "",
    }
}

/// USD price of a coin, for plausible fees.
fn usd_price(coin: &str) -> f64 {
    if matches!(coin, "USDT" | "USDC") {
        return 1.0;
    }
    MARKETS
        .iter()
        .find(|m| m.base == coin && m.quote == "USDT")
        .map_or(1.0, |m| m.price)
}

/// A withdraw fee worth about what Binance charges on that network, in the coin.
fn withdraw_fee(coin: &str, network: &str) -> f64 {
    let usd = match network {
        "ETH" => 1.5,
        "BTC" => 2.0,
        "ARBITRUM" | "SOL" | "TRX" => 0.8,
        "BSC" => 0.05,
        _ => 0.5,
    };
    let v = usd / usd_price(coin);
    // Two significant digits.
    let mag = 10f64.powi(v.log10().floor() as i32 - 1);
    (v / mag).round() * mag
}

fn currency_config(canary: Uuid) -> Value {
    let list: Vec<Value> = CURRENCIES
        .iter()
        .map(|(coin, name, networks)| {
            let networks: Vec<Value> = networks
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let fee = withdraw_fee(coin, n);
                    json!({
                        "network": n,
                        "coin": coin,
                        "withdrawIntegerMultiple": "0.00000001",
                        "isDefault": i == 0,
                        "depositEnable": true,
                        "withdrawEnable": true,
                        "depositDesc": "",
                        "withdrawDesc": "",
                        "specialTips": "",
                        "specialWithdrawTips": "",
                        "name": network_name(n),
                        "resetAddressStatus": false,
                        "addressRegex": address_regex(n),
                        "addressRule": "",
                        "memoRegex": if *n == "XRP" { "^[0-9A-Za-z\\-_]{1,120}$" } else { "" },
                        "withdrawFee": market::fixed(fee, 8).trim_end_matches('0').trim_end_matches('.'),
                        "withdrawMin": market::fixed(fee * 2.0, 8).trim_end_matches('0').trim_end_matches('.'),
                        "withdrawMax": "9999999999.99999999",
                        "withdrawInternalMin": "0.00000001",
                        "depositDust": "0.00000001",
                        "minConfirm": 12,
                        "unLockConfirm": 0,
                        "sameAddress": *n == "XRP",
                        "estimatedArrivalTime": 5,
                        "busy": false,
                        "contractAddressUrl": "",
                        "contractAddress": "",
                        "denomination": 1
                    })
                })
                .collect();
            json!({
                "coin": coin,
                "depositAllEnable": true,
                "withdrawAllEnable": true,
                "name": name,
                "free": d8(held(canary, coin)),
                "locked": "0",
                "freeze": "0",
                "withdrawing": "0",
                "ipoing": "0",
                "ipoable": "0",
                "storage": "0",
                "isLegalMoney": false,
                "trading": true,
                "networkList": networks,
            })
        })
        .collect();
    Value::Array(list)
}

fn margin_pairs(isolated: bool) -> Value {
    let list: Vec<Value> = MARKETS
        .iter()
        .filter(|m| m.quote != "USDC")
        .map(|m| {
            let sym = symbol_of(m);
            let mut v = json!({
                "symbol": sym,
                "base": m.base,
                "quote": m.quote,
                "isMarginTrade": true,
                "isBuyAllowed": true,
                "isSellAllowed": true,
            });
            if !isolated {
                v["id"] = json!((351_637_150_141_315_861u64
                    + fnv(&[sym.as_bytes()]) % 1_000_000_000)
                    .to_string());
            }
            v
        })
        .collect();
    Value::Array(list)
}

fn key_created_ms(canary: Uuid, now: i64) -> i64 {
    // A v7 canary id carries its mint time: the key looks as old as the canary.
    canary
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s as i64 * 1000 + i64::from(n / 1_000_000)
        })
        .filter(|ms| *ms > 0 && *ms <= now)
        .unwrap_or(now - 90 * 86_400_000)
}

fn api_restrictions(canary: Uuid, now: i64) -> Value {
    // What an attacker hopes to see: trading and withdrawals on, no IP restriction.
    json!({
        "ipRestrict": false,
        "createTime": key_created_ms(canary, now),
        "enableReading": true,
        "enableWithdrawals": true,
        "enableInternalTransfer": true,
        "enableMargin": true,
        "enableFutures": true,
        "permitsUniversalTransfer": true,
        "enableVanillaOptions": false,
        "enableFixApiTrade": false,
        "enableFixReadOnly": false,
        "enableSpotAndMarginTrading": true,
        "enablePortfolioMarginTrading": false,
    })
}

fn binance_status(o: &Order) -> &'static str {
    if o.status == "cancelled" {
        "CANCELED"
    } else {
        "NEW"
    }
}

fn order_type_of(o: &Order) -> String {
    o.order_type.to_ascii_uppercase()
}

fn time_in_force(_o: &Order) -> &'static str {
    // Binance reports GTC for market orders too.
    "GTC"
}

/// GET /api/v3/order and /openOrders shape.
fn order_json(o: &Order) -> Value {
    let t = o.created_at.timestamp_millis();
    json!({
        "symbol": o.symbol,
        "orderId": o.order_id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "clientOrderId": o.client_order_id.clone().unwrap_or_default(),
        "price": o.price.clone().unwrap_or_else(|| d8(0.0)),
        "origQty": o.amount,
        "executedQty": d8(0.0),
        "cummulativeQuoteQty": d8(0.0),
        "status": binance_status(o),
        "timeInForce": time_in_force(o),
        "type": order_type_of(o),
        "side": o.side.to_ascii_uppercase(),
        "stopPrice": d8(0.0),
        "icebergQty": d8(0.0),
        "time": t,
        "updateTime": t,
        "isWorking": true,
        "workingTime": t,
        "origQuoteOrderQty": d8(0.0),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    })
}

/// POST /api/v3/order shape for `newOrderRespType` ACK, RESULT or FULL.
fn created_json(o: &Order, resp_type: &str) -> Value {
    let t = o.created_at.timestamp_millis();
    let mut v = json!({
        "symbol": o.symbol,
        "orderId": o.order_id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "clientOrderId": o.client_order_id.clone().unwrap_or_default(),
        "transactTime": t,
    });
    if resp_type == "ACK" {
        return v;
    }
    let extra = json!({
        "price": o.price.clone().unwrap_or_else(|| d8(0.0)),
        "origQty": o.amount,
        "executedQty": d8(0.0),
        "origQuoteOrderQty": d8(0.0),
        "cummulativeQuoteQty": d8(0.0),
        "status": "NEW",
        "timeInForce": time_in_force(o),
        "type": order_type_of(o),
        "side": o.side.to_ascii_uppercase(),
        "workingTime": t,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    });
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
        if resp_type == "FULL" {
            obj.insert("fills".into(), json!([]));
        }
    }
    v
}

fn cancelled_json(o: &Order, new_client_id: &str, now: i64) -> Value {
    json!({
        "symbol": o.symbol,
        "origClientOrderId": o.client_order_id.clone().unwrap_or_default(),
        "orderId": o.order_id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "clientOrderId": new_client_id,
        "transactTime": now,
        "price": o.price.clone().unwrap_or_else(|| d8(0.0)),
        "origQty": o.amount,
        "executedQty": d8(0.0),
        "origQuoteOrderQty": d8(0.0),
        "cummulativeQuoteQty": d8(0.0),
        "status": "CANCELED",
        "timeInForce": time_in_force(o),
        "type": order_type_of(o),
        "side": o.side.to_ascii_uppercase(),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    })
}

/// Binance's generated client order ids: 22 alphanumerics.
fn generated_client_id(seed: &[&[u8]]) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let digest = Sha256::new().chain_update(seed.concat()).finalize();
    digest
        .iter()
        .take(22)
        .map(|b| ALPHA[*b as usize % ALPHA.len()] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Private handlers
// ---------------------------------------------------------------------------------------

impl Binance {
    async fn account(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let open = match acc.orders.open_orders(None).await {
            Ok(o) => o,
            Err(_) => return self.reject(req, Rejection::Unavailable),
        };
        let omit = req.param("omitZeroBalances").as_deref() == Some("true");
        let (id, now) = (acc.canary_id, acc.now.timestamp_millis());
        // Without open orders the answer depends on the canary alone (and the time).
        let memo = open.is_empty().then(|| {
            Rendered::global().answer(
                id,
                Answer::BinanceAccount(omit),
                now - update_lag(id),
                || account_split(id, &[], omit),
            )
        });
        ok_text(match memo.flatten() {
            Some(text) => text,
            None => account_json(id, &open, now, omit),
        })
    }

    async fn create_order(&self, req: &TrapRequest, acc: &Account<'_>, test: bool) -> Response {
        let Some(sym) = non_empty(req, "symbol") else {
            return mandatory("symbol");
        };
        let Some(m) = find_market(&sym) else {
            return invalid_symbol();
        };
        let side = match non_empty(req, "side").as_deref() {
            Some("BUY") => "buy",
            Some("SELL") => "sell",
            _ => return mandatory("side"),
        };
        let Some(otype) = non_empty(req, "type") else {
            return mandatory("type");
        };
        let is_limit = matches!(otype.as_ref(), "LIMIT" | "LIMIT_MAKER");
        if !is_limit && otype != "MARKET" {
            // Stop and take-profit orders: accepted as a limit-like order at `price`
            // would misreport them; Binance accepts them, the trap keeps it simple.
            if !matches!(
                otype.as_ref(),
                "STOP_LOSS" | "STOP_LOSS_LIMIT" | "TAKE_PROFIT" | "TAKE_PROFIT_LIMIT"
            ) {
                return err(StatusCode::BAD_REQUEST, -1116, "Invalid orderType.");
            }
        }
        if otype == "LIMIT" && non_empty(req, "timeInForce").is_none() {
            return mandatory("timeInForce");
        }
        let quantity = match non_empty(req, "quantity") {
            Some(q) => match parse_decimal(&q) {
                Some(v) => Some(v),
                None => return illegal_decimal("quantity"),
            },
            None => None,
        };
        let quote_qty = match non_empty(req, "quoteOrderQty") {
            Some(q) => match parse_decimal(&q) {
                Some(v) => Some(v),
                None => return illegal_decimal("quoteOrderQty"),
            },
            None => None,
        };
        let price = match non_empty(req, "price") {
            Some(p) => match parse_decimal(&p) {
                Some(v) => Some(v),
                None => return illegal_decimal("price"),
            },
            None => None,
        };
        let needs_price = otype != "MARKET" && otype != "STOP_LOSS" && otype != "TAKE_PROFIT";
        if needs_price && price.is_none() {
            return mandatory("price");
        }
        let qty =
            match (quantity, quote_qty) {
                (Some(q), _) => q,
                (None, Some(qq)) if otype == "MARKET" => {
                    let q = (qq / m.price / step(m)).floor() * step(m);
                    if qq < min_notional(m) {
                        return filter_failure("NOTIONAL");
                    }
                    q
                }
                (None, _) if otype == "MARKET" => return err(
                    StatusCode::BAD_REQUEST,
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                ),
                (None, _) => return mandatory("quantity"),
            };
        if let Some(p) = price {
            if p < tick(m) || p > MAX_PRICE || !is_multiple(p, tick(m)) {
                return filter_failure("PRICE_FILTER");
            }
        }
        // A quoteOrderQty market order's quantity is Binance's own computation.
        let by_quote = quantity.is_none();
        if qty < step(m) || (!by_quote && (qty > max_qty(m) || !is_multiple(qty, step(m)))) {
            return filter_failure("LOT_SIZE");
        }
        let ref_price = price.filter(|_| is_limit).unwrap_or(m.price);
        if qty * ref_price < min_notional(m) {
            return filter_failure("NOTIONAL");
        }
        // A funded account still cannot spend more than it has.
        let open = match acc.orders.open_orders(None).await {
            Ok(o) => o,
            Err(_) => return self.reject(req, Rejection::Unavailable),
        };
        let (asset, need) = if side == "buy" {
            (m.quote, quote_qty.unwrap_or(qty * ref_price))
        } else {
            (m.base, qty)
        };
        if need > held(acc.canary_id, asset) - locked(&open, asset) + 1e-12 {
            return err(
                StatusCode::BAD_REQUEST,
                -2010,
                "Account has insufficient balance for requested action.",
            );
        }
        if test {
            return ok(json!({}));
        }
        let now = acc.now;
        let client_id = non_empty(req, "newClientOrderId")
            .map(Cow::into_owned)
            .unwrap_or_else(|| {
                generated_client_id(&[
                    acc.canary_id.as_bytes(),
                    &now.timestamp_nanos_opt().unwrap_or_default().to_be_bytes(),
                ])
            });
        // Binance ids grow with time; unique per canary per millisecond, bumped on clash.
        let since_2025 = (now.timestamp_millis() - 1_735_689_600_000).max(0) as u64;
        let mut id = market::numeric_order_id(acc.canary_id, since_2025);
        for _ in 0..64 {
            match acc.orders.get(&id.to_string()).await {
                Ok(None) => break,
                Ok(Some(_)) => id += 1,
                Err(_) => return self.reject(req, Rejection::Unavailable),
            }
        }
        let order = Order {
            order_id: id.to_string(),
            client_order_id: Some(client_id),
            symbol: symbol_of(m),
            side: side.into(),
            order_type: otype.to_ascii_lowercase(),
            price: Some(d8(price.unwrap_or(0.0))),
            amount: d8(qty),
            status: "open".into(),
            created_at: now,
        };
        let order = match acc.orders.place(order).await {
            Ok(o) => o,
            Err(_) => return self.reject(req, Rejection::Unavailable),
        };
        let resp_type = req
            .param("newOrderRespType")
            .unwrap_or_else(|| "FULL".into());
        ok(created_json(&order, &resp_type))
    }

    /// The order named by `orderId` or `origClientOrderId`, for `symbol`.
    async fn find_order(
        &self,
        req: &TrapRequest,
        acc: &Account<'_>,
    ) -> Result<Option<Order>, Response> {
        let Some(sym) = non_empty(req, "symbol") else {
            return Err(mandatory("symbol"));
        };
        if find_market(&sym).is_none() {
            return Err(invalid_symbol());
        }
        let key = non_empty(req, "orderId").or_else(|| non_empty(req, "origClientOrderId"));
        let Some(key) = key else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            ));
        };
        match acc.orders.get(&key).await {
            Ok(o) => Ok(o.filter(|o| o.symbol == sym)),
            Err(_) => Err(self.reject(req, Rejection::Unavailable)),
        }
    }

    async fn query_order(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        match self.find_order(req, acc).await {
            Ok(Some(o)) => ok(order_json(&o)),
            Ok(None) => err(StatusCode::BAD_REQUEST, -2013, "Order does not exist."),
            Err(r) => r,
        }
    }

    async fn cancel_order(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let o = match self.find_order(req, acc).await {
            Ok(Some(o)) if o.status == "open" => o,
            Ok(_) => return err(StatusCode::BAD_REQUEST, -2011, "Unknown order sent."),
            Err(r) => return r,
        };
        match acc.orders.cancel(&o.order_id).await {
            Ok(Some(c)) => {
                let new_id = non_empty(req, "newClientOrderId")
                    .map(Cow::into_owned)
                    .unwrap_or_else(|| generated_client_id(&[o.order_id.as_bytes(), b"cancel"]));
                ok(cancelled_json(&c, &new_id, acc.now.timestamp_millis()))
            }
            Ok(None) => err(StatusCode::BAD_REQUEST, -2011, "Unknown order sent."),
            Err(_) => self.reject(req, Rejection::Unavailable),
        }
    }

    async fn open_orders(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let sym = non_empty(req, "symbol");
        if let Some(s) = &sym {
            if find_market(s).is_none() {
                return invalid_symbol();
            }
        }
        match acc.orders.open_orders(sym.as_deref()).await {
            Ok(list) => ok(Value::Array(list.iter().map(order_json).collect())),
            Err(_) => self.reject(req, Rejection::Unavailable),
        }
    }

    async fn cancel_all(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let Some(sym) = non_empty(req, "symbol") else {
            return mandatory("symbol");
        };
        if find_market(&sym).is_none() {
            return invalid_symbol();
        }
        let open = match acc.orders.open_orders(Some(&sym)).await {
            Ok(o) => o,
            Err(_) => return self.reject(req, Rejection::Unavailable),
        };
        if open.is_empty() {
            return err(StatusCode::BAD_REQUEST, -2011, "Unknown order sent.");
        }
        let now = acc.now.timestamp_millis();
        let mut out = Vec::with_capacity(open.len());
        for o in open {
            match acc.orders.cancel(&o.order_id).await {
                Ok(Some(c)) => out.push(cancelled_json(
                    &c,
                    &generated_client_id(&[c.order_id.as_bytes(), b"cancel"]),
                    now,
                )),
                Ok(None) => {}
                Err(_) => return self.reject(req, Rejection::Unavailable),
            }
        }
        ok(Value::Array(out))
    }

    fn deposit_address(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let Some(coin) = non_empty(req, "coin") else {
            return mandatory("coin");
        };
        let coin = coin.to_ascii_uppercase();
        let network = non_empty(req, "network").map_or_else(
            || {
                CURRENCIES
                    .iter()
                    .find(|(c, _, _)| *c == coin)
                    .and_then(|(_, _, n)| n.first())
                    .map_or_else(|| "ETH".to_string(), |n| (*n).to_string())
            },
            |n| n.to_ascii_uppercase(),
        );
        let address = market::deposit_address(acc.canary_id, &coin, &network);
        let tag = if network == "XRP" {
            (100_000_000 + fnv(&[acc.canary_id.as_bytes(), b"xrp-tag"]) % 900_000_000).to_string()
        } else {
            String::new()
        };
        ok(json!({
            "coin": coin,
            "address": address,
            "tag": tag,
            "url": format!("{}{}", explorer(&network), address),
        }))
    }

    fn withdraw(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        for name in ["coin", "address", "amount"] {
            if non_empty(req, name).is_none() {
                return mandatory(name);
            }
        }
        if req
            .param("amount")
            .as_deref()
            .and_then(parse_decimal)
            .is_none()
        {
            return illegal_decimal("amount");
        }
        // Accepted: the destination address is the evidence.
        let digest = Sha256::new()
            .chain_update(acc.canary_id.as_bytes())
            .chain_update(
                acc.now
                    .timestamp_nanos_opt()
                    .unwrap_or_default()
                    .to_be_bytes(),
            )
            .chain_update(&req.body)
            .chain_update(req.query.as_deref().unwrap_or("").as_bytes())
            .finalize();
        ok(json!({ "id": hex::encode(&digest[..16]) }))
    }
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

/// Evidence keys worth keeping, per action (never `signature`, `timestamp`, keys).
const TRADE_KEYS: &[&str] = &[
    "symbol",
    "side",
    "type",
    "quantity",
    "quoteOrderQty",
    "price",
    "stopPrice",
    "timeInForce",
    "newClientOrderId",
    "isIsolated",
    "sideEffectType",
];
const CANCEL_KEYS: &[&str] = &["symbol", "orderId", "origClientOrderId"];
const WITHDRAW_KEYS: &[&str] = &[
    "coin",
    "network",
    "address",
    "addressTag",
    "amount",
    "name",
    "withdrawOrderId",
    "walletType",
];
const ADDRESS_KEYS: &[&str] = &["coin", "network"];
const TRANSFER_KEYS: &[&str] = &[
    "type",
    "asset",
    "amount",
    "fromEmail",
    "toEmail",
    "fromSymbol",
    "toSymbol",
    "symbol",
];
const READ_KEYS: &[&str] = &["symbol", "coin", "asset", "orderId", "origClientOrderId"];

fn evidence(req: &TrapRequest, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for (k, v) in params(req) {
        if keys.contains(&k.as_str()) && !out.contains_key(&k) {
            // Bounded: evidence is a short object, whatever the attacker sends.
            let v: String = v.chars().take(256).collect();
            out.insert(k, Value::String(v));
        }
    }
    Value::Object(out)
}

fn classify_path(method: &Method, path: &str) -> ActionClass {
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    match path {
        "/api/v3/order" | "/api/v3/order/test" | "/api/v3/sor/order" | "/sapi/v1/margin/order"
            if post =>
        {
            ActionClass::Trade
        }
        "/api/v3/order/oco"
        | "/api/v3/orderList/oco"
        | "/api/v3/orderList/oto"
        | "/api/v3/orderList/otoco"
        | "/api/v3/order/cancelReplace"
        | "/sapi/v1/margin/order/oco"
            if post =>
        {
            ActionClass::Trade
        }
        "/api/v3/order"
        | "/api/v3/openOrders"
        | "/api/v3/orderList"
        | "/sapi/v1/margin/order"
        | "/sapi/v1/margin/openOrders"
            if delete =>
        {
            ActionClass::Cancel
        }
        "/sapi/v1/capital/withdraw/apply" => ActionClass::Withdraw,
        "/sapi/v1/capital/deposit/address" | "/sapi/v1/capital/deposit/address/list" => {
            ActionClass::Address
        }
        "/sapi/v1/account/apiRestrictions"
        | "/sapi/v1/account/apiTradingStatus"
        | "/sapi/v1/account/status"
        | "/sapi/v1/account/apiRestrictions/ipRestriction" => ActionClass::Permissions,
        "/sapi/v1/asset/transfer"
        | "/sapi/v1/futures/transfer"
        | "/sapi/v1/margin/transfer"
        | "/sapi/v1/margin/isolated/transfer"
        | "/sapi/v1/sub-account/transfer/subToMaster"
        | "/sapi/v1/sub-account/transfer/subToSub"
        | "/sapi/v1/sub-account/universalTransfer"
        | "/sapi/v1/sub-account/futures/transfer"
        | "/sapi/v1/asset/dust"
        | "/sapi/v1/pay/transfer"
            if post =>
        {
            ActionClass::Transfer
        }
        _ => ActionClass::Read,
    }
}

// ---------------------------------------------------------------------------------------
// The emulator
// ---------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl Emulator for Binance {
    fn exchange(&self) -> Exchange {
        Exchange::Binance
    }

    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        req.header("X-MBX-APIKEY")
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        let now = now_ms();
        let r = match req.path.as_str() {
            "/api/v3/ping" | "/api/v1/ping" | "/fapi/v1/ping" | "/dapi/v1/ping" => ok(json!({})),
            "/api/v3/time" | "/api/v1/time" | "/fapi/v1/time" | "/dapi/v1/time" => {
                ok(json!({ "serverTime": now }))
            }
            "/api/v3/exchangeInfo" | "/api/v1/exchangeInfo" => exchange_info(req),
            "/fapi/v1/exchangeInfo" => futures_info(true),
            "/dapi/v1/exchangeInfo" => futures_info(false),
            "/api/v3/ticker/price" => one_or_list(
                req,
                |m| json!({"symbol": symbol_of(m), "price": d8(m.price)}),
            ),
            "/api/v3/ticker/24hr" => one_or_list(req, |m| ticker_24h(m, now)),
            "/api/v3/ticker/bookTicker" => one_or_list(req, |m| {
                json!({
                    "symbol": symbol_of(m),
                    "bidPrice": d8(m.price - tick(m)),
                    "bidQty": d8(step(m) * 1234.0),
                    "askPrice": d8(m.price),
                    "askQty": d8(step(m) * 871.0),
                })
            }),
            "/api/v3/avgPrice" => match non_empty(req, "symbol").map(|s| find_market(&s)) {
                None => mandatory("symbol"),
                Some(None) => invalid_symbol(),
                Some(Some(m)) => ok(json!({"mins": 5, "price": d8(m.price), "closeTime": now})),
            },
            "/api/v3/depth" => depth(req),
            "/api/v3/trades" | "/api/v3/aggTrades" | "/api/v3/klines" | "/api/v3/uiKlines" => {
                match non_empty(req, "symbol").map(|s| find_market(&s)) {
                    None => mandatory("symbol"),
                    Some(None) => invalid_symbol(),
                    Some(Some(_)) => ok(json!([])),
                }
            }
            "/sapi/v1/system/status" => ok(json!({"status": 0, "msg": "normal"})),
            p if [
                "/api/", "/sapi/", "/fapi/", "/dapi/", "/eapi/", "/papi/", "/wapi/",
            ]
            .iter()
            .any(|pre| p.starts_with(pre)) =>
            {
                // Possibly a signed endpoint: the shared path authenticates it.
                return None;
            }
            _ => self.reject(req, Rejection::NotFound),
        };
        Some(r)
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        // The server time is the request's arrival, as the exchange measures it.
        verify_at(req, creds, req.received_at.timestamp_millis() as f64)
    }

    fn reject(&self, req: &TrapRequest, why: Rejection) -> Response {
        match why {
            // Binance answers a missing X-MBX-APIKEY on a signed endpoint like a bad one.
            Rejection::MissingKey | Rejection::MalformedKey => {
                err(StatusCode::UNAUTHORIZED, -2014, "API-key format invalid.")
            }
            Rejection::UnknownKey => err(
                StatusCode::UNAUTHORIZED,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
            Rejection::MissingSignature => {
                signing_param_problem(req).unwrap_or_else(|| mandatory("signature"))
            }
            // Binance has no passphrase: a wrong one cannot happen; answer as a bad signature.
            Rejection::BadSignature | Rejection::BadPassphrase => err(
                StatusCode::BAD_REQUEST,
                -1022,
                "Signature for this request is not valid.",
            ),
            Rejection::StaleTimestamp => {
                let rw = req.param("recvWindow").as_deref().and_then(recv_window);
                let ts = req.param("timestamp").as_deref().and_then(timestamp_ms);
                if rw.is_some_and(|r| r > MAX_RECV_WINDOW) {
                    err(
                        StatusCode::BAD_REQUEST,
                        -1131,
                        "recvWindow must be less than 60000.",
                    )
                } else if ts.is_some_and(|t| t >= now_ms() as f64 + 1000.0) {
                    err(
                        StatusCode::BAD_REQUEST,
                        -1021,
                        "Timestamp for this request was 1000ms ahead of the server's time.",
                    )
                } else {
                    err(
                        StatusCode::BAD_REQUEST,
                        -1021,
                        "Timestamp for this request is outside of the recvWindow.",
                    )
                }
            }
            Rejection::NotFound => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/html")],
                NOT_FOUND_HTML,
            )
                .into_response(),
            Rejection::Unavailable => err(
                StatusCode::SERVICE_UNAVAILABLE,
                -1001,
                "Internal error; unable to process your request. Please try again.",
            ),
        }
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let class = classify_path(&req.method, &req.path);
        let keys = match class {
            ActionClass::Trade => TRADE_KEYS,
            ActionClass::Cancel => CANCEL_KEYS,
            ActionClass::Withdraw => WITHDRAW_KEYS,
            ActionClass::Address => ADDRESS_KEYS,
            ActionClass::Transfer => TRANSFER_KEYS,
            ActionClass::Read | ActionClass::Permissions => READ_KEYS,
        };
        Action {
            class,
            params: evidence(req, keys),
        }
    }

    async fn private(&self, req: &TrapRequest, acc: &Account<'_>) -> Response {
        let now = acc.now.timestamp_millis();
        let m = &req.method;
        let get = m == Method::GET;
        let post = m == Method::POST;
        let delete = m == Method::DELETE;
        match req.path.as_str() {
            "/api/v3/account" if get => self.account(req, acc).await,
            "/api/v3/order" if post => self.create_order(req, acc, false).await,
            "/api/v3/order/test" if post => self.create_order(req, acc, true).await,
            "/api/v3/order" if get => self.query_order(req, acc).await,
            "/api/v3/order" if delete => self.cancel_order(req, acc).await,
            "/api/v3/openOrders" if get => self.open_orders(req, acc).await,
            "/api/v3/openOrders" if delete => self.cancel_all(req, acc).await,
            "/api/v3/allOrders" if get => match non_empty(req, "symbol") {
                None => mandatory("symbol"),
                Some(sym) if find_market(&sym).is_none() => invalid_symbol(),
                Some(sym) => match acc.orders.all_orders(Some(&sym)).await {
                    Ok(list) => ok(Value::Array(list.iter().map(order_json).collect())),
                    Err(_) => self.reject(req, Rejection::Unavailable),
                },
            },
            "/api/v3/myTrades" if get => match non_empty(req, "symbol").map(|s| find_market(&s)) {
                None => mandatory("symbol"),
                Some(None) => invalid_symbol(),
                Some(Some(_)) => ok(json!([])),
            },
            "/api/v3/account/commission" if get => {
                match non_empty(req, "symbol").map(|s| find_market(&s)) {
                    None => mandatory("symbol"),
                    Some(None) => invalid_symbol(),
                    Some(Some(mk)) => ok(json!({
                        "symbol": symbol_of(mk),
                        "standardCommission": {"maker":"0.00100000","taker":"0.00100000","buyer":"0.00000000","seller":"0.00000000"},
                        "specialCommission": {"maker":"0.00000000","taker":"0.00000000","buyer":"0.00000000","seller":"0.00000000"},
                        "taxCommission": {"maker":"0.00000000","taker":"0.00000000","buyer":"0.00000000","seller":"0.00000000"},
                        "discount": {"enabledForAccount":true,"enabledForSymbol":true,"discountAsset":"BNB","discount":"0.75000000"}
                    })),
                }
            }
            "/sapi/v1/account/apiRestrictions" if get => ok(api_restrictions(acc.canary_id, now)),
            "/sapi/v1/account/status" if get => ok(json!({"data": "Normal"})),
            "/sapi/v1/account/apiTradingStatus" if get => ok(json!({
                "data": {
                    "isLocked": false,
                    "plannedRecoverTime": 0,
                    "triggerCondition": {"GCR": 150, "IFER": 150, "UFR": 300},
                    "updateTime": 0
                }
            })),
            "/sapi/v1/capital/config/getall" if get => ok(currency_config(acc.canary_id)),
            "/sapi/v1/margin/allPairs" if get => ok(margin_pairs(false)),
            "/sapi/v1/margin/isolated/allPairs" if get => ok(margin_pairs(true)),
            "/sapi/v1/capital/deposit/address" if get => self.deposit_address(req, acc),
            "/sapi/v1/capital/withdraw/apply" if post => self.withdraw(req, acc),
            "/sapi/v1/capital/deposit/hisrec" | "/sapi/v1/capital/withdraw/history" if get => {
                ok(json!([]))
            }
            "/sapi/v1/asset/tradeFee" if get => ok(Value::Array(
                MARKETS
                    .iter()
                    .map(|mk| {
                        json!({"symbol": symbol_of(mk), "makerCommission": "0.001", "takerCommission": "0.001"})
                    })
                    .collect(),
            )),
            _ => self.reject(req, Rejection::NotFound),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::emulator::MemoryOrderBook;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, HeaderValue};
    use http_body_util::BodyExt;
    use keytrap_core::MasterKey;

    const DOC_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    /// ccxt's nonce pinned in the vectors below (`ex.nonce = lambda: 1735689600000`).
    const CCXT_NOW: f64 = 1_735_689_600_000.0;

    fn doc_creds() -> Credentials {
        Credentials {
            api_key: DOC_KEY.into(),
            api_secret: DOC_SECRET.into(),
            passphrase: None,
        }
    }

    fn req(method: Method, path: &str, query: Option<&str>, body: &[u8]) -> TrapRequest {
        let mut headers = HeaderMap::new();
        headers.insert("X-MBX-APIKEY", HeaderValue::from_static(DOC_KEY));
        if !body.is_empty() {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        TrapRequest {
            exchange: Exchange::Binance,
            method,
            path: path.into(),
            full_path: format!("/binance{path}"),
            query: query.map(str::to_owned),
            headers,
            body: Bytes::copy_from_slice(body),
            host: "127.0.0.1:8701".into(),
            source_ip: "203.0.113.7".parse().unwrap(),
            received_at: Utc::now(),
        }
    }

    /// The account is serialized from structs now: its field names and order must stay
    /// Binance's, and open orders lock their funds.
    #[test]
    fn account_keeps_binances_fields_and_locks_open_orders() {
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        let id = Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);
        let v: Value =
            serde_json::from_str(&account_json(id, &[], 1_700_000_000_000, false)).unwrap();
        assert_eq!(
            keys(&v),
            [
                "makerCommission",
                "takerCommission",
                "buyerCommission",
                "sellerCommission",
                "commissionRates",
                "canTrade",
                "canWithdraw",
                "canDeposit",
                "brokered",
                "requireSelfTradePrevention",
                "preventSor",
                "updateTime",
                "accountType",
                "balances",
                "permissions",
                "uid",
            ]
        );
        assert_eq!(
            keys(&v["commissionRates"]),
            ["maker", "taker", "buyer", "seller"]
        );
        assert_eq!(keys(&v["balances"][0]), ["asset", "free", "locked"]);
        assert_eq!(v["permissions"], json!(["SPOT"]));
        assert!(v["updateTime"].as_i64().unwrap() < 1_700_000_000_000);
        // Every currency is listed; omitZeroBalances keeps only the funded ones.
        let all = v["balances"].as_array().unwrap().len();
        let funded: Value =
            serde_json::from_str(&account_json(id, &[], 1_700_000_000_000, true)).unwrap();
        assert_eq!(
            funded["balances"].as_array().unwrap().len(),
            market::balances(id).len()
        );
        assert!(all >= CURRENCIES.len());
        // An open buy order locks its quote currency.
        let (quote, held) = market::balances(id)
            .into_iter()
            .find(|(a, _)| *a == "USDT")
            .expect("USDT is funded");
        let order = Order {
            order_id: "1".into(),
            client_order_id: None,
            symbol: "BTCUSDT".into(),
            // Stored as the emulator stores it (lower case).
            side: "buy".into(),
            order_type: "limit".into(),
            price: Some("10".into()),
            amount: "2".into(),
            status: "NEW".into(),
            created_at: Utc::now(),
        };
        let with: Value =
            serde_json::from_str(&account_json(id, &[order], 1_700_000_000_000, true)).unwrap();
        let usdt = with["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == quote)
            .unwrap()
            .clone();
        assert_eq!(usdt["locked"], "20.00000000");
        assert_eq!(usdt["free"], d8(held - 20.0));
    }

    #[test]
    fn error_bodies_are_written_as_serde_json_would() {
        for (code, msg) in [
            (-2015, "Invalid API-key, IP, or permissions for action."),
            (-1100, "Illegal characters found in parameter 'recvWindow'; legal range is '^[0-9]{1,20}(\\.[0-9]{1,3})?$'."),
            (-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."),
            (0, "a \"quoted\" \\ back\nslash \u{1} é"),
            (7, ""),
        ] {
            let by_value = format!("{{\"code\":{code},\"msg\":{}}}", Value::from(msg));
            assert_eq!(err_body(code, msg), by_value);
        }
    }

    /// The signature's removal takes a slice when the signature is the one last pair, and
    /// gives what the general form gives for every input.
    #[test]
    fn signature_stripping_fast_path_matches_the_general_form() {
        let cases = [
            "",
            "signature=ab",
            "timestamp=1&signature=ab",
            "timestamp=1&recvWindow=5000&signature=AB%2Bcd",
            "timestamp=1&signature=",
            "timestamp=1&&signature=ab",
            "signature=ab&timestamp=1",
            "timestamp=1&signature=ab&signature=cd",
            "signature=ab&timestamp=1&signature=cd",
            "xsignature=ab",
            "timestamp=1&xsignature=ab",
            "memo=signature&signature=ab",
            "timestamp=1&signature",
            "timestamp=1&signature&signature=ab",
            "a=1&b=2",
            "signature=ab=cd",
            "t=1&signature=é%",
        ];
        for q in cases {
            let (fast, fast_sig) = strip_signature(q);
            let (general, general_sig) = strip_signature_pairs(q);
            assert_eq!(
                (fast.as_ref(), fast_sig.as_deref()),
                (general.as_str(), general_sig.as_deref()),
                "{q:?}"
            );
        }
        assert!(matches!(
            strip_signature("timestamp=1&signature=ab").0,
            Cow::Borrowed("timestamp=1")
        ));
    }

    /// The memoized account (no open orders) is the rendered one, byte for byte, with the
    /// moment's `updateTime`.
    #[test]
    fn the_memoized_account_is_the_rendered_one() {
        let id = Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5c);
        for omit in [false, true] {
            let split = account_split(id, &[], omit).expect("updateTime is found");
            for now in [1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000] {
                let direct = account_json(id, &[], now, omit);
                assert_eq!(split.with(now - update_lag(id)), direct);
                let memo = Rendered::global()
                    .answer(
                        id,
                        Answer::BinanceAccount(omit),
                        now - update_lag(id),
                        || account_split(id, &[], omit),
                    )
                    .unwrap();
                assert_eq!(memo, direct);
            }
        }
    }

    /// Splits a ccxt `sign()` url into path and query.
    fn from_ccxt(method: Method, url: &str, body: Option<&str>) -> TrapRequest {
        let rest = url.strip_prefix("https://api.binance.com").unwrap();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        req(method, path, query, body.unwrap_or("").as_bytes())
    }

    fn sign(secret: &str, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    async fn body_of(r: Response) -> (StatusCode, String, String) {
        let status = r.status();
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(b.to_vec()).unwrap())
    }

    async fn json_of(r: Response) -> Value {
        let (s, _, b) = body_of(r).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        serde_json::from_str(&b).unwrap()
    }

    #[test]
    fn documented_test_vector() {
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
        assert_eq!(sign(DOC_SECRET, payload), sig);
        // As a query string, as a body, and split between both (no separator).
        let q = format!("{payload}&signature={sig}");
        let r = req(Method::POST, "/api/v3/order", Some(&q), b"");
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_320_000.0),
            SigCheck::Valid
        );
        let r = req(Method::POST, "/api/v3/order", None, q.as_bytes());
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_320_000.0),
            SigCheck::Valid
        );
        let (a, b) = payload.split_at(40);
        let r = req(
            Method::POST,
            "/api/v3/order",
            Some(a),
            format!("{b}&signature={sig}").as_bytes(),
        );
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_320_000.0),
            SigCheck::Valid
        );
        // Upper-case hex is accepted.
        let q = format!("{payload}&signature={}", sig.to_uppercase());
        let r = req(Method::POST, "/api/v3/order", Some(&q), b"");
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_320_000.0),
            SigCheck::Valid
        );
        // recvWindow=5000: 5 s later is still fine, 5.001 s is not; 1 s ahead is not.
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_324_559.0),
            SigCheck::Valid
        );
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_324_560.0),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_318_559.0),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        assert_eq!(
            verify_at(&r, &doc_creds(), 1_499_827_318_560.0),
            SigCheck::Valid
        );
    }

    /// Produced offline by ccxt 4.5.90: `ccxt.binance({'apiKey': DOC_KEY, 'secret':
    /// DOC_SECRET})` with `ex.nonce = lambda: 1735689600000`, `ex.sign(path, [api], method,
    /// params)`.
    #[test]
    fn ccxt_signed_requests_are_valid() {
        let vectors: &[(Method, &str, Option<&str>)] = &[
            (
                Method::GET,
                "https://api.binance.com/api/v3/account?timestamp=1735689600000&recvWindow=10000&signature=25ed4ad27a535df60dcc7dcf84eefacafda9b5891d9aee431cfbd7bbdc4d36ea",
                None,
            ),
            (
                Method::POST,
                "https://api.binance.com/api/v3/order",
                Some("timestamp=1735689600000&symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.00100&price=50000.00&timeInForce=GTC&newOrderRespType=FULL&newClientOrderId=x-TKT5PX2F78a886148f70040bd7f5fe&recvWindow=10000&signature=24d35e0d91fc4f959a2c2f39946a3493292ad6ad0fbfd1f40eb3dcf9d4f4c63f"),
            ),
            (
                Method::DELETE,
                "https://api.binance.com/api/v3/order?timestamp=1735689600000&symbol=BTCUSDT&orderId=1234&recvWindow=10000&signature=04150646a3913698cb4f86f9061065bc2026ac6800b9ac7854eafc0a237bc250",
                None,
            ),
            (
                Method::POST,
                "https://api.binance.com/sapi/v1/capital/withdraw/apply",
                Some("timestamp=1735689600000&coin=USDT&address=0xabc&network=ETH&amount=5000&recvWindow=10000&signature=add2bdd92361b32f0163c69a7e74d764b2e2f08a3ab43aacefc6900a610b7b78"),
            ),
            (
                Method::GET,
                "https://api.binance.com/sapi/v1/capital/config/getall?timestamp=1735689600000&recvWindow=10000&signature=25ed4ad27a535df60dcc7dcf84eefacafda9b5891d9aee431cfbd7bbdc4d36ea",
                None,
            ),
        ];
        let wrong = Credentials {
            api_secret: DOC_SECRET.replace('N', "M"),
            ..doc_creds()
        };
        for (m, url, body) in vectors {
            let r = from_ccxt(m.clone(), url, *body);
            assert_eq!(Binance.api_key(&r).as_deref(), Some(DOC_KEY));
            assert_eq!(
                verify_at(&r, &doc_creds(), CCXT_NOW + 300.0),
                SigCheck::Valid,
                "{url}"
            );
            assert_eq!(
                verify_at(&r, &wrong, CCXT_NOW + 300.0),
                SigCheck::Invalid(Rejection::BadSignature)
            );
            // ccxt sends recvWindow=10000.
            assert_eq!(
                verify_at(&r, &doc_creds(), CCXT_NOW + 10_000.0),
                SigCheck::Valid
            );
            assert_eq!(
                verify_at(&r, &doc_creds(), CCXT_NOW + 10_001.0),
                SigCheck::Invalid(Rejection::StaleTimestamp)
            );
            // Against the real clock the 2025 timestamp is stale.
            assert_eq!(
                Binance.check_signature(&r, &doc_creds()),
                SigCheck::Invalid(Rejection::StaleTimestamp)
            );
        }
    }

    #[test]
    fn signed_now_is_valid_and_edge_cases() {
        let creds = MasterKey::from_bytes([7; 32])
            .keys()
            .credentials(Exchange::Binance, Uuid::from_u128(42));
        let now = Utc::now().timestamp_millis();
        // Microsecond timestamps are accepted too.
        for ts in [now.to_string(), format!("{}123", now)] {
            let payload = format!("symbol=BTCUSDT&timestamp={ts}");
            let q = format!("{payload}&signature={}", sign(&creds.api_secret, &payload));
            let r = req(Method::GET, "/api/v3/openOrders", Some(&q), b"");
            assert_eq!(Binance.check_signature(&r, &creds), SigCheck::Valid);
            let wrong = Credentials {
                api_secret: "x".repeat(64),
                ..creds.clone()
            };
            assert_eq!(
                Binance.check_signature(&r, &wrong),
                SigCheck::Invalid(Rejection::BadSignature)
            );
        }
        // Stale: 6 s old with the default window of 5 s.
        let payload = format!("timestamp={}", now - 6000);
        let q = format!("{payload}&signature={}", sign(&creds.api_secret, &payload));
        let r = req(Method::GET, "/api/v3/account", Some(&q), b"");
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let (_, _, b) = tokio_block(body_of(Binance.reject(&r, Rejection::StaleTimestamp)));
        assert_eq!(
            b,
            r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#
        );
        // Ahead of the server by 5 s.
        let payload = format!("timestamp={}", now + 5000);
        let q = format!("{payload}&signature={}", sign(&creds.api_secret, &payload));
        let r = req(Method::GET, "/api/v3/account", Some(&q), b"");
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let (_, _, b) = tokio_block(body_of(Binance.reject(&r, Rejection::StaleTimestamp)));
        assert_eq!(
            b,
            r#"{"code":-1021,"msg":"Timestamp for this request was 1000ms ahead of the server's time."}"#
        );
        // recvWindow above the maximum.
        let payload = format!("timestamp={now}&recvWindow=70000");
        let q = format!("{payload}&signature={}", sign(&creds.api_secret, &payload));
        let r = req(Method::GET, "/api/v3/account", Some(&q), b"");
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let (_, _, b) = tokio_block(body_of(Binance.reject(&r, Rejection::StaleTimestamp)));
        assert_eq!(
            b,
            r#"{"code":-1131,"msg":"recvWindow must be less than 60000."}"#
        );
        // Missing signature, missing timestamp, malformed timestamp, empty signature.
        for (q, expect) in [
            (
                format!("timestamp={now}"),
                r#"{"code":-1102,"msg":"Mandatory parameter 'signature' was not sent, was empty/null, or malformed."}"#,
            ),
            (
                format!("timestamp={now}&signature="),
                r#"{"code":-1102,"msg":"Mandatory parameter 'signature' was not sent, was empty/null, or malformed."}"#,
            ),
            (
                "signature=abcd".to_string(),
                r#"{"code":-1102,"msg":"Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."}"#,
            ),
            (
                "timestamp=1e12&signature=abcd".to_string(),
                r#"{"code":-1100,"msg":"Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'."}"#,
            ),
        ] {
            let r = req(Method::GET, "/api/v3/account", Some(&q), b"");
            assert_eq!(
                Binance.check_signature(&r, &creds),
                SigCheck::Missing,
                "{q}"
            );
            let (s, ct, b) = tokio_block(body_of(Binance.reject(&r, Rejection::MissingSignature)));
            assert_eq!(
                (s, ct.as_str(), b.as_str()),
                (StatusCode::BAD_REQUEST, JSON_CT, expect)
            );
        }
        // Non-hex signature, invalid UTF-8 body, huge numbers: no panic.
        let q = format!("timestamp={now}&signature=zz%ZZ");
        let r = req(Method::GET, "/api/v3/account", Some(&q), b"");
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        let r = req(
            Method::POST,
            "/api/v3/order",
            Some(&format!("timestamp={now}&signature=00")),
            &[0xff, 0xfe, 0x00, b'&'],
        );
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        let r = req(
            Method::GET,
            "/api/v3/account",
            Some("timestamp=99999999999999999999&recvWindow=99999999999999999999.999&signature=00"),
            b"",
        );
        assert_eq!(
            Binance.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
    }

    fn tokio_block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[tokio::test]
    async fn rejections_are_byte_exact() {
        let r = req(
            Method::GET,
            "/api/v3/account",
            Some("timestamp=1&signature=ab"),
            b"",
        );
        let cases: &[(Rejection, StatusCode, &str)] = &[
            (
                Rejection::MissingKey,
                StatusCode::UNAUTHORIZED,
                r#"{"code":-2014,"msg":"API-key format invalid."}"#,
            ),
            (
                Rejection::MalformedKey,
                StatusCode::UNAUTHORIZED,
                r#"{"code":-2014,"msg":"API-key format invalid."}"#,
            ),
            (
                Rejection::UnknownKey,
                StatusCode::UNAUTHORIZED,
                r#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#,
            ),
            (
                Rejection::BadSignature,
                StatusCode::BAD_REQUEST,
                r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#,
            ),
            (
                Rejection::BadPassphrase,
                StatusCode::BAD_REQUEST,
                r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#,
            ),
            (
                Rejection::StaleTimestamp,
                StatusCode::BAD_REQUEST,
                r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#,
            ),
            (
                Rejection::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}"#,
            ),
        ];
        for (why, status, body) in cases {
            let (s, ct, b) = body_of(Binance.reject(&r, *why)).await;
            assert_eq!(
                (s, ct.as_str(), b.as_str()),
                (*status, JSON_CT, *body),
                "{why:?}"
            );
        }
        let (s, ct, b) = body_of(Binance.reject(&r, Rejection::NotFound)).await;
        assert_eq!(
            (s, ct.as_str(), b.as_str()),
            (StatusCode::NOT_FOUND, "text/html", NOT_FOUND_HTML)
        );
        let nosig = req(Method::GET, "/api/v3/account", Some("timestamp=1"), b"");
        let (s, _, b) = body_of(Binance.reject(&nosig, Rejection::MissingSignature)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            b,
            r#"{"code":-1102,"msg":"Mandatory parameter 'signature' was not sent, was empty/null, or malformed."}"#
        );
    }

    #[test]
    fn classify_order_withdraw_and_others() {
        let r = from_ccxt(
            Method::POST,
            "https://api.binance.com/api/v3/order",
            Some("timestamp=1735689600000&symbol=PEPEUSDT&side=BUY&type=MARKET&quoteOrderQty=5000&newClientOrderId=x-TKT5PX2F78a886148f70040bd7f5fe&recvWindow=10000&signature=24d3"),
        );
        let a = Binance.classify(&r);
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(
            a.params,
            json!({"symbol":"PEPEUSDT","side":"BUY","type":"MARKET","quoteOrderQty":"5000","newClientOrderId":"x-TKT5PX2F78a886148f70040bd7f5fe"})
        );
        let r = from_ccxt(
            Method::POST,
            "https://api.binance.com/sapi/v1/capital/withdraw/apply",
            Some("timestamp=1735689600000&coin=USDT&address=0xabc&network=ETH&amount=5000&recvWindow=10000&signature=add2"),
        );
        let a = Binance.classify(&r);
        assert_eq!(a.class, ActionClass::Withdraw);
        assert_eq!(
            a.params,
            json!({"coin":"USDT","address":"0xabc","network":"ETH","amount":"5000"})
        );
        let r = req(
            Method::DELETE,
            "/api/v3/order",
            Some("symbol=BTCUSDT&orderId=12&timestamp=1&signature=ab"),
            b"",
        );
        assert_eq!(Binance.classify(&r).class, ActionClass::Cancel);
        let r = req(
            Method::GET,
            "/sapi/v1/capital/deposit/address",
            Some("coin=USDT&network=TRX&timestamp=1&signature=ab"),
            b"",
        );
        let a = Binance.classify(&r);
        assert_eq!(a.class, ActionClass::Address);
        assert_eq!(a.params, json!({"coin":"USDT","network":"TRX"}));
        let r = req(
            Method::GET,
            "/sapi/v1/account/apiRestrictions",
            Some("timestamp=1"),
            b"",
        );
        assert_eq!(Binance.classify(&r).class, ActionClass::Permissions);
        let r = req(
            Method::GET,
            "/api/v3/account",
            Some("timestamp=1&signature=ab"),
            b"",
        );
        let a = Binance.classify(&r);
        assert_eq!((a.class, a.params), (ActionClass::Read, json!({})));
        let r = req(
            Method::POST,
            "/sapi/v1/asset/transfer",
            None,
            b"type=MAIN_UMFUTURE&asset=USDT&amount=10",
        );
        assert_eq!(Binance.classify(&r).class, ActionClass::Transfer);
    }

    fn account<'a>(creds: &'a Credentials, book: &'a MemoryOrderBook, id: Uuid) -> Account<'a> {
        crate::testkit::account(Exchange::Binance, id, creds, book)
    }

    /// The account's USDT balance entry, as `/api/v3/account` answers it now.
    async fn usdt_balance(acc: &Account<'_>) -> Value {
        let r = req(Method::GET, "/api/v3/account", Some("timestamp=1"), b"");
        let bal = json_of(Binance.private(&r, acc).await).await;
        bal["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == "USDT")
            .unwrap()
            .clone()
    }

    #[tokio::test]
    async fn private_round_trip() {
        let id = Uuid::now_v7();
        let creds = doc_creds();
        let book = MemoryOrderBook::default();
        let acc = account(&creds, &book, id);
        let p = |m: Method, path: &str, q: &str| req(m, path, Some(q), b"");

        let bal = json_of(
            Binance
                .private(&p(Method::GET, "/api/v3/account", "timestamp=1"), &acc)
                .await,
        )
        .await;
        let usdt_total = market::balances(id)[0].1;
        let usdt = bal["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == "USDT")
            .unwrap();
        assert_eq!(usdt["free"], d8(usdt_total));
        assert_eq!(usdt["locked"], "0.00000000");
        assert_eq!(bal["canWithdraw"], true);

        // Create as ccxt does (form body).
        let body = "timestamp=1&symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.00100&price=50000.00&timeInForce=GTC&newOrderRespType=FULL&newClientOrderId=x-TKT5PX2Fabc&recvWindow=10000&signature=00";
        let r = req(Method::POST, "/api/v3/order", None, body.as_bytes());
        let o = json_of(Binance.private(&r, &acc).await).await;
        assert_eq!(o["status"], "NEW");
        assert_eq!(o["clientOrderId"], "x-TKT5PX2Fabc");
        assert_eq!(o["origQty"], "0.00100000");
        assert_eq!(o["price"], "50000.00000000");
        assert_eq!(o["fills"], json!([]));
        let oid = o["orderId"].as_u64().unwrap();

        // The quote is now locked.
        assert_eq!(usdt_balance(&acc).await["locked"], "50.00000000");

        let open = json_of(
            Binance
                .private(
                    &p(Method::GET, "/api/v3/openOrders", "symbol=BTCUSDT"),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(open.as_array().unwrap().len(), 1);
        assert_eq!(open[0]["orderId"], oid);
        let q = json_of(
            Binance
                .private(
                    &p(
                        Method::GET,
                        "/api/v3/order",
                        &format!("symbol=BTCUSDT&orderId={oid}"),
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(q["status"], "NEW");

        let c = json_of(
            Binance
                .private(
                    &p(
                        Method::DELETE,
                        "/api/v3/order",
                        &format!("symbol=BTCUSDT&orderId={oid}"),
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(c["status"], "CANCELED");
        assert_eq!(c["origClientOrderId"], "x-TKT5PX2Fabc");
        let open = json_of(
            Binance
                .private(&p(Method::GET, "/api/v3/openOrders", ""), &acc)
                .await,
        )
        .await;
        assert_eq!(open, json!([]));
        // Nothing is locked any more (the account is memoized again).
        for _ in 0..2 {
            let usdt = usdt_balance(&acc).await;
            assert_eq!(usdt["locked"], "0.00000000");
            assert_eq!(usdt["free"], d8(usdt_total));
        }
        // History keeps the cancelled order.
        let all = json_of(
            Binance
                .private(&p(Method::GET, "/api/v3/allOrders", "symbol=BTCUSDT"), &acc)
                .await,
        )
        .await;
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
        assert_eq!(all[0]["status"], "CANCELED");
        // Cancelling twice, unknown orders.
        let (s, _, b) = body_of(
            Binance
                .private(
                    &p(
                        Method::DELETE,
                        "/api/v3/order",
                        &format!("symbol=BTCUSDT&orderId={oid}"),
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(
            (s, b.as_str()),
            (
                StatusCode::BAD_REQUEST,
                r#"{"code":-2011,"msg":"Unknown order sent."}"#
            )
        );
        let (_, _, b) = body_of(
            Binance
                .private(
                    &p(Method::GET, "/api/v3/order", "symbol=BTCUSDT&orderId=1"),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(b, r#"{"code":-2013,"msg":"Order does not exist."}"#);

        // Order validation in Binance's words.
        for (q, expect) in [
            (
                "symbol=NOPE&side=BUY&type=LIMIT",
                r#"{"code":-1121,"msg":"Invalid symbol."}"#,
            ),
            (
                "side=BUY",
                r#"{"code":-1102,"msg":"Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=50000",
                r#"{"code":-1102,"msg":"Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1e9&price=1",
                r#"{"code":-1100,"msg":"Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'."}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.000001&price=50000",
                r#"{"code":-1013,"msg":"Filter failure: LOT_SIZE"}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000.001",
                r#"{"code":-1013,"msg":"Filter failure: PRICE_FILTER"}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00001&price=100",
                r#"{"code":-1013,"msg":"Filter failure: NOTIONAL"}"#,
            ),
            (
                "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=5000&price=100000",
                r#"{"code":-2010,"msg":"Account has insufficient balance for requested action."}"#,
            ),
            (
                "symbol=BTCUSDT&side=BUY&type=MARKET",
                r#"{"code":-1102,"msg":"Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"}"#,
            ),
        ] {
            let (s, _, b) = body_of(
                Binance
                    .private(&p(Method::POST, "/api/v3/order", q), &acc)
                    .await,
            )
            .await;
            assert_eq!((s, b.as_str()), (StatusCode::BAD_REQUEST, expect), "{q}");
        }
        // A market buy of a small cap for USDT: accepted.
        let o = json_of(
            Binance
                .private(
                    &p(
                        Method::POST,
                        "/api/v3/order",
                        "symbol=PEPEUSDT&side=BUY&type=MARKET&quoteOrderQty=100",
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(o["type"], "MARKET");
        assert_eq!(o["symbol"], "PEPEUSDT");

        // Deposit address, withdraw, restrictions, load_markets' sapi calls.
        let a = json_of(
            Binance
                .private(
                    &p(
                        Method::GET,
                        "/sapi/v1/capital/deposit/address",
                        "coin=USDT&network=TRX",
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(a["address"], market::deposit_address(id, "USDT", "TRX"));
        let w = json_of(
            Binance
                .private(
                    &p(
                        Method::POST,
                        "/sapi/v1/capital/withdraw/apply",
                        "coin=USDT&address=0xabc&amount=100",
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(w["id"].as_str().unwrap().len(), 32);
        let (_, _, b) = body_of(
            Binance
                .private(
                    &p(
                        Method::POST,
                        "/sapi/v1/capital/withdraw/apply",
                        "coin=USDT&amount=100",
                    ),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(
            b,
            r#"{"code":-1102,"msg":"Mandatory parameter 'address' was not sent, was empty/null, or malformed."}"#
        );
        let rs = json_of(
            Binance
                .private(
                    &p(Method::GET, "/sapi/v1/account/apiRestrictions", ""),
                    &acc,
                )
                .await,
        )
        .await;
        assert_eq!(
            (rs["ipRestrict"].clone(), rs["enableWithdrawals"].clone()),
            (json!(false), json!(true))
        );
        let cfg = json_of(
            Binance
                .private(&p(Method::GET, "/sapi/v1/capital/config/getall", ""), &acc)
                .await,
        )
        .await;
        assert_eq!(cfg.as_array().unwrap().len(), CURRENCIES.len());
        assert!(json_of(
            Binance
                .private(&p(Method::GET, "/sapi/v1/margin/allPairs", ""), &acc)
                .await
        )
        .await
        .is_array());
        assert!(json_of(
            Binance
                .private(
                    &p(Method::GET, "/sapi/v1/margin/isolated/allPairs", ""),
                    &acc
                )
                .await
        )
        .await
        .is_array());
        let (s, _, _) = body_of(
            Binance
                .private(&p(Method::GET, "/sapi/v1/nope", ""), &acc)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn public_markets_have_what_ccxt_reads() {
        let r = req(Method::GET, "/api/v3/exchangeInfo", None, b"");
        let info = json_of(Binance.public(&r).unwrap()).await;
        let syms = info["symbols"].as_array().unwrap();
        assert_eq!(syms.len(), MARKETS.len());
        for s in syms {
            for k in [
                "symbol",
                "status",
                "baseAsset",
                "quoteAsset",
                "baseAssetPrecision",
                "quotePrecision",
                "filters",
                "permissions",
            ] {
                assert!(!s[k].is_null(), "{k}");
            }
            let f = s["filters"].as_array().unwrap();
            for t in ["PRICE_FILTER", "LOT_SIZE", "NOTIONAL"] {
                assert!(f.iter().any(|x| x["filterType"] == t));
            }
        }
        let btc = syms.iter().find(|s| s["symbol"] == "BTCUSDT").unwrap();
        assert_eq!(btc["filters"][0]["tickSize"], "0.01000000");
        assert_eq!(btc["filters"][1]["stepSize"], "0.00001000");
        let r = req(
            Method::GET,
            "/api/v3/exchangeInfo",
            Some("symbol=PEPEUSDT"),
            b"",
        );
        assert_eq!(
            json_of(Binance.public(&r).unwrap()).await["symbols"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let r = req(
            Method::GET,
            "/api/v3/exchangeInfo",
            Some("symbol=NOPE"),
            b"",
        );
        let (s, _, b) = body_of(Binance.public(&r).unwrap()).await;
        assert_eq!(
            (s, b.as_str()),
            (
                StatusCode::BAD_REQUEST,
                r#"{"code":-1121,"msg":"Invalid symbol."}"#
            )
        );
        for p in ["/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"] {
            let v = json_of(Binance.public(&req(Method::GET, p, None, b"")).unwrap()).await;
            assert_eq!(v["symbols"], json!([]));
        }
        let t = json_of(
            Binance
                .public(&req(Method::GET, "/api/v3/time", None, b""))
                .unwrap(),
        )
        .await;
        assert!(t["serverTime"].as_i64().unwrap() > 1_700_000_000_000);
        assert_eq!(
            json_of(
                Binance
                    .public(&req(Method::GET, "/api/v3/ping", None, b""))
                    .unwrap()
            )
            .await,
            json!({})
        );
        let tk = json_of(
            Binance
                .public(&req(
                    Method::GET,
                    "/api/v3/ticker/price",
                    Some("symbol=BTCUSDT"),
                    b"",
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(tk, json!({"symbol":"BTCUSDT","price":"97250.50000000"}));
        let tk = json_of(
            Binance
                .public(&req(
                    Method::GET,
                    "/api/v3/ticker/24hr",
                    Some("symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D"),
                    b"",
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(tk.as_array().unwrap().len(), 2);
        assert_eq!(tk[0]["lastPrice"], "97250.50000000");
        let d = json_of(
            Binance
                .public(&req(
                    Method::GET,
                    "/api/v3/depth",
                    Some("symbol=ETHBTC&limit=5"),
                    b"",
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(d["bids"].as_array().unwrap().len(), 5);
        // Signed endpoints are not public; other paths are Binance's 404.
        assert!(Binance
            .public(&req(Method::GET, "/api/v3/account", None, b""))
            .is_none());
        assert!(Binance
            .public(&req(
                Method::GET,
                "/sapi/v1/capital/config/getall",
                None,
                b""
            ))
            .is_none());
        let (s, _, _) = body_of(
            Binance
                .public(&req(Method::GET, "/.env", None, b""))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
