//! Planting (issue 5): rendering a canary for the place it goes, recording where it
//! went (placements), expiring a rotated generation, and handing the detection key to
//! the platform's own services.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use keytrap_core::render::{render, RenderInput, RenderSpec, Template};
use keytrap_store::{
    NewAudit, NewPlacement, Page, Placement, PlacementFilter, PlacementKind, Scope, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::handlers::CanaryView;
use crate::AppState;

/// Most placements one call records.
pub const MAX_PLACEMENTS: usize = 10_000;
const MAX_TEXT: usize = 2_048;
/// Largest `details` object, serialized.
const MAX_DETAILS: usize = 16 * 1024;

/// A rendered canary.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rendered {
    pub canary_id: Uuid,
    pub template: Template,
    /// The text to plant.
    pub text: String,
}

#[utoipa::path(post, path = "/v1/canaries/{id}/render", tag = "canaries",
    params(("id" = Uuid, Path, description = "Canary id")),
    request_body = RenderSpec,
    responses((status = 200, body = Rendered), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn render_canary(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(spec): ApiJson<RenderSpec>,
) -> ApiResult<Json<Rendered>> {
    // Rendering shows the credentials: the same scope as a reveal, and audited.
    auth.require(Scope::Mint)?;
    let template = spec
        .template
        .ok_or_else(|| ApiError::Invalid("template is required".into()))?;
    let c = st
        .db
        .get_canary(auth.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("canary"))?;
    let creds = st.keys.credentials(c.exchange, c.id);
    let text = render(&spec, &RenderInput::with_spec(c.exchange, &creds, &spec))
        .map_err(|e| ApiError::Invalid(e.0))?;
    st.db
        .append_audit(NewAudit {
            tenant_id: auth.tenant(),
            actor_token_id: Some(auth.0.id),
            action: "canary.render",
            target_type: "canary",
            target_id: Some(id.to_string()),
            details: json!({ "template": template }),
        })
        .await?;
    Ok(Json(Rendered {
        canary_id: id,
        template,
        text,
    }))
}

/// The key that recognises canaries offline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DetectionKeyView {
    /// 32 bytes, standard base64 (44 chars).
    pub detection_key: String,
    /// The derivation scheme the tags follow.
    pub derivation_version: u16,
}

