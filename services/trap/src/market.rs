//! Market data and account contents shared by the emulators: a realistic set of spot
//! markets with plausible prices, and balances derived deterministically from the canary
//! id, so repeated calls agree and two canaries do not look alike.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A spot market: base, quote, a plausible last price, price and quantity decimals.
#[derive(Debug, Clone, Copy)]
pub struct Market {
    pub base: &'static str,
    pub quote: &'static str,
    pub price: f64,
    pub price_decimals: u32,
    pub qty_decimals: u32,
}

macro_rules! m {
    ($b:literal, $q:literal, $p:literal, $pd:literal, $qd:literal) => {
        Market {
            base: $b,
            quote: $q,
            price: $p,
            price_decimals: $pd,
            qty_decimals: $qd,
        }
    };
}

/// Markets every emulator lists (each in its own symbol style). Low-cap coins are here on
/// purpose: the 3Commas attackers pumped such pairs.
pub const MARKETS: &[Market] = &[
    m!("BTC", "USDT", 97_250.5, 2, 5),
    m!("ETH", "USDT", 3_412.37, 2, 4),
    m!("BNB", "USDT", 662.4, 2, 3),
    m!("SOL", "USDT", 187.22, 2, 2),
    m!("XRP", "USDT", 2.3174, 4, 1),
    m!("ADA", "USDT", 0.9821, 4, 1),
    m!("DOGE", "USDT", 0.38211, 5, 0),
    m!("TRX", "USDT", 0.2541, 4, 1),
    m!("LINK", "USDT", 24.173, 3, 2),
    m!("DOT", "USDT", 8.412, 3, 2),
    m!("LTC", "USDT", 118.34, 2, 3),
    m!("AVAX", "USDT", 41.27, 2, 2),
    m!("PEPE", "USDT", 0.00002113, 8, 0),
    m!("SHIB", "USDT", 0.00002487, 8, 0),
    m!("VIB", "USDT", 0.0912, 4, 0),
    m!("SYS", "USDT", 0.1487, 4, 0),
    m!("ETH", "BTC", 0.03509, 5, 4),
    m!("SOL", "BTC", 0.001925, 6, 2),
    m!("XRP", "BTC", 0.00002383, 8, 0),
    m!("BTC", "USDC", 97_241.0, 2, 5),
    m!("ETH", "USDC", 3_411.9, 2, 4),
];

/// Currencies with a plausible network list for deposit/withdraw answers.
pub const CURRENCIES: &[(&str, &str, &[&str])] = &[
    ("BTC", "Bitcoin", &["BTC"]),
    ("ETH", "Ethereum", &["ETH", "ARBITRUM"]),
    ("USDT", "Tether USD", &["ETH", "TRX", "BSC", "SOL"]),
    ("USDC", "USD Coin", &["ETH", "SOL"]),
    ("BNB", "BNB", &["BSC"]),
    ("SOL", "Solana", &["SOL"]),
    ("XRP", "XRP", &["XRP"]),
    ("ADA", "Cardano", &["ADA"]),
    ("DOGE", "Dogecoin", &["DOGE"]),
    ("TRX", "TRON", &["TRX"]),
    ("LINK", "Chainlink", &["ETH"]),
    ("DOT", "Polkadot", &["DOT"]),
    ("LTC", "Litecoin", &["LTC"]),
    ("AVAX", "Avalanche", &["AVAXC"]),
    ("PEPE", "Pepe", &["ETH"]),
    ("SHIB", "Shiba Inu", &["ETH"]),
    ("VIB", "Viberate", &["ETH"]),
    ("SYS", "Syscoin", &["SYS"]),
];

/// Formats with exactly `decimals` places (exchanges send fixed-width decimals).
pub fn fixed(v: f64, decimals: u32) -> String {
    // Most fields of an account answer are a positive zero: the same text without the
    // float formatter (about 3% of the trap's CPU per canary answer).
    if v == 0.0 && v.is_sign_positive() && decimals <= 16 {
        const ZEROS: &str = "0.0000000000000000";
        return ZEROS[..if decimals == 0 {
            1
        } else {
            2 + decimals as usize
        }]
            .to_string();
    }
    format!("{v:.*}", decimals as usize)
}

