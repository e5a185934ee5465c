//! `keytrap mint`: mint canaries through a running server's API and print them.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use keytrap_api::{CanaryView, MintRequest, MintResponse};
use keytrap_core::Exchange;
use serde_json::json;

/// Most canaries per API call (the API's own limit).
const BATCH: u32 = 10_000;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Json,
    Env,
    Csv,
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// binance, kucoin, coinbase, coinbase-exchange, okx, kraken or bybit.
    #[arg(long)]
    pub exchange: Exchange,
    /// Name of the store the canaries will be planted in.
    #[arg(long)]
    pub store: String,
    /// Create the store (kind `database`) if it does not exist.
    #[arg(long)]
    pub create_store: bool,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[arg(long)]
    pub memo: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// Management API base URL.
    #[arg(long, env = "KEYTRAP_URL", default_value = "http://127.0.0.1:8700")]
    pub url: String,
    /// API token with the `mint` scope (prefer the variable: flags show in `ps`).
    #[arg(long, env = "KEYTRAP_TOKEN", hide_env_values = true)]
    pub token: String,
}

async fn api_error(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body["error"]["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| body.to_string());
    anyhow::anyhow!("the server answered {status}: {msg}")
}

pub async fn run(a: MintArgs) -> anyhow::Result<()> {
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    let base = a.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let auth = format!("Bearer {}", a.token);

    let resp = http
        .get(format!("{base}/v1/stores"))
        .query(&[("name", a.store.as_str())])
        .header("authorization", &auth)
        .send()
        .await
        .with_context(|| format!("cannot reach keytrap at {base}"))?;
    if !resp.status().is_success() {
        return Err(api_error(resp).await);
    }
    let list: serde_json::Value = resp.json().await?;
    let store_id = match list["stores"][0]["id"].as_str() {
        Some(id) => id.to_string(),
        None if a.create_store => {
            let resp = http
                .post(format!("{base}/v1/stores"))
                .header("authorization", &auth)
                .json(&json!({ "name": a.store, "kind": "database" }))
                .send()
                .await?;
            if !resp.status().is_success() {
                return Err(api_error(resp).await);
            }
            let s: serde_json::Value = resp.json().await?;
            s["id"].as_str().context("store id missing")?.to_string()
        }
        None => bail!(
            "store {:?} does not exist; create it first or pass --create-store",
            a.store
        ),
    };
    let store_uuid = store_id.parse().context("server returned a bad store id")?;

    let bar = if a.count > BATCH {
        let b = ProgressBar::new(u64::from(a.count));
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} canaries ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printer = Printer::new(a.format, a.exchange);
    printer.start(&mut out)?;
    let mut left = a.count;
    while left > 0 {
        let n = left.min(BATCH);
        let req = MintRequest {
            exchange: a.exchange,
            store_id: store_uuid,
            memo: a.memo.clone(),
            labels: Default::default(),
            count: Some(n),
            expires_at: None,
        };
        let resp = http
            .post(format!("{base}/v1/canaries"))
            .header("authorization", &auth)
            .json(&req)
            .send()
            .await?;
        if !resp.status().is_success() {
            bar.abandon();
            return Err(api_error(resp).await);
        }
        let minted: MintResponse = resp.json().await.context("unexpected mint response")?;
        for c in &minted.canaries {
            printer.canary(&mut out, c)?;
        }
        left -= n;
        bar.inc(u64::from(n));
    }
    printer.finish(&mut out)?;
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// Streams canaries in the chosen format, so 100,000 of them never sit in memory twice.
struct Printer {
    format: OutputFormat,
    prefix: String,
    n: usize,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn env_value(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./+=".contains(&b))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('\n', "\\n")
        )
    }
}

impl Printer {
    fn new(format: OutputFormat, exchange: Exchange) -> Self {
        Printer {
            format,
            prefix: exchange.as_str().to_uppercase().replace('-', "_"),
            n: 0,
        }
    }

    fn start(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Json => write!(out, "["),
            OutputFormat::Csv => writeln!(
                out,
                "id,exchange,store_id,api_key,api_secret,passphrase,created_at"
            ),
            OutputFormat::Env => Ok(()),
        }
    }

    fn canary(&mut self, out: &mut impl Write, c: &CanaryView) -> anyhow::Result<()> {
        let creds = c
            .credentials
            .as_ref()
            .context("the server returned a canary without credentials")?;
        match self.format {
            OutputFormat::Json => {
                if self.n > 0 {
                    write!(out, ",")?;
                }
                write!(out, "\n  {}", serde_json::to_string(c)?)?;
            }
            OutputFormat::Csv => writeln!(
                out,
                "{},{},{},{},{},{},{}",
                c.id,
                c.exchange,
                c.store_id,
                csv_field(&creds.api_key),
                csv_field(&creds.api_secret),
                csv_field(creds.passphrase.as_deref().unwrap_or("")),
                c.created_at.to_rfc3339()
            )?,
            OutputFormat::Env => {
                let suffix = if self.n == 0 {
                    String::new()
                } else {
                    format!("_{}", self.n + 1)
                };
                let p = &self.prefix;
                writeln!(out, "# keytrap canary {} ({})", c.id, c.exchange)?;
                writeln!(out, "{p}_API_KEY{suffix}={}", env_value(&creds.api_key))?;
                writeln!(
                    out,
                    "{p}_API_SECRET{suffix}={}",
                    env_value(&creds.api_secret)
                )?;
                if let Some(pp) = &creds.passphrase {
                    writeln!(out, "{p}_API_PASSPHRASE{suffix}={}", env_value(pp))?;
                }
            }
        }
        self.n += 1;
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Json => writeln!(out, "\n]"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_env_quote_what_needs_it() {
        assert_eq!(csv_field("abc"), "abc");
        assert_eq!(csv_field("a,\"b\"\nc"), "\"a,\"\"b\"\"\nc\"");
        assert_eq!(env_value("AbC123"), "AbC123");
        assert_eq!(
            env_value("-----BEGIN EC PRIVATE KEY-----\nMHc\n"),
            "\"-----BEGIN EC PRIVATE KEY-----\\nMHc\\n\""
        );
        assert_eq!(env_value("pa$s\"w"), "\"pa\\$s\\\"w\"");
    }
}
