//! API tokens, tenants and the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keytrap_store::{ApiToken, AuditEntry, NewAudit, NewToken, Page, Scope, StoreError, Tenant};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::AppState;

/// Recognisable prefix, so secret scanners and humans can tell a keytrap token.
pub const TOKEN_PREFIX: &str = "keytrap_";
const TOKEN_CHARS: usize = 43; // 43 base62 characters: 256 bits
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh token: `keytrap_` + 43 uniformly random base62 characters (OS randomness).
pub fn generate_token() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_CHARS);
    s.push_str(TOKEN_PREFIX);
    for _ in 0..TOKEN_CHARS {
        s.push(BASE62[rng.random_range(0..BASE62.len())] as char);
    }
    s
}

/// Whether an operator-supplied token (`KEYTRAP_ADMIN_TOKEN`) is strong enough to accept.
pub fn check_supplied_token(t: &str) -> Result<(), String> {
    if t.len() < 32 || t.len() > 256 {
        return Err("the admin token must be 32 to 256 characters long".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the admin token must be printable ASCII without spaces".into());
    }
    Ok(())
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::Invalid(
            "name must be 1 to 200 characters without control characters".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    /// Any of `admin`, `mint`, `read`, `detect`.
    scopes: Vec<Scope>,
}

/// A token as created: `token` is shown this once and never again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: ApiToken,
    pub token: String,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    auth.require(Scope::Admin)?;
    check_name(&req.name)?;
    if req.scopes.is_empty() {
        return Err(ApiError::Invalid("scopes must not be empty".into()));
    }
    let mut scopes = req.scopes;
    scopes.sort();
    scopes.dedup();
    let (info, token) =
        issue_token(&st, auth.tenant(), &req.name, scopes, None, Some(auth.0.id)).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<ApiToken>,
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)), security(("bearer" = [])))]
pub async fn list_tokens(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<TokenList>> {
    auth.require(Scope::Admin)?;
    let tokens = st.db.list_tokens(auth.tenant()).await?;
    Ok(Json(TokenList { tokens }))
}

#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 200, body = ApiToken), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ApiToken>> {
    auth.require(Scope::Admin)?;
    let t = st
        .db
        .revoke_token(
            auth.tenant(),
            id,
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "token.revoke",
                target_type: "token",
                target_id: Some(id.to_string()),
                details: json!({}),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("token"),
            e => e.into(),
        })?;
    Ok(Json(t))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
}

/// A new tenant and its first admin token (shown once).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub admin_token: CreatedToken,
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tokens", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    auth.require(Scope::Admin)?;
    let root = st.db.get_tenant(auth.tenant()).await?;
    if !root.is_some_and(|t| t.is_root) {
        return Err(ApiError::Forbidden(
            "only admins of the root tenant may create tenants".into(),
        ));
    }
    check_name(&req.name)?;
    let name = req.name.trim();
    let tenant = st
        .db
        .create_tenant(
            name,
            false,
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "tenant.create",
                target_type: "tenant",
                target_id: None,
                details: json!({ "name": name }),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict(format!("a tenant named {name:?} already exists"))
            }
            e => e.into(),
        })?;
    let (info, token) = issue_token(
        &st,
        tenant.id,
        "admin",
        vec![Scope::Admin],
        None,
        Some(auth.0.id),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant,
            admin_token: CreatedToken { info, token },
        }),
    ))
}

/// Issues a token in `tenant`: a fresh one, or `value` (the operator's
/// `KEYTRAP_ADMIN_TOKEN`). `actor` is the token that asked, `None` for the bootstrap.
pub async fn issue_token(
    st: &AppState,
    tenant: Uuid,
    name: &str,
    scopes: Vec<Scope>,
    value: Option<String>,
    actor: Option<Uuid>,
) -> ApiResult<(ApiToken, String)> {
    let token = value.unwrap_or_else(generate_token);
    let id = Uuid::now_v7();
    let info = st
        .db
        .create_token(
            NewToken {
                id,
                tenant_id: tenant,
                name: name.to_string(),
                scopes: scopes.clone(),
                digest: st.keys.token_digest(&token),
            },
            NewAudit {
                tenant_id: tenant,
                actor_token_id: actor,
                action: "token.create",
                target_type: "token",
                target_id: Some(id.to_string()),
                details: json!({ "name": name, "scopes": scopes }),
            },
        )
        .await?;
    Ok((info, token))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "tokens", params(ListAudit),
    responses((status = 200, body = AuditList)), security(("bearer" = [])))]
pub async fn list_audit(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListAudit>,
) -> ApiResult<Json<AuditList>> {
    auth.require(Scope::Admin)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::Invalid("limit must be between 1 and 1000".into()));
    }
    let entries = st
        .db
        .list_audit(
            auth.tenant(),
            Page {
                after: q.after,
                limit,
            },
        )
        .await?;
    Ok(Json(AuditList { entries }))
}

/// Creates the root tenant on first start, with an admin token: the operator's
/// `KEYTRAP_ADMIN_TOKEN`, or a generated one that is returned for printing once. On later
/// starts a newly set `KEYTRAP_ADMIN_TOKEN` is added as an admin token.
pub async fn bootstrap(st: &AppState, supplied: Option<String>) -> Result<Option<String>, String> {
    let db_err = |e: StoreError| format!("bootstrap failed: {e}");
    if let Some(t) = &supplied {
        check_supplied_token(t)
            .map_err(|e| format!("KEYTRAP_ADMIN_TOKEN is not acceptable: {e}"))?;
    }
    let root = match st.db.root_tenant().await.map_err(db_err)? {
        Some(root) => root,
        None => {
            let audit = NewAudit {
                tenant_id: Uuid::nil(),
                actor_token_id: None,
                action: "tenant.bootstrap",
                target_type: "tenant",
                target_id: None,
                details: json!({ "name": "default" }),
            };
            match st.db.create_tenant("default", true, audit).await {
                Ok(t) => t,
                // Another replica bootstrapped first.
                Err(StoreError::Conflict(_)) => st
                    .db
                    .root_tenant()
                    .await
                    .map_err(db_err)?
                    .ok_or("root tenant vanished during bootstrap")?,
                Err(e) => return Err(db_err(e)),
            }
        }
    };
    match supplied {
        Some(t) => {
            if st
                .db
                .token_by_digest(&st.keys.token_digest(&t))
                .await
                .map_err(db_err)?
                .is_none()
            {
                let digest = st.keys.token_digest(&t);
                let issued = issue_token(
                    st,
                    root.id,
                    "admin (KEYTRAP_ADMIN_TOKEN)",
                    vec![Scope::Admin],
                    Some(t),
                    None,
                )
                .await;
                // Replicas starting together race to store the same token: the loser
                // finds the winner's row and carries on.
                if let Err(e) = issued {
                    if st
                        .db
                        .token_by_digest(&digest)
                        .await
                        .map_err(db_err)?
                        .is_none()
                    {
                        return Err(format!("cannot store KEYTRAP_ADMIN_TOKEN: {e}"));
                    }
                }
            }
            Ok(None)
        }
        None if st.db.list_tokens(root.id).await.map_err(db_err)?.is_empty() => {
            let (_, token) = issue_token(
                st,
                root.id,
                "bootstrap admin",
                vec![Scope::Admin],
                None,
                None,
            )
            .await
            .map_err(|e| format!("cannot create the bootstrap token: {e}"))?;
            Ok(Some(token))
        }
        None => Ok(None),
    }
}
