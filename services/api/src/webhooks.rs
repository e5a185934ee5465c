//! Webhook endpoints and their deliveries. Every route needs the `admin` scope: an
//! endpoint receives every alert of the tenant, and chat webhook URLs are secrets.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use keytrap_core::{Exchange, Keys};
use keytrap_store::{
    NewAudit, NewWebhookEndpoint, NewWebhookMessage, Page, Scope, Severity, StoreError,
    WebhookAttempt, WebhookEndpoint, WebhookMessage, TEST_EVENT,
};
use keytrap_webhooks::{AddrPolicy, CustomHeaders, Format, Secret, SecretCipher, UrlPolicy};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::AppState;

/// Events an endpoint may subscribe to (`webhook.test` is always delivered).
pub const SUBSCRIBABLE: [&str; 4] = [
    "incident.opened",
    "incident.escalated",
    "store.compromised",
    "hit.recorded",
];
/// Default overlap during which the old secret still signs, after a rotation.
pub const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;
const MAX_OVERLAP_SECS: u64 = 7 * 24 * 3600;
const MAX_ROUTING_KEY: usize = 128;
const MAX_FILTER_ITEMS: usize = 100;

/// What the webhook routes need besides the database.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Checked at creation and on every URL change (scheme, addresses, DNS).
    pub urls: UrlPolicy,
    /// Seals signing secrets (key derived from the master key).
    pub cipher: Arc<SecretCipher>,
}

impl WebhookSettings {
    /// The settings for master key `keys` (secrets under key version 1) and the SSRF
    /// policy (`KEYTRAP_WEBHOOK_ALLOW_CIDRS`, `KEYTRAP_WEBHOOK_HTTPS_ONLY`).
    pub fn new(keys: &Keys, addrs: AddrPolicy, https_only: bool) -> Self {
        WebhookSettings {
            urls: UrlPolicy { https_only, addrs },
            cipher: Arc::new(SecretCipher::new(1, &keys.webhook_encryption_key())),
        }
    }
}

