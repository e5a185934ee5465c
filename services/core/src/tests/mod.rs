//! Tests of derivation, formats, recognition, scanner rules and uniformity.
#![allow(clippy::unwrap_used)]

mod formats;
mod keys;
mod kucoin_time;
mod render;
mod scanners;
mod uniformity;

use rand::{Rng, SeedableRng};
use regex::Regex;
use uuid::Uuid;

use crate::format::{ALNUM, BASE64, HEX_LOWER};
use crate::{Exchange, Keys, MasterKey};

/// A fixed master key, so statistical tests are reproducible.
pub(crate) fn fixed_keys() -> Keys {
    MasterKey::from_bytes(*b"keytrap test master key 32 bytes").keys()
}

/// splitmix64: cheap deterministic bytes for test ids.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The i-th deterministic UUIDv7, spread over 2025 like real mint times.
pub(crate) fn v7_id(i: u64) -> Uuid {
    let millis = 1_735_689_600_000 + (mix(i) % 31_536_000_000);
    let a = mix(i ^ 0x5555).to_be_bytes();
    let b = mix(i ^ 0xaaaa).to_be_bytes();
    let rand_bytes = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1]];
    uuid::Builder::from_unix_timestamp_millis(millis, &rand_bytes).into_uuid()
}

const UUID4: &str = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}";

/// Format regexes (anchored) for key, secret and passphrase of each exchange, written
/// from exchanges.md independently of `format.rs`.
pub(crate) fn format_regexes(exchange: Exchange) -> (Regex, Regex, Option<Regex>) {
    let re = |s: &str| Regex::new(&format!("^(?:{s})$")).unwrap();
    match exchange {
        Exchange::Binance => (re("[A-Za-z0-9]{64}"), re("[A-Za-z0-9]{64}"), None),
        Exchange::Kucoin => (
            re("[0-9a-f]{24}"),
            re(UUID4),
            Some(re("[A-Z][a-z]{2,7}[a-z]{3,8}[0-9]{2,4}[!@#$%*]?")),
        ),
        Exchange::Coinbase => (
            re(&format!("organizations/{UUID4}/apiKeys/{UUID4}")),
            re("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE[A-Za-z0-9+/]{56}\n[A-Za-z0-9+/]{64}\n[A-Za-z0-9+/]{34}==\n-----END EC PRIVATE KEY-----\n"),
            None,
        ),
        Exchange::CoinbaseExchange => (
            re("[0-9a-f]{32}"),
            re("[A-Za-z0-9+/]{86}=="),
            Some(re("[a-z0-9]{11}")),
        ),
        Exchange::Okx => (
            re(UUID4),
            re("[0-9A-F]{32}"),
            Some(re("[A-Z][a-z]{2,7}[a-z]{3,8}[0-9]{2,4}[!@#$%*]")),
        ),
        Exchange::Kraken => (
            re("[A-Za-z0-9][A-Za-z0-9+/]{55}"),
            re("[A-Za-z0-9][A-Za-z0-9+/]{85}=="),
            None,
        ),
        Exchange::Bybit => (re("[A-Za-z0-9]{18}"), re("[A-Za-z0-9]{36}"), None),
    }
}

fn push_random(rng: &mut impl Rng, alphabet: &[u8], n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(char::from(alphabet[rng.random_range(0..alphabet.len())]));
    }
}

fn random_uuid_v4(rng: &mut impl Rng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// A random key of the exchange's format, as a real exchange would issue it.
pub(crate) fn random_key(exchange: Exchange, rng: &mut impl Rng, out: &mut String) {
    out.clear();
    match exchange {
        Exchange::Binance => push_random(rng, ALNUM, 64, out),
        Exchange::Kucoin => push_random(rng, HEX_LOWER, 24, out),
        Exchange::Coinbase => {
            out.push_str("organizations/");
            out.push_str(&random_uuid_v4(rng));
            out.push_str("/apiKeys/");
            out.push_str(&random_uuid_v4(rng));
        }
        Exchange::CoinbaseExchange => push_random(rng, HEX_LOWER, 32, out),
        Exchange::Okx => out.push_str(&random_uuid_v4(rng)),
        Exchange::Kraken => push_random(rng, BASE64, 56, out),
        Exchange::Bybit => push_random(rng, ALNUM, 18, out),
    }
}

pub(crate) fn seeded_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}
