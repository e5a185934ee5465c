//! Renderers: a canary's credentials written the way keys sit in the places a thief
//! looks (`.env`, JSON, YAML, CSV, an SQL `INSERT`, a Kubernetes Secret, a ccxt
//! config, a Coinbase CDP key file). Pure text in, text out; no IO.
//!
//! Nothing rendered says "keytrap" or "canary": the text must look like the real
//! thing, and the field names carry the exchange name so the public secret scanners'
//! rules (exchanges.md §10) fire on it as they would on a real key.
//!
//! ```
//! use keytrap_core::render::{render, RenderInput, RenderSpec, Template};
//! use keytrap_core::{Exchange, MasterKey};
//!
//! let keys = MasterKey::from_bytes([7; 32]).keys();
//! let id = uuid::Uuid::now_v7();
//! let creds = keys.credentials(Exchange::Kucoin, id);
//! let input = RenderInput::new(Exchange::Kucoin, &creds);
//! let text = render(&RenderSpec::new(Template::Env), &input).unwrap();
//! assert!(text.starts_with(&format!("KUCOIN_API_KEY={}\n", creds.api_key)));
//! ```

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{Credentials, Exchange};

/// The shapes a canary can be rendered in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Template {
    /// `.env` lines: `KUCOIN_API_KEY=...`.
    Env,
    /// A flat JSON object with exchange-prefixed keys.
    Json,
    /// A flat YAML mapping with exchange-prefixed keys.
    Yaml,
    /// One CSV row (optionally with a header line).
    Csv,
    /// An SQL `INSERT` into a user-described table (`table`, `columns`).
    Sql,
    /// A Kubernetes `Secret` manifest (base64 `data`).
    K8s,
    /// A ccxt configuration snippet (Python, or JSON with `ccxt_language: json`).
    Ccxt,
    /// A Coinbase CDP key file (`{"name", "privateKey"}`); Coinbase only.
    Cdp,
}

impl Template {
    /// Every template.
    pub const ALL: [Template; 8] = [
        Template::Env,
        Template::Json,
        Template::Yaml,
        Template::Csv,
        Template::Sql,
        Template::K8s,
        Template::Ccxt,
        Template::Cdp,
    ];

    /// The id used in the API and CLI (`env`, `k8s`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Env => "env",
            Template::Json => "json",
            Template::Yaml => "yaml",
            Template::Csv => "csv",
            Template::Sql => "sql",
            Template::K8s => "k8s",
            Template::Ccxt => "ccxt",
            Template::Cdp => "cdp",
        }
    }
}

impl std::str::FromStr for Template {
    type Err = RenderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                RenderError(format!(
                    "unknown template {s:?}; expected env, json, yaml, csv, sql, k8s, ccxt or cdp"
                ))
            })
    }
}

/// SQL dialect: decides identifier quoting and string escaping.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum SqlDialect {
    /// PostgreSQL (`"ident"`, `'it''s'`).
    #[default]
    Postgres,
    /// MySQL / MariaDB (`` `ident` ``, `'it''s'` with backslashes doubled).
    Mysql,
    /// SQLite (`"ident"`, `'it''s'`).
    Sqlite,
}

/// ccxt snippet language.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CcxtLanguage {
    /// `exchange = ccxt.kucoin({...})`.
    #[default]
    Python,
    /// `{"exchange": "kucoin", "apiKey": ...}` (ccxt's constructor options as JSON).
    Json,
}

/// One column of an SQL mapping: the column and the value put in it, a text with
/// placeholders (`{api_key}`, `{api_secret}`, `{passphrase}`, `{exchange}`, `{label}`,
/// `{user_id}`, `{created_at}`, `{base_url}`); `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// Column name (`[A-Za-z_][A-Za-z0-9_]*`).
    pub column: String,
    /// Value template, e.g. `{api_key}` or `imported-{label}`.
    pub value: String,
}

impl ColumnMapping {
    /// Parses the CLI form `col=value,col=value` (values may not contain commas).
    pub fn parse_list(s: &str) -> Result<Vec<ColumnMapping>, RenderError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (column, value) = part.split_once('=').ok_or_else(|| {
                RenderError(format!(
                    "column mapping {part:?} is not column=value (e.g. api_key={{api_key}})"
                ))
            })?;
            out.push(ColumnMapping {
                column: column.trim().to_string(),
                value: value.trim().to_string(),
            });
        }
        if out.is_empty() {
            return Err(RenderError("the column mapping is empty".into()));
        }
        Ok(out)
    }
}

