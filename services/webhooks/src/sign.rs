//! Standard Webhooks signing and verification, and encryption of endpoint secrets at rest.
//!
//! Headers: `webhook-id` (stable across retries), `webhook-timestamp` (unix seconds of the
//! attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`,
//! several space-separated while a secret is being rotated.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the unix timestamp of the attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
/// Bytes of a generated secret.
pub const SECRET_LEN: usize = 32;
const MIN_SECRET: usize = 24;
const MAX_SECRET: usize = 64;

/// An endpoint's signing secret. Shown once as `whsec_<base64>`; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret must start with whsec_")]
    Prefix,
    #[error("secret is not valid base64")]
    Base64,
    #[error("secret must be {MIN_SECRET} to {MAX_SECRET} bytes, got {0}")]
    Length(usize),
}

impl Secret {
    /// A fresh secret of [`SECRET_LEN`] random bytes from the OS generator.
    pub fn generate() -> Self {
        let mut b = vec![0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut b);
        Secret(b)
    }

    /// Parses `whsec_<base64>` (24 to 64 bytes).
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let bytes = B64.decode(b64).map_err(|_| SecretError::Base64)?;
        Self::from_bytes(bytes)
    }

    /// Wraps raw key bytes (24 to 64).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        if !(MIN_SECRET..=MAX_SECRET).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Secret(bytes))
    }

    /// The `whsec_...` form shown to the user once and stored (encrypted).
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.0))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// One `v1,<base64>` signature of `body` for message `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

/// The three Standard Webhooks headers of one attempt, as `(name, value)` pairs.
/// `secrets` holds the current secret and, during rotation, the previous one(s): each
/// gives one space-separated signature, so receivers on either secret verify.
pub fn headers(
    secrets: &[Secret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let sig = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ");
    [
        (HEADER_ID, id.to_string()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, sig),
    ]
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a unix timestamp")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// Default tolerance between the signed timestamp and the receiver's clock.
pub const TOLERANCE_SECS: i64 = 300;

/// Verifies a delivery as a receiver does: `get` looks a header up by lower-case name.
/// Accepts if any `v1` signature in the header matches (compared in constant time) and
/// the timestamp is within `tolerance_secs` of `now` (unix seconds).
pub fn verify<'a>(
    secret: &Secret,
    get: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let id = get(HEADER_ID).ok_or(VerifyError::Missing(HEADER_ID))?;
    let ts_raw = get(HEADER_TIMESTAMP).ok_or(VerifyError::Missing(HEADER_TIMESTAMP))?;
    let sigs = get(HEADER_SIGNATURE).ok_or(VerifyError::Missing(HEADER_SIGNATURE))?;
    let ts: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    let expected = secret.mac(id, ts, body);
    let ok = sigs
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(v, _)| *v == "v1")
        .filter_map(|(_, b)| B64.decode(b).ok())
        .any(|got| bool::from(got.as_slice().ct_eq(&expected)));
    if ok {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

/// Encrypts endpoint secrets at rest with ChaCha20-Poly1305 under keys derived
/// (HKDF-SHA256, info `keytrap/webhook-secret/v{version}`) from versioned master keys.
///
/// Ciphertext format (text, for any column type): `ks1.<version>.<base64 nonce||ct||tag>`.
/// The caller passes associated data (the endpoint id) so a ciphertext copied onto another
/// endpoint's row does not decrypt.
pub struct SecretCipher {
    current: u32,
    keys: BTreeMap<u32, LessSafeKey>,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCipher")
            .field("current", &self.current)
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why a stored secret could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("stored secret is not in the ks1.<version>.<data> format")]
    Format,
    #[error("stored secret was encrypted under master key version {0}, which is not loaded")]
    UnknownVersion(u32),
    #[error("stored secret failed authentication (wrong key, wrong endpoint or tampered)")]
    Authentication,
}

const CIPHER_TAG: &str = "ks1";

impl SecretCipher {
    /// A cipher with one master key, used for encryption and decryption.
    pub fn new(version: u32, master_key: &[u8; 32]) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(version, derive(version, master_key));
        SecretCipher {
            current: version,
            keys,
        }
    }

    /// Adds an older master key, accepted for decryption only (rotation).
    pub fn with_previous(mut self, version: u32, master_key: &[u8; 32]) -> Self {
        self.keys.insert(version, derive(version, master_key));
        self
    }

    /// Encrypts `plaintext` under the current key with a random nonce, bound to `aad`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let key = &self.keys[&self.current];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .expect("ChaCha20-Poly1305 seals any length we store");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{CIPHER_TAG}.{}.{}", self.current, B64.encode(out))
    }

    /// Decrypts a value produced by [`encrypt`](Self::encrypt) under any loaded version.
    pub fn decrypt(&self, stored: &str, aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut parts = stored.splitn(3, '.');
        let (Some(CIPHER_TAG), Some(version), Some(data)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CipherError::Format);
        };
        let version: u32 = version.parse().map_err(|_| CipherError::Format)?;
        let key = self
            .keys
            .get(&version)
            .ok_or(CipherError::UnknownVersion(version))?;
        let raw = B64.decode(data).map_err(|_| CipherError::Format)?;
        if raw.len() < NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(CipherError::Format);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Format)?;
        let mut buf = ct.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CipherError::Authentication)?;
        Ok(plain.to_vec())
    }

    /// Encrypts a signing secret (its `whsec_` form).
    pub fn seal_secret(&self, secret: &Secret, endpoint_id: uuid::Uuid) -> String {
        self.encrypt(secret.expose().as_bytes(), endpoint_id.as_bytes())
    }

    /// Decrypts a signing secret sealed by [`seal_secret`](Self::seal_secret).
    pub fn open_secret(
        &self,
        stored: &str,
        endpoint_id: uuid::Uuid,
    ) -> Result<Secret, CipherError> {
        let plain = self.decrypt(stored, endpoint_id.as_bytes())?;
        let s = std::str::from_utf8(&plain).map_err(|_| CipherError::Format)?;
        Secret::parse(s).map_err(|_| CipherError::Format)
    }
}

