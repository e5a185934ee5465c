//! Hits, incidents and events: what the trap recorded.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use keytrap_store::{
    Event, Hit, HitFilter, Incident, IncidentFilter, IncidentKind, IncidentStatus, NewAudit, Page,
    Scope, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, Auth};
use crate::AppState;

fn page(after: Option<Uuid>, limit: Option<u32>) -> ApiResult<Page> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::Invalid("limit must be between 1 and 1000".into()));
    }
    Ok(Page { after, limit })
}

fn next_after<T>(items: &[T], page: Page, id: impl Fn(&T) -> Uuid) -> Option<Uuid> {
    (items.len() == page.limit as usize)
        .then(|| items.last().map(id))
        .flatten()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListHits {
    canary_id: Option<Uuid>,
    store_id: Option<Uuid>,
    /// Only hits received at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HitList {
    pub hits: Vec<Hit>,
    pub next_after: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/hits", tag = "incidents", params(ListHits),
    responses((status = 200, body = HitList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_hits(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListHits>,
) -> ApiResult<Json<HitList>> {
    auth.require(Scope::Read)?;
    let page = page(q.after, q.limit)?;
    let hits = st
        .db
        .list_hits(
            auth.tenant(),
            &HitFilter {
                canary_id: q.canary_id,
                store_id: q.store_id,
                since: q.since,
                page,
            },
        )
        .await?;
    let next_after = next_after(&hits, page, |h| h.id);
    Ok(Json(HitList { hits, next_after }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListIncidents {
    status: Option<IncidentStatus>,
    kind: Option<IncidentKind>,
    store_id: Option<Uuid>,
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<Incident>,
    pub next_after: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", params(ListIncidents),
    responses((status = 200, body = IncidentList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_incidents(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListIncidents>,
) -> ApiResult<Json<IncidentList>> {
    auth.require(Scope::Read)?;
    let page = page(q.after, q.limit)?;
    let incidents = st
        .db
        .list_incidents(
            auth.tenant(),
            &IncidentFilter {
                status: q.status,
                kind: q.kind,
                store_id: q.store_id,
                page,
            },
        )
        .await?;
    let next_after = next_after(&incidents, page, |i| i.id);
    Ok(Json(IncidentList {
        incidents,
        next_after,
    }))
}

#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "incidents",
    params(("id" = Uuid, Path, description = "Incident id")),
    responses((status = 200, body = Incident), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_incident(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Incident>> {
    auth.require(Scope::Read)?;
    st.db
        .get_incident(auth.tenant(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("incident"))
}

async fn set_status(
    st: &AppState,
    auth: &Auth,
    id: Uuid,
    status: IncidentStatus,
    action: &'static str,
) -> ApiResult<Json<Incident>> {
    auth.require(Scope::Mint)?;
    st.db
        .set_incident_status(
            auth.tenant(),
            id,
            status,
            Utc::now(),
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action,
                target_type: "incident",
                target_id: Some(id.to_string()),
                details: json!({}),
            },
        )
        .await
        .map(Json)
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("incident"),
            e => e.into(),
        })
}

/// Acknowledge: someone is on it. A later hit still counts and may escalate.
#[utoipa::path(post, path = "/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = Uuid, Path, description = "Incident id")),
    responses((status = 200, body = Incident), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ack_incident(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Incident>> {
    set_status(&st, &auth, id, IncidentStatus::Acknowledged, "incident.ack").await
}

/// Resolve: closed for good; the next hit of the canary opens a new incident.
#[utoipa::path(post, path = "/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = Uuid, Path, description = "Incident id")),
    responses((status = 200, body = Incident), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn resolve_incident(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Incident>> {
    set_status(&st, &auth, id, IncidentStatus::Resolved, "incident.resolve").await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    after: Option<Uuid>,
    /// 1..=1000, default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    pub next_after: Option<Uuid>,
}

/// Events (`incident.opened`, `incident.escalated`, `store.compromised`) in order.
#[utoipa::path(get, path = "/v1/events", tag = "incidents", params(ListEvents),
    responses((status = 200, body = EventList)), security(("bearer" = [])))]
pub async fn list_events(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListEvents>,
) -> ApiResult<Json<EventList>> {
    auth.require(Scope::Read)?;
    let page = page(q.after, q.limit)?;
    let events = st.db.list_events(auth.tenant(), page).await?;
    let next_after = next_after(&events, page, |e| e.id);
    Ok(Json(EventList { events, next_after }))
}