/// How to render: the template and its options. Options that do not apply to the
/// template are ignored.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RenderSpec {
    /// Which shape.
    pub template: Option<Template>,
    /// env/k8s: variable prefix instead of the exchange's (`KUCOIN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// csv: write the header line first.
    #[serde(default)]
    pub header: bool,
    /// sql: target table (`name` or `schema.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// sql: the columns and their values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnMapping>,
    /// sql: dialect (default postgres).
    #[serde(default)]
    pub dialect: SqlDialect,
    /// k8s: Secret name (default `{exchange}-api-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// k8s: Secret namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// ccxt: python (default) or json.
    #[serde(default)]
    pub ccxt_language: CcxtLanguage,
    /// Record value: a human label (e.g. `nightly 2026-11-20`); `{label}` in SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Record value: the owning user's id in the target system; `{user_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Record value: creation time as the target stores it; `{created_at}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Record value: a lure endpoint (the trap's URL for this exchange); `{base_url}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

impl RenderSpec {
    /// A spec for `template` with default options.
    pub fn new(template: Template) -> Self {
        RenderSpec {
            template: Some(template),
            ..Default::default()
        }
    }
}

/// What is rendered: the credentials and the companion values of the record.
#[derive(Debug, Clone)]
pub struct RenderInput<'a> {
    /// The canary's exchange.
    pub exchange: Exchange,
    /// The canary's credentials.
    pub credentials: &'a Credentials,
    /// A human label (e.g. `nightly 2026-11-20`).
    pub label: Option<&'a str>,
    /// The owning user's id in the target system.
    pub user_id: Option<&'a str>,
    /// Creation time as the target stores it (any text).
    pub created_at: Option<&'a str>,
    /// A lure endpoint put in the record (the trap's URL for this exchange).
    pub base_url: Option<&'a str>,
}

impl<'a> RenderInput<'a> {
    /// Credentials with no companion values.
    pub fn new(exchange: Exchange, credentials: &'a Credentials) -> Self {
        RenderInput {
            exchange,
            credentials,
            label: None,
            user_id: None,
            created_at: None,
            base_url: None,
        }
    }
}

impl<'a> RenderInput<'a> {
    /// Credentials with the record values of `spec` (label, user id, ...).
    pub fn with_spec(
        exchange: Exchange,
        credentials: &'a Credentials,
        spec: &'a RenderSpec,
    ) -> Self {
        RenderInput {
            exchange,
            credentials,
            label: spec.label.as_deref(),
            user_id: spec.user_id.as_deref(),
            created_at: spec.created_at.as_deref(),
            base_url: spec.base_url.as_deref(),
        }
    }
}

/// A render request that cannot be fulfilled; the message says why and what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, RenderError> {
    Err(RenderError(msg.into()))
}

/// Longest accepted option text (names, prefixes, labels).
const MAX_OPTION: usize = 200;

fn check_option(what: &str, s: &str) -> Result<(), RenderError> {
    if s.chars().count() > MAX_OPTION || s.chars().any(char::is_control) {
        return err(format!(
            "{what} must be at most {MAX_OPTION} characters without control characters"
        ));
    }
    Ok(())
}

/// Renders the record. The output ends with a newline.
pub fn render(spec: &RenderSpec, input: &RenderInput<'_>) -> Result<String, RenderError> {
    for (what, v) in [
        ("label", input.label),
        ("user_id", input.user_id),
        ("created_at", input.created_at),
        ("base_url", input.base_url),
        ("prefix", spec.prefix.as_deref()),
        ("name", spec.name.as_deref()),
        ("namespace", spec.namespace.as_deref()),
    ] {
        if let Some(v) = v {
            check_option(what, v)?;
        }
    }
    let Some(template) = spec.template else {
        return err("template is required: env, json, yaml, csv, sql, k8s, ccxt or cdp");
    };
    match template {
        Template::Env => render_env(spec, input),
        Template::Json => Ok(render_json(input)),
        Template::Yaml => Ok(render_yaml(input)),
        Template::Csv => Ok(render_csv(spec, input)),
        Template::Sql => render_sql(spec, input),
        Template::K8s => render_k8s(spec, input),
        Template::Ccxt => Ok(render_ccxt(spec, input)),
        Template::Cdp => render_cdp(input),
    }
}

