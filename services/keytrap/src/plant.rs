//! `keytrap render`, `keytrap plant db|file|rotate` and `keytrap verify db|file`: seeding
//! canaries into the places keys live and checking they are still there. They talk to
//! a running keytrap through the SDK (`KEYTRAP_URL`, `KEYTRAP_TOKEN` with `mint`).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use keytrap_core::render::{
    expand_value, quote_literal, CcxtLanguage, ColumnMapping, RenderInput, RenderSpec, SqlDialect,
    SqlValue, Template,
};
use keytrap_core::{Credentials, Exchange, MasterKey};
use keytrap_sdk::{Canary, CanaryFilter, Client, MintRequest, NewPlacement, NewStore, Placement};
use uuid::Uuid;

use crate::target::{fake_label, plan, text_at, Companions, Encoding, Plan, Target};

/// Rows per INSERT statement (and per lookup of the inserted rows).
const CHUNK: usize = 200;
/// Placements per API call: each carries its column mapping, and the API reads
/// bodies up to 256 KiB.
const RECORD_CHUNK: usize = 200;
/// Most canaries one `plant db` creates.
const MAX_PLANT: u32 = 100_000;

/// Where keytrap's management API is. `Debug` hides the token.
#[derive(Clone, Args)]
pub struct ApiArgs {
    /// Management API base URL.
    #[arg(
        long = "keytrap-url",
        env = "KEYTRAP_URL",
        default_value = "http://127.0.0.1:8700"
    )]
    pub keytrap_url: String,
    /// API token with the `mint` scope (prefer the variable: flags show in `ps`).
    #[arg(long, env = "KEYTRAP_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("keytrap_url", &self.keytrap_url)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.keytrap_url, self.token.clone())?)
    }
}

// ---------------------------------------------------------------- render

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The canary's id.
    #[arg(long)]
    pub canary: Uuid,
    /// env, json, yaml, csv, sql, k8s, ccxt or cdp.
    #[arg(long)]
    pub template: Template,
    /// sql: the table.
    #[arg(long)]
    pub table: Option<String>,
    /// sql: `column={placeholder},...` e.g. `api_key={api_key},secret={api_secret}`.
    #[arg(long)]
    pub map: Option<String>,
    /// sql: postgres, mysql or sqlite.
    #[arg(long, default_value = "postgres", value_parser = parse_dialect)]
    pub dialect: SqlDialect,
    /// env/k8s: variable prefix (default: the exchange, e.g. KUCOIN).
    #[arg(long)]
    pub prefix: Option<String>,
    /// k8s: Secret name.
    #[arg(long)]
    pub name: Option<String>,
    /// k8s: namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// csv: print the header line.
    #[arg(long)]
    pub header: bool,
    /// ccxt: print JSON instead of Python.
    #[arg(long)]
    pub ccxt_json: bool,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Companion values of the rendered record.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// A label put in the record (`{label}`).
    #[arg(long)]
    pub label: Option<String>,
    /// `{user_id}`.
    #[arg(long)]
    pub user_id: Option<String>,
    /// `{created_at}`.
    #[arg(long)]
    pub created_at: Option<String>,
    /// A lure endpoint put in the record (`{base_url}`): the trap's URL.
    #[arg(long)]
    pub base_url: Option<String>,
}

fn parse_dialect(s: &str) -> Result<SqlDialect, String> {
    match s {
        "postgres" | "postgresql" => Ok(SqlDialect::Postgres),
        "mysql" | "mariadb" => Ok(SqlDialect::Mysql),
        "sqlite" => Ok(SqlDialect::Sqlite),
        _ => Err(format!(
            "unknown dialect {s:?}; expected postgres, mysql or sqlite"
        )),
    }
}

pub async fn render(a: RenderArgs) -> anyhow::Result<()> {
    let columns = match &a.map {
        Some(m) => ColumnMapping::parse_list(m).map_err(|e| anyhow::anyhow!(e.0))?,
        None => Vec::new(),
    };
    let spec = RenderSpec {
        template: Some(a.template),
        prefix: a.prefix,
        header: a.header,
        table: a.table,
        columns,
        dialect: a.dialect,
        name: a.name,
        namespace: a.namespace,
        ccxt_language: if a.ccxt_json {
            CcxtLanguage::Json
        } else {
            CcxtLanguage::Python
        },
        label: a.record.label,
        user_id: a.record.user_id,
        created_at: a.record.created_at,
        base_url: a.record.base_url,
    };
    let r = a.api.client()?.render(a.canary, &spec).await?;
    print!("{}", r.text);
    Ok(())
}

