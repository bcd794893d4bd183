//! The EncryptionContext parameter: a JSON object of string pairs, bounded, made canonical.
#![no_main]
use kms_core::context::EncryptionContext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(c) = EncryptionContext::parse("EncryptionContext", Some(&s), 8192) {
        // Canonical bytes parse back to the same context.
        let canon = String::from_utf8(c.canonical_bytes()).unwrap();
        if !c.is_empty() {
            let again = EncryptionContext::parse("EncryptionContext", Some(&canon), usize::MAX).unwrap();
            assert_eq!(again.canonical_bytes(), c.canonical_bytes());
        }
    }
});
