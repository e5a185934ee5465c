//! Offline recognition of canary API keys.

use keytrap_core::{DetectionKey, Exchange, KeyError};

/// Recognises keytrap canaries offline from the detection key.
///
/// Clone, Send + Sync; no allocation per call. `Debug` does not print the key.
///
/// ```
/// use keytrap_sdk::{Detector, Exchange};
///
/// // Normally from `Client::detector()`; here a key given as base64.
/// let d = Detector::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
/// // A random Binance-shaped key is not a canary.
/// assert_eq!(d.is_canary("Xy7bQ2mN9pL4kR8sT1vW6zA3cE5gH0jKXy7bQ2mN9pL4kR8sT1vW6zA3cE5gH0jK"), None);
/// assert!(Detector::from_base64("not a key").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Detector {
    key: DetectionKey,
}

impl Detector {
    /// A detector from the detection key as base64 (44 chars) or 64 hex digits, as
    /// `GET /v1/detection-key` returns it.
    pub fn from_base64(key: &str) -> Result<Self, KeyError> {
        Ok(Detector {
            key: DetectionKey::parse(key)?,
        })
    }

    /// `Some(exchange)` if `api_key` is a canary minted under this installation's
    /// master key. Exact match: trim whitespace first if the key comes from user input.
    pub fn is_canary(&self, api_key: &str) -> Option<Exchange> {
        self.key.is_canary(api_key)
    }

    /// Whether `api_key` is a canary of `exchange`.
    pub fn is_canary_for(&self, exchange: Exchange, api_key: &str) -> bool {
        self.key.is_canary_for(exchange, api_key)
    }
}
