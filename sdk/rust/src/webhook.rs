//! Verifying keytrap's webhook deliveries ([Standard Webhooks]).
//!
//! Each delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and
//! `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` signatures of
//! `"{id}.{timestamp}.{body}"` under the endpoint's `whsec_` secret (several while the
//! secret is rotated). Verify against the raw body bytes, before parsing them.
//!
//! ```
//! use keytrap_sdk::webhook::{Verifier, WebhookError};
//!
//! let v = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let body = br#"{"type":"incident.opened"}"#;
//! let sig = v.sign("msg_1", 1_700_000_000, body);
//! let headers = [("webhook-id", "msg_1"), ("webhook-timestamp", "1700000000"), ("webhook-signature", sig.as_str())];
//! let get = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
//! assert_eq!(v.verify_at(get, body, 1_700_000_100), Ok(()));
//! // Ten minutes later it is a replay.
//! assert_eq!(v.verify_at(get, body, 1_700_000_600), Err(WebhookError::Stale));
//! ```
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// `webhook-id` header.
pub const HEADER_ID: &str = "webhook-id";
/// `webhook-timestamp` header.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature` header.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Default tolerance between the signed timestamp and the receiver's clock: 5 minutes.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a secret or a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret is not `whsec_<base64>`.
    #[error("webhook secret must be whsec_ followed by base64")]
    BadSecret,
    /// A required header is absent.
    #[error("missing header {0}")]
    Missing(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not a unix timestamp")]
    BadTimestamp,
    /// The timestamp is further than the tolerance from now (replay or clock skew).
    #[error("webhook-timestamp is outside the tolerance")]
    Stale,
    /// No `v1` signature matches the body.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies deliveries for one endpoint secret. `Debug` hides the secret.
#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
    tolerance: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier for a `whsec_...` secret, with the 5-minute tolerance.
    pub fn new(secret: &str) -> Result<Self, WebhookError> {
        let b64 = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or(WebhookError::BadSecret)?;
        let key = B64.decode(b64).map_err(|_| WebhookError::BadSecret)?;
        if key.is_empty() {
            return Err(WebhookError::BadSecret);
        }
        Ok(Verifier {
            key,
            tolerance: TOLERANCE_SECS,
        })
    }

    /// The same verifier with another tolerance (seconds).
    pub fn with_tolerance(mut self, secs: i64) -> Self {
        self.tolerance = secs.max(0);
        self
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// The `v1,<base64>` signature keytrap would send (for tests of receivers).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, timestamp, body)))
    }

    /// Verifies a delivery now. `get` looks a header up by its lower-case name.
    pub fn verify<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<(), WebhookError> {
        let now = chrono::Utc::now().timestamp();
        self.verify_at(get, body, now)
    }

    /// Verifies a delivery as of `now` (unix seconds).
    pub fn verify_at<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), WebhookError> {
        let id = get(HEADER_ID).ok_or(WebhookError::Missing(HEADER_ID))?;
        let ts = get(HEADER_TIMESTAMP).ok_or(WebhookError::Missing(HEADER_TIMESTAMP))?;
        let sigs = get(HEADER_SIGNATURE).ok_or(WebhookError::Missing(HEADER_SIGNATURE))?;
        let ts: i64 = ts.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
        if now.abs_diff(ts) > self.tolerance.unsigned_abs() {
            return Err(WebhookError::Stale);
        }
        let expected = self.mac(id, ts, body);
        let ok = sigs
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .filter(|(v, _)| *v == "v1")
            .filter_map(|(_, b)| B64.decode(b).ok())
            .any(|got| bool::from(got.as_slice().ct_eq(&expected)));
        if ok {
            Ok(())
        } else {
            Err(WebhookError::NoMatch)
        }
    }
}
