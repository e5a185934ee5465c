//! The master key, the sub-keys derived from it, and offline canary recognition.
//!
//! Everything keytrap knows about a canary's credentials follows from the master key
//! and the canary id, so nothing secret is stored: the database keeps only the id and
//! a keyed lookup digest of the API key.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::zeroize::Zeroize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::format::{self, tag_layout};
use crate::Exchange;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Version of the derivation scheme (the `v1` in every label below). Stored with each
/// canary so a future scheme can live beside this one.
pub const DERIVATION_VERSION: u16 = 1;

/// HKDF salt: fixes the domain of every sub-key to keytrap v1.
const HKDF_SALT: &[u8] = b"keytrap/v1";
const INFO_CREDENTIALS: &[u8] = b"keytrap/v1/credentials";
const INFO_LOOKUP: &[u8] = b"keytrap/v1/lookup";
const INFO_TOKEN: &[u8] = b"keytrap/v1/api-token";
const INFO_KEY_CHECK: &[u8] = b"keytrap/v1/key-check";
const INFO_DETECTION: &[u8] = b"keytrap/v1/detection";
const INFO_WEBHOOK: &[u8] = b"keytrap/v1/webhook-encryption";
/// The message whose MAC is the key check value.
const KEY_CHECK_LABEL: &[u8] = b"keytrap/v1/key-check/label";
/// Domain separation for the recognition tag and the lookup digest.
const TAG_LABEL: &[u8] = b"keytrap/v1/tag\0";
const LOOKUP_LABEL: &[u8] = b"keytrap/v1/lookup\0";

/// Base64 that accepts the 44-char padded and the 43-char unpadded form.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A 32-byte key given as text could not be used.
///
/// Messages never contain the key material itself.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text has neither the length of base64 (43-44 chars) nor of hex (64 chars).
    #[error(
        "{what} must be 32 bytes as base64 (44 chars) or hex (64 chars); got {len} characters"
    )]
    Length {
        /// Which key ("master key", "detection key").
        what: &'static str,
        /// Characters given, after trimming whitespace.
        len: usize,
    },
    /// The text has a plausible length but is not valid base64 of 32 bytes.
    #[error(
        "{what} is not valid base64 of 32 bytes; expected 32 bytes as base64 (44 chars) or hex (64 chars)"
    )]
    Base64 {
        /// Which key ("master key", "detection key").
        what: &'static str,
    },
    /// The text has 64 chars but they are not all hex digits.
    #[error(
        "{what} has 64 characters but is not valid hex; expected 32 bytes as base64 (44 chars) or hex (64 chars)"
    )]
    Hex {
        /// Which key ("master key", "detection key").
        what: &'static str,
    },
}

/// Parses 32 bytes from base64 (padded or not) or hex; whitespace around is ignored.
fn parse_32(s: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let s = s.trim();
    let mut out = [0u8; 32];
    match s.len() {
        64 => {
            hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::Hex { what })?;
        }
        43 | 44 => {
            let mut decoded = BASE64_LENIENT
                .decode(s)
                .map_err(|_| KeyError::Base64 { what })?;
            if decoded.len() != 32 {
                decoded.zeroize();
                return Err(KeyError::Base64 { what });
            }
            out.copy_from_slice(&decoded);
            decoded.zeroize();
        }
        _ => {
            return Err(KeyError::Length {
                what,
                len: s.chars().count(),
            })
        }
    }
    Ok(out)
}

