//! The replay cache (`auth::nonce`) under arbitrary request streams: three access keys, a small
//! space of nonces, timestamps anywhere in the skew, a clock that moves either way, and replays of
//! earlier accepted requests. Whatever the order: an exact replay of an accepted request still
//! inside the skew is refused, and no key holds more than its cap. The cap is 4 nonces a shard,
//! so eviction, the horizon and the lookup table's growing and shrinking happen within a few
//! operations.
#![no_main]
use kms_sidecar::auth::nonce::{NonceCache, Refused};
use libfuzzer_sys::fuzz_target;

const SKEW: i64 = 900;
const CAP: usize = 64;
const KEYS: [&str; 3] = ["a", "b", "c"];

fuzz_target!(|data: &[u8]| {
    let cache = NonceCache::new(SKEW, CAP);
    let mut now: i64 = 1_000_000;
    // Requests accepted so far: (key, nonce, timestamp).
    let mut accepted: Vec<(usize, u16, i64)> = Vec::new();
    // Four bytes an operation: b0 = kind (bit 0), key (bits 1–2), clock step (bits 3–7: −8..=23 s);
    // a new request takes its timestamp offset from b1 and its nonce from b2..b3, a replay picks
    // an accepted request with b1..b3.
    for op in data.chunks_exact(4) {
        now += i64::from(op[0] >> 3) - 8;
        let (key, nonce, ts, replay) = if op[0] & 1 == 1 && !accepted.is_empty() {
            let pick = u32::from_le_bytes([op[1], op[2], op[3], 0]) as usize % accepted.len();
            let (k, n, t) = accepted[pick];
            (k, n, t, true)
        } else {
            let k = usize::from(op[0] >> 1 & 3) % KEYS.len();
            let ts = now + (i64::from(op[1] as i8) * 8).clamp(-SKEW, SKEW);
            (k, u16::from_le_bytes([op[2], op[3]]), ts, false)
        };
        // The authenticator refuses a timestamp outside the skew before it asks the cache.
        if (ts - now).abs() > SKEW {
            continue;
        }
        let r = cache.check_and_insert(KEYS[key], &format!("{nonce:04x}"), ts, now);
        if replay {
            assert!(r.is_err(), "replay of {key}/{nonce:04x}@{ts} accepted at {now}");
        }
        if r.is_ok() {
            // Sent again at once, it is a replay however full the shard is.
            assert_eq!(cache.check_and_insert(KEYS[key], &format!("{nonce:04x}"), ts, now), Err(Refused::Replayed));
            accepted.push((key, nonce, ts));
        }
        assert!(cache.len() <= CAP * KEYS.len(), "{} nonces held", cache.len());
    }
});
