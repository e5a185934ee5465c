//! Coinbase Advanced Trade emulator (CDP API keys, `Exchange::Coinbase`).
//!
//! What it emulates: `api.coinbase.com`, both halves that clients use with one CDP key:
//! the Advanced Trade API under `/api/v3/brokerage/...` and the "Coinbase App" (retail)
//! API under `/v2/...` (ccxt reads balances, deposit addresses and sends crypto there).
//!
//! Authentication is `Authorization: Bearer <JWT>`, ES256 over P-256 with the key's EC
//! private key (SEC1 PEM). Header `{alg:"ES256", typ:"JWT", kid:<key name>, nonce}`,
//! claims `{sub:<key name>, iss:"cdp"|"coinbase-cloud", nbf, exp:nbf+120, iat?, aud?,
//! uri:"METHOD host/path"}`. Sources: `/work/shared/design/exchanges.md` §3, ccxt 4.5.90
//! `coinbase.py` (`sign`, `create_auth_token`, `Exchange.jwt`, `fetch_markets_v3`,
//! `fetch_currencies`, `parse_custom_balance`, `create_order`, `parse_order`,
//! `cancel_orders`, `withdraw`, `parse_deposit_address`, `parse_transaction`) and the
//! response samples quoted there, and Coinbase's public API reference.
//!
//! Error bodies: v3 answers authentication failures with HTTP 401 and the plain-text body
//! `Unauthorized` (exchanges.md); v2 answers `{"errors":[{"id":"authentication_error",
//! "message":...}]}` (the `request timestamp expired` message is quoted in ccxt's
//! exception table; `authentication required` / `invalid api key` / `invalid signature`
//! are best guesses, see [`Coinbase::reject`]).

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use keytrap_core::{Credentials, Exchange};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::emulator::{
    Account, Action, ActionClass, Emulator, Order, Rejection, SigCheck, TrapRequest,
};
use crate::market::{self, fixed, CURRENCIES, MARKETS};

/// The Coinbase Advanced Trade (CDP key) emulator.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coinbase;

/// Tolerated clock difference, seconds, on `nbf` and `exp`. Coinbase's window is the
/// token's own lifetime (120 s); a few seconds of skew keep clients with slightly fast or
/// slow clocks working, as they do against the real API.
const CLOCK_SKEW_SECS: i64 = 10;

/// Longest string kept in evidence (addresses, ids): enough for any real value, bounded
/// against abuse.
const EVIDENCE_MAX: usize = 200;

const CT_V2: &str = "application/json; charset=utf-8";
const CT_V3: &str = "application/json";

// ---------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------

/// A JWT split into its parts; header and claims decoded, not verified.
struct Jwt<'a> {
    header: Value,
    claims: Value,
    /// `base64url(header) "." base64url(claims)`: what ES256 signs.
    signing_input: &'a str,
    signature: &'a str,
}

/// Base64url, with or without padding (ccxt strips it, some libraries keep it).
fn b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| URL_SAFE.decode(s).ok())
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &TrapRequest) -> Option<&str> {
    let auth = req.header("authorization")?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn parse_jwt(token: &str) -> Option<Jwt<'_>> {
    let mut parts = token.splitn(3, '.');
    let h = parts.next()?;
    let c = parts.next()?;
    let signature = parts.next().unwrap_or("");
    let header: Value = serde_json::from_slice(&b64url(h)?).ok()?;
    let claims: Value = serde_json::from_slice(&b64url(c)?).ok()?;
    if !header.is_object() || !claims.is_object() {
        return None;
    }
    let signing_input = token.get(..h.len() + 1 + c.len())?;
    Some(Jwt {
        header,
        claims,
        signing_input,
        signature,
    })
}

/// A numeric claim (`nbf`, `exp`): JSON integer or float, seconds.
fn num_claim(claims: &Value, name: &str) -> Option<i64> {
    let v = claims.get(name)?;
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// Whether the `uri` claim (`"METHOD host/path"`) names this request. ccxt builds it from
/// the configured base URL with only `https://` removed, so an `http://` base URL leaves
/// its scheme in the claim: both are accepted. The path must equal the path as received
/// (prefix included: ccxt signs the full URL path). The host is deliberately not compared
/// with the `Host` header: behind a TLS terminator or reverse proxy the trap may see an
/// internal host name while the client signed the public one, and refusing such requests
/// would turn away exactly the valid-key callers the trap exists to observe; the path and
/// the signature already bind the token to this request.
fn uri_matches(uri: &str, req: &TrapRequest) -> bool {
    let Some((method, rest)) = uri.split_once(' ') else {
        return false;
    };
    if method != req.method.as_str() {
        return false;
    }
    let rest = rest.trim();
    let lower = rest
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &rest[8..]
    } else if lower.starts_with("http://") {
        &rest[7..]
    } else {
        rest
    };
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let path = &rest[slash..];
    // Query strings are not part of the claim (ccxt cuts them); tolerate one anyway.
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let full = req
        .full_path
        .split_once('?')
        .map_or(req.full_path.as_str(), |(p, _)| p);
    path == full || path == req.path
}

/// Verifies a request's JWT as Coinbase does, at time `now` (unix seconds).
pub fn check_jwt(req: &TrapRequest, creds: &Credentials, now: i64) -> SigCheck {
    let Some(token) = bearer(req) else {
        return SigCheck::Missing;
    };
    let Some(jwt) = parse_jwt(token) else {
        return SigCheck::Invalid(Rejection::BadSignature);
    };
    if jwt.signature.is_empty() {
        return SigCheck::Missing;
    }
    let bad = SigCheck::Invalid(Rejection::BadSignature);
    if jwt.header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return bad;
    }
    // The canary's public key, from its private key PEM.
    let Ok(secret) = p256::SecretKey::from_sec1_pem(creds.api_secret.trim()) else {
        return bad;
    };
    let vk = VerifyingKey::from(secret.public_key());
    let Some(sig) = b64url(jwt.signature).and_then(|b| Signature::from_slice(&b).ok()) else {
        return bad;
    };
    // Both low- and high-S signatures are valid ECDSA; accept either, like Go's verifier.
    let sig = sig.normalize_s().unwrap_or(sig);
    if vk.verify(jwt.signing_input.as_bytes(), &sig).is_err() {
        return bad;
    }
    // Claims, only once the signature is known to be the key holder's.
    let claims = &jwt.claims;
    match claims.get("iss").and_then(Value::as_str) {
        Some("cdp") | Some("coinbase-cloud") => {}
        _ => return bad,
    }
    if claims.get("sub").and_then(Value::as_str) != Some(creds.api_key.as_str()) {
        return bad;
    }
    if let Some(kid) = jwt.header.get("kid") {
        if kid.as_str() != Some(creds.api_key.as_str()) {
            return bad;
        }
    }
    match claims.get("uri").and_then(Value::as_str) {
        Some(uri) if uri_matches(uri, req) => {}
        _ => return bad,
    }
    let Some(exp) = num_claim(claims, "exp") else {
        return bad;
    };
    let nbf = num_claim(claims, "nbf");
    if now > exp.saturating_add(CLOCK_SKEW_SECS)
        || nbf.is_some_and(|nbf| nbf > now.saturating_add(CLOCK_SKEW_SECS))
    {
        return SigCheck::Invalid(Rejection::StaleTimestamp);
    }
    SigCheck::Valid
}

/// Builds a JWT exactly as ccxt's `create_auth_token` does (ES256, `iss:
/// "coinbase-cloud"`, `aud: ["retail_rest_api_proxy"]`, `nbf = iat = seconds`, `exp =
/// seconds + 120`, `uri = "METHOD " + url without "https://" and query`). `url` is the
/// full request URL. Used by tests and end-to-end checks.
pub fn create_jwt(
    key_name: &str,
    pem: &str,
    method: &str,
    url: &str,
    seconds: i64,
) -> Option<String> {
    use p256::ecdsa::signature::Signer;
    let secret = p256::SecretKey::from_sec1_pem(pem.trim()).ok()?;
    let sk = p256::ecdsa::SigningKey::from(secret);
    let mut uri = format!("{method} {}", url.replace("https://", ""));
    if let Some(q) = uri.find('?') {
        uri.truncate(q);
    }
    let nonce = hex::encode(&Uuid::new_v4().as_bytes()[..]);
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key_name, "nonce": nonce});
    let claims = json!({
        "aud": ["retail_rest_api_proxy"], "iss": "coinbase-cloud", "nbf": seconds,
        "exp": seconds + 120, "sub": key_name, "iat": seconds, "uri": uri,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig: Signature = sk.sign(input.as_bytes());
    Some(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    ))
}

// ---------------------------------------------------------------------------------------
// Market data
// ---------------------------------------------------------------------------------------

/// A listed product: the shared markets, plus a `-USD` twin of every `-USDT` market
/// (Coinbase's main books are quoted in USD; attackers use `BTC/USD` first).
#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub(crate) base: &'static str,
    pub(crate) quote: &'static str,
    pub(crate) price: f64,
    pub(crate) price_decimals: u32,
    pub(crate) qty_decimals: u32,
}

impl Product {
    pub(crate) fn id(&self) -> String {
        format!("{}-{}", self.base, self.quote)
    }
}

pub(crate) fn products() -> Vec<Product> {
    let mut out = Vec::with_capacity(MARKETS.len() * 2);
    for m in MARKETS {
        out.push(Product {
            base: m.base,
            quote: m.quote,
            price: m.price,
            price_decimals: m.price_decimals,
            qty_decimals: m.qty_decimals,
        });
    }
    for m in MARKETS.iter().filter(|m| m.quote == "USDT") {
        out.push(Product {
            base: m.base,
            quote: "USD",
            price: m.price,
            price_decimals: m.price_decimals,
            qty_decimals: m.qty_decimals,
        });
    }
    out
}

pub(crate) fn product(id: &str) -> Option<Product> {
    products().into_iter().find(|p| p.id() == id)
}

pub(crate) fn currency_name(code: &str) -> &'static str {
    match code {
        "USD" => "US Dollar",
        "EUR" => "Euro",
        "GBP" => "British Pound",
        _ => CURRENCIES
            .iter()
            .find(|(c, _, _)| *c == code)
            .map_or("", |(_, n, _)| n),
    }
}

/// Price of one unit in USD (stablecoins at par).
pub(crate) fn usd_price(code: &str) -> Option<f64> {
    match code {
        "USD" | "USDT" | "USDC" => Some(1.0),
        "EUR" => Some(1.087),
        "GBP" => Some(1.266),
        _ => MARKETS
            .iter()
            .find(|m| m.base == code && m.quote == "USDT")
            .map(|m| m.price),
    }
}

/// Decimals of a currency's amounts (Coinbase's `exponent`).
pub(crate) fn exponent(code: &str) -> u32 {
    match code {
        "USD" | "EUR" | "GBP" => 2,
        "USDT" | "USDC" | "ADA" | "XRP" | "TRX" => 6,
        _ => 8,
    }
}

