//! A bounded in-process cache of the trap's canary lookups (lookup digest -> canary or
//! "unknown"), so repeated presentations of one key (an attacker scripting a stolen key,
//! a flood replaying a few keys) cost no database round trip.
//!
//! What is cached never goes stale in a way that matters: a canary's id, tenant and store
//! never change, and a key nobody has minted cannot become a canary (its digest would have
//! to collide with a future canary's). Entries still expire (positives after 10 minutes,
//! negatives after 30 seconds) and the cache is bounded: a flood of random keys evicts a
//! shard wholesale rather than growing memory. Canary and unknown keys are cached alike,
//! so the cache adds no timing difference between them.
//!
//! An entry also keeps the key's derived secrets (its canary's, or an unknown key's pseudo
//! canary's, which the signature check uses alike), so a key presented again is not
//! derived again: the derivation was about 6% of the trap's CPU on unknown keys
//! (docs/benchmarks.md, session 13). Derived secrets are no more secret than the master
//! key the process holds anyway, and they leave memory with their entry. With them an
//! entry takes up to about 300 bytes (a 64-character secret), so the cache's bound
//! (16 x 8,192 entries, reached only by a flood of distinct keys) is about 40 MB, against
//! about 25 MB without them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// What the trap needs of a canary on its request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryRef {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
}

/// A key's derived secrets, as [`keytrap_core::Credentials`] holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub api_secret: Arc<str>,
    pub passphrase: Option<Arc<str>>,
}

impl Secrets {
    pub fn of(creds: &keytrap_core::Credentials) -> Secrets {
        Secrets {
            api_secret: Arc::from(creds.api_secret.as_str()),
            passphrase: creds.passphrase.as_deref().map(Arc::from),
        }
    }

    /// The credentials of `api_key` (the key as presented, which the digest matched).
    pub fn credentials(&self, api_key: &str) -> keytrap_core::Credentials {
        keytrap_core::Credentials {
            api_key: api_key.to_string(),
            api_secret: self.api_secret.to_string(),
            passphrase: self.passphrase.as_deref().map(str::to_string),
        }
    }
}

/// What the cache knows of a lookup digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The canary, or `None` for a key nobody minted.
    pub found: Option<CanaryRef>,
    /// The key's derived secrets, once derived.
    pub secrets: Option<Secrets>,
}

const SHARDS: usize = 16;
const PER_SHARD: usize = 8_192;
const POSITIVE_TTL: Duration = Duration::from_secs(600);
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

type Shard = HashMap<[u8; 32], (Instant, Cached)>;

pub struct LookupCache {
    shards: Vec<Mutex<Shard>>,
}

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl LookupCache {
    fn shard(&self, digest: &[u8; 32]) -> &Mutex<Shard> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    /// What is cached of the digest's lookup, when it is fresh.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Cached> {
        let shard = self.shard(digest).lock().ok()?;
        let (at, cached) = shard.get(digest)?;
        let ttl = if cached.found.is_some() {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        (at.elapsed() < ttl).then(|| cached.clone())
    }

    /// Caches a lookup's answer (and the key's secrets, once derived) from now on.
    pub fn put(&self, digest: [u8; 32], cached: Cached) {
        let Ok(mut shard) = self.shard(&digest).lock() else {
            return;
        };
        if shard.len() >= PER_SHARD {
            // Bounded memory under a flood of distinct keys: start the shard afresh.
            shard.clear();
        }
        shard.insert(digest, (Instant::now(), cached));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_both_answers_and_stays_bounded() {
        let c = LookupCache::default();
        let hit = CanaryRef {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            store_id: Uuid::now_v7(),
        };
        let found = |f: Option<CanaryRef>| Cached {
            found: f,
            secrets: None,
        };
        assert_eq!(c.get(&[1; 32]), None);
        c.put([1; 32], found(Some(hit)));
        c.put([2; 32], found(None));
        assert_eq!(c.get(&[1; 32]), Some(found(Some(hit))));
        assert_eq!(c.get(&[2; 32]), Some(found(None)));
        // Secrets ride with the entry and give back the credentials they came from.
        let creds = keytrap_core::Credentials {
            api_key: "k".repeat(64),
            api_secret: "s".repeat(64),
            passphrase: Some("p".into()),
        };
        c.put(
            [3; 32],
            Cached {
                found: None,
                secrets: Some(Secrets::of(&creds)),
            },
        );
        let back = c.get(&[3; 32]).and_then(|e| e.secrets).expect("secrets");
        assert_eq!(back.credentials(&creds.api_key), creds);
        // A flood of distinct keys into one shard never holds more than PER_SHARD.
        for i in 0..(PER_SHARD as u32 * 3) {
            let mut d = [0u8; 32];
            d[0] = 16; // same shard every time
            d[1..5].copy_from_slice(&i.to_be_bytes());
            c.put(d, found(None));
        }
        let sizes: Vec<usize> = c
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .collect();
        assert!(sizes.iter().all(|n| *n <= PER_SHARD), "{sizes:?}");
    }
}
