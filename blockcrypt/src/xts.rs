//! The sector cipher: XTS with the dm-crypt `plain64` IV (the little-endian sector number,
//! counted in 512-byte units from the payload start), applied to whole sectors.
//!
//! AES goes through OpenSSL's EVP XTS: keyed contexts from a `ContextPool`, reused with only the
//! IV reset per sector (the key schedule once per context, not per sector), which keeps AES-NI/
//! VAES pipelines full. SM4 goes through the same XTS construction (IEEE 1619 – the variant the
//! Linux kernel and cryptsetup use, not GB/T 17964) over OpenSSL's SM4 block cipher in ECB mode,
//! one call per sector for all its 32 blocks.

use kms_client::ctx_pool::ContextPool;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use zeroize::Zeroizing;

pub const SECTOR: usize = 512;
const BLOCK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Aes,
    Sm4,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Aes, Algorithm::Sm4];

    /// The LUKS1 header's `cipher-name`.
    pub fn luks_name(self) -> &'static str {
        match self {
            Algorithm::Aes => "aes",
            Algorithm::Sm4 => "sm4",
        }
    }

    /// The cipher spec as cryptsetup shows it (name and the one mode, `xts-plain64`), as the
    /// wrapped-key record stores it.
    pub fn spec(self) -> &'static str {
        match self {
            Algorithm::Aes => "aes-xts-plain64",
            Algorithm::Sm4 => "sm4-xts-plain64",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("an XTS key of {0} bytes is not supported")]
    Length(usize),
    #[error("the two halves of the XTS key are equal")]
    EqualHalves,
}

/// How sectors are enciphered: OpenSSL's XTS, or XTS built here over SM4 in ECB mode (the data
/// key's contexts, and the tweak key's, which only ever encrypt).
enum Engine {
    Aes(ContextPool),
    Sm4 { data: ContextPool, tweak: ContextPool },
}

pub struct SectorCipher {
    alg: Algorithm,
    engine: Engine,
}

impl SectorCipher {
    pub fn new(alg: Algorithm, key: &[u8]) -> Result<SectorCipher, KeyError> {
        let ok = match alg {
            Algorithm::Aes => key.len() == 32 || key.len() == 64,
            Algorithm::Sm4 => key.len() == 32,
        };
        if !ok {
            return Err(KeyError::Length(key.len()));
        }
        // XTS is broken when the data key and the tweak key are equal (OpenSSL refuses them).
        let (k1, k2) = key.split_at(key.len() / 2);
        if openssl::memcmp::eq(k1, k2) {
            return Err(KeyError::EqualHalves);
        }
        let engine = match alg {
            Algorithm::Aes => {
                let cipher = if key.len() == 64 { Cipher::aes_256_xts() } else { Cipher::aes_128_xts() };
                Engine::Aes(ContextPool::new(cipher, key, true))
            }
            Algorithm::Sm4 => Engine::Sm4 {
                data: ContextPool::new(Cipher::sm4_ecb(), k1, false),
                tweak: ContextPool::new(Cipher::sm4_ecb(), k2, false),
            },
        };
        Ok(SectorCipher { alg, engine })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Encrypts whole sectors in place; `first` is the sector number of `buf[0..512]`.
    pub fn encrypt(&self, first: u64, buf: &mut [u8]) {
        self.apply(true, first, buf)
    }

    pub fn decrypt(&self, first: u64, buf: &mut [u8]) {
        self.apply(false, first, buf)
    }

    fn apply(&self, encrypt: bool, first: u64, buf: &mut [u8]) {
        assert_eq!(buf.len() % SECTOR, 0, "whole sectors only");
        match &self.engine {
            Engine::Aes(pool) => pool.with(encrypt, |ctx| {
                for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
                    let iv = plain64(first + i as u64);
                    if encrypt {
                        ctx.encrypt_init(None, None, Some(&iv)).expect("XTS IV");
                    } else {
                        ctx.decrypt_init(None, None, Some(&iv)).expect("XTS IV");
                    }
                    ctx.cipher_update_inplace(sector, SECTOR).expect("XTS sector");
                }
            }),
            Engine::Sm4 { data, tweak } => tweak.with(true, |t| data.with(encrypt, |d| sm4_sectors(t, d, first, buf))),
        }
    }
}