/// An endpoint as the API shows it: never its secrets, routing key or header values.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub format: String,
    /// Subscribed events; empty means the three incident events.
    pub events: Vec<String>,
    pub min_severity: Option<Severity>,
    pub store_ids: Vec<Uuid>,
    pub exchanges: Vec<String>,
    /// Names of the custom headers (values are not shown: they often hold credentials).
    pub header_names: Vec<String>,
    pub has_routing_key: bool,
    pub secret_version: i32,
    /// Until then the previous secret also signs every delivery.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    /// `api`, `gone` (the receiver answered 410), `failing` (5 days without success).
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for WebhookView {
    fn from(e: WebhookEndpoint) -> Self {
        WebhookView {
            id: e.id,
            url: e.url,
            format: e.format,
            events: e.events,
            min_severity: e.min_severity,
            store_ids: e.store_ids,
            exchanges: e.exchanges,
            header_names: e.headers.into_keys().collect(),
            has_routing_key: e.routing_key.is_some(),
            secret_version: e.secret_version,
            previous_secret_expires_at: e.previous_expires_at.filter(|t| *t > Utc::now()),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://...` (or `http://` unless https-only); refused if it is or resolves to a
    /// private, loopback, link-local or otherwise internal address.
    pub url: String,
    /// `standard` (default), `cloudevents`, `slack`, `discord`, `teams`, `pagerduty`.
    pub format: Option<String>,
    /// Default: `incident.opened`, `incident.escalated`, `store.compromised`. Also
    /// `hit.recorded` (one alert per hit; only when listed here).
    #[serde(default)]
    pub events: Vec<String>,
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub store_ids: Vec<Uuid>,
    #[serde(default)]
    pub exchanges: Vec<String>,
    /// Extra request headers, e.g. `Authorization` for the receiver.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// PagerDuty Events API v2 integration key (required for `pagerduty`).
    pub routing_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookCreated {
    pub id: Uuid,
    /// `whsec_...`: shown once, store it in the receiver now.
    pub secret: String,
    pub webhook: WebhookView,
}

/// `Some(v)` for a present field, so `null` (clear) differs from absent (keep).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Fields to change; absent fields are kept, `null` clears an optional one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub format: Option<String>,
    pub events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Severity>)]
    pub min_severity: Option<Option<Severity>>,
    pub store_ids: Option<Vec<Uuid>>,
    pub exchanges: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub routing_key: Option<Option<String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RotateQuery {
    /// How long the previous secret keeps signing (seconds, default 86400, max 604800).
    overlap_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretRotated {
    /// The new `whsec_...` secret, shown once.
    pub secret: String,
    pub webhook: WebhookView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestQueued {
    pub message_id: Uuid,
    /// The `webhook-id` header the receiver will see.
    pub webhook_id: String,
}

/// A message (one alert for this endpoint) with every attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    #[serde(flatten)]
    pub message: WebhookMessage,
    pub attempts: Vec<WebhookAttempt>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
    pub next_after: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveries {
    after: Option<Uuid>,
    /// 1..=200, default 50.
    limit: Option<u32>,
}

fn audit(auth: &Auth, action: &'static str, id: Uuid, details: serde_json::Value) -> NewAudit {
    NewAudit {
        tenant_id: auth.tenant(),
        actor_token_id: Some(auth.0.id),
        action,
        target_type: "webhook",
        target_id: Some(id.to_string()),
        details,
    }
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found("webhook"),
        e => e.into(),
    }
}

/// The validated configuration of an endpoint.
struct Config {
    url: String,
    format: Format,
    events: Vec<String>,
    min_severity: Option<Severity>,
    store_ids: Vec<Uuid>,
    exchanges: Vec<String>,
    headers: BTreeMap<String, String>,
    routing_key: Option<String>,
}

async fn validate(st: &AppState, auth: &Auth, c: &mut Config) -> ApiResult<()> {
    let url = st
        .webhooks
        .urls
        .validate_resolved(&c.url)
        .await
        .map_err(|e| ApiError::Invalid(format!("url: {e}")))?;
    c.url = url.to_string();
    if c.events.len() > MAX_FILTER_ITEMS
        || c.store_ids.len() > MAX_FILTER_ITEMS
        || c.exchanges.len() > MAX_FILTER_ITEMS
    {
        return Err(ApiError::Invalid(format!(
            "at most {MAX_FILTER_ITEMS} events, store ids and exchanges"
        )));
    }
    for e in &c.events {
        if !SUBSCRIBABLE.contains(&e.as_str()) {
            return Err(ApiError::Invalid(format!(
                "unknown event {e:?}; expected one of {}",
                SUBSCRIBABLE.join(", ")
            )));
        }
    }
    c.events.sort();
    c.events.dedup();
    let mut exchanges = Vec::with_capacity(c.exchanges.len());
    for x in &c.exchanges {
        let ex = Exchange::from_str(x).map_err(|e| ApiError::Invalid(format!("exchanges: {e}")))?;
        exchanges.push(ex.as_str().to_string());
    }
    exchanges.sort();
    exchanges.dedup();
    c.exchanges = exchanges;
    c.store_ids.sort();
    c.store_ids.dedup();
    for id in &c.store_ids {
        if st.db.get_store(auth.tenant(), *id).await?.is_none() {
            return Err(ApiError::Invalid(format!("store_ids: no store {id}")));
        }
    }
    CustomHeaders::parse(&c.headers).map_err(|e| ApiError::Invalid(format!("headers: {e}")))?;
    if let Some(k) = &c.routing_key {
        if k.is_empty()
            || k.len() > MAX_ROUTING_KEY
            || !k
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err(ApiError::Invalid(
                "routing_key must be 1-128 letters, digits, '-' or '_'".into(),
            ));
        }
    }
    if c.format == Format::Pagerduty && c.routing_key.is_none() {
        return Err(ApiError::Invalid(
            "the pagerduty format needs a routing_key (the Events API v2 integration key)".into(),
        ));
    }
    Ok(())
}

fn parse_format(f: Option<&str>) -> ApiResult<Format> {
    match f {
        None => Ok(Format::Standard),
        Some(s) => Format::from_str(s).map_err(ApiError::Invalid),
    }
}

/// Register an endpoint. The signing secret is in the response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookCreated), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    auth.require(Scope::Admin)?;
    let mut c = Config {
        url: req.url,
        format: parse_format(req.format.as_deref())?,
        events: req.events,
        min_severity: req.min_severity,
        store_ids: req.store_ids,
        exchanges: req.exchanges,
        headers: req.headers,
        routing_key: req.routing_key,
    };
    validate(&st, &auth, &mut c).await?;
    let id = Uuid::now_v7();
    let secret = Secret::generate();
    let e = st
        .db
        .create_webhook_endpoint(
            NewWebhookEndpoint {
                id,
                tenant_id: auth.tenant(),
                url: c.url.clone(),
                format: c.format.as_str().into(),
                events: c.events,
                min_severity: c.min_severity,
                store_ids: c.store_ids,
                exchanges: c.exchanges,
                headers: c.headers,
                routing_key: c.routing_key,
                secret_sealed: st.webhooks.cipher.seal_secret(&secret, id),
            },
            audit(
                &auth,
                "webhook.create",
                id,
                json!({ "url": c.url, "format": c.format.as_str() }),
            ),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreated {
            id,
            secret: secret.expose(),
            webhook: e.into(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList)), security(("bearer" = [])))]
