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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// What the trap needs of a canary on its request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryRef {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
}

const SHARDS: usize = 16;
const PER_SHARD: usize = 8_192;
const POSITIVE_TTL: Duration = Duration::from_secs(600);
const NEGATIVE_TTL: Duration = Duration::from_secs(30);

type Shard = HashMap<[u8; 32], (Instant, Option<CanaryRef>)>;

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

    /// `Some(answer)` when the digest's lookup is cached and fresh.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Option<CanaryRef>> {
        let shard = self.shard(digest).lock().ok()?;
        let (at, found) = shard.get(digest)?;
        let ttl = if found.is_some() {
            POSITIVE_TTL
        } else {
            NEGATIVE_TTL
        };
        (at.elapsed() < ttl).then_some(*found)
    }

    pub fn put(&self, digest: [u8; 32], found: Option<CanaryRef>) {
        let Ok(mut shard) = self.shard(&digest).lock() else {
            return;
        };
        if shard.len() >= PER_SHARD {
            // Bounded memory under a flood of distinct keys: start the shard afresh.
            shard.clear();
        }
        shard.insert(digest, (Instant::now(), found));
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
        assert_eq!(c.get(&[1; 32]), None);
        c.put([1; 32], Some(hit));
        c.put([2; 32], None);
        assert_eq!(c.get(&[1; 32]), Some(Some(hit)));
        assert_eq!(c.get(&[2; 32]), Some(None));
        // A flood of distinct keys into one shard never holds more than PER_SHARD.
        for i in 0..(PER_SHARD as u32 * 3) {
            let mut d = [0u8; 32];
            d[0] = 16; // same shard every time
            d[1..5].copy_from_slice(&i.to_be_bytes());
            c.put(d, None);
        }
        let sizes: Vec<usize> = c
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .collect();
        assert!(sizes.iter().all(|n| *n <= PER_SHARD), "{sizes:?}");
    }
}
