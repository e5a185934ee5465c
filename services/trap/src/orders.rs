//! A short-lived in-process cache of each canary's open orders.
//!
//! An attacker's script polls balances and open orders over and over; every such call
//! used to read the canary's orders from the database (on SQLite a hop to a reader
//! thread and back, the largest single cost of a valid canary request after the commit).
//! This trap process writes every order it remembers, so it drops a canary's entry the
//! moment it places or cancels one of its orders: within one process the cache is never
//! stale. Another trap replica's order (PostgreSQL, several trap pods) shows here at most
//! [`TTL`] late. Bounded like the lookup cache: a full shard starts afresh.
//!
//! Only valid-signature requests of canaries reach it, so it plays no part in the timing
//! of canary against unknown keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keytrap_store::TrapOrder;
use uuid::Uuid;

/// How long another replica's order may go unseen.
pub const TTL: Duration = Duration::from_secs(2);
const SHARDS: usize = 16;
const PER_SHARD: usize = 1_024;

#[derive(Default)]
struct Shard {
    entries: HashMap<Uuid, (Instant, Arc<Vec<TrapOrder>>)>,
    /// Bumped by every invalidation in the shard, so a read that raced a write cannot put
    /// back what the write made stale.
    generation: u64,
}

pub struct OpenOrders {
    shards: Vec<Mutex<Shard>>,
}

impl Default for OpenOrders {
    fn default() -> Self {
        OpenOrders {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl OpenOrders {
    fn shard(&self, canary: &Uuid) -> &Mutex<Shard> {
        &self.shards[usize::from(canary.as_bytes()[15]) % SHARDS]
    }

    /// The canary's open orders if cached and fresh, else the generation to pass to
    /// [`put`](Self::put) with what the database says.
    pub fn get(&self, canary: Uuid) -> Result<Arc<Vec<TrapOrder>>, u64> {
        let Ok(shard) = self.shard(&canary).lock() else {
            return Err(u64::MAX);
        };
        match shard.entries.get(&canary) {
            Some((at, orders)) if at.elapsed() < TTL => Ok(orders.clone()),
            _ => Err(shard.generation),
        }
    }

    /// Remembers `orders`, read from the database after [`get`](Self::get) returned
    /// `generation`; ignored if orders in the shard changed meanwhile.
    pub fn put(&self, canary: Uuid, generation: u64, orders: Vec<TrapOrder>) {
        let Ok(mut shard) = self.shard(&canary).lock() else {
            return;
        };
        if shard.generation != generation {
            return;
        }
        if shard.entries.len() >= PER_SHARD {
            shard.entries.clear();
        }
        shard
            .entries
            .insert(canary, (Instant::now(), Arc::new(orders)));
    }

    /// The canary's orders changed (placed or cancelled here).
    pub fn invalidate(&self, canary: Uuid) {
        let Ok(mut shard) = self.shard(&canary).lock() else {
            return;
        };
        shard.entries.remove(&canary);
        shard.generation = shard.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(canary: Uuid, id: &str) -> TrapOrder {
        TrapOrder {
            canary_id: canary,
            order_id: id.into(),
            client_order_id: None,
            symbol: "BTCUSDT".into(),
            side: "BUY".into(),
            order_type: "LIMIT".into(),
            price: Some("1".into()),
            amount: "1".into(),
            status: "open".into(),
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn cached_until_invalidated_and_races_do_not_resurrect_stale_lists() {
        let c = OpenOrders::default();
        let a = Uuid::now_v7();
        let g = c.get(a).expect_err("nothing cached yet");
        c.put(a, g, vec![order(a, "1")]);
        assert_eq!(c.get(a).expect("cached").len(), 1);

        // A write invalidates at once.
        c.invalidate(a);
        let g = c.get(a).expect_err("invalidated");
        // A read that started before a write must not store its (stale) answer.
        c.invalidate(a);
        c.put(a, g, vec![]);
        assert!(c.get(a).is_err(), "stale read was cached");
        let g = c.get(a).expect_err("still nothing");
        c.put(a, g, vec![order(a, "1"), order(a, "2")]);
        assert_eq!(c.get(a).expect("cached").len(), 2);
    }

    #[test]
    fn bounded() {
        let c = OpenOrders::default();
        for _ in 0..(PER_SHARD * SHARDS * 3) {
            let id = Uuid::now_v7();
            if let Err(g) = c.get(id) {
                c.put(id, g, vec![]);
            }
        }
        for s in &c.shards {
            assert!(s.lock().expect("lock").entries.len() <= PER_SHARD);
        }
    }
}
