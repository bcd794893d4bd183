//! RotationInterval values (`7d`, `2592000s`, …): parse within bounds, format back.
#![no_main]
use kms_core::interval::{format_interval, parse_interval};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(secs) = parse_interval("RotationInterval", &s, 7 * 86400, 365 * 86400) {
        assert!((7 * 86400..=365 * 86400).contains(&secs));
        assert_eq!(parse_interval("RotationInterval", &format_interval(secs), 0, i64::MAX).unwrap(), secs);
    }
});
