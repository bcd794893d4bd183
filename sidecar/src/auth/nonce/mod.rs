//! Replay protection in bounded memory (WIRE.md §"Replay protection").
//!
//! A signed request carries a timestamp `T` and a nonce. It is accepted while `|now − T| ≤ skew`,
//! so its nonce must be remembered until `T + skew` and no longer: entries are kept by the
//! *request's* timestamp, in one-second buckets, and whole buckets expire together.
//!
//! Memory is bounded per access key: each key has `SHARDS` shards of at most `cap / SHARDS`
//! nonces. A full shard forgets its oldest-timestamped bucket and raises its *horizon* to that
//! timestamp; from then on it refuses every request timestamped at or before the horizon
//! (`InvalidTimeStamp.Expired`, "re-sign and retry"), because a forgotten nonce could otherwise be
//! replayed. So a principal that floods shrinks only its own accepted window – never another
//! key's – and memory stays at `cap` nonces per key however hard it pushes: a nonce costs at most
//! ~21 bytes of lookup table (module `table`, which churn never grows) and, at the rates that
//! reach the cap, 8–16 in its second's list.
//! Under ordinary load the horizon stays behind `now − skew` and nothing changes for clients.
//!
//! Mutating requests are also claimed in the store (`Engine::claim_nonce`), which survives a
//! restart; this cache covers reads, which a restart may forget only for requests signed before it
//! and whose replay changes nothing.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

mod table;
use table::HashTable;

const SHARDS: usize = 16;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Seen before with this access key.
    Replayed,
    /// Older than what this key's memory still covers under its current load.
    BeyondHorizon,
}

#[derive(Default)]
struct Shard {
    /// Nonce hashes by the second of their request's timestamp.
    buckets: BTreeMap<i64, Vec<u64>>,
    /// The same hashes, to look up (keyed SipHash, so already uniform: used as they are).
    seen: HashTable,
    /// Requests timestamped at or before this were forgotten early: refused.
    horizon: i64,
}

impl Shard {
    /// Forgets the oldest second's nonces and raises the horizon over it (a request timestamped
    /// then could no longer be told from a replay); false if nothing was held.
    fn forget_oldest(&mut self) -> bool {
        let Some((t, hashes)) = self.buckets.pop_first() else { return false };
        for x in hashes {
            self.seen.remove(x);
        }
        self.horizon = self.horizon.max(t);
        true
    }
}

pub struct NonceCache {
    keys: RwLock<HashMap<String, Arc<[Mutex<Shard>; SHARDS]>>>,
    skew_secs: i64,
    per_shard: usize,
    hasher: RandomState,
}

