//! Shapes of each exchange's credentials (no key needed), and the alphabets and tag
//! layout the derivation uses.
//!
//! The shape checks accept what the exchange issues, not only what keytrap mints:
//! they answer "does this look like a key of exchange X", which the trap also needs
//! for real-looking "malformed key" errors.

use base64::Engine as _;

use crate::Exchange;

/// `[A-Za-z0-9]`: Binance and Bybit keys and secrets.
pub(crate) const ALNUM: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Standard base64 alphabet; its first 62 chars are the alphanumerics.
pub(crate) const BASE64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Lower-case hex digits.
pub(crate) const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
/// Upper-case hex digits (OKX secrets).
pub(crate) const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
/// Lower-case alphanumerics (Coinbase Exchange generated passphrases).
pub(crate) const LOWER_ALNUM: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Prefix and infix of a Coinbase CDP key name: `organizations/{uuid}/apiKeys/{uuid}`.
pub(crate) const COINBASE_ORG_PREFIX: &str = "organizations/";
pub(crate) const COINBASE_KEYS_INFIX: &str = "/apiKeys/";
/// Length of a Coinbase CDP key name.
pub(crate) const COINBASE_KEY_LEN: usize = 14 + 36 + 9 + 36;

/// Where the recognition tag sits in each exchange's API key: always the last
/// `len` characters, drawn uniformly from `alphabet`. Everything before it is the
/// MAC input.
#[derive(Clone, Copy)]
pub(crate) struct TagLayout {
    pub len: usize,
    pub alphabet: &'static [u8],
}

/// The tag layout per exchange. Every tag gives at least 32 bits, so a random key of
/// the right shape passes with probability at most 2^-32.
pub(crate) fn tag_layout(exchange: Exchange) -> TagLayout {
    match exchange {
        // 62^8 ~ 2^47.6
        Exchange::Binance => TagLayout {
            len: 8,
            alphabet: ALNUM,
        },
        // 16^8 = 2^32; the UUID tags sit in the last group, clear of the version and
        // variant nibbles.
        Exchange::Kucoin | Exchange::Coinbase | Exchange::CoinbaseExchange | Exchange::Okx => {
            TagLayout {
                len: 8,
                alphabet: HEX_LOWER,
            }
        }
        // 64^8 = 2^48
        Exchange::Kraken => TagLayout {
            len: 8,
            alphabet: BASE64,
        },
        // 62^6 ~ 2^35.7
        Exchange::Bybit => TagLayout {
            len: 6,
            alphabet: ALNUM,
        },
    }
}

/// Length of each exchange's API key. All distinct, so the length alone names the only
/// exchange a key can belong to.
pub(crate) fn key_len(exchange: Exchange) -> usize {
    match exchange {
        Exchange::Binance => 64,
        Exchange::Kucoin => 24,
        Exchange::Coinbase => COINBASE_KEY_LEN,
        Exchange::CoinbaseExchange => 32,
        Exchange::Okx => 36,
        Exchange::Kraken => 56,
        Exchange::Bybit => 18,
    }
}

/// The only exchange whose key format a key of this length could match.
pub(crate) fn exchange_for_len(len: usize) -> Option<Exchange> {
    match len {
        64 => Some(Exchange::Binance),
        24 => Some(Exchange::Kucoin),
        COINBASE_KEY_LEN => Some(Exchange::Coinbase),
        32 => Some(Exchange::CoinbaseExchange),
        36 => Some(Exchange::Okx),
        56 => Some(Exchange::Kraken),
        18 => Some(Exchange::Bybit),
        _ => None,
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

fn all(s: &[u8], len: usize, pred: impl Fn(u8) -> bool) -> bool {
    s.len() == len && s.iter().all(|&b| pred(b))
}

/// `8-4-4-4-12` lower-case hex (any version; real keys are v4, the tag covers that).
pub(crate) fn is_lower_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => is_lower_hex(b),
        })
}

