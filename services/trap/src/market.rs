//! Market data and account contents shared by the emulators: a realistic set of spot
//! markets with plausible prices, and balances derived deterministically from the canary
//! id, so repeated calls agree and two canaries do not look alike.

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

/// A deterministic, plausible deposit address for a coin and network.
pub fn deposit_address(canary: Uuid, coin: &str, network: &str) -> String {
    let h1 = mix(canary, &format!("addr/{coin}/{network}"));
    let h2 = mix(canary, &format!("addr2/{coin}/{network}"));
    let h3 = mix(canary, &format!("addr3/{coin}/{network}"));
    let hex40 = format!("{h1:016x}{h2:016x}{:08x}", h3 as u32);
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let b58 = |len: usize| -> String {
        (0..len)
            .map(|i| {
                let x = mix(canary, &format!("b58/{coin}/{network}/{i}"));
                B58[(x % B58.len() as u64) as usize] as char
            })
            .collect()
    };
    match network {
        "ETH" | "BSC" | "ARBITRUM" | "AVAXC" => format!("0x{hex40}"),
        "TRX" => format!("T{}", b58(33)),
        "BTC" => format!("bc1q{}", &hex40[..38]),
        "SOL" => b58(44),
        "XRP" => format!("r{}", b58(33)),
        "LTC" => format!("ltc1q{}", &hex40[..38]),
        "DOGE" => format!("D{}", b58(33)),
        _ => format!("0x{hex40}"),
    }
}

/// A deterministic numeric order id (exchanges using integers).
pub fn numeric_order_id(canary: Uuid, seq: u64) -> u64 {
    1_000_000_000 + (mix(canary, "orders") % 9_000_000_000) / 1000 * 1000 + seq
}

#[cfg(test)]
mod tests {
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
}
