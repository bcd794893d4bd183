//! Names in a kmsfs cipher directory: encrypted names (base64, padding, EME), the long-name
//! `.name` files checked against the hash in the backing name, and sealed records (symlink
//! targets, xattr values). Input: one byte picks which, the rest is the stored bytes.
#![no_main]
use kms_core::crypto::Algorithm;
use kmsfs::dirs::check_long_name;
use kmsfs::keys::VolumeKeys;
use kmsfs::names::{backing_name, NameCipher};
use kmsfs::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else { return };
    let keys = VolumeKeys::derive(&[1u8; 32], &[2u8; 16], Algorithm::Aes256Gcm).unwrap();
    let iv = [3u8; 16];
    match pick % 4 {
        0 => {
            let names = NameCipher::new(&keys);
            let s = String::from_utf8_lossy(data);
            if let Ok(plain) = names.decrypt(&iv, &s) {
                assert_eq!(names.encrypt(&iv, &plain), s, "names decrypt only from their one encryption");
            }
            let _ = backing_name(&s);
        }
        1 => {
            let (backing, content) = kms_fuzz::split(data, b'\n');
            let _ = check_long_name(&String::from_utf8_lossy(backing), content);
            let s = String::from_utf8_lossy(content);
            let b = backing_name(&s);
            assert!(b.len() <= 255);
            if b != s {
                assert!(check_long_name(&b, s.as_bytes()).is_ok() || s.len() > 4096);
            }
        }
        2 => {
            let _ = records::open_symlink(&keys, data);
            // A backing target that may be a pointer to a long target, and a file's record.
            let (pointer, record) = kms_fuzz::split(data, b'\n');
            if let Some((file, len)) = records::long_pointer(pointer) {
                assert!(len as usize <= records::MAX_TARGET_LEN && !file.contains('/'));
                let _ = records::open_long_target(&keys, file, len, record);
            }
        }
        _ => {
            let _ = records::open(&keys, records::XATTR_DOMAIN, b"bind", data);
        }
    }
});
