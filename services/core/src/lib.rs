//! keytrap domain core: exchanges, canary credential formats, derivation and offline
//! recognition. No IO.
//!
//! A [`MasterKey`] derives [`Keys`]; [`Keys::credentials`] mints the credentials of a
//! canary from its id (deterministically, so nothing secret is stored), and a
//! [`DetectionKey`] answers [`DetectionKey::is_canary`] offline from the API key alone.
//!
//! The recognition tag is always the end of the API key, drawn uniformly from the
//! key's own alphabet (so it looks like the rest of the key):
//!
//! | exchange | key | tag |
//! |---|---|---|
//! | binance | 64 `[A-Za-z0-9]` | last 8 chars |
//! | kucoin | 8 hex creation time + 16 hex | last 8 hex |
//! | coinbase | `organizations/{uuid4}/apiKeys/{uuid4}` | last 8 hex of the key UUID |
//! | coinbase-exchange | 32 hex | last 8 hex |
//! | okx | UUIDv4 | last 8 hex |
//! | kraken | 56 base64 chars, first alphanumeric | last 8 chars |
//! | bybit | 18 `[A-Za-z0-9]` | last 6 chars |
//!
//! ```
//! use keytrap_core::{Exchange, MasterKey};
//!
//! let keys = MasterKey::from_bytes([7; 32]).keys();
//! let id = uuid::Uuid::now_v7();
//! let creds = keys.credentials(Exchange::Binance, id);
//! assert_eq!(keys.detection_key().is_canary(&creds.api_key), Some(Exchange::Binance));
//! ```

mod derive;
mod exchange;
mod format;
mod keys;
pub mod render;
mod words;

#[cfg(test)]
mod tests;

pub use derive::Credentials;
pub use exchange::{Exchange, UnknownExchange};
pub use format::{matches_key_format, matches_passphrase_format, matches_secret_format};
pub use keys::{DetectionKey, KeyError, Keys, MasterKey, DERIVATION_VERSION};