// ---------------------------------------------------------------- plant

#[derive(Debug, Subcommand)]
pub enum PlantCommand {
    /// Insert canary rows into a table (dry run unless --apply).
    Db(PlantDbArgs),
    /// Write or append one fresh canary to a file, tagged with a snapshot label.
    File(PlantFileArgs),
    /// Plant a new generation in a file and expire the previous ones after a grace period.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct PlantDbArgs {
    /// Target database: postgres://..., mysql://... (MariaDB too) or sqlite://path.
    #[arg(long)]
    pub url: String,
    /// Target table (`name` or `schema.name`).
    #[arg(long)]
    pub table: String,
    /// `column={placeholder},...`; placeholders: {api_key} {api_secret} {passphrase}
    /// {exchange} {label} {user_id} {created_at} {base_url}.
    #[arg(long)]
    pub map: String,
    #[arg(long)]
    pub exchange: Exchange,
    /// The keytrap store these canaries belong to (e.g. users-db).
    #[arg(long)]
    pub store: String,
    /// Create the store (kind `database`) if it does not exist.
    #[arg(long)]
    pub create_store: bool,
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Execute (one transaction) and record the placements; without it, print the SQL.
    #[arg(long)]
    pub apply: bool,
    /// Plant although this store already has canaries in this table.
    #[arg(long)]
    pub additional: bool,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// One planned row: its canary (none in a dry run), credentials and SQL values.
struct Row {
    canary: Option<Uuid>,
    creds: Credentials,
    values: Vec<String>,
}

fn sql_values(
    dialect: SqlDialect,
    plan: &Plan,
    input: &RenderInput<'_>,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(plan.columns.len());
    for (m, col, enc) in &plan.columns {
        let v = expand_value(&m.value, input).map_err(|e| anyhow::anyhow!(e.0))?;
        out.push(match v {
            SqlValue::Null if !col.nullable => bail!(
                "column {} is NOT NULL but {} has no value for this {} canary",
                col.name,
                m.value,
                input.exchange
            ),
            SqlValue::Null => "NULL".to_string(),
            SqlValue::Text(t) => {
                if let Some(max) = col.max_len {
                    let n = t.chars().count();
                    if n > max {
                        bail!(
                            "column {} is {}({max}) but {} is {n} characters for {}",
                            col.name,
                            col.type_name,
                            m.value,
                            input.exchange
                        );
                    }
                }
                match enc {
                    Encoding::Integer => {
                        if t.parse::<i64>().is_err() {
                            bail!("column {} is an integer but gets {t:?}", col.name);
                        }
                        t
                    }
                    Encoding::Text | Encoding::Timestamp => {
                        quote_literal(dialect, &t).map_err(|e| anyhow::anyhow!(e.0))?
                    }
                }
            }
        });
    }
    Ok(out)
}

fn insert_sql(target: &Target, table: &str, plan: &Plan, rows: &[Row]) -> anyhow::Result<String> {
    let cols = plan
        .columns
        .iter()
        .map(|(_, c, _)| target.quote(&c.name))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(", ");
    let vals = rows
        .iter()
        .map(|r| format!("({})", r.values.join(", ")))
        .collect::<Vec<_>>()
        .join(",\n  ");
    Ok(format!(
        "INSERT INTO {} ({cols}) VALUES\n  {vals};",
        target.quote(table)?
    ))
}

async fn find_store(c: &Client, name: &str, create: bool, kind: &str) -> anyhow::Result<Uuid> {
    if let Some(s) = c.store_by_name(name).await? {
        return Ok(s.id);
    }
    if !create {
        bail!("store {name:?} does not exist in keytrap; create it or pass --create-store");
    }
    Ok(c.create_store(&NewStore {
        name: name.to_string(),
        kind: kind.to_string(),
        ..Default::default()
    })
    .await?
    .id)
}

async fn mint_creds(
    c: &Client,
    exchange: Exchange,
    store: Uuid,
    count: u32,
    labels: BTreeMap<String, String>,
    memo: String,
) -> anyhow::Result<Vec<(Canary, Credentials)>> {
    let mut out = Vec::with_capacity(count as usize);
    let mut left = count;
    while left > 0 {
        let n = left.min(10_000);
        let mut req = MintRequest::new(exchange, store);
        req.count = n;
        req.labels = labels.clone();
        req.memo = Some(memo.clone());
        for canary in c.mint(&req).await? {
            let creds = canary
                .credentials
                .clone()
                .context("keytrap returned a canary without credentials")?;
            out.push((canary, creds));
        }
        left -= n;
    }
    Ok(out)
}

/// What `plant db` did.
#[derive(Debug)]
pub struct PlantReport {
    /// The SQL (dry run) or the number of rows inserted.
    pub sql: String,
    pub placements: Vec<Placement>,
}

pub async fn plant_db(a: &PlantDbArgs) -> anyhow::Result<PlantReport> {
    if a.count == 0 || a.count > MAX_PLANT {
        bail!("--count must be between 1 and {MAX_PLANT}");
    }
    let mapping = ColumnMapping::parse_list(&a.map).map_err(|e| anyhow::anyhow!(e.0))?;
    let target = Target::connect(&a.url).await?;
    let columns = target.columns(&a.table).await?;
    let plan = plan(&a.table, &columns, &mapping)?;
    let mut companions = Companions::survey(&target, &a.table, &plan).await?;
    let created_enc = plan
        .columns
        .iter()
        .find(|(m, _, _)| m.value == "{created_at}")
        .map(|(_, _, e)| *e);
    let mut rng = rand::rng();

    // Check the values fit before minting anything: example credentials have the
    // shapes (and the spread of passphrase lengths) of real ones.
    {
        let keys = MasterKey::generate().keys();
        let mut probe = Companions::survey(&target, &a.table, &plan).await?;
        for _ in 0..64 {
            let creds = keys.credentials(a.exchange, Uuid::now_v7());
            let label = a
                .record
                .label
                .clone()
                .unwrap_or_else(|| fake_label(&mut rng));
            let user = a.record.user_id.clone().or_else(|| probe.user_id(&mut rng));
            let created = a
                .record
                .created_at
                .clone()
                .unwrap_or_else(|| probe.created_at(&mut rng, created_enc));
            let input = RenderInput {
                exchange: a.exchange,
                credentials: &creds,
                label: Some(&label),
                user_id: user.as_deref(),
                created_at: Some(&created),
                base_url: a.record.base_url.as_deref(),
            };
            sql_values(target.dialect, &plan, &input)?;
        }
    }

    let client = if a.apply { Some(a.api.client()?) } else { None };
    // Credentials: freshly minted with --apply; in a dry run, examples of the right
    // shape from a throwaway key (nothing is minted or written).
    let (store_id, creds): (Option<Uuid>, Vec<(Option<Uuid>, Credentials)>) = match &client {
        Some(c) => {
            let store = find_store(c, &a.store, a.create_store, "database").await?;
            if !a.additional {
                let existing = c.all_placements(store).await?;
                let here = existing
                    .iter()
                    .filter(|p| {
                        p.kind == "database"
                            && p.target == target.public_url
                            && p.location == a.table
                    })
                    .count();
                if here > 0 {
                    bail!(
                        "store {:?} already has {here} canaries planted in {} of {}; \
                         pass --additional to plant more",
                        a.store,
                        a.table,
                        target.public_url
                    );
                }
            }
            let labels = BTreeMap::from([
                ("planted".to_string(), "database".to_string()),
                ("table".to_string(), a.table.clone()),
            ]);
            let memo = format!("planted in {} of {}", a.table, target.public_url);
            let minted = mint_creds(c, a.exchange, store, a.count, labels, memo).await?;
            (
                Some(store),
                minted.into_iter().map(|(c, k)| (Some(c.id), k)).collect(),
            )
        }
        None => {
            let keys = MasterKey::generate().keys();
            (
                None,
                (0..a.count)
                    .map(|_| (None, keys.credentials(a.exchange, Uuid::now_v7())))
                    .collect(),
            )
        }
    };

    let mut rows = Vec::with_capacity(creds.len());
    for (canary, creds) in creds {
        let label = a
            .record
            .label
            .clone()
            .unwrap_or_else(|| fake_label(&mut rng));
        let user = a
            .record
            .user_id
            .clone()
            .or_else(|| companions.user_id(&mut rng));
        let created = a
            .record
            .created_at
            .clone()
            .unwrap_or_else(|| companions.created_at(&mut rng, created_enc));
        let input = RenderInput {
            exchange: a.exchange,
            credentials: &creds,
            label: Some(&label),
            user_id: user.as_deref(),
            created_at: Some(&created),
            base_url: a.record.base_url.as_deref(),
        };
        let values = sql_values(target.dialect, &plan, &input)?;
        rows.push(Row {
            canary,
            creds,
            values,
        });
    }

    let statements = rows
        .chunks(CHUNK)
        .map(|c| insert_sql(&target, &a.table, &plan, c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (Some(client), Some(_store)) = (client, store_id) else {
        let mut sql = format!(
            "-- dry run: nothing was minted or written. The credentials below are examples of the\n\
             -- right shape; --apply mints {} fresh canaries and runs this in one transaction.\n",
            a.count
        );
        for s in &statements {
            sql.push_str(s);
            sql.push('\n');
        }
        return Ok(PlantReport {
            sql,
            placements: Vec::new(),
        });
    };

    let mut tx = target.pool.begin().await?;
    for s in &statements {
        sqlx::query(s)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("insert into {} failed; nothing was planted", a.table))?;
    }
    let row_keys = row_keys(&target, &mut tx, &a.table, &plan, &rows).await?;
    let details = serde_json::json!({
        "dialect": format!("{:?}", target.dialect).to_lowercase(),
        "key_column": plan.key_column,
        "secret_column": plan.secret_column,
        "primary_key": plan.primary_key,
        "columns": plan.columns.iter().map(|(m, _, _)| serde_json::json!({"column": m.column, "value": m.value})).collect::<Vec<_>>(),
    });
    let new: Vec<NewPlacement> = rows
        .iter()
        .zip(&row_keys)
        .filter_map(|(r, k)| {
            Some(NewPlacement {
                canary_id: r.canary?,
                kind: "database".into(),
                target: target.public_url.clone(),
                location: a.table.clone(),
                row_key: k.clone(),
                snapshot: None,
                details: details.clone(),
            })
        })
        .collect();
    let mut recorded: Vec<Placement> = Vec::with_capacity(new.len());
    for chunk in new.chunks(RECORD_CHUNK) {
        match client.record_placements(chunk).await {
            Ok(p) => recorded.extend(p),
            Err(e) => {
                // Never half a plant: the rows go, and so do placements already recorded.
                let _ = tx.rollback().await;
                undo_placements(&client, &recorded).await;
                return Err(anyhow::Error::new(e).context(
                    "recording the placements in keytrap failed; the insert was rolled back",
                ));
            }
        }
    }
    if let Err(e) = tx.commit().await {
        undo_placements(&client, &recorded).await;
        return Err(anyhow::Error::new(e).context("commit failed; nothing was planted"));
    }
    Ok(PlantReport {
        sql: format!(
            "planted {} {} canaries in {} of {}",
            recorded.len(),
            a.exchange,
            a.table,
            target.public_url
        ),
        placements: recorded,
    })
}

async fn undo_placements(client: &Client, recorded: &[Placement]) {
    let ids: Vec<Uuid> = recorded.iter().map(|p| p.id).collect();
    for chunk in ids.chunks(1_000) {
        if let Err(e) = client.delete_placements(chunk).await {
            tracing::error!(error = %e, "could not delete placements of a failed plant");
        }
    }
}

/// `pk=value` of each inserted row, found by its API key inside the transaction.
async fn row_keys(
    target: &Target,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    plan: &Plan,
    rows: &[Row],
) -> anyhow::Result<Vec<Option<String>>> {
    let Some(pk) = plan.primary_key.as_ref().filter(|p| **p != plan.key_column) else {
        return Ok(vec![None; rows.len()]);
    };
    let qk = target.quote(&plan.key_column)?;
    let mut found: HashMap<String, String> = HashMap::new();
    for chunk in rows.chunks(CHUNK) {
        let keys = chunk
            .iter()
            .map(|r| quote_literal(target.dialect, &r.creds.api_key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e.0))?
            .join(", ");
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {qk} IN ({keys})",
            target.text(&target.quote(pk)?),
            target.text(&qk),
            target.quote(table)?
        );
        for r in sqlx::query(&sql).fetch_all(&mut **tx).await? {
            if let (Some(id), Some(key)) = (text_at(&r, 0)?, text_at(&r, 1)?) {
                found.insert(key, id);
            }
        }
    }
    Ok(rows
        .iter()
        .map(|r| found.get(&r.creds.api_key).map(|id| format!("{pk}={id}")))
        .collect())
}

pub async fn run_plant(cmd: PlantCommand) -> anyhow::Result<()> {
    match cmd {
        PlantCommand::Db(a) => {
            let r = plant_db(&a).await?;
            println!("{}", r.sql);
            for p in &r.placements {
                println!(
                    "  canary {} -> {}",
                    p.canary_id,
                    p.row_key.as_deref().unwrap_or("(found by its api key)")
                );
            }
            Ok(())
        }
        PlantCommand::File(a) => {
            let p = plant_file(&a).await?;
            println!(
                "planted canary {} ({}) in {} as {}, snapshot {}",
                p.canary_id,
                a.exchange,
                p.target,
                p.location,
                p.snapshot.as_deref().unwrap_or("-")
            );
            Ok(())
        }
        PlantCommand::Rotate(a) => {
            let (p, expired) = rotate(&a).await?;
            println!(
                "planted canary {} in {} (snapshot {}); {} previous canaries expire at {}",
                p.canary_id,
                p.target,
                p.snapshot.as_deref().unwrap_or("-"),
                expired.len(),
                (Utc::now() + parse_grace(&a.grace)?).to_rfc3339()
            );
            Ok(())
        }
    }
}

// ---------------------------------------------------------------- plant file

#[derive(Debug, Args)]
pub struct PlantFileArgs {
    /// env, json, yaml, csv, k8s, ccxt or cdp (coinbase only).
    #[arg(long)]
    pub format: Template,
    /// The snapshot or backup generation this copy goes into (e.g. 2026-11-20).
    #[arg(long)]
    pub snapshot: String,
    /// The file to write (or append to, with --append).
    #[arg(long)]
    pub path: PathBuf,
    #[arg(long)]
    pub exchange: Exchange,
    /// The keytrap store (e.g. nightly-backup).
    #[arg(long)]
    pub store: String,
    /// Create the store (kind `backup`) if it does not exist.
    #[arg(long)]
    pub create_store: bool,
    /// Append to an existing file (env, yaml, csv, k8s, ccxt) instead of creating it.
    #[arg(long)]
    pub append: bool,
    #[command(flatten)]
    pub record: RecordArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs)
}

