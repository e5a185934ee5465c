//! Formats, determinism and recognition of minted credentials.

use std::collections::HashSet;
use std::str::FromStr;

use uuid::Uuid;

use super::{fixed_keys, format_regexes, random_key, seeded_rng, v7_id};
use crate::{
    matches_key_format, matches_passphrase_format, matches_secret_format, Credentials, Exchange,
    MasterKey,
};

/// Coinbase secrets need an EC scalar multiplication each, so fewer of them.
fn sample_count(exchange: Exchange) -> u64 {
    if exchange == Exchange::Coinbase {
        50
    } else {
        300
    }
}

#[test]
fn minted_credentials_match_the_exchange_formats() {
    let keys = fixed_keys();
    for exchange in Exchange::ALL {
        let (key_re, secret_re, pass_re) = format_regexes(exchange);
        for i in 0..sample_count(exchange) {
            let c = keys.credentials(exchange, v7_id(i));
            assert!(
                key_re.is_match(&c.api_key),
                "{exchange} key {:?}",
                c.api_key
            );
            assert!(secret_re.is_match(&c.api_secret), "{exchange} secret {i}");
            assert!(matches_key_format(exchange, &c.api_key), "{exchange}");
            assert!(matches_secret_format(exchange, &c.api_secret), "{exchange}");
            assert_eq!(c.api_key, keys.api_key(exchange, v7_id(i)));
            assert_eq!(c.passphrase.is_some(), exchange.has_passphrase());
            match (&pass_re, &c.passphrase) {
                (Some(re), Some(p)) => {
                    assert!(re.is_match(p), "{exchange} passphrase {p:?}");
                    assert!(matches_passphrase_format(exchange, p), "{exchange} {p:?}");
                    assert!((7..=32).contains(&p.len()));
                    assert!(p.bytes().all(|b| b.is_ascii_graphic()));
                }
                (None, None) => {}
                _ => panic!("{exchange}: passphrase presence differs from the format"),
            }
            if exchange == Exchange::Okx {
                let p = c.passphrase.as_deref().unwrap_or_default();
                assert!((8..=32).contains(&p.len()));
                assert_eq!(p.bytes().filter(u8::is_ascii_punctuation).count(), 1);
                assert!(p.bytes().any(|b| b.is_ascii_uppercase()));
                assert!(p.bytes().any(|b| b.is_ascii_lowercase()));
                assert!(p.bytes().any(|b| b.is_ascii_digit()));
            }
        }
    }
}

#[test]
fn kucoin_passphrases_sometimes_carry_a_symbol() {
    let keys = fixed_keys();
    let with_symbol = (0..200)
        .filter_map(|i| keys.credentials(Exchange::Kucoin, v7_id(i)).passphrase)
        .filter(|p| p.bytes().any(|b| b.is_ascii_punctuation()))
        .count();
    assert!((50..150).contains(&with_symbol), "{with_symbol} of 200");
}

#[test]
fn derivation_is_deterministic() {
    let master = *b"another fixed master key, 32 b.!";
    for exchange in Exchange::ALL {
        let id = Uuid::now_v7();
        let a = MasterKey::from_bytes(master)
            .keys()
            .credentials(exchange, id);
        let b = MasterKey::from_bytes(master)
            .keys()
            .credentials(exchange, id);
        // Through the text form too, as after a restart.
        let reparsed = MasterKey::parse(&MasterKey::from_bytes(master).to_base64())
            .expect("own base64 parses");
        let c = reparsed.keys().credentials(exchange, id);
        assert_eq!(a, b, "{exchange}");
        assert_eq!(a, c, "{exchange}");
    }
}

#[test]
fn different_ids_exchanges_and_master_keys_give_different_credentials() {
    let keys = fixed_keys();
    let other = MasterKey::from_bytes([0x42; 32]).keys();
    let mut seen = HashSet::new();
    for exchange in Exchange::ALL {
        for i in 0..20 {
            let id = v7_id(i);
            for c in [
                keys.credentials(exchange, id),
                other.credentials(exchange, id),
            ] {
                // Human passphrases may repeat by chance (checked below); keys and
                // secrets never.
                for f in [c.api_key, c.api_secret] {
                    assert!(seen.insert(f.clone()), "{exchange} repeated a field: {f:?}");
                }
            }
        }
    }
    // Kraken and Coinbase Exchange secrets share a format: same id, other bytes.
    let id = v7_id(7);
    assert_ne!(
        keys.credentials(Exchange::Kraken, id).api_secret[1..],
        keys.credentials(Exchange::CoinbaseExchange, id).api_secret[1..]
    );
    // Passphrases: mostly distinct across ids and master keys.
    for exchange in [Exchange::Kucoin, Exchange::Okx, Exchange::CoinbaseExchange] {
        let mut set = HashSet::new();
        for i in 0..100 {
            set.extend(keys.credentials(exchange, v7_id(i)).passphrase);
            set.extend(other.credentials(exchange, v7_id(i)).passphrase);
        }
        assert!(
            set.len() >= 195,
            "{exchange}: {} distinct of 200",
            set.len()
        );
    }
}

