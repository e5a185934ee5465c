//! The exchanges keytrap mints canaries for, and their ids.

use std::fmt;
use std::str::FromStr;

/// An exchange whose API keys keytrap can imitate.
///
/// Serialized (serde, OpenAPI) and parsed as its id: `binance`, `kucoin`, `coinbase`
/// (Advanced Trade CDP keys), `coinbase-exchange` (legacy Coinbase Pro), `okx`,
/// `kraken`, `bybit`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Exchange {
    /// Binance spot (HMAC keys).
    Binance,
    /// KuCoin.
    Kucoin,
    /// Coinbase Advanced Trade (CDP key name + EC private key).
    Coinbase,
    /// Coinbase Exchange, the legacy Coinbase Pro API.
    CoinbaseExchange,
    /// OKX v5.
    Okx,
    /// Kraken spot.
    Kraken,
    /// Bybit v5.
    Bybit,
}

impl Exchange {
    /// Every supported exchange, in id order of the API documentation.
    pub const ALL: [Exchange; 7] = [
        Exchange::Binance,
        Exchange::Kucoin,
        Exchange::Coinbase,
        Exchange::CoinbaseExchange,
        Exchange::Okx,
        Exchange::Kraken,
        Exchange::Bybit,
    ];

    /// The id used in the API, configuration and derivation (`coinbase-exchange`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Binance => "binance",
            Exchange::Kucoin => "kucoin",
            Exchange::Coinbase => "coinbase",
            Exchange::CoinbaseExchange => "coinbase-exchange",
            Exchange::Okx => "okx",
            Exchange::Kraken => "kraken",
            Exchange::Bybit => "bybit",
        }
    }

    /// The name people know the exchange (or API product) by.
    pub fn display_name(self) -> &'static str {
        match self {
            Exchange::Binance => "Binance",
            Exchange::Kucoin => "KuCoin",
            Exchange::Coinbase => "Coinbase Advanced Trade",
            Exchange::CoinbaseExchange => "Coinbase Exchange",
            Exchange::Okx => "OKX",
            Exchange::Kraken => "Kraken",
            Exchange::Bybit => "Bybit",
        }
    }

    /// Whether the exchange's credentials include a passphrase (KuCoin, Coinbase
    /// Exchange, OKX).
    pub fn has_passphrase(self) -> bool {
        matches!(
            self,
            Exchange::Kucoin | Exchange::CoinbaseExchange | Exchange::Okx
        )
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: honours width and alignment in format strings.
        f.pad(self.as_str())
    }
}

/// Error for a string that is not one of the exchange ids.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown exchange {0:?}; expected one of binance, kucoin, coinbase, coinbase-exchange, okx, kraken, bybit"
)]
pub struct UnknownExchange(pub String);

impl FromStr for Exchange {
    type Err = UnknownExchange;

    /// Parses an exchange id, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exchange::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownExchange(s.to_owned()))
    }
}
