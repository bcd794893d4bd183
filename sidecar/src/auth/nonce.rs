//! Replay protection: a `SignatureNonce` is accepted once per access key within the window during
//! which its timestamp would be accepted. Nonces are kept as 128-bit keyed hashes in per-minute
//! buckets, sharded to keep lock contention low; whole buckets expire at once.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

use parking_lot::Mutex;

const SHARDS: usize = 16;
const BUCKET_SECS: i64 = 60;

/// Per-minute buckets of nonce hashes, oldest first.
type Buckets = VecDeque<(i64, HashSet<u128>)>;

pub struct NonceCache {
    shards: Vec<Mutex<Buckets>>,
    window_secs: i64,
    keys: (RandomState, RandomState),
}

impl NonceCache {
    /// Remembers each nonce for `window_secs` (twice the accepted clock skew).
    pub fn new(window_secs: i64) -> Self {
        NonceCache {
            shards: (0..SHARDS).map(|_| Mutex::new(VecDeque::new())).collect(),
            window_secs: window_secs.max(BUCKET_SECS),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// `true` if the nonce is new (and records it), `false` if it was seen within the window.
    pub fn check_and_insert(&self, access_key_id: &str, nonce: &str, now: i64) -> bool {
        let h = ((self.keys.0.hash_one((access_key_id, nonce)) as u128) << 64)
            | self.keys.1.hash_one((nonce, access_key_id)) as u128;
        let bucket = now.div_euclid(BUCKET_SECS);
        let oldest = (now - self.window_secs).div_euclid(BUCKET_SECS);
        let mut shard = self.shards[(h as usize) % SHARDS].lock();
        while shard.front().is_some_and(|(b, _)| *b < oldest) {
            shard.pop_front();
        }
        if shard.iter().any(|(_, set)| set.contains(&h)) {
            return false;
        }
        match shard.back_mut() {
            Some((b, set)) if *b == bucket => {
                set.insert(h);
            }
            _ => shard.push_back((bucket, HashSet::from([h]))),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_per_key_within_the_window() {
        let c = NonceCache::new(1800);
        assert!(c.check_and_insert("ak", "n1", 1000));
        assert!(!c.check_and_insert("ak", "n1", 1500));
        assert!(c.check_and_insert("other", "n1", 1500), "nonces are per access key");
        assert!(c.check_and_insert("ak", "n1", 1000 + 1800 + 120), "forgotten after the window");
    }
}
