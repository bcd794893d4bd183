//! The LUKS1 on-disk header (LUKS1 On-Disk Format Specification 1.2.3), written and read so that
//! cryptsetup, qemu's `luks` driver and nbdkit's `luks` filter open our volumes (FORMAT.md §2).
//!
//! A 592-byte big-endian header at offset 0, eight keyslot descriptors in it, and each keyslot's
//! anti-forensic-split copy of the volume key encrypted under a PBKDF2-derived key in its own
//! 4 KiB-aligned area after the header.

use openssl::hash::MessageDigest;
use openssl::pkcs5::pbkdf2_hmac;
use zeroize::Zeroizing;

use crate::afsplit;
use crate::xts::{Algorithm, SectorCipher, SECTOR};

pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
pub const PHDR_LEN: usize = 592;
pub const KEYSLOTS: usize = 8;
pub const STRIPES: u32 = 4000;
const SLOT_ACTIVE: u32 = 0x00ac_71f3;
const SLOT_DISABLED: u32 = 0x0000_dead;
const DIGEST_LEN: usize = 20;
const SALT_LEN: usize = 32;
/// Keyslot areas start on 4 KiB boundaries, as cryptsetup lays them out.
const AREA_ALIGN_SECTORS: u64 = 8;
/// The payload of an attached volume starts at 2 MiB (cryptsetup's default alignment).
pub const PAYLOAD_SECTORS: u64 = 4096;
/// cryptsetup's floor for the volume-key digest; the keys we protect are random, not passwords.
pub const MIN_ITERATIONS: u32 = 1000;
/// The most PBKDF2 iterations a header may ask for. blockcrypt writes 1000 (its passphrases are
/// 256-bit random values); a header asking for more than this – tenths of a second of PBKDF2 –
/// is refused as damaged instead of being obeyed for minutes (or overflowing OpenSSL's int).
pub const MAX_ITERATIONS: u32 = 200_000;

