//! A least-recently-used map with a byte budget: what an instance keeps per request
//! shape (search indexes, match lists, compressed answers) is bounded in bytes, not
//! in entries, so no sequence of URLs can grow it past the budget.
//!
//! Not thread-safe by itself: the owner wraps it in a mutex (every operation is a
//! few map updates and never spans an `.await`). Eviction is O(log n): entries are
//! ordered by their last use in a `BTreeMap`.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub(crate) struct ByteLru<K, V> {
    budget: usize,
    used: usize,
    clock: u64,
    slots: HashMap<K, Slot<V>>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
}

struct Slot<V> {
    value: V,
    weight: usize,
    used_at: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> ByteLru<K, V> {
    pub(crate) fn new(budget: usize) -> Self {
        ByteLru {
            budget,
            used: 0,
            clock: 0,
            slots: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value under `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let slot = self.slots.get_mut(key)?;
        self.order.remove(&slot.used_at);
        slot.used_at = self.clock;
        self.order.insert(self.clock, key.clone());
        Some(slot.value.clone())
    }

    /// Keep `value` under `key`, weighing `weight` bytes, evicting the least recently
    /// used entries until it fits. A value heavier than the whole budget is not kept
    /// (`false`): the caller serves it and lets it go.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) -> bool {
        self.remove(&key);
        if weight > self.budget {
            return false;
        }
        while self.used + weight > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(gone) = self.slots.remove(&oldest) {
                self.used -= gone.weight;
            }
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.slots.insert(
            key,
            Slot {
                value,
                weight,
                used_at: self.clock,
            },
        );
        self.used += weight;
        true
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.used_at);
            self.used -= slot.weight;
        }
    }

    /// Bytes kept now (never above the budget).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    #[cfg(test)]
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_budget_and_evicts_the_least_recently_used() {
        let mut lru = ByteLru::new(100);
        assert!(lru.insert("a", 1, 40));
        assert!(lru.insert("b", 2, 40));
        assert_eq!(lru.get(&"a"), Some(1), "a is now the most recent");
        assert!(lru.insert("c", 3, 40));
        assert_eq!(lru.get(&"b"), None, "b was the least recently used");
        assert_eq!((lru.get(&"a"), lru.get(&"c")), (Some(1), Some(3)));
        assert_eq!(lru.used(), 80);
        assert!(!lru.insert("huge", 4, 101), "heavier than the budget: not kept");
        assert_eq!(lru.used(), 80, "and nothing evicted for it");
        assert!(lru.insert("a", 5, 10), "replacing re-weighs");
        assert_eq!((lru.used(), lru.len()), (50, 2));
        for i in 0..10_000 {
            lru.insert("x", i, 7);
            lru.insert("y", i, 93);
            assert!(lru.used() <= lru.budget());
        }
    }
}