/// Coinbase's lower-case network name for a network code of [`CURRENCIES`].
pub(crate) fn network_slug(net: &str) -> &'static str {
    match net {
        "BTC" => "bitcoin",
        "ETH" => "ethereum",
        "ARBITRUM" => "arbitrum",
        "TRX" => "tron",
        "BSC" => "bnbchain",
        "SOL" => "solana",
        "XRP" => "ripple",
        "ADA" => "cardano",
        "DOGE" => "dogecoin",
        "DOT" => "polkadot",
        "LTC" => "litecoin",
        "AVAXC" => "avacchain",
        "SYS" => "syscoin",
        _ => "ethereum",
    }
}

pub(crate) fn networks_of(code: &str) -> &'static [&'static str] {
    CURRENCIES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(&[][..], |(_, _, n)| n)
}

fn address_regex(code: &str) -> &'static str {
    match networks_of(code).first().copied().unwrap_or("ETH") {
        "BTC" => "^([13][a-km-zA-HJ-NP-Z1-9]{25,34})|^(bc1[qzry9x8gf2tvdw0s3jn54khce6mua7l]([qpzry9x8gf2tvdw0s3jn54khce6mua7l]{38}|[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}))$",
        "SOL" => "^[1-9A-HJ-NP-Za-km-z]{32,44}$",
        "XRP" => "^r[1-9a-km-zA-HJ-NP-Z]{24,34}$",
        "TRX" => "^T[1-9A-HJ-NP-Za-km-z]{33}$",
        "LTC" => "^((L|M)[a-km-zA-HJ-NP-Z1-9]{25,34})|^(ltc1([qpzry9x8gf2tvdw0s3jn54khce6mua7l]{39}|[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{59}))$",
        "DOGE" => "^((D|A|9)[a-km-zA-HJ-NP-Z1-9]{25,34})$",
        _ => "^(?:0x)?[0-9a-fA-F]{40}$",
    }
}

/// A stable, plausible-looking hash of a string (volumes, colours, sort indexes).
pub(crate) fn h64(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A name-based (version 5 shaped) UUID, like Coinbase's v2 account ids.
fn uuid5(parts: &[&[u8]]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_sha1_bytes(b).into_uuid()
}

fn account_uuid(canary: Uuid, code: &str) -> String {
    uuid5(&[b"coinbase/account", canary.as_bytes(), code.as_bytes()]).to_string()
}

fn portfolio_uuid(canary: Uuid) -> String {
    uuid5(&[b"coinbase/portfolio", canary.as_bytes()]).to_string()
}

fn user_uuid(canary: Uuid) -> String {
    uuid5(&[b"coinbase/user", canary.as_bytes()]).to_string()
}

pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(crate) fn iso_micros(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// When the canary's account was "opened": a stable date well before now.
pub(crate) fn account_created(canary: Uuid) -> DateTime<Utc> {
    let days = 200 + (h64(&canary.to_string()) % 900) as i64;
    let base = DateTime::<Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default();
    base - chrono::Duration::days(days)
}

pub(crate) fn increment(decimals: u32) -> String {
    fixed(10f64.powi(-(decimals as i32)), decimals)
}

fn product_json(p: &Product) -> Value {
    let id = p.id();
    let h = h64(&id);
    let volume = (1_000_000.0 / p.price.max(1e-9)) * (1.0 + (h % 1000) as f64 / 100.0);
    let change = ((h >> 16) % 1200) as f64 / 100.0 - 6.0;
    json!({
        "product_id": id,
        "price": fixed(p.price, p.price_decimals),
        "price_percentage_change_24h": format!("{change:.8}"),
        "volume_24h": fixed(volume, p.qty_decimals),
        "volume_percentage_change_24h": format!("{:.8}", ((h >> 32) % 9000) as f64 / 100.0 - 40.0),
        "base_increment": increment(p.qty_decimals),
        "quote_increment": increment(p.price_decimals),
        "quote_min_size": "1",
        "quote_max_size": "150000000",
        "base_min_size": increment(p.qty_decimals),
        "base_max_size": fixed((50_000_000.0 / p.price.max(1e-9)).round(), 0),
        "base_name": currency_name(p.base),
        "quote_name": currency_name(p.quote),
        "watched": false,
        "is_disabled": false,
        "new": false,
        "status": "online",
        "cancel_only": false,
        "limit_only": false,
        "post_only": false,
        "trading_disabled": false,
        "auction_mode": false,
        "product_type": "SPOT",
        "quote_currency_id": p.quote,
        "base_currency_id": p.base,
        "fcm_trading_session_details": null,
        "mid_market_price": "",
        "alias": "",
        "alias_to": [],
        "base_display_symbol": p.base,
        "quote_display_symbol": p.quote,
        "view_only": false,
        "price_increment": increment(p.price_decimals),
        "display_name": format!("{}-{}", p.base, p.quote),
        "product_venue": "CBE",
        "approximate_quote_24h_volume": fixed(volume * p.price, 2),
    })
}

/// `GET .../products`: spot products (none for `product_type=FUTURE`), optionally
/// filtered by repeated `product_ids`.
fn products_list(req: &TrapRequest) -> Value {
    let q = req.query_params();
    let wants_spot = q
        .iter()
        .filter(|(k, _)| k == "product_type")
        .all(|(_, v)| v.eq_ignore_ascii_case("SPOT"));
    let ids: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "product_ids")
        .map(|(_, v)| v.as_str())
        .collect();
    let list: Vec<Value> = if wants_spot {
        products()
            .iter()
            .filter(|p| ids.is_empty() || ids.contains(&p.id().as_str()))
            .map(product_json)
            .collect()
    } else {
        Vec::new()
    };
    let n = list.len();
    json!({"products": list, "num_products": n})
}

fn ticker_json(p: &Product, now: DateTime<Utc>) -> Value {
    let id = p.id();
    let tick = 10f64.powi(-(p.price_decimals as i32));
    let h = h64(&format!("{id}/{}", now.timestamp() / 60));
    json!({
        "trades": [{
            "trade_id": (h % 900_000_000 + 100_000_000).to_string(),
            "product_id": id,
            "price": fixed(p.price, p.price_decimals),
            "size": fixed(((h >> 8) % 5000) as f64 / 1000.0 + 0.001, p.qty_decimals.min(8)),
            "time": iso_micros(now),
            "side": if h.is_multiple_of(2) { "BUY" } else { "SELL" },
            "bid": "",
            "ask": "",
            "exchange": "CBE",
        }],
        "best_bid": fixed(p.price - tick, p.price_decimals),
        "best_ask": fixed(p.price + tick, p.price_decimals),
    })
}

fn pricebook_json(p: &Product, levels: usize, now: DateTime<Utc>) -> Value {
    let tick = 10f64.powi(-(p.price_decimals as i32));
    let level = |i: usize, sign: f64| {
        let size = (200.0 / p.price.max(1e-9)) * (1.0 + i as f64 * 0.7);
        json!({
            "price": fixed(p.price + sign * tick * (1 + i) as f64, p.price_decimals),
            "size": fixed(size.max(10f64.powi(-(p.qty_decimals as i32))), p.qty_decimals),
        })
    };
    json!({
        "product_id": p.id(),
        "bids": (0..levels).map(|i| level(i, -1.0)).collect::<Vec<_>>(),
        "asks": (0..levels).map(|i| level(i, 1.0)).collect::<Vec<_>>(),
        "time": iso_micros(now),
    })
}

/// v2 fiat currencies (`GET /v2/currencies`).
fn fiat_currencies() -> Value {
    json!({"data": [
        {"id": "EUR", "name": "Euro", "min_size": "0.01"},
        {"id": "GBP", "name": "British Pound", "min_size": "0.01"},
        {"id": "USD", "name": "US Dollar", "min_size": "0.01"},
    ]})
}

fn crypto_currency_json(code: &str, i: usize) -> Value {
    json!({
        "asset_id": uuid5(&[b"coinbase/asset", code.as_bytes()]).to_string(),
        "code": code,
        "name": currency_name(code),
        "color": format!("#{:06X}", h64(code) & 0xFF_FFFF),
        "sort_index": 100 + i,
        "exponent": exponent(code),
        "type": "crypto",
        "address_regex": address_regex(code),
    })
}

fn crypto_currencies() -> Value {
    let data: Vec<Value> = CURRENCIES
        .iter()
        .enumerate()
        .map(|(i, (c, _, _))| crypto_currency_json(c, i))
        .collect();
    json!({ "data": data })
}

/// `GET /v2/exchange-rates?currency=X`: how much of each currency one X buys.
fn exchange_rates(req: &TrapRequest) -> Value {
    let base = req
        .param("currency")
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| usd_price(c).is_some())
        .unwrap_or_else(|| "USD".into());
    let base_usd = usd_price(&base).unwrap_or(1.0);
    let mut rates = Map::new();
    let codes = ["USD", "EUR", "GBP"]
        .into_iter()
        .chain(CURRENCIES.iter().map(|(c, _, _)| *c));
    for code in codes {
        if let Some(p) = usd_price(code) {
            let r = base_usd / p;
            let s = if r >= 1.0 {
                format!("{r:.8}")
            } else {
                format!("{r:.12}")
            };
            let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
            rates.insert(code.to_string(), Value::String(s));
        }
    }
    json!({"data": {"currency": base, "rates": rates}})
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response()
}

fn v3(status: StatusCode, body: Value) -> Response {
    respond(status, CT_V3, body.to_string())
}

fn v2(status: StatusCode, body: Value) -> Response {
    respond(status, CT_V2, body.to_string())
}

/// Advanced Trade's error shape, e.g. `{"error":"INVALID_ARGUMENT",...}`.
fn v3_error(status: StatusCode, error: &str, message: &str) -> Response {
    v3(
        status,
        json!({"error": error, "error_details": message, "message": message}),
    )
}

/// The v2 (retail API) error shape.
fn v2_error(status: StatusCode, id: &str, message: &str) -> Response {
    v2(status, json!({"errors": [{"id": id, "message": message}]}))
}

