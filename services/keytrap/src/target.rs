//! The database a canary row is planted in (PostgreSQL, MySQL/MariaDB or SQLite):
//! connecting, introspecting the target table, checking a column mapping against it,
//! and the values that make a planted row look like its neighbours.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDateTime, Utc};
use keytrap_core::render::{is_plain_identifier, quote_identifier, ColumnMapping, SqlDialect};
use rand::Rng;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

/// A connected target database.
pub struct Target {
    pub pool: AnyPool,
    pub dialect: SqlDialect,
    /// The URL without user name or password: what keytrap records.
    pub public_url: String,
}

/// Column `i` of a row as text. MySQL reports TEXT columns (and casts of them) as
/// BLOB with a character set, which the `Any` driver will not decode as a string.
pub fn text_at(row: &sqlx::any::AnyRow, i: usize) -> anyhow::Result<Option<String>> {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return Ok(v);
    }
    let b: Option<Vec<u8>> = row
        .try_get(i)
        .with_context(|| format!("column {i} of the answer is not text"))?;
    Ok(b.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The dialect of a connection URL.
pub fn dialect_of(url: &str) -> anyhow::Result<SqlDialect> {
    let scheme = url.split(':').next().unwrap_or("");
    Ok(match scheme {
        "postgres" | "postgresql" => SqlDialect::Postgres,
        "mysql" | "mariadb" => SqlDialect::Mysql,
        "sqlite" => SqlDialect::Sqlite,
        _ => bail!(
            "unsupported database URL scheme {scheme:?}; use postgres://, mysql:// or sqlite://"
        ),
    })
}

/// The URL with user and password removed (SQLite paths are kept as they are).
pub fn public_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.scheme() != "sqlite" => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.to_string()
        }
        _ => url.split('?').next().unwrap_or(url).to_string(),
    }
}

impl Target {
    /// Connects (10 s timeout). For SQLite the file must exist: planting never creates
    /// a database.
    pub async fn connect(url: &str) -> anyhow::Result<Target> {
        sqlx::any::install_default_drivers();
        let dialect = dialect_of(url)?;
        let url_for_sqlx = match dialect {
            SqlDialect::Mysql if url.starts_with("mariadb:") => {
                url.replacen("mariadb:", "mysql:", 1)
            }
            _ => url.to_string(),
        };
        let opts: AnyConnectOptions = url_for_sqlx
            .parse()
            .with_context(|| format!("invalid database URL {}", public_url(url)))?;
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot connect to {}", public_url(url)))?;
        Ok(Target {
            pool,
            dialect,
            public_url: public_url(url),
        })
    }

