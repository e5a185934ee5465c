//! KuCoin spot (classic account) emulator.
//!
//! What it imitates: the REST API at `https://api.kucoin.com` as Python ccxt 4.5
//! (`ccxt/kucoin.py`) and KuCoin's own SDKs use it: `KC-API-*` header signing (key
//! version 1 plain passphrase, 2/3 HMAC-signed passphrase), the `{"code":"200000",
//! "data":...}` envelope, the calls of `load_markets()` (some of them signed), balances,
//! classic and HF spot orders, fills, deposit addresses (v1/v2/v3), withdrawals (v1/v3),
//! internal transfers and the API-key permission endpoint. Futures endpoints are only
//! answered where `load_markets()` needs them (`/api/v1/contracts/active`, empty).
//!
//! Sources: KuCoin API docs (kucoin-api-docs, docs-new), `ccxt/kucoin.py` (`sign()`,
//! `fetch_markets`, `parse_currency`, `fetch_balance`, `parse_spot_order`, `withdraw`,
//! `handle_errors`), and error bodies observed in public issue threads (KuCoin SDK and
//! ccxt issues): `400001` and `400002` come back with HTTP 400, the key, passphrase and
//! signature errors with HTTP 401; the messages are the ones the live API sends, which
//! differ from the docs' table (`Invalid KC-API-PASSPHRASE`, `Invalid KC-API-TIMESTAMP`).
//!
//! The account answers as a classic (non-UTA, non-HF) account: `load_markets()` then
//! makes ccxt use the classic endpoints, which need no symbol for open orders, so an
//! attacker's script runs without friction. HF endpoints are served as well for clients
//! that use them explicitly.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use keytrap_core::{Credentials, Exchange};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::emulator::{
    json, percent_decode, raw, Account, Action, ActionClass, Emulator, Order, Rejection, SigCheck,
    TrapRequest,
};
use crate::market::{self, Market, CURRENCIES, MARKETS};

type HmacSha256 = Hmac<Sha256>;

/// The KuCoin emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Kucoin;

/// KuCoin rejects a timestamp more than 5 s away from its clock, either way.
const WINDOW_MS: i64 = 5_000;

const CT: &str = "application/json";

// Refusals, byte-exact. KuCoin's gateway sends compact JSON with `code` first.
const MISSING_HEADER: &str = r#"{"code":"400001","msg":"Please check the header of your request for KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE"}"#;
const BAD_TIMESTAMP: &str = r#"{"code":"400002","msg":"Invalid KC-API-TIMESTAMP"}"#;
const UNKNOWN_KEY: &str = r#"{"code":"400003","msg":"KC-API-KEY not exists"}"#;
const BAD_PASSPHRASE: &str = r#"{"code":"400004","msg":"Invalid KC-API-PASSPHRASE"}"#;
const BAD_SIGN: &str = r#"{"code":"400005","msg":"Invalid KC-API-SIGN"}"#;
// The gateway's own 404 (shape quoted in ccxt's kucoin.py for an unknown UTA path).
const NOT_FOUND: &str = r#"{"code":"404","msg":"Not Found","retry":false,"success":false}"#;
// Unverified: the gateway's 503 in the same style; ccxt maps code "503" to
// ExchangeNotAvailable, so clients retry instead of giving up.
const UNAVAILABLE: &str =
    r#"{"code":"503","msg":"Service Unavailable","retry":true,"success":false}"#;

fn ok(data: Value) -> Response {
    json(StatusCode::OK, json!({"code": "200000", "data": data}))
}

/// A business error in KuCoin's shape (`{"code":"400100","msg":"..."}`).
fn fail(status: StatusCode, code: &str, msg: &str) -> Response {
    let mut m = Map::new();
    m.insert("code".into(), Value::String(code.into()));
    m.insert("msg".into(), Value::String(msg.into()));
    json(status, Value::Object(m))
}

fn bad_request(msg: &str) -> Response {
    fail(StatusCode::BAD_REQUEST, "400100", msg)
}

/// Constant-time byte comparison (length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac_b64(secret: &str, msg: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

/// Decimal text without trailing zeros (`0.10000000` -> `0.1`, `5.000` -> `5`).
pub(crate) fn dec(v: f64, decimals: u32) -> String {
    let s = market::fixed(v, decimals);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `10^-d` as decimal text (`"0.001"`, or `"1"` for 0).
pub(crate) fn increment(d: u32) -> String {
    if d == 0 {
        "1".into()
    } else {
        format!("0.{}1", "0".repeat(d as usize - 1))
    }
}

/// 24 lower-case hex shaped like a MongoDB ObjectId (KuCoin's ids): creation time in
/// seconds, then 16 hex digits derived from the inputs.
fn object_id(at: DateTime<Utc>, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    format!("{:08x}{}", at.timestamp() as u32, hex::encode(&d[..8]))
}

fn symbol_of(m: &Market) -> String {
    format!("{}-{}", m.base, m.quote)
}

fn find_market(symbol: &str) -> Option<&'static Market> {
    MARKETS.iter().find(|m| symbol_of(m) == symbol)
}

/// KuCoin's chain id and chain name for a network code of `market::CURRENCIES`.
fn chain(network: &str) -> (&'static str, &'static str) {
    match network {
        "ETH" => ("eth", "ERC20"),
        "TRX" => ("trx", "TRC20"),
        "BSC" => ("bsc", "BEP20"),
        "SOL" => ("sol", "SOL"),
        "ARBITRUM" => ("arbitrum", "ARBITRUM"),
        "BTC" => ("btc", "BTC"),
        "XRP" => ("xrp", "XRP"),
        "ADA" => ("ada", "ADA"),
        "DOGE" => ("doge", "DOGE"),
        "DOT" => ("dot", "DOT"),
        "LTC" => ("ltc", "LTC"),
        "AVAXC" => ("avaxc", "AVAX C-Chain"),
        "SYS" => ("sys", "SYS"),
        _ => ("eth", "ERC20"),
    }
}

/// The network code of `market::CURRENCIES` a client's `chain` value names (KuCoin
/// chain ids like `trx`, or chain names like `TRC20`), among the coin's networks.
fn network_for(coin: &str, chain_param: Option<&str>) -> Option<&'static str> {
    let (_, _, nets) = CURRENCIES.iter().find(|(c, _, _)| *c == coin)?;
    match chain_param.filter(|c| !c.is_empty()) {
        None => nets.first().copied(),
        Some(c) => nets.iter().copied().find(|n| {
            let (id, name) = chain(n);
            id.eq_ignore_ascii_case(c) || name.eq_ignore_ascii_case(c) || n.eq_ignore_ascii_case(c)
        }),
    }
}

fn coin_precision(coin: &str) -> u32 {
    match coin {
        "USDT" | "USDC" => 6,
        _ => 8,
    }
}

fn usd_price(coin: &str) -> f64 {
    match coin {
        "USDT" | "USDC" => 1.0,
        _ => MARKETS
            .iter()
            .find(|m| m.base == coin && m.quote == "USDT")
            .map_or(1.0, |m| m.price),
    }
}

