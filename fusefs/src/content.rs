//! File contents on disk (FORMAT.md §3): a 24-byte header with the file's random id, then
//! fixed-size plaintext blocks, each sealed on its own as `nonce ‖ ciphertext ‖ tag` under the
//! file's key with AAD = file id ‖ block number — so a block cannot be moved to another offset or
//! another file, and a header cannot be swapped, without every read of it failing.

use crate::block_aead::BlockAead;
use kms_core::crypto::aead::{random_nonce, NONCE_LEN, TAG_LEN};

use crate::keys::{VolumeKeys, FILE_ID_LEN};

pub const MAGIC: &[u8; 4] = b"KMSF";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 24;
/// Per-block overhead: nonce and tag.
pub const BLOCK_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentError {
    #[error("file header is not a kmsfs v1 header")]
    BadHeader,
    #[error("block {0} does not authenticate (tampered, moved or from another file)")]
    Corrupt(u64),
    #[error("ciphertext size {0} cannot hold whole blocks")]
    BadSize(u64),
}

/// The per-file header: magic, version, three reserved zero bytes, the file id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub file_id: [u8; FILE_ID_LEN],
}

impl FileHeader {
    pub fn random() -> FileHeader {
        let mut file_id = [0u8; FILE_ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut file_id);
        FileHeader { file_id }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(MAGIC);
        h[4] = FORMAT_VERSION;
        h[8..].copy_from_slice(&self.file_id);
        h
    }

    pub fn decode(b: &[u8]) -> Result<FileHeader, ContentError> {
        if b.len() < HEADER_LEN || &b[..4] != MAGIC || b[4] != FORMAT_VERSION || b[5..8] != [0, 0, 0] {
            return Err(ContentError::BadHeader);
        }
        Ok(FileHeader { file_id: b[8..HEADER_LEN].try_into().expect("length checked") })
    }
}

/// Where blocks sit in a backing file of a volume with plaintext blocks of `block_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub block_size: usize,
}

impl Layout {
    pub fn stored_block_len(&self) -> usize {
        self.block_size + BLOCK_OVERHEAD
    }

    /// Offset of block `n` in the backing file.
    pub fn block_offset(&self, n: u64) -> u64 {
        HEADER_LEN as u64 + n * self.stored_block_len() as u64
    }

    /// Backing-file size for a plaintext of `size` bytes (0 stays 0: an empty file has no header).
    pub fn stored_size(&self, size: u64) -> u64 {
        if size == 0 {
            return 0;
        }
        let bs = self.block_size as u64;
        let (full, rest) = (size / bs, size % bs);
        let tail = if rest == 0 { 0 } else { rest + BLOCK_OVERHEAD as u64 };
        HEADER_LEN as u64 + full * self.stored_block_len() as u64 + tail
    }

    /// Plaintext size of a backing file of `stored` bytes; an impossible size is an error (a file
    /// truncated mid-block), never a guess.
    pub fn plain_size(&self, stored: u64) -> Result<u64, ContentError> {
        if stored == 0 || stored == HEADER_LEN as u64 {
            return Ok(0);
        }
        if stored < HEADER_LEN as u64 {
            return Err(ContentError::BadSize(stored));
        }
        let body = stored - HEADER_LEN as u64;
        let sb = self.stored_block_len() as u64;
        let (full, rest) = (body / sb, body % sb);
        match rest {
            0 => Ok(full * self.block_size as u64),
            r if r > BLOCK_OVERHEAD as u64 => Ok(full * self.block_size as u64 + r - BLOCK_OVERHEAD as u64),
            _ => Err(ContentError::BadSize(stored)),
        }
    }
}

/// Seals and opens the blocks of one file.
pub struct FileCrypto {
    cipher: BlockAead,
    header: FileHeader,
    layout: Layout,
}