fn bounded_iterations(n: u32, what: &str) -> Result<usize, LuksError> {
    if n > MAX_ITERATIONS {
        return Err(LuksError::Damaged(format!("{what} asks for {n} PBKDF2 iterations (at most {MAX_ITERATIONS})")));
    }
    Ok(n as usize)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LuksError {
    #[error("not a LUKS volume (no LUKS magic)")]
    NotLuks,
    #[error("LUKS version {0} is not supported (only LUKS1)")]
    Version(u16),
    #[error("unsupported cipher {0}")]
    Cipher(String),
    #[error("unsupported hash {0}")]
    Hash(String),
    #[error("damaged LUKS header: {0}")]
    Damaged(String),
    #[error("no keyslot opens with this passphrase")]
    WrongPassphrase,
    #[error("the key does not match the volume's key digest")]
    WrongKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySlot {
    pub active: bool,
    pub iterations: u32,
    pub salt: [u8; SALT_LEN],
    /// In 512-byte sectors from the start of the header.
    pub offset: u32,
    pub stripes: u32,
}

/// The header's `hash-spec`: the PBKDF2 and anti-forensic-split hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashSpec {
    Sha1,
    Sha256,
    Sha512,
}

impl HashSpec {
    fn parse(name: &str) -> Result<HashSpec, LuksError> {
        match name {
            "sha1" => Ok(HashSpec::Sha1),
            "sha256" => Ok(HashSpec::Sha256),
            "sha512" => Ok(HashSpec::Sha512),
            other => Err(LuksError::Hash(other.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashSpec::Sha1 => "sha1",
            HashSpec::Sha256 => "sha256",
            HashSpec::Sha512 => "sha512",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            HashSpec::Sha1 => MessageDigest::sha1(),
            HashSpec::Sha256 => MessageDigest::sha256(),
            HashSpec::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// The only cipher mode read or written: what qemu, nbdkit and cryptsetup all open.
pub const CIPHER_MODE: &str = "xts-plain64";

/// The `cipher-name`/`cipher-mode`/`key-bytes` triple, parsed into one of the combinations this
/// build reads: AES-XTS with a 256- or 512-bit key, SM4-XTS with a 256-bit key.
fn parse_cipher(name: &str, mode: &str, key_bytes: u32) -> Result<Algorithm, LuksError> {
    let Some(alg) = Algorithm::ALL.into_iter().find(|a| a.luks_name() == name) else {
        return Err(LuksError::Cipher(format!("{name}-{mode}")));
    };
    let key_ok = match alg {
        Algorithm::Aes => key_bytes == 32 || key_bytes == 64,
        Algorithm::Sm4 => key_bytes == 32,
    };
    if mode != CIPHER_MODE || !key_ok {
        return Err(LuksError::Cipher(format!("{name}-{mode} with a {}-bit key", u64::from(key_bytes) * 8)));
    }
    Ok(alg)
}

/// A LUKS1 header, parsed: the cipher and hash as the types they are used as, checked together
/// with the key size, so nothing that holds a `Header` needs to check them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub algorithm: Algorithm,
    pub hash: HashSpec,
    /// In 512-byte sectors; 0 for a detached header.
    pub payload_offset: u32,
    /// Matches `algorithm` (checked by [`Header::parse`]).
    pub key_bytes: u32,
    pub mk_digest: [u8; DIGEST_LEN],
    pub mk_digest_salt: [u8; SALT_LEN],
    pub mk_digest_iter: u32,
    pub uuid: String,
    pub slots: [KeySlot; KEYSLOTS],
}

fn fixed_str(b: &[u8]) -> Result<String, LuksError> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .map(str::to_string)
        .map_err(|_| LuksError::Damaged("a text field is not ASCII".into()))
}

fn put_str(out: &mut [u8], s: &str) {
    out[..s.len()].copy_from_slice(s.as_bytes());
}

impl Header {
    pub fn parse(b: &[u8]) -> Result<Header, LuksError> {
        if b.len() < PHDR_LEN || b[..6] != MAGIC {
            return Err(LuksError::NotLuks);
        }
        let be32 = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != 1 {
            return Err(LuksError::Version(version));
        }
        let mut slots =
            [KeySlot { active: false, iterations: 0, salt: [0; SALT_LEN], offset: 0, stripes: 0 }; KEYSLOTS];
        for (i, s) in slots.iter_mut().enumerate() {
            let at = 208 + i * 48;
            s.active = match be32(at) {
                SLOT_ACTIVE => true,
                SLOT_DISABLED => false,
                other => return Err(LuksError::Damaged(format!("keyslot {i} state {other:#x}"))),
            };
            s.iterations = be32(at + 4);
            s.salt.copy_from_slice(&b[at + 8..at + 40]);
            s.offset = be32(at + 40);
            s.stripes = be32(at + 44);
        }
        let key_bytes = be32(108);
        let h = Header {
            algorithm: parse_cipher(&fixed_str(&b[8..40])?, &fixed_str(&b[40..72])?, key_bytes)?,
            hash: HashSpec::parse(&fixed_str(&b[72..104])?)?,
            payload_offset: be32(104),
            key_bytes,
            mk_digest: b[112..132].try_into().unwrap(),
            mk_digest_salt: b[132..164].try_into().unwrap(),
            mk_digest_iter: be32(164),
            uuid: fixed_str(&b[168..208])?,
            slots,
        };
        if h.mk_digest_iter == 0 {
            return Err(LuksError::Damaged("zero digest iterations".into()));
        }
        for (i, s) in h.slots.iter().enumerate().filter(|(_, s)| s.active) {
            if s.stripes == 0 || s.iterations == 0 || (s.offset as u64) * (SECTOR as u64) < PHDR_LEN as u64 {
                return Err(LuksError::Damaged(format!("keyslot {i} descriptor")));
            }
            let end = s.offset as u64 + h.area_sectors(s.stripes);
            if h.payload_offset != 0 && end > h.payload_offset as u64 {
                return Err(LuksError::Damaged(format!("keyslot {i} overlaps the payload")));
            }
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> [u8; PHDR_LEN] {
        let mut b = [0u8; PHDR_LEN];
        b[..6].copy_from_slice(&MAGIC);
        b[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_str(&mut b[8..40], self.algorithm.luks_name());
        put_str(&mut b[40..72], CIPHER_MODE);
        put_str(&mut b[72..104], self.hash.name());
        b[104..108].copy_from_slice(&self.payload_offset.to_be_bytes());
        b[108..112].copy_from_slice(&self.key_bytes.to_be_bytes());
        b[112..132].copy_from_slice(&self.mk_digest);
        b[132..164].copy_from_slice(&self.mk_digest_salt);
        b[164..168].copy_from_slice(&self.mk_digest_iter.to_be_bytes());
        put_str(&mut b[168..208], &self.uuid);
        for (i, s) in self.slots.iter().enumerate() {
            let at = 208 + i * 48;
            b[at..at + 4].copy_from_slice(&(if s.active { SLOT_ACTIVE } else { SLOT_DISABLED }).to_be_bytes());
            b[at + 4..at + 8].copy_from_slice(&s.iterations.to_be_bytes());
            b[at + 8..at + 40].copy_from_slice(&s.salt);
            b[at + 40..at + 44].copy_from_slice(&s.offset.to_be_bytes());
            b[at + 44..at + 48].copy_from_slice(&s.stripes.to_be_bytes());
        }
        b
    }

    /// A header for a new volume keyed by `volume_key`, no keyslot set yet. Slot areas are laid
    /// out as cryptsetup does, so the header's size and the gap after it match its volumes.
    pub fn new(alg: Algorithm, volume_key: &[u8], uuid: &str, detached: bool) -> Header {
        let mut h = Header {
            algorithm: alg,
            hash: HashSpec::Sha256,
            payload_offset: if detached { 0 } else { PAYLOAD_SECTORS as u32 },
            key_bytes: volume_key.len() as u32,
            mk_digest: [0; DIGEST_LEN],
            mk_digest_salt: random(),
            mk_digest_iter: MIN_ITERATIONS,
            uuid: uuid.into(),
            slots: [KeySlot { active: false, iterations: 0, salt: [0; SALT_LEN], offset: 0, stripes: STRIPES };
                KEYSLOTS],
        };
        let area = h.area_sectors(STRIPES);
        for (i, s) in h.slots.iter_mut().enumerate() {
            s.offset = (AREA_ALIGN_SECTORS + i as u64 * area) as u32;
        }
        h.mk_digest = h.key_digest(volume_key).expect("a header of our own: supported hash, MIN_ITERATIONS");
        h
    }

    /// A keyslot area's length in sectors, rounded up to the 4 KiB alignment.
    fn area_sectors(&self, stripes: u32) -> u64 {
        (self.key_bytes as u64 * stripes as u64).div_ceil(SECTOR as u64).next_multiple_of(AREA_ALIGN_SECTORS)
    }

    /// Where the last keyslot area ends, in bytes: the header proper.
    pub fn keyslots_end(&self) -> u64 {
        let end = self.slots.iter().map(|s| s.offset as u64 + self.area_sectors(s.stripes)).max().unwrap_or(0);
        end * SECTOR as u64
    }

    pub fn payload_bytes(&self) -> u64 {
        self.payload_offset as u64 * SECTOR as u64
    }

    fn key_digest(&self, key: &[u8]) -> Result<[u8; DIGEST_LEN], LuksError> {
        let iterations = bounded_iterations(self.mk_digest_iter, "the key digest")?;
        let mut d = [0u8; DIGEST_LEN];
        pbkdf2_hmac(key, &self.mk_digest_salt, iterations, self.hash.digest(), &mut d)
            .map_err(|e| LuksError::Damaged(format!("key digest: {e}")))?;
        Ok(d)
    }

    /// Whether `key` is this volume's key (constant-time comparison of the digests).
    pub fn check_key(&self, key: &[u8]) -> Result<(), LuksError> {
        if key.len() != self.key_bytes as usize || !openssl::memcmp::eq(&self.key_digest(key)?, &self.mk_digest) {
            return Err(LuksError::WrongKey);
        }
        Ok(())
    }

    /// `None` when PBKDF2 gave a key with equal XTS halves – as likely as guessing the key.
    fn slot_cipher(&self, slot: &KeySlot, passphrase: &[u8]) -> Result<Option<SectorCipher>, LuksError> {
        let iterations = bounded_iterations(slot.iterations, "a keyslot")?;
        let mut k = Zeroizing::new(vec![0u8; self.key_bytes as usize]);
        pbkdf2_hmac(passphrase, &slot.salt, iterations, self.hash.digest(), &mut k)
            .map_err(|e| LuksError::Damaged(format!("keyslot: {e}")))?;
        Ok(SectorCipher::new(self.algorithm, &k).ok())
    }

    /// The volume key from the first active keyslot `passphrase` opens; `image` holds the header
    /// area (at least `keyslots_end()` bytes).
    pub fn unlock(&self, image: &[u8], passphrase: &[u8]) -> Result<(usize, Zeroizing<Vec<u8>>), LuksError> {
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| s.active) {
            let start = s.offset as usize * SECTOR;
            let len = self.area_sectors(s.stripes) as usize * SECTOR;
            let Some(area) = image.get(start..start + len) else {
                return Err(LuksError::Damaged(format!("keyslot {i} area is truncated")));
            };
            let Some(cipher) = self.slot_cipher(s, passphrase)? else { continue };
            let mut material = Zeroizing::new(area.to_vec());
            cipher.decrypt(0, &mut material);
            let key = afsplit::merge(&material, self.key_bytes as usize, s.stripes as usize, self.hash.digest());
            if self.check_key(&key).is_ok() {
                return Ok((i, key));
            }
        }
        Err(LuksError::WrongPassphrase)
    }

    /// Puts `volume_key` in keyslot `index` under `passphrase` (PBKDF2 with `iterations`),
    /// writing the slot's area into `image`.
    pub fn set_keyslot(
        &mut self,
        image: &mut [u8],
        index: usize,
        passphrase: &[u8],
        volume_key: &[u8],
        iterations: u32,
    ) {
        let md = self.hash.digest();
        let mut slot = self.slots[index];
        slot.iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
        slot.stripes = STRIPES;
        let cipher = loop {
            slot.salt = random();
            if let Some(c) = self.slot_cipher(&slot, passphrase).expect("iterations clamped, hash checked") {
                break c;
            }
        };
        let mut material = afsplit::split(volume_key, STRIPES as usize, md);
        material.resize(self.area_sectors(STRIPES) as usize * SECTOR, 0);
        cipher.encrypt(0, &mut material);
        let start = slot.offset as usize * SECTOR;
        image[start..start + material.len()].copy_from_slice(&material);
        slot.active = true;
        self.slots[index] = slot;
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_unlock_and_parse_back() {
        let vk: Vec<u8> = (0..64).map(|i| i as u8 ^ 0x5a).collect();
        let mut h = Header::new(Algorithm::Aes, &vk, "4f1c3c5e-0000-4000-8000-000000000001", false);
        assert_eq!(h.keyslots_end(), 2_068_480, "cryptsetup's layout for a 512-bit key");
        let mut image = vec![0u8; h.payload_bytes() as usize];
        h.set_keyslot(&mut image, 0, b"pass", &vk, 1000);
        image[..PHDR_LEN].copy_from_slice(&h.to_bytes());
        let parsed = Header::parse(&image).unwrap();
        assert_eq!(parsed, h);
        let (slot, key) = parsed.unlock(&image, b"pass").unwrap();
        assert_eq!((slot, &key[..]), (0, &vk[..]));
        assert_eq!(parsed.unlock(&image, b"wrong"), Err(LuksError::WrongPassphrase));
        parsed.check_key(&vk).unwrap();
        assert_eq!(parsed.check_key(&[0; 64]), Err(LuksError::WrongKey));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let vk = [3u8; 32].iter().enumerate().map(|(i, b)| b ^ i as u8).collect::<Vec<_>>();
        let h = Header::new(Algorithm::Sm4, &vk, "u", true);
        let mut b = h.to_bytes();
        assert_eq!(Header::parse(&b).unwrap().algorithm, Algorithm::Sm4);
        b[7] = 2;
        assert_eq!(Header::parse(&b), Err(LuksError::Version(2)));
        b[7] = 1;
        b[8..11].copy_from_slice(b"twf");
        assert!(matches!(Header::parse(&b), Err(LuksError::Cipher(_))));
        b[8..11].copy_from_slice(b"sm4");
        b[72..78].copy_from_slice(b"md5\0\0\0");
        assert_eq!(Header::parse(&b), Err(LuksError::Hash("md5".into())));
        b[72..78].copy_from_slice(b"sha512");
        assert_eq!(Header::parse(&b).unwrap().hash, HashSpec::Sha512);
        assert_eq!(Header::parse(&b).unwrap().to_bytes(), b, "what parses writes back byte for byte");
        assert_eq!(Header::parse(&[0u8; 600]), Err(LuksError::NotLuks));
    }

    #[test]
    fn an_absurd_key_size_is_an_error_not_an_overflow() {
        // Found by fuzz/luks1_header: the error message multiplied a u32 from the header by 8.
        let vk: Vec<u8> = (0..64).collect();
        let mut b = Header::new(Algorithm::Aes, &vk, "u", true).to_bytes();
        b[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Header::parse(&b), Err(LuksError::Cipher(m)) if m.contains("34359738360-bit")));
    }
}