/// A string field of a JSON object, numbers accepted as text (ccxt sends withdraw
/// amounts as numbers, order sizes as strings).
fn field(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A positive, finite decimal.
fn positive(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
}

impl Kucoin {
    fn currency_json(code: &str, name: &str, nets: &[&str]) -> Value {
        let p = coin_precision(code);
        let usd = usd_price(code);
        let chains: Vec<Value> = nets
            .iter()
            .map(|n| {
                let (id, cname) = chain(n);
                // Fees and minimums worth a few dollars, like the real list.
                let fee = dec((1.0 / usd).max(1e-8), p.min(8));
                let min_w = dec((10.0 / usd).max(1e-8), p.min(8));
                let min_d = dec((1.0 / usd).max(1e-8), p.min(8));
                json!({
                    "chainName": cname,
                    "withdrawalMinSize": min_w,
                    "depositMinSize": min_d,
                    "withdrawFeeRate": "0",
                    "withdrawalMinFee": fee,
                    "isWithdrawEnabled": true,
                    "isDepositEnabled": true,
                    "confirms": if *n == "BTC" { 3 } else { 64 },
                    "preConfirms": if *n == "BTC" { 1 } else { 32 },
                    "contractAddress": "",
                    "withdrawPrecision": p,
                    "maxWithdraw": null,
                    "maxDeposit": null,
                    "needTag": *n == "XRP",
                    "chainId": id,
                    "depositFeeRate": null,
                    "withdrawMaxFee": null,
                    "depositTierFee": null
                })
            })
            .collect();
        json!({
            "currency": code,
            "name": code,
            "fullName": name,
            "precision": p,
            "confirms": null,
            "contractAddress": null,
            "isMarginEnabled": true,
            "isDebitEnabled": true,
            "chains": chains
        })
    }

    fn symbol_json(m: &Market) -> Value {
        let quote_min = if m.quote == "BTC" { "0.00001" } else { "0.1" };
        let quote_max = if m.quote == "BTC" { "1000" } else { "99999999" };
        json!({
            "symbol": symbol_of(m),
            "name": symbol_of(m),
            "baseCurrency": m.base,
            "quoteCurrency": m.quote,
            "feeCurrency": m.quote,
            "market": if m.quote == "BTC" { "BTC" } else { "USDS" },
            "baseMinSize": increment(m.qty_decimals),
            "quoteMinSize": quote_min,
            "baseMaxSize": "10000000000",
            "quoteMaxSize": quote_max,
            "baseIncrement": increment(m.qty_decimals),
            "quoteIncrement": increment(m.price_decimals),
            "priceIncrement": increment(m.price_decimals),
            "priceLimitRate": "0.1",
            "minFunds": quote_min,
            "isMarginEnabled": m.quote == "USDT",
            "enableTrading": true,
            "feeCategory": 1,
            "makerFeeCoefficient": "1.00",
            "takerFeeCoefficient": "1.00",
            "st": false,
            "callauctionIsEnabled": false,
            "callauctionPriceFloor": null,
            "callauctionPriceCeiling": null,
            "callauctionFirstStageStartTime": null,
            "callauctionSecondStageStartTime": null,
            "callauctionThirdStageStartTime": null,
            "tradingStartTime": null
        })
    }

    fn ticker_json(m: &Market) -> Value {
        let d = m.price_decimals;
        let p = m.price;
        json!({
            "symbol": symbol_of(m),
            "symbolName": symbol_of(m),
            "buy": dec(p * 0.9998, d),
            "bestBidSize": dec(1_000.0 / (p * 0.9998) / 3.0, m.qty_decimals.max(1)),
            "sell": dec(p * 1.0002, d),
            "bestAskSize": dec(1_000.0 / (p * 1.0002) / 2.0, m.qty_decimals.max(1)),
            "changeRate": "0.0123",
            "changePrice": dec(p * 0.0123, d),
            "high": dec(p * 1.031, d),
            "low": dec(p * 0.968, d),
            "vol": dec(25_000_000.0 / p, m.qty_decimals),
            "volValue": dec(25_000_000.0, 2),
            "last": dec(p, d),
            "averagePrice": dec(p * 0.995, d),
            "takerFeeRate": "0.001",
            "makerFeeRate": "0.001",
            "takerCoefficient": "1",
            "makerCoefficient": "1"
        })
    }

    fn level1(m: &Market, now_ms: i64) -> Value {
        let d = m.price_decimals;
        json!({
            "time": now_ms,
            "sequence": format!("{}", 14_610_502_970_i64 + now_ms % 1_000_000),
            "price": dec(m.price, d),
            "size": dec(0.37 * 100.0 / m.price.max(1e-9), m.qty_decimals),
            "bestBid": dec(m.price * 0.9998, d),
            "bestBidSize": dec(300.0 / m.price.max(1e-9), m.qty_decimals),
            "bestAsk": dec(m.price * 1.0002, d),
            "bestAskSize": dec(500.0 / m.price.max(1e-9), m.qty_decimals)
        })
    }

    fn orderbook(m: &Market, depth: usize, now_ms: i64) -> Value {
        let d = m.price_decimals;
        let step = 10f64.powi(-(d as i32)).max(m.price * 0.0001);
        let level = |i: usize, side: f64| {
            let px = m.price * (1.0 + side * 0.0002) + side * step * i as f64;
            let qty = (150.0 + 37.0 * ((i * 7919) % 13) as f64) / m.price.max(1e-9);
            json!([dec(px, d), dec(qty, m.qty_decimals.max(1))])
        };
        json!({
            "time": now_ms,
            "sequence": format!("{}", 14_610_502_970_i64 + now_ms % 1_000_000),
            "bids": (0..depth).map(|i| level(i, -1.0)).collect::<Vec<_>>(),
            "asks": (0..depth).map(|i| level(i, 1.0)).collect::<Vec<_>>()
        })
    }

    fn stats(m: &Market, now_ms: i64) -> Value {
        let mut t = Self::ticker_json(m);
        if let Some(o) = t.as_object_mut() {
            o.insert("time".into(), json!(now_ms));
        }
        t
    }

    /// The endpoint strings the client may have signed, best guess first: the raw
    /// request target (ccxt signs its unencoded query and sends it as is), then the
    /// percent-decoded form (when an HTTP library re-encoded the query after signing),
    /// then the form-decoded form, and for bodies, the bare path.
    fn endpoints(req: &TrapRequest) -> Vec<String> {
        let mut out = Vec::with_capacity(4);
        match req.query.as_deref().filter(|q| !q.is_empty()) {
            None => out.push(req.path.clone()),
            Some(q) => {
                out.push(format!("{}?{q}", req.path));
                let pct = percent_decode(&q.replace('+', "%2B"));
                let form = percent_decode(q);
                for cand in [pct, form] {
                    let e = format!("{}?{cand}", req.path);
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
                if req.method != Method::GET && req.method != Method::DELETE {
                    out.push(req.path.clone());
                }
            }
        }
        out
    }

    fn signature_matches(req: &TrapRequest, secret: &str, ts: &str, sign: &str) -> bool {
        let Ok(given) = B64.decode(sign.trim()) else {
            return false;
        };
        let Ok(base) = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        Self::endpoints(req).iter().any(|endpoint| {
            let mut mac = base.clone();
            mac.update(ts.as_bytes());
            mac.update(req.method.as_str().as_bytes());
            mac.update(endpoint.as_bytes());
            mac.update(&req.body);
            mac.verify_slice(&given).is_ok()
        })
    }

    fn partner(req: &TrapRequest) -> Option<String> {
        req.header("kc-api-partner").map(str::to_string)
    }

    /// Decoded query then JSON body fields, for evidence and request parameters.
    fn params(req: &TrapRequest) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in req.query_params() {
            m.entry(k).or_insert(Value::String(v));
        }
        if let Some(Value::Object(o)) = req.json_body() {
            for (k, v) in o {
                m.entry(k).or_insert(v);
            }
        }
        m
    }

    fn order_json(o: &Order, tags: &Value) -> Value {
        let quote = o.symbol.split_once('-').map_or("", |(_, q)| q);
        let open = o.status == "open";
        json!({
            "id": o.order_id,
            "symbol": o.symbol,
            "opType": "DEAL",
            "type": o.order_type,
            "side": o.side,
            "price": o.price.clone().unwrap_or_else(|| "0".into()),
            "size": o.amount,
            "funds": "0",
            "dealFunds": "0",
            "dealSize": "0",
            "fee": "0",
            "feeCurrency": quote,
            "stp": "",
            "stop": "",
            "stopTriggered": false,
            "stopPrice": "0",
            "timeInForce": "GTC",
            "postOnly": false,
            "hidden": false,
            "iceberg": false,
            "visibleSize": "0",
            "cancelAfter": 0,
            "channel": "API",
            "clientOid": o.client_order_id,
            "remark": null,
            "tags": tags,
            "isActive": open,
            "cancelExist": o.status == "cancelled",
            "createdAt": o.created_at.timestamp_millis(),
            "tradeType": "TRADE"
        })
    }

    /// HF orders carry a few more fields (`active`, `inOrderBook`, `remainSize`...).
    fn hf_order_json(o: &Order, tags: &Value) -> Value {
        let mut v = Self::order_json(o, tags);
        let open = o.status == "open";
        if let Some(m) = v.as_object_mut() {
            m.remove("isActive");
            m.remove("stop");
            m.remove("stopTriggered");
            m.remove("stopPrice");
            // HF orders carry `"stp": null` (classic ones `""`); kucoin-universal-sdk
            // validates stp as an enum and drops the whole list on `""`.
            m.insert("stp".into(), Value::Null);
            m.insert("active".into(), json!(open));
            m.insert("inOrderBook".into(), json!(open));
            m.insert(
                "lastUpdatedAt".into(),
                json!(o.created_at.timestamp_millis()),
            );
            m.insert(
                "cancelledSize".into(),
                json!(if open { "0" } else { o.amount.as_str() }),
            );
            m.insert("cancelledFunds".into(), json!("0"));
            m.insert(
                "remainSize".into(),
                json!(if open { o.amount.as_str() } else { "0" }),
            );
            m.insert("remainFunds".into(), json!("0"));
        }
        v
    }

    fn tags(req: &TrapRequest) -> Value {
        Self::partner(req).map_or(Value::Null, |p| Value::String(format!("partner:{p}")))
    }

    /// Balances minus what open orders hold: `(coin, total, held)`.
    async fn holdings(account: &Account<'_>) -> Vec<(&'static str, f64, f64)> {
        let mut out: Vec<(&'static str, f64, f64)> = market::balances(account.canary_id)
            .into_iter()
            .map(|(c, v)| (c, v, 0.0))
            .collect();
        let open = account.orders.open_orders(None).await.unwrap_or_default();
        for o in &open {
            let Some(m) = find_market(&o.symbol) else {
                continue;
            };
            let amount = positive(&o.amount).unwrap_or(0.0);
            let price = o.price.as_deref().and_then(positive).unwrap_or(m.price);
            let (coin, held) = if o.side == "buy" {
                (m.quote, amount * price)
            } else {
                (m.base, amount)
            };
            if let Some(e) = out.iter_mut().find(|(c, _, _)| *c == coin) {
                e.2 += held;
            }
        }
        out
    }

    async fn available(account: &Account<'_>, coin: &str) -> f64 {
        Self::holdings(account)
            .await
            .into_iter()
            .find(|(c, _, _)| *c == coin)
            .map_or(0.0, |(_, total, held)| (total - held).max(0.0))
    }

    async fn accounts(req: &TrapRequest, account: &Account<'_>) -> Response {
        let want_type = req.param("type");
        let want_cur = req.param("currency");
        let mut data = Vec::new();
        for (coin, total, held) in Self::holdings(account).await {
            let p = coin_precision(coin);
            for (ty, t, h) in [("trade", total, held), ("main", 0.0, 0.0)] {
                if want_type.as_deref().is_some_and(|w| w != ty)
                    || want_cur.as_deref().is_some_and(|w| w != coin)
                {
                    continue;
                }
                let id = object_id(
                    account.now - chrono::Duration::days(400),
                    &[account.canary_id.as_bytes(), coin.as_bytes(), ty.as_bytes()],
                );
                data.push(json!({
                    "id": id,
                    "currency": coin,
                    "type": ty,
                    "balance": dec(t, p),
                    "available": dec((t - h).max(0.0), p),
                    "holds": dec(h, p)
                }));
            }
        }
        ok(Value::Array(data))
    }

    /// Place an order (classic `/api/v1/orders` or HF `/api/v1/hf/orders`).
    async fn place(req: &TrapRequest, account: &Account<'_>, hf: bool) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return bad_request("Invalid request body");
        };
        let Some(symbol) = field(&body, "symbol") else {
            return bad_request("symbol must not be blank");
        };
        let Some(m) = find_market(&symbol) else {
            return bad_request("Unsupported trading pair.");
        };
        let side = field(&body, "side").unwrap_or_default();
        if side != "buy" && side != "sell" {
            return bad_request("side must be buy or sell");
        }
        let order_type = field(&body, "type").unwrap_or_else(|| "limit".into());
        if order_type != "limit" && order_type != "market" {
            return bad_request("type must be limit or market");
        }
        let size = field(&body, "size");
        let funds = field(&body, "funds");
        let price = field(&body, "price");
        let (amount, price_val) = if order_type == "limit" {
            let (Some(size), Some(price)) = (size, price) else {
                return bad_request("Parameter Error");
            };
            let (Some(a), Some(p)) = (positive(&size), positive(&price)) else {
                return bad_request("Parameter Error");
            };
            ((size, a), Some((price, p)))
        } else {
            match (size, funds) {
                (Some(s), _) => match positive(&s) {
                    Some(a) => ((s, a), None),
                    None => return bad_request("Parameter Error"),
                },
                (None, Some(f)) => match positive(&f) {
                    // A market buy by funds: its size in base at the current price.
                    Some(q) => ((f, q / m.price), None),
                    None => return bad_request("Parameter Error"),
                },
                _ => return bad_request("Parameter Error"),
            }
        };
        let min = 10f64.powi(-(m.qty_decimals as i32));
        if amount.1 + 1e-12 < min && price_val.is_some() {
            return bad_request("Order size below the minimum requirement.");
        }
        // A funded account still cannot spend more than it has.
        let px = price_val.as_ref().map_or(m.price, |p| p.1);
        let (coin, need) = if side == "buy" {
            (m.quote, amount.1 * px)
        } else {
            (m.base, amount.1)
        };
        if need > Self::available(account, coin).await + 1e-9 {
            return fail(StatusCode::OK, "200004", "Balance insufficient!");
        }
        let client_oid = field(&body, "clientOid");
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let order_id = object_id(
            account.now,
            &[
                account.canary_id.as_bytes(),
                &nanos.to_le_bytes(),
                &req.body,
            ],
        );
        let order = Order {
            order_id,
            client_order_id: client_oid.clone(),
            symbol,
            side,
            order_type,
            price: price_val.map(|p| p.0),
            amount: amount.0,
            status: "open".into(),
            created_at: account.now,
        };
        match account.orders.place(order).await {
            Ok(o) if hf => ok(json!({"orderId": o.order_id, "clientOid": o.client_order_id})),
            Ok(o) => ok(json!({"orderId": o.order_id})),
            Err(_) => Kucoin.reject(req, Rejection::Unavailable),
        }
    }

    async fn cancel(req: &TrapRequest, account: &Account<'_>, id: &str, style: Cancel) -> Response {
        match account.orders.cancel(id).await {
            Ok(Some(o)) => match style {
                Cancel::Classic => ok(json!({"cancelledOrderIds": [o.order_id]})),
                Cancel::ClientOid => ok(json!({
                    "cancelledOrderId": o.order_id,
                    "clientOid": o.client_order_id
                })),
                Cancel::Hf => ok(json!({"orderId": o.order_id})),
                Cancel::HfClientOid => ok(json!({"clientOid": o.client_order_id})),
            },
            Ok(None) => bad_request("order_not_exist_or_not_allow_to_cancel"),
            Err(_) => Kucoin.reject(req, Rejection::Unavailable),
        }
    }

    async fn get_order(req: &TrapRequest, account: &Account<'_>, id: &str, hf: bool) -> Response {
        match account.orders.get(id).await {
            Ok(Some(o)) if hf => ok(Self::hf_order_json(&o, &Self::tags(req))),
            Ok(Some(o)) => ok(Self::order_json(&o, &Self::tags(req))),
            Ok(None) => fail(StatusCode::NOT_FOUND, "400100", "order not exist."),
            Err(_) => Kucoin.reject(req, Rejection::Unavailable),
        }
    }

    async fn list_orders(req: &TrapRequest, account: &Account<'_>) -> Response {
        let symbol = req.param("symbol");
        let status = req.param("status");
        let side = req.param("side");
        let mut orders = if status.as_deref().is_none_or(|s| s == "active") {
            match account.orders.open_orders(symbol.as_deref()).await {
                Ok(o) => o,
                Err(_) => return Kucoin.reject(req, Rejection::Unavailable),
            }
        } else {
            Vec::new()
        };
        if let Some(s) = side {
            orders.retain(|o| o.side == s);
        }
        orders.sort_by_key(|o| std::cmp::Reverse(o.created_at));
        let page_size = req
            .param("pageSize")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(50)
            .clamp(10, 500);
        let tags = Self::tags(req);
        let total = orders.len();
        let items: Vec<Value> = orders
            .iter()
            .take(page_size)
            .map(|o| Self::order_json(o, &tags))
            .collect();
        ok(json!({
            "currentPage": 1,
            "pageSize": page_size,
            "totalNum": total,
            "totalPage": total.div_ceil(page_size),
            "items": items
        }))
    }

    fn deposit_entry(account: &Account<'_>, coin: &str, network: &str, v3: bool) -> Value {
        let (id, name) = chain(network);
        let address = market::deposit_address(account.canary_id, coin, network);
        let memo = if network == "XRP" {
            format!(
                "{}",
                100_000_000 + u64::from(account.canary_id.as_bytes()[0]) * 997
            )
        } else {
            String::new()
        };
        if v3 {
            json!({
                "address": address,
                "memo": memo,
                "chainId": id,
                "to": "MAIN",
                "expirationDate": 0,
                "currency": coin,
                "contractAddress": "",
                "chainName": name
            })
        } else {
            json!({
                "address": address,
                "memo": memo,
                "chain": name,
                "chainId": id,
                "to": "MAIN",
                "currency": coin,
                "contractAddress": "",
                "expirationDate": 0
            })
        }
    }

    fn deposit_address(req: &TrapRequest, account: &Account<'_>, version: u8) -> Response {
        let p = Self::params(req);
        let Some(coin) = p
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_uppercase)
        else {
            return bad_request("currency must not be blank");
        };
        let Some((_, _, nets)) = CURRENCIES.iter().find(|(c, _, _)| *c == coin) else {
            return bad_request("Currency not exist");
        };
        let chain_param = p.get("chain").and_then(Value::as_str);
        match version {
            // v2 and v3 list one address per chain (v3 can filter by chain).
            2 | 3 => {
                let list: Vec<Value> = nets
                    .iter()
                    .filter(|n| {
                        chain_param.is_none_or(|c| network_for(&coin, Some(c)) == Some(**n))
                    })
                    .map(|n| Self::deposit_entry(account, &coin, n, version == 3))
                    .collect();
                ok(Value::Array(list))
            }
            _ => match network_for(&coin, chain_param) {
                Some(n) => ok(Self::deposit_entry(account, &coin, n, false)),
                None => fail(StatusCode::BAD_REQUEST, "900014", "Invalid chainId"),
            },
        }
    }

    async fn withdraw(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return bad_request("Invalid request body");
        };
        let Some(coin) = field(&body, "currency").map(|c| c.to_uppercase()) else {
            return bad_request("currency must not be blank");
        };
        if !CURRENCIES.iter().any(|(c, _, _)| *c == coin) {
            return bad_request("Currency not exist");
        }
        if field(&body, "toAddress")
            .or_else(|| field(&body, "address"))
            .is_none()
        {
            return bad_request("toAddress must not be blank");
        }
        let Some(amount) = field(&body, "amount").as_deref().and_then(positive) else {
            return bad_request("amount must be positive");
        };
        let chain_param = field(&body, "chain");
        if network_for(&coin, chain_param.as_deref()).is_none() {
            return fail(StatusCode::BAD_REQUEST, "900014", "Invalid chainId");
        }
        let total: f64 = market::balances(account.canary_id)
            .into_iter()
            .filter(|(c, _)| *c == coin)
            .map(|(_, v)| v)
            .sum();
        if amount > total + 1e-9 {
            return bad_request("account.available.amount");
        }
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let id = object_id(
            account.now,
            &[
                account.canary_id.as_bytes(),
                b"withdraw",
                &nanos.to_le_bytes(),
            ],
        );
        ok(json!({"withdrawalId": id}))
    }

    fn withdraw_quotas(req: &TrapRequest, account: &Account<'_>) -> Response {
        let coin = req.param("currency").unwrap_or_default().to_uppercase();
        let Some(network) = network_for(&coin, req.param("chain").as_deref()) else {
            return bad_request("Currency not exist");
        };
        let p = coin_precision(&coin);
        let usd = usd_price(&coin);
        let total: f64 = market::balances(account.canary_id)
            .into_iter()
            .filter(|(c, _)| *c == coin)
            .map(|(_, v)| v)
            .sum();
        let limit_btc = 500.0;
        ok(json!({
            "currency": coin,
            "limitBTCAmount": dec(limit_btc, 8),
            "usedBTCAmount": "0",
            "quotaCurrency": "USDT",
            "limitQuotaCurrencyAmount": dec(limit_btc * 97_250.5, 2),
            "usedQuotaCurrencyAmount": "0",
            "remainAmount": dec(limit_btc * 97_250.5 / usd, p),
            "availableAmount": dec(total, p),
            "withdrawMinFee": dec(1.0 / usd, p),
            "innerWithdrawMinFee": "0",
            "withdrawMinSize": dec(10.0 / usd, p),
            "isWithdrawEnabled": true,
            "precision": p,
            "chain": chain(network).1,
            "reason": null,
            "lockedAmount": "0"
        }))
    }

    fn api_key_info(account: &Account<'_>) -> Response {
        let created = account.now - chrono::Duration::days(213);
        ok(json!({
            "remark": "trading bot",
            "apiKey": account.credentials.api_key,
            "apiVersion": 3,
            "permission": "General,Spot,Margin,Futures,Earn,Withdrawal",
            "ipWhitelist": "",
            "isMaster": true,
            "createdAt": created.timestamp_millis(),
            "uid": 100_000_000 + u64::from(account.canary_id.as_bytes()[1]) * 65_537,
        }))
    }

    fn transfer(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return bad_request("Invalid request body");
        };
        if field(&body, "amount")
            .as_deref()
            .and_then(positive)
            .is_none()
        {
            return bad_request("amount must be positive");
        }
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let id = object_id(
            account.now,
            &[
                account.canary_id.as_bytes(),
                b"transfer",
                &nanos.to_le_bytes(),
            ],
        );
        ok(json!({"orderId": id}))
    }
}

