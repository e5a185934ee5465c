//! The trap: decoy exchange APIs. Each emulator (`src/<exchange>.rs`) implements
//! [`emulator::Emulator`]; this module is the one request path they share.
//!
//! For every request: find the exchange (path prefix `/{exchange}/...` or the `Host`
//! map), read the request within bounds, let the emulator answer public endpoints, and
//! otherwise: find the presented key, look up its digest, derive credentials (a canary's,
//! or a pseudo canary's for an unknown key, so both take the same work), check the
//! signature, record a hit or an unknown-key sighting through the group commit, and only
//! then answer: the exchange's refusal, or a funded account for a valid canary signature.

pub mod binance;
pub mod bybit;
pub mod coinbase;
pub mod coinbase_exchange;
pub mod emulator;
pub mod kraken;
pub mod kucoin;
pub mod lookup;
pub mod market;
pub mod okx;
pub mod orders;
pub mod recorder;
pub mod rendered;
pub mod stealth;
#[cfg(test)]
mod testkit;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use keytrap_core::{matches_key_format, Exchange, Keys};
use keytrap_store::{Database, Hit, SignatureState, TrapEvent, TrapOrder, UnknownUse};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use emulator::{
    Account, ActionClass, Emulator, Order, OrderBook, Rejection, SigCheck, TrapRequest,
};
pub use recorder::Recorder;

/// Largest request body the trap reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Bounds on attacker-controlled evidence.
const MAX_PATH: usize = 512;
const MAX_QUERY: usize = 2_048;
const MAX_BODY_EXCERPT: usize = 2_048;
const MAX_HEADER_TEXT: usize = 256;