pub async fn plant_file(a: &PlantFileArgs) -> anyhow::Result<Placement> {
    if a.format == Template::Sql {
        bail!("use `keytrap plant db` for SQL tables, or --format env|json|yaml|csv|k8s|ccxt|cdp");
    }
    if a.format == Template::Cdp && a.exchange != Exchange::Coinbase {
        bail!("--format cdp is Coinbase's key file: use it with --exchange coinbase");
    }
    if a.snapshot.trim().is_empty() || a.snapshot.chars().any(char::is_control) {
        bail!("--snapshot must be a non-empty label such as 2026-11-20");
    }
    let path = absolute(&a.path)?;
    let path_str = path.to_string_lossy().to_string();
    let appendable = matches!(
        a.format,
        Template::Env | Template::Yaml | Template::Csv | Template::K8s | Template::Ccxt
    );
    if a.append && !appendable {
        bail!(
            "--append is not possible for {}: the file holds one document; write a new file per snapshot",
            a.format.as_str()
        );
    }
    let existing_len = match std::fs::metadata(&path) {
        Ok(m) if !a.append => bail!(
            "{} already exists ({} bytes); pass --append or choose a new path",
            path.display(),
            m.len()
        ),
        Ok(m) => Some(m.len()),
        Err(_) if a.append => bail!(
            "{} does not exist; drop --append to create it",
            path.display()
        ),
        Err(_) => None,
    };
    let client = a.api.client()?;
    let store = find_store(&client, &a.store, a.create_store, "backup").await?;
    let dup = client
        .all_placements(store)
        .await?
        .into_iter()
        .find(|p| p.target == path_str && p.snapshot.as_deref() == Some(a.snapshot.as_str()));
    if let Some(d) = dup {
        bail!(
            "snapshot {} of {} already has canary {}: one fresh canary per snapshot",
            a.snapshot,
            path.display(),
            d.canary_id
        );
    }
    let labels = BTreeMap::from([
        ("planted".to_string(), "file".to_string()),
        ("snapshot".to_string(), a.snapshot.clone()),
    ]);
    let memo = format!("snapshot {} in {}", a.snapshot, path.display());
    let (canary, _) = mint_creds(&client, a.exchange, store, 1, labels, memo)
        .await?
        .pop()
        .context("keytrap minted nothing")?;
    let spec = RenderSpec {
        template: Some(a.format),
        label: a.record.label.clone(),
        user_id: a.record.user_id.clone(),
        created_at: a.record.created_at.clone(),
        base_url: a.record.base_url.clone(),
        header: existing_len.is_none_or(|l| l == 0),
        ..Default::default()
    };
    let mut text = client.render(canary.id, &spec).await?.text;
    if a.format == Template::K8s && existing_len.is_some_and(|l| l > 0) {
        text = format!("---\n{text}");
    }
    write_file(&path, &text, existing_len)?;
    let placed = client
        .record_placements(&[NewPlacement {
            canary_id: canary.id,
            kind: "file".into(),
            target: path_str,
            location: a.format.as_str().into(),
            row_key: None,
            snapshot: Some(a.snapshot.clone()),
            details: serde_json::json!({ "format": a.format }),
        }])
        .await;
    match placed {
        Ok(mut p) => p.pop().context("keytrap recorded no placement"),
        Err(e) => {
            // Never half a plant: put the file back as it was.
            undo_file(&path, existing_len);
            Err(anyhow::Error::new(e)
                .context("recording the placement failed; the file was restored"))
        }
    }
}