    /// The table's columns; an error naming the table if it does not exist.
    pub async fn columns(&self, table: &str) -> anyhow::Result<Vec<Column>> {
        let (schema, name) = split_table(table)?;
        let rows = match self.dialect {
            SqlDialect::Postgres => {
                sqlx::query(
                    "SELECT c.column_name::text, c.data_type::text,
                            COALESCE(c.character_maximum_length::text, ''),
                            c.is_nullable::text,
                            CASE WHEN c.column_default IS NOT NULL OR c.is_identity = 'YES'
                                   OR c.is_generated = 'ALWAYS' THEN '1' ELSE '0' END,
                            CASE WHEN EXISTS (
                                SELECT 1 FROM information_schema.table_constraints tc
                                JOIN information_schema.key_column_usage k
                                  ON k.constraint_name = tc.constraint_name
                                 AND k.table_schema = tc.table_schema
                                 AND k.table_name = tc.table_name
                                WHERE tc.constraint_type = 'PRIMARY KEY'
                                  AND tc.table_schema = c.table_schema
                                  AND tc.table_name = c.table_name
                                  AND k.column_name = c.column_name) THEN '1' ELSE '0' END
                     FROM information_schema.columns c
                     WHERE c.table_schema = COALESCE($1, current_schema()) AND c.table_name = $2
                     ORDER BY c.ordinal_position",
                )
                .bind(schema)
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
            SqlDialect::Mysql => {
                sqlx::query(
                    "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR),
                            CAST(COALESCE(CHARACTER_MAXIMUM_LENGTH, '') AS CHAR),
                            CAST(IS_NULLABLE AS CHAR),
                            CASE WHEN COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%'
                                 THEN '1' ELSE '0' END,
                            CASE WHEN COLUMN_KEY = 'PRI' THEN '1' ELSE '0' END
                     FROM information_schema.COLUMNS
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
                     ORDER BY ORDINAL_POSITION",
                )
                .bind(schema)
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
            SqlDialect::Sqlite => {
                if schema.is_some() {
                    bail!("SQLite tables are not schema-qualified: use the table name alone");
                }
                sqlx::query(
                    "SELECT name, CAST(type AS TEXT), '',
                            CASE WHEN \"notnull\" = 1 THEN 'NO' ELSE 'YES' END,
                            CASE WHEN dflt_value IS NOT NULL
                                   OR (pk = 1 AND upper(type) = 'INTEGER') THEN '1' ELSE '0' END,
                            CASE WHEN pk > 0 THEN '1' ELSE '0' END
                     FROM pragma_table_info(?)",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await
            }
        }
        .with_context(|| format!("cannot read the columns of {table}"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let t = |i| text_at(&r, i).map(Option::unwrap_or_default);
            let name = t(0)?;
            let ty = t(1)?;
            let max = t(2)?;
            let nullable = t(3)?;
            let has_default = t(4)?;
            let pk = t(5)?;
            out.push(Column {
                kind: ColumnKind::classify(self.dialect, &ty),
                type_name: ty,
                max_len: max.parse().ok(),
                nullable: nullable == "YES",
                has_default: has_default == "1",
                primary_key: pk == "1",
                name,
            });
        }
        if out.is_empty() {
            bail!(
                "table {table} does not exist in {} (or has no columns visible to this user)",
                self.public_url
            );
        }
        Ok(out)
    }

    /// A scalar query's single text value (NULL as `None`).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query(sql).fetch_one(&self.pool).await?;
        text_at(&row, 0)
    }

    /// SQL casting `expr` to text in this dialect.
    pub fn text(&self, expr: &str) -> String {
        match self.dialect {
            SqlDialect::Postgres => format!("CAST({expr} AS TEXT)"),
            SqlDialect::Mysql => format!("CAST({expr} AS CHAR)"),
            SqlDialect::Sqlite => format!("CAST({expr} AS TEXT)"),
        }
    }

    pub fn quote(&self, name: &str) -> anyhow::Result<String> {
        quote_identifier(self.dialect, name).map_err(|e| anyhow::anyhow!(e.0))
    }
}

fn split_table(table: &str) -> anyhow::Result<(Option<&str>, &str)> {
    let (schema, name) = match table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, table),
    };
    if !is_plain_identifier(name) || schema.is_some_and(|s| !is_plain_identifier(s)) {
        bail!(
            "{table:?} is not a plain table name (letters, digits and _, optionally schema.table)"
        );
    }
    Ok((schema, name))
}

/// What a column can hold, as far as planting cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Integer,
    Timestamp,
    Other,
}

impl ColumnKind {
    fn classify(dialect: SqlDialect, ty: &str) -> ColumnKind {
        let t = ty.to_ascii_lowercase();
        match dialect {
            SqlDialect::Sqlite => {
                // SQLite's affinity rules (section 3.1 of its datatype page).
                if t.contains("int") {
                    ColumnKind::Integer
                } else if t.is_empty()
                    || t.contains("char")
                    || t.contains("clob")
                    || t.contains("text")
                {
                    ColumnKind::Text
                } else if t.contains("date") || t.contains("time") {
                    ColumnKind::Timestamp
                } else {
                    ColumnKind::Other
                }
            }
            _ => {
                if t.contains("char") || t.contains("text") {
                    ColumnKind::Text
                } else if t.contains("int") {
                    ColumnKind::Integer
                } else if t.contains("timestamp") || t == "datetime" || t == "date" {
                    ColumnKind::Timestamp
                } else {
                    ColumnKind::Other
                }
            }
        }
    }
}

/// One column of the target table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub kind: ColumnKind,
    pub max_len: Option<usize>,
    pub nullable: bool,
    pub has_default: bool,
    pub primary_key: bool,
}