/// A network in CIDR form, for trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        /// The address as (bits, width); IPv4-mapped IPv6 counts as IPv4.
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v), 128),
                },
            }
        }
        let (a, wa) = bits(ip);
        let (b, wb) = bits(self.addr);
        if wa != wb {
            return false;
        }
        let prefix = u32::from(self.prefix).min(wa);
        let shift = wa - prefix;
        // checked_shr: a /0 prefix shifts by the full width and matches everything.
        a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let addr: IpAddr = a.parse().map_err(|_| format!("invalid address in {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|x| *x <= max)
                .ok_or_else(|| format!("invalid prefix length in {s:?}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Trap settings from configuration.
#[derive(Debug, Clone, Default)]
pub struct TrapConfig {
    /// `Host` (without port, lower case) -> exchange, for exchange-like hostnames.
    pub hosts: HashMap<String, Exchange>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
}

/// What the trap's handlers share.
pub struct TrapState {
    pub db: Arc<dyn Database>,
    pub keys: Keys,
    pub recorder: Recorder,
    pub config: TrapConfig,
    /// Holds idle answers so canary and unknown keys answer alike (see [`stealth`]).
    pub equalizer: stealth::Equalizer,
    /// Canary lookups by digest (see [`lookup`]).
    lookups: lookup::LookupCache,
    /// Canaries' open orders, briefly (see [`orders`]).
    open_orders: orders::OpenOrders,
    emulators: HashMap<Exchange, Arc<dyn Emulator>>,
}

impl TrapState {
    /// Builds the state and starts the group-commit writer on the current runtime.
    pub fn new(db: Arc<dyn Database>, keys: Keys, config: TrapConfig) -> Arc<TrapState> {
        TrapState::with_alert_notify(db, keys, config, None)
    }

    /// Like [`new`](Self::new); `notify` is woken after each commit holding a hit (the
    /// in-process alert worker).
    pub fn with_alert_notify(
        db: Arc<dyn Database>,
        keys: Keys,
        config: TrapConfig,
        notify: Option<Arc<tokio::sync::Notify>>,
    ) -> Arc<TrapState> {
        let emulators = registry().into_iter().map(|e| (e.exchange(), e)).collect();
        Arc::new(TrapState {
            recorder: Recorder::spawn_with_notify(db.clone(), notify),
            db,
            keys,
            config,
            equalizer: stealth::Equalizer::default(),
            lookups: lookup::LookupCache::default(),
            open_orders: orders::OpenOrders::default(),
            emulators,
        })
    }

    /// Records `event` through the group commit; notes in `pace` whether the request
    /// committed alone (idle), so [`handle`] can hold its answer (see [`stealth`]).
    /// `true` once the event is durably committed.
    async fn record(&self, event: TrapEvent, pace: &mut Pace) -> bool {
        let is_hit = matches!(event, TrapEvent::Hit(_));
        let commit = self.recorder.record(event).await;
        // Idle means this request alone: its own commit and nothing else in flight. Under
        // load nothing is held (and nothing learned), so holds cannot feed on themselves.
        pace.alone = commit.batch == 1
            && self
                .recorder
                .in_flight()
                .load(std::sync::atomic::Ordering::Relaxed)
                <= 1;
        pace.learn = is_hit && commit.ok && pace.alone;
        commit.ok
    }

    /// Counts an authenticated request in flight until the guard drops.
    fn busy(&self) -> InFlight<'_> {
        let n = self.recorder.in_flight();
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(n)
    }

    /// Exchanges with an emulator.
    pub fn exchanges(&self) -> Vec<Exchange> {
        let mut v: Vec<_> = self.emulators.keys().copied().collect();
        v.sort();
        v
    }
}

struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every emulator the trap serves.
fn registry() -> Vec<Arc<dyn Emulator>> {
    vec![
        Arc::new(binance::Binance),
        Arc::new(bybit::Bybit),
        Arc::new(kraken::Kraken),
        Arc::new(kucoin::Kucoin),
        Arc::new(okx::Okx),
        Arc::new(coinbase::Coinbase),
        Arc::new(coinbase_exchange::CoinbaseExchange),
    ]
}

/// The trap router: every path goes through [`handle`]. The socket peer comes from
/// axum's `ConnectInfo` (127.0.0.1 without it, as in tests that call the router
/// directly).
pub fn router(state: Arc<TrapState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// The trap as a plain service of one connection, for the trap listener: what
/// [`router`] does, without axum's routing layers (a boxed service clone, a boxed
/// future and the peer's extension per request, about 4% of the runtime worker under
/// unknown-key load; docs/benchmarks.md, session 15). `peer` is the connection's socket
/// peer.
pub async fn serve_request<B>(st: Arc<TrapState>, peer: SocketAddr, req: Request<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    respond(&st, peer.ip(), req.map(Body::new)).await
}

fn plain_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

/// Bounded, printable text: control characters (log injection) become `\u{fffd}`.
fn bounded(s: &str, max: usize) -> String {
    // The usual case, short printable ASCII, is returned as it is (what the loop below
    // would produce, without a char at a time).
    if s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\n') {
        return s.to_owned();
    }
    bounded_chars(s, max)
}

/// [`bounded`] for any text, a char at a time.
fn bounded_chars(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_control() && c != '\n' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// The client: the socket peer, or the rightmost untrusted hop of `X-Forwarded-For`
/// when the peer is a trusted proxy.
fn client_ip(peer: IpAddr, forwarded: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(chain) = forwarded else { return peer };
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return ip,
            // Garbage in the chain: stop believing it.
            Err(_) => return peer,
        }
    }
    peer
}

/// Source key for unknown-key counting: IPv6 reduced to its /64.
fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v) if v.to_ipv4_mapped().is_none() => {
            let s = v.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or_else(|| ip.to_string(), ipv4_text),
        IpAddr::V4(v4) => ipv4_text(v4),
    }
}

