//! The SSRF-safe HTTP client deliveries go through.
//!
//! - A filtering DNS resolver ([`reqwest::dns::Resolve`]): every name is resolved by us,
//!   blocked addresses are dropped, and the connection is made to one of the addresses
//!   that passed, so a DNS answer that changes between check and connect (rebinding)
//!   cannot slip a private address in.
//! - IP-literal URLs (which skip DNS) are checked before anything is sent.
//! - Redirects are never followed, environment proxies are ignored, a total timeout
//!   (default 15 s) bounds every attempt, and at most [`MAX_RESPONSE_BYTES`] of a
//!   response body are read.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::ssrf::{AddrPolicy, Blocked, UrlPolicy};

/// At most this much of a receiver's response body is read and kept.
pub const MAX_RESPONSE_BYTES: usize = 20 * 1024;

/// Default total time for one attempt (connect, send, response, body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the delivery client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Total time for one attempt.
    pub timeout: Duration,
    /// Time to establish the TCP (and TLS) connection, within `timeout`.
    pub connect_timeout: Duration,
    /// Which addresses may be reached (block list plus `KEYTRAP_WEBHOOK_ALLOW_CIDRS`).
    pub addrs: AddrPolicy,
    /// Refuse to deliver over plain http.
    pub https_only: bool,
    /// `User-Agent` of deliveries.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            addrs: AddrPolicy::strict(),
            https_only: false,
            user_agent: concat!("keytrap-webhooks/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A name whose every address is blocked (or that resolved to nothing).
#[derive(Debug, Clone)]
pub struct ResolveBlocked {
    pub host: String,
    pub blocked: Vec<Blocked>,
}

impl fmt::Display for ResolveBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blocked.is_empty() {
            return write!(f, "{} resolves to no address", self.host);
        }
        write!(f, "{} resolves only to blocked addresses: ", self.host)?;
        for (i, b) in self.blocked.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} ({})", b.addr, b.reason)?;
        }
        Ok(())
    }
}

impl StdError for ResolveBlocked {}

/// The resolver that keeps only allowed addresses.
#[derive(Debug, Clone)]
pub struct FilteringResolver {
    policy: Arc<AddrPolicy>,
}

impl FilteringResolver {
    /// A resolver applying `policy`.
    pub fn new(policy: Arc<AddrPolicy>) -> Self {
        FilteringResolver { policy }
    }

    /// Resolves `host` and returns the allowed addresses, or why there are none.
    pub async fn lookup(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
        let found = tokio::net::lookup_host((host, 0)).await?;
        let (mut allowed, mut blocked) = (Vec::new(), Vec::new());
        for addr in found {
            match self.policy.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(b) => blocked.push(b),
            }
        }
        if allowed.is_empty() {
            return Err(Box::new(ResolveBlocked {
                host: host.to_string(),
                blocked,
            }));
        }
        Ok(allowed)
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for webhook deliveries. Cheap to clone; share one per process so
/// connections to a receiver are reused.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    pub(crate) http: reqwest::Client,
    pub(crate) urls: UrlPolicy,
    pub(crate) timeout: Duration,
}

/// The client could not be built (TLS backend initialisation).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

impl DeliveryClient {
    /// Builds the client.
    pub fn new(cfg: ClientConfig) -> Result<Self, BuildError> {
        let policy = Arc::new(cfg.addrs.clone());
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(FilteringResolver::new(policy)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .referer(false)
            .https_only(cfg.https_only)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout.min(cfg.timeout))
            .user_agent(cfg.user_agent)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(DeliveryClient {
            http,
            urls: UrlPolicy {
                https_only: cfg.https_only,
                addrs: cfg.addrs,
            },
            timeout: cfg.timeout,
        })
    }

    /// The URL policy deliveries are checked against (also right for endpoint creation).
    pub fn url_policy(&self) -> &UrlPolicy {
        &self.urls
    }

    /// The total timeout of one attempt.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Reads at most `max` bytes of the body, then stops (the rest is never downloaded).
/// Returns the bytes and whether the body was longer.
pub(crate) async fn read_capped(
    resp: &mut reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
        if buf.len() == max {
            // Exactly full: more may follow; peek one more chunk.
            return Ok((buf, resp.chunk().await?.is_some_and(|c| !c.is_empty())));
        }
    }
    Ok((buf, false))
}

/// Finds a [`ResolveBlocked`] anywhere in an error's source chain.
pub(crate) fn blocked_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ResolveBlocked> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<ResolveBlocked>() {
            return Some(b);
        }
        cur = e.source();
    }
    None
}

/// An error and its sources on one line, deduplicated (reqwest repeats itself).
pub(crate) fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolver_drops_blocked_addresses() {
        let strict = FilteringResolver::new(Arc::new(AddrPolicy::strict()));
        let err = strict.lookup("localhost").await.expect_err("loopback only");
        let b = err.downcast_ref::<ResolveBlocked>().expect("typed error");
        assert_eq!(b.host, "localhost");
        assert!(!b.blocked.is_empty());
        assert!(b.to_string().contains("loopback"), "{b}");

        let v4 = AddrPolicy::parse_allow_list("127.0.0.0/8").expect("list");
        let allow = FilteringResolver::new(Arc::new(v4));
        let addrs = allow.lookup("localhost").await.expect("allowed");
        // ::1 (if localhost has it) is still dropped: only the allowed addresses remain.
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_ipv4() && a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
