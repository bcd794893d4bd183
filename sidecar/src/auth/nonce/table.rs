//! The set of nonce hashes one shard holds: open addressing, linear probing, backward-shift
//! deletion.
//!
//! Why not `HashSet`: a shard at its cap removes one hash for every one it inserts, for as long as
//! the sidecar runs. `hashbrown` leaves some removed slots as tombstones, and once tombstones have
//! used up its spare room it rebuilds – into a table *twice* as large when it is more than half
//! full, which a shard at its cap always is. So every shard doubled its table after ~600,000
//! replacements: the soak's one-time 20 MB step at ~10 M requests from one key. Backward-shift
//! deletion leaves no tombstones, so this table's size follows only how many hashes it holds: it
//! doubles when more than ¾ of its slots are full and halves when fewer than ⅛ are.

/// Fewest slots a table that holds anything has.
const MIN_SLOTS: usize = 16;

#[derive(Default)]
pub(super) struct HashTable {
    /// A power of two long (or empty). 0 marks a free slot, so a hash is stored as `stored(h)`.
    slots: Box<[u64]>,
    len: usize,
}

/// A hash as the table stores it: never 0, the free-slot mark. Folding 0 into 1 makes those two
/// hashes one; with keyed 64-bit hashes that is a 2⁻⁶⁴ chance per pair, like any other collision.
fn stored(h: u64) -> u64 {
    h.max(1)
}

impl HashTable {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (8 bytes each).
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// What the table costs in memory.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    pub fn contains(&self, h: u64) -> bool {
        self.find(stored(h)).is_some()
    }

    /// Adds `h`; false if it was already held.
    pub fn insert(&mut self, h: u64) -> bool {
        let h = stored(h);
        if self.find(h).is_some() {
            return false;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        self.place(h);
        self.len += 1;
        true
    }

    /// Takes `h` out; false if it was not held.
    pub fn remove(&mut self, h: u64) -> bool {
        let Some(mut hole) = self.find(stored(h)) else { return false };
        let mask = self.slots.len() - 1;
        // Close the hole: walk the run after it and move back each hash whose probe path from its
        // home slot passes through the hole, so every hash stays reachable from its home without
        // crossing a free slot.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let x = self.slots[j];
            if x == 0 {
                break;
            }
            let home = x as usize & mask;
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = x;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
        true
    }

    /// The slot holding `h` (already `stored`). Ends: at most ¾ of the slots are ever full.
    fn find(&self, h: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            match self.slots[i] {
                0 => return None,
                x if x == h => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Puts `h` (already `stored`, not held) in the first free slot from its home.
    fn place(&mut self, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = h;
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![0; slots].into_boxed_slice());
        for h in old.iter().copied().filter(|&h| h != 0) {
            self.place(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use super::*;

    /// xorshift64: a fixed, fast stream of well-spread hashes.
    fn hashes(seed: u64) -> impl Iterator<Item = u64> {
        std::iter::successors(Some(seed), |&x| {
            let x = x ^ (x << 13);
            let x = x ^ (x >> 7);
            Some(x ^ (x << 17))
        })
    }

    #[test]
    fn agrees_with_a_hash_set_through_inserts_removals_and_resizes() {
        let mut t = HashTable::default();
        let mut model = HashSet::new();
        // Few distinct values (4,096, 0 and 1 among them: the two stored alike) so that inserts of
        // held hashes, removals of absent ones and runs that wrap past the last slot all happen;
        // the odd multiplier spreads their low bits, which pick the home slot.
        for (i, r) in hashes(0x9E37_79B9_7F4A_7C15).take(200_000).enumerate() {
            let h = match r % 4096 {
                1 => 1,
                v => v.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            };
            // Phases that fill and then drain exercise growth and shrinking both ways.
            let removing = (i / 5_000) % 2 == 1;
            if removing {
                assert_eq!(t.remove(h), model.remove(&stored(h)), "remove {h} at step {i}");
            } else {
                assert_eq!(t.insert(h), model.insert(stored(h)), "insert {h} at step {i}");
            }
            assert_eq!(t.len(), model.len());
            if i % 997 == 0 {
                for v in 0..4096u64 {
                    let probe = if v == 1 { 1 } else { v.wrapping_mul(0x9E37_79B9_7F4A_7C15) };
                    assert_eq!(t.contains(probe), model.contains(&stored(probe)), "contains {probe} at step {i}");
                }
            }
        }
    }

    #[test]
    fn replacing_one_hash_for_another_forever_keeps_the_same_size() {
        // What a shard at its cap does: this is where `HashSet` doubled (module comment).
        let held = 1024;
        let mut t = HashTable::default();
        let mut order = VecDeque::new();
        let mut sizes = HashSet::new();
        for (i, h) in hashes(7).take(50 * held).enumerate() {
            if order.len() == held {
                assert!(t.remove(order.pop_front().unwrap()));
            }
            assert!(t.insert(h));
            order.push_back(h);
            if i >= held {
                sizes.insert(t.slots());
            }
        }
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![2048], "1,024 held → 2,048 slots, always");
    }

    #[test]
    fn an_emptied_table_gives_its_memory_back() {
        let mut t = HashTable::default();
        let all: Vec<u64> = hashes(11).take(10_000).collect();
        for &h in &all {
            t.insert(h);
        }
        assert_eq!(t.slots(), 16_384);
        for &h in &all {
            assert!(t.remove(h));
        }
        assert_eq!((t.len(), t.slots()), (0, MIN_SLOTS));
    }
}
