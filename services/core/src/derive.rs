//! Deriving a canary's credentials from the credentials sub-key and the canary id.
//!
//! Each field (api key, secret, passphrase, ...) has its own byte stream:
//! HMAC-SHA256(credentials key, label || exchange || 0 || id || field || 0 || counter)
//! for counter = 0, 1, 2, ... Characters are drawn from the stream by rejection
//! sampling (accept byte b only if b < 256 - 256 % n, char = alphabet[b % n]), so
//! they are exactly uniform and nothing marks a canary statistically. Nothing is
//! random at mint time: the same master key and id always give the same credentials.

use std::fmt;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use uuid::Uuid;

use crate::format::{
    tag_layout, ALNUM, BASE64, COINBASE_KEYS_INFIX, COINBASE_ORG_PREFIX, HEX_LOWER, HEX_UPPER,
    LOWER_ALNUM,
};
use crate::keys::HmacSha256;
use crate::words::WORDS;
use crate::{Exchange, Keys};

/// Domain separation for credential fields.
const FIELD_LABEL: &[u8] = b"keytrap/v1/credential\0";

/// What a canary hands out: the exchange's API key, secret and (for KuCoin, OKX and
/// Coinbase Exchange) passphrase.
///
/// For Coinbase Advanced Trade, `api_key` is the key name
/// `organizations/{uuid}/apiKeys/{uuid}` and `api_secret` the SEC1 PEM of the EC
/// private key. `Debug` redacts the secret and the passphrase.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    /// The API key (Coinbase: the key name).
    pub api_key: String,
    /// The API secret (Coinbase: the EC private key PEM).
    pub api_secret: String,
    /// The passphrase, for exchanges that have one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub passphrase: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The expanding byte stream of one credential field.
pub(crate) struct ByteStream {
    prefix: HmacSha256,
    counter: u32,
    block: [u8; 32],
    pos: usize,
}

impl ByteStream {
    pub(crate) fn new(credentials: &HmacSha256, exchange: Exchange, id: Uuid, field: &str) -> Self {
        let mut prefix = credentials.clone();
        prefix.update(FIELD_LABEL);
        prefix.update(exchange.as_str().as_bytes());
        prefix.update(&[0]);
        prefix.update(id.as_bytes());
        prefix.update(field.as_bytes());
        prefix.update(&[0]);
        ByteStream {
            prefix,
            counter: 0,
            block: [0; 32],
            pos: 32,
        }
    }

    pub(crate) fn next_byte(&mut self) -> u8 {
        if self.pos == self.block.len() {
            let mut m = self.prefix.clone();
            m.update(&self.counter.to_be_bytes());
            self.block = m.finalize().into_bytes().into();
            // 2^32 blocks per field is far beyond any use.
            self.counter = self.counter.wrapping_add(1);
            self.pos = 0;
        }
        let b = self.block[self.pos];
        self.pos += 1;
        b
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.next_byte();
        }
        out
    }

    /// Exactly uniform in `0..n` (n >= 1), by rejection sampling.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        debug_assert!(n >= 1);
        if n <= 256 {
            let limit = 256 - 256 % n;
            loop {
                let b = u32::from(self.next_byte());
                if b < limit {
                    return b % n;
                }
            }
        }
        let span = 1u64 << 32;
        let limit = span - span % u64::from(n);
        loop {
            let v = u64::from(u32::from_be_bytes(self.bytes()));
            if v < limit {
                // v % n < n <= u32::MAX
                return (v % u64::from(n)) as u32;
            }
        }
    }

    /// A uniformly chosen element of a non-empty slice.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let n = u32::try_from(items.len()).expect("pick from a short, non-empty list");
        &items[self.below(n) as usize]
    }

    /// Appends `count` characters of `alphabet` (ASCII, at most 256 chars).
    pub(crate) fn push_chars(&mut self, alphabet: &[u8], count: usize, out: &mut String) {
        for _ in 0..count {
            out.push(char::from(*self.pick(alphabet)));
        }
    }

    /// A UUIDv4 (version 4, variant 8-b) from 16 stream bytes, lower-case hyphenated.
    fn uuid_v4(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.bytes())
            .into_uuid()
            .hyphenated()
            .to_string()
    }
}

/// Unix seconds used as the creation base when a canary id carries no timestamp (only
/// happens for non-v1/v6/v7 ids; canaries use UUIDv7): 2024-01-01T00:00:00Z.
const FALLBACK_CREATED_AT: u64 = 1_704_067_200;
const DAY: u64 = 86_400;
/// KuCoin keys look created 1 to 120 days before the canary was minted.
const KUCOIN_MIN_AGE: u64 = DAY;
const KUCOIN_MAX_AGE: u64 = 120 * DAY;