/// `KUCOIN`, `COINBASE_EXCHANGE`, or the caller's prefix.
fn env_prefix(spec: &RenderSpec, exchange: Exchange) -> Result<String, RenderError> {
    match &spec.prefix {
        Some(p) => {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || p.as_bytes()[0].is_ascii_digit()
            {
                return err(format!(
                    "prefix {p:?} must be a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
            Ok(p.clone())
        }
        None => Ok(exchange.as_str().to_uppercase().replace('-', "_")),
    }
}

/// The named fields of the record, in output order: (suffix, value).
fn fields<'a>(input: &RenderInput<'a>) -> Vec<(&'static str, &'a str)> {
    let c = input.credentials;
    let mut v = vec![
        ("API_KEY", c.api_key.as_str()),
        ("API_SECRET", c.api_secret.as_str()),
    ];
    if let Some(p) = &c.passphrase {
        v.push(("API_PASSPHRASE", p.as_str()));
    }
    if let Some(u) = input.base_url {
        v.push(("BASE_URL", u));
    }
    v
}

/// A dotenv value: bare when safe, else double-quoted with `\n`, `"`, `\` and `$`
/// escaped (the dotenv/docker-compose convention).
pub fn env_value(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./+=:@!%*#".contains(&b))
        && !s.starts_with('#')
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

fn render_env(spec: &RenderSpec, input: &RenderInput<'_>) -> Result<String, RenderError> {
    let p = env_prefix(spec, input.exchange)?;
    let mut out = String::new();
    if let Some(l) = input.label {
        let _ = writeln!(out, "# {l}");
    }
    for (suffix, v) in fields(input) {
        let _ = writeln!(out, "{p}_{suffix}={}", env_value(v));
    }
    Ok(out)
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Lower-case exchange-prefixed record keys: `kucoin_api_key`, ... plus companions.
fn record(input: &RenderInput<'_>) -> Vec<(String, String)> {
    let ex = input.exchange.as_str().replace('-', "_");
    let mut v = vec![("exchange".to_string(), input.exchange.as_str().to_string())];
    if let Some(l) = input.label {
        v.push(("label".into(), l.to_string()));
    }
    if let Some(u) = input.user_id {
        v.push(("user_id".into(), u.to_string()));
    }
    for (suffix, val) in fields(input) {
        let key = match suffix {
            "BASE_URL" => "base_url".to_string(),
            s => format!("{ex}_{}", s.to_lowercase()),
        };
        v.push((key, val.to_string()));
    }
    if let Some(c) = input.created_at {
        v.push(("created_at".into(), c.to_string()));
    }
    v
}

fn render_json(input: &RenderInput<'_>) -> String {
    let mut out = String::from("{\n");
    let rec = record(input);
    for (i, (k, v)) in rec.iter().enumerate() {
        let comma = if i + 1 < rec.len() { "," } else { "" };
        let _ = writeln!(out, "  {}: {}{comma}", json_str(k), json_str(v));
    }
    out.push_str("}\n");
    out
}

fn render_yaml(input: &RenderInput<'_>) -> String {
    let mut out = String::new();
    for (k, v) in record(input) {
        // A JSON string is a valid YAML double-quoted scalar.
        let _ = writeln!(out, "{k}: {}", json_str(&v));
    }
    out
}

/// RFC 4180 field.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str =
    "exchange,label,user_id,api_key,api_secret,passphrase,created_at,base_url";

fn render_csv(spec: &RenderSpec, input: &RenderInput<'_>) -> String {
    let c = input.credentials;
    let row = [
        input.exchange.as_str(),
        input.label.unwrap_or(""),
        input.user_id.unwrap_or(""),
        &c.api_key,
        &c.api_secret,
        c.passphrase.as_deref().unwrap_or(""),
        input.created_at.unwrap_or(""),
        input.base_url.unwrap_or(""),
    ]
    .map(csv_field)
    .join(",");
    if spec.header {
        format!("{CSV_HEADER}\n{row}\n")
    } else {
        format!("{row}\n")
    }
}

// ---------------------------------------------------------------- SQL

/// Whether `s` is a plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]*`, at most 63 chars).
pub fn is_plain_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Quotes a plain identifier (or `schema.table`) for the dialect; refuses anything
/// else, so a mapping can never smuggle SQL in through a name.
pub fn quote_identifier(dialect: SqlDialect, name: &str) -> Result<String, RenderError> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| is_plain_identifier(p)) {
        return err(format!(
            "{name:?} is not a plain SQL name (letters, digits and _, optionally schema.name)"
        ));
    }
    let q = match dialect {
        SqlDialect::Mysql => '`',
        SqlDialect::Postgres | SqlDialect::Sqlite => '"',
    };
    Ok(parts
        .iter()
        .map(|p| format!("{q}{p}{q}"))
        .collect::<Vec<_>>()
        .join("."))
}

/// An SQL string literal: `'` doubled; for MySQL also `\` doubled (backslash is an
/// escape there unless NO_BACKSLASH_ESCAPES); NUL refused (no dialect stores it in text).
pub fn quote_literal(dialect: SqlDialect, s: &str) -> Result<String, RenderError> {
    if s.contains('\0') {
        return err("values may not contain NUL characters");
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for ch in s.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' if dialect == SqlDialect::Mysql => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// A mapped column value after placeholder substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// Text (the whole value, or a template with placeholders).
    Text(String),
    /// The value was exactly one placeholder with no value (e.g. `{passphrase}` on
    /// Binance): stored as NULL.
    Null,
}

/// The placeholders a column value may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "api_key",
    "api_secret",
    "passphrase",
    "exchange",
    "label",
    "user_id",
    "created_at",
    "base_url",
];

fn placeholder_value<'a>(input: &'a RenderInput<'a>, name: &str) -> Option<Option<&'a str>> {
    let c = input.credentials;
    Some(match name {
        "api_key" => Some(c.api_key.as_str()),
        "api_secret" => Some(c.api_secret.as_str()),
        "passphrase" => c.passphrase.as_deref(),
        "exchange" => Some(input.exchange.as_str()),
        "label" => input.label,
        "user_id" => input.user_id,
        "created_at" => input.created_at,
        "base_url" => input.base_url,
        _ => return None,
    })
}

/// Substitutes the placeholders of a column value template.
pub fn expand_value(template: &str, input: &RenderInput<'_>) -> Result<SqlValue, RenderError> {
    let mut out = String::new();
    let mut rest = template;
    let mut only_placeholder_missing = false;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if let Some(t) = tail.strip_prefix('{') {
            let end = t
                .find('}')
                .ok_or_else(|| RenderError(format!("unclosed {{ in column value {template:?}")))?;
            let name = &t[..end];
            match placeholder_value(input, name) {
                None => {
                    return err(format!(
                        "unknown placeholder {{{name}}} in {template:?}; known: {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                    ))
                }
                Some(Some(v)) => out.push_str(v),
                Some(None) => {
                    if template == format!("{{{name}}}") {
                        only_placeholder_missing = true;
                    } else {
                        return err(format!(
                            "{{{name}}} has no value here (used inside {template:?}); give one or map the column to {{{name}}} alone to store NULL"
                        ));
                    }
                }
            }
            rest = &t[end + 1..];
        } else {
            return err(format!(
                "stray }} in column value {template:?} (write }}}} for a literal one)"
            ));
        }
    }
    out.push_str(rest);
    if only_placeholder_missing {
        Ok(SqlValue::Null)
    } else {
        Ok(SqlValue::Text(out))
    }
}

/// Checks the mapping (names, duplicates) and expands every value: the columns
/// quoted for the dialect and their values.
pub fn sql_row(
    dialect: SqlDialect,
    columns: &[ColumnMapping],
    input: &RenderInput<'_>,
) -> Result<Vec<(String, SqlValue)>, RenderError> {
    if columns.is_empty() {
        return err("sql needs columns: a mapping such as api_key={api_key},secret={api_secret}");
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(columns.len());
    for m in columns {
        quote_identifier(dialect, &m.column)?;
        if m.column.contains('.') {
            return err(format!("column {:?} may not be qualified", m.column));
        }
        if !seen.insert(m.column.to_ascii_lowercase()) {
            return err(format!("column {:?} is mapped twice", m.column));
        }
        out.push((m.column.clone(), expand_value(&m.value, input)?));
    }
    Ok(out)
}

fn render_sql(spec: &RenderSpec, input: &RenderInput<'_>) -> Result<String, RenderError> {
    let table = spec
        .table
        .as_deref()
        .ok_or_else(|| RenderError("sql needs table".into()))?;
    let d = spec.dialect;
    let table = quote_identifier(d, table)?;
    let row = sql_row(d, &spec.columns, input)?;
    let cols = row
        .iter()
        .map(|(c, _)| quote_identifier(d, c))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let vals = row
        .iter()
        .map(|(_, v)| match v {
            SqlValue::Null => Ok("NULL".to_string()),
            SqlValue::Text(t) => quote_literal(d, t),
        })
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    Ok(format!("INSERT INTO {table} ({cols}) VALUES ({vals});\n"))
}

// ---------------------------------------------------------------- Kubernetes

/// An RFC 1123 DNS subdomain (what Kubernetes accepts as a Secret name).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn render_k8s(spec: &RenderSpec, input: &RenderInput<'_>) -> Result<String, RenderError> {
    let p = env_prefix(spec, input.exchange)?;
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-api-credentials", input.exchange.as_str()));
    if !is_dns_subdomain(&name) {
        return err(format!(
            "Secret name {name:?} must be lower-case letters, digits, '-' and '.'"
        ));
    }
    let mut out = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n");
    if let Some(ns) = &spec.namespace {
        if !is_dns_subdomain(ns) || ns.contains('.') || ns.len() > 63 {
            return err(format!(
                "namespace {ns:?} must be lower-case letters, digits and '-'"
            ));
        }
        let _ = writeln!(out, "  namespace: {ns}");
    }
    if let Some(l) = input.label {
        let _ = writeln!(out, "  annotations:\n    description: {}", json_str(l));
    }
    out.push_str("type: Opaque\ndata:\n");
    for (suffix, v) in fields(input) {
        let _ = writeln!(out, "  {p}_{suffix}: {}", STANDARD.encode(v));
    }
    Ok(out)
}

// ---------------------------------------------------------------- ccxt

/// ccxt's exchange class id.
pub fn ccxt_id(exchange: Exchange) -> &'static str {
    match exchange {
        Exchange::Binance => "binance",
        Exchange::Kucoin => "kucoin",
        Exchange::Coinbase => "coinbase",
        Exchange::CoinbaseExchange => "coinbaseexchange",
        Exchange::Okx => "okx",
        Exchange::Kraken => "kraken",
        Exchange::Bybit => "bybit",
    }
}

fn py_str(s: &str) -> String {
    // A JSON string is a valid Python string literal (same escapes for what we emit).
    json_str(s)
}

fn render_ccxt(spec: &RenderSpec, input: &RenderInput<'_>) -> String {
    let c = input.credentials;
    let id = ccxt_id(input.exchange);
    match spec.ccxt_language {
        CcxtLanguage::Json => {
            let mut v = serde_json::Map::new();
            v.insert("exchange".into(), id.into());
            v.insert("apiKey".into(), c.api_key.clone().into());
            v.insert("secret".into(), c.api_secret.clone().into());
            if let Some(p) = &c.passphrase {
                v.insert("password".into(), p.clone().into());
            }
            if let Some(u) = input.base_url {
                v.insert("urls".into(), serde_json::json!({ "api": { "rest": u } }));
            }
            let mut s =
                serde_json::to_string_pretty(&serde_json::Value::Object(v)).unwrap_or_default();
            s.push('\n');
            s
        }
        CcxtLanguage::Python => {
            let mut out = String::from(if input.base_url.is_some() {
                "import re\n\nimport ccxt\n\n"
            } else {
                "import ccxt\n\n"
            });
            if let Some(l) = input.label {
                let _ = writeln!(out, "# {l}");
            }
            let _ = writeln!(out, "{id} = ccxt.{id}({{");
            let _ = writeln!(out, "    \"apiKey\": {},", py_str(&c.api_key));
            let _ = writeln!(out, "    \"secret\": {},", py_str(&c.api_secret));
            if let Some(p) = &c.passphrase {
                let _ = writeln!(out, "    \"password\": {},", py_str(p));
            }
            out.push_str("})\n");
            if let Some(u) = input.base_url {
                // ccxt keeps several API URLs per exchange; point them all at one host.
                let _ = write!(
                    out,
                    "\nBASE_URL = {}\n\n\ndef _rebase(urls):\n    if isinstance(urls, dict):\n        return {{k: _rebase(v) for k, v in urls.items()}}\n    if isinstance(urls, str):\n        return re.sub(r\"^https?://[^/]+\", BASE_URL, urls)\n    return urls\n\n\n{id}.urls[\"api\"] = _rebase({id}.urls[\"api\"])\n",
                    py_str(u)
                );
            }
            out
        }
    }
}

// ---------------------------------------------------------------- Coinbase CDP

fn render_cdp(input: &RenderInput<'_>) -> Result<String, RenderError> {
    if input.exchange != Exchange::Coinbase {
        return err(format!(
            "the cdp template is for coinbase canaries; this one is {}",
            input.exchange
        ));
    }
    let c = input.credentials;
    // Coinbase's download: two fields, three-space indent, PEM with escaped newlines.
    Ok(format!(
        "{{\n   \"name\": {},\n   \"privateKey\": {}\n}}\n",
        json_str(&c.api_key),
        json_str(&c.api_secret)
    ))
}