#[derive(Debug, Clone, Copy)]
enum Cancel {
    Classic,
    ClientOid,
    Hf,
    HfClientOid,
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

#[async_trait::async_trait]
impl Emulator for Kucoin {
    fn exchange(&self) -> Exchange {
        Exchange::Kucoin
    }

    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        req.header("kc-api-key")
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        if req.method != Method::GET {
            return None;
        }
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let seg = segments(&req.path);
        let market_param = || req.param("symbol").and_then(|s| find_market(&s));
        let resp = match seg.as_slice() {
            ["api", "v1", "timestamp"] => json(
                StatusCode::OK,
                json!({"code": "200000", "msg": "success", "data": now_ms}),
            ),
            ["api", "v1", "status"] => ok(json!({"status": "open", "msg": ""})),
            ["api", "v1" | "v3", "currencies"] => ok(Value::Array(
                CURRENCIES
                    .iter()
                    .map(|(c, n, nets)| Self::currency_json(c, n, nets))
                    .collect(),
            )),
            ["api", "v1" | "v3", "currencies", code] => {
                match CURRENCIES
                    .iter()
                    .find(|(c, _, _)| c.eq_ignore_ascii_case(code))
                {
                    Some((c, n, nets)) => ok(Self::currency_json(c, n, nets)),
                    None => ok(Value::Null),
                }
            }
            ["api", "v1" | "v2", "symbols"] => {
                let want = req.param("market");
                ok(Value::Array(
                    MARKETS
                        .iter()
                        .map(Self::symbol_json)
                        .filter(|s| {
                            want.as_deref()
                                .is_none_or(|w| s.get("market").and_then(Value::as_str) == Some(w))
                        })
                        .collect(),
                ))
            }
            ["api", "v2", "symbols", sym] => match find_market(sym) {
                Some(m) => ok(Self::symbol_json(m)),
                None => ok(Value::Null),
            },
            ["api", "v1", "markets"] => ok(json!(["USDS", "BTC", "ALTS"])),
            ["api", "v1", "market", "allTickers"] => ok(json!({
                "time": now_ms,
                "ticker": MARKETS.iter().map(Self::ticker_json).collect::<Vec<_>>()
            })),
            ["api", "v1", "market", "orderbook", "level1"] => {
                ok(market_param().map_or(Value::Null, |m| Self::level1(m, now_ms)))
            }
            ["api", "v1", "market", "orderbook", "level2_20"] => {
                ok(market_param().map_or(Value::Null, |m| Self::orderbook(m, 20, now_ms)))
            }
            ["api", "v1", "market", "orderbook", "level2_100"] => {
                ok(market_param().map_or(Value::Null, |m| Self::orderbook(m, 100, now_ms)))
            }
            ["api", "v1", "market", "stats"] => {
                ok(market_param().map_or(Value::Null, |m| Self::stats(m, now_ms)))
            }
            ["api", "v1", "prices"] => {
                let mut o = Map::new();
                for (c, _, _) in CURRENCIES {
                    o.insert((*c).into(), Value::String(dec(usd_price(c), 8)));
                }
                ok(Value::Object(o))
            }
            // Futures (ccxt's load_markets asks; a spot-only account sees none listed).
            ["api", "v1", "contracts", "active"] => ok(json!([])),
            _ => return None,
        };
        Some(resp)
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        let (Some(sign), Some(ts), Some(pass)) = (
            req.header("kc-api-sign"),
            req.header("kc-api-timestamp"),
            req.header("kc-api-passphrase"),
        ) else {
            return SigCheck::Missing;
        };
        if sign.is_empty() || ts.is_empty() || pass.is_empty() {
            return SigCheck::Missing;
        }
        let Ok(ts_ms) = ts.trim().parse::<i64>() else {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        };
        // The window is measured at the request's arrival, as the exchange measures it.
        if req.received_at.timestamp_millis().abs_diff(ts_ms) > WINDOW_MS.unsigned_abs() {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        }
        let Some(expected_pass) = creds.passphrase.as_deref() else {
            return SigCheck::Invalid(Rejection::BadPassphrase);
        };
        // Key version 2 and 3 send base64(HMAC-SHA256(secret, passphrase)); version 1
        // (or no version header) the passphrase itself.
        let signed_pass = match req.header("kc-api-key-version").map(str::trim) {
            None | Some("1") | Some("") => false,
            Some(_) => true,
        };
        let pass_ok = if signed_pass {
            ct_eq(
                pass.as_bytes(),
                hmac_b64(&creds.api_secret, expected_pass.as_bytes()).as_bytes(),
            )
        } else {
            ct_eq(pass.as_bytes(), expected_pass.as_bytes())
        };
        if !pass_ok {
            return SigCheck::Invalid(Rejection::BadPassphrase);
        }
        if Self::signature_matches(req, &creds.api_secret, ts, sign) {
            SigCheck::Valid
        } else {
            SigCheck::Invalid(Rejection::BadSignature)
        }
    }