/// The 32-byte root secret. Every other key and every canary credential is derived
/// from it, so it is the one thing to keep safe and to back up.
///
/// `Debug` prints `MasterKey(..)`; the bytes are wiped on drop.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A new master key from the operating system's random number generator.
    pub fn generate() -> MasterKey {
        use rand::TryRngCore as _;
        let mut b = [0u8; 32];
        // No sensible fallback exists for a root secret: without OS randomness we stop.
        rand::rngs::OsRng
            .try_fill_bytes(&mut b)
            .expect("the operating system's random number generator failed");
        MasterKey(b)
    }

    /// A master key from its raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> MasterKey {
        MasterKey(b)
    }

    /// Parses a master key given as standard base64 (44 chars, padding optional) or as
    /// 64 hex digits. Surrounding whitespace (a trailing newline in a file) is ignored.
    pub fn parse(s: &str) -> Result<MasterKey, KeyError> {
        parse_32(s, "master key").map(MasterKey)
    }

    /// The key as standard base64 with padding (44 chars), the form `parse` reads.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Derives all sub-keys (HKDF-SHA256 with a distinct info string per purpose).
    pub fn keys(&self) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.0);
        let sub = |info: &[u8]| {
            let mut okm = [0u8; 32];
            hk.expand(info, &mut okm)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            okm
        };
        let mut credentials = sub(INFO_CREDENTIALS);
        let mut lookup = sub(INFO_LOOKUP);
        let mut token = sub(INFO_TOKEN);
        let mut check = sub(INFO_KEY_CHECK);
        let keys = Keys {
            credentials: hmac_key(&credentials),
            lookup: hmac_key(&lookup),
            token: hmac_key(&token),
            key_check: {
                let mut m = hmac_key(&check);
                m.update(KEY_CHECK_LABEL);
                m.finalize().into_bytes().into()
            },
            detection: DetectionKey::from_bytes(sub(INFO_DETECTION)),
            webhook: sub(INFO_WEBHOOK),
        };
        credentials.zeroize();
        lookup.zeroize();
        token.zeroize();
        check.zeroize();
        keys
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// An HMAC-SHA256 instance with the key already absorbed; cloning it skips the two
/// key-setup compressions on every use.
fn hmac_key(key: &[u8; 32]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The sub-keys derived from a [`MasterKey`]. Cheap to clone; `Debug` prints
/// `Keys(..)`.
#[derive(Clone)]
pub struct Keys {
    /// Derives every credential field (see `derive.rs`).
    pub(crate) credentials: HmacSha256,
    lookup: HmacSha256,
    token: HmacSha256,
    key_check: [u8; 32],
    pub(crate) detection: DetectionKey,
    webhook: [u8; 32],
}

impl Keys {
    /// Keyed digest of an API key, stored in the database instead of the key so a
    /// leaked database does not say which keys are canaries.
    pub fn lookup_digest(&self, exchange: Exchange, api_key: &str) -> [u8; 32] {
        let mut m = self.lookup.clone();
        m.update(LOOKUP_LABEL);
        m.update(exchange.as_str().as_bytes());
        m.update(&[0]);
        m.update(api_key.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// Keyed digest of a management API token; the database stores only this.
    pub fn token_digest(&self, token: &str) -> [u8; 32] {
        let mut m = self.token.clone();
        m.update(token.as_bytes());
        m.finalize().into_bytes().into()
    }

    /// A value that depends only on the master key: stored once, compared at start to
    /// detect that keytrap was started with a different master key.
    pub fn key_check(&self) -> [u8; 32] {
        self.key_check
    }

    /// The key that recognises canaries offline; can be handed to the platform's own
    /// services (via the SDK) without giving them the power to mint credentials.
    pub fn detection_key(&self) -> DetectionKey {
        self.detection.clone()
    }

    /// Key for encrypting webhook signing secrets at rest.
    pub fn webhook_encryption_key(&self) -> [u8; 32] {
        self.webhook
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.key_check.zeroize();
        self.webhook.zeroize();
    }
}

/// Recognises canary API keys offline: the last characters of every canary key are a
/// MAC, under this key, of the rest of the key.
///
/// Clone, Send + Sync; `Debug` prints `DetectionKey(..)`.
#[derive(Clone)]
pub struct DetectionKey {
    bytes: [u8; 32],
    mac: HmacSha256,
}

impl DetectionKey {
    /// A detection key from its raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DetectionKey {
            mac: hmac_key(&b),
            bytes: b,
        }
    }

    /// The key as standard base64 with padding (44 chars).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// Parses a detection key given as base64 (44 chars, padding optional) or 64 hex
    /// digits; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let mut b = parse_32(s, "detection key")?;
        let key = Self::from_bytes(b);
        b.zeroize();
        Ok(key)
    }

    /// `Some(exchange)` when `api_key` is a canary minted under this key.
    ///
    /// The key lengths of the exchanges are distinct, so the length picks the one
    /// candidate exchange; then the shape and the tag are checked. No allocation.
    pub fn is_canary(&self, api_key: &str) -> Option<Exchange> {
        let exchange = format::exchange_for_len(api_key.len())?;
        self.is_canary_for(exchange, api_key).then_some(exchange)
    }

    /// Whether `api_key` is a canary of `exchange` minted under this key.
    pub fn is_canary_for(&self, exchange: Exchange, api_key: &str) -> bool {
        if !format::matches_key_format(exchange, api_key) {
            return false;
        }
        let layout = tag_layout(exchange);
        // The shape check guarantees ASCII and a length above the tag's.
        let (body, tag) = api_key.as_bytes().split_at(api_key.len() - layout.len);
        let mut expected = [0u8; MAX_TAG_LEN];
        let expected = &mut expected[..layout.len];
        self.compute_tag(exchange, body, expected);
        expected.ct_eq(tag).into()
    }

    /// Appends the tag for the key body already in `key`.
    pub(crate) fn push_tag(&self, exchange: Exchange, key: &mut String) {
        let layout = tag_layout(exchange);
        let mut tag = [0u8; MAX_TAG_LEN];
        let tag = &mut tag[..layout.len];
        self.compute_tag(exchange, key.as_bytes(), tag);
        // Tag bytes come from an ASCII alphabet.
        key.extend(tag.iter().map(|&b| char::from(b)));
    }

    /// Fills `out` with characters of the exchange's tag alphabet, drawn by rejection
    /// sampling from HMAC(detection key, label || exchange || counter || body), so each
    /// character is exactly uniform.
    fn compute_tag(&self, exchange: Exchange, body: &[u8], out: &mut [u8]) {
        let alphabet = tag_layout(exchange).alphabet;
        let n = alphabet.len();
        let limit = 256 - 256 % n;
        let mut filled = 0;
        // 32 MAC bytes almost always yield the 6-8 chars needed; the counter extends
        // the stream for the rare case they do not.
        for counter in 0u8..=u8::MAX {
            let mut m = self.mac.clone();
            m.update(TAG_LABEL);
            m.update(exchange.as_str().as_bytes());
            m.update(&[0, counter]);
            m.update(body);
            for b in m.finalize().into_bytes() {
                let b = usize::from(b);
                if b < limit {
                    out[filled] = alphabet[b % n];
                    filled += 1;
                    if filled == out.len() {
                        return;
                    }
                }
            }
        }
        // 256 blocks of 32 bytes each, every byte accepted with probability >= 62/64:
        // never reached in practice.
        unreachable!("HMAC stream exhausted while drawing a tag");
    }
}

/// Longest tag of any exchange.
const MAX_TAG_LEN: usize = 8;

impl fmt::Debug for DetectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DetectionKey(..)")
    }
}

impl Drop for DetectionKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}
