//! Bybit v5 emulator (`api.bybit.com`, unified trading account).
//!
//! Sources: Bybit's v5 API docs (bybit-exchange/docs: `guide` for the signature,
//! `error` for codes, `user/apikey-info`, `asset/coin-info`, `market/instrument`,
//! `account/wallet-balance`, `order/*`), ccxt 4.5.90 `bybit.py` (`sign()`,
//! `handle_errors()`, `fetch_markets`, `fetch_currencies`, `is_unified_enabled`,
//! `fetch_balance`, `parse_order`, `create_order_request`) and responses captured from
//! the real exchange in public bug reports (error bodies below).
//!
//! Signature: `X-BAPI-SIGN = hex(HMAC-SHA256(secret, timestamp + apiKey + recvWindow +
//! payload))`, payload the raw query string for GET (ccxt sends `path?` with an empty
//! query for parameterless calls) or the raw JSON body for POST. A request is in time
//! when `server - recvWindow <= timestamp < server + 1000`.
//!
//! HTTP status of errors: pybit (Bybit's own SDK) raises `InvalidRequestError` with
//! "API key is invalid. (ErrCode: 10003)" / "Error sign! (ErrCode: 10004)" only after it
//! has checked that the HTTP status is 200, and such messages are common in user
//! reports, so 10002/10003/10004 come with HTTP 200. Bybit's error page lists 401 for
//! "Need to put authentication params in the request header": used for a request
//! without any key or signature (*unverified* body). ccxt raises the same exception
//! either way (its `handle_errors` reads `retCode` before the status).

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use keytrap_core::{Credentials, Exchange};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::emulator::{
    Account, Action, ActionClass, Emulator, Order, Rejection, SigCheck, TrapRequest,
};
use crate::market::{self, Market, CURRENCIES, MARKETS};
use crate::rendered::{Answer, Rendered, Split};

/// Bybit's default `X-BAPI-RECV-WINDOW` (ms) when the header is absent.
const DEFAULT_RECV_WINDOW: i64 = 5000;
/// [`DEFAULT_RECV_WINDOW`] as a client signs it.
const DEFAULT_RECV_WINDOW_TEXT: &str = "5000";
/// A timestamp may be at most this far (ms) ahead of the server clock.
const MAX_AHEAD_MS: i64 = 1000;
/// Bybit answers `application/json; charset=utf-8`.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The Bybit v5 emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bybit;

// ---------------------------------------------------------------------------------------
// Envelope and helpers
// ---------------------------------------------------------------------------------------

/// Bybit's envelope, keys in Bybit's order (serde_json would sort them).
fn envelope(ret_code: i64, ret_msg: &str, result: &str, time_ms: i64) -> String {
    envelope_split(ret_code, ret_msg, result).with(time_ms)
}

/// [`envelope`] cut around its `time`, which comes last.
fn envelope_split(ret_code: i64, ret_msg: &str, result: &str) -> Split {
    Split {
        head: format!(
            "{{\"retCode\":{ret_code},\"retMsg\":{},\"result\":{result},\"retExtInfo\":{{}},\"time\":",
            Value::String(ret_msg.to_owned())
        )
        .into(),
        tail: "}".into(),
    }
}