    fn reject(&self, _req: &TrapRequest, why: Rejection) -> Response {
        let (status, body) = match why {
            Rejection::MissingKey | Rejection::MissingSignature => {
                (StatusCode::BAD_REQUEST, MISSING_HEADER)
            }
            Rejection::StaleTimestamp => (StatusCode::BAD_REQUEST, BAD_TIMESTAMP),
            Rejection::MalformedKey | Rejection::UnknownKey => {
                (StatusCode::UNAUTHORIZED, UNKNOWN_KEY)
            }
            Rejection::BadPassphrase => (StatusCode::UNAUTHORIZED, BAD_PASSPHRASE),
            Rejection::BadSignature => (StatusCode::UNAUTHORIZED, BAD_SIGN),
            Rejection::NotFound => (StatusCode::NOT_FOUND, NOT_FOUND),
            Rejection::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
        };
        raw(status, CT, body)
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let p = Self::params(req);
        let seg = segments(&req.path);
        let rest: &[&str] = seg.get(2..).unwrap_or(&[]);
        let get = |k: &str| p.get(k).cloned();
        let mut ev = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                ev.insert(k.into(), v);
            }
        };
        let m = &req.method;
        let class = match rest {
            ["orders" | "order" | "stop-order" | "oco", ..]
            | ["hf", "orders" | "margin", ..]
            | ["margin", "order", ..]
                if *m == Method::POST && !rest.contains(&"cancel") =>
            {
                put("symbol", get("symbol"));
                put("side", get("side"));
                put("type", get("type").or(Some(json!("limit"))));
                put("quantity", get("size"));
                put("funds", get("funds"));
                put("price", get("price"));
                put("client_order_id", get("clientOid"));
                ActionClass::Trade
            }
            [..] if *m == Method::DELETE && rest.iter().any(|s| s.contains("order")) => {
                let id = match rest {
                    ["orders" | "stop-order", id] | ["hf", "orders", id] => Some(json!(id)),
                    _ => None,
                };
                put("order_id", id);
                if let ["order" | "hf", "client-order", cid]
                | ["hf", "orders", "client-order", cid] = rest
                {
                    put("client_order_id", Some(json!(cid)));
                }
                put("symbol", get("symbol"));
                ActionClass::Cancel
            }
            ["deposit-addresses"] | ["deposit-address", "create"] => {
                put("coin", get("currency"));
                put("network", get("chain"));
                ActionClass::Address
            }
            ["withdrawals"] if *m == Method::POST => {
                put("coin", get("currency"));
                put("network", get("chain"));
                put("address", get("toAddress").or_else(|| get("address")));
                put("memo", get("memo").filter(|v| v != &json!("")));
                put(
                    "amount",
                    get("amount").map(|a| match a {
                        Value::Number(n) => Value::String(n.to_string()),
                        other => other,
                    }),
                );
                ActionClass::Withdraw
            }
            ["accounts", "inner-transfer" | "universal-transfer" | "sub-transfer"]
            | ["transfer-out"]
            | ["accounts", "transfer"] => {
                put("coin", get("currency"));
                put("amount", get("amount"));
                put("from", get("from").or_else(|| get("fromAccountType")));
                put("to", get("to").or_else(|| get("toAccountType")));
                ActionClass::Transfer
            }
            ["user", "api-key"] => ActionClass::Permissions,
            _ => {
                put("symbol", get("symbol"));
                put("coin", get("currency"));
                ActionClass::Read
            }
        };
        let mut params = ev;
        params.insert(
            "endpoint".into(),
            Value::String(format!("{} {}", req.method, req.path)),
        );
        if let Some(partner) = Self::partner(req) {
            params.insert("partner".into(), Value::String(partner));
        }
        Action {
            class,
            params: Value::Object(params),
        }
    }

    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response {
        let seg = segments(&req.path);
        let m = req.method.clone();
        let get = m == Method::GET;
        let post = m == Method::POST;
        let delete = m == Method::DELETE;
        match seg.as_slice() {
            // load_markets (signed part) and account type checks.
            ["api", "ua", "v1", "account", "mode"] if get => {
                ok(json!({"selfAccountMode": "CLASSIC"}))
            }
            ["api", "v1", "hf", "accounts", "opened"] if get => ok(json!(false)),
            ["api", "v3", "margin", "symbols"] if get => ok(json!({
                "timestamp": account.now.timestamp_millis(),
                "items": MARKETS
                    .iter()
                    .filter(|m| m.quote == "USDT")
                    .map(Self::symbol_json)
                    .collect::<Vec<_>>()
            })),
            ["api", "v1", "isolated", "symbols"] if get => ok(json!(MARKETS
                .iter()
                .filter(|m| m.quote == "USDT" && m.price > 1.0)
                .map(|m| json!({
                    "symbol": symbol_of(m),
                    "symbolName": symbol_of(m),
                    "baseCurrency": m.base,
                    "quoteCurrency": m.quote,
                    "maxLeverage": 10,
                    "flDebtRatio": "0.97",
                    "tradeEnable": true,
                    "autoRenewMaxDebtRatio": "0.96",
                    "baseBorrowEnable": true,
                    "quoteBorrowEnable": true,
                    "baseTransferInEnable": true,
                    "quoteTransferInEnable": true,
                    "baseBorrowCoefficient": "1",
                    "quoteBorrowCoefficient": "1"
                }))
                .collect::<Vec<_>>())),
            ["api", "v2", "user-info"] if get => ok(json!({
                "level": 0,
                "subQuantity": 0,
                "maxDefaultSubQuantity": 5,
                "maxSubQuantity": 5,
                "spotSubQuantity": 0,
                "marginSubQuantity": 0,
                "futuresSubQuantity": 0,
                "maxSpotSubQuantity": 0,
                "maxMarginSubQuantity": 0,
                "maxFuturesSubQuantity": 0
            })),
            ["api", "v1", "user", "api-key"] if get => Self::api_key_info(account),
            // Balances.
            ["api", "v1", "accounts"] if get => Self::accounts(req, account).await,
            // Orders.
            ["api", "v1", "orders"] if post => Self::place(req, account, false).await,
            ["api", "v1", "hf", "orders"] | ["api", "v1", "hf", "orders", "sync"] if post => {
                Self::place(req, account, true).await
            }
            ["api", "v1", "orders", "test"] | ["api", "v1", "hf", "orders", "test"] if post => ok(
                json!({"orderId": object_id(account.now, &[account.canary_id.as_bytes(), &req.body])}),
            ),
            ["api", "v1", "orders"] if get => Self::list_orders(req, account).await,
            ["api", "v1", "hf", "orders", "active"] if get => {
                let symbol = req.param("symbol");
                match account.orders.open_orders(symbol.as_deref()).await {
                    Ok(o) => {
                        let tags = Self::tags(req);
                        ok(Value::Array(
                            o.iter().map(|x| Self::hf_order_json(x, &tags)).collect(),
                        ))
                    }
                    Err(_) => self.reject(req, Rejection::Unavailable),
                }
            }
            ["api", "v1", "hf", "orders", "done"] if get => ok(json!({"lastId": 0, "items": []})),
            ["api", "v1", "orders", id] if get => Self::get_order(req, account, id, false).await,
            ["api", "v1", "order", "client-order", cid] if get => {
                Self::get_order(req, account, cid, false).await
            }
            ["api", "v1", "hf", "orders", id]
            | ["api", "v1", "hf", "orders", "client-order", id]
                if get =>
            {
                Self::get_order(req, account, id, true).await
            }
            ["api", "v1", "orders", id] if delete => {
                Self::cancel(req, account, id, Cancel::Classic).await
            }
            ["api", "v1", "order", "client-order", cid] if delete => {
                Self::cancel(req, account, cid, Cancel::ClientOid).await
            }
            ["api", "v1", "hf", "orders", "client-order", cid]
            | ["api", "v1", "hf", "orders", "sync", "client-order", cid]
                if delete =>
            {
                Self::cancel(req, account, cid, Cancel::HfClientOid).await
            }
            ["api", "v1", "hf", "orders", id] | ["api", "v1", "hf", "orders", "sync", id]
                if delete =>
            {
                Self::cancel(req, account, id, Cancel::Hf).await
            }
            ["api", "v1", "orders"] | ["api", "v1", "hf", "orders"] if delete => {
                // Cancel all (optionally of one symbol).
                let symbol = req.param("symbol");
                let open = match account.orders.open_orders(symbol.as_deref()).await {
                    Ok(o) => o,
                    Err(_) => return self.reject(req, Rejection::Unavailable),
                };
                let mut ids = Vec::new();
                for o in open {
                    if let Ok(Some(c)) = account.orders.cancel(&o.order_id).await {
                        ids.push(c.order_id);
                    }
                }
                if seg.get(2) == Some(&"hf") {
                    ok(json!("success"))
                } else {
                    ok(json!({"cancelledOrderIds": ids}))
                }
            }
            ["api", "v1", "stop-order"] if get => ok(json!({
                "currentPage": 1, "pageSize": 50, "totalNum": 0, "totalPage": 0, "items": []
            })),
            // Trades.
            ["api", "v1", "fills"] | ["api", "v1", "limit", "fills"] if get => ok(json!({
                "currentPage": 1, "pageSize": 50, "totalNum": 0, "totalPage": 0, "items": []
            })),
            ["api", "v1", "hf", "fills"] if get => ok(json!({"items": [], "lastId": 0})),
            // Deposit addresses.
            ["api", "v1", "deposit-addresses"] if get || post => {
                Self::deposit_address(req, account, 1)
            }
            ["api", "v2", "deposit-addresses"] if get => Self::deposit_address(req, account, 2),
            ["api", "v3", "deposit-addresses"] if get => Self::deposit_address(req, account, 3),
            ["api", "v3", "deposit-address", "create"] if post => {
                Self::deposit_address(req, account, 1)
            }
            ["api", "v1", "deposits"] | ["api", "v1", "withdrawals"] if get => ok(json!({
                "currentPage": 1, "pageSize": 50, "totalNum": 0, "totalPage": 0, "items": []
            })),
            ["api", "v1", "withdrawals", "quotas"] if get => Self::withdraw_quotas(req, account),
            // Withdrawals and transfers.
            ["api", "v1" | "v3", "withdrawals"] if post => Self::withdraw(req, account).await,
            ["api", "v2" | "v1", "accounts", "inner-transfer"]
            | ["api", "v3", "accounts", "universal-transfer"]
                if post =>
            {
                Self::transfer(req, account)
            }
            _ => self.reject(req, Rejection::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http_body_util::BodyExt;
    use uuid::Uuid;

    use super::*;
    use crate::emulator::MemoryOrderBook;
    use crate::testkit::request;

    fn creds() -> Credentials {
        keytrap_core::MasterKey::from_bytes([7; 32])
            .keys()
            .credentials(Exchange::Kucoin, Uuid::from_u128(42))
    }

    /// Signs like ccxt's `kucoin.sign()` (key version 2).
    fn signed(c: &Credentials, ts: i64, method: &str, target: &str, body: &str) -> TrapRequest {
        let ts = ts.to_string();
        let sig = hmac_b64(
            &c.api_secret,
            format!("{ts}{method}{target}{body}").as_bytes(),
        );
        let pass = hmac_b64(&c.api_secret, c.passphrase.as_deref().unwrap().as_bytes());
        request(
            Exchange::Kucoin,
            method,
            target,
            &[
                ("KC-API-KEY", &c.api_key),
                ("KC-API-SIGN", &sig),
                ("KC-API-TIMESTAMP", &ts),
                ("KC-API-PASSPHRASE", &pass),
                ("KC-API-KEY-VERSION", "2"),
                ("KC-API-PARTNER", "ccxt"),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    fn now() -> i64 {
        Utc::now().timestamp_millis()
    }

    async fn body_of(r: Response) -> (StatusCode, String, Value) {
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, String::from_utf8_lossy(&bytes).into_owned(), v)
    }

    #[test]
    fn documented_test_vector() {
        let sig = hmac_b64(
            "f03a5284-5c39-4aaa-9b20-dea10bdcf8e3",
            br#"1547015186532POST/api/v1/deposit-addresses{"currency":"BTC"}"#,
        );
        assert_eq!(sig, "7QP/oM0ykidMdrfNEUmng8eZjg/ZvPafjIqmxiVfYu4=");
    }

    /// Headers produced offline by ccxt 4.5.90 (`kucoin.sign()` with `nonce` pinned to
    /// 1795290967216, key `5c2db93503aa674c74a31734`, secret
    /// `f03a5284-5c39-4aaa-9b20-dea10bdcf8e3`, password `Passw0rd!x`), for
    /// `GET /api/v1/accounts?type=trade` and a limit-order POST. The timestamp check is
    /// relaxed here by checking the signature part directly.
    #[test]
    fn ccxt_generated_vectors_verify() {
        let secret = "f03a5284-5c39-4aaa-9b20-dea10bdcf8e3";
        assert_eq!(
            hmac_b64(secret, b"Passw0rd!x"),
            "uZxCVLAbotzAT/gYeC89dbeRhRaFEMqUqB+wxipiZMk="
        );
        for (method, target, body, sig) in CCXT_VECTORS {
            let req = request(Exchange::Kucoin, method, target, &[], body.as_bytes());
            assert!(
                Kucoin::signature_matches(&req, secret, "1795290967216", sig),
                "{method} {target}"
            );
            assert!(!Kucoin::signature_matches(
                &req,
                secret,
                "1795290967217",
                sig
            ));
        }
    }

    // Output of e2e/kucoin_vectors.py (ccxt 4.5.90 `kucoin.sign()`, offline).
    const CCXT_VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "GET",
            "/api/v1/accounts?type=trade",
            r#""#,
            "Wp+eqObBY6ua+M8xULHwktfr3NrwhMNjzECVb3FII3k=",
        ),
        (
            "GET",
            "/api/v1/orders?status=active&tradeType=TRADE",
            r#""#,
            "vaIQBKpDnlmoNoBqwygNUGALvbLUS2fTbQDh7/5HB9Y=",
        ),
        (
            "POST",
            "/api/v1/orders",
            r#"{"clientOid":"d602d73f-5424-4751-bef0-8debce8f0a82","side":"buy","symbol":"BTC-USDT","type":"limit","size":"0.001","price":"50000"}"#,
            "0j9ObnqDE7M3fm9nqdV5hID4nvSK6mpqgd+ZCnhBEqc=",
        ),
        (
            "DELETE",
            "/api/v1/orders/63c97e47d686c5000159a656",
            r#""#,
            "TMkfmxhCutKvN5k0fe2BrmCie1O0vwZH+4dXGkapdIQ=",
        ),
        (
            "POST",
            "/api/v3/withdrawals",
            r#"{"currency":"USDT","toAddress":"TXyz","withdrawType":"ADDRESS","chain":"trx","amount":5000.0}"#,
            "3IuAexaW9zT4zB2J6leq++86AifouvrtYAkE2kvW2G8=",
        ),
        (
            "GET",
            "/api/ua/v1/account/mode",
            r#""#,
            "f34WHTSfUhgzrDD9JgK67yyN/F8xyewAZZ6VWZL5R+s=",
        ),
        (
            "GET",
            "/api/v1/deposit-addresses?currency=USDT&chain=trx",
            r#""#,
            "AeRUcXMbTHZyfMPuX/12yzTVnTqTyoVx4Xz5nMLHivU=",
        ),
    ];

    #[test]
    fn signature_outcomes() {
        let c = creds();
        let k = Kucoin;
        let r = signed(&c, now(), "GET", "/api/v1/accounts?type=trade", "");
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);

        let body = r#"{"clientOid":"x","side":"buy","symbol":"BTC-USDT","type":"limit","size":"0.001","price":"50000"}"#;
        let r = signed(&c, now(), "POST", "/api/v1/orders", body);
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);

        let mut wrong = c.clone();
        wrong.api_secret = "00000000-0000-4000-8000-000000000000".into();
        let r = signed(&wrong, now(), "GET", "/api/v1/accounts", "");
        // Passphrase is HMAC'd with the secret too: a wrong secret fails there first.
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadPassphrase)
        );
        // Right passphrase, wrong signing secret: BadSignature.
        let mut r = signed(&c, now(), "GET", "/api/v1/accounts", "");
        let bad = hmac_b64(&wrong.api_secret, b"whatever");
        r.headers.insert("kc-api-sign", bad.parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Tampered query.
        let mut r = signed(&c, now(), "GET", "/api/v1/accounts?type=trade", "");
        r.query = Some("type=main".into());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );

        let r = signed(&c, now() - 6_000, "GET", "/api/v1/accounts", "");
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let r = signed(&c, now() + 6_000, "GET", "/api/v1/accounts", "");
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );

        let mut other = c.clone();
        other.passphrase = Some("NotThePass1".into());
        let r = signed(&other, now(), "GET", "/api/v1/accounts", "");
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadPassphrase)
        );

        // Version 1: plain passphrase.
        let mut r = signed(&c, now(), "GET", "/api/v1/accounts", "");
        r.headers.insert("kc-api-key-version", "1".parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadPassphrase)
        );
        r.headers.insert(
            "kc-api-passphrase",
            c.passphrase.as_deref().unwrap().parse().unwrap(),
        );
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);

        let r = request(
            Exchange::Kucoin,
            "GET",
            "/api/v1/accounts",
            &[("KC-API-KEY", &c.api_key)],
            b"",
        );
        assert_eq!(k.api_key(&r).as_deref(), Some(c.api_key.as_str()));
        assert_eq!(k.check_signature(&r, &c), SigCheck::Missing);

        let mut r = signed(&c, now(), "GET", "/api/v1/accounts", "");
        r.headers
            .insert("kc-api-timestamp", "yesterday".parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let mut r = signed(&c, now(), "GET", "/api/v1/accounts", "");
        r.headers.insert("kc-api-sign", "%%%".parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );
    }

    #[test]
    fn raw_and_decoded_query_both_verify() {
        let c = creds();
        // ccxt signs the raw, unencoded query; an HTTP library may then encode it.
        let ts = now();
        let mut r = signed(
            &c,
            ts,
            "GET",
            "/api/v1/orders?status=active&symbol=BTC-USDT&x=a b",
            "",
        );
        r.query = Some("status=active&symbol=BTC-USDT&x=a%20b".into());
        assert_eq!(Kucoin.check_signature(&r, &c), SigCheck::Valid);
        // A client that signed the encoded form, sent as is.
        let r = signed(
            &c,
            ts,
            "GET",
            "/api/v1/orders?currency=USDT&chain=a%2Cb",
            "",
        );
        assert_eq!(Kucoin.check_signature(&r, &c), SigCheck::Valid);
    }

    #[tokio::test]
    async fn reject_bodies_are_exact() {
        let r = request(Exchange::Kucoin, "GET", "/api/v1/accounts", &[], b"");
        let cases = [
            (Rejection::MissingKey, 400, MISSING_HEADER),
            (Rejection::MissingSignature, 400, MISSING_HEADER),
            (
                Rejection::StaleTimestamp,
                400,
                r#"{"code":"400002","msg":"Invalid KC-API-TIMESTAMP"}"#,
            ),
            (
                Rejection::UnknownKey,
                401,
                r#"{"code":"400003","msg":"KC-API-KEY not exists"}"#,
            ),
            (
                Rejection::MalformedKey,
                401,
                r#"{"code":"400003","msg":"KC-API-KEY not exists"}"#,
            ),
            (
                Rejection::BadPassphrase,
                401,
                r#"{"code":"400004","msg":"Invalid KC-API-PASSPHRASE"}"#,
            ),
            (
                Rejection::BadSignature,
                401,
                r#"{"code":"400005","msg":"Invalid KC-API-SIGN"}"#,
            ),
            (
                Rejection::NotFound,
                404,
                r#"{"code":"404","msg":"Not Found","retry":false,"success":false}"#,
            ),
            (Rejection::Unavailable, 503, UNAVAILABLE),
        ];
        assert_eq!(
            MISSING_HEADER,
            r#"{"code":"400001","msg":"Please check the header of your request for KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE"}"#
        );
        for (why, status, body) in cases {
            let resp = Kucoin.reject(&r, why);
            assert_eq!(
                resp.headers().get("content-type").unwrap(),
                "application/json"
            );
            let (s, text, _) = body_of(resp).await;
            assert_eq!(s.as_u16(), status, "{why:?}");
            assert_eq!(text, body, "{why:?}");
        }
    }

    #[test]
    fn classify_order_and_withdrawal() {
        let c = creds();
        let body = r#"{"clientOid":"9faf461a","side":"buy","symbol":"PEPE-USDT","type":"limit","size":"1000000","price":"0.00002"}"#;
        let a = Kucoin.classify(&signed(&c, now(), "POST", "/api/v1/orders", body));
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(a.params["symbol"], "PEPE-USDT");
        assert_eq!(a.params["side"], "buy");
        assert_eq!(a.params["quantity"], "1000000");
        assert_eq!(a.params["price"], "0.00002");
        assert_eq!(a.params["client_order_id"], "9faf461a");
        assert_eq!(a.params["partner"], "ccxt");

        let body = r#"{"currency":"USDT","toAddress":"TXyz","withdrawType":"ADDRESS","chain":"trx","amount":5000.0}"#;
        let a = Kucoin.classify(&signed(&c, now(), "POST", "/api/v3/withdrawals", body));
        assert_eq!(a.class, ActionClass::Withdraw);
        assert_eq!(a.params["coin"], "USDT");
        assert_eq!(a.params["address"], "TXyz");
        assert_eq!(a.params["network"], "trx");
        assert_eq!(a.params["amount"], "5000.0");
        let s = a.params.to_string();
        assert!(!s.contains(&c.api_secret) && !s.contains(c.passphrase.as_deref().unwrap()));

        let a = Kucoin.classify(&signed(
            &c,
            now(),
            "DELETE",
            "/api/v1/orders/6650a1b2c3d4e5f601234567",
            "",
        ));
        assert_eq!(a.class, ActionClass::Cancel);
        assert_eq!(a.params["order_id"], "6650a1b2c3d4e5f601234567");
        let a = Kucoin.classify(&signed(
            &c,
            now(),
            "GET",
            "/api/v1/deposit-addresses?currency=USDT&chain=trx",
            "",
        ));
        assert_eq!(a.class, ActionClass::Address);
        assert_eq!(a.params["coin"], "USDT");
        assert_eq!(a.params["network"], "trx");
        let a = Kucoin.classify(&signed(&c, now(), "GET", "/api/v1/user/api-key", ""));
        assert_eq!(a.class, ActionClass::Permissions);
        let a = Kucoin.classify(&signed(
            &c,
            now(),
            "POST",
            "/api/v2/accounts/inner-transfer",
            r#"{"currency":"USDT","amount":"10","from":"trade","to":"main"}"#,
        ));
        assert_eq!(a.class, ActionClass::Transfer);
        let a = Kucoin.classify(&signed(&c, now(), "GET", "/api/v1/accounts?type=trade", ""));
        assert_eq!(a.class, ActionClass::Read);
    }

    /// An HF order lists as KuCoin's own answer does: `stp` is null, not `""` (the
    /// official kucoin-universal-sdk rejects `""` and loses the whole open-order list).
    #[tokio::test]
    async fn hf_open_orders_have_null_stp() {
        let c = creds();
        let book = MemoryOrderBook::default();
        let account = crate::testkit::account(Exchange::Kucoin, Uuid::from_u128(43), &c, &book);
        let body = r#"{"clientOid":"c1","side":"buy","symbol":"BTC-USDT","type":"limit","price":"20000","size":"0.01"}"#;
        let placed = Kucoin
            .private(
                &signed(&c, now(), "POST", "/api/v1/hf/orders", body),
                &account,
            )
            .await;
        let (s, _, v) = body_of(placed).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let list = Kucoin
            .private(
                &signed(
                    &c,
                    now(),
                    "GET",
                    "/api/v1/hf/orders/active?symbol=BTC-USDT",
                    "",
                ),
                &account,
            )
            .await;
        let (_, _, v) = body_of(list).await;
        let orders = v["data"].as_array().expect("a list of orders");
        assert_eq!(orders.len(), 1, "{v}");
        assert!(orders[0]["stp"].is_null(), "{v}");
        assert_eq!(orders[0]["active"], true);
        // Classic orders keep KuCoin's `"stp": ""`.
        let classic = Kucoin
            .private(
                &signed(&c, now(), "GET", "/api/v1/orders?status=active", ""),
                &account,
            )
            .await;
        let (_, _, v) = body_of(classic).await;
        assert_eq!(v["data"]["items"][0]["stp"], "", "{v}");
    }

    #[tokio::test]
    async fn private_round_trip() {
        let c = creds();
        let book = MemoryOrderBook::default();
        let canary = Uuid::from_u128(42);
        let account = crate::testkit::account(Exchange::Kucoin, canary, &c, &book);
        let k = Kucoin;
        let call = |m: &str, t: &str, b: &str| signed(&c, now(), m, t, b);

        let (s, _, v) = body_of(
            k.private(&call("GET", "/api/ua/v1/account/mode", ""), &account)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["data"]["selfAccountMode"], "CLASSIC");
        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v1/hf/accounts/opened", ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"], false);

        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v1/accounts?type=trade", ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "200000");
        let accts = v["data"].as_array().unwrap();
        let usdt = accts.iter().find(|a| a["currency"] == "USDT").unwrap();
        assert_eq!(usdt["type"], "trade");
        let usdt_total: f64 = usdt["balance"].as_str().unwrap().parse().unwrap();
        assert!(usdt_total > 800.0);

        let body = r#"{"clientOid":"cid-1","side":"buy","symbol":"BTC-USDT","type":"limit","size":"0.001","price":"50000"}"#;
        let (s, _, v) = body_of(
            k.private(&call("POST", "/api/v1/orders", body), &account)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let id = v["data"]["orderId"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

        // Held funds show in the balance.
        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v1/accounts?type=trade&currency=USDT", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"][0]["holds"], "50");

        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v1/orders?status=active&tradeType=TRADE", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"]["totalNum"], 1);
        assert_eq!(v["data"]["items"][0]["id"], id.as_str());
        assert_eq!(v["data"]["items"][0]["isActive"], true);
        assert_eq!(v["data"]["items"][0]["price"], "50000");

        let (_, _, v) = body_of(
            k.private(&call("GET", &format!("/api/v1/orders/{id}"), ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"]["clientOid"], "cid-1");

        let (_, _, v) = body_of(
            k.private(
                &call("DELETE", &format!("/api/v1/orders/{id}"), ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"]["cancelledOrderIds"][0], id.as_str());
        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v1/orders?status=active", ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"]["totalNum"], 0);
        let (_, _, v) = body_of(
            k.private(&call("GET", &format!("/api/v1/orders/{id}"), ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"]["cancelExist"], true);
        let (s, _, v) = body_of(
            k.private(
                &call("DELETE", &format!("/api/v1/orders/{id}x"), ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["msg"], "order_not_exist_or_not_allow_to_cancel");

        // Too big for the balance.
        let body = r#"{"clientOid":"cid-2","side":"buy","symbol":"BTC-USDT","type":"limit","size":"100000","price":"97000"}"#;
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v1/orders", body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "200004");
        // Malformed bodies and unknown pairs get KuCoin's error shape, no panic.
        for body in [
            "not json",
            "[]",
            r#"{"symbol":"NOPE-USDT","side":"buy","size":"1","price":"1"}"#,
            r#"{"symbol":"BTC-USDT","side":"buy","size":"1e999","price":"1"}"#,
        ] {
            let (s, _, v) = body_of(
                k.private(&call("POST", "/api/v1/orders", body), &account)
                    .await,
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(v["code"], "400100");
        }

        let (_, _, v) = body_of(
            k.private(
                &call(
                    "GET",
                    "/api/v1/deposit-addresses?currency=USDT&chain=trx",
                    "",
                ),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(
            v["data"]["address"],
            market::deposit_address(canary, "USDT", "TRX")
        );
        assert_eq!(v["data"]["chainId"], "trx");
        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v3/deposit-addresses?currency=USDT", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"].as_array().unwrap().len(), 4);

        let body = r#"{"currency":"USDT","toAddress":"TXyzabc","withdrawType":"ADDRESS","chain":"trx","amount":100.0}"#;
        let (s, _, v) = body_of(
            k.private(&call("POST", "/api/v3/withdrawals", body), &account)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["withdrawalId"].as_str().unwrap().len(), 24);

        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v1/user/api-key", ""), &account)
                .await,
        )
        .await;
        assert!(v["data"]["permission"]
            .as_str()
            .unwrap()
            .contains("Withdrawal"));
        assert_eq!(v["data"]["ipWhitelist"], "");

        let (s, text, _) =
            body_of(k.private(&call("GET", "/api/v1/nope", ""), &account).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(text, NOT_FOUND);
    }

    #[tokio::test]
    async fn public_markets_have_what_ccxt_reads() {
        let r = request(Exchange::Kucoin, "GET", "/api/v2/symbols", &[], b"");
        let (s, _, v) = body_of(Kucoin.public(&r).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        let list = v["data"].as_array().unwrap();
        assert_eq!(list.len(), MARKETS.len());
        for m in list {
            for k in [
                "symbol",
                "baseIncrement",
                "priceIncrement",
                "baseMinSize",
                "baseMaxSize",
                "quoteMinSize",
                "quoteMaxSize",
            ] {
                assert!(m[k].is_string(), "{k} in {m}");
            }
            assert_eq!(m["enableTrading"], true);
            assert!(m["symbol"].as_str().unwrap().contains('-'));
        }
        let r = request(Exchange::Kucoin, "GET", "/api/v3/currencies", &[], b"");
        let (_, _, v) = body_of(Kucoin.public(&r).unwrap()).await;
        let usdt = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["currency"] == "USDT")
            .unwrap();
        assert_eq!(usdt["chains"].as_array().unwrap().len(), 4);
        assert!(usdt["chains"][0]["chainId"].is_string());
        let r = request(
            Exchange::Kucoin,
            "GET",
            "/api/v1/market/allTickers",
            &[],
            b"",
        );
        let (_, _, v) = body_of(Kucoin.public(&r).unwrap()).await;
        assert_eq!(v["data"]["ticker"].as_array().unwrap().len(), MARKETS.len());
        let r = request(Exchange::Kucoin, "GET", "/api/v1/timestamp", &[], b"");
        let (_, _, v) = body_of(Kucoin.public(&r).unwrap()).await;
        assert!(v["data"].as_i64().unwrap() > 1_700_000_000_000);
        let r = request(
            Exchange::Kucoin,
            "GET",
            "/api/v1/contracts/active",
            &[],
            b"",
        );
        assert!(Kucoin.public(&r).is_some());
        // Signed load_markets calls are not public.
        for p in [
            "/api/ua/v1/account/mode",
            "/api/v3/margin/symbols",
            "/api/v1/isolated/symbols",
            "/api/v1/hf/accounts/opened",
            "/api/v1/accounts",
        ] {
            let r = request(Exchange::Kucoin, "GET", p, &[], b"");
            assert!(Kucoin.public(&r).is_none(), "{p}");
        }
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(dec(0.1, 8), "0.1");
        assert_eq!(dec(5.0, 3), "5");
        assert_eq!(dec(97250.5, 2), "97250.5");
        assert_eq!(increment(0), "1");
        assert_eq!(increment(3), "0.001");
    }

    /// Garbage in every position gives an answer in the exchange's shape, never a panic.
    #[tokio::test]
    async fn never_panics_on_garbage() {
        let c = creds();
        let book = MemoryOrderBook::default();
        let account = crate::testkit::account(Exchange::Kucoin, Uuid::from_u128(7), &c, &book);
        let bodies: [&[u8]; 7] = [b"", b"\xff\xfe{", b"{}", b"[]", b"null", b"{\"a\":[[[[]]]]}", br#"[{"instId":"BTC-USDT","symbol":"BTC-USDT","side":"buy","sz":"1e308","size":"1e308","price":"1e308","px":"-1","amount":1e308,"amt":"NaN","currency":"USDT","ccy":"USDT"}]"#];
        let paths = [
            "/api/v1/orders",
            "/api/v1/hf/orders",
            "/api/v1/orders/%zz",
            "/api/v1/orders?status=active&pageSize=-5",
            "/api/v3/withdrawals",
            "/api/v1/deposit-addresses?currency=%ff",
            "/api/v1/accounts?type=trade&currency=",
            "/api/v2/accounts/inner-transfer",
            "/api/v1/withdrawals/quotas?currency=NOPE",
            "/",
            "//",
            "/api/v1/order/client-order/",
            "/api/v1/hf/orders/active?symbol=X",
        ];
        for method in ["GET", "POST", "DELETE", "PUT"] {
            for path in paths {
                for body in bodies {
                    let r = request(
                        Exchange::Kucoin,
                        method,
                        path,
                        &[
                            ("KC-API-KEY", "k"),
                            ("KC-API-SIGN", "x"),
                            ("KC-API-TIMESTAMP", "-9223372036854775808"),
                            ("KC-API-PASSPHRASE", "p"),
                        ],
                        body,
                    );
                    let _ = Kucoin.public(&r);
                    let _ = Kucoin.classify(&r);
                    let _ = Kucoin.check_signature(&r, &c);
                    let resp = Kucoin.private(&r, &account).await;
                    let (_, text, v) = body_of(resp).await;
                    assert!(v.is_object(), "{method} {path}: {text}");
                }
            }
        }
    }
}
