//! SSRF defence: which addresses a webhook may reach, and which URLs may be registered.
//!
//! Every address is classified by [`classify`]; an [`AddrPolicy`] adds the operator's
//! deliberate exceptions (`KEYTRAP_WEBHOOK_ALLOW_CIDRS`). URLs are checked when an
//! endpoint is created ([`UrlPolicy::validate`], then [`UrlPolicy::validate_resolved`]
//! for DNS names) and again at every delivery by the client in [`crate::client`], whose
//! resolver drops blocked addresses so the connection goes to a checked address.
//!
//! IPv6 forms that embed an IPv4 address: 6to4 (`2002::/16`), Teredo (`2001::/32`,
//! server and de-obfuscated client) and well-known NAT64 (`64:ff9b::/96`, which DNS64
//! networks hand out for public IPv4 hosts) are judged by the IPv4 address they carry.
//! IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`) and local-use NAT64
//! (`64:ff9b:1::/48`, whose embedding depends on a local prefix length) are refused
//! outright: no public receiver needs them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use url::{Host, Url};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    /// `0.0.0.0/8` ("this network"), `::/128`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `169.254.0.0/16` (cloud metadata lives here), `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT `100.64.0.0/10`.
    SharedAddressSpace,
    /// `192.0.0.0/24` IETF protocol assignments, `2001::/23` (outside Teredo).
    IetfProtocol,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// `192.88.99.0/24`, the deprecated 6to4 relay anycast.
    Relay6to4,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4`; IPv6 outside global unicast `2000::/3`.
    Reserved,
    /// `fc00::/7` unique local.
    UniqueLocal,
    /// `fec0::/10`, deprecated site-local.
    SiteLocal,
    /// `100::/64`, discard-only.
    DiscardOnly,
    /// `::ffff:0:0/96`.
    Ipv4Mapped,
    /// `::/96` (deprecated IPv4-compatible).
    Ipv4Compatible,
    /// `64:ff9b:1::/48`, local-use NAT64.
    LocalNat64,
    /// An IPv6 form (6to4, Teredo, NAT64) carrying a blocked IPv4 address.
    Embedded(Ipv4Addr, &'static str),
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            BlockReason::Unspecified => "unspecified / this-network",
            BlockReason::Loopback => "loopback",
            BlockReason::Private => "private (RFC 1918)",
            BlockReason::LinkLocal => "link-local (cloud metadata)",
            BlockReason::SharedAddressSpace => "shared address space (CGNAT)",
            BlockReason::IetfProtocol => "IETF protocol assignment",
            BlockReason::Documentation => "documentation range",
            BlockReason::Benchmarking => "benchmarking range",
            BlockReason::Relay6to4 => "6to4 relay anycast",
            BlockReason::Multicast => "multicast",
            BlockReason::Broadcast => "broadcast",
            BlockReason::Reserved => "reserved",
            BlockReason::UniqueLocal => "IPv6 unique local",
            BlockReason::SiteLocal => "IPv6 site-local",
            BlockReason::DiscardOnly => "IPv6 discard-only",
            BlockReason::Ipv4Mapped => "IPv4-mapped IPv6",
            BlockReason::Ipv4Compatible => "IPv4-compatible IPv6",
            BlockReason::LocalNat64 => "local-use NAT64",
            BlockReason::Embedded(v4, form) => {
                return write!(f, "{form} form of blocked address {v4}");
            }
        };
        f.write_str(s)
    }
}

/// Classifies an address with no exceptions: `None` means a public address a webhook
/// may reach, `Some(reason)` that it is refused.
pub fn classify(ip: IpAddr) -> Option<BlockReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockReason> {
    let [a, b, c, _] = ip.octets();
    use BlockReason::*;
    Some(match (a, b, c) {
        (0, _, _) => Unspecified,
        (10, _, _) => Private,
        (100, 64..=127, _) => SharedAddressSpace,
        (127, _, _) => Loopback,
        (169, 254, _) => LinkLocal,
        (172, 16..=31, _) => Private,
        (192, 0, 0) => IetfProtocol,
        (192, 0, 2) => Documentation,
        (192, 88, 99) => Relay6to4,
        (192, 168, _) => Private,
        (198, 18..=19, _) => Benchmarking,
        (198, 51, 100) => Documentation,
        (203, 0, 113) => Documentation,
        (224..=239, _, _) => Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Broadcast,
        (240..=255, _, _) => Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockReason> {
    use BlockReason::*;
    let seg = ip.segments();
    let bits = u128::from(ip);
    let in_net = |prefix: u128, len: u32| (bits ^ prefix) >> (128 - len) == 0;
    let low_v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let embedded = |v4: Ipv4Addr, form: &'static str| classify_v4(v4).map(|_| Embedded(v4, form));

    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    if in_net(0xffff << 32, 96) {
        return Some(Ipv4Mapped);
    }
    if in_net(0, 96) {
        return Some(Ipv4Compatible);
    }
    if in_net(0x0064_ff9b << 96, 96) {
        return embedded(low_v4, "NAT64");
    }
    if in_net(0x0064_ff9b_0001 << 80, 48) {
        return Some(LocalNat64);
    }
    if in_net(0x0100 << 112, 64) {
        return Some(DiscardOnly);
    }
    if in_net(0xff << 120, 8) {
        return Some(Multicast);
    }
    if in_net(0xfc << 120, 7) {
        return Some(UniqueLocal);
    }
    if in_net(0xfe80 << 112, 10) {
        return Some(LinkLocal);
    }
    if in_net(0xfec0 << 112, 10) {
        return Some(SiteLocal);
    }
    if in_net(0x2002 << 112, 16) {
        let v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return embedded(v4, "6to4");
    }
    if in_net(0x2001 << 112, 32) {
        // Teredo: server IPv4 in bits 32..64, client IPv4 XOR-obfuscated in the last 32.
        let server = Ipv4Addr::new(
            (seg[2] >> 8) as u8,
            seg[2] as u8,
            (seg[3] >> 8) as u8,
            seg[3] as u8,
        );
        let client = Ipv4Addr::from(!((bits & 0xffff_ffff) as u32));
        return embedded(server, "Teredo server").or_else(|| embedded(client, "Teredo"));
    }
    if in_net(0x2001_0002 << 96, 48) {
        return Some(Benchmarking);
    }
    if in_net(0x2001 << 112, 23) {
        return Some(IetfProtocol);
    }
    if in_net(0x2001_0db8 << 96, 32) || in_net(0x3fff << 112, 20) {
        return Some(Documentation);
    }
    if !in_net(0x2000 << 112, 3) {
        return Some(Reserved);
    }
    None
}

/// An address refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {addr} is not allowed for webhooks: {reason}")]
pub struct Blocked {
    pub addr: IpAddr,
    pub reason: BlockReason,
}

/// The block list plus the operator's allowed exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrPolicy {
    allow: Vec<IpNet>,
}

/// Name of the environment variable holding the exceptions, comma- or space-separated.
pub const ALLOW_CIDRS_ENV: &str = "KEYTRAP_WEBHOOK_ALLOW_CIDRS";

/// A malformed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ALLOW_CIDRS_ENV}: {entry:?} is not a CIDR (e.g. 127.0.0.0/8) or an IP address")]
pub struct BadCidr {
    pub entry: String,
}

impl AddrPolicy {
    /// The strict policy: every blocked range refused.
    pub fn strict() -> Self {
        AddrPolicy::default()
    }

    /// A policy whose `allow` networks are reachable even if blocked.
    pub fn with_allowed(allow: Vec<IpNet>) -> Self {
        AddrPolicy { allow }
    }

    /// Parses an allow-list such as `"127.0.0.0/8, ::1"` (a bare address is a /32 or /128).
    pub fn parse_allow_list(list: &str) -> Result<Self, BadCidr> {
        let mut allow = Vec::new();
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let net = IpNet::from_str(entry)
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| BadCidr {
                    entry: entry.to_string(),
                })?;
            allow.push(net);
        }
        Ok(AddrPolicy { allow })
    }

    /// Reads [`ALLOW_CIDRS_ENV`]; unset or empty gives the strict policy.
    pub fn from_env() -> Result<Self, BadCidr> {
        match std::env::var(ALLOW_CIDRS_ENV) {
            Ok(v) => Self::parse_allow_list(&v),
            Err(_) => Ok(Self::strict()),
        }
    }

    /// The allowed exceptions.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// `Ok` if a webhook may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        // An IPv4-mapped address is the same host as its IPv4 form for the exceptions.
        let canonical = ip.to_canonical();
        if self
            .allow
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
        {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(reason) => Err(Blocked { addr: ip, reason }),
        }
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a valid URL: {0}")]
    Parse(String),
    #[error("URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("scheme {0:?} is not allowed: use https (or http)")]
    Scheme(String),
    #[error("only https URLs are allowed")]
    HttpsOnly,
    #[error("URLs with a user name or password are not allowed; use custom headers")]
    UserInfo,
    #[error("URL has no host")]
    NoHost,
    #[error(transparent)]
    Blocked(#[from] Blocked),
    #[error("host {host:?} does not resolve: {message}")]
    Resolve { host: String, message: String },
    #[error("host {0:?} resolves to no address")]
    NoAddress(String),
}

/// Longest URL accepted for an endpoint.
pub const MAX_URL_LEN: usize = 2048;

/// What URLs may be registered as webhook endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Refuse `http://`.
    pub https_only: bool,
    /// Which addresses the URL may point at.
    pub addrs: AddrPolicy,
}