/// Symbols people add to passphrases when told to.
const PASSPHRASE_SYMBOLS: &[u8] = b"!@#$%*";
const DIGITS: &[u8] = b"0123456789";

impl Keys {
    fn stream(&self, exchange: Exchange, id: Uuid, field: &str) -> ByteStream {
        ByteStream::new(&self.credentials, exchange, id, field)
    }

    /// The credentials of canary `canary_id` on `exchange`. Deterministic: the same
    /// master key, exchange and id always give the same credentials.
    pub fn credentials(&self, exchange: Exchange, canary_id: Uuid) -> Credentials {
        Credentials {
            api_key: self.api_key(exchange, canary_id),
            api_secret: self.api_secret(exchange, canary_id),
            passphrase: self.passphrase(exchange, canary_id),
        }
    }

    /// The credentials of canary `canary_id` whose API key was presented: the same as
    /// [`credentials`](Self::credentials), for the `api_key` that canary's lookup digest
    /// matched, without deriving the key again (the trap's request path, where an unknown
    /// key's pseudo canary costs the same).
    pub fn credentials_for_key(
        &self,
        exchange: Exchange,
        canary_id: Uuid,
        api_key: &str,
    ) -> Credentials {
        Credentials {
            api_key: api_key.to_string(),
            api_secret: self.api_secret(exchange, canary_id),
            passphrase: self.passphrase(exchange, canary_id),
        }
    }

    /// Only the API key of canary `canary_id` (same as `credentials(..).api_key`, but
    /// cheaper: for Coinbase it skips the EC key).
    pub fn api_key(&self, exchange: Exchange, canary_id: Uuid) -> String {
        let id = canary_id;
        let tag = tag_layout(exchange).len;
        let mut s = String::with_capacity(crate::format::key_len(exchange));
        let mut st = self.stream(exchange, id, "api_key");
        match exchange {
            Exchange::Binance => st.push_chars(ALNUM, 64 - tag, &mut s),
            Exchange::Kucoin => {
                // MongoDB ObjectId shape: 4-byte big-endian creation time first.
                let created = kucoin_created_at(&mut self.stream(exchange, id, "created_at"), id);
                let _ = write!(s, "{created:08x}");
                st.push_chars(HEX_LOWER, 24 - 8 - tag, &mut s);
            }
            Exchange::Coinbase => {
                s.push_str(COINBASE_ORG_PREFIX);
                s.push_str(&self.stream(exchange, id, "organization").uuid_v4());
                s.push_str(COINBASE_KEYS_INFIX);
                let key_id = st.uuid_v4();
                // The tag replaces the last hex digits of the last group.
                s.push_str(&key_id[..36 - tag]);
            }
            Exchange::CoinbaseExchange => st.push_chars(HEX_LOWER, 32 - tag, &mut s),
            Exchange::Okx => {
                let key_id = st.uuid_v4();
                s.push_str(&key_id[..36 - tag]);
            }
            Exchange::Kraken => {
                // trufflehog's pattern starts with \b: the first char must be alphanumeric
                // (the first 62 chars of the base64 alphabet).
                st.push_chars(&BASE64[..62], 1, &mut s);
                st.push_chars(BASE64, 56 - 1 - tag, &mut s);
            }
            Exchange::Bybit => st.push_chars(ALNUM, 18 - tag, &mut s),
        }
        self.detection.push_tag(exchange, &mut s);
        s
    }

    fn api_secret(&self, exchange: Exchange, id: Uuid) -> String {
        let mut st = self.stream(exchange, id, "api_secret");
        let mut s = String::new();
        match exchange {
            Exchange::Binance => st.push_chars(ALNUM, 64, &mut s),
            Exchange::Kucoin => s = st.uuid_v4(),
            Exchange::Coinbase => {
                s = coinbase_ec_pem(&mut self.stream(exchange, id, "ec_private_key"))
            }
            Exchange::CoinbaseExchange => s = STANDARD.encode(st.bytes::<64>()),
            Exchange::Okx => st.push_chars(HEX_UPPER, 32, &mut s),
            Exchange::Kraken => {
                let mut raw = [0u8; 64];
                // First base64 char alphanumeric (trufflehog's \b): the top 6 bits of the
                // first byte below 62, i.e. the byte below 248, drawn uniformly.
                raw[0] = st.below(248) as u8;
                for b in &mut raw[1..] {
                    *b = st.next_byte();
                }
                s = STANDARD.encode(raw);
            }
            Exchange::Bybit => st.push_chars(ALNUM, 36, &mut s),
        }
        s
    }

