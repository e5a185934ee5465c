//! A bounded memo of the balance answers clients fetch first and most often (Binance's
//! account, Bybit's wallet), rendered once per canary instead of on every call.
//!
//! Each answer is a pure function of the canary (its deterministic balances) apart from
//! one time stamp, so an entry keeps the answer cut around that stamp, and a call writes
//! `head`, the stamp of the moment, and `tail`. Serializing the ~2 kB of balances was
//! about a fifth of the trap's runtime worker under valid canary load (docs/benchmarks.md,
//! session 14).
//!
//! Only answers whose inputs are all in the key are memoized: Binance's account, which
//! open orders change (they lock funds), is memoized only while the canary has none.
//! Only a canary request with a valid signature reaches these answers, so the memo holds
//! at most one entry per canary that someone holding its secret used, and it adds no
//! difference between unknown keys and canaries before the signature check (stealth). It
//! is bounded anyway ([`CAPACITY`] entries of a few kB: under 10 MB); past the bound it
//! starts over.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

/// Most answers kept; past it the memo is cleared and refills from the next calls.
pub const CAPACITY: usize = 2048;

/// An answer cut around its time stamp.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub head: Box<str>,
    pub tail: Box<str>,
}

impl Split {
    /// Cuts `text` around the first `marker` (a stamp rendered as a value no real answer
    /// has elsewhere, with what identifies it); `None` if `marker` is absent.
    pub fn around(text: &str, before: &str, marker: &str) -> Option<Split> {
        let at = text.find(&format!("{before}{marker}"))? + before.len();
        Some(Split {
            head: text[..at].into(),
            tail: text[at + marker.len()..].into(),
        })
    }

    /// The answer with `stamp` in its place.
    pub fn with(&self, stamp: i64) -> String {
        let mut s = String::with_capacity(self.head.len() + self.tail.len() + 20);
        s.push_str(&self.head);
        let _ = write!(s, "{stamp}");
        s.push_str(&self.tail);
        s
    }
}

/// Which answer of a canary an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Binance `/api/v3/account` with no open orders; `true` with `omitZeroBalances`.
    BinanceAccount(bool),
    /// Bybit `/v5/account/wallet-balance`, in its envelope.
    BybitWallet,
}

/// The memo (one per process: its entries are pure functions of their keys).
#[derive(Debug, Default)]
pub struct Rendered {
    map: Mutex<HashMap<(Uuid, Answer), Arc<Split>>>,
}

impl Rendered {
    /// The process's memo.
    pub fn global() -> &'static Rendered {
        static MEMO: std::sync::OnceLock<Rendered> = std::sync::OnceLock::new();
        MEMO.get_or_init(Rendered::default)
    }

    /// `canary`'s `answer` with `stamp` in it, rendered by `render` on a miss; `None`
    /// (nothing kept) when `render` gives none.
    pub fn answer(
        &self,
        canary: Uuid,
        answer: Answer,
        stamp: i64,
        render: impl FnOnce() -> Option<Split>,
    ) -> Option<String> {
        let lock = || self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = lock().get(&(canary, answer)).cloned() {
            return Some(s.with(stamp));
        }
        let split = Arc::new(render()?);
        let text = split.with(stamp);
        let mut map = lock();
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert((canary, answer), split);
        Some(text)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// No entries held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_cut_around_its_stamp_and_rebuilt_with_the_moments() {
        let s =
            Split::around(r#"{"a":0,"updateTime":0,"b":[0]}"#, r#""updateTime":"#, "0").unwrap();
        assert_eq!(&*s.head, r#"{"a":0,"updateTime":"#);
        assert_eq!(&*s.tail, r#","b":[0]}"#);
        assert_eq!(s.with(-17), r#"{"a":0,"updateTime":-17,"b":[0]}"#);
        assert!(Split::around("{}", "\"t\":", "0").is_none());
    }

    #[test]
    fn renders_once_per_key_and_stays_bounded() {
        let memo = Rendered::default();
        let id = Uuid::from_u128(7);
        let mut renders = 0;
        for stamp in [1, 2] {
            let text = memo.answer(id, Answer::BybitWallet, stamp, || {
                renders += 1;
                Split::around("[t=0]", "t=", "0")
            });
            assert_eq!(text.as_deref(), Some(format!("[t={stamp}]").as_str()));
        }
        assert_eq!(renders, 1, "the second call used the memo");
        // Another answer of the same canary is its own entry.
        let other = memo.answer(id, Answer::BinanceAccount(true), 3, || {
            Split::around("<0>", "<", "0")
        });
        assert_eq!(other.as_deref(), Some("<3>"));
        // A render that cannot be cut keeps nothing.
        assert!(memo
            .answer(Uuid::from_u128(8), Answer::BybitWallet, 1, || None)
            .is_none());
        assert_eq!(memo.len(), 2);
        for i in 0..CAPACITY as u128 + 10 {
            memo.answer(Uuid::from_u128(100 + i), Answer::BybitWallet, 1, || {
                Split::around("t=0", "t=", "0")
            });
        }
        assert!(memo.len() <= CAPACITY, "{}", memo.len());
        assert!(!memo.is_empty());
    }
}
