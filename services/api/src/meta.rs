//! Health, readiness, the OpenAPI document and its HTML page, and the JSON answers for
//! unknown routes, wrong methods and caught panics.

use std::any::Any;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::{Modify, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    status: &'static str,
    database: &'static str,
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses((status = 200, body = Ready), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Ready>, ApiError> {
    match st.db.ping().await {
        Ok(()) => Ok(Json(Ready {
            status: "ready",
            database: st.db.backend(),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable)
        }
    }
}

/// `/openapi.json` and `/docs`, served from the document built with the router.
pub fn docs_routes(doc: Arc<OpenApi>) -> Router<AppState> {
    let json = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    let html = Arc::new(render_docs(&doc));
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.as_str().to_owned(),
                    )
                }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let html = html.clone();
                async move { Html(html.as_str().to_owned()) }
            }),
        )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained reference page: no third-party script, so it works air-gapped.
fn render_docs(doc: &OpenApi) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         code{{background:#f3f3f3;padding:0 .2rem}}.m{{font-weight:bold;display:inline-block;width:4.5rem}}\
         li{{margin:.3rem 0}}</style></head><body><h1>{t}</h1><p>{d}</p>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p><ul>",
        t = esc(&doc.info.title),
        d = esc(doc.info.description.as_deref().unwrap_or("")),
    );
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let summary = op
                    .summary
                    .as_deref()
                    .or(op.description.as_deref())
                    .unwrap_or("");
                let _ = write!(
                    out,
                    "<li><span class=\"m\">{method}</span><code>{}</code> {}</li>",
                    esc(path),
                    esc(summary)
                );
            }
        }
    }
    out.push_str("</ul></body></html>");
    out
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    let mut r = ApiError::Internal(format!("handler panicked: {detail}")).into_response();
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
