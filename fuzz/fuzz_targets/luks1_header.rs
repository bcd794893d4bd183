//! The LUKS1 header of an image someone else may have written: parse, derived sizes, serialise
//! back, and unlock its keyslots (PBKDF2, AF-merge, digest check) with a passphrase.
#![no_main]
use blockcrypt::luks1::{Header, MIN_ITERATIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Header::parse(data) else { return };
    let _ = (h.keyslots_end(), h.payload_bytes());
    let again = Header::parse(&h.to_bytes()).expect("a parsed header serialises to a valid one");
    assert_eq!(again.to_bytes(), h.to_bytes());
    // Unlocking runs PBKDF2 with the header's own counts: keep each run short here; how large a
    // count `serve` accepts is the header parser's decision, not this target's.
    if h.mk_digest_iter <= MIN_ITERATIONS && h.slots.iter().all(|s| s.iterations <= MIN_ITERATIONS) {
        let _ = h.unlock(data, b"passphrase");
    }
});
