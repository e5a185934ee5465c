//! Rows as the rest of keytrap sees them. Backends convert their own column types
//! (integer milliseconds in SQLite, `timestamptz` in PostgreSQL) into these.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use keytrap_core::Exchange;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Free-form `key -> value` labels on stores and canaries.
pub type Labels = BTreeMap<String, String>;

/// A tenant: every other row belongs to exactly one, and every query is scoped to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// The tenant created at bootstrap; its admins may create other tenants.
    pub is_root: bool,
    pub created_at: DateTime<Utc>,
}

/// What a management API token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything in the tenant: tokens, disabling canaries, audit log, tenants (root only).
    Admin,
    /// Create stores, mint canaries, reveal and render their credentials.
    Mint,
    /// Read stores, canaries (without credentials), hits and incidents.
    Read,
    /// Fetch the detection key, so a service can recognise canaries offline (SDK
    /// `is_canary`). Grants nothing else.
    Detect,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Mint, Scope::Read, Scope::Detect];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Mint => "mint",
            Scope::Read => "read",
            Scope::Detect => "detect",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}; expected admin, mint, read or detect"))
    }
}

/// Scopes are stored as a comma-separated list in both backends.
pub fn scopes_to_string(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn scopes_from_string(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

/// A management API token. Only a keyed digest of the token's value is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The stored keyed digest of the token's value (never serialized).
    #[serde(skip)]
    #[schema(ignore)]
    pub digest: [u8; 32],
}

impl ApiToken {
    /// Admin implies every other scope.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub digest: [u8; 32],
}

/// Where canaries are planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A database or one of its tables.
    Database,
    /// A backup or snapshot generation.
    Backup,
    /// An object-storage bucket.
    Bucket,
    /// A file: `.env`, config file, export.
    File,
    /// A Kubernetes Secret.
    KubernetesSecret,
    /// A secret manager or config store (Vault, SSM, ...).
    ConfigStore,
    Other,
}

impl StoreKind {
    pub const ALL: [StoreKind; 7] = [
        StoreKind::Database,
        StoreKind::Backup,
        StoreKind::Bucket,
        StoreKind::File,
        StoreKind::KubernetesSecret,
        StoreKind::ConfigStore,
        StoreKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Database => "database",
            StoreKind::Backup => "backup",
            StoreKind::Bucket => "bucket",
            StoreKind::File => "file",
            StoreKind::KubernetesSecret => "kubernetes-secret",
            StoreKind::ConfigStore => "config-store",
            StoreKind::Other => "other",
        }
    }
}

impl FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreKind::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown store kind {s:?}"))
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place canaries are planted in: a table, a backup generation, a bucket, a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Store {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub kind: StoreKind,
    pub location: Option<String>,
    pub labels: Labels,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewStore {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub kind: StoreKind,
    pub location: Option<String>,
    pub labels: Labels,
}

/// Stored status. `expired` is derived from `expires_at` when read, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CanaryStatus {
    Active,
    Disabled,
    Expired,
}

impl CanaryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryStatus::Active => "active",
            CanaryStatus::Disabled => "disabled",
            CanaryStatus::Expired => "expired",
        }
    }
}

impl FromStr for CanaryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(CanaryStatus::Active),
            "disabled" => Ok(CanaryStatus::Disabled),
            "expired" => Ok(CanaryStatus::Expired),
            _ => Err(format!(
                "unknown canary status {s:?}; expected active, disabled or expired"
            )),
        }
    }
}

/// A canary: never its credentials, which are derived from the master key on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Canary {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub exchange: Exchange,
    /// Version of the master key the credentials were derived under.
    pub key_version: i32,
    pub memo: Option<String>,
    pub labels: Labels,
    pub status: CanaryStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl Canary {
    /// Builds the model from stored columns; `stored_status` is `active` or `disabled`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_row(
        id: Uuid,
        tenant_id: Uuid,
        store_id: Uuid,
        exchange: &str,
        key_version: i32,
        memo: Option<String>,
        labels: Labels,
        stored_status: &str,
        created_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        disabled_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Canary, crate::StoreError> {
        let exchange = exchange
            .parse::<Exchange>()
            .map_err(|e| crate::StoreError::Corrupt(e.to_string()))?;
        let mut status = stored_status
            .parse::<CanaryStatus>()
            .map_err(crate::StoreError::Corrupt)?;
        if status == CanaryStatus::Active && expires_at.is_some_and(|e| e <= now) {
            status = CanaryStatus::Expired;
        }
        Ok(Canary {
            id,
            tenant_id,
            store_id,
            exchange,
            key_version,
            memo,
            labels,
            status,
            created_at,
            expires_at,
            disabled_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewCanary {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub exchange: Exchange,
    pub lookup_digest: [u8; 32],
    pub key_version: i32,
    pub memo: Option<String>,
    pub labels: Labels,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Filters for listing canaries; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct CanaryFilter {
    pub store_id: Option<Uuid>,
    pub exchange: Option<Exchange>,
    pub status: Option<CanaryStatus>,
    /// `(key, value)`: canaries whose label `key` equals `value`.
    pub label: Option<(String, String)>,
    pub page: Page,
}

/// Keyset pagination over time-ordered (UUIDv7) ids.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Only rows whose id sorts after this one.
    pub after: Option<Uuid>,
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            after: None,
            limit: 100,
        }
    }
}

/// One line of the audit log: who did what to which object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The API token that acted; `None` for the operator's CLI or bootstrap.
    pub actor_token_id: Option<Uuid>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub tenant_id: Uuid,
    pub actor_token_id: Option<Uuid>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub details: serde_json::Value,
}

impl NewAudit {
    pub fn into_entry(self, at: DateTime<Utc>) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            tenant_id: self.tenant_id,
            actor_token_id: self.actor_token_id,
            action: self.action.to_string(),
            target_type: self.target_type.to_string(),
            target_id: self.target_id,
            details: self.details,
            at,
        }
    }
}

// ---- placements (issue 5: planting) -------------------------------------------------

/// Where one canary was planted: a row of a database table, or a file (a backup
/// generation, a config file). One placement per canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub canary_id: Uuid,
    /// The canary's store.
    pub store_id: Uuid,
    /// `database` or `file`.
    pub kind: PlacementKind,
    /// The database URL without credentials, or the file path.
    pub target: String,
    /// The table, or the file format.
    pub location: String,
    /// How to find the row again (`id=42`); absent when it is found by its API key.
    pub row_key: Option<String>,
    /// The snapshot or backup generation label (`2026-11-20`).
    pub snapshot: Option<String>,
    /// What verification needs: the column mapping, the key column, ...
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// What kind of place a placement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// A row in a database table.
    Database,
    /// A record in a file.
    File,
}

impl PlacementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementKind::Database => "database",
            PlacementKind::File => "file",
        }
    }
}

impl FromStr for PlacementKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "database" => Ok(PlacementKind::Database),
            "file" => Ok(PlacementKind::File),
            _ => Err(format!("unknown placement kind {s:?}")),
        }
    }
}

/// A placement to record. Its store is the canary's.
#[derive(Debug, Clone)]
pub struct NewPlacement {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub canary_id: Uuid,
    pub kind: PlacementKind,
    pub target: String,
    pub location: String,
    pub row_key: Option<String>,
    pub snapshot: Option<String>,
    pub details: serde_json::Value,
}

/// Which placements to list (all filters optional), in id order.
#[derive(Debug, Clone, Default)]
pub struct PlacementFilter {
    pub store_id: Option<Uuid>,
    pub canary_id: Option<Uuid>,
    pub page: Page,
}