fn respond(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

fn ok(result: Value, now_ms: i64) -> Response {
    ok_text(&result.to_string(), now_ms)
}

/// [`ok`] with the `result` already serialized.
fn ok_text(result: &str, now_ms: i64) -> Response {
    respond(StatusCode::OK, envelope(0, "OK", result, now_ms))
}

/// A business error (HTTP 200, `retCode` != 0, empty `result`).
fn fail(code: i64, msg: &str, now_ms: i64) -> Response {
    respond(StatusCode::OK, envelope(code, msg, "{}", now_ms))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `1`, `0.1`, `0.01`... for a number of decimals.
fn step(decimals: u32) -> String {
    if decimals == 0 {
        "1".to_owned()
    } else {
        format!("0.{}1", "0".repeat(decimals as usize - 1))
    }
}

/// A decimal without trailing zeros (Bybit sends `"0.805994"`, not `"0.80599400"`).
fn trim(v: f64, max_decimals: usize) -> String {
    let s = format!("{v:.max_decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// FNV-1a: deterministic, cheap ids derived from the canary (not a secret).
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

/// Bybit's symbol of a market: `BTCUSDT`.
fn symbol_of(m: &Market) -> String {
    format!("{}{}", m.base, m.quote)
}

fn find_market(symbol: &str) -> Option<&'static Market> {
    MARKETS.iter().find(|m| symbol_of(m) == symbol)
}

fn usd_price(coin: &str) -> f64 {
    match coin {
        "USDT" | "USDC" => 1.0,
        _ => MARKETS
            .iter()
            .find(|m| m.base == coin && m.quote == "USDT")
            .map_or(0.0, |m| m.price),
    }
}

/// Bybit's chain id for our network code (ccxt `options.networks`).
fn chain_id(network: &str) -> &str {
    match network {
        "ARBITRUM" => "ARBI",
        "AVAXC" => "CAVAX",
        other => other,
    }
}

/// Our network code for a Bybit chain id.
fn network_of(chain: &str) -> String {
    match chain.to_ascii_uppercase().as_str() {
        "ARBI" => "ARBITRUM".to_owned(),
        "CAVAX" => "AVAXC".to_owned(),
        other => other.to_owned(),
    }
}

/// Bybit's `chainType` label shown next to a chain.
fn chain_type(coin: &str, chain: &str) -> String {
    match chain {
        "ETH" if coin != "ETH" => "ERC20".to_owned(),
        "TRX" if coin != "TRX" => "TRC20".to_owned(),
        "BSC" => "BEP20(BSC)".to_owned(),
        "ARBI" => "Arbitrum One".to_owned(),
        "CAVAX" => "AVAXC".to_owned(),
        other => other.to_owned(),
    }
}

/// Withdrawal fee and minimum per chain: plausible figures, in the coin.
fn chain_fees(coin: &str, chain: &str) -> (&'static str, &'static str, &'static str) {
    // (withdrawFee, withdrawMin, depositMin)
    match (coin, chain) {
        ("BTC", _) => ("0.0001", "0.0002", "0.000006"),
        ("ETH", "ETH") => ("0.0003", "0.001", "0.00001"),
        ("ETH", _) => ("0.0001", "0.0005", "0.00001"),
        ("USDT" | "USDC", "ETH") => ("3", "10", "0.01"),
        ("USDT" | "USDC", "TRX") => ("1", "2", "0.01"),
        ("USDT" | "USDC", _) => ("0.5", "1", "0.01"),
        _ => ("1", "2", "0.01"),
    }
}

/// A string parameter of a JSON object (numbers and booleans as their text).
fn pstr(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A positive, finite decimal (quantity, price, amount).
fn positive(s: &str) -> bool {
    s.len() <= 64 && s.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0)
}

/// Request parameters: the query for GET, the JSON object body for POST (`None` when a
/// POST body is not a JSON object).
fn params(req: &TrapRequest) -> Option<Map<String, Value>> {
    if req.method == Method::POST {
        if req.body.is_empty() {
            return Some(Map::new());
        }
        match req.json_body() {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        }
    } else {
        Some(
            req.query_params()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    }
}

/// Decodes only `%XX` escapes (ccxt signs the unquoted query; an HTTP client may quote
/// it on the way).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (hi, lo) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Signature
// ---------------------------------------------------------------------------------------

impl Bybit {
    /// The signature check against a given server time (tests pin it).
    pub fn verify_at(&self, req: &TrapRequest, creds: &Credentials, server_ms: i64) -> SigCheck {
        let sign = req.header("X-BAPI-SIGN").map(str::trim).unwrap_or("");
        let ts_raw_sent = req.header("X-BAPI-TIMESTAMP").unwrap_or("");
        let ts_raw = ts_raw_sent.trim();
        if sign.is_empty() || ts_raw.is_empty() {
            return SigCheck::Missing;
        }
        let recv_header = req.header("X-BAPI-RECV-WINDOW");
        let recv = match recv_header.map(str::trim) {
            None | Some("") => DEFAULT_RECV_WINDOW,
            Some(s) => match s.parse::<i64>() {
                Ok(v) if v > 0 => v,
                _ => return SigCheck::Invalid(Rejection::StaleTimestamp),
            },
        };
        let Ok(ts) = ts_raw.parse::<i64>() else {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        };
        if ts < server_ms.saturating_sub(recv) || ts >= server_ms.saturating_add(MAX_AHEAD_MS) {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        }
        // Hex, either case; anything but 64 hex digits fails like a wrong signature.
        let Some(sig) = crate::emulator::hex32(sign) else {
            return SigCheck::Invalid(Rejection::BadSignature);
        };
        // The payload exactly as received, and, for a query that an HTTP client quoted
        // after ccxt signed it unquoted, the unquoted form.
        let unescaped;
        let (exact, quoted): (&[u8], Option<&[u8]>) = if req.method == Method::POST {
            (&req.body, None)
        } else {
            let q = req.query.as_deref().unwrap_or("");
            unescaped = q.contains('%').then(|| unescape(q));
            let other = unescaped.as_deref().filter(|u| *u != q.as_bytes());
            (q.as_bytes(), other)
        };
        // The recvWindow as sent; without the header, Bybit's default.
        let recvs: [Option<&str>; 2] = match recv_header {
            Some(s) => [Some(s), None],
            None => [Some(""), Some(DEFAULT_RECV_WINDOW_TEXT)],
        };
        let Ok(keyed) = Hmac::<Sha256>::new_from_slice(creds.api_secret.as_bytes()) else {
            return SigCheck::Invalid(Rejection::BadSignature);
        };
        for payload in std::iter::once(exact).chain(quoted) {
            for r in recvs.iter().flatten() {
                let mut mac = keyed.clone();
                mac.update(ts_raw_sent.as_bytes());
                mac.update(creds.api_key.as_bytes());
                mac.update(r.as_bytes());
                mac.update(payload);
                // Constant-time comparison.
                if mac.verify_slice(&sig).is_ok() {
                    return SigCheck::Valid;
                }
            }
        }
        SigCheck::Invalid(Rejection::BadSignature)
    }

    /// What Bybit echoes in a 10004 answer: the string it expected to be signed
    /// (timestamp, key, recvWindow, payload; never the secret).
    fn origin_string(req: &TrapRequest) -> String {
        let ts = req.header("X-BAPI-TIMESTAMP").unwrap_or("");
        let key = req.header("X-BAPI-API-KEY").unwrap_or("");
        let recv = req.header("X-BAPI-RECV-WINDOW").unwrap_or("");
        let payload = if req.method == Method::POST {
            // Bounded: the body is at most MAX_BODY_BYTES; cut long bodies like a log.
            let b = &req.body[..req.body.len().min(2048)];
            String::from_utf8_lossy(b).into_owned()
        } else {
            req.query.clone().unwrap_or_default()
        };
        format!("{ts}{key}{recv}{payload}")
    }
}

// ---------------------------------------------------------------------------------------
// Public data
// ---------------------------------------------------------------------------------------

fn spot_instrument(m: &Market) -> Value {
    let min_amt = if m.quote == "BTC" { "0.0001" } else { "1" };
    let max_qty = trim(
        (2_000_000.0 / (m.price * usd_price(m.quote)).max(1e-12)).round(),
        0,
    );
    json!({
        "symbol": symbol_of(m),
        "baseCoin": m.base,
        "quoteCoin": m.quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "utaOnly",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": step(m.qty_decimals),
            "quotePrecision": step(8),
            "minOrderQty": step(m.qty_decimals),
            "maxOrderQty": max_qty,
            "minOrderAmt": min_amt,
            "maxOrderAmt": if m.quote == "BTC" { "20" } else { "2000000" },
        },
        "priceFilter": {"tickSize": step(m.price_decimals)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
    })
}

fn instruments(category: &str, symbol: Option<&str>) -> Value {
    let list: Vec<Value> = if category == "spot" {
        MARKETS
            .iter()
            .filter(|m| symbol.is_none_or(|s| symbol_of(m) == s))
            .map(spot_instrument)
            .collect()
    } else {
        // Only spot is emulated; derivatives and options are listed empty.
        Vec::new()
    };
    let mut result = json!({"category": category, "list": list});
    if category != "spot" {
        result["nextPageCursor"] = json!("");
    }
    result
}

fn ticker(m: &Market) -> Value {
    let p = m.price;
    let d = m.price_decimals;
    json!({
        "symbol": symbol_of(m),
        "bid1Price": market::fixed(p * 0.9999, d),
        "bid1Size": trim(1000.0 / p.max(1e-12), m.qty_decimals as usize),
        "ask1Price": market::fixed(p * 1.0001, d),
        "ask1Size": trim(1200.0 / p.max(1e-12), m.qty_decimals as usize),
        "lastPrice": market::fixed(p, d),
        "prevPrice24h": market::fixed(p * 0.985, d),
        "price24hPcnt": "0.0152",
        "highPrice24h": market::fixed(p * 1.021, d),
        "lowPrice24h": market::fixed(p * 0.978, d),
        "turnover24h": trim(38_500_000.0, 4),
        "volume24h": trim(38_500_000.0 / p.max(1e-12), m.qty_decimals as usize),
        "usdIndexPrice": market::fixed(p * usd_price(m.quote), d),
    })
}

// ---------------------------------------------------------------------------------------
// Account data
// ---------------------------------------------------------------------------------------

/// When the canary was made (UUID v7 carries it), else 40 days ago.
fn created_at(canary: Uuid, now: DateTime<Utc>) -> DateTime<Utc> {
    canary
        .get_timestamp()
        .and_then(|t| {
            let (s, n) = t.to_unix();
            DateTime::<Utc>::from_timestamp(i64::try_from(s).ok()?, n)
        })
        .filter(|t| *t <= now)
        .unwrap_or(now - chrono::Duration::days(40))
}

fn user_id(canary: Uuid) -> u64 {
    100_000_000 + fnv(&[canary.as_bytes(), b"bybit/uid"]) % 300_000_000
}

fn query_api(account: &Account<'_>) -> Value {
    let created = created_at(account.canary_id, account.now);
    // Keys without IP binding expire after 90 days.
    let expires = created + chrono::Duration::days(90);
    let deadline = (expires - account.now).num_days().max(1);
    json!({
        "id": (10_000_000 + fnv(&[account.canary_id.as_bytes(), b"bybit/keyid"]) % 90_000_000).to_string(),
        "note": "api",
        "apiKey": account.credentials.api_key,
        "readOnly": 0,
        "secret": "",
        "permissions": {
            "ContractTrade": ["Order", "Position"],
            "Spot": ["SpotTrade"],
            "Wallet": ["AccountTransfer", "SubMemberTransfer", "Withdraw"],
            "Options": ["OptionsTrade"],
            "Derivatives": ["DerivativesTrade"],
            "CopyTrading": [],
            "BlockTrade": [],
            "Exchange": ["ExchangeHistory"],
            "NFT": [],
            "Affiliate": [],
            "Earn": ["Earn"]
        },
        "ips": ["*"],
        "type": 1,
        "deadlineDay": deadline,
        "expiredAt": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "createdAt": created.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "unified": 0,
        "uta": 1,
        "userID": user_id(account.canary_id),
        "inviterID": 0,
        "vipLevel": "No VIP",
        "mktMakerLevel": "0",
        "affiliateID": 0,
        "rsaPublicKey": "",
        "isMaster": true,
        "parentUid": "0",
        "kycLevel": "LEVEL_2",
        "kycRegion": ""
    })
}

/// One coin of a unified wallet, in Bybit's field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WalletCoin<'a> {
    coin: &'a str,
    equity: &'a str,
    usd_value: String,
    wallet_balance: &'a str,
    free: &'static str,
    locked: &'static str,
    spot_hedging_qty: &'static str,
    borrow_amount: &'static str,
    available_to_borrow: &'static str,
    available_to_withdraw: &'a str,
    accrued_interest: &'static str,
    #[serde(rename = "totalOrderIM")]
    total_order_im: &'static str,
    #[serde(rename = "totalPositionIM")]
    total_position_im: &'static str,
    #[serde(rename = "totalPositionMM")]
    total_position_mm: &'static str,
    unrealised_pnl: &'static str,
    cum_realised_pnl: &'static str,
    bonus: &'static str,
    margin_collateral: bool,
    collateral_switch: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Wallet<'a> {
    account_type: &'static str,
    #[serde(rename = "accountIMRate")]
    account_im_rate: &'static str,
    #[serde(rename = "accountMMRate")]
    account_mm_rate: &'static str,
    #[serde(rename = "accountLTV")]
    account_ltv: &'static str,
    total_equity: &'a str,
    total_wallet_balance: &'a str,
    total_margin_balance: &'a str,
    total_available_balance: &'a str,
    #[serde(rename = "totalPerpUPL")]
    total_perp_upl: &'static str,
    total_initial_margin: &'static str,
    total_maintenance_margin: &'static str,
    coin: Vec<WalletCoin<'a>>,
}

#[derive(serde::Serialize)]
struct WalletList<'a> {
    list: [Wallet<'a>; 1],
}

/// `/v5/account/wallet-balance`, serialized straight from these structs: this is the
/// call every client makes first and most often, and a `Value` tree of it was a fifth
/// of the trap's CPU under load (docs/benchmarks.md).
fn wallet_balance(account: &Account<'_>) -> String {
    let held = market::balances(account.canary_id);
    let amounts: Vec<(&str, String, f64)> = held
        .iter()
        .map(|(coin, amount)| (*coin, trim(*amount, 8), amount * usd_price(coin)))
        .collect();
    let total = trim(amounts.iter().fold(0.0, |sum, (_, _, usd)| sum + usd), 8);
    let coin = amounts
        .iter()
        .map(|(coin, amt, usd)| WalletCoin {
            coin,
            equity: amt,
            usd_value: trim(*usd, 8),
            wallet_balance: amt,
            free: "",
            locked: "0",
            spot_hedging_qty: "0",
            borrow_amount: "0",
            available_to_borrow: "",
            available_to_withdraw: amt,
            accrued_interest: "0",
            total_order_im: "0",
            total_position_im: "0",
            total_position_mm: "0",
            unrealised_pnl: "0",
            cum_realised_pnl: "0",
            bonus: "0",
            margin_collateral: true,
            collateral_switch: true,
        })
        .collect();
    let list = WalletList {
        list: [Wallet {
            account_type: "UNIFIED",
            account_im_rate: "0",
            account_mm_rate: "0",
            account_ltv: "0",
            total_equity: &total,
            total_wallet_balance: &total,
            total_margin_balance: &total,
            total_available_balance: &total,
            total_perp_upl: "0",
            total_initial_margin: "0",
            total_maintenance_margin: "0",
            coin,
        }],
    };
    serde_json::to_string(&list).unwrap_or_else(|_| "{}".to_owned())
}

fn coin_info() -> Value {
    let rows: Vec<Value> = CURRENCIES
        .iter()
        .map(|(coin, _name, networks)| {
            let chains: Vec<Value> = networks
                .iter()
                .map(|n| {
                    let chain = chain_id(n);
                    let (fee, wmin, dmin) = chain_fees(coin, chain);
                    json!({
                        "chainType": chain_type(coin, chain),
                        "confirmation": "12",
                        "withdrawFee": fee,
                        "depositMin": dmin,
                        "withdrawMin": wmin,
                        "chain": chain,
                        "chainDeposit": "1",
                        "chainWithdraw": "1",
                        "minAccuracy": "8",
                        "withdrawPercentageFee": "0",
                        "contractAddress": "",
                        "safeConfirmNumber": "6",
                    })
                })
                .collect();
            json!({"name": coin, "coin": coin, "remainAmount": "1500000", "chains": chains})
        })
        .collect();
    json!({"rows": rows})
}

/// A 19-digit numeric order id (Bybit spot style), from the time and the request.
fn order_id(account: &Account<'_>, req: &TrapRequest) -> String {
    let ms = account
        .now
        .timestamp_millis()
        .rem_euclid(10_000_000_000_000);
    let nanos = account.now.timestamp_subsec_nanos().to_le_bytes();
    let h = fnv(&[account.canary_id.as_bytes(), &req.body, &nanos]) % 1_000_000;
    format!("{ms:013}{h:06}")
}

fn bybit_status(o: &Order) -> &'static str {
    if o.status == "open" {
        "New"
    } else {
        "Cancelled"
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The v5 order object (`/v5/order/realtime`, `/v5/order/history`). No `tpslMode` on
/// spot orders: ccxt takes an order with that key for a contract order.
fn order_json(o: &Order) -> Value {
    let created = o.created_at.timestamp_millis().to_string();
    let price = o.price.clone().unwrap_or_else(|| "0".to_owned());
    let open = o.status == "open";
    let leaves_value = match (o.amount.parse::<f64>(), price.parse::<f64>()) {
        (Ok(a), Ok(p)) if open => trim(a * p, 8),
        _ => "0".to_owned(),
    };
    json!({
        "orderId": o.order_id,
        "orderLinkId": o.client_order_id.clone().unwrap_or_default(),
        "blockTradeId": "",
        "symbol": o.symbol,
        "price": price,
        "qty": o.amount,
        "side": capitalize(&o.side),
        "isLeverage": "0",
        "positionIdx": 0,
        "orderStatus": bybit_status(o),
        "cancelType": if open { "UNKNOWN" } else { "CancelByUser" },
        "rejectReason": "EC_NoError",
        "avgPrice": "",
        "leavesQty": if open { o.amount.clone() } else { "0".to_owned() },
        "leavesValue": leaves_value,
        "cumExecQty": "0",
        "cumExecValue": "0",
        "cumExecFee": "0",
        "timeInForce": if o.order_type == "market" { "IOC" } else { "GTC" },
        "orderType": capitalize(&o.order_type),
        "stopOrderType": "",
        "orderIv": "",
        "marketUnit": "",
        "triggerPrice": "0",
        "takeProfit": "0",
        "stopLoss": "0",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "triggerDirection": 0,
        "triggerBy": "",
        "lastPriceOnCreated": "",
        "reduceOnly": false,
        "closeOnTrigger": false,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "createdTime": created,
        "updatedTime": created,
    })
}

fn list_result(category: &str, list: Vec<Value>) -> Value {
    json!({"category": category, "list": list, "nextPageCursor": ""})
}

// ---------------------------------------------------------------------------------------
// Emulator
// ---------------------------------------------------------------------------------------

#[async_trait::async_trait]
impl Emulator for Bybit {
    fn exchange(&self) -> Exchange {
        Exchange::Bybit
    }

    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        req.header("X-BAPI-API-KEY")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        if req.method != Method::GET {
            return None;
        }
        let now = now_ms();
        match req.path.as_str() {
            "/v5/market/time" => {
                let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(now * 1_000_000);
                Some(ok(
                    json!({"timeSecond": (now / 1000).to_string(), "timeNano": nanos.to_string()}),
                    now,
                ))
            }
            "/v5/market/instruments-info" => Some(self.instruments_answer(req, now)),
            "/v5/market/tickers" => {
                let category = req.param("category").unwrap_or_default();
                let symbol = req.param("symbol");
                if category != "spot" {
                    return Some(ok(json!({"category": category, "list": []}), now));
                }
                let list: Vec<Value> = MARKETS
                    .iter()
                    .filter(|m| symbol.as_deref().is_none_or(|s| symbol_of(m) == s))
                    .map(ticker)
                    .collect();
                Some(ok(json!({"category": "spot", "list": list}), now))
            }
            _ => None,
        }
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        // The server time is the request's arrival, as the exchange measures it.
        self.verify_at(req, creds, req.received_at.timestamp_millis())
    }

    fn reject(&self, req: &TrapRequest, why: Rejection) -> Response {
        let now = now_ms();
        let sign_error = || {
            format!(
                "Error sign, please check your signature generation algorithm: origin_string[{}]",
                Self::origin_string(req)
            )
        };
        match why {
            Rejection::MissingKey => respond(
                StatusCode::UNAUTHORIZED,
                envelope(10003, "API key is invalid.", "{}", now),
            ),
            Rejection::MalformedKey | Rejection::UnknownKey => {
                fail(10003, "API key is invalid.", now)
            }
            Rejection::MissingSignature => respond(
                StatusCode::UNAUTHORIZED,
                envelope(10004, &sign_error(), "{}", now),
            ),
            Rejection::BadSignature | Rejection::BadPassphrase => fail(10004, &sign_error(), now),
            Rejection::StaleTimestamp => {
                let ts = req.header("X-BAPI-TIMESTAMP").unwrap_or("");
                let recv = req
                    .header("X-BAPI-RECV-WINDOW")
                    .unwrap_or("5000")
                    .to_owned();
                // Echo only digits: the values land in a JSON string.
                let digits = |s: &str| {
                    s.chars()
                        .filter(char::is_ascii_digit)
                        .take(20)
                        .collect::<String>()
                };
                fail(
                    10002,
                    &format!(
                        "invalid request, please check your server timestamp or recv_window param. req_timestamp[{}],server_timestamp[{now}],recv_window[{}]",
                        digits(ts),
                        digits(&recv)
                    ),
                    now,
                )
            }
            // *unverified*: Bybit's docs list 404 "Cannot find path" and code 10017
            // "Route not found.".
            Rejection::NotFound => respond(
                StatusCode::NOT_FOUND,
                envelope(10017, "Route not found.", "{}", now),
            ),
            // A real 10016 body (ccxt's comments); ccxt maps "Request timeout" to
            // RequestTimeout, which callers retry.
            Rejection::Unavailable => fail(10016, "Request timeout, please try again later", now),
        }
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let p = params(req).unwrap_or_default();
        let pick = |keys: &[&str]| -> Value {
            let mut out = Map::new();
            for k in keys {
                if let Some(v) = pstr(&p, k) {
                    // Evidence, not storage: cap each value.
                    out.insert(
                        (*k).to_owned(),
                        Value::String(v.chars().take(128).collect()),
                    );
                }
            }
            Value::Object(out)
        };
        let path = req.path.as_str();
        let (class, mut params) = match path {
            "/v5/user/query-api" => (ActionClass::Permissions, json!({})),
            "/v5/order/create"
            | "/v5/order/amend"
            | "/v5/order/create-batch"
            | "/v5/order/amend-batch"
            | "/v5/position/trading-stop" => (
                ActionClass::Trade,
                pick(&[
                    "category",
                    "symbol",
                    "side",
                    "orderType",
                    "qty",
                    "price",
                    "marketUnit",
                    "timeInForce",
                    "orderLinkId",
                    "orderId",
                    "isLeverage",
                    "triggerPrice",
                ]),
            ),
            "/v5/order/cancel" | "/v5/order/cancel-all" | "/v5/order/cancel-batch" => (
                ActionClass::Cancel,
                pick(&["category", "symbol", "orderId", "orderLinkId"]),
            ),
            "/v5/asset/deposit/query-address" | "/v5/asset/deposit/query-sub-member-address" => {
                (ActionClass::Address, pick(&["coin", "chainType"]))
            }
            "/v5/asset/withdraw/create" => (
                ActionClass::Withdraw,
                pick(&[
                    "coin",
                    "chain",
                    "address",
                    "tag",
                    "amount",
                    "accountType",
                    "forceChain",
                ]),
            ),
            "/v5/asset/transfer/inter-transfer" | "/v5/asset/transfer/universal-transfer" => (
                ActionClass::Transfer,
                pick(&[
                    "coin",
                    "amount",
                    "fromAccountType",
                    "toAccountType",
                    "fromMemberId",
                    "toMemberId",
                ]),
            ),
            _ => (ActionClass::Read, json!({})),
        };
        if class == ActionClass::Trade {
            // ccxt's fingerprint on POSTs.
            if let Some(r) = req.header("Referer") {
                params["referer"] = Value::String(r.chars().take(64).collect());
            }
        }
        if class == ActionClass::Read {
            params = json!({"path": path.chars().take(128).collect::<String>()});
        }
        Action { class, params }
    }

    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response {
        let now = account.now.timestamp_millis();
        let Some(p) = params(req) else {
            return fail(10001, "Request parameter error.", now);
        };
        let category = pstr(&p, "category").unwrap_or_default();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v5/user/query-api") => ok(query_api(account), now),
            ("GET", "/v5/account/info") => ok(
                json!({
                    "marginMode": "REGULAR_MARGIN",
                    "updatedTime": created_at(account.canary_id, account.now).timestamp_millis().to_string(),
                    "unifiedMarginStatus": 5,
                    "dcpStatus": "OFF",
                    "timeWindow": 10,
                    "smpGroup": 0,
                    "isMasterTrader": false,
                    "spotHedgingStatus": "OFF"
                }),
                now,
            ),
            ("GET", "/v5/account/wallet-balance") => {
                // The wallet depends on the canary alone: rendered once (`rendered.rs`).
                let id = account.canary_id;
                let text = Rendered::global().answer(id, Answer::BybitWallet, now, || {
                    Some(envelope_split(0, "OK", &wallet_balance(account)))
                });
                match text {
                    Some(body) => respond(StatusCode::OK, body),
                    None => ok_text(&wallet_balance(account), now),
                }
            }
            ("GET", "/v5/asset/transfer/query-account-coins-balance") => ok(
                json!({
                    "memberId": user_id(account.canary_id).to_string(),
                    "accountType": pstr(&p, "accountType").unwrap_or_else(|| "FUND".to_owned()),
                    "balance": []
                }),
                now,
            ),
            ("GET", "/v5/asset/coin/query-info") => ok(coin_info(), now),
            ("GET", "/v5/market/instruments-info") => self.instruments_answer(req, now),
            ("GET", "/v5/account/fee-rate") => {
                let symbol = pstr(&p, "symbol");
                let list: Vec<Value> = MARKETS
                    .iter()
                    .filter(|m| symbol.as_deref().is_none_or(|s| symbol_of(m) == s))
                    .map(|m| json!({"symbol": symbol_of(m), "baseCoin": "", "takerFeeRate": "0.001", "makerFeeRate": "0.001"}))
                    .collect();
                ok(json!({"list": list}), now)
            }
            ("POST", "/v5/order/create") => self.create_order(req, &p, account).await,
            ("POST", "/v5/order/cancel") => {
                let id = pstr(&p, "orderId")
                    .filter(|s| !s.is_empty())
                    .or_else(|| pstr(&p, "orderLinkId").filter(|s| !s.is_empty()));
                let Some(id) = id else {
                    return fail(
                        10001,
                        "params error: orderId or orderLinkId is required",
                        now,
                    );
                };
                let not_found = if category == "spot" { 170213 } else { 110001 };
                match account.orders.get(&id).await {
                    Ok(Some(o)) if o.status == "open" => match account.orders.cancel(&id).await {
                        Ok(Some(o)) => ok(
                            json!({"orderId": o.order_id, "orderLinkId": o.client_order_id.unwrap_or_default()}),
                            now,
                        ),
                        Ok(None) => fail(not_found, "Order does not exist.", now),
                        Err(_) => self.reject(req, Rejection::Unavailable),
                    },
                    Ok(_) => fail(not_found, "Order does not exist.", now),
                    Err(_) => self.reject(req, Rejection::Unavailable),
                }
            }
            ("POST", "/v5/order/cancel-all") => {
                let symbol = pstr(&p, "symbol").filter(|s| !s.is_empty());
                let open = match account.orders.open_orders(symbol.as_deref()).await {
                    Ok(o) => o,
                    Err(_) => return self.reject(req, Rejection::Unavailable),
                };
                let mut list = Vec::new();
                for o in open {
                    if let Ok(Some(c)) = account.orders.cancel(&o.order_id).await {
                        list.push(json!({"orderId": c.order_id, "orderLinkId": c.client_order_id.unwrap_or_default()}));
                    }
                }
                ok(json!({"list": list, "success": "1"}), now)
            }
            ("GET", "/v5/order/realtime") => {
                let by_id = pstr(&p, "orderId")
                    .filter(|s| !s.is_empty())
                    .or_else(|| pstr(&p, "orderLinkId").filter(|s| !s.is_empty()));
                let symbol = pstr(&p, "symbol").filter(|s| !s.is_empty());
                let orders = match by_id {
                    Some(id) => account
                        .orders
                        .get(&id)
                        .await
                        .map(|o| o.into_iter().collect()),
                    None => account.orders.open_orders(symbol.as_deref()).await,
                };
                match orders {
                    Ok(list) => ok(
                        list_result(&category, list.iter().map(order_json).collect()),
                        now,
                    ),
                    Err(_) => self.reject(req, Rejection::Unavailable),
                }
            }
            ("GET", "/v5/order/history") => {
                let by_id = pstr(&p, "orderId")
                    .filter(|s| !s.is_empty())
                    .or_else(|| pstr(&p, "orderLinkId").filter(|s| !s.is_empty()));
                let list = match by_id {
                    Some(id) => match account.orders.get(&id).await {
                        Ok(o) => o.iter().map(order_json).collect(),
                        Err(_) => return self.reject(req, Rejection::Unavailable),
                    },
                    None => match account
                        .orders
                        .all_orders(pstr(&p, "symbol").filter(|s| !s.is_empty()).as_deref())
                        .await
                    {
                        Ok(all) => all.iter().map(order_json).collect(),
                        Err(_) => return self.reject(req, Rejection::Unavailable),
                    },
                };
                ok(list_result(&category, list), now)
            }
            ("GET", "/v5/execution/list") | ("GET", "/v5/position/list") => {
                ok(list_result(&category, Vec::new()), now)
            }
            ("GET", "/v5/asset/deposit/query-record")
            | ("GET", "/v5/asset/withdraw/query-record") => {
                ok(json!({"rows": [], "nextPageCursor": ""}), now)
            }
            ("GET", "/v5/asset/deposit/query-address") => self.deposit_address(&p, account),
            ("POST", "/v5/asset/withdraw/create") => {
                let coin = pstr(&p, "coin").unwrap_or_default().to_ascii_uppercase();
                let address = pstr(&p, "address").unwrap_or_default();
                let amount = pstr(&p, "amount").unwrap_or_default();
                if coin.is_empty() || address.is_empty() || !positive(&amount) {
                    return fail(10001, "Request parameter error.", now);
                }
                if !CURRENCIES.iter().any(|(c, _, _)| *c == coin) {
                    return fail(131216, "Currency is not supported.", now);
                }
                let id = 10_000_000 + fnv(&[account.canary_id.as_bytes(), &req.body]) % 90_000_000;
                ok(json!({"id": id.to_string()}), now)
            }
            _ => self.reject(req, Rejection::NotFound),
        }
    }
}

impl Bybit {
    fn instruments_answer(&self, req: &TrapRequest, now: i64) -> Response {
        let category = req.param("category").unwrap_or_default();
        match category.as_str() {
            "spot" | "linear" | "inverse" | "option" => {
                let symbol = req.param("symbol");
                ok(instruments(&category, symbol.as_deref()), now)
            }
            _ => fail(10001, "params error: Category is invalid", now),
        }
    }

    async fn create_order(
        &self,
        req: &TrapRequest,
        p: &Map<String, Value>,
        account: &Account<'_>,
    ) -> Response {
        let now = account.now.timestamp_millis();
        let category = pstr(p, "category").unwrap_or_default();
        if !matches!(category.as_str(), "spot" | "linear" | "inverse" | "option") {
            return fail(10001, "params error: Category is invalid", now);
        }
        let symbol = pstr(p, "symbol").unwrap_or_default();
        let Some(_market) = find_market(&symbol) else {
            return fail(170121, "Invalid symbol.", now);
        };
        let side = match pstr(p, "side").as_deref() {
            Some("Buy") => "buy",
            Some("Sell") => "sell",
            _ => return fail(10001, "params error: side invalid", now),
        };
        let order_type = match pstr(p, "orderType").as_deref() {
            Some("Limit") => "limit",
            Some("Market") => "market",
            _ => return fail(10001, "params error: orderType invalid", now),
        };
        let qty = pstr(p, "qty").unwrap_or_default();
        if !positive(&qty) {
            return fail(170130, "Data sent for parameter 'qty' is not valid.", now);
        }
        let price = pstr(p, "price").filter(|s| !s.is_empty());
        if order_type == "limit" && !price.as_deref().is_some_and(positive) {
            return fail(170130, "Data sent for parameter 'price' is not valid.", now);
        }
        let link = pstr(p, "orderLinkId")
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(36).collect::<String>());
        if let Some(l) = &link {
            if let Ok(Some(_)) = account.orders.get(l).await {
                return fail(170141, "Duplicate clientOrderId.", now);
            }
        }
        let order = Order {
            order_id: order_id(account, req),
            client_order_id: link,
            symbol,
            side: side.to_owned(),
            order_type: order_type.to_owned(),
            price: if order_type == "limit" { price } else { None },
            amount: qty,
            status: "open".to_owned(),
            created_at: account.now,
        };
        match account.orders.place(order).await {
            Ok(o) => ok(
                json!({"orderId": o.order_id, "orderLinkId": o.client_order_id.unwrap_or_default()}),
                now,
            ),
            Err(_) => self.reject(req, Rejection::Unavailable),
        }
    }

    fn deposit_address(&self, p: &Map<String, Value>, account: &Account<'_>) -> Response {
        let now = account.now.timestamp_millis();
        let coin = pstr(p, "coin").unwrap_or_default().to_ascii_uppercase();
        let Some((code, _, networks)) = CURRENCIES.iter().find(|(c, _, _)| *c == coin) else {
            return fail(10001, "params error: coin invalid", now);
        };
        let wanted = pstr(p, "chainType").filter(|s| !s.is_empty());
        let chains: Vec<Value> = networks
            .iter()
            .filter(|n| {
                wanted
                    .as_deref()
                    .is_none_or(|w| network_of(w) == **n || w.eq_ignore_ascii_case(chain_id(n)))
            })
            .map(|n| {
                let chain = chain_id(n);
                json!({
                    "chainType": chain_type(code, chain),
                    "addressDeposit": market::deposit_address(account.canary_id, code, n),
                    "tagDeposit": "",
                    "chain": chain,
                    "batchReleaseLimit": "-1",
                    "contractAddress": "",
                })
            })
            .collect();
        if chains.is_empty() {
            return fail(10001, "params error: chainType invalid", now);
        }
        ok(json!({"coin": code, "chains": chains}), now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::emulator::MemoryOrderBook;
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use keytrap_core::MasterKey;

    /// The wallet is serialized from structs now: its field names and order must stay
    /// Bybit's (pybit and ccxt read them by name; the order is what Bybit sends).
    #[test]
    fn wallet_balance_keeps_bybits_fields_and_totals() {
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        let id = Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b);
        // The wallet depends on the canary id alone; the credentials are the suite's.
        let (c, book) = (creds(), MemoryOrderBook::default());
        let account = crate::testkit::account(Exchange::Bybit, id, &c, &book);
        let text = wallet_balance(&account);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(keys(&v), ["list"]);
        let w = &v["list"][0];
        assert_eq!(
            keys(w),
            [
                "accountType",
                "accountIMRate",
                "accountMMRate",
                "accountLTV",
                "totalEquity",
                "totalWalletBalance",
                "totalMarginBalance",
                "totalAvailableBalance",
                "totalPerpUPL",
                "totalInitialMargin",
                "totalMaintenanceMargin",
                "coin",
            ]
        );
        let coins = w["coin"].as_array().unwrap();
        assert_eq!(coins.len(), market::balances(id).len());
        assert_eq!(
            keys(&coins[0]),
            [
                "coin",
                "equity",
                "usdValue",
                "walletBalance",
                "free",
                "locked",
                "spotHedgingQty",
                "borrowAmount",
                "availableToBorrow",
                "availableToWithdraw",
                "accruedInterest",
                "totalOrderIM",
                "totalPositionIM",
                "totalPositionMM",
                "unrealisedPnl",
                "cumRealisedPnl",
                "bonus",
                "marginCollateral",
                "collateralSwitch",
            ]
        );
        let num = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
        let sum: f64 = coins.iter().map(|c| num(&c["usdValue"])).sum();
        assert!(
            (sum - num(&w["totalEquity"])).abs() < 1e-3,
            "{sum} vs {}",
            w["totalEquity"]
        );
        assert_eq!(coins[0]["marginCollateral"], true);
        // Deterministic per canary: the same text on every call.
        assert_eq!(text, wallet_balance(&account));
        // The memoized answer is the enveloped wallet, byte for byte, at each moment.
        for now in [1_700_000_000_000, 1_700_000_000_123] {
            let memo = Rendered::global()
                .answer(id, Answer::BybitWallet, now, || {
                    Some(envelope_split(0, "OK", &wallet_balance(&account)))
                })
                .unwrap();
            assert_eq!(memo, envelope(0, "OK", &text, now));
            let v: Value = serde_json::from_str(&memo).unwrap();
            assert_eq!(v["time"], now);
        }
    }

    pub(crate) fn request(
        exchange: Exchange,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> TrapRequest {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        TrapRequest {
            exchange,
            method,
            path: path.to_owned(),
            full_path: format!("/{}{path}", exchange.as_str()),
            query: query.map(str::to_owned),
            headers: h,
            body: Bytes::from(body.to_owned()),
            host: "127.0.0.1:8701".to_owned(),
            source_ip: "127.0.0.1".parse().unwrap(),
            received_at: Utc::now(),
        }
    }

    pub(crate) async fn body_of(resp: Response) -> (StatusCode, String, String) {
        use http_body_util::BodyExt;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(b.to_vec()).unwrap())
    }

    // ccxt 4.5.90, generated offline:
    //   ex = ccxt.bybit({'apiKey': KEY, 'secret': SECRET}); ex.milliseconds = lambda: TS
    //   ex.sign(path, ['private'], method, params)
    const KEY: &str = "AbCdEfGhIjKlMnOpQr";
    const SECRET: &str = "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2";
    const TS: i64 = 1_717_171_717_171;

    fn creds() -> Credentials {
        Credentials {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            passphrase: None,
        }
    }

    fn signed(
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &str,
        sign: &str,
    ) -> TrapRequest {
        request(
            Exchange::Bybit,
            method,
            path,
            query,
            &[
                ("Content-Type", "application/json"),
                ("X-BAPI-API-KEY", KEY),
                ("X-BAPI-TIMESTAMP", "1717171717171"),
                ("X-BAPI-RECV-WINDOW", "5000"),
                ("X-BAPI-SIGN", sign),
                ("Referer", "CCXT"),
            ],
            body,
        )
    }

    const CREATE_BODY: &str = r#"{"symbol":"BTCUSDT","side":"Buy","category":"spot","orderType":"Limit","qty":"0.001","price":"50000","orderLinkId":"x"}"#;

    fn ccxt_vectors() -> Vec<TrapRequest> {
        vec![
            // GET https://api.bybit.com/v5/user/query-api?  (empty query)
            signed(
                Method::GET,
                "/v5/user/query-api",
                Some(""),
                "",
                "8ffc89ef56984222cae1e925e7b9cce64add643a50ff01449417351c5b4a2d9a",
            ),
            signed(
                Method::GET,
                "/v5/account/wallet-balance",
                Some("accountType=UNIFIED"),
                "",
                "6de02e7a9eb68459f0546529b113f3c686ba15ac5b3ac2b907ccaa3a02488bbe",
            ),
            signed(
                Method::POST,
                "/v5/order/create",
                None,
                CREATE_BODY,
                "9e0f7ab2dd5cf2f6b54c5c7891d9440182006aa782d7081028611a9af1a8a4cd",
            ),
            signed(
                Method::GET,
                "/v5/order/realtime",
                Some("symbol=BTCUSDT&category=spot"),
                "",
                "500d9ed869bbcb8c8b6a8d8ccc518ffca08ce92efbd300126ff876f66332e24f",
            ),
        ]
    }

    /// Signs like ccxt, with the current time (for `check_signature` itself).
    pub(crate) fn sign_now(
        creds: &Credentials,
        method: Method,
        path: &str,
        query: &str,
        body: &str,
    ) -> TrapRequest {
        let ts = now_ms().to_string();
        let payload = if method == Method::POST { body } else { query };
        let mut mac = Hmac::<Sha256>::new_from_slice(creds.api_secret.as_bytes()).unwrap();
        mac.update(format!("{ts}{}5000{payload}", creds.api_key).as_bytes());
        let sign = hex::encode(mac.finalize().into_bytes());
        request(
            Exchange::Bybit,
            method,
            path,
            Some(query),
            &[
                ("X-BAPI-API-KEY", &creds.api_key),
                ("X-BAPI-TIMESTAMP", &ts),
                ("X-BAPI-RECV-WINDOW", "5000"),
                ("X-BAPI-SIGN", &sign),
            ],
            body,
        )
    }

    #[test]
    fn ccxt_signed_requests_are_valid() {
        for r in ccxt_vectors() {
            assert_eq!(
                Bybit.verify_at(&r, &creds(), TS + 20),
                SigCheck::Valid,
                "{}",
                r.path
            );
        }
    }

    #[test]
    fn uppercase_hex_and_no_query_at_all_are_accepted() {
        let mut r = ccxt_vectors().remove(0);
        r.query = None; // a client that drops the trailing `?`
        let s = r.header("X-BAPI-SIGN").unwrap().to_ascii_uppercase();
        r.headers
            .insert("X-BAPI-SIGN", HeaderValue::from_str(&s).unwrap());
        assert_eq!(Bybit.verify_at(&r, &creds(), TS), SigCheck::Valid);
    }

    #[test]
    fn quoted_query_matches_the_unquoted_signature() {
        // ccxt signs `orderLinkId=a b` unquoted; the HTTP client sends `a%20b`.
        let c = creds();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{TS}{KEY}5000orderLinkId=a b&category=spot").as_bytes());
        let sign = hex::encode(mac.finalize().into_bytes());
        let r = signed(
            Method::GET,
            "/v5/order/realtime",
            Some("orderLinkId=a%20b&category=spot"),
            "",
            &sign,
        );
        assert_eq!(Bybit.verify_at(&r, &c, TS), SigCheck::Valid);
    }

    #[test]
    fn without_a_recv_window_header_either_signed_form_is_accepted() {
        // Clients that send no X-BAPI-RECV-WINDOW sign either nothing or Bybit's default
        // in its place; a query with nothing escaped is signed as sent.
        assert_eq!(DEFAULT_RECV_WINDOW_TEXT, DEFAULT_RECV_WINDOW.to_string());
        let q = "accountType=UNIFIED";
        let sign = |recv: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{TS}{KEY}{recv}{q}").as_bytes());
            hex::encode(mac.finalize().into_bytes())
        };
        for (recv, want) in [
            ("", SigCheck::Valid),
            ("5000", SigCheck::Valid),
            ("4000", SigCheck::Invalid(Rejection::BadSignature)),
        ] {
            let mut r = signed(
                Method::GET,
                "/v5/account/wallet-balance",
                Some(q),
                "",
                &sign(recv),
            );
            r.headers.remove("X-BAPI-RECV-WINDOW");
            assert_eq!(Bybit.verify_at(&r, &creds(), TS), want, "recv {recv:?}");
        }
    }

    #[test]
    fn check_signature_with_the_current_time() {
        let c = MasterKey::from_bytes([7; 32])
            .keys()
            .credentials(Exchange::Bybit, Uuid::now_v7());
        let r = sign_now(
            &c,
            Method::GET,
            "/v5/account/wallet-balance",
            "accountType=UNIFIED",
            "",
        );
        assert_eq!(Bybit.check_signature(&r, &c), SigCheck::Valid);
        let r = sign_now(&c, Method::POST, "/v5/order/create", "", CREATE_BODY);
        assert_eq!(Bybit.check_signature(&r, &c), SigCheck::Valid);
    }

    #[test]
    fn wrong_secret_tampering_stale_and_missing() {
        let bad = Credentials {
            api_secret: "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i3".into(),
            ..creds()
        };
        for r in ccxt_vectors() {
            assert_eq!(
                Bybit.verify_at(&r, &bad, TS),
                SigCheck::Invalid(Rejection::BadSignature)
            );
        }
        // Body changed after signing.
        let mut r = ccxt_vectors().remove(2);
        r.body = Bytes::from(CREATE_BODY.replace("0.001", "0.002"));
        assert_eq!(
            Bybit.verify_at(&r, &creds(), TS),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Not hex.
        let mut r = ccxt_vectors().remove(1);
        r.headers
            .insert("X-BAPI-SIGN", HeaderValue::from_static("zz"));
        assert_eq!(
            Bybit.verify_at(&r, &creds(), TS),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Window: [server - 5000, server + 1000).
        let r = ccxt_vectors().remove(1);
        assert_eq!(Bybit.verify_at(&r, &creds(), TS + 5000), SigCheck::Valid);
        assert_eq!(
            Bybit.verify_at(&r, &creds(), TS + 5001),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        assert_eq!(Bybit.verify_at(&r, &creds(), TS - 999), SigCheck::Valid);
        assert_eq!(
            Bybit.verify_at(&r, &creds(), TS - 1000),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        assert_eq!(
            Bybit.check_signature(&r, &creds()),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        // Missing sign or timestamp.
        let mut r = ccxt_vectors().remove(1);
        r.headers.remove("X-BAPI-SIGN");
        assert_eq!(Bybit.verify_at(&r, &creds(), TS), SigCheck::Missing);
        let mut r = ccxt_vectors().remove(1);
        r.headers.remove("X-BAPI-TIMESTAMP");
        assert_eq!(Bybit.verify_at(&r, &creds(), TS), SigCheck::Missing);
        // Garbage never panics.
        let mut r = ccxt_vectors().remove(1);
        r.headers.insert(
            "X-BAPI-TIMESTAMP",
            HeaderValue::from_static("99999999999999999999999"),
        );
        r.headers.insert(
            "X-BAPI-RECV-WINDOW",
            HeaderValue::from_static("9223372036854775807"),
        );
        assert_eq!(
            Bybit.verify_at(&r, &creds(), TS),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        r.query = Some("%%%%%".into());
        let _ = Bybit.verify_at(&r, &creds(), i64::MIN);
        let _ = Bybit.verify_at(&r, &creds(), i64::MAX);
    }

    #[test]
    fn api_key_is_the_header() {
        let r = ccxt_vectors().remove(0);
        assert_eq!(Bybit.api_key(&r).as_deref(), Some(KEY));
        let r = request(
            Exchange::Bybit,
            Method::GET,
            "/v5/account/info",
            None,
            &[],
            "",
        );
        assert_eq!(Bybit.api_key(&r), None);
    }

    #[tokio::test]
    async fn reject_bodies_are_bybits() {
        let r = ccxt_vectors().remove(1);
        let re = |s: &str| {
            // Replace the trailing `"time":<ms>}` to compare the rest byte for byte.
            let i = s.rfind("\"time\":").unwrap();
            let t: i64 = s[i + 7..s.len() - 1].parse().unwrap();
            assert!((t - now_ms()).abs() < 60_000);
            format!("{}\"time\":T}}", &s[..i])
        };
        let cases: Vec<(Rejection, u16, String)> = vec![
            (Rejection::UnknownKey, 200, r#"{"retCode":10003,"retMsg":"API key is invalid.","result":{},"retExtInfo":{},"time":T}"#.into()),
            (Rejection::MalformedKey, 200, r#"{"retCode":10003,"retMsg":"API key is invalid.","result":{},"retExtInfo":{},"time":T}"#.into()),
            (Rejection::MissingKey, 401, r#"{"retCode":10003,"retMsg":"API key is invalid.","result":{},"retExtInfo":{},"time":T}"#.into()),
            (Rejection::BadSignature, 200, format!(r#"{{"retCode":10004,"retMsg":"Error sign, please check your signature generation algorithm: origin_string[1717171717171{KEY}5000accountType=UNIFIED]","result":{{}},"retExtInfo":{{}},"time":T}}"#)),
            (Rejection::MissingSignature, 401, format!(r#"{{"retCode":10004,"retMsg":"Error sign, please check your signature generation algorithm: origin_string[1717171717171{KEY}5000accountType=UNIFIED]","result":{{}},"retExtInfo":{{}},"time":T}}"#)),
            (Rejection::NotFound, 404, r#"{"retCode":10017,"retMsg":"Route not found.","result":{},"retExtInfo":{},"time":T}"#.into()),
            (Rejection::Unavailable, 200, r#"{"retCode":10016,"retMsg":"Request timeout, please try again later","result":{},"retExtInfo":{},"time":T}"#.into()),
        ];
        for (why, status, want) in cases {
            let (s, ct, body) = body_of(Bybit.reject(&r, why)).await;
            assert_eq!(s.as_u16(), status, "{why:?}");
            assert_eq!(ct, "application/json; charset=utf-8");
            assert_eq!(re(&body), want, "{why:?}");
            assert!(!body.contains(SECRET));
        }
        let (_, _, body) = body_of(Bybit.reject(&r, Rejection::StaleTimestamp)).await;
        assert!(body.starts_with(r#"{"retCode":10002,"retMsg":"invalid request, please check your server timestamp or recv_window param. req_timestamp[1717171717171],server_timestamp["#));
        assert!(body.contains("],recv_window[5000]\",\"result\":{},\"retExtInfo\":{},\"time\":"));
        // A body with quotes stays valid JSON.
        let mut r2 = ccxt_vectors().remove(2);
        r2.body = Bytes::from_static(b"{\"a\":\"\\\"\xff\"}");
        let (_, _, body) = body_of(Bybit.reject(&r2, Rejection::BadSignature)).await;
        serde_json::from_str::<Value>(&body).unwrap();
    }

    #[test]
    fn classify_order_and_withdrawal() {
        let r = ccxt_vectors().remove(2);
        let a = Bybit.classify(&r);
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(
            a.params,
            json!({"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.001","price":"50000","orderLinkId":"x","referer":"CCXT"})
        );
        let r = request(
            Exchange::Bybit,
            Method::POST,
            "/v5/asset/withdraw/create",
            None,
            &[],
            r#"{"coin":"USDT","amount":"5000","address":"0xabc","timestamp":1717171717171,"accountType":"UTA","chain":"ETH"}"#,
        );
        let a = Bybit.classify(&r);
        assert_eq!(a.class, ActionClass::Withdraw);
        assert_eq!(
            a.params,
            json!({"coin":"USDT","chain":"ETH","address":"0xabc","amount":"5000","accountType":"UTA"})
        );
        let r = request(
            Exchange::Bybit,
            Method::GET,
            "/v5/asset/deposit/query-address",
            Some("coin=USDT&chainType=TRX"),
            &[],
            "",
        );
        assert_eq!(Bybit.classify(&r).class, ActionClass::Address);
        assert_eq!(
            Bybit.classify(&r).params,
            json!({"coin":"USDT","chainType":"TRX"})
        );
        let r = request(
            Exchange::Bybit,
            Method::GET,
            "/v5/user/query-api",
            Some(""),
            &[],
            "",
        );
        assert_eq!(Bybit.classify(&r).class, ActionClass::Permissions);
        let r = request(
            Exchange::Bybit,
            Method::POST,
            "/v5/order/cancel",
            None,
            &[],
            r#"{"orderId":"1","symbol":"BTCUSDT","category":"spot"}"#,
        );
        assert_eq!(Bybit.classify(&r).class, ActionClass::Cancel);
        let r = request(
            Exchange::Bybit,
            Method::POST,
            "/v5/order/create",
            None,
            &[],
            "\u{1}not json",
        );
        assert_eq!(Bybit.classify(&r).class, ActionClass::Trade);
    }

    async fn call(req: &TrapRequest, account: &Account<'_>) -> Value {
        let (s, _, body) = body_of(Bybit.private(req, account).await).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn get(path: &str, q: &str) -> TrapRequest {
        request(Exchange::Bybit, Method::GET, path, Some(q), &[], "")
    }

    fn post(path: &str, body: &str) -> TrapRequest {
        request(Exchange::Bybit, Method::POST, path, None, &[], body)
    }

    #[tokio::test]
    async fn private_round_trip() {
        let book = MemoryOrderBook::default();
        let c = creds();
        let id = Uuid::now_v7();
        let account = crate::testkit::account(Exchange::Bybit, id, &c, &book);
        let v = call(&get("/v5/user/query-api", ""), &account).await;
        assert_eq!(v["retCode"], 0);
        assert_eq!(v["result"]["readOnly"], 0);
        assert_eq!(v["result"]["ips"], json!(["*"]));
        assert_eq!(v["result"]["uta"], 1);
        assert_eq!(v["result"]["apiKey"], KEY);
        assert!(v["result"]["permissions"]["Wallet"]
            .as_array()
            .unwrap()
            .contains(&json!("Withdraw")));

        let v = call(
            &get("/v5/account/wallet-balance", "accountType=UNIFIED"),
            &account,
        )
        .await;
        let coins = v["result"]["list"][0]["coin"].as_array().unwrap();
        let usdt = coins.iter().find(|c| c["coin"] == "USDT").unwrap();
        let want = market::balances(id)[0].1;
        assert!(
            (usdt["walletBalance"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                - want)
                .abs()
                < 1e-6
        );

        let v = call(&post("/v5/order/create", CREATE_BODY), &account).await;
        let oid = v["result"]["orderId"].as_str().unwrap().to_owned();
        assert_eq!(oid.len(), 19);
        assert_eq!(v["result"]["orderLinkId"], "x");
        // The same client id again is a duplicate.
        let (_, _, body) = body_of(
            Bybit
                .private(&post("/v5/order/create", CREATE_BODY), &account)
                .await,
        )
        .await;
        assert!(body.contains("170141"));

        let v = call(
            &get("/v5/order/realtime", "symbol=BTCUSDT&category=spot"),
            &account,
        )
        .await;
        let list = v["result"]["list"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["orderId"], oid.as_str());
        assert_eq!(list[0]["orderStatus"], "New");
        assert_eq!(list[0]["price"], "50000");
        assert_eq!(list[0]["side"], "Buy");
        assert!(list[0].get("tpslMode").is_none());

        let cancel = format!(r#"{{"symbol":"BTCUSDT","orderId":"{oid}","category":"spot"}}"#);
        let v = call(&post("/v5/order/cancel", &cancel), &account).await;
        assert_eq!(v["retCode"], 0);
        assert_eq!(v["result"]["orderId"], oid.as_str());
        let v = call(&post("/v5/order/cancel", &cancel), &account).await;
        assert_eq!(v["retCode"], 170213);
        let v = call(&get("/v5/order/realtime", "category=spot"), &account).await;
        assert_eq!(v["result"]["list"], json!([]));
        let v = call(
            &get(
                "/v5/order/realtime",
                &format!("orderId={oid}&category=spot"),
            ),
            &account,
        )
        .await;
        assert_eq!(v["result"]["list"][0]["orderStatus"], "Cancelled");

        let v = call(
            &get("/v5/asset/deposit/query-address", "coin=USDT&chainType=TRX"),
            &account,
        )
        .await;
        let chains = v["result"]["chains"].as_array().unwrap();
        assert_eq!(chains.len(), 1);
        assert_eq!(
            chains[0]["addressDeposit"],
            market::deposit_address(id, "USDT", "TRX")
        );
        let v = call(
            &post("/v5/asset/withdraw/create", r#"{"coin":"USDT","amount":"5000","address":"0xabc","chain":"ETH","accountType":"UTA","timestamp":1}"#),
            &account,
        )
        .await;
        assert!(v["result"]["id"].as_str().unwrap().parse::<u64>().is_ok());

        let v = call(&get("/v5/asset/coin/query-info", ""), &account).await;
        assert!(v["result"]["rows"].as_array().unwrap().len() >= CURRENCIES.len());

        // Bad input gives Bybit-style errors, never a panic.
        for (path, body) in [
            ("/v5/order/create", "not json"),
            (
                "/v5/order/create",
                r#"{"category":"spot","symbol":"NOPEUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"1"}"#,
            ),
            (
                "/v5/order/create",
                r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1e999","price":"1"}"#,
            ),
            (
                "/v5/order/create",
                r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"-1","price":"1"}"#,
            ),
            ("/v5/order/create", r#"[1,2,3]"#),
            ("/v5/order/cancel", r#"{}"#),
            ("/v5/asset/withdraw/create", r#"{"coin":"USDT"}"#),
        ] {
            let (s, _, b) = body_of(Bybit.private(&post(path, body), &account).await).await;
            assert_eq!(s, StatusCode::OK);
            let v: Value = serde_json::from_str(&b).unwrap();
            assert_ne!(v["retCode"], 0, "{path} {body}");
        }
        let (s, _, _) = body_of(Bybit.private(&get("/v5/nope", ""), &account).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn public_markets_have_what_ccxt_reads() {
        let r = get("/v5/market/instruments-info", "category=spot");
        let (s, ct, body) = body_of(Bybit.public(&r).unwrap()).await;
        assert_eq!((s, ct.as_str()), (StatusCode::OK, CONTENT_TYPE));
        let v: Value = serde_json::from_str(&body).unwrap();
        let list = v["result"]["list"].as_array().unwrap();
        assert_eq!(list.len(), MARKETS.len());
        let btc = list.iter().find(|m| m["symbol"] == "BTCUSDT").unwrap();
        assert_eq!(btc["status"], "Trading");
        assert_eq!(btc["lotSizeFilter"]["basePrecision"], "0.00001");
        assert_eq!(btc["priceFilter"]["tickSize"], "0.01");
        for k in [
            "minOrderQty",
            "maxOrderQty",
            "minOrderAmt",
            "maxOrderAmt",
            "quotePrecision",
        ] {
            assert!(
                btc["lotSizeFilter"][k]
                    .as_str()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap()
                    > 0.0,
                "{k}"
            );
        }
        for cat in ["linear", "inverse", "option"] {
            let r = get(
                "/v5/market/instruments-info",
                &format!("category={cat}&limit=1000"),
            );
            let (_, _, body) = body_of(Bybit.public(&r).unwrap()).await;
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["result"]["list"], json!([]));
        }
        let (_, _, body) = body_of(Bybit.public(&get("/v5/market/time", "")).unwrap()).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["time"].as_i64().unwrap() > 1_700_000_000_000);
        assert!(Bybit
            .public(&get("/v5/account/wallet-balance", ""))
            .is_none());
        assert!(Bybit
            .public(&get("/v5/asset/coin/query-info", ""))
            .is_none());
    }
}
