//! The trap: decoy exchange APIs. Each emulator (`src/<exchange>.rs`) implements
//! [`emulator::Emulator`]; the shared request path records every use of a canary.
//! Until the shared path lands, the router answers 404 for every request.

pub mod emulator;
pub mod market;

use axum::http::StatusCode;
use axum::Router;

/// Largest request body the trap reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The trap router. Today: 404 for every request.
pub fn router() -> Router {
    Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
}