pub async fn list_webhooks(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<WebhookList>> {
    auth.require(Scope::Admin)?;
    let webhooks = st
        .db
        .list_webhook_endpoints(auth.tenant())
        .await?
        .into_iter()
        .map(WebhookView::from)
        .collect();
    Ok(Json(WebhookList { webhooks }))
}

async fn load(st: &AppState, auth: &Auth, id: Uuid) -> ApiResult<WebhookEndpoint> {
    st.db
        .get_webhook_endpoint(auth.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WebhookView>> {
    auth.require(Scope::Admin)?;
    Ok(Json(load(&st, &auth, id).await?.into()))
}

/// Change the URL, format, filters, headers or routing key (validated like creation).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    auth.require(Scope::Admin)?;
    let mut e = load(&st, &auth, id).await?;
    let current_format = Format::from_str(&e.format).unwrap_or_default();
    let mut c = Config {
        url: req.url.unwrap_or_else(|| e.url.clone()),
        format: match req.format.as_deref() {
            Some(f) => parse_format(Some(f))?,
            None => current_format,
        },
        events: req.events.unwrap_or_else(|| e.events.clone()),
        min_severity: req.min_severity.unwrap_or(e.min_severity),
        store_ids: req.store_ids.unwrap_or_else(|| e.store_ids.clone()),
        exchanges: req.exchanges.unwrap_or_else(|| e.exchanges.clone()),
        headers: req.headers.unwrap_or_else(|| e.headers.clone()),
        routing_key: req.routing_key.unwrap_or_else(|| e.routing_key.clone()),
    };
    validate(&st, &auth, &mut c).await?;
    e.url = c.url;
    e.format = c.format.as_str().into();
    e.events = c.events;
    e.min_severity = c.min_severity;
    e.store_ids = c.store_ids;
    e.exchanges = c.exchanges;
    e.headers = c.headers;
    e.routing_key = c.routing_key;
    let details = json!({ "url": e.url, "format": e.format });
    let e = st
        .db
        .update_webhook_endpoint(&e, audit(&auth, "webhook.update", id, details))
        .await
        .map_err(not_found)?;
    Ok(Json(e.into()))
}

async fn set_enabled(
    st: &AppState,
    auth: &Auth,
    id: Uuid,
    enabled: bool,
) -> ApiResult<Json<WebhookView>> {
    auth.require(Scope::Admin)?;
    let action = if enabled {
        "webhook.enable"
    } else {
        "webhook.disable"
    };
    st.db
        .set_webhook_endpoint_enabled(
            auth.tenant(),
            id,
            enabled,
            Some("api"),
            audit(auth, action, id, json!({})),
        )
        .await
        .map(|e| Json(e.into()))
        .map_err(not_found)
}

/// Stop deliveries; pending messages wait until the endpoint is enabled again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disable_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WebhookView>> {
    set_enabled(&st, &auth, id, false).await
}

/// Resume deliveries (also after a 410 or 5 days of failures); resets the failure clock.
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WebhookView>> {
    set_enabled(&st, &auth, id, true).await
}

/// Delete the endpoint with its messages and attempts.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    auth.require(Scope::Admin)?;
    st.db
        .delete_webhook_endpoint(
            auth.tenant(),
            id,
            audit(&auth, "webhook.delete", id, json!({})),
        )
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// New signing secret (shown once). The previous one keeps signing, as a second
/// signature, for the overlap window, so receivers can switch without losing alerts.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), RotateQuery),
    responses((status = 200, body = SecretRotated), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RotateQuery>,
) -> ApiResult<Json<SecretRotated>> {
    auth.require(Scope::Admin)?;
    let overlap = q.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(ApiError::Invalid(format!(
            "overlap_secs must be at most {MAX_OVERLAP_SECS}"
        )));
    }
    let until = Utc::now() + chrono::Duration::seconds(overlap as i64);
    let secret = Secret::generate();
    let e = st
        .db
        .rotate_webhook_secret(
            auth.tenant(),
            id,
            &st.webhooks.cipher.seal_secret(&secret, id),
            until,
            audit(
                &auth,
                "webhook.rotate",
                id,
                json!({ "overlap_secs": overlap }),
            ),
        )
        .await
        .map_err(not_found)?;
    Ok(Json(SecretRotated {
        secret: secret.expose(),
        webhook: e.into(),
    }))
}

