//! # keytrap-sdk
//!
//! What a platform's own services need from keytrap:
//!
//! - [`Client`]: a typed async client for the management API (stores, canaries,
//!   rendering, placements, hits, incidents).
//! - [`Detector`]: offline canary recognition. Fetch the detection key once (a token
//!   with the `detect` scope), then [`Detector::is_canary`] answers from the API key
//!   alone, without network, in well under a microsecond; a trading engine uses it to
//!   skip canary rows of its users' key table.
//! - [`webhook`]: verification of keytrap's Standard Webhooks signatures, for
//!   receivers of its alerts.
//!
//! ```no_run
//! # async fn run() -> Result<(), keytrap_sdk::Error> {
//! use keytrap_sdk::Client;
//!
//! let client = Client::new("http://127.0.0.1:8700", "keytrap_...detect-token...")?;
//! let detector = client.detector().await?; // one request, then offline
//! for api_key in ["0123456789abcdef01234567"] {
//!     if detector.is_canary(api_key).is_some() {
//!         continue; // never trade with a canary
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
mod detect;
pub mod webhook;

pub use client::{
    Canary, CanaryFilter, Client, Credentials, Delivery, DeliveryAttempt, DetectionKeyInfo, Error,
    Hit, HitFilter, Incident, IncidentFilter, MintRequest, NewPlacement, NewStore, NewWebhook,
    Placement, PlacementFilter, Rendered, SecretRotated, Store, TestQueued, Webhook,
    WebhookCreated,
};
pub use detect::Detector;
pub use keytrap_core::render::{ColumnMapping, RenderSpec, SqlDialect, Template};
pub use keytrap_core::Exchange;
pub use webhook::Verifier as WebhookVerifier;
