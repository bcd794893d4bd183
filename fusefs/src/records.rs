//! Sealed records kept outside file contents – symlink targets and xattr values (FORMAT.md §6).
//! Each has its own random id, a key derived from it, and a purpose label (plus, for an xattr
//! value, its name) as associated data, so a record cannot be passed off as another kind or moved
//! to another name.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kms_core::crypto::aead::{random_nonce, NONCE_LEN, TAG_LEN};
use zeroize::Zeroizing;

use crate::keys::{VolumeKeys, FILE_ID_LEN};

/// Bytes a record adds to its plaintext: id, nonce, tag.
pub const RECORD_OVERHEAD: usize = FILE_ID_LEN + NONCE_LEN + TAG_LEN;
pub const SYMLINK_DOMAIN: &[u8] = b"kmsfs v1 symlink";
pub const XATTR_DOMAIN: &[u8] = b"kmsfs v1 xattr value";
/// The longest backing symlink target (PATH_MAX less the terminating NUL).
const MAX_STORED_TARGET: usize = 4095;

fn aad(domain: &[u8], bind: &[u8]) -> Vec<u8> {
    [domain, &[0], bind].concat()
}

/// `id ‖ nonce ‖ ciphertext ‖ tag`.
pub fn seal(keys: &VolumeKeys, domain: &[u8], bind: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut id = [0u8; FILE_ID_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let nonce = random_nonce();
    let mut out = Vec::with_capacity(plaintext.len() + RECORD_OVERHEAD);
    out.extend_from_slice(&id);
    out.extend_from_slice(&nonce);
    let at = out.len();
    out.extend_from_slice(plaintext);
    let tag = keys.record_cipher(&id).seal_in_place(&nonce, &aad(domain, bind), &mut out[at..]);
    out.extend_from_slice(&tag);
    out
}

/// The plaintext of a record, or `None` if it was changed, cut, or sealed for something else.
pub fn open(keys: &VolumeKeys, domain: &[u8], bind: &[u8], stored: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if stored.len() < RECORD_OVERHEAD {
        return None;
    }
    let id: &[u8; FILE_ID_LEN] = stored[..FILE_ID_LEN].try_into().ok()?;
    let nonce: &[u8; NONCE_LEN] = stored[FILE_ID_LEN..FILE_ID_LEN + NONCE_LEN].try_into().ok()?;
    keys.record_cipher(id).open(nonce, &aad(domain, bind), &stored[FILE_ID_LEN + NONCE_LEN..])
}

/// The backing target of a symlink to `target`, or `None` if it would exceed PATH_MAX.
pub fn seal_symlink(keys: &VolumeKeys, target: &[u8]) -> Option<String> {
    (target.len() <= max_symlink_target()).then(|| URL_SAFE_NO_PAD.encode(seal(keys, SYMLINK_DOMAIN, b"", target)))
}

pub fn open_symlink(keys: &VolumeKeys, stored: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    open(keys, SYMLINK_DOMAIN, b"", &URL_SAFE_NO_PAD.decode(stored).ok()?)
}

/// The plaintext length of a symlink whose backing target has `stored_len` characters (what
/// `stat` reports, computed without decrypting).
pub fn symlink_len(stored_len: u64) -> u64 {
    (stored_len * 3 / 4).saturating_sub(RECORD_OVERHEAD as u64)
}

/// The longest plaintext target: its sealed, base64url form must fit PATH_MAX.
pub fn max_symlink_target() -> usize {
    MAX_STORED_TARGET * 3 / 4 - RECORD_OVERHEAD
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;

    use super::*;

    #[test]
    fn records_bind_their_purpose_and_name() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            let keys = VolumeKeys::derive(&[5; 32], &[6; 16], alg).unwrap();
            let s = seal_symlink(&keys, b"../target/file").unwrap();
            assert_eq!(&open_symlink(&keys, s.as_bytes()).unwrap()[..], b"../target/file");
            assert_eq!(symlink_len(s.len() as u64), 14);
            assert_ne!(seal_symlink(&keys, b"../target/file").unwrap(), s, "a fresh id and nonce each time");
            // Flipped character, wrong purpose, wrong name: all refused.
            let mut bad = s.clone().into_bytes();
            bad[30] = if bad[30] == b'A' { b'B' } else { b'A' };
            assert!(open_symlink(&keys, &bad).is_none());
            let v = seal(&keys, XATTR_DOMAIN, b"user.a", b"value");
            assert_eq!(&open(&keys, XATTR_DOMAIN, b"user.a", &v).unwrap()[..], b"value");
            assert!(open(&keys, XATTR_DOMAIN, b"user.b", &v).is_none(), "moved to another name");
            assert!(open(&keys, SYMLINK_DOMAIN, b"", &v).is_none(), "passed off as a symlink");
            assert!(
                open(&keys, XATTR_DOMAIN, b"user.a", &[0u8; RECORD_OVERHEAD + 5]).is_none(),
                "zeros are no hole here"
            );
            // The longest target fits PATH_MAX once sealed; one more byte is refused.
            let max = max_symlink_target();
            assert!(seal_symlink(&keys, &vec![b'a'; max]).unwrap().len() <= MAX_STORED_TARGET);
            assert!(seal_symlink(&keys, &vec![b'a'; max + 1]).is_none());
        }
    }
}