/// Queue a `webhook.test` message to this endpoint (delivered like any alert).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 202, body = TestQueued), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_webhook(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<TestQueued>)> {
    auth.require(Scope::Admin)?;
    let e = load(&st, &auth, id).await?;
    if !e.enabled {
        return Err(ApiError::Conflict(
            "the webhook is disabled; enable it to send a test".into(),
        ));
    }
    let m = st
        .db
        .enqueue_webhook_message(
            NewWebhookMessage {
                id: Uuid::now_v7(),
                tenant_id: auth.tenant(),
                endpoint_id: id,
                event_type: TEST_EVENT.into(),
                payload: json!({}),
                at: Utc::now(),
            },
            audit(&auth, "webhook.test", id, json!({})),
        )
        .await
        .map_err(not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TestQueued {
            message_id: m.id,
            webhook_id: m.webhook_id,
        }),
    ))
}

/// The endpoint's messages, oldest first, each with every attempt (status, duration,
/// response excerpt up to 20 kB, error).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), ListDeliveries),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListDeliveries>,
) -> ApiResult<Json<DeliveryList>> {
    auth.require(Scope::Admin)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 200 {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    load(&st, &auth, id).await?;
    let page = Page {
        after: q.after,
        limit,
    };
    let messages = st.db.list_webhook_messages(auth.tenant(), id, page).await?;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let mut attempts = st.db.list_webhook_attempts(auth.tenant(), &ids).await?;
    let next_after = (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    let deliveries = messages
        .into_iter()
        .map(|m| {
            let mine: Vec<WebhookAttempt> = {
                let (a, rest): (Vec<_>, Vec<_>) =
                    attempts.drain(..).partition(|a| a.message_id == m.id);
                attempts = rest;
                a
            };
            Delivery {
                message: m,
                attempts: mine,
            }
        })
        .collect();
    Ok(Json(DeliveryList {
        deliveries,
        next_after,
    }))
}

/// Redeliver a dead letter with a fresh retry schedule (same `webhook-id`).
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Message id")),
    responses((status = 200, body = WebhookMessage), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    State(st): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WebhookMessage>> {
    auth.require(Scope::Admin)?;
    st.db
        .retry_webhook_message(
            auth.tenant(),
            id,
            Utc::now(),
            NewAudit {
                tenant_id: auth.tenant(),
                actor_token_id: Some(auth.0.id),
                action: "delivery.retry",
                target_type: "webhook_message",
                target_id: Some(id.to_string()),
                details: json!({}),
            },
        )
        .await
        .map(Json)
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("delivery"),
            StoreError::Conflict(_) => {
                ApiError::Conflict("only a dead-lettered delivery can be retried".into())
            }
            e => e.into(),
        })
}