/// An IPv4 address in dotted decimal, as `to_string` writes it, without the formatter.
fn ipv4_text(v4: std::net::Ipv4Addr) -> String {
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// What identifies the client software (ccxt's markers, see exchanges.md §0).
fn fingerprint(req: &TrapRequest) -> Option<String> {
    let ua = req.header("user-agent").unwrap_or("");
    let hay = [
        req.query.as_deref().unwrap_or(""),
        std::str::from_utf8(&req.body).unwrap_or(""),
    ];
    let ccxt = ua.to_ascii_lowercase().contains("ccxt")
        || req.header("kc-api-partner") == Some("ccxt")
        || req.header("x-channel-api-code") == Some("p4sve")
        || req.header("referer") == Some("CCXT")
        || hay.iter().any(|h| {
            h.contains("x-TKT5PX2F") || h.contains("6b9ad766b55dBCDE") || h.contains("ccxt-")
        });
    if ccxt {
        Some("ccxt".into())
    } else if ua.is_empty() {
        None
    } else {
        Some(bounded(ua, 64))
    }
}

/// A pseudo canary id for an unknown key, so it costs the same derivation as a canary.
fn pseudo_id(digest: &[u8; 32]) -> Uuid {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    uuid::Builder::from_bytes(b)
        .with_version(uuid::Version::SortRand)
        .with_variant(uuid::Variant::RFC4122)
        .into_uuid()
}

fn key_hint(key: &str) -> String {
    // The usual key: printable ASCII, longer than 8. Its hint is its first and last four
    // bytes, as the general form below gives it.
    let b = key.as_bytes();
    if b.len() > 8 && b.iter().all(|c| (0x20..0x7f).contains(c)) {
        let mut out = String::with_capacity(11);
        out.push_str(&key[..4]);
        out.push_str("...");
        out.push_str(&key[key.len() - 4..]);
        return out;
    }
    key_hint_chars(key)
}

/// [`key_hint`] for any text, a char at a time.
fn key_hint_chars(key: &str) -> String {
    let n = key.chars().count();
    if n <= 8 {
        return "*".repeat(n);
    }
    // Byte offsets: the end of the first four characters, the start of the last four.
    let at = |k: usize| key.char_indices().nth(k).map_or(key.len(), |(i, _)| i);
    bounded(&format!("{}...{}", &key[..at(4)], &key[at(n - 4)..]), 16)
}

fn severity(sig: SignatureState, action: ActionClass) -> keytrap_store::Severity {
    use keytrap_store::Severity::*;
    match (sig, action) {
        (
            SignatureState::Valid,
            ActionClass::Trade
            | ActionClass::Withdraw
            | ActionClass::Transfer
            | ActionClass::Address,
        ) => Critical,
        (SignatureState::Valid, _) => High,
        _ => Low,
    }
}

/// Reads the request within bounds and decides which exchange it is for.
async fn read_request(
    st: &TrapState,
    peer: IpAddr,
    req: Request,
) -> Result<(TrapRequest, Arc<dyn Emulator>), Response> {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    // The host map is consulted only when there is one (the path prefix otherwise).
    let mapped = (!st.config.hosts.is_empty())
        .then(|| {
            let host_name = host
                .rsplit_once(':')
                .map_or(host.as_str(), |(h, _)| h)
                .to_ascii_lowercase();
            st.config.hosts.get(&host_name).copied()
        })
        .flatten();
    let full_path = parts.uri.path().to_string();
    let (exchange, path) = match mapped {
        Some(x) => (x, full_path.clone()),
        None => {
            let rest = full_path.trim_start_matches('/');
            let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let x = first.parse::<Exchange>().map_err(|_| plain_not_found())?;
            let mut path = String::with_capacity(tail.len() + 1);
            path.push('/');
            path.push_str(tail);
            (x, path)
        }
    };
    let emu = st
        .emulators
        .get(&exchange)
        .cloned()
        .ok_or_else(plain_not_found)?;
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large").into_response())?;
    let forwarded = parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let source_ip = client_ip(peer, forwarded, &st.config.trusted_proxies);
    Ok((
        TrapRequest {
            exchange,
            method: parts.method,
            path,
            full_path,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            host,
            source_ip,
            received_at: Utc::now(),
        },
        emu,
    ))
}

/// What [`TrapState::record`] learned about a request, for holding its answer.
#[derive(Default)]
struct Pace {
    /// Committed alone with nothing else in flight: hold the answer to the floor.
    alone: bool,
    /// A canary hit that committed alone: its time teaches the floor.
    learn: bool,
}

/// Answers a trap request. The hold comes last, after the answer is built, so that
/// whatever a canary's answer costs after its commit is inside the equalised time too.
async fn handle(State(st): State<Arc<TrapState>>, req: Request<Body>) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    respond(&st, peer, req).await
}

