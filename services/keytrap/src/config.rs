//! Configuration: defaults, then an optional TOML file, then `KEYTRAP_*` environment,
//! then flags. clap reads flags and their `KEYTRAP_*` variables (a flag beats its
//! variable); whatever clap leaves unset falls back to the file, then to the default.
//! Secrets (`KEYTRAP_MASTER_KEY`, `KEYTRAP_ADMIN_TOKEN`) come from the environment or the
//! file only, never from flags, which other users can read in the process list.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://keytrap.db";
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8700";
pub const DEFAULT_TRAP_LISTEN: &str = "127.0.0.1:8701";
pub const MASTER_KEY_FILE: &str = "keytrap.master-key";

/// Settings read from the TOML file (`--config` / `KEYTRAP_CONFIG`). Every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub api_listen: Option<SocketAddr>,
    pub trap_listen: Option<SocketAddr>,
    pub health_listen: Option<SocketAddr>,
    pub header_read_timeout_secs: Option<u64>,
    pub roles: Option<Vec<Role>>,
    pub log_format: Option<LogFormat>,
    /// `host = "exchange"` pairs for exchange-like hostnames.
    pub trap_hosts: Option<std::collections::HashMap<String, String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub webhook_allow_cidrs: Option<Vec<String>>,
    pub webhook_https_only: Option<bool>,
    pub webhook_timeout_secs: Option<u64>,
    pub webhook_retry_scale: Option<f64>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// A role `keytrap serve` runs; all three by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Management API.
    Api,
    /// Decoy exchange APIs.
    Trap,
    /// Background jobs (webhook delivery).
    Worker,
}

/// Where the data lives; shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// `sqlite://path` (embedded, default `sqlite://keytrap.db`) or `postgres://...`.
    #[arg(long, env = "KEYTRAP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the generated master key file (default: current directory).
    #[arg(long, env = "KEYTRAP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Roles to run, comma-separated (default: all).
    #[arg(long, env = "KEYTRAP_ROLES", value_delimiter = ',')]
    pub role: Vec<Role>,
    /// Management API listen address (default 127.0.0.1:8700).
    #[arg(long, env = "KEYTRAP_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Trap listen address (default 127.0.0.1:8701).
    #[arg(long, env = "KEYTRAP_TRAP_LISTEN")]
    pub trap_listen: Option<SocketAddr>,
    /// Health listener (`/healthz`, `/readyz`, `/metrics`) for any role; off unless set.
    /// The trap's own port serves exchange paths only.
    #[arg(long, env = "KEYTRAP_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Seconds a client has to send its request head before the connection is closed
    /// (default 10).
    #[arg(long, env = "KEYTRAP_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Hostnames the trap answers as an exchange: `api.example-binance.com=binance,...`.
    #[arg(long = "trap-host", env = "KEYTRAP_TRAP_HOSTS", value_delimiter = ',')]
    pub trap_hosts: Vec<String>,
    /// Proxies whose X-Forwarded-For the trap believes (CIDRs, comma-separated).
    #[arg(
        long = "trusted-proxy",
        env = "KEYTRAP_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Addresses webhooks may reach although the SSRF guard blocks them (CIDRs,
    /// comma-separated), e.g. `127.0.0.0/8` for a local receiver.
    #[arg(
        long = "webhook-allow-cidr",
        env = "KEYTRAP_WEBHOOK_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub webhook_allow_cidrs: Vec<String>,
    /// Refuse `http://` webhook URLs (default false).
    #[arg(long, env = "KEYTRAP_WEBHOOK_HTTPS_ONLY")]
    pub webhook_https_only: Option<bool>,
    /// Total time for one delivery attempt, in seconds (default 15).
    #[arg(long, env = "KEYTRAP_WEBHOOK_TIMEOUT_SECS")]
    pub webhook_timeout_secs: Option<u64>,
    /// Multiplies the retry schedule (default 1; e.g. 0.001 in tests).
    #[arg(long, env = "KEYTRAP_WEBHOOK_RETRY_SCALE")]
    pub webhook_retry_scale: Option<f64>,
}

/// Webhook delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addrs: keytrap_webhooks::AddrPolicy,
    pub https_only: bool,
    pub timeout: std::time::Duration,
    pub retry_scale: f64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            addrs: keytrap_webhooks::AddrPolicy::strict(),
            https_only: false,
            timeout: keytrap_webhooks::client::DEFAULT_TIMEOUT,
            retry_scale: 1.0,
        }
    }
}

/// Everything `serve` and `migrate` need, after layering.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub database_url: String,
    pub data_dir: PathBuf,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub api_listen: SocketAddr,
    pub trap_listen: SocketAddr,
    pub health_listen: Option<SocketAddr>,
    pub http: crate::http::Limits,
    pub roles: Vec<Role>,
    pub trap: keytrap_trap::TrapConfig,
    pub webhooks: WebhookConfig,
}