#[test]
fn is_canary_recognises_minted_keys_and_names_the_exchange() {
    let keys = fixed_keys();
    let detection = keys.detection_key();
    // A detection key passed around as text works the same.
    let reparsed = crate::DetectionKey::parse(&detection.to_base64()).expect("parses");
    for exchange in Exchange::ALL {
        for i in 0..500 {
            let key = keys.api_key(exchange, v7_id(i));
            assert_eq!(detection.is_canary(&key), Some(exchange), "{key}");
            assert_eq!(reparsed.is_canary(&key), Some(exchange), "{key}");
            for other in Exchange::ALL {
                assert_eq!(detection.is_canary_for(other, &key), other == exchange);
            }
        }
    }
}

/// 100,000 random keys of the exchange's format: none is taken for a canary.
fn random_keys_are_not_canaries(exchange: Exchange) {
    let detection = fixed_keys().detection_key();
    let mut rng = seeded_rng(0x6b65_7974_7261_7000 ^ exchange as u64);
    let mut key = String::new();
    for _ in 0..100_000 {
        random_key(exchange, &mut rng, &mut key);
        assert!(matches_key_format(exchange, &key), "{key}");
        assert_eq!(detection.is_canary(&key), None, "{key}");
    }
}

// One test per exchange so the harness spreads them over the cores.
macro_rules! random_key_tests {
    ($($name:ident => $exchange:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            random_keys_are_not_canaries(Exchange::$exchange);
        }
    )*};
}

random_key_tests! {
    random_binance_keys_are_not_canaries => Binance,
    random_kucoin_keys_are_not_canaries => Kucoin,
    random_coinbase_keys_are_not_canaries => Coinbase,
    random_coinbase_exchange_keys_are_not_canaries => CoinbaseExchange,
    random_okx_keys_are_not_canaries => Okx,
    random_kraken_keys_are_not_canaries => Kraken,
    random_bybit_keys_are_not_canaries => Bybit,
}

#[test]
fn keys_minted_under_another_master_key_are_not_canaries() {
    let detection = fixed_keys().detection_key();
    let other = MasterKey::generate().keys();
    for exchange in Exchange::ALL {
        for i in 0..1000 {
            let key = other.api_key(exchange, v7_id(i));
            assert_eq!(detection.is_canary(&key), None, "{key}");
            assert!(!detection.is_canary_for(exchange, &key));
        }
    }
}

#[test]
fn changing_any_single_character_breaks_recognition() {
    let keys = fixed_keys();
    let detection = keys.detection_key();
    let replacements: Vec<char> =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ "
            .chars()
            .collect();
    for exchange in Exchange::ALL {
        for i in 0..3 {
            let key = keys.api_key(exchange, v7_id(i));
            let mut chars: Vec<char> = key.chars().collect();
            for pos in 0..chars.len() {
                let original = chars[pos];
                for &r in replacements.iter().filter(|&&r| r != original) {
                    chars[pos] = r;
                    let mutated: String = chars.iter().collect();
                    assert_eq!(detection.is_canary(&mutated), None, "{mutated}");
                }
                chars[pos] = original;
            }
            // Whitespace around the key or a truncated key is not the key.
            assert_eq!(detection.is_canary(&format!(" {key}")), None);
            assert_eq!(detection.is_canary(&key[..key.len() - 1]), None);
            assert_eq!(detection.is_canary(&key.to_uppercase()), None);
        }
    }
}