/// XTS over SM4-ECB: `tweak` encrypts under the tweak key, `data` runs the data key in this
/// call's direction; each sector's 32 blocks go through `data` in one call.
fn sm4_sectors(tweak: &mut CipherCtx, data: &mut CipherCtx, first: u64, buf: &mut [u8]) {
    let mut tweaks = [0u8; SECTOR];
    // OpenSSL wants a block of headroom past the input even when no padding is added.
    let mut out = Zeroizing::new([0u8; SECTOR + BLOCK]);
    for (i, sector) in buf.chunks_exact_mut(SECTOR).enumerate() {
        tweak.cipher_update(&plain64(first + i as u64), Some(&mut out[..2 * BLOCK])).expect("SM4 tweak");
        let mut t: [u8; BLOCK] = out[..BLOCK].try_into().unwrap();
        for chunk in tweaks.chunks_exact_mut(BLOCK) {
            chunk.copy_from_slice(&t);
            t = gf_double(t);
        }
        xor(sector, &tweaks);
        data.cipher_update(sector, Some(&mut out[..])).expect("SM4 sector");
        sector.copy_from_slice(&out[..SECTOR]);
        xor(sector, &tweaks);
    }
}

/// dm-crypt's `plain64` IV: the sector number, little-endian, zero-padded to the block size.
fn plain64(sector: u64) -> [u8; BLOCK] {
    let mut iv = [0u8; BLOCK];
    iv[..8].copy_from_slice(&sector.to_le_bytes());
    iv
}

/// Multiplication by α in GF(2^128), little-endian as XTS defines it.
fn gf_double(t: [u8; BLOCK]) -> [u8; BLOCK] {
    let v = u128::from_le_bytes(t);
    let carry = (v >> 127) as u8;
    ((v << 1) ^ (0x87 * carry as u128)).to_le_bytes()
}

fn xor(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xts_mode::{get_tweak_default, Xts128};

    fn key(len: usize) -> Vec<u8> {
        (0..len as u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect()
    }

    #[test]
    fn aes_matches_an_independent_xts() {
        use aes::cipher::KeyInit;
        use aes::Aes256;
        let k = key(64);
        let mut data: Vec<u8> = (0..4 * SECTOR).map(|i| (i * 7) as u8).collect();
        let plain = data.clone();
        let c = SectorCipher::new(Algorithm::Aes, &k).unwrap();
        c.encrypt(41, &mut data);
        let oracle = Xts128::new(Aes256::new_from_slice(&k[..32]).unwrap(), Aes256::new_from_slice(&k[32..]).unwrap());
        let mut expect = plain.clone();
        oracle.encrypt_area(&mut expect, SECTOR, 41, get_tweak_default);
        assert_eq!(data, expect);
        c.decrypt(41, &mut data);
        assert_eq!(data, plain);
    }

    #[test]
    fn sm4_matches_an_independent_xts() {
        use sm4::cipher::KeyInit;
        let k = key(32);
        let mut data: Vec<u8> = (0..3 * SECTOR).map(|i| (i * 13) as u8).collect();
        let plain = data.clone();
        let c = SectorCipher::new(Algorithm::Sm4, &k).unwrap();
        c.encrypt(7, &mut data);
        let oracle =
            Xts128::new(sm4::Sm4::new_from_slice(&k[..16]).unwrap(), sm4::Sm4::new_from_slice(&k[16..]).unwrap());
        let mut expect = plain.clone();
        oracle.encrypt_area(&mut expect, SECTOR, 7, get_tweak_default);
        assert_eq!(data, expect);
        c.decrypt(7, &mut data);
        assert_eq!(data, plain);
    }

    #[test]
    fn bad_keys() {
        assert_eq!(SectorCipher::new(Algorithm::Aes, &[1; 48]).err(), Some(KeyError::Length(48)));
        assert_eq!(SectorCipher::new(Algorithm::Aes, &[1; 64]).err(), Some(KeyError::EqualHalves));
        assert_eq!(SectorCipher::new(Algorithm::Sm4, &[1; 64]).err(), Some(KeyError::Length(64)));
    }
}
