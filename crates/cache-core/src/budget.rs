//! A least-recently-used map with a byte budget: what an instance keeps per request
//! shape (search indexes, match lists, compressed answers) is bounded in bytes, not
//! in entries, so no sequence of URLs can grow it past the budget.
//!
//! Not thread-safe by itself: the owner wraps it in a mutex (every operation is a
//! few map updates and never spans an `.await`). Eviction is O(log n): entries are
//! ordered by their last use in a `BTreeMap`.
//!
//! A *pinned* value is counted like any other but never evicted (it is replaced):
//! what must exist for a view to be served at all (its index, its derived bodies)
//! is kept whatever the budget, so a small budget is never a cliff where the same
//! index is built and thrown away on every request. What is pinned is bounded by
//! its keys (one per view), not by the URLs.
//!
//! The weight given with a value is what it holds on the heap; this map adds its own
//! cost per entry ([`ByteLru::ENTRY_OVERHEAD`] and the key's heap bytes, twice: the
//! key lives in the map and in the order).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub(crate) struct ByteLru<K, V> {
    budget: usize,
    used: usize,
    /// Of `used`, what is pinned (never evicted; may alone exceed the budget).
    pinned: usize,
    clock: u64,
    slots: HashMap<K, Slot<V>>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
}

struct Slot<V> {
    value: V,
    weight: usize,
    /// `None`: pinned (never evicted, not in `order`).
    used_at: Option<u64>,
}

/// A key's heap bytes (its strings' capacities): what [`ByteLru`] adds twice.
pub(crate) trait HeapSize {
    fn heap_bytes(&self) -> usize;
}

impl<K: Hash + Eq + Clone + HeapSize, V: Clone> ByteLru<K, V> {
    /// What an entry costs this map beyond its key's and value's heap bytes: a slot
    /// of the hash map (at its worst load, half full), a node share of the order's
    /// B-tree, and the allocator's rounding.
    pub(crate) const ENTRY_OVERHEAD: usize =
        2 * std::mem::size_of::<(K, Slot<V>)>() + 2 * std::mem::size_of::<(u64, K)>() + 64;

    fn cost(key: &K, weight: usize) -> usize {
        weight + Self::ENTRY_OVERHEAD + 2 * key.heap_bytes()
    }

    pub(crate) fn new(budget: usize) -> Self {
        ByteLru {
            budget,
            used: 0,
            pinned: 0,
            clock: 0,
            slots: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value under `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let slot = self.slots.get_mut(key)?;
        if let Some(at) = slot.used_at {
            self.order.remove(&at);
            slot.used_at = Some(self.clock);
            self.order.insert(self.clock, key.clone());
        }
        Some(slot.value.clone())
    }

    /// Keep `value` under `key`, weighing `weight` heap bytes, evicting the least
    /// recently used entries until it fits. A value heavier than what the budget
    /// leaves beside the pinned ones is not kept (`false`): the caller serves it and
    /// lets it go.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) -> bool {
        self.remove(&key);
        let cost = Self::cost(&key, weight);
        if cost > self.budget {
            return false;
        }
        self.evict_until(self.budget - cost);
        if self.used + cost > self.budget {
            return false;
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.slots.insert(
            key,
            Slot {
                value,
                weight: cost,
                used_at: Some(self.clock),
            },
        );
        self.used += cost;
        true
    }

    /// Keep `value` under `key` for good (until replaced or removed), counted: others
    /// are evicted to make room, and if the pinned values alone exceed the budget,
    /// nothing else is kept.
    pub(crate) fn pin(&mut self, key: K, value: V, weight: usize) {
        self.remove(&key);
        let cost = Self::cost(&key, weight);
        self.evict_until(self.budget.saturating_sub(cost));
        self.slots.insert(
            key,
            Slot {
                value,
                weight: cost,
                used_at: None,
            },
        );
        self.used += cost;
        self.pinned += cost;
    }

    /// Evict least recently used (unpinned) entries until at most `target` is used.
    fn evict_until(&mut self, target: usize) {
        while self.used > target {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(gone) = self.slots.remove(&oldest) {
                self.used -= gone.weight;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            match slot.used_at {
                Some(at) => {
                    self.order.remove(&at);
                }
                None => self.pinned -= slot.weight,
            }
            self.used -= slot.weight;
        }
    }

    /// Bytes kept now: never above the budget, unless what is pinned is.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Of [`ByteLru::used`], the pinned bytes (bounded by what is pinned, not by the
    /// budget).
    pub(crate) fn pinned(&self) -> usize {
        self.pinned
    }

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

    impl HeapSize for &str {
        fn heap_bytes(&self) -> usize {
            0
        }
    }

    type Lru = ByteLru<&'static str, i32>;

    /// The budget for `n` values of `w` heap bytes.
    fn room(n: usize, w: usize) -> usize {
        n * (w + Lru::ENTRY_OVERHEAD)
    }

    #[test]
    fn stays_within_its_budget_and_evicts_the_least_recently_used() {
        let mut lru = Lru::new(room(2, 40) + 10);
        assert!(lru.insert("a", 1, 40));
        assert!(lru.insert("b", 2, 40));
        assert_eq!(lru.get(&"a"), Some(1), "a is now the most recent");
        assert!(lru.insert("c", 3, 40));
        assert_eq!(lru.get(&"b"), None, "b was the least recently used");
        assert_eq!((lru.get(&"a"), lru.get(&"c")), (Some(1), Some(3)));
        assert_eq!(lru.used(), room(2, 40), "each counted with what the map adds");
        assert!(!lru.insert("huge", 4, room(3, 0)), "heavier than the budget: not kept");
        assert_eq!(lru.used(), room(2, 40), "and nothing evicted for it");
        assert!(lru.insert("a", 5, 10), "replacing re-weighs");
        assert_eq!((lru.used(), lru.len()), (room(1, 40) + room(1, 10), 2));
        for i in 0..10_000 {
            lru.insert("x", i, 7);
            lru.insert("y", i, 93);
            assert!(lru.used() <= lru.budget());
        }
    }

    #[test]
    fn a_pinned_value_is_counted_never_evicted_and_crowds_out_the_rest() {
        let mut lru = Lru::new(room(3, 100));
        lru.insert("a", 1, 100);
        lru.insert("b", 2, 100);
        lru.pin("index", 9, 150);
        assert_eq!(lru.get(&"a"), None, "evicted to make room for the pinned one");
        assert_eq!(lru.get(&"b"), Some(2));
        for i in 0..100 {
            lru.insert("x", i, 100);
        }
        assert_eq!(lru.get(&"index"), Some(9), "never evicted");
        lru.pin("index", 10, room(5, 0));
        assert_eq!(
            (lru.get(&"index"), lru.get(&"b"), lru.get(&"x")),
            (Some(10), None, None)
        );
        assert!(
            !lru.insert("y", 1, 1),
            "nothing else while the pinned exceed the budget"
        );
        lru.remove(&"index");
        assert_eq!(lru.used(), 0);
    }
}