fn derive(version: u32, master_key: &[u8; 32]) -> LessSafeKey {
    let hk = hkdf::Hkdf::<Sha256>::new(None, master_key);
    let mut okm = [0u8; 32];
    hk.expand(
        format!("keytrap/webhook-secret/v{version}").as_bytes(),
        &mut okm,
    )
    .expect("32 bytes is a valid HKDF-SHA256 output length");
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &okm).expect("32-byte ChaCha20-Poly1305 key"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known vectors: the Standard Webhooks / Svix documentation and the reference crate.
    const VECTORS: &[(&str, &str, i64, &str, &str)] = &[
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    fn lookup<'a>(h: &'a [(&'static str, String); 3]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn known_vectors() {
        for (secret, id, ts, body, want) in VECTORS {
            let s = Secret::parse(secret).expect("vector secret");
            assert_eq!(&s.sign(id, *ts, body.as_bytes()), want);
            let h = headers(std::slice::from_ref(&s), id, *ts, body.as_bytes());
            assert_eq!(
                verify(&s, lookup(&h), body.as_bytes(), *ts + 10, TOLERANCE_SECS),
                Ok(())
            );
        }
    }

    #[test]
    fn matches_the_reference_crate() {
        let s = Secret::generate();
        assert_eq!(s.as_bytes().len(), SECRET_LEN);
        let exposed = s.expose();
        assert!(exposed.starts_with("whsec_"));
        assert_eq!(Secret::parse(&exposed), Ok(s.clone()));
        let reference = standardwebhooks::Webhook::new(&exposed).expect("reference accepts it");
        let body = br#"{"type":"incident.opened","data":{"x":"\u00e9"}}"#;
        let now = chrono::Utc::now().timestamp();
        let theirs = reference.sign("msg_1", now, body).expect("reference signs");
        assert_eq!(s.sign("msg_1", now, body), theirs);

        // Our rotation header (two signatures) verifies with the reference on either secret.
        let old = Secret::generate();
        let mut map = reqwest::header::HeaderMap::new();
        for (n, v) in headers(&[s.clone(), old.clone()], "msg_1", now, body) {
            map.insert(n, v.parse().expect("header value"));
        }
        assert!(reference.verify(body, &map).is_ok());
        let old_ref = standardwebhooks::Webhook::new(&old.expose()).expect("old");
        assert!(old_ref.verify(body, &map).is_ok());
        let other = standardwebhooks::Webhook::new(&Secret::generate().expose()).expect("other");
        assert!(other.verify(body, &map).is_err());
        assert!(reference.verify(b"{}", &map).is_err());
    }

    #[test]
    fn verification_failures() {
        let s = Secret::generate();
        let body = b"{\"a\":1}";
        let h = headers(std::slice::from_ref(&s), "msg_x", 1_000_000, body);
        let get = lookup(&h);
        assert_eq!(verify(&s, &get, body, 1_000_000, TOLERANCE_SECS), Ok(()));
        assert_eq!(
            verify(&s, &get, b"{\"a\":2}", 1_000_000, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, &get, body, 1_000_301, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&s, &get, body, 999_699, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&Secret::generate(), &get, body, 1_000_000, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, |_| None, body, 1_000_000, 300),
            Err(VerifyError::Missing(HEADER_ID))
        );
        let bad_ts = |n: &str| match n {
            HEADER_TIMESTAMP => Some("soon"),
            _ => Some("v1,AAAA"),
        };
        assert_eq!(
            verify(&s, bad_ts, body, 0, 300),
            Err(VerifyError::BadTimestamp)
        );
        // A v2 signature with the right bytes is not a v1 signature.
        let v2 = h[2].1.replacen("v1,", "v2,", 1);
        let get_v2 = |n: &str| {
            if n == HEADER_SIGNATURE {
                Some(v2.as_str())
            } else {
                get(n)
            }
        };
        assert_eq!(
            verify(&s, get_v2, body, 1_000_000, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn secret_parsing() {
        assert_eq!(Secret::parse("abc"), Err(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::Base64));
        assert_eq!(
            Secret::parse(&format!("whsec_{}", B64.encode([0u8; 8]))),
            Err(SecretError::Length(8))
        );
        assert!(Secret::parse(&format!("whsec_{}", B64.encode([7u8; 64]))).is_ok());
        assert_eq!(format!("{:?}", Secret::generate()), "Secret(..)");
        assert_ne!(Secret::generate(), Secret::generate());
    }

    #[test]
    fn secret_encryption() {
        let master = [42u8; 32];
        let endpoint = uuid::Uuid::now_v7();
        let c = SecretCipher::new(1, &master);
        let s = Secret::generate();
        let stored = c.seal_secret(&s, endpoint);
        assert!(stored.starts_with("ks1.1."));
        assert!(!stored.contains(&s.expose()[6..]));
        assert_eq!(c.open_secret(&stored, endpoint), Ok(s.clone()));
        // Random nonce: the same secret encrypts differently each time.
        assert_ne!(c.seal_secret(&s, endpoint), stored);

        // Wrong endpoint (associated data), wrong master key, unknown version.
        assert_eq!(
            c.open_secret(&stored, uuid::Uuid::now_v7()),
            Err(CipherError::Authentication)
        );
        let wrong = SecretCipher::new(1, &[43u8; 32]);
        assert_eq!(
            wrong.open_secret(&stored, endpoint),
            Err(CipherError::Authentication)
        );
        let v2_only = SecretCipher::new(2, &master);
        assert_eq!(
            v2_only.open_secret(&stored, endpoint),
            Err(CipherError::UnknownVersion(1))
        );

        // The version is part of the key derivation: same master, other version, other key.
        let forged = stored.replacen("ks1.1.", "ks1.2.", 1);
        assert_eq!(
            v2_only.decrypt(&forged, endpoint.as_bytes()),
            Err(CipherError::Authentication)
        );

        // Rotation: a cipher on v2 still opens v1 values and writes v2.
        let rotated = SecretCipher::new(2, &[9u8; 32]).with_previous(1, &master);
        assert_eq!(rotated.open_secret(&stored, endpoint), Ok(s.clone()));
        assert!(rotated.seal_secret(&s, endpoint).starts_with("ks1.2."));

        // Every flipped byte of the payload is detected.
        let data = stored.rsplit('.').next().expect("data");
        let raw = B64.decode(data).expect("b64");
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let tampered = format!("ks1.1.{}", B64.encode(&t));
            assert_eq!(
                c.decrypt(&tampered, endpoint.as_bytes()),
                Err(CipherError::Authentication),
                "byte {i}"
            );
        }
        for bad in [
            "",
            "ks1",
            "ks1.x.AAAA",
            "ks2.1.AAAA",
            "ks1.1.!!",
            "ks1.1.AAAA",
        ] {
            assert_eq!(c.decrypt(bad, b""), Err(CipherError::Format), "{bad}");
        }
    }
}