fn mix(id: Uuid, salt: &str) -> u64 {
    // FNV-1a over the id and a salt: cheap, deterministic, not a secret.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes().iter().chain(salt.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A funded-looking portfolio: a few thousand to a few hundred thousand USDT, some BTC
/// and ETH, and two or three smaller holdings, all derived from the canary id.
pub fn balances(canary: Uuid) -> Vec<(&'static str, f64)> {
    let h = mix(canary, "balances");
    let scale = 2_000.0 + (h % 250_000) as f64 + ((h >> 20) % 100) as f64 / 100.0;
    let mut out = vec![
        ("USDT", (scale * 0.42 * 100.0).round() / 100.0),
        ("BTC", ((scale * 0.31 / 97_250.5) * 1e8).round() / 1e8),
        ("ETH", ((scale * 0.17 / 3_412.37) * 1e8).round() / 1e8),
    ];
    let extras = ["SOL", "XRP", "BNB", "DOGE", "LINK", "ADA"];
    for i in 0..(2 + (h >> 40) % 2) as usize {
        let coin = extras[((h >> (8 * i)) % extras.len() as u64) as usize];
        if out.iter().any(|(c, _)| *c == coin) {
            continue;
        }
        let price = MARKETS
            .iter()
            .find(|m| m.base == coin && m.quote == "USDT")
            .map_or(1.0, |m| m.price);
        out.push((coin, ((scale * 0.05 / price) * 1e4).round() / 1e4));
    }
    out
}

/// A deterministic, valid-looking deposit address for a coin and network: the bytes
/// come from SHA-256 of the canary id, coin and network; the encoding is each network's
/// own (base58check with the network's version byte for TRX, DOGE and XRP, bech32 with
/// its checksum for BTC and LTC, 32-byte base58 for SOL), so address validators accept it.
pub fn deposit_address(canary: Uuid, coin: &str, network: &str) -> String {
    let bytes = |n: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 32);
        let mut counter = 0u32;
        while out.len() < n {
            let mut h = Sha256::new();
            h.update(canary.as_bytes());
            h.update(format!("deposit-address/{coin}/{network}/{counter}").as_bytes());
            out.extend_from_slice(&h.finalize());
            counter += 1;
        }
        out.truncate(n);
        out
    };
    match network {
        "TRX" => base58check(0x41, &bytes(20), BITCOIN_B58),
        "DOGE" => base58check(0x1e, &bytes(20), BITCOIN_B58),
        "XRP" => base58check(0x00, &bytes(20), RIPPLE_B58),
        "SOL" => base58(&bytes(32), BITCOIN_B58),
        "BTC" => segwit_v0("bc", &bytes(20)),
        "LTC" => segwit_v0("ltc", &bytes(20)),
        // ETH, BSC, ARBITRUM, AVAXC and anything EVM-like: 20 bytes of hex.
        _ => format!("0x{}", hex::encode(bytes(20))),
    }
}

const BITCOIN_B58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const RIPPLE_B58: &[u8; 58] = b"rpshnaf39wBUDNEGHJKLM4PQRST7VWXYZ2bcdeCg65jkm8oFqi1tuvAxyz";