/// How a mapped value is written into its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A string literal.
    Text,
    /// An integer literal (the value must be all digits).
    Integer,
    /// A timestamp literal `'YYYY-MM-DD HH:MM:SS'`.
    Timestamp,
}

/// The mapping checked against the table: each column's encoding, the column holding
/// the API key, and the primary key (if a single column).
#[derive(Debug, Clone)]
pub struct Plan {
    pub columns: Vec<(ColumnMapping, Column, Encoding)>,
    pub key_column: String,
    pub secret_column: Option<String>,
    pub primary_key: Option<String>,
}

/// Checks `mapping` against `columns`; every refusal names the column and the reason.
pub fn plan(table: &str, columns: &[Column], mapping: &[ColumnMapping]) -> anyhow::Result<Plan> {
    let mut out = Vec::new();
    let mut key_column = None;
    let mut secret_column = None;
    for m in mapping {
        let col = columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&m.column))
            .with_context(|| {
                format!(
                    "table {table} has no column {:?}; its columns are {}",
                    m.column,
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if out
            .iter()
            .any(|(_, c, _): &(ColumnMapping, Column, Encoding)| c.name == col.name)
        {
            bail!("column {} is mapped twice", col.name);
        }
        let whole = |p: &str| m.value == format!("{{{p}}}");
        let enc = match col.kind {
            ColumnKind::Text => Encoding::Text,
            ColumnKind::Integer if whole("user_id") => Encoding::Integer,
            ColumnKind::Timestamp if whole("created_at") => Encoding::Timestamp,
            ColumnKind::Integer if whole("created_at") => Encoding::Integer,
            _ => bail!(
                "column {} is {} but gets {:?}: only text columns take key material and labels \
                 ({{user_id}} also fits an integer column, {{created_at}} a timestamp column)",
                col.name,
                col.type_name,
                m.value
            ),
        };
        if whole("api_key") {
            key_column = Some(col.name.clone());
        }
        if whole("api_secret") {
            secret_column = Some(col.name.clone());
        }
        let mut m = m.clone();
        m.column = col.name.clone();
        out.push((m, col.clone(), enc));
    }
    let key_column = key_column.context(
        "the mapping must put {api_key} alone in one column (keytrap finds the planted row by it)",
    )?;
    for c in columns {
        let mapped = out.iter().any(|(_, m, _)| m.name == c.name);
        if !mapped && !c.nullable && !c.has_default {
            bail!(
                "column {} of {table} is NOT NULL without a default and is not mapped; map it (e.g. {}=...)",
                c.name,
                c.name
            );
        }
    }
    let pks: Vec<&Column> = columns.iter().filter(|c| c.primary_key).collect();
    let primary_key = (pks.len() == 1).then(|| pks[0].name.clone());
    Ok(Plan {
        columns: out,
        key_column,
        secret_column,
        primary_key,
    })
}

/// Labels people give their exchange API keys.
const LABELS: &[&str] = &[
    "trading-bot",
    "main",
    "portfolio tracker",
    "tax export",
    "grid bot",
    "arbitrage",
    "read-only",
    "rebalancer",
    "dca",
    "koinly",
    "backup key",
    "mobile",
];

/// A plausible label.
pub fn fake_label(rng: &mut impl Rng) -> String {
    LABELS[rng.random_range(0..LABELS.len())].to_string()
}

/// Companion values drawn to look like the table's own rows.
pub struct Companions {
    next_user: Option<i64>,
    existing_users: Vec<String>,
    created: (DateTime<Utc>, DateTime<Utc>),
    created_epoch_ms: bool,
    created_style: TimeStyle,
}

#[derive(Clone, Copy)]
enum TimeStyle {
    Sql,
    Rfc3339,
}

fn parse_time(s: &str) -> Option<(DateTime<Utc>, TimeStyle)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.with_timezone(&Utc), TimeStyle::Rfc3339));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some((t.with_timezone(&Utc), TimeStyle::Sql));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some((t.and_utc(), TimeStyle::Sql));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
            return Some((d.and_hms_opt(0, 0, 0)?.and_utc(), TimeStyle::Sql));
        }
    }
    None
}

