//! No false positives: 1,000,000 random keys of each exchange's format (as a real
//! exchange would issue them) are not canaries. The tag gives at least 32 bits, so
//! the expected number of false positives over the 7,000,000 keys is below 0.002.
#![allow(clippy::unwrap_used)]

use keytrap_core::MasterKey;
use keytrap_sdk::{Detector, Exchange};
use rand::{Rng, SeedableRng};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8] = b"0123456789abcdef";

fn push(rng: &mut impl Rng, alphabet: &[u8], n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(char::from(alphabet[rng.random_range(0..alphabet.len())]));
    }
}

fn uuid4(rng: &mut impl Rng, out: &mut String) {
    let u = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
    out.push_str(
        u.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
}

fn random_key(ex: Exchange, rng: &mut impl Rng, out: &mut String) {
    out.clear();
    match ex {
        Exchange::Binance => push(rng, ALNUM, 64, out),
        Exchange::Kucoin => push(rng, HEX, 24, out),
        Exchange::Coinbase => {
            out.push_str("organizations/");
            uuid4(rng, out);
            out.push_str("/apiKeys/");
            uuid4(rng, out);
        }
        Exchange::CoinbaseExchange => push(rng, HEX, 32, out),
        Exchange::Okx => uuid4(rng, out),
        Exchange::Kraken => push(rng, BASE64, 56, out),
        Exchange::Bybit => push(rng, ALNUM, 18, out),
    }
}

#[test]
fn a_million_random_keys_of_each_format_are_not_canaries() {
    let d = Detector::from_base64(
        &MasterKey::from_bytes([3; 32])
            .keys()
            .detection_key()
            .to_base64(),
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x006b_6579_7472_6170);
    let mut key = String::with_capacity(96);
    for ex in Exchange::ALL {
        let mut shaped = 0u32;
        let mut positives = Vec::new();
        for _ in 0..1_000_000 {
            random_key(ex, &mut rng, &mut key);
            // Every random key has the exchange's shape, so the tag check really runs.
            if keytrap_core::matches_key_format(ex, &key) {
                shaped += 1;
            }
            if d.is_canary(&key).is_some() {
                positives.push(key.clone());
            }
        }
        assert_eq!(shaped, 1_000_000, "{ex}");
        assert!(positives.is_empty(), "{ex}: {positives:?}");
    }
}
