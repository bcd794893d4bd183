//! Extended attributes (FORMAT.md §7): a plaintext attribute `name` is stored on the backing
//! object as `user.kmsfs.<SIV(name)>` (deterministic, so it can be looked up) and its value as a
//! sealed record bound to the name. Any namespace the kernel lets through (user, trusted,
//! security) is kept this way, except two that are not the volume's to hold, which are refused
//! with EOPNOTSUPP on every call (as a filesystem without them answers, ext4 `-o noacl` say):
//! `system.*` (POSIX ACLs, which the kernel would have to interpret and enforce) and
//! `security.selinux` (the label is the security module's: on a SELinux host the kernel answers it
//! for a FUSE mount itself and refuses to store one; without one a stored label would only
//! mislead). "Not supported" rather than "absent" also lets `ls -l`, `cp -a` and `getfacl` stop
//! asking for the rest of the mount – `ls -lR` otherwise made two round trips to the daemon per
//! file for them.

use crate::keys::VolumeKeys;
use crate::names::{NameCipher, DIR_IV_LEN};
use crate::records::{self, XATTR_DOMAIN};

pub const BACKING_PREFIX: &str = "user.kmsfs.";
/// Stands in for a directory IV: xattr names are their own domain.
const XATTR_IV: [u8; DIR_IV_LEN] = *b"kmsfs v1 xattr\0\0";
/// XATTR_NAME_MAX of the backing filesystem.
const MAX_BACKING_NAME: usize = 255;

#[derive(Debug, PartialEq, Eq)]
pub enum XattrError {
    /// A name that is not stored (`system.*`, `security.selinux`) or no namespace at all.
    Unsupported,
    /// The encrypted name would exceed the backing filesystem's limit.
    TooLong,
}

pub fn backing_name(names: &NameCipher, name: &[u8]) -> Result<String, XattrError> {
    if name.starts_with(b"system.") || name == b"security.selinux" || !name.contains(&b'.') {
        return Err(XattrError::Unsupported);
    }
    let backing = format!("{BACKING_PREFIX}{}", names.encrypt(&XATTR_IV, name));
    if backing.len() > MAX_BACKING_NAME {
        return Err(XattrError::TooLong);
    }
    Ok(backing)
}

/// The plaintext name of a backing attribute; `None` for attributes that are not ours or do not
/// authenticate (they are left out of listings).
pub fn plain_name(names: &NameCipher, backing: &[u8]) -> Option<Vec<u8>> {
    let enc = std::str::from_utf8(backing.strip_prefix(BACKING_PREFIX.as_bytes())?).ok()?;
    names.decrypt(&XATTR_IV, enc).ok()
}

pub fn seal_value(keys: &VolumeKeys, name: &[u8], value: &[u8]) -> Vec<u8> {
    records::seal(keys, XATTR_DOMAIN, name, value)
}

pub fn open_value(keys: &VolumeKeys, name: &[u8], stored: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    records::open(keys, XATTR_DOMAIN, name, stored)
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;

    use super::*;

    #[test]
    fn names_round_trip_and_namespaces_are_checked() {
        let keys = VolumeKeys::derive(&[1; 32], &[2; 16], Algorithm::Aes256Gcm).unwrap();
        let names = NameCipher::new(&keys);
        let b = backing_name(&names, b"user.mime_type").unwrap();
        assert!(b.starts_with(BACKING_PREFIX) && !b.contains("mime"));
        assert_eq!(backing_name(&names, b"user.mime_type").unwrap(), b, "deterministic");
        assert_eq!(plain_name(&names, b.as_bytes()).unwrap(), b"user.mime_type");
        assert_eq!(plain_name(&names, b"user.other"), None);
        assert_eq!(backing_name(&names, b"system.posix_acl_access"), Err(XattrError::Unsupported));
        assert_eq!(backing_name(&names, b"security.selinux"), Err(XattrError::Unsupported));
        assert!(backing_name(&names, b"security.capability").is_ok());
        assert_eq!(backing_name(&names, &[b'u'; 200]), Err(XattrError::Unsupported));
        let long = [b"user.".to_vec(), vec![b'x'; 200]].concat();
        assert_eq!(backing_name(&names, &long), Err(XattrError::TooLong));
        let v = seal_value(&keys, b"user.a", b"1");
        assert_eq!(&open_value(&keys, b"user.a", &v).unwrap()[..], b"1");
        assert!(open_value(&keys, b"trusted.a", &v).is_none());
    }
}
