//! The secrets agent's `/v1/<percent-encoded secret name>` path.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let decoded = kms_sidecar::fuzzing::percent_decode(&s);
    assert!(decoded.len() <= s.len() * 3);
});
