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

/// The longest symlink target, as ext4 allows (PATH_MAX less the terminating NUL).
pub const MAX_TARGET_LEN: usize = 4095;
/// The backing target of a symlink whose sealed target is kept in a file (FORMAT.md §6).
pub const LONG_TARGET_PREFIX: &str = "kmsfs.longlink.";
/// The characters of an inline sealed target of an empty target: every inline one has at least
/// this many, every pointer to a long one fewer.
const SHORTEST_INLINE: u64 = (RECORD_OVERHEAD * 4).div_ceil(3) as u64;
/// base64url of a record id.
const ID_CHARS: usize = (FILE_ID_LEN * 4).div_ceil(3);

/// What a symlink to a target is stored as.
pub enum SealedTarget {
    /// base64url of the record, as the backing symlink's target.
    Inline(String),
    /// Too long for that: the record goes into a file, the symlink points at it.
    Long(LongTarget),
}

pub struct LongTarget {
    /// The backing symlink's target: [`LONG_TARGET_PREFIX`] ‖ `file` ‖ `.` ‖ plaintext length.
    pub pointer: String,
    /// The file's name: base64url of the record id.
    pub file: String,
    pub record: Vec<u8>,
}

/// How a symlink to `target` is stored, or `None` if the target is longer than Linux allows.
pub fn seal_symlink(keys: &VolumeKeys, target: &[u8]) -> Option<SealedTarget> {
    if target.len() > MAX_TARGET_LEN {
        return None;
    }
    let record = seal(keys, SYMLINK_DOMAIN, b"", target);
    if target.len() <= max_inline_target() {
        return Some(SealedTarget::Inline(URL_SAFE_NO_PAD.encode(record)));
    }
    let file = URL_SAFE_NO_PAD.encode(&record[..FILE_ID_LEN]);
    let pointer = format!("{LONG_TARGET_PREFIX}{file}.{}", target.len());
    Some(SealedTarget::Long(LongTarget { pointer, file, record }))
}

/// The target of an inline sealed target.
pub fn open_symlink(keys: &VolumeKeys, stored: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    open(keys, SYMLINK_DOMAIN, b"", &URL_SAFE_NO_PAD.decode(stored).ok()?)
}

/// A backing target that points at a long target's file: the file's name and the plaintext
/// length the pointer claims (checked against the record when it is opened).
pub fn long_pointer(stored: &[u8]) -> Option<(&str, u64)> {
    let rest = std::str::from_utf8(stored.strip_prefix(LONG_TARGET_PREFIX.as_bytes())?).ok()?;
    let (file, len) = rest.split_once('.')?;
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if file.len() != ID_CHARS || !file.bytes().all(b64) || len.is_empty() || !len.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let len: u64 = len.parse().ok()?;
    (max_inline_target() as u64 + 1..=MAX_TARGET_LEN as u64).contains(&len).then_some((file, len))
}

/// The target sealed in `record`, read from the file `file` a pointer named with `len`: only if
/// it is the record that name promises (its id) and as long as the pointer says – a record
/// moved to another file, or a pointer changed, does not open.
pub fn open_long_target(keys: &VolumeKeys, file: &str, len: u64, record: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if record.len() < FILE_ID_LEN || URL_SAFE_NO_PAD.encode(&record[..FILE_ID_LEN]) != file {
        return None;
    }
    open(keys, SYMLINK_DOMAIN, b"", record).filter(|t| t.len() as u64 == len)
}

/// The plaintext length of a symlink whose backing target has `stored_len` characters (what
/// `stat` reports, computed without decrypting), or `None` for a pointer to a long target,
/// whose length only the pointer itself holds.
pub fn symlink_len(stored_len: u64) -> Option<u64> {
    (stored_len >= SHORTEST_INLINE).then(|| (stored_len * 3 / 4).saturating_sub(RECORD_OVERHEAD as u64))
}

/// The longest target sealed inline: its sealed, base64url form must fit PATH_MAX.
pub fn max_inline_target() -> usize {
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
            let inline = |t: &[u8]| match seal_symlink(&keys, t).unwrap() {
                SealedTarget::Inline(s) => s,
                SealedTarget::Long(_) => panic!("{} bytes stored long", t.len()),
            };
            let s = inline(b"../target/file");
            assert_eq!(&open_symlink(&keys, s.as_bytes()).unwrap()[..], b"../target/file");
            assert_eq!(symlink_len(s.len() as u64), Some(14));
            assert_ne!(inline(b"../target/file"), s, "a fresh id and nonce each time");
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
            // The longest inline target fits PATH_MAX once sealed, and every inline target is
            // longer than any pointer.
            let max = max_inline_target();
            assert!(inline(&vec![b'a'; max]).len() <= MAX_STORED_TARGET);
            assert_eq!(symlink_len(inline(b"").len() as u64), Some(0));
            // Beyond it, up to 4,095 bytes: a pointer to a file holding the record.
            for len in [max + 1, MAX_TARGET_LEN] {
                let target = vec![b'b'; len];
                let SealedTarget::Long(t) = seal_symlink(&keys, &target).unwrap() else { panic!("inline") };
                assert!(symlink_len(t.pointer.len() as u64).is_none());
                let (file, claimed) = long_pointer(t.pointer.as_bytes()).unwrap();
                assert_eq!((file, claimed), (t.file.as_str(), len as u64));
                assert_eq!(&open_long_target(&keys, file, claimed, &t.record).unwrap()[..], &target[..]);
                // A record under another file name, or a pointer claiming another length: refused.
                let other = match seal_symlink(&keys, &target).unwrap() {
                    SealedTarget::Long(o) => o,
                    SealedTarget::Inline(_) => unreachable!(),
                };
                assert!(open_long_target(&keys, file, claimed, &other.record).is_none());
                assert!(long_pointer(format!("{LONG_TARGET_PREFIX}{file}.{}", len + 1).as_bytes())
                    .is_none_or(|(f, l)| open_long_target(&keys, f, l, &t.record).is_none()));
            }
            assert!(seal_symlink(&keys, &vec![b'a'; MAX_TARGET_LEN + 1]).is_none());
            for bad in ["kmsfs.longlink.", "kmsfs.longlink.../../x.4000", "kmsfs.longlink.AAAAAAAAAAAAAAAAAAAAAA.12"] {
                assert!(long_pointer(bad.as_bytes()).is_none(), "{bad}");
            }
        }
    }
}