#[utoipa::path(get, path = "/v1/detection-key", tag = "canaries",
    responses((status = 200, body = DetectionKeyView), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_detection_key(
    State(st): State<AppState>,
    auth: Auth,
) -> ApiResult<Json<DetectionKeyView>> {
    // Its own scope: a trading engine needs this and nothing else.
    auth.require(Scope::Detect)?;
    st.db
        .append_audit(NewAudit {
            tenant_id: auth.tenant(),
            actor_token_id: Some(auth.0.id),
            action: "detection_key.read",
            target_type: "detection_key",
            target_id: None,
            details: json!({}),
        })
        .await?;
    Ok(Json(DetectionKeyView {
        detection_key: st.keys.detection_key().to_base64(),
        derivation_version: keytrap_core::DERIVATION_VERSION,
    }))
}

/// One placement to record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementInput {
    pub canary_id: Uuid,
    pub kind: PlacementKind,
    /// The database URL without credentials, or the file path.
    pub target: String,
    /// The table, or the file format.
    pub location: String,
    #[serde(default)]
    pub row_key: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    /// What verification needs (column mapping, key column, ...): a JSON object.
    #[serde(default = "empty_object")]
    pub details: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    json!({})
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPlacements {
    pub placements: Vec<PlacementInput>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlacementList {
    pub placements: Vec<Placement>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

fn check(field: &str, v: &str, allow_empty: bool) -> ApiResult<()> {
    if (!allow_empty && v.trim().is_empty())
        || v.chars().count() > MAX_TEXT
        || v.chars().any(char::is_control)
    {
        return Err(ApiError::Invalid(format!(
            "{field} must be 1 to {MAX_TEXT} characters without control characters"
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/placements", tag = "stores", request_body = RecordPlacements,
    responses((status = 201, body = PlacementList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn record_placements(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<RecordPlacements>,
) -> ApiResult<(StatusCode, Json<PlacementList>)> {
    auth.require(Scope::Mint)?;
    if req.placements.is_empty() || req.placements.len() > MAX_PLACEMENTS {
        return Err(ApiError::Invalid(format!(
            "placements must hold 1 to {MAX_PLACEMENTS} entries"
        )));
    }
    let mut rows = Vec::with_capacity(req.placements.len());
    for p in req.placements {
        check("target", &p.target, false)?;
        check("location", &p.location, false)?;
        if let Some(r) = &p.row_key {
            check("row_key", r, false)?;
        }
        if let Some(s) = &p.snapshot {
            check("snapshot", s, false)?;
        }
        if !p.details.is_object() || p.details.to_string().len() > MAX_DETAILS {
            return Err(ApiError::Invalid(format!(
                "details must be a JSON object of at most {MAX_DETAILS} bytes"
            )));
        }
        rows.push(NewPlacement {
            id: Uuid::now_v7(),
            tenant_id: auth.tenant(),
            canary_id: p.canary_id,
            kind: p.kind,
            target: p.target,
            location: p.location,
            row_key: p.row_key,
            snapshot: p.snapshot,
            details: p.details,
        });
    }
    let audit = NewAudit {
        tenant_id: auth.tenant(),
        actor_token_id: Some(auth.0.id),
        action: "placement.create",
        target_type: "placement",
        target_id: None,
        details: json!({
            "count": rows.len(),
            "canary_ids": rows.iter().map(|r| r.canary_id).collect::<Vec<_>>(),
        }),
    };
    let placements = st
        .db
        .insert_placements(&rows, audit)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::NotFound("a canary of the batch was not found".into())
            }
            StoreError::Conflict(_) => ApiError::Conflict(
                "a canary of the batch is already placed; mint a fresh one per place".into(),
            ),
            e => e.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(PlacementList {
            placements,
            next_after: None,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListPlacements {
    store_id: Option<Uuid>,
    canary_id: Option<Uuid>,
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/placements", tag = "stores", params(ListPlacements),
    responses((status = 200, body = PlacementList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_placements(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListPlacements>,
) -> ApiResult<Json<PlacementList>> {
    auth.require(Scope::Read)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::Invalid("limit must be between 1 and 1000".into()));
    }
    let placements = st
        .db
        .list_placements(
            auth.tenant(),
            &PlacementFilter {
                store_id: q.store_id,
                canary_id: q.canary_id,
                page: Page {
                    after: q.after,
                    limit,
                },
            },
        )
        .await?;
    let next_after = (placements.len() == limit as usize)
        .then(|| placements.last().map(|p| p.id))
        .flatten();
    Ok(Json(PlacementList {
        placements,
        next_after,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletePlacements {
    pub ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

#[utoipa::path(post, path = "/v1/placements/delete", tag = "stores", request_body = DeletePlacements,
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_placements(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<DeletePlacements>,
) -> ApiResult<Json<Deleted>> {
    // Undoing a plant whose target transaction failed: the same scope that records.
    auth.require(Scope::Mint)?;
    if req.ids.is_empty() || req.ids.len() > MAX_PLACEMENTS {
        return Err(ApiError::Invalid(format!(
            "ids must hold 1 to {MAX_PLACEMENTS} entries"
        )));
    }
    let deleted = st
        .db
        .delete_placements(
            auth.tenant(),
            &req.ids,
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "placement.delete",
                target_type: "placement",
                target_id: None,
                details: json!({ "ids": req.ids }),
            },
        )
        .await?;
    Ok(Json(Deleted { deleted }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetExpiry {
    /// When the canary stops being active (a rotated generation's grace period);
    /// `null` clears it. Must not be in the past.
    pub expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/canaries/{id}/expiry", tag = "canaries",
    params(("id" = Uuid, Path, description = "Canary id")),
    request_body = SetExpiry,
    responses((status = 200, body = CanaryView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_expiry(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetExpiry>,
) -> ApiResult<Json<CanaryView>> {
    // Mint may schedule an expiry (rotation); cutting a tripwire short is a disable.
    auth.require(Scope::Mint)?;
    if req.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(ApiError::Invalid(
            "expires_at must be in the future (use disable to stop a canary now)".into(),
        ));
    }
    let c = st
        .db
        .set_canary_expiry(
            auth.tenant(),
            id,
            req.expires_at,
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "canary.expiry",
                target_type: "canary",
                target_id: Some(id.to_string()),
                details: json!({ "expires_at": req.expires_at }),
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("canary"),
            e => e.into(),
        })?;
    Ok(Json(CanaryView::from_canary(c)))
}