fn write_file(path: &Path, text: &str, existing_len: Option<u64>) -> anyhow::Result<()> {
    let mut f = match existing_len {
        Some(_) => std::fs::OpenOptions::new().append(true).open(path),
        None => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path),
    }
    .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn undo_file(path: &Path, existing_len: Option<u64>) {
    let r = match existing_len {
        None => std::fs::remove_file(path),
        Some(len) => std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(len)),
    };
    if let Err(e) = r {
        tracing::error!(error = %e, path = %path.display(), "could not restore the file");
    }
}

// ---------------------------------------------------------------- rotate

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub file: PlantFileArgs,
    /// How long the previous generations stay active: e.g. 7d, 36h, 90m.
    #[arg(long, default_value = "7d")]
    pub grace: String,
}

/// `7d`, `36h`, `90m`, `45s`.
pub fn parse_grace(s: &str) -> anyhow::Result<chrono::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .ok()
        .filter(|n| *n <= 3650 * 86_400)
        .with_context(|| format!("grace period {s:?} must be a number and a unit: 7d, 36h, 90m"))?;
    Ok(match unit {
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" => chrono::Duration::minutes(n),
        "s" => chrono::Duration::seconds(n),
        _ => bail!("grace period {s:?} must end in d, h, m or s"),
    })
}