fn base58(data: &[u8], alphabet: &[u8; 58]) -> String {
    // Repeated division of the big-endian number by 58; leading zero bytes become the
    // alphabet's first character.
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in data {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = data.iter().take_while(|b| **b == 0).count();
    std::iter::repeat_n(alphabet[0] as char, zeros)
        .chain(digits.iter().rev().map(|d| alphabet[*d as usize] as char))
        .collect()
}

fn base58check(version: u8, payload: &[u8], alphabet: &[u8; 58]) -> String {
    let mut v = Vec::with_capacity(payload.len() + 5);
    v.push(version);
    v.extend_from_slice(payload);
    let check = Sha256::digest(Sha256::digest(&v));
    v.extend_from_slice(&check[..4]);
    base58(&v, alphabet)
}

const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(*v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> Vec<u8> {
    let b = hrp.as_bytes();
    b.iter()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(b.iter().map(|c| c & 31))
        .collect()
}

/// A segwit version 0 address (P2WPKH for a 20-byte program), bech32 with checksum.
fn segwit_v0(hrp: &str, program: &[u8]) -> String {
    let mut data = vec![0u8]; // witness version 0
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in program {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            data.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        data.push(((acc << (5 - bits)) & 31) as u8);
    }
    let mut values = hrp_expand(hrp);
    values.extend_from_slice(&data);
    values.extend_from_slice(&[0; 6]);
    let m = bech32_polymod(&values) ^ 1;
    let checksum = (0..6).map(|i| ((m >> (5 * (5 - i))) & 31) as u8);
    let mut s = format!("{hrp}1");
    s.extend(
        data.into_iter()
            .chain(checksum)
            .map(|d| BECH32[d as usize] as char),
    );
    s
}

/// A deterministic numeric order id (exchanges using integers).
pub fn numeric_order_id(canary: Uuid, seq: u64) -> u64 {
    1_000_000_000 + (mix(canary, "orders") % 9_000_000_000) / 1000 * 1000 + seq
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_zero_is_the_float_formatters_text() {
        for d in 0..=20u32 {
            for v in [0.0f64, -0.0, 1e-12, 0.5, 123.456_789_01] {
                assert_eq!(super::fixed(v, d), format!("{v:.*}", d as usize), "{v} {d}");
            }
        }
    }

    use super::*;

    #[test]
    fn balances_are_deterministic_and_differ_between_canaries() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(balances(a), balances(a));
        assert_ne!(balances(a), balances(b));
        assert!(balances(a).iter().all(|(_, v)| *v > 0.0));
        assert!(balances(a)[0].1 > 800.0, "a funded-looking USDT balance");
    }

    #[test]
    fn addresses_look_like_their_network() {
        let id = Uuid::now_v7();
        let eth = deposit_address(id, "USDT", "ETH");
        assert!(eth.starts_with("0x") && eth.len() == 42);
        assert_eq!(eth, deposit_address(id, "USDT", "ETH"));
        assert!(deposit_address(id, "USDT", "TRX").starts_with('T'));
        assert_eq!(deposit_address(id, "USDT", "TRX").len(), 34);
        assert!(deposit_address(id, "BTC", "BTC").starts_with("bc1q"));
    }

    /// Decodes base58 (for the checks below).
    fn unbase58(s: &str, alphabet: &[u8; 58]) -> Vec<u8> {
        let mut bytes: Vec<u8> = Vec::new();
        for c in s.bytes() {
            let mut carry = alphabet.iter().position(|a| *a == c).expect("alphabet") as u32;
            for b in bytes.iter_mut() {
                carry += u32::from(*b) * 58;
                *b = (carry & 0xff) as u8;
                carry >>= 8;
            }
            while carry > 0 {
                bytes.push((carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        let zeros = s.bytes().take_while(|c| *c == alphabet[0]).count();
        std::iter::repeat_n(0, zeros)
            .chain(bytes.into_iter().rev())
            .collect()
    }

    #[test]
    fn addresses_carry_valid_checksums_and_no_repeats() {
        // Known vectors: Bitcoin's genesis address and BIP-173's P2WPKH example.
        assert_eq!(
            base58check(
                0,
                &hex::decode("62e907b15cbf27d5425399ebf6f0fb50ebb88f18").expect("hex"),
                BITCOIN_B58
            ),
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
        );
        assert_eq!(
            segwit_v0(
                "bc",
                &hex::decode("751e76e8199196d454941c45d1b3a323f1433bd6").expect("hex")
            ),
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        );
        for _ in 0..50 {
            let id = Uuid::now_v7();
            for (net, version, alphabet, first) in [
                ("TRX", 0x41u8, BITCOIN_B58, 'T'),
                ("DOGE", 0x1e, BITCOIN_B58, 'D'),
                ("XRP", 0x00, RIPPLE_B58, 'r'),
            ] {
                let a = deposit_address(id, "USDT", net);
                assert!(
                    a.starts_with(first) && (33..=34).contains(&a.len()),
                    "{net} {a}"
                );
                let raw = unbase58(&a, alphabet);
                assert_eq!(raw.len(), 25, "{net} {a}");
                assert_eq!(raw[0], version);
                let check = Sha256::digest(Sha256::digest(&raw[..21]));
                assert_eq!(&raw[21..], &check[..4], "{net} checksum");
                // No repeated 6-character run (the old generator repeated itself).
                let chars: Vec<char> = a.chars().collect();
                let runs: std::collections::HashSet<String> =
                    chars.windows(6).map(|w| w.iter().collect()).collect();
                assert_eq!(runs.len(), chars.len() - 5, "{net} {a} repeats itself");
            }
            let btc = deposit_address(id, "BTC", "BTC");
            let data: Vec<u8> = btc[3..]
                .bytes()
                .map(|c| BECH32.iter().position(|b| *b == c).expect("bech32") as u8)
                .collect();
            let mut v = hrp_expand("bc");
            v.extend_from_slice(&data);
            assert_eq!(bech32_polymod(&v), 1, "bech32 checksum of {btc}");
            assert_eq!(btc.len(), 42);
            assert_eq!(
                unbase58(&deposit_address(id, "SOL", "SOL"), BITCOIN_B58).len(),
                32
            );
        }
    }
}
