//! Stores and canaries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use keytrap_core::{Credentials, Exchange};
use keytrap_store::{
    Canary, CanaryFilter, CanaryStatus, Labels, NewAudit, NewCanary, NewStore, Page, Scope, Store,
    StoreError, StoreKind,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::{AppState, MAX_MINT_COUNT};

const MAX_NAME: usize = 200;
const MAX_LOCATION: usize = 2_048;
const MAX_MEMO: usize = 1_000;
const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 100;
const MAX_LABEL_VALUE: usize = 1_000;
const MAX_PAGE: u32 = 1_000;

fn check_text(field: &str, v: &str, max: usize, allow_empty: bool) -> ApiResult<()> {
    if !allow_empty && v.trim().is_empty() {
        return Err(ApiError::Invalid(format!("{field} must not be empty")));
    }
    if v.chars().count() > max {
        return Err(ApiError::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_labels(labels: &Labels) -> ApiResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::Invalid(format!(
            "at most {MAX_LABELS} labels are allowed"
        )));
    }
    for (k, v) in labels {
        check_text("label key", k, MAX_LABEL_KEY, false)?;
        check_text("label value", v, MAX_LABEL_VALUE, true)?;
    }
    Ok(())
}

fn page(after: Option<Uuid>, limit: Option<u32>) -> ApiResult<Page> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(Page { after, limit })
}

// ---------------------------------------------------------------- stores

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    /// Unique within the tenant, e.g. `prod-users-db`.
    name: String,
    kind: StoreKind,
    /// Where it is: a table, a bucket path, a Secret's namespace/name.
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    labels: Labels,
}

