//! OKX (API v5) spot emulator.
//!
//! What it imitates: `https://www.okx.com/api/v5/...` as Python ccxt 4.5 (`ccxt/okx.py`)
//! and OKX's own SDK (python-okx) use it: `OK-ACCESS-*` header signing, the
//! `{"code":"0","msg":"","data":[...]}` envelope, the calls of `load_markets()` (the
//! signed `GET /api/v5/asset/currencies` and `GET /api/v5/public/instruments` for each
//! instrument type; only SPOT is listed), the unified trading account balance, orders
//! (`trade/batch-orders` is what ccxt's `create_order` really sends, as a JSON array;
//! `trade/order` too), cancels, pending orders, order details, fills, deposit addresses,
//! withdrawals, transfers and `account/config` (the permission answer: read, trade and
//! withdraw, no IP binding).
//!
//! Sources: OKX v5 API docs (authentication, error codes 50xxx/51xxx), `ccxt/okx.py`
//! (`sign()`, `parse_market`, `parse_currency`, `parse_trading_balance`, `parse_order`,
//! `fetch_deposit_addresses_by_network`, `withdraw`, `handle_errors`), and error bodies
//! seen in public issue threads (OKX puts `msg` before `code`; every authentication
//! error has HTTP 401).
//!
//! ccxt marks its orders with `tag`/`clOrdId` prefix `6b9ad766b55dBCDE` (its broker id):
//! `classify` records the tag as evidence.

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
use crate::kucoin::{dec, increment};
use crate::market::{self, Market, CURRENCIES, MARKETS};

type HmacSha256 = Hmac<Sha256>;

/// The OKX emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Okx;

/// OKX refuses a request whose timestamp is more than 30 s away from its clock.
const WINDOW_MS: i64 = 30_000;

/// ccxt's OKX broker id: the `tag` and `clOrdId` prefix of every order it places.
pub const CCXT_BROKER_ID: &str = "6b9ad766b55dBCDE";

const CT: &str = "application/json";

// Refusals, byte-exact (OKX sends `msg` first).
const KEY_EMPTY: &str =
    r#"{"msg":"Request header OK-ACCESS-KEY can not be empty.","code":"50103"}"#;
const PASSPHRASE_EMPTY: &str =
    r#"{"msg":"Request header OK-ACCESS-PASSPHRASE can not be empty.","code":"50104"}"#;
const SIGN_EMPTY: &str =
    r#"{"msg":"Request header OK-ACCESS-SIGN can not be empty.","code":"50106"}"#;
const TIMESTAMP_EMPTY: &str =
    r#"{"msg":"Request header OK-ACCESS-TIMESTAMP can not be empty.","code":"50107"}"#;
const MALFORMED_KEY: &str = r#"{"msg":"Invalid OK-ACCESS-KEY","code":"50111"}"#;
// What OKX answers since 2025 for a well-formed key it does not know.
const UNKNOWN_KEY: &str = r#"{"msg":"API key doesn't exist","code":"50119"}"#;
const EXPIRED: &str = r#"{"msg":"Timestamp request expired","code":"50102"}"#;
const BAD_TIMESTAMP: &str = r#"{"msg":"Invalid OK-ACCESS-TIMESTAMP","code":"50112"}"#;
const BAD_PASSPHRASE: &str =
    r#"{"msg":"Request header OK-ACCESS-PASSPHRASE incorrect.","code":"50105"}"#;
const BAD_SIGN: &str = r#"{"msg":"Invalid Sign","code":"50113"}"#;
// Unverified: OKX's gateway 404 body.
const NOT_FOUND: &str = r#"{"msg":"Not Found","code":"404"}"#;
const UNAVAILABLE: &str =
    r#"{"msg":"Service temporarily unavailable. Please try again later.","code":"50001"}"#;

fn ok(data: Value) -> Response {
    json(
        StatusCode::OK,
        json!({"code": "0", "msg": "", "data": data}),
    )
}

/// OKX's error envelope with HTTP 200 (business errors): `{"code","data":[],"msg"}`.
fn fail(code: &str, msg: &str) -> Response {
    json(
        StatusCode::OK,
        json!({"code": code, "data": [], "msg": msg}),
    )
}

fn param_empty(name: &str) -> Response {
    fail("50014", &format!("Parameter {name} can not be empty."))
}

fn param_error(name: &str) -> Response {
    fail("51000", &format!("Parameter {name} error"))
}

/// A batch answer where every item failed: `code` "1", per-item `sCode`/`sMsg`.
fn all_failed(items: Vec<Value>) -> Response {
    json(
        StatusCode::OK,
        json!({"code": "1", "data": items, "msg": "All operations failed"}),
    )
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn inst_id(m: &Market) -> String {
    format!("{}-{}", m.base, m.quote)
}

fn find_market(inst: &str) -> Option<&'static Market> {
    MARKETS.iter().find(|m| inst_id(m) == inst)
}

/// OKX's chain suffix (`USDT-TRC20`) for a network code of `market::CURRENCIES`; these
/// are the names ccxt's `options['networks']` maps back to unified codes.
fn chain_suffix(network: &str) -> &'static str {
    match network {
        "ETH" => "ERC20",
        "TRX" => "TRC20",
        "BSC" => "BSC",
        "SOL" => "Solana",
        "ARBITRUM" => "Arbitrum One",
        "BTC" => "Bitcoin",
        "XRP" => "Ripple",
        "ADA" => "Cardano",
        "DOGE" => "Dogecoin",
        "DOT" => "Polkadot",
        "LTC" => "Litecoin",
        "AVAXC" => "Avalanche C-Chain",
        "SYS" => "Syscoin",
        _ => "ERC20",
    }
}