/// Plants the new generation, then schedules the expiry of every earlier file
/// generation of the store that has none yet. Returns the new placement and the
/// canaries given an expiry.
pub async fn rotate(a: &RotateArgs) -> anyhow::Result<(Placement, Vec<Uuid>)> {
    let grace = parse_grace(&a.grace)?;
    let client = a.file.api.client()?;
    let before = match client.store_by_name(&a.file.store).await? {
        Some(s) => client.all_placements(s.id).await?,
        None => Vec::new(),
    };
    let placed = plant_file(&a.file).await?;
    let expires = Utc::now() + grace;
    let mut expired = Vec::new();
    for p in before.iter().filter(|p| p.kind == "file") {
        let c = client.get_canary(p.canary_id, false).await?;
        if c.status == "active" && c.expires_at.is_none() {
            client.set_expiry(c.id, Some(expires)).await?;
            expired.push(c.id);
        }
    }
    Ok((placed, expired))
}

// ---------------------------------------------------------------- verify

#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Check the store's planted rows are still in the database, unchanged.
    Db(VerifyDbArgs),
    /// Check the store's planted files still hold their canaries.
    File(VerifyFileArgs),
}

#[derive(Debug, Args)]
pub struct VerifyDbArgs {
    /// The database the canaries were planted in (same URL as for `plant db`).
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub store: String,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct VerifyFileArgs {
    #[arg(long)]
    pub store: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The state of one placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok,
    Missing(String),
    Altered(String),
}

/// Per-placement findings.
#[derive(Debug)]
pub struct VerifyReport {
    pub findings: Vec<(Placement, Finding)>,
}

impl VerifyReport {
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|(_, f)| *f != Finding::Ok)
            .count()
    }

    fn print(&self) {
        for (p, f) in &self.findings {
            let place = p.row_key.as_deref().unwrap_or(&p.target);
            match f {
                Finding::Ok => {}
                Finding::Missing(why) => {
                    println!(
                        "MISSING  canary {} in {} {place}: {why}",
                        p.canary_id, p.location
                    )
                }
                Finding::Altered(why) => {
                    println!(
                        "ALTERED  canary {} in {} {place}: {why}",
                        p.canary_id, p.location
                    )
                }
            }
        }
        let ok = self.findings.len() - self.problems();
        println!(
            "verified {} placements: {ok} ok, {} missing, {} altered",
            self.findings.len(),
            self.findings
                .iter()
                .filter(|(_, f)| matches!(f, Finding::Missing(_)))
                .count(),
            self.findings
                .iter()
                .filter(|(_, f)| matches!(f, Finding::Altered(_)))
                .count()
        );
    }
}