#[utoipa::path(post, path = "/v1/stores", tag = "stores", request_body = CreateStore,
    responses((status = 201, body = Store), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_store(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateStore>,
) -> ApiResult<(StatusCode, Json<Store>)> {
    auth.require(Scope::Mint)?;
    check_text("name", &req.name, MAX_NAME, false)?;
    if let Some(l) = &req.location {
        check_text("location", l, MAX_LOCATION, true)?;
    }
    check_labels(&req.labels)?;
    let id = Uuid::now_v7();
    let name = req.name.trim().to_string();
    let store = st
        .db
        .create_store(
            NewStore {
                id,
                tenant_id: auth.tenant(),
                name: name.clone(),
                kind: req.kind,
                location: req.location,
                labels: req.labels,
            },
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "store.create",
                target_type: "store",
                target_id: Some(id.to_string()),
                details: json!({ "name": name }),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict(format!("a store named {name:?} already exists"))
            }
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(store)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListStores {
    /// Exact store name.
    name: Option<String>,
    /// Return stores after this id (keyset pagination).
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreList {
    stores: Vec<Store>,
    /// Pass as `after` to get the next page; absent on the last page.
    next_after: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/stores", tag = "stores", params(ListStores),
    responses((status = 200, body = StoreList)), security(("bearer" = [])))]
pub async fn list_stores(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListStores>,
) -> ApiResult<Json<StoreList>> {
    auth.require(Scope::Read)?;
    let page = page(q.after, q.limit)?;
    let stores = match q.name {
        Some(name) => st
            .db
            .get_store_by_name(auth.tenant(), &name)
            .await?
            .into_iter()
            .collect(),
        None => st.db.list_stores(auth.tenant(), page).await?,
    };
    let next_after = (stores.len() == page.limit as usize)
        .then(|| stores.last().map(|s| s.id))
        .flatten();
    Ok(Json(StoreList { stores, next_after }))
}

#[utoipa::path(get, path = "/v1/stores/{id}", tag = "stores",
    params(("id" = Uuid, Path, description = "Store id")),
    responses((status = 200, body = Store), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_store(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Store>> {
    auth.require(Scope::Read)?;
    st.db
        .get_store(auth.tenant(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("store"))
}

// ---------------------------------------------------------------- canaries

/// A canary as the API shows it; `credentials` only at mint time or with `?reveal=true`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CanaryView {
    pub id: Uuid,
    pub exchange: Exchange,
    pub store_id: Uuid,
    pub memo: Option<String>,
    pub labels: Labels,
    pub status: CanaryStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credentials: Option<Credentials>,
}

impl CanaryView {
    /// The view without credentials.
    pub fn from_canary(c: Canary) -> Self {
        Self::new(c, None)
    }

    fn new(c: Canary, credentials: Option<Credentials>) -> Self {
        CanaryView {
            id: c.id,
            exchange: c.exchange,
            store_id: c.store_id,
            memo: c.memo,
            labels: c.labels,
            status: c.status,
            created_at: c.created_at,
            expires_at: c.expires_at,
            disabled_at: c.disabled_at,
            credentials,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub exchange: Exchange,
    pub store_id: Uuid,
    #[serde(default)]
    pub memo: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// How many canaries to mint, 1..=10000 (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// After this time the canary is reported as `expired`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MintResponse {
    pub canaries: Vec<CanaryView>,
}

#[utoipa::path(post, path = "/v1/canaries", tag = "canaries", request_body = MintRequest,
    responses((status = 201, body = MintResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn mint_canaries(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<MintRequest>,
) -> ApiResult<(StatusCode, Json<MintResponse>)> {
    auth.require(Scope::Mint)?;
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_MINT_COUNT {
        return Err(ApiError::Invalid(format!(
            "count must be between 1 and {MAX_MINT_COUNT}"
        )));
    }
    if let Some(m) = &req.memo {
        check_text("memo", m, MAX_MEMO, true)?;
    }
    check_labels(&req.labels)?;
    let now = Utc::now();
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::Invalid("expires_at must be in the future".into()));
    }
    let store = st
        .db
        .get_store(auth.tenant(), req.store_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("store {} not found", req.store_id)))?;

    // A digest collision between two derived keys is astronomically unlikely; if the
    // store reports one, fresh ids derive fresh keys.
    for _attempt in 0..3 {
        let minted = derive_batch(&st, &req, store.id, auth.tenant(), count, now).await?;
        let rows: Vec<NewCanary> = minted.iter().map(|(c, _)| c.clone()).collect();
        let audit = NewAudit {
            tenant_id: auth.tenant(),
            actor_token_id: Some(auth.0.id),
            action: "canary.mint",
            target_type: "store",
            target_id: Some(store.id.to_string()),
            details: json!({
                "exchange": req.exchange,
                "count": count,
                "first_id": rows.first().map(|c| c.id),
                "last_id": rows.last().map(|c| c.id),
            }),
        };
        match st.db.insert_canaries(&rows, audit).await {
            Ok(()) => {
                let canaries = minted
                    .into_iter()
                    .map(|(c, creds)| {
                        CanaryView::new(
                            Canary {
                                id: c.id,
                                tenant_id: c.tenant_id,
                                store_id: c.store_id,
                                exchange: c.exchange,
                                key_version: c.key_version,
                                memo: c.memo,
                                labels: c.labels,
                                status: CanaryStatus::Active,
                                created_at: c.created_at,
                                expires_at: c.expires_at,
                                disabled_at: None,
                            },
                            Some(creds),
                        )
                    })
                    .collect();
                return Ok((StatusCode::CREATED, Json(MintResponse { canaries })));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(
        "repeated canary key collisions while minting".into(),
    ))
}

/// Derives credentials and lookup digests; large batches run off the async threads.
async fn derive_batch(
    st: &AppState,
    req: &MintRequest,
    store_id: Uuid,
    tenant_id: Uuid,
    count: u32,
    now: DateTime<Utc>,
) -> ApiResult<Vec<(NewCanary, Credentials)>> {
    let keys = st.keys.clone();
    let template = NewCanary {
        id: Uuid::nil(),
        tenant_id,
        store_id,
        exchange: req.exchange,
        lookup_digest: [0; 32],
        key_version: st.key_version,
        memo: req.memo.clone(),
        labels: req.labels.clone(),
        // Stored at millisecond precision by both backends; keep what we return equal.
        created_at: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
        expires_at: req.expires_at,
    };
    let work = move || {
        (0..count)
            .map(|_| {
                let id = Uuid::now_v7();
                let creds = keys.credentials(template.exchange, id);
                let row = NewCanary {
                    id,
                    lookup_digest: keys.lookup_digest(template.exchange, &creds.api_key),
                    ..template.clone()
                };
                (row, creds)
            })
            .collect::<Vec<_>>()
    };
    if count <= 16 {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::Internal(format!("derivation task failed: {e}")))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListCanaries {
    store_id: Option<Uuid>,
    exchange: Option<Exchange>,
    status: Option<CanaryStatus>,
    /// `key:value`: canaries with that label.
    label: Option<String>,
    /// Include credentials (needs the `mint` scope; every reveal is audited).
    #[serde(default)]
    reveal: bool,
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CanaryList {
    pub canaries: Vec<CanaryView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

async fn reveal_audit(st: &AppState, auth: &Auth, ids: &[Uuid]) -> ApiResult<()> {
    st.db
        .append_audit(NewAudit {
            tenant_id: auth.tenant(),
            actor_token_id: Some(auth.0.id),
            action: "canary.reveal",
            target_type: "canary",
            target_id: (ids.len() == 1).then(|| ids[0].to_string()),
            details: json!({ "canary_ids": ids }),
        })
        .await?;
    Ok(())
}

#[utoipa::path(get, path = "/v1/canaries", tag = "canaries", params(ListCanaries),
    responses((status = 200, body = CanaryList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_canaries(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListCanaries>,
) -> ApiResult<Json<CanaryList>> {
    auth.require(if q.reveal { Scope::Mint } else { Scope::Read })?;
    let label = match &q.label {
        None => None,
        Some(l) => Some(
            l.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| ApiError::Invalid("label filter must be key:value".into()))?,
        ),
    };
    let page = page(q.after, q.limit)?;
    let filter = CanaryFilter {
        store_id: q.store_id,
        exchange: q.exchange,
        status: q.status,
        label,
        page,
    };
    let rows = st.db.list_canaries(auth.tenant(), &filter).await?;
    if q.reveal && !rows.is_empty() {
        reveal_audit(&st, &auth, &rows.iter().map(|c| c.id).collect::<Vec<_>>()).await?;
    }
    let next_after = (rows.len() == page.limit as usize)
        .then(|| rows.last().map(|c| c.id))
        .flatten();
    let canaries = rows
        .into_iter()
        .map(|c| {
            let creds = q.reveal.then(|| st.keys.credentials(c.exchange, c.id));
            CanaryView::new(c, creds)
        })
        .collect();
    Ok(Json(CanaryList {
        canaries,
        next_after,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GetCanary {
    /// Include credentials (needs the `mint` scope; audited).
    #[serde(default)]
    reveal: bool,
}

#[utoipa::path(get, path = "/v1/canaries/{id}", tag = "canaries",
    params(("id" = Uuid, Path, description = "Canary id"), GetCanary),
    responses((status = 200, body = CanaryView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_canary(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<GetCanary>,
) -> ApiResult<Json<CanaryView>> {
    auth.require(if q.reveal { Scope::Mint } else { Scope::Read })?;
    let c = st
        .db
        .get_canary(auth.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("canary"))?;
    let creds = if q.reveal {
        reveal_audit(&st, &auth, &[c.id]).await?;
        Some(st.keys.credentials(c.exchange, c.id))
    } else {
        None
    };
    Ok(Json(CanaryView::new(c, creds)))
}

#[utoipa::path(post, path = "/v1/canaries/{id}/disable", tag = "canaries",
    params(("id" = Uuid, Path, description = "Canary id")),
    responses((status = 200, body = CanaryView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disable_canary(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<CanaryView>> {
    // Disabling silences a tripwire: admins only, so a leaked mint token cannot.
    auth.require(Scope::Admin)?;
    let c = st
        .db
        .disable_canary(
            auth.tenant(),
            id,
            Utc::now(),
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "canary.disable",
                target_type: "canary",
                target_id: Some(id.to_string()),
                details: json!({}),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("canary"),
            e => e.into(),
        })?;
    Ok(Json(CanaryView::new(c, None)))
}