    fn passphrase(&self, exchange: Exchange, id: Uuid) -> Option<String> {
        let mut st = self.stream(exchange, id, "passphrase");
        match exchange {
            Exchange::Kucoin => Some(human_passphrase(&mut st, false)),
            Exchange::Okx => Some(human_passphrase(&mut st, true)),
            Exchange::CoinbaseExchange => {
                // *unverified*: Coinbase Pro generated a passphrase of about 11
                // lower-case alphanumerics when the user did not pick one.
                let mut s = String::with_capacity(11);
                st.push_chars(LOWER_ALNUM, 11, &mut s);
                Some(s)
            }
            Exchange::Binance | Exchange::Coinbase | Exchange::Kraken | Exchange::Bybit => None,
        }
    }
}

/// Unix seconds of a believable creation time: the canary id's timestamp minus an
/// offset uniform in [1 day, 120 days], so keys look recent and never from the future.
fn kucoin_created_at(st: &mut ByteStream, id: Uuid) -> u32 {
    let base = id
        .get_timestamp()
        .map_or(FALLBACK_CREATED_AT, |t| t.to_unix().0);
    let span = u32::try_from(KUCOIN_MAX_AGE - KUCOIN_MIN_AGE + 1).expect("120 days fit in u32");
    let offset = KUCOIN_MIN_AGE + u64::from(st.below(span));
    // ObjectId time is 32 bits; past 2106 saturate rather than wrap into the past.
    u32::try_from(base.saturating_sub(offset)).unwrap_or(u32::MAX)
}

/// Something a person might type when asked for a passphrase: a capitalised word, a
/// word, 2-4 digits and (optionally, or always when `symbol`) one of `!@#$%*`.
/// Length 8-21, printable ASCII, no spaces; has upper, lower and digit.
fn human_passphrase(st: &mut ByteStream, symbol: bool) -> String {
    let mut s = String::with_capacity(24);
    let first = *st.pick(WORDS);
    let mut chars = first.chars();
    if let Some(c) = chars.next() {
        s.push(c.to_ascii_uppercase());
        s.push_str(chars.as_str());
    }
    let second = *st.pick(WORDS);
    s.push_str(second);
    let digits = 2 + st.below(3) as usize;
    st.push_chars(DIGITS, digits, &mut s);
    if symbol || st.below(2) == 1 {
        st.push_chars(PASSPHRASE_SYMBOLS, 1, &mut s);
    }
    s
}

/// DER of a SEC1 `ECPrivateKey` for P-256 without the 32-byte scalar and the 65-byte
/// public point: version 1, the scalar, `[0]` namedCurve prime256v1, `[1]` public key.
/// Written out because Coinbase's downloads carry the curve OID (DER starts
/// `MHcCAQEE` in base64) and Go's `x509.ParseECPrivateKey` (used by trufflehog)
/// rejects keys without it, while `p256::SecretKey::to_sec1_pem` 0.13 omits it.
const SEC1_HEAD: [u8; 7] = [0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
const SEC1_MID: [u8; 17] = [
    0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
    0x07, // [0] OID 1.2.840.10045.3.1.7
    0xa1, 0x44, 0x03, 0x42, 0x00, // [1] BIT STRING, 66 bytes, no unused bits
];

/// A P-256 private key as Coinbase's key download has it: SEC1 PEM with LF line
/// endings, 64-char lines, public key included.
fn coinbase_ec_pem(st: &mut ByteStream) -> String {
    // A 32-byte string is a valid scalar unless it is 0 or >= n (about 2^-32): then
    // take the next 32 bytes of the stream.
    let secret = loop {
        if let Ok(k) = p256::SecretKey::from_slice(&st.bytes::<32>()) {
            break k;
        }
    };
    let point = secret.public_key().to_encoded_point(false);
    let mut der = Vec::with_capacity(121);
    der.extend_from_slice(&SEC1_HEAD);
    der.extend_from_slice(&secret.to_bytes());
    der.extend_from_slice(&SEC1_MID);
    der.extend_from_slice(point.as_bytes());
    debug_assert_eq!(der.len(), 121);
    let b64 = STANDARD.encode(&der);
    let mut pem = String::with_capacity(240);
    pem.push_str("-----BEGIN EC PRIVATE KEY-----\n");
    for (i, c) in b64.chars().enumerate() {
        if i > 0 && i % 64 == 0 {
            pem.push('\n');
        }
        pem.push(c);
    }
    pem.push_str("\n-----END EC PRIVATE KEY-----\n");
    pem
}