/// [`handle`] with the socket peer known.
async fn respond(st: &Arc<TrapState>, peer: IpAddr, req: Request<Body>) -> Response {
    let started = Instant::now();
    let mut pace = Pace::default();
    let resp = answer(st, peer, req, &mut pace).await;
    if pace.alone {
        let took = started.elapsed();
        // The deadline comes from the floor as it was before this request: were a canary's
        // own time to raise the floor it is held to, canaries would be held a little longer
        // than unknown keys, whose times never teach the floor. The deadline is absolute,
        // so learning (canaries only) costs no time the answer shows.
        let hold = st.equalizer.hold(took, 1);
        if pace.learn {
            st.equalizer.observe_hit(took);
        }
        // The hold ends by a precise sleep on the blocking pool, not tokio's timer. The
        // timer wheel fires on whole milliseconds, 0.5-1.7 ms after the deadline, and with
        // it canaries came out 0.1-0.15 ms later than unknown keys at a 3 ms floor (KS
        // p < 0.001, services/keytrap/tests/timing.rs); when the runtime wakes near a
        // deadline is not the same after the two kinds of commit. The precise sleep ends
        // 0.13-0.27 ms after the deadline for both kinds alike.
        if let Some(hold) = hold {
            let deadline = started + took + hold;
            let _ = tokio::task::spawn_blocking(move || {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            })
            .await;
        }
    }
    resp
}

async fn answer(
    st: &Arc<TrapState>,
    peer: IpAddr,
    req: Request<Body>,
    pace: &mut Pace,
) -> Response {
    let (req, emu) = match read_request(st, peer, req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let key = emu.api_key(&req).filter(|k| !k.is_empty());
    // Public endpoints answer whether or not a key comes along (some SDKs send it on
    // market-data calls); a presented key is still recorded as evidence below.
    let public = emu.public(&req);
    let Some(key) = key else {
        return public.unwrap_or_else(|| emu.reject(&req, Rejection::MissingKey));
    };
    let _busy = st.busy();
    let exchange = req.exchange;
    if !matches_key_format(exchange, &key) {
        let ok = st.record(unknown(&req, &key, true), pace).await;
        return emu.reject(
            &req,
            if ok {
                Rejection::MalformedKey
            } else {
                Rejection::Unavailable
            },
        );
    }

    // From here canary and unknown keys take the same steps until the signature is known.
    let digest = st.keys.lookup_digest(exchange, &key);
    let (canary, secrets) = match st.lookups.get(&digest) {
        Some(cached) => (cached.found, cached.secrets),
        None => match st.db.canary_by_digest(&digest).await {
            Ok(c) => {
                let found = c.map(|c| lookup::CanaryRef {
                    id: c.id,
                    tenant_id: c.tenant_id,
                    store_id: c.store_id,
                });
                (found, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "trap lookup failed");
                return emu.reject(&req, Rejection::Unavailable);
            }
        },
    };
    let id = canary.as_ref().map_or_else(|| pseudo_id(&digest), |c| c.id);
    // The key as presented: a canary's is its own (its digest matched), and an unknown
    // key's pseudo canary needs none derived either. The secrets are derived once per
    // cached lookup, for canaries and unknown keys alike.
    let creds = match secrets {
        Some(s) => s.credentials(&key),
        None => {
            let creds = st.keys.credentials_for_key(exchange, id, &key);
            let cached = lookup::Cached {
                found: canary,
                secrets: Some(lookup::Secrets::of(&creds)),
            };
            st.lookups.put(digest, cached);
            creds
        }
    };
    let mut sig = emu.check_signature(&req, &creds);

    let Some(canary) = canary else {
        let ok = st.record(unknown(&req, &key, false), pace).await;
        return emu.reject(
            &req,
            if ok {
                Rejection::UnknownKey
            } else {
                Rejection::Unavailable
            },
        );
    };

    if sig == SigCheck::Valid {
        if let Some(nonce) = emu.nonce(&req) {
            match st.db.advance_nonce(canary.id, nonce).await {
                Ok(true) => {}
                // A replayed or old nonce: the exchange refuses it, and so do we (the hit
                // is still recorded, as a refused request).
                Ok(false) => sig = SigCheck::Invalid(Rejection::StaleTimestamp),
                Err(e) => {
                    tracing::error!(error = %e, "trap nonce check failed");
                    return emu.reject(&req, Rejection::Unavailable);
                }
            }
        }
    }
    let action = emu.classify(&req);
    let signature_state = match sig {
        SigCheck::Valid => SignatureState::Valid,
        SigCheck::Missing => SignatureState::Missing,
        SigCheck::Invalid(_) => SignatureState::Invalid,
    };
    let forwarded = req
        .header("x-forwarded-for")
        .map(|f| bounded(f, MAX_HEADER_TEXT));
    let hit = Hit {
        id: Uuid::now_v7(),
        tenant_id: canary.tenant_id,
        canary_id: canary.id,
        store_id: canary.store_id,
        incident_id: None,
        exchange,
        method: req.method.to_string(),
        path: bounded(&req.path, MAX_PATH),
        query: req.query.as_deref().map(|q| bounded(q, MAX_QUERY)),
        body_excerpt: (!req.body.is_empty())
            .then(|| bounded(&String::from_utf8_lossy(&req.body), MAX_BODY_EXCERPT)),
        source_ip: req.source_ip.to_string(),
        forwarded_for: forwarded,
        user_agent: req
            .header("user-agent")
            .map(|u| bounded(u, MAX_HEADER_TEXT)),
        client_fingerprint: fingerprint(&req),
        signature_state,
        action_class: action.class.as_str().to_string(),
        action_params: emulator::evidence_params(action.params),
        severity: severity(signature_state, action.class),
        received_at: req.received_at,
    };
    if !st.record(TrapEvent::Hit(Box::new(hit)), pace).await {
        return emu.reject(&req, Rejection::Unavailable);
    }
    if let Some(resp) = public {
        return resp;
    }
    match sig {
        SigCheck::Valid => {
            let orders = DbOrderBook {
                db: st.db.clone(),
                canary: canary.id,
                open: &st.open_orders,
            };
            let account = Account {
                canary_id: canary.id,
                exchange,
                credentials: &creds,
                now: Utc::now(),
                orders: &orders,
            };
            emu.private(&req, &account).await
        }
        SigCheck::Missing => emu.reject(&req, Rejection::MissingSignature),
        SigCheck::Invalid(r) => emu.reject(&req, r),
    }
}

fn unknown(req: &TrapRequest, key: &str, malformed: bool) -> TrapEvent {
    TrapEvent::Unknown(UnknownUse {
        exchange: req.exchange,
        source: source_key(req.source_ip),
        key_hash: Sha256::digest(key.as_bytes()).into(),
        key_hint: key_hint(key),
        malformed,
        path: bounded(&req.path, MAX_PATH),
        user_agent: req
            .header("user-agent")
            .map(|u| bounded(u, MAX_HEADER_TEXT)),
        at: req.received_at,
    })
}

/// Orders remembered in the database, per canary; open orders read through
/// [`orders::OpenOrders`].
struct DbOrderBook<'a> {
    db: Arc<dyn Database>,
    canary: Uuid,
    open: &'a orders::OpenOrders,
}