fn is_v2(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

fn v2_pagination(limit: usize, path: &str) -> Value {
    json!({
        "ending_before": null, "starting_after": null, "previous_ending_before": null,
        "next_starting_after": null, "limit": limit, "order": "desc",
        "previous_uri": null, "next_uri": null,
        "next_uri_path": null, "resource_path": path,
    })
}

pub(crate) fn ev(s: &str) -> String {
    s.chars().take(EVIDENCE_MAX).collect()
}

/// A JSON value as evidence text: strings as they are, numbers printed.
pub(crate) fn ev_val(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(ev(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first (only) order configuration of an order request: its kind and its fields.
fn order_config(body: &Value) -> Option<(&str, &Map<String, Value>)> {
    body.get("order_configuration")?
        .as_object()?
        .iter()
        .find_map(|(k, v)| v.as_object().map(|o| (k.as_str(), o)))
}

/// `limit_limit_gtc` -> `limit`, `stop_limit_stop_limit_gtd` -> `stop_limit`,
/// `market_market_ioc` -> `market`, `sor_limit_ioc` -> `limit`.
fn order_kind(config: &str) -> &'static str {
    if config.starts_with("stop_limit") {
        "stop_limit"
    } else if config.starts_with("market") {
        "market"
    } else if config.starts_with("trigger_bracket") {
        "bracket"
    } else {
        "limit"
    }
}

pub(crate) fn insert_opt(m: &mut Map<String, Value>, k: &str, v: Option<String>) {
    if let Some(v) = v {
        m.insert(k.into(), Value::String(v));
    }
}

/// The account id of a `/v2/accounts/{id}/...` path.
fn v2_account_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/accounts/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// All account currencies the canary "has": fiat USD and every listed crypto.
fn account_codes() -> impl Iterator<Item = &'static str> {
    std::iter::once("USD").chain(CURRENCIES.iter().map(|(c, _, _)| *c))
}

/// The currency of account `id` (its UUID, or a currency code, which v2 also accepts).
fn account_currency(canary: Uuid, id: &str) -> Option<&'static str> {
    account_codes().find(|c| id.eq_ignore_ascii_case(c) || account_uuid(canary, c) == id)
}

fn balance_of(canary: Uuid, code: &str) -> f64 {
    market::balances(canary)
        .into_iter()
        .find(|(c, _)| *c == code)
        .map_or(0.0, |(_, v)| v)
}

fn v2_currency_obj(code: &str, i: usize) -> Value {
    if code == "USD" {
        json!({"code": "USD", "name": "US Dollar", "color": "#0066cf", "sort_index": 0,
               "exponent": 2, "type": "fiat", "address_regex": "", "asset_id": "",
               "slug": "us-dollar"})
    } else {
        let mut c = crypto_currency_json(code, i);
        if let Some(o) = c.as_object_mut() {
            o.insert(
                "slug".into(),
                Value::String(currency_name(code).to_ascii_lowercase().replace(' ', "-")),
            );
        }
        c
    }
}

fn v2_account_json(canary: Uuid, code: &str, i: usize) -> Value {
    let id = account_uuid(canary, code);
    let created = account_created(canary) + chrono::Duration::minutes(i as i64 * 7);
    json!({
        "id": id,
        "name": format!("{code} Wallet"),
        "primary": code == "BTC",
        "type": if code == "USD" { "fiat" } else { "wallet" },
        "currency": v2_currency_obj(code, i),
        "balance": {"amount": fixed(balance_of(canary, code), exponent(code)), "currency": code},
        "created_at": iso(created),
        "updated_at": iso(created),
        "resource": "account",
        "resource_path": format!("/v2/accounts/{id}"),
        "allow_deposits": true,
        "allow_withdrawals": true,
    })
}

fn v3_account_json(canary: Uuid, code: &str, i: usize) -> Value {
    let created = account_created(canary) + chrono::Duration::minutes(i as i64 * 7);
    json!({
        "uuid": account_uuid(canary, code),
        "name": format!("{code} Wallet"),
        "currency": code,
        "available_balance": {"value": format!("{:.16}", balance_of(canary, code)), "currency": code},
        "default": true,
        "active": true,
        "created_at": iso_micros(created),
        "updated_at": iso_micros(created),
        "deleted_at": null,
        "type": if code == "USD" { "ACCOUNT_TYPE_FIAT" } else { "ACCOUNT_TYPE_CRYPTO" },
        "ready": true,
        "hold": {"value": "0", "currency": code},
        "retail_portfolio_id": portfolio_uuid(canary),
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    })
}

fn address_json(
    canary: Uuid,
    account_id: &str,
    code: &str,
    net: &str,
    now: DateTime<Utc>,
) -> Value {
    let address = market::deposit_address(canary, code, net);
    let id = uuid5(&[
        b"coinbase/address",
        canary.as_bytes(),
        code.as_bytes(),
        net.as_bytes(),
    ]);
    let slug = network_slug(net);
    let created = iso(account_created(canary).max(now - chrono::Duration::days(30)));
    json!({
        "id": id.to_string(),
        "address": address,
        "address_info": {"address": address},
        "name": null,
        "created_at": created,
        "updated_at": created,
        "network": slug,
        "uri_scheme": slug,
        "resource": "address",
        "resource_path": format!("/v2/accounts/{account_id}/addresses/{id}"),
        "warnings": [{
            "type": "correct_address_warning",
            "title": format!("Only send {} ({code}) to this address", currency_name(code)),
            "details": "Sending any other asset, including USD Coin (USDC), will result in permanent loss.",
            "image_url": "",
            "options": [],
        }],
        "qr_code_image_url": "",
        "address_label": format!("{code} address"),
        "default_receive": true,
        "deposit_uri": format!("{slug}:{address}"),
        "callback_url": null,
        "share_address_copy": {"line1": address, "line2": ""},
        "inline_warning": {"text": format!("Only send {code} to this address"), "tooltip": {"title": "", "subtitle": ""}},
    })
}

/// The Advanced Trade order object of a stored order (for `historical/...`).
fn order_json(o: &Order, canary: Uuid) -> Value {
    let status = if o.status == "open" {
        "OPEN"
    } else {
        "CANCELLED"
    };
    let side = o.side.to_ascii_uppercase();
    let price = o.price.clone().unwrap_or_default();
    let (config, order_type) = match o.order_type.as_str() {
        "market" if side == "BUY" => (
            json!({"market_market_ioc": {"quote_size": o.amount}}),
            "MARKET",
        ),
        "market" => (
            json!({"market_market_ioc": {"base_size": o.amount}}),
            "MARKET",
        ),
        "stop_limit" => (
            json!({"stop_limit_stop_limit_gtc": {"base_size": o.amount, "limit_price": price,
                   "stop_price": price, "stop_direction": if side == "BUY" { "STOP_DIRECTION_STOP_DOWN" } else { "STOP_DIRECTION_STOP_UP" }}}),
            "STOP_LIMIT",
        ),
        _ => (
            json!({"limit_limit_gtc": {"base_size": o.amount, "limit_price": price, "post_only": false}}),
            "LIMIT",
        ),
    };
    let hold = match (
        o.price.as_deref().and_then(|p| p.parse::<f64>().ok()),
        o.amount.parse::<f64>(),
    ) {
        (Some(p), Ok(a)) if side == "BUY" && o.status == "open" => format!("{:.8}", p * a),
        (_, Ok(a)) if o.status == "open" => format!("{a}"),
        _ => "0".into(),
    };
    json!({
        "order_id": o.order_id,
        "product_id": o.symbol,
        "user_id": user_uuid(canary),
        "order_configuration": config,
        "side": side,
        "client_order_id": o.client_order_id.clone().unwrap_or_default(),
        "status": status,
        "time_in_force": if order_type == "MARKET" { "IMMEDIATE_OR_CANCEL" } else { "GOOD_UNTIL_CANCELLED" },
        "created_time": iso_micros(o.created_at),
        "completion_percentage": "0",
        "filled_size": "0",
        "average_filled_price": "0",
        "fee": "",
        "number_of_fills": "0",
        "filled_value": "0",
        "pending_cancel": false,
        "size_in_quote": order_type == "MARKET" && side == "BUY",
        "total_fees": "0",
        "size_inclusive_of_fees": false,
        "total_value_after_fees": "0",
        "trigger_status": if order_type == "STOP_LIMIT" { "STOP_PENDING" } else { "INVALID_ORDER_TYPE" },
        "order_type": order_type,
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": false,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": if o.status == "open" { "" } else { "User requested cancel" },
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": hold,
        "is_liquidation": false,
        "last_fill_time": null,
        "edit_history": [],
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": portfolio_uuid(canary),
        "originating_order_id": "",
        "attached_order_id": "",
        "attached_order_configuration": null,
    })
}

// ---------------------------------------------------------------------------------------
// The emulator
// ---------------------------------------------------------------------------------------

impl Coinbase {
    fn unavailable(&self, req: &TrapRequest) -> Response {
        self.reject(req, Rejection::Unavailable)
    }

    async fn create_order(&self, req: &TrapRequest, acct: &Account<'_>, preview: bool) -> Response {
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return v3_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "invalid character looking for beginning of value",
            );
        };
        let product_id = body.get("product_id").and_then(Value::as_str).unwrap_or("");
        let side = body.get("side").and_then(Value::as_str).unwrap_or("");
        let config = order_config(&body);
        let failure = |err: &str, msg: &str, preview_reason: &str| {
            v3(
                StatusCode::OK,
                json!({
                    "success": false,
                    "failure_reason": "UNKNOWN_FAILURE_REASON",
                    "order_id": "",
                    "error_response": {"error": err, "message": msg, "error_details": "",
                                       "preview_failure_reason": preview_reason,
                                       "new_order_failure_reason": err},
                    "order_configuration": body.get("order_configuration").cloned().unwrap_or(Value::Null),
                }),
            )
        };
        if side != "BUY" && side != "SELL" {
            return v3_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid order side",
            );
        }
        let Some(p) = product(product_id) else {
            return failure(
                "INVALID_PRODUCT_ID",
                "Invalid product_id",
                "PREVIEW_INVALID_PRODUCT_ID",
            );
        };
        let Some((kind_key, cfg)) = config else {
            return failure(
                "UNSUPPORTED_ORDER_CONFIGURATION",
                "order configuration is required",
                "PREVIEW_INVALID_ORDER_CONFIG",
            );
        };
        let kind = order_kind(kind_key);
        let base_size = ev_val(cfg.get("base_size"));
        let quote_size = ev_val(cfg.get("quote_size"));
        let limit_price = ev_val(cfg.get("limit_price"));
        let positive = |s: &Option<String>| {
            s.as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v.is_finite() && v > 0.0)
        };
        let amount = if positive(&base_size) {
            base_size.clone()
        } else if positive(&quote_size) {
            quote_size.clone()
        } else {
            None
        };
        let Some(amount) = amount else {
            return failure(
                "INVALID_SIZE_PRECISION",
                "Invalid size",
                "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL",
            );
        };
        if kind != "market" && !positive(&limit_price) {
            return failure(
                "INVALID_LIMIT_PRICE",
                "Invalid limit price",
                "PREVIEW_INVALID_LIMIT_PRICE",
            );
        }
        if preview {
            let a: f64 = amount.parse().unwrap_or(0.0);
            let price = limit_price
                .as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(p.price);
            let (base, quote) = if base_size.is_some() {
                (a, a * price)
            } else {
                (a / price, a)
            };
            let fee = quote * 0.006;
            return v3(
                StatusCode::OK,
                json!({
                    "order_total": format!("{:.8}", quote + fee),
                    "commission_total": format!("{fee:.8}"),
                    "errs": [], "warning": [],
                    "quote_size": format!("{quote:.8}"), "base_size": format!("{base:.8}"),
                    "best_bid": fixed(p.price, p.price_decimals),
                    "best_ask": fixed(p.price, p.price_decimals),
                    "is_max": false, "order_margin_total": "0", "leverage": "1",
                    "long_leverage": "1", "short_leverage": "1", "slippage": "0",
                    "preview_id": Uuid::new_v4().to_string(),
                    "current_liquidation_buffer": "0", "projected_liquidation_buffer": "0",
                    "max_leverage": "", "pnl_configuration": null, "twap_bucket_metadata": null,
                    "position_notional_limit": "", "max_notional_at_requested_leverage": "",
                    "margin_ratio_data": null, "compute_breakdown": null,
                }),
            );
        }
        let client_order_id = ev_val(body.get("client_order_id")).filter(|s| !s.is_empty());
        let order = Order {
            order_id: Uuid::new_v4().to_string(),
            client_order_id: client_order_id.clone(),
            symbol: p.id(),
            side: side.to_ascii_lowercase(),
            order_type: kind.to_string(),
            price: if kind == "market" { None } else { limit_price },
            amount,
            status: "open".into(),
            created_at: acct.now,
        };
        let order = match acct.orders.place(order).await {
            Ok(o) => o,
            Err(_) => return self.unavailable(req),
        };
        v3(
            StatusCode::OK,
            json!({
                "success": true,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order.order_id,
                "success_response": {
                    "order_id": order.order_id,
                    "product_id": order.symbol,
                    "side": side,
                    "client_order_id": order.client_order_id.clone().unwrap_or_default(),
                },
                "order_configuration": body.get("order_configuration").cloned().unwrap_or(Value::Null),
            }),
        )
    }

    async fn batch_cancel(&self, req: &TrapRequest, acct: &Account<'_>) -> Response {
        let ids: Vec<String> = req
            .json_body()
            .and_then(|b| b.get("order_ids").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .take(100)
            .collect();
        if ids.is_empty() {
            return v3_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "order_ids is required",
            );
        }
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let found = match acct.orders.get(&id).await {
                Ok(o) => o,
                Err(_) => return self.unavailable(req),
            };
            let ok = match found {
                Some(o) if o.status == "open" => match acct.orders.cancel(&o.order_id).await {
                    Ok(c) => c.is_some(),
                    Err(_) => return self.unavailable(req),
                },
                _ => false,
            };
            results.push(json!({
                "success": ok,
                "failure_reason": if ok { "UNKNOWN_CANCEL_FAILURE_REASON" } else { "UNKNOWN_CANCEL_ORDER" },
                "order_id": id,
            }));
        }
        v3(StatusCode::OK, json!({ "results": results }))
    }

    async fn v3_private(&self, req: &TrapRequest, acct: &Account<'_>, rest: &str) -> Response {
        let canary = acct.canary_id;
        let now = acct.now;
        let segs: Vec<&str> = rest.split('/').collect();
        let get = req.method == Method::GET;
        let post = req.method == Method::POST;
        match (segs.as_slice(), get, post) {
            (["accounts"], true, _) => {
                let accounts: Vec<Value> = account_codes()
                    .enumerate()
                    .map(|(i, c)| v3_account_json(canary, c, i))
                    .collect();
                let n = accounts.len();
                v3(
                    StatusCode::OK,
                    json!({"accounts": accounts, "has_next": false, "cursor": "", "size": n}),
                )
            }
            (["accounts", id], true, _) => match account_codes()
                .enumerate()
                .find(|(_, c)| account_uuid(canary, c) == *id)
            {
                Some((i, c)) => v3(
                    StatusCode::OK,
                    json!({"account": v3_account_json(canary, c, i)}),
                ),
                None => v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "account not found"),
            },
            (["products"], true, _) => v3(StatusCode::OK, products_list(req)),
            (["products", id], true, _) => match product(id) {
                Some(p) => v3(StatusCode::OK, product_json(&p)),
                None => v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "ProductID is invalid"),
            },
            (["products", id, "ticker"], true, _) => match product(id) {
                Some(p) => v3(StatusCode::OK, ticker_json(&p, now)),
                None => v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "ProductID is invalid"),
            },
            (["products", _, "candles"], true, _) => v3(StatusCode::OK, json!({"candles": []})),
            (["product_book"], true, _) => pricebook_response(req, now),
            (["best_bid_ask"], true, _) => {
                let q = req.query_params();
                let books: Vec<Value> = products()
                    .iter()
                    .filter(|p| {
                        let ids: Vec<&str> = q
                            .iter()
                            .filter(|(k, _)| k == "product_ids")
                            .map(|(_, v)| v.as_str())
                            .collect();
                        ids.is_empty() || ids.contains(&p.id().as_str())
                    })
                    .map(|p| pricebook_json(p, 1, now))
                    .collect();
                v3(StatusCode::OK, json!({ "pricebooks": books }))
            }
            (["transaction_summary"], true, _) => v3(
                StatusCode::OK,
                json!({
                    "total_volume": 18_432.57, "total_fees": 96.41,
                    "fee_tier": {"pricing_tier": "Advanced 2", "usd_from": "10000", "usd_to": "50000",
                                 "taker_fee_rate": "0.004", "maker_fee_rate": "0.0025",
                                 "aop_from": "", "aop_to": ""},
                    "margin_rate": null, "goods_and_services_tax": null,
                    "advanced_trade_only_volume": 18_432.57, "advanced_trade_only_fees": 96.41,
                    "coinbase_pro_volume": 0, "coinbase_pro_fees": 0,
                    "total_balance": "", "has_promo_fee": false,
                }),
            ),
            (["key_permissions"], true, _) => v3(
                StatusCode::OK,
                json!({
                    "can_view": true, "can_trade": true, "can_transfer": true,
                    "portfolio_uuid": portfolio_uuid(canary), "portfolio_type": "DEFAULT",
                }),
            ),
            (["portfolios"], true, _) => v3(
                StatusCode::OK,
                json!({"portfolios": [{"name": "Default", "uuid": portfolio_uuid(canary),
                                       "type": "DEFAULT", "deleted": false}]}),
            ),
            (["payment_methods"], true, _) => v3(StatusCode::OK, json!({"payment_methods": []})),
            (["orders"], _, true) => self.create_order(req, acct, false).await,
            (["orders", "preview"], _, true) => self.create_order(req, acct, true).await,
            (["orders", "batch_cancel"], _, true) => self.batch_cancel(req, acct).await,
            (["orders", "historical", "batch"], true, _) => {
                let q = req.query_params();
                let statuses: Vec<&str> = q
                    .iter()
                    .filter(|(k, _)| k == "order_status")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let product_ids: Vec<&str> = q
                    .iter()
                    .filter(|(k, _)| k == "product_id" || k == "product_ids")
                    .map(|(_, v)| v.as_str())
                    .collect();
                // Only open orders are listable: the order book does not enumerate others.
                let orders = if statuses.is_empty() || statuses.contains(&"OPEN") {
                    match acct.orders.open_orders(None).await {
                        Ok(o) => o,
                        Err(_) => return self.unavailable(req),
                    }
                } else {
                    Vec::new()
                };
                let list: Vec<Value> = orders
                    .iter()
                    .filter(|o| product_ids.is_empty() || product_ids.contains(&o.symbol.as_str()))
                    .map(|o| order_json(o, canary))
                    .collect();
                v3(
                    StatusCode::OK,
                    json!({"orders": list, "sequence": "0", "has_next": false, "cursor": ""}),
                )
            }
            (["orders", "historical", "fills"], true, _) => {
                v3(StatusCode::OK, json!({"fills": [], "cursor": ""}))
            }
            (["orders", "historical", id], true, _) => match acct.orders.get(id).await {
                Ok(Some(o)) => v3(StatusCode::OK, json!({"order": order_json(&o, canary)})),
                Ok(None) => v3(
                    StatusCode::NOT_FOUND,
                    json!({"error": "NOT_FOUND",
                           "error_details": "order with this orderID was not found",
                           "message": "order with this orderID was not found"}),
                ),
                Err(_) => self.unavailable(req),
            },
            (["portfolios", "move_funds"], _, true) => {
                let b = req.json_body().unwrap_or(Value::Null);
                v3(
                    StatusCode::OK,
                    json!({
                        "source_portfolio_uuid": b.get("source_portfolio_uuid").cloned().unwrap_or(Value::Null),
                        "target_portfolio_uuid": b.get("target_portfolio_uuid").cloned().unwrap_or(Value::Null),
                    }),
                )
            }
            _ => self.reject(req, Rejection::NotFound),
        }
    }

    async fn v2_private(&self, req: &TrapRequest, acct: &Account<'_>, rest: &str) -> Response {
        let canary = acct.canary_id;
        let now = acct.now;
        let segs: Vec<&str> = rest.split('/').collect();
        let get = req.method == Method::GET;
        let post = req.method == Method::POST;
        let not_found = || v2_error(StatusCode::NOT_FOUND, "not_found", "Not found");
        let limit = req
            .param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(25)
            .clamp(1, 300);
        match (segs.as_slice(), get, post) {
            (["accounts"], true, _) => {
                let data: Vec<Value> = account_codes()
                    .enumerate()
                    .map(|(i, c)| v2_account_json(canary, c, i))
                    .collect();
                v2(
                    StatusCode::OK,
                    json!({"pagination": v2_pagination(limit, "/v2/accounts"), "data": data}),
                )
            }
            (["accounts", id], true, _) => match account_codes()
                .enumerate()
                .find(|(_, c)| account_currency(canary, id) == Some(*c))
            {
                Some((i, c)) => v2(
                    StatusCode::OK,
                    json!({"data": v2_account_json(canary, c, i)}),
                ),
                None => not_found(),
            },
            (["accounts", id, "addresses"], _, _) if get || post => {
                let Some(code) = account_currency(canary, id).filter(|c| *c != "USD") else {
                    return not_found();
                };
                let acc = account_uuid(canary, code);
                if get {
                    let data: Vec<Value> = networks_of(code)
                        .iter()
                        .map(|n| address_json(canary, &acc, code, n, now))
                        .collect();
                    let path = format!("/v2/accounts/{acc}/addresses");
                    v2(
                        StatusCode::OK,
                        json!({"pagination": v2_pagination(limit, &path), "data": data}),
                    )
                } else {
                    let wanted = req
                        .json_body()
                        .and_then(|b| ev_val(b.get("network")))
                        .unwrap_or_default();
                    let nets = networks_of(code);
                    let net = nets
                        .iter()
                        .find(|n| {
                            n.eq_ignore_ascii_case(&wanted)
                                || network_slug(n).eq_ignore_ascii_case(&wanted)
                        })
                        .or(nets.first())
                        .copied()
                        .unwrap_or("ETH");
                    v2(
                        StatusCode::CREATED,
                        json!({"data": address_json(canary, &acc, code, net, now)}),
                    )
                }
            }
            (["accounts", id, "transactions"], true, _) => {
                if account_currency(canary, id).is_none() {
                    return not_found();
                }
                let path = format!("/v2/accounts/{id}/transactions");
                v2(
                    StatusCode::OK,
                    json!({"pagination": v2_pagination(limit, &path), "data": []}),
                )
            }
            (["accounts", id, "transactions"], _, true) => self.v2_send(req, acct, id),
            (["accounts", id, kind], true, _)
                if matches!(*kind, "buys" | "sells" | "deposits" | "withdrawals") =>
            {
                if account_currency(canary, id).is_none() {
                    return not_found();
                }
                let path = format!("/v2/accounts/{id}/{kind}");
                v2(
                    StatusCode::OK,
                    json!({"pagination": v2_pagination(limit, &path), "data": []}),
                )
            }
            (["payment-methods"], true, _) => v2(
                StatusCode::OK,
                json!({"pagination": v2_pagination(limit, "/v2/payment-methods"), "data": []}),
            ),
            (["user"], true, _) => {
                let uid = user_uuid(canary);
                v2(
                    StatusCode::OK,
                    json!({"data": {
                        "id": uid, "name": "User", "username": null, "profile_location": null,
                        "profile_bio": null, "profile_url": null,
                        "avatar_url": "https://images.coinbase.com/avatar?s=128",
                        "resource": "user", "resource_path": "/v2/user",
                        "legacy_id": null, "time_zone": "UTC", "native_currency": "USD",
                        "bitcoin_unit": "BTC", "state": null, "country": {"code": "US", "name": "United States of America", "is_in_europe": false},
                        "nationality": {"code": "US", "name": "United States of America"},
                        "region_supports_fiat_transfers": true, "region_supports_crypto_to_crypto_transfers": true,
                        "created_at": iso(account_created(canary)),
                    }}),
                )
            }
            (["user", "auth"], true, _) => v2(
                StatusCode::OK,
                json!({"data": {
                    "method": "api_key",
                    "scopes": ["wallet:accounts:read", "wallet:addresses:read", "wallet:addresses:create",
                               "wallet:buys:read", "wallet:buys:create", "wallet:deposits:read",
                               "wallet:sells:read", "wallet:sells:create", "wallet:transactions:read",
                               "wallet:transactions:send", "wallet:transactions:transfer",
                               "wallet:user:read", "wallet:withdrawals:read", "wallet:withdrawals:create"],
                    "oauth_meta": {},
                }}),
            ),
            _ => self.reject(req, Rejection::NotFound),
        }
    }

    /// `POST /v2/accounts/{id}/transactions`: `send` (withdraw to an address) or
    /// `transfer` (between own accounts). Accepted and left pending.
    fn v2_send(&self, req: &TrapRequest, acct: &Account<'_>, id: &str) -> Response {
        let canary = acct.canary_id;
        let now = acct.now;
        let Some(acc_code) = account_currency(canary, id) else {
            return v2_error(StatusCode::NOT_FOUND, "not_found", "Not found");
        };
        let Some(body) = req.json_body().filter(Value::is_object) else {
            return v2_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request body",
            );
        };
        let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "send" | "transfer") {
            return v2_error(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "Please specify a valid transaction type",
            );
        }
        let Some(to) = ev_val(body.get("to")).filter(|s| !s.is_empty()) else {
            return v2_error(StatusCode::BAD_REQUEST, "param_required", "to is required");
        };
        let amount = ev_val(body.get("amount")).unwrap_or_default();
        let Some(a) = amount
            .parse::<f64>()
            .ok()
            .filter(|a| a.is_finite() && *a > 0.0)
        else {
            return v2_error(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "Please enter a valid amount",
            );
        };
        let code = ev_val(body.get("currency"))
            .map(|c| c.to_ascii_uppercase())
            .and_then(|c| account_codes().find(|x| *x == c))
            .unwrap_or(acc_code);
        let e = exponent(code);
        let net = ev_val(body.get("network"))
            .and_then(|w| {
                networks_of(code)
                    .iter()
                    .find(|n| {
                        n.eq_ignore_ascii_case(&w) || network_slug(n).eq_ignore_ascii_case(&w)
                    })
                    .copied()
            })
            .or_else(|| networks_of(code).first().copied())
            .unwrap_or("ETH");
        let fee = usd_price(code).map_or(0.0, |p| (1.5 / p).max(10f64.powi(-(e as i32))));
        let tx = Uuid::new_v4().to_string();
        let usd = usd_price(code).unwrap_or(0.0) * (a + fee);
        let acc = account_uuid(canary, acc_code);
        let data = json!({
            "id": tx,
            "type": kind,
            "status": "pending",
            "amount": {"amount": format!("-{}", fixed(a + fee, e)), "currency": code},
            "native_amount": {"amount": format!("-{usd:.2}"), "currency": "USD"},
            "description": body.get("description").cloned().unwrap_or(Value::Null),
            "created_at": iso(now),
            "updated_at": iso(now),
            "resource": "transaction",
            "resource_path": format!("/v2/accounts/{acc}/transactions/{tx}"),
            "instant_exchange": false,
            "network": {
                "status": "pending",
                "status_description": "Pending (est. less than 10 minutes)",
                "transaction_fee": {"amount": fixed(fee, e), "currency": code},
                "transaction_amount": {"amount": fixed(a, e), "currency": code},
                "confirmations": 0,
                "network_name": network_slug(net),
            },
            "to": {
                "resource": format!("{}_address", network_slug(net)),
                "address": to,
                "currency": code,
                "address_info": {"address": to},
            },
            "idem": body.get("idem").cloned().unwrap_or_else(|| Value::String(Uuid::new_v4().to_string())),
            "details": {
                "title": format!("Sent {code}"),
                "subtitle": format!("To {code} address on {} network", network_slug(net)),
                "header": format!("Sent {} {code} (${usd:.2})", fixed(a, e)),
                "health": "warning",
            },
            "hide_native_amount": false,
        });
        v2(StatusCode::CREATED, json!({ "data": data }))
    }
}