fn is_coinbase_key_name(s: &[u8]) -> bool {
    let org = COINBASE_ORG_PREFIX.len();
    let infix = org + 36;
    let second = infix + COINBASE_KEYS_INFIX.len();
    s.len() == COINBASE_KEY_LEN
        && s.starts_with(COINBASE_ORG_PREFIX.as_bytes())
        && is_lower_uuid(&s[org..infix])
        && &s[infix..second] == COINBASE_KEYS_INFIX.as_bytes()
        && is_lower_uuid(&s[second..])
}

/// Does `api_key` have the shape of an API key of `exchange`?
///
/// binance: 64 `[A-Za-z0-9]`; kucoin: 24 lower hex; coinbase:
/// `organizations/{uuid}/apiKeys/{uuid}`; coinbase-exchange: 32 lower hex; okx: a
/// lower-case UUID; kraken: 56 chars of the standard base64 alphabet (no padding);
/// bybit: 18 `[A-Za-z0-9]`. Exact match: no surrounding whitespace.
pub fn matches_key_format(exchange: Exchange, api_key: &str) -> bool {
    let s = api_key.as_bytes();
    match exchange {
        Exchange::Binance => all(s, 64, |b| b.is_ascii_alphanumeric()),
        Exchange::Kucoin => all(s, 24, is_lower_hex),
        Exchange::Coinbase => is_coinbase_key_name(s),
        Exchange::CoinbaseExchange => all(s, 32, is_lower_hex),
        Exchange::Okx => is_lower_uuid(s),
        Exchange::Kraken => all(s, 56, is_base64_char),
        Exchange::Bybit => all(s, 18, |b| b.is_ascii_alphanumeric()),
    }
}

/// Standard base64 with padding that decodes to exactly `bytes` bytes.
fn is_base64_of(s: &str, bytes: usize) -> bool {
    s.len() == bytes.div_ceil(3) * 4
        && base64::engine::general_purpose::STANDARD
            .decode(s)
            .is_ok_and(|d| d.len() == bytes)
}

/// Does `api_secret` have the shape of an API secret of `exchange`?
///
/// binance: 64 `[A-Za-z0-9]`; kucoin: a lower-case UUID; coinbase: a SEC1 PEM
/// (`-----BEGIN EC PRIVATE KEY-----`) of a P-256 key that parses; coinbase-exchange
/// and kraken: standard base64 of 64 bytes (88 chars); okx: 32 upper-case hex;
/// bybit: 36 `[A-Za-z0-9]`.
pub fn matches_secret_format(exchange: Exchange, api_secret: &str) -> bool {
    let s = api_secret.as_bytes();
    match exchange {
        Exchange::Binance => all(s, 64, |b| b.is_ascii_alphanumeric()),
        Exchange::Kucoin => is_lower_uuid(s),
        Exchange::Coinbase => p256::SecretKey::from_sec1_pem(api_secret).is_ok(),
        Exchange::CoinbaseExchange | Exchange::Kraken => is_base64_of(api_secret, 64),
        Exchange::Okx => all(s, 32, is_upper_hex),
        Exchange::Bybit => all(s, 36, |b| b.is_ascii_alphanumeric()),
    }
}

/// Does `passphrase` fit what `exchange` accepts as an API passphrase? Always false
/// for exchanges without one.
///
/// kucoin: 7-32 printable ASCII without spaces; okx: 8-32 printable ASCII with an
/// upper-case letter, a lower-case letter, a digit and a special char; coinbase-exchange:
/// 1-32 printable ASCII without spaces (user-chosen).
pub fn matches_passphrase_format(exchange: Exchange, passphrase: &str) -> bool {
    let s = passphrase.as_bytes();
    let printable =
        |min: usize| (min..=32).contains(&s.len()) && s.iter().all(|&b| b.is_ascii_graphic());
    match exchange {
        Exchange::Kucoin => printable(7),
        Exchange::CoinbaseExchange => printable(1),
        Exchange::Okx => {
            printable(8)
                && s.iter().any(u8::is_ascii_uppercase)
                && s.iter().any(u8::is_ascii_lowercase)
                && s.iter().any(u8::is_ascii_digit)
                && s.iter().any(u8::is_ascii_punctuation)
        }
        Exchange::Binance | Exchange::Coinbase | Exchange::Kraken | Exchange::Bybit => false,
    }
}
