//! `kmsfs.conf`, the volume config in the cipher directory (a file an attacker may write).
#![no_main]
use kmsfs::keys::VolumeKeys;
use kmsfs::volume::VolumeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = VolumeConfig::parse("fuzz", data) else { return };
    let keys = VolumeKeys::derive(&[1u8; 32], &c.volume_id, c.cipher).unwrap();
    let _ = c.verify(&keys);
});