fn pricebook_response(req: &TrapRequest, now: DateTime<Utc>) -> Response {
    let id = req.param("product_id").unwrap_or_default();
    let Some(p) = product(&id) else {
        return v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "ProductID is invalid");
    };
    let levels = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 50);
    let tick = 10f64.powi(-(p.price_decimals as i32));
    v3(
        StatusCode::OK,
        json!({
            "pricebook": pricebook_json(&p, levels, now),
            "last": fixed(p.price, p.price_decimals),
            "mid_market": fixed(p.price, p.price_decimals),
            "spread_bps": format!("{:.6}", 2.0 * tick / p.price * 10_000.0),
            "spread_absolute": fixed(2.0 * tick, p.price_decimals),
        }),
    )
}

#[async_trait::async_trait]
impl Emulator for Coinbase {
    fn exchange(&self) -> Exchange {
        Exchange::Coinbase
    }

    /// The key name from the JWT (`sub`, else the header's `kid`), read without verifying.
    /// Legacy HMAC keys (`CB-ACCESS-KEY`) are reported too, so their use is recorded.
    fn api_key(&self, req: &TrapRequest) -> Option<String> {
        if let Some(token) = bearer(req) {
            let jwt = parse_jwt(token)?;
            let key = jwt
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .or_else(|| jwt.header.get("kid").and_then(Value::as_str))?;
            return (!key.is_empty()).then(|| ev(key));
        }
        req.header("cb-access-key")
            .filter(|k| !k.is_empty())
            .map(ev)
    }