fn to_order(o: TrapOrder) -> Order {
    Order {
        order_id: o.order_id,
        client_order_id: o.client_order_id,
        symbol: o.symbol,
        side: o.side,
        order_type: o.order_type,
        price: o.price,
        amount: o.amount,
        status: o.status,
        created_at: o.created_at,
    }
}

#[async_trait::async_trait]
impl OrderBook for DbOrderBook<'_> {
    async fn place(&self, o: Order) -> Result<Order, String> {
        let row = TrapOrder {
            canary_id: self.canary,
            order_id: bounded(&o.order_id, 64),
            client_order_id: o.client_order_id.as_deref().map(|c| bounded(c, 64)),
            symbol: bounded(&o.symbol, 32),
            side: bounded(&o.side, 8),
            order_type: bounded(&o.order_type, 32),
            price: o.price.as_deref().map(|p| bounded(p, 40)),
            amount: bounded(&o.amount, 40),
            status: o.status.clone(),
            created_at: o.created_at,
        };
        let put = self.db.put_order(&row).await;
        self.open.invalidate(self.canary);
        put.map_err(|e| e.to_string())?;
        Ok(to_order(row))
    }

    async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String> {
        self.list(symbol, true).await
    }

    async fn all_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, String> {
        self.list(symbol, false).await
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, String> {
        self.db
            .get_order(self.canary, order_id)
            .await
            .map(|o| o.map(to_order))
            .map_err(|e| e.to_string())
    }

    async fn cancel(&self, order_id: &str) -> Result<Option<Order>, String> {
        let cancelled = self.db.cancel_order(self.canary, order_id).await;
        self.open.invalidate(self.canary);
        cancelled
            .map(|o| o.map(to_order))
            .map_err(|e| e.to_string())
    }
}

