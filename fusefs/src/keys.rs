//! The key hierarchy of a volume (FORMAT.md §2): the data key (DK) from the KMS is never used
//! directly; HKDF-SHA256 derives one subkey per purpose, and every file gets its own content key
//! from its random file id, so no single GCM key comes near its nonce budget however much the
//! volume holds.

use hkdf::Hkdf;
use kms_core::crypto::{Algorithm, SymCipher};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::block_aead::BlockAead;

/// The DK length: 32 bytes whatever the cipher (subkeys are cut to the cipher's key length).
pub const DATA_KEY_LEN: usize = 32;
pub const VOLUME_ID_LEN: usize = 16;
pub const FILE_ID_LEN: usize = 16;

/// HKDF `info` labels; each purpose has its own, so no key is ever used for two things.
const CONTENT_LABEL: &[u8] = b"kmsfs v1 content";
const NAMES_LABEL: &[u8] = b"kmsfs v1 names";
const CONFIG_MAC_LABEL: &[u8] = b"kmsfs v1 config mac";
const FILE_LABEL: &[u8] = b"kmsfs v1 file key\0";
const RECORD_LABEL: &[u8] = b"kmsfs v1 record key\0";

/// The keys of a mounted volume, derived once at mount from the unwrapped DK.
pub struct VolumeKeys {
    cipher: Algorithm,
    content: Zeroizing<[u8; 32]>,
    names: Zeroizing<[u8; 64]>,
    config_mac: Zeroizing<[u8; 32]>,
}

/// Shows the cipher only: key bytes never reach a log or an error.
impl std::fmt::Debug for VolumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeKeys").field("cipher", &self.cipher).finish_non_exhaustive()
    }
}

impl VolumeKeys {
    /// `None` when the DK has the wrong length.
    pub fn derive(dk: &[u8], volume_id: &[u8; VOLUME_ID_LEN], cipher: Algorithm) -> Option<VolumeKeys> {
        if dk.len() != DATA_KEY_LEN {
            return None;
        }
        // The volume id is the salt: two volumes given the same DK (a restored backup, a copied
        // config) still have unrelated subkeys.
        let hk = Hkdf::<Sha256>::new(Some(volume_id), dk);
        let mut keys = VolumeKeys {
            cipher,
            content: Zeroizing::new([0; 32]),
            names: Zeroizing::new([0; 64]),
            config_mac: Zeroizing::new([0; 32]),
        };
        hk.expand(CONTENT_LABEL, &mut keys.content[..]).expect("32 bytes is a valid HKDF length");
        hk.expand(NAMES_LABEL, &mut keys.names[..]).expect("64 bytes is a valid HKDF length");
        hk.expand(CONFIG_MAC_LABEL, &mut keys.config_mac[..]).expect("32 bytes is a valid HKDF length");
        Some(keys)
    }

    pub fn cipher(&self) -> Algorithm {
        self.cipher
    }

    /// The content cipher of one file: HKDF(content key, "kmsfs v1 file key\0" ‖ file id).
    pub fn file_cipher(&self, file_id: &[u8; FILE_ID_LEN]) -> BlockAead {
        let key = self.content_subkey_bytes(FILE_LABEL, file_id);
        BlockAead::new(self.cipher, &key[..self.cipher.key_len()]).expect("the length was cut for the cipher")
    }

    /// The cipher of one sealed record (a symlink target, an xattr value) with its random id.
    pub fn record_cipher(&self, record_id: &[u8; FILE_ID_LEN]) -> SymCipher {
        self.content_subkey(RECORD_LABEL, record_id)
    }

    fn content_subkey(&self, label: &[u8], id: &[u8; FILE_ID_LEN]) -> SymCipher {
        let key = self.content_subkey_bytes(label, id);
        SymCipher::new(self.cipher, &key[..self.cipher.key_len()]).expect("the length was cut for the cipher")
    }

    fn content_subkey_bytes(&self, label: &[u8], id: &[u8; FILE_ID_LEN]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::from_prk(&self.content[..]).expect("32 bytes is a valid PRK");
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand_multi_info(&[label, id], &mut key[..self.cipher.key_len()]).expect("valid HKDF length");
        key
    }

    /// The key for file names (64 bytes: a SIV key pair).
    pub fn names_key(&self) -> &[u8; 64] {
        &self.names
    }

    /// The key that authenticates the volume config.
    pub fn config_mac_key(&self) -> &[u8; 32] {
        &self.config_mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DK: [u8; 32] = [7; 32];
    const VOL: [u8; 16] = [1; 16];

    #[test]
    fn subkeys_are_distinct_and_bound_to_the_volume() {
        let a = VolumeKeys::derive(&DK, &VOL, Algorithm::Aes256Gcm).unwrap();
        let b = VolumeKeys::derive(&DK, &[2; 16], Algorithm::Aes256Gcm).unwrap();
        assert_ne!(a.content[..], a.config_mac[..]);
        assert_ne!(a.content[..], a.names[..32]);
        assert_ne!(a.content[..], b.content[..], "another volume id, other keys");
        assert!(VolumeKeys::derive(&DK[..16], &VOL, Algorithm::Aes256Gcm).is_none());
    }

    #[test]
    fn file_keys_differ_per_file_and_fit_the_cipher() {
        let k = VolumeKeys::derive(&DK, &VOL, Algorithm::Aes256Gcm).unwrap();
        let nonce = [0u8; 12];
        let seal = |k: &VolumeKeys, id: u8| {
            let mut m = *b"same";
            let tag = k.file_cipher(&[id; 16]).seal_in_place(&nonce, b"", &mut m);
            (m, tag)
        };
        assert_ne!(seal(&k, 1), seal(&k, 2));
        assert_eq!(seal(&k, 1), seal(&k, 1), "deterministic per file id");
        let sm4 = VolumeKeys::derive(&DK, &VOL, Algorithm::Sm4Gcm).unwrap();
        assert!(matches!(sm4.file_cipher(&[1; 16]), BlockAead::Other(ref c) if c.algorithm() == Algorithm::Sm4Gcm));
    }
}