#[test]
fn exchange_ids_names_and_parsing() {
    let ids: Vec<&str> = Exchange::ALL.iter().map(|e| e.as_str()).collect();
    assert_eq!(
        ids,
        [
            "binance",
            "kucoin",
            "coinbase",
            "coinbase-exchange",
            "okx",
            "kraken",
            "bybit"
        ]
    );
    for e in Exchange::ALL {
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, format!("\"{}\"", e.as_str()));
        assert_eq!(serde_json::from_str::<Exchange>(&json).unwrap(), e);
        assert_eq!(e.to_string(), e.as_str());
        assert_eq!(Exchange::from_str(e.as_str()).unwrap(), e);
        assert_eq!(Exchange::from_str(&e.as_str().to_uppercase()).unwrap(), e);
    }
    let names: Vec<&str> = Exchange::ALL.iter().map(|e| e.display_name()).collect();
    assert_eq!(
        names,
        [
            "Binance",
            "KuCoin",
            "Coinbase Advanced Trade",
            "Coinbase Exchange",
            "OKX",
            "Kraken",
            "Bybit"
        ]
    );
    let with_passphrase: Vec<Exchange> = Exchange::ALL
        .into_iter()
        .filter(|e| e.has_passphrase())
        .collect();
    assert_eq!(
        with_passphrase,
        [Exchange::Kucoin, Exchange::CoinbaseExchange, Exchange::Okx]
    );
    // The OpenAPI schema lists exactly the ids.
    let schema = serde_json::to_value(<Exchange as utoipa::PartialSchema>::schema()).unwrap();
    assert_eq!(schema["enum"], serde_json::json!(ids), "{schema}");
    let schema = serde_json::to_value(<Credentials as utoipa::PartialSchema>::schema()).unwrap();
    assert_eq!(
        schema["required"],
        serde_json::json!(["api_key", "api_secret"]),
        "{schema}"
    );
    let err = Exchange::from_str("bitmex").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown exchange \"bitmex\"; expected one of binance, kucoin, coinbase, coinbase-exchange, okx, kraken, bybit"
    );
    assert!(Exchange::from_str("coinbase_exchange").is_err());
    assert!(serde_json::from_str::<Exchange>("\"coinbaseexchange\"").is_err());
}

#[test]
fn credentials_serialize_without_an_absent_passphrase() {
    let keys = fixed_keys();
    let c = keys.credentials(Exchange::Binance, v7_id(1));
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2);
    assert!(v.get("passphrase").is_none());
    let back: Credentials = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);

    let c = keys.credentials(Exchange::Okx, v7_id(1));
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["passphrase"].as_str(), c.passphrase.as_deref());
    assert_eq!(serde_json::from_value::<Credentials>(v).unwrap(), c);
}

#[test]
fn shape_checks_reject_near_misses() {
    let keys = fixed_keys();
    for exchange in Exchange::ALL {
        let key = keys.api_key(exchange, v7_id(9));
        assert!(!matches_key_format(exchange, ""));
        assert!(!matches_key_format(exchange, &format!("{key} ")));
        assert!(!matches_key_format(exchange, &format!("{key}A")));
        for other in Exchange::ALL.into_iter().filter(|&o| o != exchange) {
            assert!(!matches_key_format(other, &key), "{key} as {other}");
        }
    }
    // Case matters where the exchange uses one case.
    let kucoin = keys.api_key(Exchange::Kucoin, v7_id(1));
    assert!(!matches_key_format(
        Exchange::Kucoin,
        &kucoin.to_uppercase()
    ));
    let okx_secret = keys.credentials(Exchange::Okx, v7_id(1)).api_secret;
    assert!(!matches_secret_format(
        Exchange::Okx,
        &okx_secret.to_lowercase()
    ));
    // A Coinbase PEM must parse, not just look like one.
    let pem = keys.credentials(Exchange::Coinbase, v7_id(1)).api_secret;
    assert!(!matches_secret_format(
        Exchange::Coinbase,
        &pem.replace("MHcC", "MHcD")
    ));
    assert!(!matches_secret_format(Exchange::Kraken, "QUJD"));
    // Passphrases: none for Binance; OKX needs all four classes.
    assert!(!matches_passphrase_format(Exchange::Binance, "Secret123!"));
    assert!(matches_passphrase_format(Exchange::Okx, "Secret123!"));
    assert!(!matches_passphrase_format(Exchange::Okx, "Secret1234"));
    assert!(!matches_passphrase_format(Exchange::Kucoin, "short1"));
    assert!(!matches_passphrase_format(Exchange::Kucoin, "has space 1"));
}

/// Timing, not a pass/fail check: `cargo test -p keytrap-core --release -- --ignored
/// --nocapture is_canary_timing`.
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn is_canary_timing() {
    let keys = fixed_keys();
    let detection = keys.detection_key();
    let mut rng = seeded_rng(7);
    for exchange in Exchange::ALL {
        let minted: Vec<String> = (0..1000)
            .map(|i| keys.api_key(exchange, v7_id(i)))
            .collect();
        let mut random = String::new();
        random_key(exchange, &mut rng, &mut random);
        let rounds = 200u32;
        let start = std::time::Instant::now();
        let mut hits = 0usize;
        for _ in 0..rounds {
            for key in &minted {
                hits += usize::from(std::hint::black_box(&detection).is_canary(key).is_some());
            }
        }
        let per_minted = start.elapsed() / (rounds * 1000);
        let start = std::time::Instant::now();
        for _ in 0..rounds * 1000 {
            hits += usize::from(detection.is_canary(std::hint::black_box(&random)).is_some());
        }
        let per_random = start.elapsed() / (rounds * 1000);
        assert_eq!(hits, rounds as usize * 1000);
        println!("{exchange:>18}: is_canary {per_minted:?}/minted key, {per_random:?}/random key");
    }
}
