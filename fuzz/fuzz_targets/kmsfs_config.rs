//! `kmsfs.conf`, the volume config in the cipher directory (a file an attacker may write).
#![no_main]
use kmsfs::keys::VolumeKeys;
use kmsfs::volume::VolumeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = VolumeConfig::parse("fuzz", data) else { return };
    let id = c.volume_id_bytes().expect("checked by parse");
    let alg = c.algorithm().expect("checked by parse");
    assert!(c.wrapped_key().is_some());
    let keys = VolumeKeys::derive(&[1u8; 32], &id, alg).unwrap();
    let _ = c.verify(&keys);
});