impl UrlPolicy {
    /// Checks everything that needs no DNS: scheme, user info, host, IP-literal hosts.
    /// The `url` crate has already normalised odd IPv4 spellings (`http://2130706433/`,
    /// `http://0x7f.1/`) into dotted form, so they are checked as the address they are.
    pub fn validate(&self, raw: &str) -> Result<Url, UrlError> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let url = Url::parse(raw.trim()).map_err(|e| UrlError::Parse(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.https_only => return Err(UrlError::HttpsOnly),
            "http" => {}
            other => return Err(UrlError::Scheme(other.to_string())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        match url.host() {
            None => return Err(UrlError::NoHost),
            Some(Host::Ipv4(v4)) => self.addrs.check(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.addrs.check(IpAddr::V6(v6))?,
            Some(Host::Domain("")) => return Err(UrlError::NoHost),
            Some(Host::Domain(_)) => {}
        }
        Ok(url)
    }

    /// [`validate`](Self::validate), then resolves a DNS host and requires every address
    /// it resolves to to be allowed (at creation we are strict; at delivery the resolver
    /// only drops the blocked ones).
    pub async fn validate_resolved(&self, raw: &str) -> Result<Url, UrlError> {
        let url = self.validate(raw)?;
        if let Some(Host::Domain(host)) = url.host() {
            let addrs = resolve(host).await.map_err(|e| UrlError::Resolve {
                host: host.to_string(),
                message: e.to_string(),
            })?;
            if addrs.is_empty() {
                return Err(UrlError::NoAddress(host.to_string()));
            }
            for ip in addrs {
                self.addrs.check(ip)?;
            }
        }
        Ok(url)
    }
}

/// Resolves a host name with the system resolver.
pub(crate) async fn resolve(host: &str) -> std::io::Result<Vec<IpAddr>> {
    let addrs = tokio::net::lookup_host((host, 0)).await?;
    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    ips.dedup();
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn address_table() {
        use BlockReason::*;
        let blocked: &[(&str, BlockReason)] = &[
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("192.0.0.8", IetfProtocol),
            ("192.0.2.10", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.88.99.1", Relay6to4),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("250.1.2.3", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", UniqueLocal),
            ("fd12:3456:789a::1", UniqueLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("ff05::2", Multicast),
            ("::ffff:127.0.0.1", Ipv4Mapped),
            ("::ffff:8.8.8.8", Ipv4Mapped),
            ("::ffff:169.254.169.254", Ipv4Mapped),
            ("::127.0.0.1", Ipv4Compatible),
            ("::8.8.8.8", Ipv4Compatible),
            (
                "64:ff9b::7f00:1",
                Embedded(Ipv4Addr::new(127, 0, 0, 1), "NAT64"),
            ),
            (
                "64:ff9b::a9fe:a9fe",
                Embedded(Ipv4Addr::new(169, 254, 169, 254), "NAT64"),
            ),
            ("64:ff9b:1::1", LocalNat64),
            ("64:ff9b:1:ffff::808:808", LocalNat64),
            (
                "2002:7f00:1::1",
                Embedded(Ipv4Addr::new(127, 0, 0, 1), "6to4"),
            ),
            (
                "2002:c0a8:101::",
                Embedded(Ipv4Addr::new(192, 168, 1, 1), "6to4"),
            ),
            // Teredo with a public server (8.8.8.8) and client 127.0.0.1 (obfuscated 80ff:fffe).
            (
                "2001:0:808:808::80ff:fffe",
                Embedded(Ipv4Addr::new(127, 0, 0, 1), "Teredo"),
            ),
            (
                "2001:0:a00:1::",
                Embedded(Ipv4Addr::new(10, 0, 0, 1), "Teredo server"),
            ),
            ("2001:2::1", Benchmarking),
            ("2001:10::1", IetfProtocol),
            ("2001:db8::1", Documentation),
            ("2001:db8:ffff::1", Documentation),
            ("3fff::1", Documentation),
            ("100::1", DiscardOnly),
            ("100::ffff:ffff:ffff:ffff", DiscardOnly),
            ("4000::1", Reserved),
            ("1::1", Reserved),
            ("5f00::1", Reserved),
        ];
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo, public server 8.8.8.8, public client 1.1.1.1 (obfuscated fefe:fefe).
            "2001:0:808:808::fefe:fefe",
        ];
        assert!(blocked.len() + allowed.len() >= 40);
        for (addr, want) in blocked {
            assert_eq!(classify(ip(addr)), Some(*want), "{addr}");
            assert!(AddrPolicy::strict().check(ip(addr)).is_err(), "{addr}");
        }
        for addr in allowed {
            assert_eq!(classify(ip(addr)), None, "{addr}");
            assert!(AddrPolicy::strict().check(ip(addr)).is_ok(), "{addr}");
        }
    }

    #[test]
    fn allow_list_overrides_only_what_it_names() {
        let p = AddrPolicy::parse_allow_list("127.0.0.0/8, 10.1.2.3 fd00::/8").expect("list");
        assert_eq!(p.allowed().len(), 3);
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("127.9.9.9")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("10.1.2.3")).is_ok());
        assert!(p.check(ip("fd00::5")).is_ok());
        let err = p.check(ip("10.1.2.4")).expect_err("not in the list");
        assert_eq!(err.reason, BlockReason::Private);
        assert!(p.check(ip("169.254.169.254")).is_err());
        assert!(p.check(ip("::1")).is_err());
        assert_eq!(
            AddrPolicy::parse_allow_list("127.0.0.0/8,nope"),
            Err(BadCidr {
                entry: "nope".into()
            })
        );
        assert!(AddrPolicy::parse_allow_list("127.0.0.0/33").is_err());
        assert_eq!(AddrPolicy::parse_allow_list(" "), Ok(AddrPolicy::strict()));
    }

    #[test]
    fn url_syntax_and_literals() {
        let p = UrlPolicy::default();
        assert!(p.validate("https://hooks.example.com/x?y=1").is_ok());
        assert!(p.validate("http://8.8.8.8:8080/hook").is_ok());
        assert!(p.validate("http://[2606:4700:4700::1111]/").is_ok());
        assert!(matches!(
            p.validate("ftp://example.com/"),
            Err(UrlError::Scheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            p.validate("file:///etc/passwd"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            p.validate("gopher://x/"),
            Err(UrlError::Scheme(_))
        ));
        assert_eq!(
            p.validate("https://user:pw@example.com/"),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            p.validate("https://user@example.com/"),
            Err(UrlError::UserInfo)
        );
        assert!(matches!(p.validate("not a url"), Err(UrlError::Parse(_))));
        for no_host in ["https://", "http://:80/", "http://?x"] {
            assert!(
                matches!(
                    p.validate(no_host),
                    Err(UrlError::Parse(_) | UrlError::NoHost)
                ),
                "{no_host}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(p.validate(&long), Err(UrlError::TooLong));
        let strict = UrlPolicy {
            https_only: true,
            ..UrlPolicy::default()
        };
        assert_eq!(
            strict.validate("http://example.com/"),
            Err(UrlError::HttpsOnly)
        );
        assert!(strict.validate("https://example.com/").is_ok());

        // Odd IPv4 spellings are normalised by the url crate, then refused as loopback.
        for odd in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://0/",
            "HTTP://LOCALHOST.:80@127.0.0.1/",
        ] {
            let err = p.validate(odd).expect_err(odd);
            assert!(
                matches!(err, UrlError::Blocked(_) | UrlError::UserInfo),
                "{odd}: {err}"
            );
        }
        let Err(UrlError::Blocked(b)) = p.validate("http://2130706433/") else {
            panic!("decimal loopback must be blocked");
        };
        assert_eq!(b.addr, ip("127.0.0.1"));
        assert_eq!(b.reason, BlockReason::Loopback);

        let allow = UrlPolicy {
            https_only: false,
            addrs: AddrPolicy::parse_allow_list("127.0.0.0/8").expect("list"),
        };
        assert!(allow.validate("http://0x7f.1:9000/").is_ok());
        assert!(allow.validate("http://10.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn dns_names_are_resolved_and_every_address_checked() {
        let p = UrlPolicy::default();
        let err = p
            .validate_resolved("http://localhost:9/hook")
            .await
            .expect_err("localhost is loopback");
        assert!(
            matches!(err, UrlError::Blocked(ref b) if b.reason == BlockReason::Loopback),
            "{err}"
        );
        let err = p
            .validate_resolved("http://no-such-host.invalid/")
            .await
            .expect_err("does not resolve");
        assert!(
            matches!(err, UrlError::Resolve { .. } | UrlError::NoAddress(_)),
            "{err}"
        );
        let allow = UrlPolicy {
            https_only: false,
            addrs: AddrPolicy::parse_allow_list("127.0.0.0/8 ::1").expect("list"),
        };
        assert!(allow.validate_resolved("http://localhost:9/").await.is_ok());
    }
}