fn env_secret(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{name} is not valid UTF-8"),
    }
}

pub fn resolve_storage(a: &StorageArgs, f: &FileConfig) -> anyhow::Result<Resolved> {
    let parse = |s: &str| s.parse::<SocketAddr>().context("bad default address");
    Ok(Resolved {
        database_url: a
            .database_url
            .clone()
            .or_else(|| f.database_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
        data_dir: a
            .data_dir
            .clone()
            .or_else(|| f.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".")),
        master_key: env_secret("KEYTRAP_MASTER_KEY")?.or_else(|| f.master_key.clone()),
        master_key_file: std::env::var_os("KEYTRAP_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .or_else(|| f.master_key_file.clone()),
        admin_token: env_secret("KEYTRAP_ADMIN_TOKEN")?.or_else(|| f.admin_token.clone()),
        api_listen: parse(DEFAULT_API_LISTEN)?,
        trap_listen: parse(DEFAULT_TRAP_LISTEN)?,
        health_listen: None,
        http: crate::http::Limits::default(),
        roles: vec![Role::Api, Role::Trap, Role::Worker],
        trap: keytrap_trap::TrapConfig::default(),
        webhooks: WebhookConfig::default(),
    })
}

fn webhook_config(a: &ServeArgs, f: &FileConfig) -> anyhow::Result<WebhookConfig> {
    let cidrs = if a.webhook_allow_cidrs.is_empty() {
        f.webhook_allow_cidrs.clone().unwrap_or_default()
    } else {
        a.webhook_allow_cidrs.clone()
    };
    let addrs = keytrap_webhooks::AddrPolicy::parse_allow_list(&cidrs.join(","))
        .map_err(|e| anyhow::anyhow!("KEYTRAP_WEBHOOK_ALLOW_CIDRS: {e}"))?;
    let timeout = a
        .webhook_timeout_secs
        .or(f.webhook_timeout_secs)
        .unwrap_or(keytrap_webhooks::client::DEFAULT_TIMEOUT.as_secs());
    if timeout == 0 || timeout > 300 {
        bail!("webhook timeout must be between 1 and 300 seconds");
    }
    let retry_scale = a
        .webhook_retry_scale
        .or(f.webhook_retry_scale)
        .unwrap_or(1.0);
    if !retry_scale.is_finite() || retry_scale <= 0.0 || retry_scale > 1000.0 {
        bail!("webhook retry scale must be a number above 0 and at most 1000");
    }
    Ok(WebhookConfig {
        addrs,
        https_only: a
            .webhook_https_only
            .or(f.webhook_https_only)
            .unwrap_or(false),
        timeout: std::time::Duration::from_secs(timeout),
        retry_scale,
    })
}

fn trap_config(a: &ServeArgs, f: &FileConfig) -> anyhow::Result<keytrap_trap::TrapConfig> {
    let mut hosts = std::collections::HashMap::new();
    let pairs: Vec<(String, String)> = if a.trap_hosts.is_empty() {
        f.trap_hosts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect()
    } else {
        a.trap_hosts
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.split_once('=')
                    .map(|(h, x)| (h.to_string(), x.to_string()))
                    .with_context(|| format!("trap host {s:?} is not host=exchange"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    for (host, exchange) in pairs {
        let x = exchange
            .trim()
            .parse::<keytrap_core::Exchange>()
            .with_context(|| format!("trap host {host:?}"))?;
        hosts.insert(host.trim().to_ascii_lowercase(), x);
    }
    let proxies = if a.trusted_proxies.is_empty() {
        f.trusted_proxies.clone().unwrap_or_default()
    } else {
        a.trusted_proxies.clone()
    };
    let trusted_proxies = proxies
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()
        .context("invalid trusted proxy")?;
    Ok(keytrap_trap::TrapConfig {
        hosts,
        trusted_proxies,
    })
}

pub fn resolve_serve(a: &ServeArgs, f: &FileConfig) -> anyhow::Result<Resolved> {
    let mut r = resolve_storage(&a.storage, f)?;
    if let Some(x) = a.api_listen.or(f.api_listen) {
        r.api_listen = x;
    }
    if let Some(x) = a.trap_listen.or(f.trap_listen) {
        r.trap_listen = x;
    }
    r.health_listen = a.health_listen.or(f.health_listen);
    if let Some(secs) = a.header_read_timeout_secs.or(f.header_read_timeout_secs) {
        if secs == 0 {
            bail!("header read timeout must be at least 1 second");
        }
        r.http.header_read_timeout = std::time::Duration::from_secs(secs);
    }
    let roles = if a.role.is_empty() {
        f.roles.clone().unwrap_or_default()
    } else {
        a.role.clone()
    };
    if !roles.is_empty() {
        r.roles = roles;
    }
    let mut seen = Vec::with_capacity(r.roles.len());
    r.roles.retain(|x| {
        let new = !seen.contains(x);
        seen.push(*x);
        new
    });
    r.trap = trap_config(a, f)?;
    r.webhooks = webhook_config(a, f)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(db: Option<&str>) -> ServeArgs {
        ServeArgs {
            storage: StorageArgs {
                database_url: db.map(String::from),
                data_dir: None,
            },
            role: vec![],
            api_listen: None,
            trap_listen: None,
            health_listen: None,
            header_read_timeout_secs: None,
            trap_hosts: vec![],
            trusted_proxies: vec![],
            webhook_allow_cidrs: vec![],
            webhook_https_only: None,
            webhook_timeout_secs: None,
            webhook_retry_scale: None,
        }
    }

    #[test]
    fn webhook_settings_parse_or_fail_clearly() {
        let mut a = args(None);
        let r = resolve_serve(&a, &FileConfig::default()).expect("resolve");
        assert!(r.webhooks.addrs.allowed().is_empty() && !r.webhooks.https_only);
        assert_eq!(r.webhooks.timeout.as_secs(), 15);
        a.webhook_allow_cidrs = vec!["127.0.0.0/8".into(), "10.1.0.0/16".into()];
        a.webhook_retry_scale = Some(0.001);
        a.webhook_https_only = Some(true);
        let r = resolve_serve(&a, &FileConfig::default()).expect("resolve");
        assert_eq!(r.webhooks.addrs.allowed().len(), 2);
        assert!(r.webhooks.https_only && r.webhooks.retry_scale == 0.001);
        a.webhook_allow_cidrs = vec!["127.0.0.0/99".into()];
        let e = resolve_serve(&a, &FileConfig::default()).expect_err("bad cidr");
        assert!(
            format!("{e:#}").contains("KEYTRAP_WEBHOOK_ALLOW_CIDRS"),
            "{e:#}"
        );
        a.webhook_allow_cidrs = vec![];
        a.webhook_retry_scale = Some(-1.0);
        assert!(resolve_serve(&a, &FileConfig::default()).is_err());
        a.webhook_retry_scale = None;
        a.webhook_timeout_secs = Some(0);
        assert!(resolve_serve(&a, &FileConfig::default()).is_err());
    }

    #[test]
    fn file_beats_default_and_flag_beats_file() {
        let f: FileConfig = toml::from_str(
            "database_url = \"sqlite://from-file.db\"\napi_listen = \"127.0.0.1:9000\"\nroles = [\"trap\"]",
        )
        .expect("valid toml");
        let r = resolve_serve(&args(None), &f).expect("resolve");
        assert_eq!(r.database_url, "sqlite://from-file.db");
        assert_eq!(r.api_listen.port(), 9000);
        assert_eq!(r.trap_listen.port(), 8701);
        assert_eq!(r.roles, vec![Role::Trap]);
        let r = resolve_serve(&args(Some("postgres://x/y")), &f).expect("resolve");
        assert_eq!(r.database_url, "postgres://x/y");
        let r = resolve_serve(&args(None), &FileConfig::default()).expect("resolve");
        assert_eq!(r.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(r.roles.len(), 3);
    }

    #[test]
    fn trap_hosts_and_proxies_parse_or_fail_clearly() {
        let mut a = args(None);
        a.trap_hosts = vec![
            "API.Example-Binance.com=binance".into(),
            "kc.example=kucoin".into(),
        ];
        a.trusted_proxies = vec!["10.0.0.0/8".into()];
        let r = resolve_serve(&a, &FileConfig::default()).expect("resolve");
        assert_eq!(
            r.trap.hosts.get("api.example-binance.com"),
            Some(&keytrap_core::Exchange::Binance)
        );
        assert_eq!(r.trap.trusted_proxies.len(), 1);
        a.trap_hosts = vec!["x.example=ftx".into()];
        let e = resolve_serve(&a, &FileConfig::default()).expect_err("unknown exchange");
        assert!(format!("{e:#}").contains("ftx"), "{e:#}");
        a.trap_hosts = vec![];
        a.trusted_proxies = vec!["10.0.0.0/99".into()];
        assert!(resolve_serve(&a, &FileConfig::default()).is_err());
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let e = toml::from_str::<FileConfig>("databse_url = \"x\"").expect_err("typo must fail");
        assert!(e.to_string().contains("databse_url"), "{e}");
    }
}