impl DbOrderBook<'_> {
    async fn list(&self, symbol: Option<&str>, open_only: bool) -> Result<Vec<Order>, String> {
        let keep = |o: &TrapOrder| symbol.is_none_or(|s| o.symbol == s);
        if !open_only {
            let all = self
                .db
                .list_orders(self.canary, false)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(all.into_iter().filter(keep).map(to_order).collect());
        }
        let open = match self.open.get(self.canary) {
            Ok(cached) => cached,
            Err(generation) => {
                let read = self
                    .db
                    .list_orders(self.canary, true)
                    .await
                    .map_err(|e| e.to_string())?;
                self.open.put(self.canary, generation, read.clone());
                Arc::new(read)
            }
        };
        Ok(open
            .iter()
            .filter(|o| keep(o))
            .cloned()
            .map(to_order)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains(ip("10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(
            c.contains(ip("::ffff:10.9.9.9")),
            "v4-mapped v6 matches v4 ranges"
        );
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: Cidr = "127.0.0.1".parse().expect("cidr");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
        // Untrusted peer: its X-Forwarded-For is ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), Some("1.2.3.4"), &trusted),
            ip("198.51.100.1")
        );
        // Trusted peer: the rightmost untrusted hop wins (spoofed left entries ignored).
        assert_eq!(
            client_ip(
                ip("10.0.0.5"),
                Some("6.6.6.6, 203.0.113.9, 10.0.0.7"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("garbage"), &trusted),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn evidence_is_bounded_and_sources_aggregate_ipv6() {
        assert_eq!(bounded("a\u{1b}[31mb\r\n", 100), "a\u{fffd}[31mb\u{fffd}\n");
        assert_eq!(bounded(&"x".repeat(5000), 10).len(), 10);
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(source_key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(key_hint("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zv"), "vmPU...E2zv");
        assert_eq!(key_hint("short"), "*****");
    }

    /// `bounded`'s fast path and `key_hint`'s offsets give what char-by-char forms give.
    #[test]
    fn evidence_fast_paths_match_the_general_form() {
        fn hint_slow(key: &str) -> String {
            let chars: Vec<char> = key.chars().collect();
            if chars.len() <= 8 {
                return "*".repeat(chars.len());
            }
            let head: String = chars[..4].iter().collect();
            let tail: String = chars[chars.len() - 4..].iter().collect();
            bounded_chars(&format!("{head}...{tail}"), 16)
        }
        let samples = [
            "",
            "abc",
            "/api/v3/account",
            "exactly10!",
            "exactly11!!",
            "tab\there",
            "line\nbreak",
            "del\u{7f}x",
            "nul\0x",
            "esc\u{1b}[0m",
            "c1\u{85}control",
            "caf\u{e9} \u{1f600} \u{200b}",
            "12345678",
            "123456789",
            "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zv",
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            "ab\r\ncd\u{1b}efghij",
        ];
        for s in samples {
            for max in [0, 1, 4, 10, 11, 16, 100] {
                assert_eq!(
                    bounded(s, max),
                    bounded_chars(s, max),
                    "bounded({s:?}, {max})"
                );
            }
            assert_eq!(key_hint(s), hint_slow(s), "key_hint({s:?})");
        }
        for octets in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [9, 10, 99, 100],
            [199, 200, 249, 255],
            [1, 20, 101, 110],
        ] {
            let v4 = std::net::Ipv4Addr::from(octets);
            assert_eq!(ipv4_text(v4), v4.to_string());
            assert_eq!(source_key(IpAddr::V4(v4)), v4.to_string());
            assert_eq!(source_key(IpAddr::V6(v4.to_ipv6_mapped())), v4.to_string());
        }
    }
}
