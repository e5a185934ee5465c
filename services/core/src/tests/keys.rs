//! Master key parsing, sub-key separation and redacted Debug output.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;

use super::{fixed_keys, v7_id};
use crate::{DetectionKey, Exchange, KeyError, MasterKey};

const BYTES: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0xff,
];

fn same(a: &MasterKey, b: &MasterKey) -> bool {
    a.to_base64() == b.to_base64()
}

#[test]
fn master_key_parses_base64_and_hex() {
    let expected = MasterKey::from_bytes(BYTES);
    let padded = STANDARD.encode(BYTES);
    assert_eq!(padded.len(), 44);
    assert_eq!(expected.to_base64(), padded);
    let unpadded = STANDARD_NO_PAD.encode(BYTES);
    let lower = hex::encode(BYTES);
    let upper = lower.to_uppercase();
    for text in [
        padded.clone(),
        unpadded,
        lower,
        upper,
        format!("  {padded}\n"),
    ] {
        let k = MasterKey::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(same(&k, &expected), "{text:?}");
    }
    let d = DetectionKey::parse(&hex::encode(BYTES)).unwrap();
    assert_eq!(d.to_base64(), padded);
}

#[test]
fn master_key_rejects_wrong_lengths_and_encodings_clearly() {
    let short = STANDARD.encode([1u8; 31]); // 44 chars, but 31 bytes
    let long = STANDARD.encode([1u8; 34]); // 48 chars
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "got 0 characters"),
        ("abc".into(), "got 3 characters"),
        (hex::encode([1u8; 31]), "got 62 characters"),
        (hex::encode([1u8; 33]), "got 66 characters"),
        (long, "got 48 characters"),
        (short, "not valid base64 of 32 bytes"),
        ("!".repeat(44), "not valid base64"),
        ("g".repeat(64), "not valid hex"),
    ];
    for (text, fragment) in cases {
        let err = MasterKey::parse(&text).expect_err(&text);
        let msg = err.to_string();
        assert!(msg.starts_with("master key "), "{msg}");
        assert!(
            msg.contains("32 bytes as base64 (44 chars) or hex (64 chars)"),
            "{msg}"
        );
        assert!(
            msg.contains(fragment),
            "{msg:?} should contain {fragment:?}"
        );
        // The message never echoes the input (it could be a real key with a typo).
        if text.len() > 8 {
            assert!(!msg.contains(&text), "{msg}");
        }
    }
    assert!(matches!(
        MasterKey::parse("abc"),
        Err(KeyError::Length { len: 3, .. })
    ));
    let err = DetectionKey::parse("nope").expect_err("too short");
    assert!(err.to_string().starts_with("detection key "), "{err}");
}

#[test]
fn generated_master_keys_are_random() {
    let a = MasterKey::generate();
    let b = MasterKey::generate();
    assert!(!same(&a, &b));
    assert_ne!(a.keys().key_check(), b.keys().key_check());
}

#[test]
fn sub_keys_are_deterministic_and_separated() {
    let k1 = MasterKey::from_bytes(BYTES).keys();
    let k2 = MasterKey::from_bytes(BYTES).keys();
    let other = MasterKey::from_bytes([9; 32]).keys();

    assert_eq!(k1.key_check(), k2.key_check());
    assert_ne!(k1.key_check(), other.key_check());
    assert_eq!(k1.webhook_encryption_key(), k2.webhook_encryption_key());
    assert_ne!(k1.webhook_encryption_key(), other.webhook_encryption_key());
    assert_eq!(k1.token_digest("kt_abc"), k2.token_digest("kt_abc"));
    assert_ne!(k1.token_digest("kt_abc"), k1.token_digest("kt_abd"));
    assert_ne!(k1.token_digest("kt_abc"), other.token_digest("kt_abc"));

    let key = k1.api_key(Exchange::Binance, v7_id(1));
    let digest = k1.lookup_digest(Exchange::Binance, &key);
    assert_eq!(digest, k2.lookup_digest(Exchange::Binance, &key));
    assert_ne!(digest, k1.lookup_digest(Exchange::Bybit, &key));
    assert_ne!(digest, other.lookup_digest(Exchange::Binance, &key));
    assert_ne!(digest, k1.lookup_digest(Exchange::Binance, &key[1..]));

    // No two purposes share a key: all derived values differ.
    let values = [
        k1.key_check(),
        k1.webhook_encryption_key(),
        k1.token_digest(""),
        k1.lookup_digest(Exchange::Binance, ""),
        STANDARD
            .decode(k1.detection_key().to_base64())
            .unwrap()
            .try_into()
            .unwrap(),
    ];
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(a, b);
        }
        assert_ne!(a, &BYTES);
    }
}

#[test]
fn debug_output_never_shows_secret_material() {
    let master = MasterKey::from_bytes(BYTES);
    let keys = master.keys();
    let detection = keys.detection_key();
    assert_eq!(format!("{master:?}"), "MasterKey(..)");
    assert_eq!(format!("{keys:?}"), "Keys(..)");
    assert_eq!(format!("{detection:?}"), "DetectionKey(..)");
    assert_eq!(format!("{:#?}", keys), "Keys(..)");

    for exchange in Exchange::ALL {
        let c = keys.credentials(exchange, v7_id(3));
        let debug = format!("{c:?} {c:#?}");
        assert!(debug.contains(&c.api_key), "{debug}");
        assert!(!debug.contains(&c.api_secret), "{debug}");
        // Any 12-char piece of the secret would be a leak too.
        for piece in c.api_secret.as_bytes().chunks(12) {
            let piece = std::str::from_utf8(piece).unwrap();
            if piece.len() == 12 && !piece.contains("-----") {
                assert!(!debug.contains(piece), "{debug}");
            }
        }
        if let Some(p) = &c.passphrase {
            assert!(!debug.contains(p.as_str()), "{debug}");
            assert!(
                debug.contains("passphrase: Some(\"<redacted>\")"),
                "{debug}"
            );
        } else {
            assert!(debug.contains("passphrase: None"), "{debug}");
        }
    }
}

#[test]
fn keys_and_detection_keys_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<crate::Keys>();
    assert_send_sync::<DetectionKey>();
    let keys = fixed_keys();
    let handle = std::thread::spawn(move || keys.api_key(Exchange::Okx, v7_id(5)));
    let key = handle.join().unwrap();
    assert_eq!(key, fixed_keys().api_key(Exchange::Okx, v7_id(5)));
}

#[test]
fn credentials_for_a_presented_key_are_the_canarys_credentials() {
    let keys = MasterKey::from_bytes(BYTES).keys();
    for exchange in Exchange::ALL {
        for n in 0..5 {
            let id = v7_id(n);
            let c = keys.credentials(exchange, id);
            assert_eq!(keys.credentials_for_key(exchange, id, &c.api_key), c);
            // Another canary's secret for the same key: the key is taken as presented.
            let other = keys.credentials_for_key(exchange, v7_id(n + 100), &c.api_key);
            assert_eq!(other.api_key, c.api_key);
            assert_ne!(other.api_secret, c.api_secret, "{exchange:?}");
        }
    }
}