impl NonceCache {
    /// Nonces of requests accepted up to `skew_secs` from now, at most `cap_per_key` per key.
    pub fn new(skew_secs: i64, cap_per_key: usize) -> Self {
        NonceCache {
            keys: RwLock::new(HashMap::new()),
            skew_secs,
            per_shard: (cap_per_key / SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// Records the nonce of a request timestamped `ts` (already checked to be within the skew of
    /// `now`) for an authenticated `access_key_id`, or says why it is refused.
    pub fn check_and_insert(&self, access_key_id: &str, nonce: &str, ts: i64, now: i64) -> Result<(), Refused> {
        let h = self.hasher.hash_one((access_key_id, nonce));
        let shards = self.shards_of(access_key_id);
        let mut s = shards[(h >> 60) as usize % SHARDS].lock();
        // What can no longer be replayed (its timestamp is outside the skew) is forgotten – and,
        // as with eviction, the horizon covers it: should the clock step back, the authenticator
        // would accept those timestamps again, and their nonces are gone.
        let expired = now - self.skew_secs;
        while s.buckets.first_key_value().is_some_and(|(t, _)| *t < expired) {
            s.forget_oldest();
        }
        if ts <= s.horizon {
            return Err(Refused::BeyondHorizon);
        }
        if s.seen.contains(h) {
            return Err(Refused::Replayed);
        }
        while s.seen.len() >= self.per_shard && s.forget_oldest() {
            if ts <= s.horizon {
                return Err(Refused::BeyondHorizon);
            }
        }
        s.seen.insert(h);
        s.buckets.entry(ts).or_default().push(h);
        Ok(())
    }

    /// Nonces held now, over every key (for tests and metrics).
    pub fn len(&self) -> usize {
        self.keys.read().values().map(|shards| shards.iter().map(|s| s.lock().seen.len()).sum::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookup-table slots allocated, over every key (8 bytes each).
    #[cfg(test)]
    fn table_slots(&self) -> usize {
        self.keys.read().values().map(|shards| shards.iter().map(|s| s.lock().seen.slots()).sum::<usize>()).sum()
    }

    /// The cache's gauges for `/metrics`: nonces held and the bytes holding them (lookup tables and
    /// per-second lists, over every key) – what the per-key cap bounds, so an operator can see it.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::gauge;
        let (mut held, mut bytes) = (0usize, 0usize);
        for shards in self.keys.read().values() {
            for s in shards.iter() {
                let s = s.lock();
                held += s.seen.len();
                bytes += s.seen.bytes() + s.buckets.values().map(|v| v.capacity() * 8).sum::<usize>();
            }
        }
        gauge(out, "kms_replay_nonces", "Nonces of accepted signed requests held for replay protection.", held);
        gauge(
            out,
            "kms_replay_cache_bytes",
            "Memory holding those nonces (lookup tables and per-second lists).",
            bytes,
        );
    }

    fn shards_of(&self, access_key_id: &str) -> Arc<[Mutex<Shard>; SHARDS]> {
        if let Some(s) = self.keys.read().get(access_key_id) {
            return s.clone();
        }
        // Only authenticated keys get here, so the map holds at most the configured keys.
        self.keys.write().entry(access_key_id.to_string()).or_insert_with(|| Arc::new(Default::default())).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_per_key_while_its_timestamp_is_acceptable() {
        let c = NonceCache::new(900, 1 << 20);
        assert_eq!(c.check_and_insert("ak", "n1", 1000, 1000), Ok(()));
        assert_eq!(c.check_and_insert("ak", "n1", 1000, 1500), Err(Refused::Replayed));
        assert_eq!(c.check_and_insert("other", "n1", 1000, 1500), Ok(()), "nonces are per access key");
        // At now = 1901 a request stamped 1000 is outside the skew (the authenticator refuses it
        // first), so its nonce is forgotten: the same nonce on a new request is accepted.
        assert_eq!(c.check_and_insert("ak", "n1", 1901, 1901), Ok(()));
        assert_eq!(c.check_and_insert("ak", "n1", 1901, 1902), Err(Refused::Replayed));
    }

    #[test]
    fn a_clock_stepped_back_does_not_revive_forgotten_nonces() {
        let c = NonceCache::new(900, 1 << 20);
        assert_eq!(c.check_and_insert("ak", "n1", 1000, 1000), Ok(()));
        // Much later the request is outside the skew, and a shard forgets it when next touched:
        // a thousand requests touch all sixteen (one untouched: (15/16)^1000 ≈ 1e-28).
        for i in 0..1000 {
            assert_eq!(c.check_and_insert("ak", &format!("later{i}"), 2500, 2500), Ok(()));
        }
        // The clock steps back 700 s: 1000 is within the skew of 1700 again. The replay of the
        // first request is refused – not as seen (it was forgotten) but as beyond the horizon.
        assert_eq!(c.check_and_insert("ak", "n1", 1000, 1700), Err(Refused::BeyondHorizon));
        // A request signed after the step is unaffected.
        assert_eq!(c.check_and_insert("ak", "n2", 1700, 1700), Ok(()));
    }

    #[test]
    fn memory_is_bounded_per_key_and_a_flood_shrinks_only_its_own_window() {
        let cap = 16 * 64;
        let c = NonceCache::new(900, cap);
        let now = 10_000;
        // A key sends far more than its cap within one window.
        let mut refused = 0;
        for i in 0..20_000 {
            let ts = now - 600 + i / 40; // timestamps rising through the window
            match c.check_and_insert("flood", &format!("n{i}"), ts, now) {
                Ok(()) => {}
                Err(Refused::BeyondHorizon) => refused += 1,
                Err(Refused::Replayed) => panic!("fresh nonce refused as replay"),
            }
        }
        assert!(c.len() <= cap, "held {} > cap {cap}", c.len());
        assert_eq!(refused, 0, "rising timestamps stay ahead of the horizon");
        // Old-stamped requests of the flooding key are refused; a replay of a forgotten nonce too.
        assert_eq!(c.check_and_insert("flood", "n0", now - 600, now), Err(Refused::BeyondHorizon));
        // Another key keeps its whole window.
        assert_eq!(c.check_and_insert("quiet", "q", now - 890, now), Ok(()));
        assert_eq!(c.check_and_insert("quiet", "q", now - 890, now), Err(Refused::Replayed));
    }

    #[test]
    fn a_key_held_at_its_cap_keeps_the_same_memory_however_long_it_runs() {
        // One key at 100 requests a second against a cap it fills in ~2.7 minutes, run for
        // ~70 minutes: every shard replaces its nonces ~25 times over (where a `HashSet`
        // doubled its table, module `table`).
        let cap = 16 * 1024;
        let c = NonceCache::new(900, cap);
        let mut after_fill = None;
        for i in 0..25 * cap as i64 {
            let now = 100_000 + i / 100;
            assert_eq!(c.check_and_insert("ak", &format!("n{i}"), now, now), Ok(()));
            if i == 2 * cap as i64 {
                after_fill = Some(c.table_slots());
            }
        }
        assert!(c.len() <= cap);
        assert_eq!(after_fill, Some(16 * 2048), "1,024 nonces a shard in 2,048 slots");
        assert_eq!(c.table_slots(), 16 * 2048, "no growth from churn");
    }

    #[test]
    fn the_gauges_show_what_the_cache_holds() {
        let c = NonceCache::new(900, 1 << 20);
        let mut empty = String::new();
        c.render_metrics(&mut empty);
        assert!(empty.contains("\nkms_replay_nonces 0\n") && empty.contains("\nkms_replay_cache_bytes 0\n"), "{empty}");
        for i in 0..1000 {
            c.check_and_insert("ak", &format!("n{i}"), 5_000 + i / 100, 5_010).unwrap();
        }
        let mut text = String::new();
        c.render_metrics(&mut text);
        assert!(text.contains("\nkms_replay_nonces 1000\n"), "{text}");
        let bytes: usize =
            text.lines().find_map(|l| l.strip_prefix("kms_replay_cache_bytes ")).unwrap().parse().unwrap();
        // 1,000 hashes: 8 bytes in a list and 8 in a table slot each, at least; at most the
        // tables at ⅜ full plus the lists' spare room.
        assert!((16_000..=64_000).contains(&bytes), "{bytes} bytes");
    }
}
