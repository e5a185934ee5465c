//! The trap: decoy exchange APIs. Until the emulators land, every path answers 404 so the
//! listener exists and can be deployed and probed.

use axum::http::StatusCode;
use axum::Router;

/// The trap router. Today: 404 for every request.
pub fn router() -> Router {
    Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
}