/// Every canary of the store with its credentials (revealed: `mint` scope, audited).
async fn store_credentials(
    client: &Client,
    store: Uuid,
) -> anyhow::Result<HashMap<Uuid, Credentials>> {
    let mut out = HashMap::new();
    let mut after = None;
    loop {
        let page = client
            .list_canaries(&CanaryFilter {
                store_id: Some(store),
                reveal: true,
                after,
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        let n = page.len();
        after = page.last().map(|c| c.id);
        for c in page {
            if let Some(k) = c.credentials {
                out.insert(c.id, k);
            }
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

pub async fn verify_db(a: &VerifyDbArgs) -> anyhow::Result<VerifyReport> {
    let client = a.api.client()?;
    let store = client
        .store_by_name(&a.store)
        .await?
        .with_context(|| format!("store {:?} does not exist in keytrap", a.store))?;
    let target = Target::connect(&a.url).await?;
    let placements: Vec<Placement> = client
        .all_placements(store.id)
        .await?
        .into_iter()
        .filter(|p| p.kind == "database" && p.target == target.public_url)
        .filter(|p| a.table.as_ref().is_none_or(|t| *t == p.location))
        .collect();
    let creds = store_credentials(&client, store.id).await?;
    let mut findings = Vec::with_capacity(placements.len());
    for p in placements {
        let f = verify_row(&target, &p, creds.get(&p.canary_id)).await;
        findings.push((p, f));
    }
    Ok(VerifyReport { findings })
}

async fn verify_row(target: &Target, p: &Placement, creds: Option<&Credentials>) -> Finding {
    let Some(creds) = creds else {
        return Finding::Missing("the canary is not in keytrap any more".into());
    };
    match check_row(target, p, creds).await {
        Ok(f) => f,
        Err(e) => Finding::Missing(format!("{e:#}")),
    }
}

async fn check_row(target: &Target, p: &Placement, creds: &Credentials) -> anyhow::Result<Finding> {
    let key_col = p.details["key_column"]
        .as_str()
        .context("placement has no key column")?;
    let secret_col = p.details["secret_column"].as_str();
    let qt = target.quote(&p.location)?;
    let qk = target.quote(key_col)?;
    let sel_secret = match secret_col {
        Some(s) => target.text(&target.quote(s)?),
        None => "NULL".into(),
    };
    let lit = |s: &str| quote_literal(target.dialect, s).map_err(|e| anyhow::anyhow!(e.0));
    let sql = match p.row_key.as_deref().and_then(|k| k.split_once('=')) {
        Some((pk, v)) => format!(
            "SELECT {}, {sel_secret} FROM {qt} WHERE {} = {}",
            target.text(&qk),
            target.text(&target.quote(pk)?),
            lit(v)?
        ),
        None => format!(
            "SELECT {}, {sel_secret} FROM {qt} WHERE {qk} = {}",
            target.text(&qk),
            lit(&creds.api_key)?
        ),
    };
    let row = sqlx::query(&sql)
        .fetch_optional(&target.pool)
        .await
        .with_context(|| format!("cannot read {}", p.location))?;
    let Some(row) = row else {
        return Ok(Finding::Missing("the row is gone".into()));
    };
    let key = text_at(&row, 0)?;
    let secret = text_at(&row, 1)?;
    if key.as_deref() != Some(creds.api_key.as_str()) {
        return Ok(Finding::Altered(format!("{key_col} was changed")));
    }
    if let Some(s) = secret_col {
        if secret.as_deref() != Some(creds.api_secret.as_str()) {
            return Ok(Finding::Altered(format!("{s} was changed")));
        }
    }
    Ok(Finding::Ok)
}

pub async fn verify_file(a: &VerifyFileArgs) -> anyhow::Result<VerifyReport> {
    let client = a.api.client()?;
    let store = client
        .store_by_name(&a.store)
        .await?
        .with_context(|| format!("store {:?} does not exist in keytrap", a.store))?;
    let placements: Vec<Placement> = client
        .all_placements(store.id)
        .await?
        .into_iter()
        .filter(|p| p.kind == "file")
        .collect();
    let creds = store_credentials(&client, store.id).await?;
    let mut findings = Vec::with_capacity(placements.len());
    for p in placements {
        let f = match (creds.get(&p.canary_id), std::fs::read_to_string(&p.target)) {
            (None, _) => Finding::Missing("the canary is not in keytrap any more".into()),
            (_, Err(e)) => Finding::Missing(format!("cannot read the file: {e}")),
            (Some(c), Ok(text)) => file_finding(&p.location, &text, c),
        };
        findings.push((p, f));
    }
    Ok(VerifyReport { findings })
}

fn file_finding(format: &str, text: &str, c: &Credentials) -> Finding {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let has = |s: &str| {
        text.contains(s)
            || text.contains(&s.replace('\n', "\\n"))
            || (format == "k8s" && text.contains(&b64(s)))
    };
    if !has(&c.api_key) {
        return Finding::Missing("the api key is not in the file".into());
    }
    // CSV doubles quotes, YAML/JSON escape newlines: `has` covers what the renderers do.
    if !has(&c.api_secret) {
        return Finding::Altered("the api key is there but its secret is not".into());
    }
    Finding::Ok
}

pub async fn run_verify(cmd: VerifyCommand) -> anyhow::Result<()> {
    let r = match cmd {
        VerifyCommand::Db(a) => verify_db(&a).await?,
        VerifyCommand::File(a) => verify_file(&a).await?,
    };
    r.print();
    if r.problems() > 0 {
        bail!("{} planted canaries are missing or altered", r.problems());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_parse() {
        assert_eq!(parse_grace("7d").ok(), Some(chrono::Duration::days(7)));
        assert_eq!(parse_grace("36h").ok(), Some(chrono::Duration::hours(36)));
        assert_eq!(parse_grace("90m").ok(), Some(chrono::Duration::minutes(90)));
        assert!(parse_grace("7").is_err());
        assert!(parse_grace("d").is_err());
        assert!(parse_grace("7w").is_err());
        assert!(parse_grace("99999999999999999999d").is_err());
    }

    #[test]
    fn public_urls_drop_credentials() {
        assert_eq!(
            crate::target::public_url("postgres://app:hunter2@db:5432/users?sslmode=require"),
            "postgres://db:5432/users"
        );
        assert_eq!(
            crate::target::public_url("sqlite:///var/lib/app.db?mode=rw"),
            "sqlite:///var/lib/app.db"
        );
    }
}