impl Companions {
    /// Reads the ranges of the mapped `{user_id}` and `{created_at}` columns.
    pub async fn survey(target: &Target, table: &str, plan: &Plan) -> anyhow::Result<Companions> {
        let qt = target.quote(table)?;
        let mut c = Companions {
            next_user: None,
            existing_users: Vec::new(),
            created: (Utc::now() - chrono::Duration::days(90), Utc::now()),
            created_epoch_ms: false,
            created_style: TimeStyle::Sql,
        };
        for (m, col, enc) in &plan.columns {
            let qc = target.quote(&col.name)?;
            if m.value == "{user_id}" {
                if *enc == Encoding::Integer {
                    let max = target
                        .scalar(&format!(
                            "SELECT {} FROM {qt}",
                            target.text(&format!("MAX({qc})"))
                        ))
                        .await?;
                    c.next_user = Some(max.and_then(|m| m.parse().ok()).unwrap_or(1000));
                } else {
                    let rows = sqlx::query(&format!(
                        "SELECT DISTINCT {} FROM {qt} WHERE {qc} IS NOT NULL LIMIT 200",
                        target.text(&qc)
                    ))
                    .fetch_all(&target.pool)
                    .await?;
                    c.existing_users = rows
                        .iter()
                        .filter_map(|r| text_at(r, 0).ok().flatten())
                        .collect();
                    if c.existing_users.iter().all(|u| u.parse::<i64>().is_ok()) {
                        c.next_user = Some(
                            c.existing_users
                                .iter()
                                .filter_map(|u| u.parse().ok())
                                .max()
                                .unwrap_or(1000),
                        );
                        c.existing_users.clear();
                    }
                }
            }
            if m.value == "{created_at}" {
                let lo = target
                    .scalar(&format!(
                        "SELECT {} FROM {qt}",
                        target.text(&format!("MIN({qc})"))
                    ))
                    .await?;
                let hi = target
                    .scalar(&format!(
                        "SELECT {} FROM {qt}",
                        target.text(&format!("MAX({qc})"))
                    ))
                    .await?;
                if *enc == Encoding::Integer {
                    let hi_n: i64 = hi.as_deref().and_then(|h| h.parse().ok()).unwrap_or(0);
                    c.created_epoch_ms = hi_n > 100_000_000_000;
                    let to_t = |v: i64| {
                        if c.created_epoch_ms {
                            DateTime::from_timestamp_millis(v)
                        } else {
                            DateTime::from_timestamp(v, 0)
                        }
                    };
                    if let (Some(l), Some(h)) =
                        (lo.and_then(|v| v.parse().ok()).and_then(to_t), to_t(hi_n))
                    {
                        c.created = (l.max(h - chrono::Duration::days(90)), h.max(l));
                    }
                } else if let (Some((l, _)), Some((h, style))) = (
                    lo.as_deref().and_then(parse_time),
                    hi.as_deref().and_then(parse_time),
                ) {
                    c.created = (l.max(h - chrono::Duration::days(90)), h);
                    c.created_style = style;
                }
            }
        }
        Ok(c)
    }

    /// The next user id: a little above the largest (new sign-ups), or an existing
    /// user's id when the ids are not numbers.
    pub fn user_id(&mut self, rng: &mut impl Rng) -> Option<String> {
        if let Some(n) = self.next_user.as_mut() {
            *n += rng.random_range(1..=9);
            return Some(n.to_string());
        }
        if self.existing_users.is_empty() {
            return None;
        }
        Some(self.existing_users[rng.random_range(0..self.existing_users.len())].clone())
    }

    /// A creation time within the range of the table's recent rows, in its format.
    pub fn created_at(&self, rng: &mut impl Rng, enc: Option<Encoding>) -> String {
        let (lo, hi) = self.created;
        let span = (hi - lo).num_seconds().max(1);
        let t = lo + chrono::Duration::seconds(rng.random_range(0..=span));
        match enc {
            Some(Encoding::Integer) if self.created_epoch_ms => t.timestamp_millis().to_string(),
            Some(Encoding::Integer) => t.timestamp().to_string(),
            _ => match self.created_style {
                TimeStyle::Rfc3339 => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                TimeStyle::Sql => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            },
        }
    }
}