impl FileCrypto {
    pub fn new(keys: &VolumeKeys, header: FileHeader, layout: Layout) -> FileCrypto {
        FileCrypto { cipher: keys.file_cipher(&header.file_id), header, layout }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn aad(&self, block: u64) -> [u8; FILE_ID_LEN + 8] {
        let mut aad = [0u8; FILE_ID_LEN + 8];
        aad[..FILE_ID_LEN].copy_from_slice(&self.header.file_id);
        aad[FILE_ID_LEN..].copy_from_slice(&block.to_be_bytes());
        aad
    }

    /// Appends the stored form of plaintext block `n` (at most one block) to `out`.
    pub fn seal_block(&self, n: u64, plaintext: &[u8], out: &mut Vec<u8>) {
        debug_assert!(plaintext.len() <= self.layout.block_size);
        // A fresh random nonce per write: the per-file key keeps the number of nonces under any
        // one key far below the 2^32 GCM allows for random 96-bit nonces.
        let nonce = random_nonce();
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.cipher.seal_in_place(&nonce, &self.aad(n), &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Opens stored block `n` into `out` (which must hold `stored.len() - BLOCK_OVERHEAD` bytes)
    /// and returns the plaintext length. An all-zero stored block is a hole and reads as zeros.
    pub fn open_block(&self, n: u64, stored: &[u8], out: &mut [u8]) -> Result<usize, ContentError> {
        if stored.len() <= BLOCK_OVERHEAD || stored.len() > self.layout.stored_block_len() {
            return Err(ContentError::Corrupt(n));
        }
        let len = stored.len() - BLOCK_OVERHEAD;
        let out = &mut out[..len];
        if stored.iter().all(|&b| b == 0) {
            out.fill(0);
            return Ok(len);
        }
        let nonce: &[u8; NONCE_LEN] = stored[..NONCE_LEN].try_into().expect("length checked");
        let tag: &[u8; TAG_LEN] = stored[NONCE_LEN + len..].try_into().expect("length checked");
        out.copy_from_slice(&stored[NONCE_LEN..NONCE_LEN + len]);
        if self.cipher.open_in_place(nonce, &self.aad(n), out, tag) {
            Ok(len)
        } else {
            Err(ContentError::Corrupt(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;
    use proptest::prelude::*;

    use super::*;

    fn keys(alg: Algorithm) -> VolumeKeys {
        VolumeKeys::derive(&[9; 32], &[3; 16], alg).unwrap()
    }

    const L: Layout = Layout { block_size: 4096 };

    #[test]
    fn header_round_trip_and_refusals() {
        let h = FileHeader::random();
        assert_eq!(FileHeader::decode(&h.encode()).unwrap(), h);
        let mut bad = h.encode();
        bad[4] = 2;
        assert_eq!(FileHeader::decode(&bad), Err(ContentError::BadHeader));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(FileHeader::decode(&bad), Err(ContentError::BadHeader));
        assert_eq!(FileHeader::decode(&h.encode()[..10]), Err(ContentError::BadHeader));
    }

    #[test]
    fn sizes_map_both_ways() {
        for size in [0u64, 1, 4095, 4096, 4097, 8192, 10_000, 5 << 30] {
            let stored = L.stored_size(size);
            assert_eq!(L.plain_size(stored).unwrap(), size, "size {size}");
        }
        assert_eq!(L.stored_size(4096), 24 + 4124);
        assert_eq!(L.plain_size(24 + 10), Err(ContentError::BadSize(34)), "a torn block");
        assert_eq!(L.plain_size(10), Err(ContentError::BadSize(10)));
    }

    #[test]
    fn blocks_are_bound_to_file_and_position() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            let k = keys(alg);
            let (a, b) = (FileCrypto::new(&k, FileHeader::random(), L), FileCrypto::new(&k, FileHeader::random(), L));
            let mut stored = Vec::new();
            a.seal_block(5, b"block five", &mut stored);
            let mut out = [0u8; 4096];
            assert_eq!(a.open_block(5, &stored, &mut out), Ok(10));
            assert_eq!(&out[..10], b"block five");
            assert_eq!(a.open_block(6, &stored, &mut out), Err(ContentError::Corrupt(6)), "moved within the file");
            assert_eq!(b.open_block(5, &stored, &mut out), Err(ContentError::Corrupt(5)), "moved to another file");
            for i in 0..stored.len() {
                let mut t = stored.clone();
                t[i] ^= 0x40;
                assert_eq!(a.open_block(5, &t, &mut out), Err(ContentError::Corrupt(5)), "flipped byte {i}");
                assert!(out[..10].iter().all(|&b| b == 0), "no unauthenticated plaintext left behind");
            }
            assert_eq!(a.open_block(5, &stored[..BLOCK_OVERHEAD], &mut out), Err(ContentError::Corrupt(5)));
        }
    }

    #[test]
    fn zero_blocks_are_holes() {
        let f = FileCrypto::new(&keys(Algorithm::Aes256Gcm), FileHeader::random(), L);
        let mut out = [1u8; 4096];
        assert_eq!(f.open_block(0, &[0u8; 4096 + BLOCK_OVERHEAD], &mut out), Ok(4096));
        assert!(out.iter().all(|&b| b == 0));
    }

    proptest! {
        #[test]
        fn any_block_round_trips(data in proptest::collection::vec(any::<u8>(), 1..4096), n in any::<u64>()) {
            let f = FileCrypto::new(&keys(Algorithm::Aes256Gcm), FileHeader::random(), L);
            let mut stored = Vec::new();
            f.seal_block(n, &data, &mut stored);
            prop_assert_eq!(stored.len(), data.len() + BLOCK_OVERHEAD);
            let mut out = vec![0u8; 4096];
            prop_assert_eq!(f.open_block(n, &stored, &mut out), Ok(data.len()));
            prop_assert_eq!(&out[..data.len()], &data[..]);
        }
    }
}
