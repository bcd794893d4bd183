//! AES-256-GCM and SM4-GCM behind one type. Both use a 96-bit nonce and a 128-bit tag; SM4-GCM is
//! the same GCM construction over the SM4 block cipher (GB/T 32907), as RFC 8998 specifies it.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, AesGcm, Nonce, Tag};
use zeroize::Zeroizing;

use crate::model::KeySpec;

type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// Algorithm identifiers as they appear in ciphertext blobs (kms-core/FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    Aes256Gcm = 1,
    Sm4Gcm = 2,
}

impl Algorithm {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Algorithm::Aes256Gcm),
            2 => Some(Algorithm::Sm4Gcm),
            _ => None,
        }
    }

    pub fn for_spec(spec: KeySpec) -> Option<Self> {
        match spec {
            KeySpec::Aes256 => Some(Algorithm::Aes256Gcm),
            KeySpec::Sm4 => Some(Algorithm::Sm4Gcm),
            _ => None,
        }
    }

    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 32,
            Algorithm::Sm4Gcm => 16,
        }
    }
}

/// A keyed AEAD. The key schedule is zeroized when the value is dropped (the `zeroize` features of
/// `aes` and `sm4`).
pub enum SymCipher {
    Aes(Box<Aes256Gcm>),
    Sm4(Box<Sm4Gcm>),
}

impl SymCipher {
    /// `None` when the key length does not fit the algorithm.
    pub fn new(alg: Algorithm, key: &[u8]) -> Option<Self> {
        if key.len() != alg.key_len() {
            return None;
        }
        Some(match alg {
            Algorithm::Aes256Gcm => SymCipher::Aes(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            Algorithm::Sm4Gcm => SymCipher::Sm4(Box::new(Sm4Gcm::new_from_slice(key).ok()?)),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            SymCipher::Aes(_) => Algorithm::Aes256Gcm,
            SymCipher::Sm4(_) => Algorithm::Sm4Gcm,
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let n = Nonce::from_slice(nonce);
        let tag = match self {
            SymCipher::Aes(c) => c.encrypt_in_place_detached(n, aad, buf),
            SymCipher::Sm4(c) => c.encrypt_in_place_detached(n, aad, buf),
        }
        .expect("GCM accepts any message below 64 GiB");
        tag.into()
    }

    /// Decrypts `ct‖tag`; `None` on any authentication failure. The tag check is constant time
    /// (the `aes-gcm` crate compares with `subtle`).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ct_and_tag: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if ct_and_tag.len() < TAG_LEN {
            return None;
        }
        let (ct, tag) = ct_and_tag.split_at(ct_and_tag.len() - TAG_LEN);
        let mut out = Zeroizing::new(ct.to_vec());
        let n = Nonce::from_slice(nonce);
        let t = Tag::from_slice(tag);
        let ok = match self {
            SymCipher::Aes(c) => c.decrypt_in_place_detached(n, aad, &mut out, t),
            SymCipher::Sm4(c) => c.decrypt_in_place_detached(n, aad, &mut out, t),
        };
        ok.ok().map(|_| out)
    }

    /// Decrypts `buf` in place against a detached tag; `false` (and `buf` zeroed, so no
    /// unauthenticated plaintext is left behind) on any authentication failure.
    pub fn open_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let n = Nonce::from_slice(nonce);
        let t = Tag::from_slice(tag);
        let ok = match self {
            SymCipher::Aes(c) => c.decrypt_in_place_detached(n, aad, buf, t),
            SymCipher::Sm4(c) => c.decrypt_in_place_detached(n, aad, buf, t),
        }
        .is_ok();
        if !ok {
            zeroize::Zeroize::zeroize(buf);
        }
        ok
    }

    /// Seals `plaintext` into a fresh `ct‖tag` vector.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(nonce, aad, &mut out);
        out.extend_from_slice(&tag);
        out
    }
}

/// What a ciphertext blob is sealed with: a cipher in this process, or an AES key inside a
/// PKCS#11 token. Both are AES-GCM with a 96-bit nonce and a 128-bit tag, so the blob is the same.
pub trait BlobAead {
    fn algorithm(&self) -> Algorithm;
    /// The in-process cipher, for the allocation-free path.
    fn as_sym(&self) -> Option<&SymCipher> {
        None
    }
    /// `ct‖tag`.
    fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, super::seal::SealError>;
    /// `Ok(None)` when the tag does not verify.
    fn open_checked(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_and_tag: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, super::seal::SealError>;
}

impl BlobAead for SymCipher {
    fn algorithm(&self) -> Algorithm {
        SymCipher::algorithm(self)
    }

    fn as_sym(&self) -> Option<&SymCipher> {
        Some(self)
    }

    fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, super::seal::SealError> {
        Ok(self.seal(nonce, aad, plaintext))
    }

    fn open_checked(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_and_tag: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, super::seal::SealError> {
        Ok(self.open(nonce, aad, ct_and_tag))
    }
}

/// A fresh random nonce from the thread-local CSPRNG.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    use rand::RngCore;
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// NIST GCM test case 14 (AES-256, zero key, one zero block).
    #[test]
    fn aes_256_gcm_known_answer() {
        let c = SymCipher::new(Algorithm::Aes256Gcm, &[0u8; 32]).unwrap();
        let out = c.seal(&[0u8; 12], b"", &[0u8; 16]);
        assert_eq!(out[..16], hex("cea7403d4d606b6e074ec5d3baf39d18")[..]);
        assert_eq!(out[16..], hex("d0d1c8a799996bf0265b98b5d48ab919")[..]);
    }

    /// RFC 8998 Appendix A.1 (SM4-GCM).
    #[test]
    fn sm4_gcm_known_answer() {
        let key = hex("0123456789ABCDEFFEDCBA9876543210");
        let nonce: [u8; 12] = hex("00001234567800000000ABCD").try_into().unwrap();
        let aad = hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
        let pt = hex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDDEEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA");
        let c = SymCipher::new(Algorithm::Sm4Gcm, &key).unwrap();
        let out = c.seal(&nonce, &aad, &pt);
        let expect_ct = hex("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D");
        assert_eq!(out[..pt.len()], expect_ct[..]);
        assert_eq!(out[pt.len()..], hex("83DE3541E4C2B58177E065A9BF7B62EC")[..]);
        assert_eq!(&c.open(&nonce, &aad, &out).unwrap()[..], &pt[..]);
    }

    #[test]
    fn wrong_key_length_is_refused() {
        assert!(SymCipher::new(Algorithm::Aes256Gcm, &[0u8; 16]).is_none());
        assert!(SymCipher::new(Algorithm::Sm4Gcm, &[0u8; 32]).is_none());
    }
}
