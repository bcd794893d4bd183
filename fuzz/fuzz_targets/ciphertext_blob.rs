//! The symmetric ciphertext blob (kms-core/FORMAT.md §1): header parse, then opening under a key
//! with the header's algorithm, as Decrypt does after resolving the key.
#![no_main]
use kms_core::crypto::{blob, SymCipher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(h) = blob::parse(data) else { return };
    assert!(h.len <= data.len());
    let cipher = SymCipher::new(h.algorithm, &[7u8; 32][..h.algorithm.key_len()]).unwrap();
    let _ = blob::open(&cipher, &h, data, b"{}");
});