    fn public(&self, req: &TrapRequest) -> Option<Response> {
        if req.method != Method::GET {
            return None;
        }
        let now = req.received_at;
        let path = req.path.trim_end_matches('/');
        if let Some(rest) = path.strip_prefix("/api/v3/brokerage/") {
            let segs: Vec<&str> = rest.split('/').collect();
            return match segs.as_slice() {
                ["time"] => Some(v3(
                    StatusCode::OK,
                    json!({"iso": iso(now), "epochSeconds": now.timestamp().to_string(),
                           "epochMillis": now.timestamp_millis().to_string()}),
                )),
                ["market", "products"] => Some(v3(StatusCode::OK, products_list(req))),
                ["market", "products", id] => Some(match product(id) {
                    Some(p) => v3(StatusCode::OK, product_json(&p)),
                    None => v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "ProductID is invalid"),
                }),
                ["market", "products", id, "ticker"] => Some(match product(id) {
                    Some(p) => v3(StatusCode::OK, ticker_json(&p, now)),
                    None => v3_error(StatusCode::NOT_FOUND, "NOT_FOUND", "ProductID is invalid"),
                }),
                ["market", "products", _, "candles"] => {
                    Some(v3(StatusCode::OK, json!({"candles": []})))
                }
                ["market", "product_book"] => Some(pricebook_response(req, now)),
                _ => None,
            };
        }
        if let Some(rest) = path.strip_prefix("/v2/") {
            let segs: Vec<&str> = rest.split('/').collect();
            return match segs.as_slice() {
                ["currencies"] => Some(v2(StatusCode::OK, fiat_currencies())),
                ["currencies", "crypto"] => Some(v2(StatusCode::OK, crypto_currencies())),
                ["exchange-rates"] => Some(v2(StatusCode::OK, exchange_rates(req))),
                ["time"] => Some(v2(
                    StatusCode::OK,
                    json!({"data": {"iso": iso(now), "epoch": now.timestamp()}}),
                )),
                ["prices", pair, kind] if matches!(*kind, "buy" | "sell" | "spot") => {
                    let (b, q) = pair.split_once('-').unwrap_or((pair, "USD"));
                    let (b, q) = (b.to_ascii_uppercase(), q.to_ascii_uppercase());
                    Some(match (usd_price(&b), usd_price(&q)) {
                        (Some(pb), Some(pq)) => {
                            let spread = match *kind {
                                "buy" => 1.005,
                                "sell" => 0.995,
                                _ => 1.0,
                            };
                            v2(
                                StatusCode::OK,
                                json!({"data": {"amount": format!("{:.8}", pb / pq * spread),
                                                "base": b, "currency": q}}),
                            )
                        }
                        _ => v2_error(StatusCode::NOT_FOUND, "not_found", "Invalid currency"),
                    })
                }
                _ => None,
            };
        }
        None
    }

    fn check_signature(&self, req: &TrapRequest, creds: &Credentials) -> SigCheck {
        // The server time is the request's arrival, as the exchange measures it.
        check_jwt(req, creds, req.received_at.timestamp())
    }

    /// v3 (and anything outside `/v2`): authentication failures are HTTP 401 with the
    /// plain-text body `Unauthorized` (exchanges.md §3; Coinbase gives no reason). *Unsure*:
    /// whether the real body ends with a newline (Go's `http.Error` adds one) and its
    /// exact content type. v2: the `authentication_error` JSON shape; the message for
    /// `StaleTimestamp` is the one ccxt's exception table quotes, the others are guesses.
    fn reject(&self, req: &TrapRequest, why: Rejection) -> Response {
        const UNAUTH: &str = "Unauthorized";
        if is_v2(&req.path) {
            let (status, body) = match why {
                Rejection::MissingKey => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"id":"authentication_error","message":"authentication required"}]}"#,
                ),
                Rejection::MalformedKey | Rejection::UnknownKey => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"id":"authentication_error","message":"invalid api key"}]}"#,
                ),
                Rejection::MissingSignature
                | Rejection::BadSignature
                | Rejection::BadPassphrase => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"id":"authentication_error","message":"invalid signature"}]}"#,
                ),
                Rejection::StaleTimestamp => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"errors":[{"id":"authentication_error","message":"request timestamp expired"}]}"#,
                ),
                Rejection::NotFound => (
                    StatusCode::NOT_FOUND,
                    r#"{"errors":[{"id":"not_found","message":"Not found"}]}"#,
                ),
                Rejection::Unavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"errors":[{"id":"internal_server_error","message":"Internal server error"}]}"#,
                ),
            };
            return crate::emulator::raw(status, CT_V2, body);
        }
        match why {
            Rejection::NotFound => crate::emulator::raw(
                StatusCode::NOT_FOUND,
                CT_V3,
                r#"{"error":"NOT_FOUND","error_details":"Not Found","message":"Not Found"}"#,
            ),
            Rejection::Unavailable => crate::emulator::raw(
                StatusCode::SERVICE_UNAVAILABLE,
                CT_V3,
                r#"{"error":"UNAVAILABLE","error_details":"service unavailable","message":"service unavailable"}"#,
            ),
            _ => crate::emulator::raw(
                StatusCode::UNAUTHORIZED,
                "text/plain; charset=utf-8",
                UNAUTH,
            ),
        }
    }

    fn classify(&self, req: &TrapRequest) -> Action {
        let path = req.path.trim_end_matches('/');
        let post = req.method == Method::POST;
        let read = || Action {
            class: ActionClass::Read,
            params: json!({}),
        };
        if let Some(rest) = path.strip_prefix("/api/v3/brokerage/") {
            return match (rest, post) {
                ("orders" | "orders/preview" | "orders/edit" | "orders/edit_preview", true) => {
                    let body = req.json_body().unwrap_or(Value::Null);
                    let mut p = Map::new();
                    insert_opt(&mut p, "symbol", ev_val(body.get("product_id")));
                    insert_opt(
                        &mut p,
                        "side",
                        ev_val(body.get("side")).map(|s| s.to_ascii_lowercase()),
                    );
                    if let Some((k, cfg)) = order_config(&body) {
                        p.insert("type".into(), Value::String(order_kind(k).into()));
                        p.insert("order_configuration".into(), Value::String(ev(k)));
                        insert_opt(&mut p, "quantity", ev_val(cfg.get("base_size")));
                        insert_opt(&mut p, "quote_quantity", ev_val(cfg.get("quote_size")));
                        insert_opt(&mut p, "price", ev_val(cfg.get("limit_price")));
                        insert_opt(&mut p, "stop_price", ev_val(cfg.get("stop_price")));
                    }
                    insert_opt(
                        &mut p,
                        "client_order_id",
                        ev_val(body.get("client_order_id")),
                    );
                    insert_opt(&mut p, "order_id", ev_val(body.get("order_id")));
                    insert_opt(&mut p, "price", ev_val(body.get("price")));
                    insert_opt(&mut p, "quantity", ev_val(body.get("size")));
                    if rest != "orders" {
                        p.insert("endpoint".into(), Value::String(rest.into()));
                    }
                    Action {
                        class: ActionClass::Trade,
                        params: Value::Object(p),
                    }
                }
                ("orders/close_position", true) => {
                    let body = req.json_body().unwrap_or(Value::Null);
                    let mut p = Map::new();
                    insert_opt(&mut p, "symbol", ev_val(body.get("product_id")));
                    insert_opt(&mut p, "quantity", ev_val(body.get("size")));
                    insert_opt(
                        &mut p,
                        "client_order_id",
                        ev_val(body.get("client_order_id")),
                    );
                    p.insert("type".into(), Value::String("close_position".into()));
                    Action {
                        class: ActionClass::Trade,
                        params: Value::Object(p),
                    }
                }
                ("orders/batch_cancel", true) => {
                    let ids: Vec<Value> = req
                        .json_body()
                        .and_then(|b| b.get("order_ids").and_then(Value::as_array).cloned())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|v| v.as_str().map(|s| Value::String(ev(s))))
                        .take(20)
                        .collect();
                    Action {
                        class: ActionClass::Cancel,
                        params: json!({ "order_ids": ids }),
                    }
                }
                ("portfolios/move_funds", true) => {
                    let b = req.json_body().unwrap_or(Value::Null);
                    let funds = b.get("funds").cloned().unwrap_or(Value::Null);
                    let mut p = Map::new();
                    insert_opt(&mut p, "coin", ev_val(funds.get("currency")));
                    insert_opt(&mut p, "amount", ev_val(funds.get("value")));
                    insert_opt(&mut p, "from", ev_val(b.get("source_portfolio_uuid")));
                    insert_opt(&mut p, "to", ev_val(b.get("target_portfolio_uuid")));
                    Action {
                        class: ActionClass::Transfer,
                        params: Value::Object(p),
                    }
                }
                (r, true) if r.starts_with("convert/") => {
                    let b = req.json_body().unwrap_or(Value::Null);
                    let mut p = Map::new();
                    insert_opt(&mut p, "from", ev_val(b.get("from_account")));
                    insert_opt(&mut p, "to", ev_val(b.get("to_account")));
                    insert_opt(&mut p, "quantity", ev_val(b.get("amount")));
                    p.insert("type".into(), Value::String("convert".into()));
                    Action {
                        class: ActionClass::Trade,
                        params: Value::Object(p),
                    }
                }
                ("key_permissions", false) => Action {
                    class: ActionClass::Permissions,
                    params: json!({}),
                },
                _ => read(),
            };
        }
        if path == "/v2/user/auth" {
            return Action {
                class: ActionClass::Permissions,
                params: json!({}),
            };
        }
        if let Some(id) = v2_account_id(path) {
            let tail = path
                .strip_prefix("/v2/accounts/")
                .and_then(|r| r.split_once('/'))
                .map_or("", |(_, t)| t);
            // Account ids are per-canary UUIDs, so only a code-as-id names the coin here.
            let coin_of_id = account_codes()
                .find(|c| id.eq_ignore_ascii_case(c))
                .map(str::to_string);
            match (tail, post) {
                ("addresses", _) => {
                    let mut p = Map::new();
                    p.insert("account_id".into(), Value::String(ev(id)));
                    insert_opt(&mut p, "coin", coin_of_id);
                    if post {
                        let b = req.json_body().unwrap_or(Value::Null);
                        insert_opt(&mut p, "network", ev_val(b.get("network")));
                    }
                    return Action {
                        class: ActionClass::Address,
                        params: Value::Object(p),
                    };
                }
                ("transactions" | "withdrawals", true) => {
                    let b = req.json_body().unwrap_or(Value::Null);
                    let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
                    let mut p = Map::new();
                    insert_opt(&mut p, "coin", ev_val(b.get("currency")).or(coin_of_id));
                    insert_opt(&mut p, "address", ev_val(b.get("to")));
                    insert_opt(&mut p, "network", ev_val(b.get("network")));
                    insert_opt(&mut p, "amount", ev_val(b.get("amount")));
                    insert_opt(&mut p, "tag", ev_val(b.get("destination_tag")));
                    insert_opt(&mut p, "payment_method", ev_val(b.get("payment_method")));
                    p.insert("account_id".into(), Value::String(ev(id)));
                    let class = if tail == "withdrawals" || kind == "send" {
                        ActionClass::Withdraw
                    } else {
                        ActionClass::Transfer
                    };
                    if !kind.is_empty() {
                        p.insert("type".into(), Value::String(ev(kind)));
                    }
                    return Action {
                        class,
                        params: Value::Object(p),
                    };
                }
                _ => {}
            }
        }
        read()
    }

    async fn private(&self, req: &TrapRequest, account: &Account<'_>) -> Response {
        let path = req.path.trim_end_matches('/');
        if let Some(rest) = path.strip_prefix("/api/v3/brokerage/") {
            return self.v3_private(req, account, rest).await;
        }
        if let Some(rest) = path.strip_prefix("/v2/") {
            return self.v2_private(req, account, rest).await;
        }
        self.reject(req, Rejection::NotFound)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::emulator::MemoryOrderBook;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, HeaderValue};
    use keytrap_core::MasterKey;

    /// A key made by Python `cryptography`, and JWTs that ccxt 4.5.90 `coinbase.sign()`
    /// produced with it offline (`ex.seconds = lambda: 1700000000`, base URL
    /// `http://127.0.0.1:8701/coinbase`); generator: `e2e/coinbase_vectors.py`.
    const CCXT_PEM: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKMaSvwDifM1tUjLMXfK27/WT8Qv2brP4YNlKNTkwAN/oAoGCCqGSM49\nAwEHoUQDQgAEPugnzYNlUyfuEwTlkobcF+oKwPGstV97fcin01368+zjhfvflKzy\nt7sdliS2pKoQugkXOkr9r9Y9kvJkQounQA==\n-----END EC PRIVATE KEY-----\n";
    const CCXT_NAME: &str = "organizations/0d5c3e2a-7a39-4a43-9f0e-52b0e5f3b8a1/apiKeys/4b8a7e61-2c1d-4e9f-8a3b-6d5e4f3a2b1c";
    const CCXT_T: i64 = 1_700_000_000;
    /// (method, path with query as received, body, Authorization).
    const CCXT_VECTORS: &[(&str, &str, &str, &str)] = &[
        ("GET", "/coinbase/api/v3/brokerage/transaction_summary", "", "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwibm9uY2UiOiI5MDc5NmI0NmUyMjQyZTNlNjQ2OGRiZjAxMmZhYjE4OSJ9.eyJhdWQiOlsicmV0YWlsX3Jlc3RfYXBpX3Byb3h5Il0sImlzcyI6ImNvaW5iYXNlLWNsb3VkIiwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxMjAsInN1YiI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwiaWF0IjoxNzAwMDAwMDAwLCJ1cmkiOiJHRVQgaHR0cDovLzEyNy4wLjAuMTo4NzAxL2NvaW5iYXNlL2FwaS92My9icm9rZXJhZ2UvdHJhbnNhY3Rpb25fc3VtbWFyeSJ9.pbA-itqXcAVf-K6Xj9EvxQzkJR1vXu_dzk97dy07ZTMx097qtD_KLocMmVoK9McB6wrg4sYpkTavmN-nDTLldA"),
        ("GET", "/coinbase/v2/accounts?limit=250", "", "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwibm9uY2UiOiJkODRmZDFiY2VlZjRiMWU5YzhiZGRiMTgwYzc2Y2Q0NyJ9.eyJhdWQiOlsicmV0YWlsX3Jlc3RfYXBpX3Byb3h5Il0sImlzcyI6ImNvaW5iYXNlLWNsb3VkIiwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxMjAsInN1YiI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwiaWF0IjoxNzAwMDAwMDAwLCJ1cmkiOiJHRVQgaHR0cDovLzEyNy4wLjAuMTo4NzAxL2NvaW5iYXNlL3YyL2FjY291bnRzIn0._0T1-jdVGsp-mqk0gMrkLEAYuSlT7d5hsDKjGWiINScB3ustAuaOHSMEgRkzt_gdWWffyE0_JcIfsV22o_0dlw"),
        ("POST", "/coinbase/api/v3/brokerage/orders", r#"{"client_order_id":"ccxt-1b4e28ba-2fa1-11d2-883f-0016d3cca427","product_id":"BTC-USD","side":"BUY","order_configuration":{"limit_limit_gtc":{"base_size":"0.001","limit_price":"50000","post_only":false}}}"#, "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwibm9uY2UiOiIzZGRkOTA2OThmM2MwNzdjYmY2ZWNmYTkxMmI2ZTcxYiJ9.eyJhdWQiOlsicmV0YWlsX3Jlc3RfYXBpX3Byb3h5Il0sImlzcyI6ImNvaW5iYXNlLWNsb3VkIiwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxMjAsInN1YiI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwiaWF0IjoxNzAwMDAwMDAwLCJ1cmkiOiJQT1NUIGh0dHA6Ly8xMjcuMC4wLjE6ODcwMS9jb2luYmFzZS9hcGkvdjMvYnJva2VyYWdlL29yZGVycyJ9.n8C-ms0LQyk0_6_011r68IapKRdLpqlfVTiXl3hWTW5Ug1QQVgUCkpR58rOIAw-pbuLwVx3n00zoiaMrn4V0uw"),
        ("GET", "/coinbase/api/v3/brokerage/orders/historical/batch?order_status=OPEN&limit=100", "", "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwibm9uY2UiOiJmOWIzZDU1NzExNTU3YTUxZTlhZWVjMThhNjlkMzRmOCJ9.eyJhdWQiOlsicmV0YWlsX3Jlc3RfYXBpX3Byb3h5Il0sImlzcyI6ImNvaW5iYXNlLWNsb3VkIiwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxMjAsInN1YiI6Im9yZ2FuaXphdGlvbnMvMGQ1YzNlMmEtN2EzOS00YTQzLTlmMGUtNTJiMGU1ZjNiOGExL2FwaUtleXMvNGI4YTdlNjEtMmMxZC00ZTlmLThhM2ItNmQ1ZTRmM2EyYjFjIiwiaWF0IjoxNzAwMDAwMDAwLCJ1cmkiOiJHRVQgaHR0cDovLzEyNy4wLjAuMTo4NzAxL2NvaW5iYXNlL2FwaS92My9icm9rZXJhZ2Uvb3JkZXJzL2hpc3RvcmljYWwvYmF0Y2gifQ.D18PB44Ki80h9_iaetsW64ucvwOe_dMjVCD_yVtUi6ZKKT--IeRS82WYCvqVTCCZERqa0dWYyOhsa-GVIjK7Lg"),
    ];

    /// A request as the shared path builds it; `full` is the path as received (prefix
    /// `/coinbase` included) with its query.
    fn req(method: &str, full: &str, body: &str, auth: Option<&str>) -> TrapRequest {
        let (full_path, query) = match full.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (full.to_string(), None),
        };
        let mut headers = HeaderMap::new();
        if let Some(a) = auth {
            headers.insert("authorization", HeaderValue::from_str(a).unwrap());
        }
        TrapRequest {
            exchange: Exchange::Coinbase,
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path: full_path
                .strip_prefix("/coinbase")
                .unwrap_or(&full_path)
                .to_string(),
            full_path,
            query,
            headers,
            body: Bytes::from(body.to_string()),
            host: "127.0.0.1:8701".into(),
            source_ip: "203.0.113.7".parse().unwrap(),
            received_at: Utc::now(),
        }
    }

    fn ccxt_creds() -> Credentials {
        Credentials {
            api_key: CCXT_NAME.into(),
            api_secret: CCXT_PEM.into(),
            passphrase: None,
        }
    }

    fn canary() -> (Uuid, Credentials) {
        let id = Uuid::now_v7();
        let creds = MasterKey::from_bytes([7; 32])
            .keys()
            .credentials(Exchange::Coinbase, id);
        (id, creds)
    }

    /// A request signed now with the canary's key, as ccxt would sign it.
    fn signed(method: &str, full: &str, body: &str, creds: &Credentials) -> TrapRequest {
        let url = format!("http://127.0.0.1:8701{full}");
        let t = Utc::now().timestamp();
        let jwt = create_jwt(&creds.api_key, &creds.api_secret, method, &url, t).unwrap();
        req(method, full, body, Some(&format!("Bearer {jwt}")))
    }

    async fn body_json(r: Response) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn body_raw(r: Response) -> (StatusCode, String, String) {
        use http_body_util::BodyExt;
        let status = r.status();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn ccxt_generated_jwts_verify() {
        for (m, p, b, a) in CCXT_VECTORS {
            let r = req(m, p, b, Some(a));
            assert_eq!(Coinbase.api_key(&r).as_deref(), Some(CCXT_NAME));
            assert_eq!(
                check_jwt(&r, &ccxt_creds(), CCXT_T + 5),
                SigCheck::Valid,
                "{p}"
            );
            // Expired two minutes later (exp = nbf + 120).
            assert_eq!(
                check_jwt(&r, &ccxt_creds(), CCXT_T + 200),
                SigCheck::Invalid(Rejection::StaleTimestamp)
            );
            // Not yet valid well before nbf.
            assert_eq!(
                check_jwt(&r, &ccxt_creds(), CCXT_T - 100),
                SigCheck::Invalid(Rejection::StaleTimestamp)
            );
        }
    }

    #[test]
    fn ccxt_jwt_bound_to_method_and_path() {
        let (m, p, b, a) = CCXT_VECTORS[0];
        let creds = ccxt_creds();
        let other_path = req(m, "/coinbase/api/v3/brokerage/accounts", b, Some(a));
        assert_eq!(
            check_jwt(&other_path, &creds, CCXT_T),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        let other_method = req("POST", p, b, Some(a));
        assert_eq!(
            check_jwt(&other_method, &creds, CCXT_T),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // A different key (the canary's) does not verify ccxt's token.
        let (_, canary_creds) = canary();
        let mut wrong = creds.clone();
        wrong.api_secret = canary_creds.api_secret;
        assert_eq!(
            check_jwt(&req(m, p, b, Some(a)), &wrong, CCXT_T),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Tampered claims.
        let parts: Vec<&str> = a.trim_start_matches("Bearer ").split('.').collect();
        let claims = String::from_utf8(b64url(parts[1]).unwrap())
            .unwrap()
            .replace("coinbase-cloud", "cdp");
        let forged = format!(
            "Bearer {}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims),
            parts[2]
        );
        assert_eq!(
            check_jwt(&req(m, p, b, Some(&forged)), &creds, CCXT_T),
            SigCheck::Invalid(Rejection::BadSignature)
        );
    }

    #[test]
    fn canary_key_signed_now_is_valid_and_checked() {
        let (_, creds) = canary();
        let r = signed(
            "GET",
            "/coinbase/api/v3/brokerage/accounts?limit=250",
            "",
            &creds,
        );
        assert_eq!(
            Coinbase.api_key(&r).as_deref(),
            Some(creds.api_key.as_str())
        );
        assert_eq!(Coinbase.check_signature(&r, &creds), SigCheck::Valid);
        // Host-routed (no prefix): path and full path are the same.
        let url = "https://api.coinbase.com/v2/accounts?limit=250";
        let jwt = create_jwt(
            &creds.api_key,
            &creds.api_secret,
            "GET",
            url,
            Utc::now().timestamp(),
        )
        .unwrap();
        let mut r = req(
            "GET",
            "/v2/accounts?limit=250",
            "",
            Some(&format!("Bearer {jwt}")),
        );
        r.host = "api.coinbase.com".into();
        assert_eq!(Coinbase.check_signature(&r, &creds), SigCheck::Valid);
        // Wrong secret: another canary's key.
        let (_, other) = canary();
        let mut wrong = creds.clone();
        wrong.api_secret = other.api_secret;
        assert_eq!(
            Coinbase.check_signature(&r, &wrong),
            SigCheck::Invalid(Rejection::BadSignature)
        );
        // Stale: signed 10 minutes ago.
        let jwt = create_jwt(
            &creds.api_key,
            &creds.api_secret,
            "GET",
            url,
            Utc::now().timestamp() - 600,
        )
        .unwrap();
        let r = req(
            "GET",
            "/v2/accounts?limit=250",
            "",
            Some(&format!("Bearer {jwt}")),
        );
        assert_eq!(
            Coinbase.check_signature(&r, &creds),
            SigCheck::Invalid(Rejection::StaleTimestamp)
        );
        // Missing: a token without a signature part, or no Authorization at all.
        let (h, c) = jwt.rsplit_once('.').unwrap().0.split_once('.').unwrap();
        let unsigned = format!("Bearer {h}.{c}.");
        let r = req("GET", "/v2/accounts", "", Some(&unsigned));
        assert_eq!(
            Coinbase.api_key(&r).as_deref(),
            Some(creds.api_key.as_str())
        );
        assert_eq!(Coinbase.check_signature(&r, &creds), SigCheck::Missing);
        let r = req("GET", "/v2/accounts", "", None);
        assert_eq!(Coinbase.api_key(&r), None);
        assert_eq!(Coinbase.check_signature(&r, &creds), SigCheck::Missing);
    }

    #[test]
    fn garbage_never_panics() {
        let (_, creds) = canary();
        for a in [
            "Bearer",
            "Bearer .",
            "Bearer a.b.c",
            "Bearer ....",
            "Basic abc",
            "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOjF9.AAAA",
            "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjoxZTQwMH0.AAAA",
        ] {
            let r = req("GET", "/api/v3/brokerage/accounts", "", Some(a));
            let _ = Coinbase.api_key(&r);
            assert_ne!(Coinbase.check_signature(&r, &creds), SigCheck::Valid);
        }
        // Not UTF-8 at all.
        let mut r = req("GET", "/api/v3/brokerage/accounts", "", None);
        r.headers.insert(
            "authorization",
            HeaderValue::from_bytes(b"Bearer \xff.\xfe.\xfd").unwrap(),
        );
        assert_eq!(Coinbase.api_key(&r), None);
        assert_eq!(Coinbase.check_signature(&r, &creds), SigCheck::Missing);
    }

    #[tokio::test]
    async fn rejections_are_byte_exact() {
        let v3r = req("GET", "/api/v3/brokerage/accounts", "", None);
        for why in [
            Rejection::MissingKey,
            Rejection::MalformedKey,
            Rejection::UnknownKey,
            Rejection::MissingSignature,
            Rejection::BadSignature,
            Rejection::StaleTimestamp,
            Rejection::BadPassphrase,
        ] {
            let (s, ct, b) = body_raw(Coinbase.reject(&v3r, why)).await;
            assert_eq!(
                (s, ct.as_str(), b.as_str()),
                (
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "Unauthorized"
                )
            );
        }
        let (s, _, b) = body_raw(Coinbase.reject(&v3r, Rejection::NotFound)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            b,
            r#"{"error":"NOT_FOUND","error_details":"Not Found","message":"Not Found"}"#
        );
        let (s, _, _) = body_raw(Coinbase.reject(&v3r, Rejection::Unavailable)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

        let v2r = req("GET", "/v2/accounts", "", None);
        let cases = [
            (
                Rejection::MissingKey,
                401,
                r#"{"errors":[{"id":"authentication_error","message":"authentication required"}]}"#,
            ),
            (
                Rejection::UnknownKey,
                401,
                r#"{"errors":[{"id":"authentication_error","message":"invalid api key"}]}"#,
            ),
            (
                Rejection::BadSignature,
                401,
                r#"{"errors":[{"id":"authentication_error","message":"invalid signature"}]}"#,
            ),
            (
                Rejection::StaleTimestamp,
                401,
                r#"{"errors":[{"id":"authentication_error","message":"request timestamp expired"}]}"#,
            ),
            (
                Rejection::NotFound,
                404,
                r#"{"errors":[{"id":"not_found","message":"Not found"}]}"#,
            ),
            (
                Rejection::Unavailable,
                503,
                r#"{"errors":[{"id":"internal_server_error","message":"Internal server error"}]}"#,
            ),
        ];
        for (why, status, body) in cases {
            let (s, ct, b) = body_raw(Coinbase.reject(&v2r, why)).await;
            assert_eq!(s.as_u16(), status);
            assert_eq!(ct, CT_V2);
            assert_eq!(b, body);
        }
    }

    #[tokio::test]
    async fn public_market_data_has_what_ccxt_reads() {
        let r = req(
            "GET",
            "/coinbase/api/v3/brokerage/market/products",
            "",
            None,
        );
        let (s, v) = body_json(Coinbase.public(&r).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        let products = v["products"].as_array().unwrap();
        assert!(products.len() > MARKETS.len());
        for p in products {
            for k in [
                "product_id",
                "base_currency_id",
                "quote_currency_id",
                "product_type",
                "base_increment",
                "quote_increment",
                "price_increment",
                "base_min_size",
                "base_max_size",
                "quote_min_size",
                "quote_max_size",
                "price",
            ] {
                assert!(p[k].is_string(), "{k} in {p}");
            }
            assert_eq!(p["trading_disabled"], false);
        }
        assert!(products.iter().any(|p| p["product_id"] == "BTC-USD"));
        let f = req(
            "GET",
            "/coinbase/api/v3/brokerage/market/products?product_type=FUTURE",
            "",
            None,
        );
        let (_, v) = body_json(Coinbase.public(&f).unwrap()).await;
        assert_eq!(v["products"].as_array().unwrap().len(), 0);
        for p in [
            "/v2/currencies",
            "/v2/currencies/crypto",
            "/v2/exchange-rates",
            "/v2/time",
            "/api/v3/brokerage/time",
            "/api/v3/brokerage/market/products/BTC-USD/ticker",
            "/api/v3/brokerage/market/product_book?product_id=ETH-USDT",
        ] {
            let r = req("GET", p, "", None);
            let (s, v) = body_json(Coinbase.public(&r).expect(p)).await;
            assert_eq!(s, StatusCode::OK, "{p}");
            assert!(v.is_object());
        }
        let (_, v) = body_json(
            Coinbase
                .public(&req("GET", "/v2/currencies/crypto", "", None))
                .unwrap(),
        )
        .await;
        assert!(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"].is_string() && c["asset_id"].is_string()));
        // Private paths are not public.
        assert!(Coinbase
            .public(&req(
                "GET",
                "/api/v3/brokerage/transaction_summary",
                "",
                None
            ))
            .is_none());
        assert!(Coinbase
            .public(&req("GET", "/v2/accounts", "", None))
            .is_none());
    }

    #[test]
    fn classify_order_withdraw_and_more() {
        let body = CCXT_VECTORS[2].2;
        let a = Coinbase.classify(&req("POST", "/api/v3/brokerage/orders", body, None));
        assert_eq!(a.class, ActionClass::Trade);
        assert_eq!(
            a.params,
            json!({"symbol": "BTC-USD", "side": "buy", "type": "limit",
                   "order_configuration": "limit_limit_gtc", "quantity": "0.001",
                   "price": "50000", "client_order_id": "ccxt-1b4e28ba-2fa1-11d2-883f-0016d3cca427"})
        );
        let w = r#"{"type":"send","to":"0x9b1ab0a7e2f8f1f7d0b1b0c4d1e2f3a4b5c6d7e8","amount":"5000","currency":"USDT","network":"ethereum"}"#;
        let a = Coinbase.classify(&req(
            "POST",
            "/v2/accounts/0b3c9c1e-1111-5222-8333-444455556666/transactions",
            w,
            None,
        ));
        assert_eq!(a.class, ActionClass::Withdraw);
        assert_eq!(a.params["coin"], "USDT");
        assert_eq!(
            a.params["address"],
            "0x9b1ab0a7e2f8f1f7d0b1b0c4d1e2f3a4b5c6d7e8"
        );
        assert_eq!(a.params["amount"], "5000");
        assert_eq!(a.params["network"], "ethereum");
        let a = Coinbase.classify(&req(
            "POST",
            "/api/v3/brokerage/orders/batch_cancel",
            r#"{"order_ids":["x"]}"#,
            None,
        ));
        assert_eq!(
            (a.class, a.params),
            (ActionClass::Cancel, json!({"order_ids": ["x"]}))
        );
        let a = Coinbase.classify(&req("GET", "/v2/accounts/BTC/addresses", "", None));
        assert_eq!(a.class, ActionClass::Address);
        assert_eq!(a.params["coin"], "BTC");
        let a = Coinbase.classify(&req("GET", "/api/v3/brokerage/key_permissions", "", None));
        assert_eq!(a.class, ActionClass::Permissions);
        let a = Coinbase.classify(&req("GET", "/v2/accounts", "", None));
        assert_eq!(a.class, ActionClass::Read);
        // Garbage bodies do not panic.
        let a = Coinbase.classify(&req("POST", "/api/v3/brokerage/orders", "\u{0}{[", None));
        assert_eq!(a.class, ActionClass::Trade);
    }

    #[tokio::test]
    async fn private_round_trip() {
        let (id, creds) = canary();
        let book = MemoryOrderBook::default();
        let acct = crate::testkit::account(Exchange::Coinbase, id, &creds, &book);
        // Balances, both APIs.
        let (s, v) = body_json(
            Coinbase
                .private(&req("GET", "/v2/accounts?limit=250", "", None), &acct)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let data = v["data"].as_array().unwrap();
        let usdt = data
            .iter()
            .find(|a| a["currency"]["code"] == "USDT")
            .unwrap();
        assert_eq!(usdt["type"], "wallet");
        let expected = market::balances(id)[0].1;
        assert!(
            (usdt["balance"]["amount"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                - expected)
                .abs()
                < 0.01
        );
        let (_, v3a) = body_json(
            Coinbase
                .private(&req("GET", "/api/v3/brokerage/accounts", "", None), &acct)
                .await,
        )
        .await;
        let btc = v3a["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["currency"] == "BTC")
            .unwrap()
            .clone();
        assert_eq!(btc["type"], "ACCOUNT_TYPE_CRYPTO");
        // Same account id in v2 and v3.
        assert!(data.iter().any(|a| a["id"] == btc["uuid"]));
        // Create, list, get, cancel.
        let body = CCXT_VECTORS[2].2;
        let (s, v) = body_json(
            Coinbase
                .private(&req("POST", "/api/v3/brokerage/orders", body, None), &acct)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["success"], true);
        let oid = v["success_response"]["order_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            v["success_response"]["client_order_id"],
            "ccxt-1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "GET",
                        "/api/v3/brokerage/orders/historical/batch?order_status=OPEN&limit=100",
                        "",
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        let orders = v["orders"].as_array().unwrap();
        assert_eq!(orders.len(), 1);
        assert_eq!(
            orders[0]["order_configuration"]["limit_limit_gtc"]["limit_price"],
            "50000"
        );
        assert_eq!(orders[0]["status"], "OPEN");
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "GET",
                        &format!("/api/v3/brokerage/orders/historical/{oid}"),
                        "",
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(v["order"]["order_id"], oid.as_str());
        let cancel = format!(r#"{{"order_ids":["{oid}"]}}"#);
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "POST",
                        "/api/v3/brokerage/orders/batch_cancel",
                        &cancel,
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(v["results"][0]["success"], true);
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "POST",
                        "/api/v3/brokerage/orders/batch_cancel",
                        &cancel,
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(v["results"][0]["success"], false, "already cancelled");
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "GET",
                        "/api/v3/brokerage/orders/historical/batch?order_status=OPEN",
                        "",
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(v["orders"].as_array().unwrap().len(), 0);
        let (s, _) = body_json(
            Coinbase
                .private(
                    &req("GET", "/api/v3/brokerage/orders/historical/nope", "", None),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // Unknown product and malformed body.
        let bad = body.replace("BTC-USD", "NOPE-USD");
        let (_, v) = body_json(
            Coinbase
                .private(&req("POST", "/api/v3/brokerage/orders", &bad, None), &acct)
                .await,
        )
        .await;
        assert_eq!(v["success"], false);
        let (s, _) = body_json(
            Coinbase
                .private(&req("POST", "/api/v3/brokerage/orders", "{", None), &acct)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Permissions, fee tier, deposit address, withdraw.
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req("GET", "/api/v3/brokerage/key_permissions", "", None),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(
            (v["can_trade"].as_bool(), v["can_transfer"].as_bool()),
            (Some(true), Some(true))
        );
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req("GET", "/api/v3/brokerage/transaction_summary", "", None),
                    &acct,
                )
                .await,
        )
        .await;
        assert!(v["fee_tier"]["taker_fee_rate"].is_string());
        let usdt_id = usdt["id"].as_str().unwrap();
        let (_, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "GET",
                        &format!("/v2/accounts/{usdt_id}/addresses"),
                        "",
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        let addrs = v["data"].as_array().unwrap();
        assert_eq!(
            addrs[0]["address"],
            market::deposit_address(id, "USDT", "ETH").as_str()
        );
        let w = r#"{"type":"send","to":"0x9b1ab0a7e2f8f1f7d0b1b0c4d1e2f3a4b5c6d7e8","amount":"100","currency":"USDT"}"#;
        let (s, v) = body_json(
            Coinbase
                .private(
                    &req(
                        "POST",
                        &format!("/v2/accounts/{usdt_id}/transactions"),
                        w,
                        None,
                    ),
                    &acct,
                )
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(v["data"]["status"], "pending");
        assert_eq!(
            v["data"]["network"]["transaction_amount"]["amount"],
            "100.000000"
        );
        // Unknown private path.
        let (s, _) = body_json(
            Coinbase
                .private(&req("GET", "/api/v3/brokerage/nope", "", None), &acct)
                .await,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}
