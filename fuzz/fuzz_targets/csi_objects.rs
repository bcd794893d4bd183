//! A SecretProviderClass's `objects` YAML and jmesPath expressions (the CSI provider's input,
//! written by whoever may create a SecretProviderClass): parsing never panics, and every file
//! name it accepts stays inside the volume.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let (objects, rest) = s.split_once('\u{0}').unwrap_or((&s, ""));
    for translate in [None, Some("False"), Some("-")] {
        if let Ok(list) = kms_sidecar::fuzzing::csi_objects(objects, translate) {
            for f in list {
                assert!(!f.starts_with('/') && !f.split('/').any(|p| p == ".." || p.is_empty()), "{f:?}");
            }
        }
    }
    let (value, path) = rest.split_once('\u{0}').unwrap_or((rest, "a"));
    let _ = kms_sidecar::fuzzing::jmes_select(value, path);
});
