//! Chi-square tests: canary characters are uniform where real keys are random, tag
//! positions included, so nothing marks a canary statistically.

use rand::Rng;

use super::{fixed_keys, seeded_rng, v7_id};
use crate::format::{tag_layout, ALNUM, BASE64, HEX_LOWER, HEX_UPPER, LOWER_ALNUM};
use crate::Exchange;

const KEYS_PER_EXCHANGE: u64 = 20_000;
const SECRETS_PER_EXCHANGE: u64 = 5_000;

/// Critical value of chi-square with `df` degrees of freedom at p = 0.001
/// (Wilson-Hilferty approximation).
fn critical_value(df: f64) -> f64 {
    // Upper 0.1% point of the standard normal distribution.
    const Z_999: f64 = 3.090_232_306_167_813;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + Z_999 * a.sqrt()).powi(3)
}

fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| {
            let d = c as f64 - expected;
            d * d / expected
        })
        .sum()
}

/// Character counts over one alphabet.
struct Tally {
    what: String,
    alphabet: &'static [u8],
    counts: Vec<u64>,
}

impl Tally {
    fn new(what: impl Into<String>, alphabet: &'static [u8]) -> Self {
        Tally {
            what: what.into(),
            alphabet,
            counts: vec![0; alphabet.len()],
        }
    }

    fn add(&mut self, c: u8) {
        let i = self.alphabet.iter().position(|&a| a == c);
        let i = i.unwrap_or_else(|| panic!("{}: {:?} not in alphabet", self.what, char::from(c)));
        self.counts[i] += 1;
    }

    fn add_positions(&mut self, s: &str, positions: impl IntoIterator<Item = usize>) {
        for p in positions {
            self.add(s.as_bytes()[p]);
        }
    }

    fn assert_uniform(&self) {
        let total: u64 = self.counts.iter().sum();
        assert!(
            total >= 10 * self.counts.len() as u64,
            "{}: too few samples",
            self.what
        );
        let df = (self.counts.len() - 1) as f64;
        let stat = chi_square(&self.counts);
        let crit = critical_value(df);
        assert!(
            stat < crit,
            "{}: chi-square {stat:.1} >= {crit:.1} (df {df}, {total} chars)",
            self.what
        );
    }
}

/// Hex positions of a hyphenated UUID that are random: not dashes, not the version
/// nibble (14), not the variant nibble (19).
fn uuid_random_positions(offset: usize) -> impl Iterator<Item = usize> {
    (0..36)
        .filter(|p| ![8, 13, 14, 18, 19, 23].contains(p))
        .map(move |p| p + offset)
}

/// The alphabet and positions of an API key that are meant to be uniform.
fn uniform_key_positions(exchange: Exchange) -> (&'static [u8], Vec<usize>) {
    match exchange {
        Exchange::Binance => (ALNUM, (0..64).collect()),
        // The first 8 hex digits are the creation time.
        Exchange::Kucoin => (HEX_LOWER, (8..24).collect()),
        Exchange::Coinbase => (
            HEX_LOWER,
            uuid_random_positions(14)
                .chain(uuid_random_positions(14 + 36 + 9))
                .collect(),
        ),
        Exchange::CoinbaseExchange => (HEX_LOWER, (0..32).collect()),
        Exchange::Okx => (HEX_LOWER, uuid_random_positions(0).collect()),
        // The first char is alphanumeric only (checked separately).
        Exchange::Kraken => (BASE64, (1..56).collect()),
        Exchange::Bybit => (ALNUM, (0..18).collect()),
    }
}

#[test]
fn api_key_characters_and_tags_are_uniform() {
    let keys = fixed_keys();
    for exchange in Exchange::ALL {
        let (alphabet, positions) = uniform_key_positions(exchange);
        let layout = tag_layout(exchange);
        let mut all = Tally::new(format!("{exchange} key"), alphabet);
        let mut tags = Tally::new(format!("{exchange} tag"), layout.alphabet);
        let mut first = Tally::new("kraken first char", &BASE64[..62]);
        let mut variant = Tally::new(format!("{exchange} uuid variant"), b"89ab");
        for i in 0..KEYS_PER_EXCHANGE {
            let key = keys.api_key(exchange, v7_id(i));
            all.add_positions(&key, positions.iter().copied());
            tags.add_positions(&key, key.len() - layout.len..key.len());
            match exchange {
                Exchange::Kraken => first.add(key.as_bytes()[0]),
                Exchange::Okx => variant.add(key.as_bytes()[19]),
                Exchange::Coinbase => {
                    variant.add(key.as_bytes()[14 + 19]);
                    variant.add(key.as_bytes()[14 + 36 + 9 + 19]);
                }
                _ => {}
            }
        }
        all.assert_uniform();
        tags.assert_uniform();
        match exchange {
            Exchange::Kraken => first.assert_uniform(),
            Exchange::Okx | Exchange::Coinbase => variant.assert_uniform(),
            _ => {}
        }
    }
}

#[test]
fn secret_and_passphrase_characters_are_uniform() {
    let keys = fixed_keys();
    let cases: [(Exchange, &'static [u8], Vec<usize>); 6] = [
        (Exchange::Binance, ALNUM, (0..64).collect()),
        (
            Exchange::Kucoin,
            HEX_LOWER,
            uuid_random_positions(0).collect(),
        ),
        (Exchange::CoinbaseExchange, BASE64, (0..85).collect()),
        (Exchange::Okx, HEX_UPPER, (0..32).collect()),
        // 64 bytes: chars 0..=84 carry 6 bits each; char 0 is alphanumeric only.
        (Exchange::Kraken, BASE64, (1..85).collect()),
        (Exchange::Bybit, ALNUM, (0..36).collect()),
    ];
    for (exchange, alphabet, positions) in cases {
        let mut tally = Tally::new(format!("{exchange} secret"), alphabet);
        let mut pass = Tally::new("coinbase-exchange passphrase", LOWER_ALNUM);
        for i in 0..SECRETS_PER_EXCHANGE {
            let c = keys.credentials(exchange, v7_id(i));
            tally.add_positions(&c.api_secret, positions.iter().copied());
            if exchange == Exchange::CoinbaseExchange {
                pass.add_positions(c.passphrase.as_deref().unwrap_or_default(), 0..11);
            }
        }
        tally.assert_uniform();
        if exchange == Exchange::CoinbaseExchange {
            pass.assert_uniform();
        }
    }
}

/// The test has the power to see the bias of `byte % n` without rejection, the
/// mistake rejection sampling avoids.
#[test]
fn chi_square_detects_modulo_bias() {
    let mut rng = seeded_rng(42);
    let mut biased = Tally::new("modulo", ALNUM);
    let mut fair = Tally::new("rejection", ALNUM);
    while fair.counts.iter().sum::<u64>() < KEYS_PER_EXCHANGE * 64 {
        let b: u8 = rng.random();
        biased.add(ALNUM[usize::from(b) % 62]);
        if b < 248 {
            fair.add(ALNUM[usize::from(b) % 62]);
        }
    }
    fair.assert_uniform();
    let stat = chi_square(&biased.counts);
    assert!(
        stat > 10.0 * critical_value(61.0),
        "modulo bias not seen: {stat}"
    );
}

#[test]
fn wilson_hilferty_matches_tabulated_critical_values() {
    // chi2.ppf(0.999, df) from tables.
    for (df, table) in [(15.0, 37.697), (61.0, 100.888), (63.0, 103.442)] {
        let approx = critical_value(df);
        assert!((approx - table).abs() / table < 0.01, "df {df}: {approx}");
    }
}