/// The network of `coin` a client's `chain` (`USDT-TRC20`, or just `TRC20`) names.
fn network_for(coin: &str, chain: Option<&str>) -> Option<&'static str> {
    let (_, _, nets) = CURRENCIES.iter().find(|(c, _, _)| *c == coin)?;
    match chain.filter(|c| !c.is_empty()) {
        None => nets.first().copied(),
        Some(c) => {
            let suffix = c
                .split_once('-')
                .filter(|(p, _)| p.eq_ignore_ascii_case(coin))
                .map_or(c, |(_, s)| s);
            nets.iter().copied().find(|n| {
                chain_suffix(n).eq_ignore_ascii_case(suffix) || n.eq_ignore_ascii_case(suffix)
            })
        }
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

fn field(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn positive(s: &str) -> Option<f64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// An OKX-style numeric id (18-19 digits, time-ordered like a snowflake).
fn snowflake(at: DateTime<Utc>, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let low = u64::from_le_bytes([d[0], d[1], d[2], 0, 0, 0, 0, 0]) & 0x3f_ffff;
    let t = (at.timestamp_millis() - 1_500_000_000_000).max(0) as u64;
    ((t << 22) | low).to_string()
}

/// A short numeric id (withdrawals and transfers: 8-9 digits on OKX).
fn short_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let x = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (10_000_000 + x % 890_000_000).to_string()
}

impl Okx {
    fn instrument_json(m: &Market) -> Value {
        let (max_lmt, max_mkt) = if m.quote == "BTC" {
            ("100", "100")
        } else {
            ("20000000", "1000000")
        };
        json!({
            "alias": "",
            "auctionEndTime": "",
            "baseCcy": m.base,
            "category": "1",
            "ctMult": "",
            "ctType": "",
            "ctVal": "",
            "ctValCcy": "",
            "contTdSwTime": "",
            "expTime": "",
            "futureSettlement": false,
            "instFamily": "",
            "instId": inst_id(m),
            "instIdCode": MARKETS.iter().position(|x| std::ptr::eq(x, m)).unwrap_or(0) * 7 + 1_000,
            "instType": "SPOT",
            "lever": if m.quote == "USDT" && m.price > 1.0 { "10" } else { "" },
            "listTime": "1606468572000",
            "lotSz": increment(m.qty_decimals),
            "maxIcebergSz": "9999999999.0000000000000000",
            "maxLmtAmt": max_lmt,
            "maxLmtSz": "9999999999",
            "maxMktAmt": max_mkt,
            "maxMktSz": "",
            "maxPlatOILmt": "",
            "maxStopSz": "",
            "maxTriggerSz": "9999999999",
            "maxTwapSz": "9999999999",
            "minSz": increment(m.qty_decimals),
            "openType": "",
            "optType": "",
            "quoteCcy": m.quote,
            "ruleType": "normal",
            "settleCcy": "",
            "state": "live",
            "stk": "",
            "tickSz": increment(m.price_decimals),
            "tradeQuoteCcyList": [m.quote],
            "uly": ""
        })
    }

    fn currencies() -> Vec<Value> {
        let mut out = Vec::new();
        for (code, name, nets) in CURRENCIES {
            let p = coin_precision(code);
            let usd = usd_price(code);
            for n in *nets {
                let fee = dec((1.0 / usd).max(1e-8), p);
                out.push(json!({
                    "burningFeeRate": "",
                    "canDep": true,
                    "canInternal": true,
                    "canWd": true,
                    "ccy": code,
                    "chain": format!("{code}-{}", chain_suffix(n)),
                    "ctAddr": "",
                    "depEstOpenTime": "",
                    "depQuotaFixed": "",
                    "depQuoteDailyLayer2": "",
                    "fee": fee,
                    "logoLink": format!("https://static.coinall.ltd/cdn/oksupport/asset/currency/icon/{}.png", code.to_lowercase()),
                    "mainNet": chain_suffix(n).eq_ignore_ascii_case(name) || *n == *code,
                    "maxFee": fee,
                    "maxFeeForCtAddr": "",
                    "maxWd": dec(2_000_000.0 / usd, p),
                    "minDep": dec(1e-8_f64.max(0.1 / usd), p),
                    "minDepArrivalConfirm": if *n == "BTC" { "1" } else { "64" },
                    "minFee": fee,
                    "minFeeForCtAddr": "",
                    "minInternal": dec(1e-8_f64.max(0.1 / usd), p),
                    "minWd": dec(10.0 / usd, p),
                    "minWdUnlockConfirm": if *n == "BTC" { "2" } else { "96" },
                    "name": name,
                    "needTag": *n == "XRP",
                    "usedDepQuotaFixed": "",
                    "usedWdQuota": "0",
                    "wdEstOpenTime": "",
                    "wdQuota": "10000000",
                    "wdTickSz": p.to_string()
                }));
            }
        }
        out
    }

    fn ticker_json(m: &Market, now: DateTime<Utc>) -> Value {
        let d = m.price_decimals;
        let q = m.qty_decimals.max(1);
        let p = m.price;
        json!({
            "instType": "SPOT",
            "instId": inst_id(m),
            "last": dec(p, d),
            "lastSz": dec(120.0 / p, q),
            "askPx": dec(p * 1.0002, d),
            "askSz": dec(900.0 / p, q),
            "bidPx": dec(p * 0.9998, d),
            "bidSz": dec(700.0 / p, q),
            "open24h": dec(p / 1.0123, d),
            "high24h": dec(p * 1.031, d),
            "low24h": dec(p * 0.968, d),
            "volCcy24h": dec(31_000_000.0, 2),
            "vol24h": dec(31_000_000.0 / p, q),
            "ts": ms(now),
            "sodUtc0": dec(p / 1.01, d),
            "sodUtc8": dec(p / 1.008, d)
        })
    }

    fn books(m: &Market, depth: usize, now: DateTime<Utc>) -> Value {
        let d = m.price_decimals;
        let step = 10f64.powi(-(d as i32)).max(m.price * 0.0001);
        let level = |i: usize, side: f64| {
            let px = m.price * (1.0 + side * 0.0002) + side * step * i as f64;
            let qty = (150.0 + 37.0 * ((i * 7919) % 13) as f64) / m.price.max(1e-9);
            json!([
                dec(px, d),
                dec(qty, m.qty_decimals.max(1)),
                "0",
                ((i % 5) + 1).to_string()
            ])
        };
        json!([{
            "asks": (0..depth).map(|i| level(i, 1.0)).collect::<Vec<_>>(),
            "bids": (0..depth).map(|i| level(i, -1.0)).collect::<Vec<_>>(),
            "ts": ms(now)
        }])
    }

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
                // OKX signs the query only for GET; a POST with a stray query signs
                // the bare path.
                if req.method != Method::GET {
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

    fn order_json(o: &Order) -> Value {
        let quote = o.symbol.split_once('-').map_or("", |(_, q)| q);
        let base = o.symbol.split_once('-').map_or("", |(b, _)| b);
        let live = o.status == "open";
        let tag = o
            .client_order_id
            .as_deref()
            .filter(|c| c.starts_with(CCXT_BROKER_ID))
            .map_or("", |_| CCXT_BROKER_ID);
        // Split in two: one json! this wide exceeds the macro recursion limit.
        let mut v = json!({
            "accFillSz": "0",
            "algoClOrdId": "",
            "algoId": "",
            "attachAlgoClOrdId": "",
            "attachAlgoOrds": [],
            "avgPx": "",
            "cTime": ms(o.created_at),
            "cancelSource": if live { "" } else { "1" },
            "cancelSourceReason": if live { "" } else { "Order canceled by user" },
            "category": "normal",
            "ccy": "",
            "clOrdId": o.client_order_id.clone().unwrap_or_default(),
            "fee": "0",
            "feeCcy": if o.side == "buy" { base } else { quote },
            "fillPx": "",
            "fillSz": "0",
            "fillTime": "",
            "instId": o.symbol,
            "instType": "SPOT",
            "isTpLimit": "false",
            "lever": "",
            "linkedAlgoOrd": {"algoId": ""},
            "ordId": o.order_id,
            "ordType": o.order_type,
        });
        let rest = json!({
            "pnl": "0",
            "posSide": "net",
            "px": o.price.clone().unwrap_or_default(),
            "pxType": "",
            "pxUsd": "",
            "pxVol": "",
            "quickMgnType": "",
            "rebate": "0",
            "rebateCcy": if o.side == "buy" { quote } else { base },
            "reduceOnly": "false",
            "side": o.side,
            "slOrdPx": "",
            "slTriggerPx": "",
            "slTriggerPxType": "",
            "source": "",
            "state": if live { "live" } else { "canceled" },
            "stpId": "",
            "stpMode": "cancel_maker",
            "sz": o.amount,
            "tag": tag,
            "tdMode": "cash",
            "tgtCcy": "",
            "tpOrdPx": "",
            "tpTriggerPx": "",
            "tpTriggerPxType": "",
            "tradeId": "",
            "tradeQuoteCcy": quote,
            "uTime": ms(o.created_at)
        });
        if let (Some(a), Value::Object(b)) = (v.as_object_mut(), rest) {
            a.extend(b);
        }
        v
    }

    /// Balances minus what open orders hold: `(coin, total, held)`.
    async fn holdings(account: &Account<'_>) -> Vec<(&'static str, f64, f64)> {
        let mut out: Vec<(&'static str, f64, f64)> = market::balances(account.canary_id)
            .into_iter()
            .map(|(c, v)| (c, v, 0.0))
            .collect();
        for o in account.orders.open_orders(None).await.unwrap_or_default() {
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

    async fn balance(req: &TrapRequest, account: &Account<'_>) -> Response {
        let want: Option<Vec<String>> = req
            .param("ccy")
            .map(|c| c.split(',').map(|s| s.trim().to_uppercase()).collect());
        let now = ms(account.now);
        let mut total_usd = 0.0;
        let mut details = Vec::new();
        for (coin, total, held) in Self::holdings(account).await {
            let usd = total * usd_price(coin);
            total_usd += usd;
            if want.as_ref().is_some_and(|w| !w.iter().any(|c| c == coin)) {
                continue;
            }
            let p = coin_precision(coin);
            let avail = dec((total - held).max(0.0), p);
            details.push(json!({
                "accAvgPx": "",
                "availBal": avail,
                "availEq": avail,
                "borrowFroz": "",
                "cashBal": dec(total, p),
                "ccy": coin,
                "clSpotInUseAmt": "",
                "crossLiab": "",
                "disEq": dec(usd, 4),
                "eq": dec(total, p),
                "eqUsd": dec(usd, 4),
                "fixedBal": "0",
                "frozenBal": dec(held, p),
                "imr": "",
                "interest": "",
                "isoEq": "",
                "isoLiab": "",
                "isoUpl": "",
                "liab": "",
                "maxLoan": "",
                "maxSpotInUse": "",
                "mgnRatio": "",
                "mmr": "",
                "notionalLever": "",
                "openAvgPx": "",
                "ordFrozen": dec(held, p),
                "rewardBal": "",
                "smtSyncEq": "0",
                "spotBal": "",
                "spotCopyTradingEq": "0",
                "spotInUseAmt": "",
                "spotIsoBal": "0",
                "spotUpl": "",
                "spotUplRatio": "",
                "stgyEq": "0",
                "totalPnl": "",
                "totalPnlRatio": "",
                "twap": "0",
                "uTime": now,
                "upl": "",
                "uplLiab": ""
            }));
        }
        ok(json!([{
            "adjEq": "",
            "borrowFroz": "",
            "details": details,
            "imr": "",
            "isoEq": "0",
            "mgnRatio": "",
            "mmr": "",
            "notionalUsd": "",
            "notionalUsdForBorrow": "",
            "notionalUsdForFutures": "",
            "notionalUsdForOption": "",
            "notionalUsdForSwap": "",
            "ordFroz": "",
            "totalEq": dec(total_usd, 8),
            "uTime": now,
            "upl": ""
        }]))
    }

    /// Validates and stores one order request; `Err` is the per-item failure.
    async fn place_one(
        item: &Value,
        account: &Account<'_>,
        seq: usize,
        raw_body: &[u8],
    ) -> Result<Value, Value> {
        let cl = field(item, "clOrdId").unwrap_or_default();
        let tag = field(item, "tag").unwrap_or_default();
        let failed = |code: &str, msg: &str| json!({"clOrdId": cl, "ordId": "", "sCode": code, "sMsg": msg, "tag": tag, "ts": ms(account.now)});
        let Some(inst) = field(item, "instId") else {
            return Err(failed("51000", "Parameter instId error"));
        };
        let Some(m) = find_market(&inst) else {
            return Err(failed("51001", "Instrument ID does not exist."));
        };
        let side = field(item, "side").unwrap_or_default();
        if side != "buy" && side != "sell" {
            return Err(failed("51000", "Parameter side error"));
        }
        let ord_type = field(item, "ordType").unwrap_or_default();
        if !matches!(
            ord_type.as_str(),
            "limit" | "market" | "post_only" | "fok" | "ioc"
        ) {
            return Err(failed("51000", "Parameter ordType error"));
        }
        let Some((sz, amount)) = field(item, "sz").and_then(|s| positive(&s).map(|a| (s, a)))
        else {
            return Err(failed("51000", "Parameter sz error"));
        };
        let px = field(item, "px");
        let price = match (ord_type.as_str(), px.as_deref().and_then(positive)) {
            ("market", _) => None,
            (_, Some(p)) => Some(p),
            (_, None) => return Err(failed("51000", "Parameter px error")),
        };
        // Market buys are sized in quote currency by default (tgtCcy quote_ccy).
        let quote_sized = ord_type == "market"
            && side == "buy"
            && field(item, "tgtCcy").as_deref() != Some("base_ccy");
        let (coin, need) = match (side.as_str(), quote_sized) {
            ("buy", true) => (m.quote, amount),
            ("buy", false) => (m.quote, amount * price.unwrap_or(m.price)),
            _ => (m.base, amount),
        };
        let available = Self::holdings(account)
            .await
            .into_iter()
            .find(|(c, _, _)| *c == coin)
            .map_or(0.0, |(_, t, h)| (t - h).max(0.0));
        if need > available + 1e-9 {
            return Err(failed(
                "51008",
                &format!("Order failed. Your available {coin} balance is insufficient."),
            ));
        }
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let order = Order {
            order_id: snowflake(
                account.now,
                &[
                    account.canary_id.as_bytes(),
                    &nanos.to_le_bytes(),
                    &seq.to_le_bytes(),
                    raw_body,
                ],
            ),
            client_order_id: Some(cl.clone()).filter(|c| !c.is_empty()),
            symbol: inst,
            side,
            order_type: ord_type,
            price: px.filter(|_| price.is_some()),
            amount: sz,
            status: "open".into(),
            created_at: account.now,
        };
        match account.orders.place(order).await {
            Ok(o) => Ok(json!({
                "clOrdId": cl,
                "ordId": o.order_id,
                "sCode": "0",
                "sMsg": "Order placed",
                "tag": tag,
                "ts": ms(account.now)
            })),
            Err(_) => Err(failed(
                "50001",
                "Service temporarily unavailable. Please try again later.",
            )),
        }
    }

    async fn place(req: &TrapRequest, account: &Account<'_>, batch: bool) -> Response {
        let items: Vec<Value> = match (req.json_body(), batch) {
            (Some(Value::Array(a)), true) if !a.is_empty() && a.len() <= 20 => a,
            (Some(v @ Value::Object(_)), _) => vec![v],
            (Some(Value::Array(a)), true) if a.len() > 20 => {
                return fail(
                    "51010",
                    "Request exceeds the maximum number of orders (20).",
                )
            }
            _ => return fail("50002", "JSON syntax error"),
        };
        let mut results = Vec::with_capacity(items.len());
        let mut failures = 0;
        for (i, item) in items.iter().enumerate() {
            match Self::place_one(item, account, i, &req.body).await {
                Ok(v) => results.push(v),
                Err(v) => {
                    failures += 1;
                    results.push(v);
                }
            }
        }
        if failures == 0 {
            ok(Value::Array(results))
        } else if failures == results.len() {
            all_failed(results)
        } else {
            json(
                StatusCode::OK,
                json!({"code": "2", "data": results, "msg": "Bulk operation partially succeeded."}),
            )
        }
    }

    async fn cancel(req: &TrapRequest, account: &Account<'_>, batch: bool) -> Response {
        let items: Vec<Value> = match (req.json_body(), batch) {
            (Some(Value::Array(a)), true) if !a.is_empty() && a.len() <= 20 => a,
            (Some(v @ Value::Object(_)), _) => vec![v],
            _ => return fail("50002", "JSON syntax error"),
        };
        let mut results = Vec::new();
        let mut failures = 0;
        for item in &items {
            let ord = field(item, "ordId").unwrap_or_default();
            let cl = field(item, "clOrdId").unwrap_or_default();
            let id = if ord.is_empty() { &cl } else { &ord };
            let found = if id.is_empty() {
                None
            } else {
                match account.orders.get(id).await {
                    Ok(Some(o)) if o.status == "open" => {
                        account.orders.cancel(id).await.ok().flatten()
                    }
                    Ok(_) => None,
                    Err(_) => return Okx.reject(req, Rejection::Unavailable),
                }
            };
            match found {
                Some(o) => results.push(json!({
                    "clOrdId": o.client_order_id.unwrap_or_default(),
                    "ordId": o.order_id,
                    "sCode": "0",
                    "sMsg": "",
                    "ts": ms(account.now)
                })),
                None => {
                    failures += 1;
                    results.push(json!({
                        "clOrdId": cl,
                        "ordId": ord,
                        "sCode": "51400",
                        "sMsg": "Order cancellation failed as the order has been filled, canceled or does not exist.",
                        "ts": ms(account.now)
                    }));
                }
            }
        }
        if failures == 0 {
            ok(Value::Array(results))
        } else if failures == results.len() {
            all_failed(results)
        } else {
            json(
                StatusCode::OK,
                json!({"code": "2", "data": results, "msg": "Bulk operation partially succeeded."}),
            )
        }
    }

    async fn order_detail(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(inst) = req.param("instId") else {
            return param_empty("instId");
        };
        let id = req
            .param("ordId")
            .filter(|s| !s.is_empty())
            .or_else(|| req.param("clOrdId"));
        let Some(id) = id.filter(|s| !s.is_empty()) else {
            return fail("51000", "Parameter ordId error");
        };
        match account.orders.get(&id).await {
            Ok(Some(o)) if o.symbol == inst => ok(json!([Self::order_json(&o)])),
            Ok(_) => fail("51603", "Order does not exist"),
            Err(_) => Okx.reject(req, Rejection::Unavailable),
        }
    }

    async fn pending(req: &TrapRequest, account: &Account<'_>) -> Response {
        if req
            .param("instType")
            .is_some_and(|t| !t.is_empty() && t != "SPOT" && t != "MARGIN")
        {
            return ok(json!([]));
        }
        let inst = req.param("instId").filter(|s| !s.is_empty());
        let mut orders = match account.orders.open_orders(inst.as_deref()).await {
            Ok(o) => o,
            Err(_) => return Okx.reject(req, Rejection::Unavailable),
        };
        if let Some(t) = req.param("ordType").filter(|s| !s.is_empty()) {
            orders.retain(|o| t.split(',').any(|x| x == o.order_type));
        }
        orders.sort_by_key(|o| std::cmp::Reverse(o.created_at));
        let limit = req
            .param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, 100);
        ok(Value::Array(
            orders.iter().take(limit).map(Self::order_json).collect(),
        ))
    }

    fn deposit_address(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(coin) = req.param("ccy").map(|c| c.to_uppercase()) else {
            return param_empty("ccy");
        };
        let Some((_, _, nets)) = CURRENCIES.iter().find(|(c, _, _)| *c == coin) else {
            return fail("51000", "Parameter ccy error");
        };
        let list: Vec<Value> = nets
            .iter()
            .map(|n| {
                let addr = market::deposit_address(account.canary_id, &coin, n);
                let mut e = json!({
                    "chain": format!("{coin}-{}", chain_suffix(n)),
                    "ctAddr": "",
                    "ccy": coin,
                    "to": "6",
                    "addr": addr,
                    "verifiedName": "",
                    "selected": true
                });
                if *n == "XRP" {
                    if let Some(o) = e.as_object_mut() {
                        o.insert(
                            "memo".into(),
                            json!(format!(
                                "{}",
                                200_000_000 + u64::from(account.canary_id.as_bytes()[2]) * 991
                            )),
                        );
                    }
                }
                e
            })
            .collect();
        ok(Value::Array(list))
    }

    async fn withdraw(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return fail("50002", "JSON syntax error");
        };
        let Some(coin) = field(&body, "ccy").map(|c| c.to_uppercase()) else {
            return param_empty("ccy");
        };
        if !CURRENCIES.iter().any(|(c, _, _)| *c == coin) {
            return param_error("ccy");
        }
        let Some(amount) = field(&body, "amt") else {
            return param_empty("amt");
        };
        let Some(amt) = positive(&amount) else {
            return param_error("amt");
        };
        if field(&body, "toAddr").is_none_or(|a| a.is_empty()) {
            return param_empty("toAddr");
        }
        let chain = field(&body, "chain");
        let Some(network) = network_for(&coin, chain.as_deref()) else {
            return param_error("chain");
        };
        let total: f64 = market::balances(account.canary_id)
            .into_iter()
            .filter(|(c, _)| *c == coin)
            .map(|(_, v)| v)
            .sum();
        if amt > total + 1e-9 {
            return fail("58350", "Insufficient balance.");
        }
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let wd_id = short_id(&[account.canary_id.as_bytes(), b"wd", &nanos.to_le_bytes()]);
        ok(json!([{
            "amt": amount,
            "wdId": wd_id,
            "ccy": coin,
            "clientId": field(&body, "clientId").unwrap_or_default(),
            "chain": format!("{coin}-{}", chain_suffix(network))
        }]))
    }

    fn transfer(req: &TrapRequest, account: &Account<'_>) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return fail("50002", "JSON syntax error");
        };
        let Some(amt) = field(&body, "amt").filter(|a| positive(a).is_some()) else {
            return param_error("amt");
        };
        let nanos = account.now.timestamp_nanos_opt().unwrap_or_default();
        let id = short_id(&[account.canary_id.as_bytes(), b"tr", &nanos.to_le_bytes()]);
        ok(json!([{
            "transId": id,
            "ccy": field(&body, "ccy").unwrap_or_default(),
            "clientId": field(&body, "clientId").unwrap_or_default(),
            "from": field(&body, "from").unwrap_or_default(),
            "amt": amt,
            "to": field(&body, "to").unwrap_or_default()
        }]))
    }

    fn config(account: &Account<'_>) -> Response {
        let b = account.canary_id.as_bytes();
        let uid = 100_000_000_000_000_000u64
            + u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
                % 900_000_000_000_000_000;
        ok(json!([{
            "acctLv": "2",
            "acctStpMode": "cancel_maker",
            "autoLoan": false,
            "ctIsoMode": "automatic",
            "enableSpotBorrow": false,
            "greeksType": "PA",
            "ip": "",
            "kycLv": "2",
            "label": "trading bot",
            "level": "Lv1",
            "levelTmp": "",
            "liquidationGear": "-1",
            "mainUid": uid.to_string(),
            "mgnIsoMode": "automatic",
            "opAuth": "0",
            "perm": "read_only,trade,withdraw",
            "posMode": "net_mode",
            "roleType": "0",
            "spotBorrowAutoRepay": false,
            "spotOffsetType": "",
            "spotRoleType": "0",
            "spotTraderInsts": [],
            "stgyType": "0",
            "traderInsts": [],
            "type": "0",
            "uid": uid.to_string()
        }]))
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

#[async_trait::async_trait]
impl Emulator for Okx {
    fn exchange(&self) -> Exchange {
        Exchange::Okx
    }

    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        req.header("ok-access-key")
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        if req.method != Method::GET {
            return None;
        }
        let now = Utc::now();
        let seg = segments(&req.path);
        let market_param = || req.param("instId").and_then(|s| find_market(&s));
        let resp = match seg.as_slice() {
            ["api", "v5", "public", "time"] => ok(json!([{"ts": ms(now)}])),
            ["api", "v5", "system", "status"] => ok(json!([])),
            ["api", "v5", "public", "instruments"] => {
                let Some(t) = req.param("instType").filter(|t| !t.is_empty()) else {
                    return Some(param_empty("instType"));
                };
                let inst = req.param("instId");
                match t.as_str() {
                    "SPOT" => ok(Value::Array(
                        MARKETS
                            .iter()
                            .filter(|m| inst.as_deref().is_none_or(|i| inst_id(m) == i))
                            .map(Self::instrument_json)
                            .collect(),
                    )),
                    // A spot-only listing: no derivatives answered.
                    "MARGIN" | "SWAP" | "FUTURES" | "OPTION" => ok(json!([])),
                    _ => param_error("instType"),
                }
            }
            ["api", "v5", "market", "tickers"] => match req.param("instType").as_deref() {
                Some("SPOT") => ok(Value::Array(
                    MARKETS.iter().map(|m| Self::ticker_json(m, now)).collect(),
                )),
                Some("SWAP" | "FUTURES" | "OPTION") => ok(json!([])),
                _ => param_error("instType"),
            },
            ["api", "v5", "market", "ticker"] => match market_param() {
                Some(m) => ok(json!([Self::ticker_json(m, now)])),
                None => fail("51001", "Instrument ID does not exist."),
            },
            ["api", "v5", "market", "books" | "books-full"] => match market_param() {
                Some(m) => {
                    let sz = req
                        .param("sz")
                        .and_then(|s| s.parse::<usize>().ok())
                        .unwrap_or(1)
                        .clamp(1, 400);
                    ok(Self::books(m, sz, now))
                }
                None => fail("51001", "Instrument ID does not exist."),
            },
            _ => return None,
        };
        Some(resp)
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        let (Some(sign), Some(ts), Some(pass)) = (
            req.header("ok-access-sign").filter(|s| !s.is_empty()),
            req.header("ok-access-timestamp").filter(|s| !s.is_empty()),
            req.header("ok-access-passphrase").filter(|s| !s.is_empty()),
        ) else {
            return SigCheck::Missing;
        };
        let Ok(at) = DateTime::parse_from_rfc3339(ts.trim()) else {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        };
        // The window is measured at the request's arrival, as the exchange measures it.
        if req
            .received_at
            .timestamp_millis()
            .abs_diff(at.timestamp_millis())
            > WINDOW_MS.unsigned_abs()
        {
            return SigCheck::Invalid(Rejection::StaleTimestamp);
        }
        let Some(expected) = creds.passphrase.as_deref() else {
            return SigCheck::Invalid(Rejection::BadPassphrase);
        };
        if !ct_eq(pass.as_bytes(), expected.as_bytes()) {
            return SigCheck::Invalid(Rejection::BadPassphrase);
        }
        if Self::signature_matches(req, &creds.api_secret, ts, sign) {
            SigCheck::Valid
        } else {
            SigCheck::Invalid(Rejection::BadSignature)
        }
    }

    fn reject(&self, req: &TrapRequest, why: Rejection) -> Response {
        let present = |h: &str| req.header(h).is_some_and(|v| !v.is_empty());
        let (status, body) = match why {
            Rejection::MissingKey => (StatusCode::UNAUTHORIZED, KEY_EMPTY),
            // OKX names the header that is missing.
            Rejection::MissingSignature => (
                StatusCode::UNAUTHORIZED,
                if !present("ok-access-key") {
                    KEY_EMPTY
                } else if !present("ok-access-sign") {
                    SIGN_EMPTY
                } else if !present("ok-access-timestamp") {
                    TIMESTAMP_EMPTY
                } else {
                    PASSPHRASE_EMPTY
                },
            ),
            Rejection::MalformedKey => (StatusCode::UNAUTHORIZED, MALFORMED_KEY),
            Rejection::UnknownKey => (StatusCode::UNAUTHORIZED, UNKNOWN_KEY),
            Rejection::StaleTimestamp => {
                let parses = req
                    .header("ok-access-timestamp")
                    .is_some_and(|t| DateTime::parse_from_rfc3339(t.trim()).is_ok());
                (
                    StatusCode::UNAUTHORIZED,
                    if parses { EXPIRED } else { BAD_TIMESTAMP },
                )
            }
            Rejection::BadPassphrase => (StatusCode::UNAUTHORIZED, BAD_PASSPHRASE),
            Rejection::BadSignature => (StatusCode::UNAUTHORIZED, BAD_SIGN),
            Rejection::NotFound => (StatusCode::NOT_FOUND, NOT_FOUND),
            Rejection::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
        };
        raw(status, CT, body)
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let seg = segments(&req.path);
        let rest: &[&str] = seg.get(2..).unwrap_or(&[]);
        let body = req.json_body();
        // Batch bodies are arrays: the first item is the evidence, with the count.
        let (first, count) = match &body {
            Some(Value::Array(a)) => (a.first().cloned().unwrap_or(Value::Null), a.len()),
            Some(v) => (v.clone(), 1),
            None => (Value::Null, 0),
        };
        let mut p = Map::new();
        for (k, v) in req.query_params() {
            p.entry(k).or_insert(Value::String(v));
        }
        if let Value::Object(o) = first {
            for (k, v) in o {
                p.entry(k).or_insert(v);
            }
        }
        let get = |k: &str| p.get(k).cloned().filter(|v| v != &json!(""));
        let mut ev = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                ev.insert(k.into(), v);
            }
        };
        let post = req.method == Method::POST;
        let class = match rest {
            ["trade", "order" | "batch-orders" | "order-algo" | "amend-order" | "amend-batch-orders"]
                if post =>
            {
                put("symbol", get("instId"));
                put("side", get("side"));
                put("type", get("ordType"));
                put("quantity", get("sz").or_else(|| get("newSz")));
                put("price", get("px").or_else(|| get("newPx")));
                put("client_order_id", get("clOrdId"));
                put("tag", get("tag"));
                put("trade_mode", get("tdMode"));
                put("target_currency", get("tgtCcy"));
                put("order_id", get("ordId"));
                if count > 1 {
                    put("orders", Some(json!(count)));
                }
                ActionClass::Trade
            }
            ["trade", "cancel-order" | "cancel-batch-orders" | "cancel-algos" | "mass-cancel"]
                if post =>
            {
                put("symbol", get("instId"));
                put("order_id", get("ordId"));
                put("client_order_id", get("clOrdId"));
                if count > 1 {
                    put("orders", Some(json!(count)));
                }
                ActionClass::Cancel
            }
            ["asset", "deposit-address"] => {
                put("coin", get("ccy"));
                ActionClass::Address
            }
            ["asset", "withdrawal"] if post => {
                put("coin", get("ccy"));
                put("network", get("chain"));
                put("address", get("toAddr"));
                put("amount", get("amt"));
                put("destination", get("dest"));
                put("fee", get("fee"));
                ActionClass::Withdraw
            }
            ["asset", "transfer"] if post => {
                put("coin", get("ccy"));
                put("amount", get("amt"));
                put("from", get("from"));
                put("to", get("to"));
                put("sub_account", get("subAcct"));
                ActionClass::Transfer
            }
            ["account", "config"] => ActionClass::Permissions,
            _ => {
                put("symbol", get("instId"));
                put("coin", get("ccy"));
                ActionClass::Read
            }
        };
        let mut params = ev;
        params.insert(
            "endpoint".into(),
            Value::String(format!("{} {}", req.method, req.path)),
        );
        let by_ccxt = [params.get("tag"), params.get("client_order_id")]
            .into_iter()
            .flatten()
            .any(|v| v.as_str().is_some_and(|s| s.starts_with(CCXT_BROKER_ID)));
        if by_ccxt {
            params.insert("client".into(), json!("ccxt"));
        }
        Action {
            class,
            params: Value::Object(params),
        }
    }

    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response {
        let seg = segments(&req.path);
        let get = req.method == Method::GET;
        let post = req.method == Method::POST;
        let rest: &[&str] = match seg.as_slice() {
            ["api", "v5", rest @ ..] => rest,
            _ => return self.reject(req, Rejection::NotFound),
        };
        match rest {
            // load_markets (signed).
            ["asset", "currencies"] if get => {
                let want = req.param("ccy").map(|c| c.to_uppercase());
                ok(Value::Array(
                    Self::currencies()
                        .into_iter()
                        .filter(|c| {
                            want.as_deref().is_none_or(|w| {
                                w.split(',')
                                    .any(|x| c.get("ccy").and_then(Value::as_str) == Some(x))
                            })
                        })
                        .collect(),
                ))
            }
            ["account", "config"] if get => Self::config(account),
            ["account", "balance"] if get => Self::balance(req, account).await,
            ["asset", "balances"] if get => ok(json!([])),
            ["account", "trade-fee"] if get => ok(json!([{
                "category": "1", "delivery": "", "exercise": "", "instType": "SPOT",
                "level": "Lv1", "maker": "-0.0008", "makerU": "", "makerUSDC": "",
                "taker": "-0.001", "takerU": "", "takerUSDC": "", "ts": ms(account.now)
            }])),
            ["account", "positions"] if get => ok(json!([])),
            ["trade", "batch-orders"] if post => Self::place(req, account, true).await,
            ["trade", "order"] if post => Self::place(req, account, false).await,
            ["trade", "cancel-order"] if post => Self::cancel(req, account, false).await,
            ["trade", "cancel-batch-orders"] if post => Self::cancel(req, account, true).await,
            ["trade", "order"] if get => Self::order_detail(req, account).await,
            ["trade", "orders-pending"] if get => Self::pending(req, account).await,
            ["trade", "orders-history"
            | "orders-history-archive"
            | "orders-algo-pending"
            | "orders-algo-history"
            | "fills"
            | "fills-history"]
                if get =>
            {
                ok(json!([]))
            }
            ["asset", "deposit-address"] if get => Self::deposit_address(req, account),
            ["asset", "deposit-history" | "withdrawal-history"] if get => ok(json!([])),
            ["asset", "withdrawal"] if post => Self::withdraw(req, account).await,
            ["asset", "transfer"] if post => Self::transfer(req, account),
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
            .credentials(Exchange::Okx, Uuid::from_u128(42))
    }

    fn iso(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    fn sign(secret: &str, msg: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(msg.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// Signs like ccxt's `okx.sign()`.
    fn signed(
        c: &Credentials,
        at: DateTime<Utc>,
        method: &str,
        target: &str,
        body: &str,
    ) -> TrapRequest {
        let ts = iso(at);
        let sig = sign(&c.api_secret, &format!("{ts}{method}{target}{body}"));
        request(
            Exchange::Okx,
            method,
            target,
            &[
                ("OK-ACCESS-KEY", &c.api_key),
                ("OK-ACCESS-PASSPHRASE", c.passphrase.as_deref().unwrap()),
                ("OK-ACCESS-TIMESTAMP", &ts),
                ("OK-ACCESS-SIGN", &sig),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    async fn body_of(r: Response) -> (StatusCode, String, Value) {
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, String::from_utf8_lossy(&bytes).into_owned(), v)
    }

    /// Requests signed offline by ccxt 4.5.90 (`okx.sign()`, `nonce` pinned to
    /// 1795290000000 = `2026-11-21T19:40:00.000Z`, secret
    /// `0123456789ABCDEF0123456789ABCDEF`), from `e2e/okx_vectors.py`.
    const CCXT_VECTORS: &[(&str, &str, &str, &str)] = &[
        (
            "GET",
            "/api/v5/asset/currencies",
            r#""#,
            "JqVdCHHa6uuU15FXFyWezn/U09UZaN/hWVC8+4EZRVg=",
        ),
        (
            "GET",
            "/api/v5/account/balance?ccy=BTC%2CETH",
            r#""#,
            "3VSeycTcZooyYTAB+u+cj5chy2XIdWY/aSaH5tRF4zI=",
        ),
        (
            "POST",
            "/api/v5/trade/batch-orders",
            r#"[{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"0.001","px":"50000","tdMode":"cash","clOrdId":"6b9ad766b55dBCDE0123456789abcdef","tag":"6b9ad766b55dBCDE"}]"#,
            "n/IsB8P9ny+RNaO3aSeVlvK85fwxvlUKNJtGmq9U4G8=",
        ),
        (
            "POST",
            "/api/v5/trade/cancel-order",
            r#"{"instId":"BTC-USDT","ordId":"312269865356374016"}"#,
            "bs64DY1WVq19xhqfsPQDHde8E1evZ9rNULcpTqS9Kek=",
        ),
        (
            "GET",
            "/api/v5/trade/orders-pending?instId=BTC-USDT",
            r#""#,
            "CJzzXtRgQFnXWoOHr8FHchpb2I3JJy3p8wWaOQ+NKfk=",
        ),
        (
            "POST",
            "/api/v5/asset/withdrawal",
            r#"{"ccy":"USDT","toAddr":"TXyz","dest":"4","amt":"5000","chain":"USDT-TRC20"}"#,
            "Y3sXhvsvEXG7FPSxRaenJRSoL70BeHD8OHApfsGHtB8=",
        ),
        (
            "GET",
            "/api/v5/asset/deposit-address?ccy=USDT",
            r#""#,
            "ew3k3UUtFnnfJO9vYieSej01kzd2mTgWaxRSSGWzZUE=",
        ),
    ];

    #[test]
    fn ccxt_generated_vectors_verify() {
        let secret = "0123456789ABCDEF0123456789ABCDEF";
        for (method, target, body, sig) in CCXT_VECTORS {
            let req = request(Exchange::Okx, method, target, &[], body.as_bytes());
            assert!(
                Okx::signature_matches(&req, secret, "2026-11-21T19:40:00.000Z", sig),
                "{method} {target}"
            );
            assert!(!Okx::signature_matches(
                &req,
                secret,
                "2026-11-21T19:40:00.001Z",
                sig
            ));
        }
    }

    /// OKX's documented example (docs v5 "REST Authentication"): the string to sign
    /// is `timestamp + method + requestPath + body`.
    #[test]
    fn string_to_sign_matches_docs_shape() {
        let req = request(
            Exchange::Okx,
            "GET",
            "/api/v5/account/balance?ccy=BTC",
            &[],
            b"",
        );
        let s = sign(
            "SECRET",
            "2020-12-08T09:08:57.715ZGET/api/v5/account/balance?ccy=BTC",
        );
        assert!(Okx::signature_matches(
            &req,
            "SECRET",
            "2020-12-08T09:08:57.715Z",
            &s
        ));
    }

    #[test]
    fn signature_outcomes() {
        let c = creds();
        let k = Okx;
        let now = Utc::now();
        let r = signed(&c, now, "GET", "/api/v5/account/balance", "");
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);
        let body = r#"[{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"0.001","px":"50000","tdMode":"cash"}]"#;
        let r = signed(&c, now, "POST", "/api/v5/trade/batch-orders", body);
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);

        let mut wrong = c.clone();
        wrong.api_secret = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".into();
        let r = signed(&wrong, now, "GET", "/api/v5/account/balance", "");
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );

        let r = signed(
            &c,
            now - chrono::Duration::seconds(31),
            "GET",
            "/api/v5/account/balance",
            "",
        );
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let r = signed(
            &c,
            now + chrono::Duration::seconds(31),
            "GET",
            "/api/v5/account/balance",
            "",
        );
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let r = signed(
            &c,
            now - chrono::Duration::seconds(20),
            "GET",
            "/api/v5/account/balance",
            "",
        );
        assert_eq!(k.check_signature(&r, &c), SigCheck::Valid);

        let mut other = c.clone();
        other.passphrase = Some("Wrong#Pass1".into());
        let r = signed(&other, now, "GET", "/api/v5/account/balance", "");
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadPassphrase)
        );

        let r = request(
            Exchange::Okx,
            "GET",
            "/api/v5/account/balance",
            &[("OK-ACCESS-KEY", &c.api_key)],
            b"",
        );
        assert_eq!(k.api_key(&r).as_deref(), Some(c.api_key.as_str()));
        assert_eq!(k.check_signature(&r, &c), SigCheck::Missing);

        let mut r = signed(&c, now, "GET", "/api/v5/account/balance", "");
        r.headers
            .insert("ok-access-timestamp", "1700000000".parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        let mut r = signed(&c, now, "GET", "/api/v5/account/balance?ccy=BTC", "");
        r.query = Some("ccy=ETH".into());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        let mut r = signed(&c, now, "GET", "/api/v5/account/balance", "");
        r.headers.insert("ok-access-sign", "!!".parse().unwrap());
        assert_eq!(
            k.check_signature(&r, &c),
            SigCheck::Invalid(Rejection::BadSignature)
        );
    }

    #[tokio::test]
    async fn reject_bodies_are_exact() {
        let c = creds();
        let bare = request(Exchange::Okx, "GET", "/api/v5/account/balance", &[], b"");
        let key_only = request(
            Exchange::Okx,
            "GET",
            "/api/v5/account/balance",
            &[("OK-ACCESS-KEY", &c.api_key)],
            b"",
        );
        let now = Utc::now();
        let stale = signed(
            &c,
            now - chrono::Duration::seconds(60),
            "GET",
            "/api/v5/account/balance",
            "",
        );
        let mut garbled = stale.clone();
        garbled
            .headers
            .insert("ok-access-timestamp", "yesterday".parse().unwrap());
        let mut no_pass = signed(&c, now, "GET", "/api/v5/account/balance", "");
        no_pass.headers.remove("ok-access-passphrase");
        let cases = [
            (
                &bare,
                Rejection::MissingKey,
                401,
                r#"{"msg":"Request header OK-ACCESS-KEY can not be empty.","code":"50103"}"#,
            ),
            (
                &key_only,
                Rejection::MissingSignature,
                401,
                r#"{"msg":"Request header OK-ACCESS-SIGN can not be empty.","code":"50106"}"#,
            ),
            (
                &no_pass,
                Rejection::MissingSignature,
                401,
                r#"{"msg":"Request header OK-ACCESS-PASSPHRASE can not be empty.","code":"50104"}"#,
            ),
            (
                &bare,
                Rejection::MalformedKey,
                401,
                r#"{"msg":"Invalid OK-ACCESS-KEY","code":"50111"}"#,
            ),
            (
                &bare,
                Rejection::UnknownKey,
                401,
                r#"{"msg":"API key doesn't exist","code":"50119"}"#,
            ),
            (
                &stale,
                Rejection::StaleTimestamp,
                401,
                r#"{"msg":"Timestamp request expired","code":"50102"}"#,
            ),
            (
                &garbled,
                Rejection::StaleTimestamp,
                401,
                r#"{"msg":"Invalid OK-ACCESS-TIMESTAMP","code":"50112"}"#,
            ),
            (
                &bare,
                Rejection::BadPassphrase,
                401,
                r#"{"msg":"Request header OK-ACCESS-PASSPHRASE incorrect.","code":"50105"}"#,
            ),
            (
                &bare,
                Rejection::BadSignature,
                401,
                r#"{"msg":"Invalid Sign","code":"50113"}"#,
            ),
            (&bare, Rejection::NotFound, 404, NOT_FOUND),
            (&bare, Rejection::Unavailable, 503, UNAVAILABLE),
        ];
        for (req, why, status, body) in cases {
            let resp = Okx.reject(req, why);
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
        let now = Utc::now();
        let body = r#"[{"instId":"PEPE-USDT","side":"buy","ordType":"limit","sz":"1000000","px":"0.00002","tdMode":"cash","clOrdId":"6b9ad766b55dBCDE1234567890abcdef","tag":"6b9ad766b55dBCDE"}]"#;
        let a = Okx.classify(&signed(&c, now, "POST", "/api/v5/trade/batch-orders", body));
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(a.params["symbol"], "PEPE-USDT");
        assert_eq!(a.params["side"], "buy");
        assert_eq!(a.params["quantity"], "1000000");
        assert_eq!(a.params["price"], "0.00002");
        assert_eq!(a.params["tag"], CCXT_BROKER_ID);
        assert_eq!(a.params["client"], "ccxt");

        let body = r#"{"ccy":"USDT","toAddr":"TXyz","dest":"4","amt":"5000","chain":"USDT-TRC20"}"#;
        let a = Okx.classify(&signed(&c, now, "POST", "/api/v5/asset/withdrawal", body));
        assert_eq!(a.class, ActionClass::Withdraw);
        assert_eq!(a.params["coin"], "USDT");
        assert_eq!(a.params["address"], "TXyz");
        assert_eq!(a.params["network"], "USDT-TRC20");
        assert_eq!(a.params["amount"], "5000");
        assert!(!a.params.to_string().contains(&c.api_secret));

        let a = Okx.classify(&signed(
            &c,
            now,
            "POST",
            "/api/v5/trade/cancel-order",
            r#"{"instId":"BTC-USDT","ordId":"123"}"#,
        ));
        assert_eq!(a.class, ActionClass::Cancel);
        assert_eq!(a.params["order_id"], "123");
        let a = Okx.classify(&signed(
            &c,
            now,
            "GET",
            "/api/v5/asset/deposit-address?ccy=USDT",
            "",
        ));
        assert_eq!(a.class, ActionClass::Address);
        assert_eq!(a.params["coin"], "USDT");
        let a = Okx.classify(&signed(&c, now, "GET", "/api/v5/account/config", ""));
        assert_eq!(a.class, ActionClass::Permissions);
        let a = Okx.classify(&signed(
            &c,
            now,
            "POST",
            "/api/v5/asset/transfer",
            r#"{"ccy":"USDT","amt":"10","from":"18","to":"6"}"#,
        ));
        assert_eq!(a.class, ActionClass::Transfer);
        let a = Okx.classify(&signed(&c, now, "GET", "/api/v5/account/balance", ""));
        assert_eq!(a.class, ActionClass::Read);
    }

    #[tokio::test]
    async fn private_round_trip() {
        let c = creds();
        let book = MemoryOrderBook::default();
        let canary = Uuid::from_u128(42);
        let account = crate::testkit::account(Exchange::Okx, canary, &c, &book);
        let k = Okx;
        let call = |m: &str, t: &str, b: &str| signed(&c, Utc::now(), m, t, b);

        let (s, _, v) = body_of(
            k.private(&call("GET", "/api/v5/asset/currencies", ""), &account)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["code"], "0");
        assert!(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["chain"] == "USDT-TRC20"));

        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v5/account/balance", ""), &account)
                .await,
        )
        .await;
        let details = v["data"][0]["details"].as_array().unwrap();
        let usdt = details.iter().find(|d| d["ccy"] == "USDT").unwrap();
        assert!(usdt["eq"].as_str().unwrap().parse::<f64>().unwrap() > 800.0);

        let body = r#"[{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"0.001","px":"50000","tdMode":"cash","clOrdId":"6b9ad766b55dBCDEaaaa","tag":"6b9ad766b55dBCDE"}]"#;
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/trade/batch-orders", body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "0", "{v}");
        assert_eq!(v["data"][0]["sCode"], "0");
        let id = v["data"][0]["ordId"].as_str().unwrap().to_string();
        assert!(
            id.len() >= 18 && id.bytes().all(|b| b.is_ascii_digit()),
            "{id}"
        );

        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v5/account/balance?ccy=USDT", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"][0]["details"][0]["frozenBal"], "50");

        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v5/trade/orders-pending?instType=SPOT", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["ordId"], id.as_str());
        assert_eq!(v["data"][0]["state"], "live");
        assert_eq!(v["data"][0]["tag"], CCXT_BROKER_ID);

        let (_, _, v) = body_of(
            k.private(
                &call(
                    "GET",
                    &format!("/api/v5/trade/order?instId=BTC-USDT&ordId={id}"),
                    "",
                ),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"][0]["clOrdId"], "6b9ad766b55dBCDEaaaa");

        let body = format!(r#"{{"instId":"BTC-USDT","ordId":"{id}"}}"#);
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/trade/cancel-order", &body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "0");
        assert_eq!(v["data"][0]["ordId"], id.as_str());
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/trade/cancel-order", &body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "1");
        assert_eq!(v["data"][0]["sCode"], "51400");
        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v5/trade/orders-pending", ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"].as_array().unwrap().len(), 0);
        let (_, _, v) = body_of(
            k.private(
                &call(
                    "GET",
                    &format!("/api/v5/trade/order?instId=BTC-USDT&ordId={id}"),
                    "",
                ),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["data"][0]["state"], "canceled");
        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v5/trade/order?instId=BTC-USDT&ordId=1", ""),
                &account,
            )
            .await,
        )
        .await;
        assert_eq!(v["code"], "51603");

        // Over the balance, unknown instruments, malformed bodies: OKX's error shapes.
        let body = r#"[{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"100000","px":"97000","tdMode":"cash"}]"#;
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/trade/batch-orders", body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "1");
        assert_eq!(v["data"][0]["sCode"], "51008");
        let body = r#"{"instId":"NOPE-USDT","side":"buy","ordType":"limit","sz":"1","px":"1","tdMode":"cash"}"#;
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/trade/order", body), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"][0]["sCode"], "51001");
        for body in ["nope", "[]", "{}", r#"[{"sz":"1e999"}]"#, "[1,2]"] {
            let (s, _, v) = body_of(
                k.private(&call("POST", "/api/v5/trade/batch-orders", body), &account)
                    .await,
            )
            .await;
            assert_eq!(s, StatusCode::OK);
            assert_ne!(v["code"], "0", "{body}");
        }

        let (_, _, v) = body_of(
            k.private(
                &call("GET", "/api/v5/asset/deposit-address?ccy=USDT", ""),
                &account,
            )
            .await,
        )
        .await;
        let trc = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["chain"] == "USDT-TRC20")
            .unwrap()
            .clone();
        assert_eq!(trc["addr"], market::deposit_address(canary, "USDT", "TRX"));
        assert_eq!(trc["selected"], true);

        let body =
            r#"{"ccy":"USDT","toAddr":"TXyzabc","dest":"4","amt":"100","chain":"USDT-TRC20"}"#;
        let (_, _, v) = body_of(
            k.private(&call("POST", "/api/v5/asset/withdrawal", body), &account)
                .await,
        )
        .await;
        assert_eq!(v["code"], "0", "{v}");
        assert!(!v["data"][0]["wdId"].as_str().unwrap().is_empty());
        assert_eq!(v["data"][0]["chain"], "USDT-TRC20");

        let (_, _, v) = body_of(
            k.private(&call("GET", "/api/v5/account/config", ""), &account)
                .await,
        )
        .await;
        assert_eq!(v["data"][0]["perm"], "read_only,trade,withdraw");
        assert_eq!(v["data"][0]["ip"], "");

        let (s, text, _) =
            body_of(k.private(&call("GET", "/api/v5/nope", ""), &account).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(text, NOT_FOUND);
    }

    #[tokio::test]
    async fn public_instruments_have_what_ccxt_reads() {
        let r = request(
            Exchange::Okx,
            "GET",
            "/api/v5/public/instruments?instType=SPOT",
            &[],
            b"",
        );
        let (_, _, v) = body_of(Okx.public(&r).unwrap()).await;
        let list = v["data"].as_array().unwrap();
        assert_eq!(list.len(), MARKETS.len());
        for m in list {
            for k in [
                "instId", "instType", "baseCcy", "quoteCcy", "lotSz", "tickSz", "minSz",
                "maxLmtSz", "state",
            ] {
                assert!(
                    m[k].is_string() && !m[k].as_str().unwrap().is_empty(),
                    "{k} in {m}"
                );
            }
        }
        for t in ["FUTURES", "SWAP", "OPTION&uly=BTC-USD"] {
            let r = request(
                Exchange::Okx,
                "GET",
                &format!("/api/v5/public/instruments?instType={t}"),
                &[],
                b"",
            );
            let (_, _, v) = body_of(Okx.public(&r).unwrap()).await;
            assert_eq!(v["data"], json!([]));
        }
        let r = request(Exchange::Okx, "GET", "/api/v5/public/time", &[], b"");
        let (_, _, v) = body_of(Okx.public(&r).unwrap()).await;
        assert!(v["data"][0]["ts"].as_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000_000);
        for p in [
            "/api/v5/asset/currencies",
            "/api/v5/account/balance",
            "/api/v5/account/config",
        ] {
            let r = request(Exchange::Okx, "GET", p, &[], b"");
            assert!(Okx.public(&r).is_none(), "{p}");
        }
    }

    /// Garbage in every position gives an answer in the exchange's shape, never a panic.
    #[tokio::test]
    async fn never_panics_on_garbage() {
        let c = creds();
        let book = MemoryOrderBook::default();
        let account = crate::testkit::account(Exchange::Okx, Uuid::from_u128(7), &c, &book);
        let bodies: [&[u8]; 7] = [b"", b"\xff\xfe{", b"{}", b"[]", b"null", b"{\"a\":[[[[]]]]}", br#"[{"instId":"BTC-USDT","symbol":"BTC-USDT","side":"buy","sz":"1e308","size":"1e308","price":"1e308","px":"-1","amount":1e308,"amt":"NaN","currency":"USDT","ccy":"USDT"}]"#];
        let paths = [
            "/api/v5/trade/batch-orders",
            "/api/v5/trade/order",
            "/api/v5/trade/order?instId=&ordId=",
            "/api/v5/trade/cancel-batch-orders",
            "/api/v5/trade/orders-pending?limit=-1&ordType=",
            "/api/v5/asset/withdrawal",
            "/api/v5/asset/deposit-address?ccy=%ff",
            "/api/v5/account/balance?ccy=,,,",
            "/api/v5/asset/transfer",
            "/",
            "//",
            "/api/v5/asset/currencies?ccy=",
            "/api/v5/public/instruments?instType=",
        ];
        for method in ["GET", "POST", "DELETE", "PUT"] {
            for path in paths {
                for body in bodies {
                    let r = request(
                        Exchange::Okx,
                        method,
                        path,
                        &[
                            ("OK-ACCESS-KEY", "k"),
                            ("OK-ACCESS-SIGN", "x"),
                            ("OK-ACCESS-TIMESTAMP", "+262143-12-31T23:59:59.999Z"),
                            ("OK-ACCESS-PASSPHRASE", "p"),
                        ],
                        body,
                    );
                    let _ = Okx.public(&r);
                    let _ = Okx.classify(&r);
                    let _ = Okx.check_signature(&r, &c);
                    let resp = Okx.private(&r, &account).await;
                    let (_, text, v) = body_of(resp).await;
                    assert!(v.is_object(), "{method} {path}: {text}");
                }
            }
        }
    }
}
