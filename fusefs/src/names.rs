//! File names on disk (FORMAT.md §4): each name is sealed with SIV (RFC 5297; AES-256-SIV, or
//! the same construction over SM4 for SM4 volumes) under the volume's name key, with the
//! directory's random IV as associated data. SIV is deterministic, so a name can be looked up by
//! encrypting it; the directory IV makes the same name differ between directories; the SIV tag
//! authenticates, so a tampered name is an error, not garbage.

use aes_siv::aead::{Aead, KeyInit, Payload};
use aes_siv::siv::CmacSiv;
use aes_siv::{Aes256SivAead, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kms_core::crypto::Algorithm;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::VolumeKeys;

pub const DIR_IV_LEN: usize = 16;
/// The longest backing name stored as is (the usual NAME_MAX); longer ones are hashed.
pub const MAX_BACKING_NAME: usize = 255;
/// Prefix of the backing name of a long name; the full encrypted name lives beside it.
pub const LONG_NAME_PREFIX: &str = "kmsfs.long.";
const NAME_DOMAIN: &[u8] = b"kmsfs v1 name";

type Sm4Siv = CmacSiv<sm4::Sm4>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("encrypted name is not valid base64url")]
    Encoding,
    #[error("encrypted name does not authenticate in this directory")]
    Corrupt,
}

/// The SIV with headers [domain label, directory IV] (for AES through the AEAD interface, where
/// the IV is the nonce, RFC 5297's last header – the same construction).
pub enum NameCipher {
    Aes(Box<Aes256SivAead>),
    /// `Siv` takes `&mut self`; keyed afresh per name (an SM4 key schedule is a few hundred
    /// nanoseconds) rather than serialising every lookup behind a lock.
    Sm4(Zeroizing<[u8; 32]>),
}

impl NameCipher {
    pub fn new(keys: &VolumeKeys) -> NameCipher {
        let k = keys.names_key();
        match keys.cipher() {
            Algorithm::Aes256Gcm => {
                NameCipher::Aes(Box::new(Aes256SivAead::new_from_slice(&k[..]).expect("64-byte SIV key")))
            }
            Algorithm::Sm4Gcm => NameCipher::Sm4(Zeroizing::new(k[..32].try_into().expect("64 >= 32"))),
        }
    }

    /// The encrypted form of `name` in the directory with IV `dir_iv`: base64url(tag ‖ ciphertext).
    pub fn encrypt(&self, dir_iv: &[u8; DIR_IV_LEN], name: &[u8]) -> String {
        let (nonce, msg) = (Nonce::from_slice(dir_iv), Payload { msg: name, aad: NAME_DOMAIN });
        let sealed = match self {
            NameCipher::Aes(c) => c.encrypt(nonce, msg),
            NameCipher::Sm4(k) => sm4_siv(k).encrypt([NAME_DOMAIN, &dir_iv[..]], name),
        }
        .expect("SIV takes any name");
        URL_SAFE_NO_PAD.encode(sealed)
    }

    pub fn decrypt(&self, dir_iv: &[u8; DIR_IV_LEN], encrypted: &str) -> Result<Vec<u8>, NameError> {
        let sealed = URL_SAFE_NO_PAD.decode(encrypted).map_err(|_| NameError::Encoding)?;
        let (nonce, msg) = (Nonce::from_slice(dir_iv), Payload { msg: &sealed, aad: NAME_DOMAIN });
        match self {
            NameCipher::Aes(c) => c.decrypt(nonce, msg),
            NameCipher::Sm4(k) => sm4_siv(k).decrypt([NAME_DOMAIN, &dir_iv[..]], &sealed),
        }
        .map_err(|_| NameError::Corrupt)
    }
}

fn sm4_siv(key: &[u8; 32]) -> Sm4Siv {
    use aes_siv::KeyInit as _;
    Sm4Siv::new_from_slice(key).expect("32-byte SM4-SIV key")
}

/// The name of the backing file for an encrypted name: itself, or for one longer than
/// [`MAX_BACKING_NAME`] a fixed-length hash of it (the full name is then stored beside it).
pub fn backing_name(encrypted: &str) -> std::borrow::Cow<'_, str> {
    if encrypted.len() <= MAX_BACKING_NAME {
        return encrypted.into();
    }
    let h = Sha256::digest(encrypted.as_bytes());
    format!("{LONG_NAME_PREFIX}{}", URL_SAFE_NO_PAD.encode(h)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(alg: Algorithm) -> NameCipher {
        NameCipher::new(&VolumeKeys::derive(&[5; 32], &[6; 16], alg).unwrap())
    }

    #[test]
    fn names_round_trip_deterministically_per_directory() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            let c = cipher(alg);
            let (d1, d2) = ([1u8; 16], [2u8; 16]);
            let e = c.encrypt(&d1, "报告 2026.txt".as_bytes());
            assert_eq!(c.encrypt(&d1, "报告 2026.txt".as_bytes()), e, "lookups re-encrypt the name");
            assert_ne!(c.encrypt(&d2, "报告 2026.txt".as_bytes()), e, "another directory, another name");
            assert_eq!(c.decrypt(&d1, &e).unwrap(), "报告 2026.txt".as_bytes());
            assert_eq!(c.decrypt(&d2, &e), Err(NameError::Corrupt), "moved to another directory");
            assert!(!e.contains('/') && !e.starts_with('.'), "{e}");
        }
    }

    #[test]
    fn both_ciphers_use_the_same_headers() {
        use aes_siv::KeyInit as _;
        let keys = VolumeKeys::derive(&[5; 32], &[6; 16], Algorithm::Aes256Gcm).unwrap();
        let d = [4u8; 16];
        let via_aead = URL_SAFE_NO_PAD.decode(NameCipher::new(&keys).encrypt(&d, b"n")).unwrap();
        let mut siv = aes_siv::siv::Aes256Siv::new_from_slice(&keys.names_key()[..]).unwrap();
        assert_eq!(siv.encrypt([NAME_DOMAIN, &d[..]], b"n").unwrap(), via_aead, "SIV over [domain, dir IV]");
    }

    #[test]
    fn tampered_names_are_refused() {
        let c = cipher(Algorithm::Aes256Gcm);
        let d = [9u8; 16];
        let e = c.encrypt(&d, b"secret-plan.md");
        let mut raw = URL_SAFE_NO_PAD.decode(&e).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            assert_eq!(c.decrypt(&d, &URL_SAFE_NO_PAD.encode(&raw)), Err(NameError::Corrupt), "byte {i}");
            raw[i] ^= 1;
        }
        assert_eq!(c.decrypt(&d, "not base64!"), Err(NameError::Encoding));
        assert_eq!(c.decrypt(&d, ""), Err(NameError::Corrupt));
    }

    #[test]
    fn long_names_get_fixed_length_backing_names() {
        let c = cipher(Algorithm::Aes256Gcm);
        let d = [3u8; 16];
        let short = c.encrypt(&d, b"short");
        assert_eq!(backing_name(&short), short.as_str());
        let long = c.encrypt(&d, "x".repeat(255).as_bytes());
        assert!(long.len() > MAX_BACKING_NAME);
        let b = backing_name(&long);
        assert!(b.starts_with(LONG_NAME_PREFIX) && b.len() < 64, "{b}");
        assert_eq!(backing_name(&long), b, "stable");
    }
}
