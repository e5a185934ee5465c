//! keytrap's management REST API: stores, canaries, tokens, tenants and the audit log,
//! with its OpenAPI document generated from the handlers (utoipa).
//!
//! [`router`] builds the whole axum `Router`; tests drive it in process with `oneshot`.

pub mod error;
pub mod extract;
mod handlers;
pub mod incidents;
mod meta;
pub mod plant;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::Router;
use keytrap_core::Keys;
use keytrap_store::Database;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ApiResult, ErrorBody};
pub use handlers::{CanaryView, MintRequest, MintResponse};
use meta::BearerAuth;

/// Largest request body the API reads (mint requests are small; labels are bounded).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most canaries one mint call creates.
pub const MAX_MINT_COUNT: u32 = 10_000;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Arc<dyn Database>,
    pub keys: Keys,
    /// Version of the master key new canaries are derived under.
    pub key_version: i32,
    /// SSRF policy and secret cipher for webhook endpoints.
    pub webhooks: webhooks::WebhookSettings,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keytrap management API",
        description = "Mint canary exchange API keys, record where they are planted, and read what happened to them. Authenticate with `Authorization: Bearer <token>`; errors are `{\"error\":{\"code\",\"message\"}}`.",
        version = "1"
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "stores", description = "Places canaries are planted in"),
        (name = "canaries", description = "Canary credentials"),
        (name = "tokens", description = "API tokens and tenants"),
        (name = "incidents", description = "Hits, incidents and events recorded by the trap"),
        (name = "webhooks", description = "Signed alert deliveries to your receivers"),
        (name = "meta", description = "Health and documentation"),
    )
)]
struct ApiDoc;

/// The router and its OpenAPI document, built from the same route list.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::create_store, handlers::list_stores))
        .routes(routes!(handlers::get_store))
        .routes(routes!(handlers::mint_canaries, handlers::list_canaries))
        .routes(routes!(handlers::get_canary))
        .routes(routes!(handlers::disable_canary))
        .routes(routes!(plant::render_canary))
        .routes(routes!(plant::set_expiry))
        .routes(routes!(plant::get_detection_key))
        .routes(routes!(plant::record_placements, plant::list_placements))
        .routes(routes!(plant::delete_placements))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::create_tenant))
        .routes(routes!(tokens::list_audit))
        .routes(routes!(incidents::list_hits))
        .routes(routes!(incidents::list_incidents))
        .routes(routes!(incidents::get_incident))
        .routes(routes!(incidents::ack_incident))
        .routes(routes!(incidents::resolve_incident))
        .routes(routes!(incidents::list_events))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::disable_webhook))
        .routes(routes!(webhooks::enable_webhook))
        .routes(routes!(webhooks::rotate_webhook))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .split_for_parts()
}

/// The OpenAPI document (served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The management API router with every layer: body limit, panics caught into a JSON
/// 500, request tracing without headers or query strings (they may carry secrets).
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api();
    let doc = Arc::new(doc);
    routes
        .merge(meta::docs_routes(doc))
        .fallback(meta::not_found)
        .method_not_allowed_fallback(meta::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(meta::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::info_span!("api", method = %req.method(), path = %req.uri().path())
                })
                .on_response(
                    |res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                        tracing::info!(
                            status = res.status().as_u16(),
                            ms = latency.as_millis() as u64,
                            "request"
                        );
                    },
                ),
        )
}
