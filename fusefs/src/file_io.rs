//! Reading and writing plaintext at any offset of an encrypted backing file (FORMAT.md §3):
//! partial blocks are read, decrypted, patched and re-sealed; extending leaves holes; shrinking
//! re-seals the new last block. The caller serialises writers of one file (the mount holds a
//! per-inode lock); readers may run alongside each other.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::content::{ContentError, FileCrypto, FileHeader, Layout, BLOCK_OVERHEAD, HEADER_LEN};
use crate::keys::VolumeKeys;

/// An open encrypted file.
pub struct EncryptedFile<'k> {
    file: File,
    keys: &'k VolumeKeys,
    layout: Layout,
    /// `None` until the file has a header (an empty file has none).
    crypto: Option<FileCrypto>,
}

fn corrupt(e: ContentError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<'k> EncryptedFile<'k> {
    pub fn open(file: File, keys: &'k VolumeKeys, layout: Layout) -> io::Result<EncryptedFile<'k>> {
        let len = file.metadata()?.len();
        let crypto = if len == 0 {
            None
        } else {
            let mut h = [0u8; HEADER_LEN];
            file.read_exact_at(&mut h, 0).map_err(|_| corrupt(ContentError::BadHeader))?;
            Some(FileCrypto::new(keys, FileHeader::decode(&h).map_err(corrupt)?, layout))
        };
        Ok(EncryptedFile { file, keys, layout, crypto })
    }

    /// The plaintext size.
    pub fn size(&self) -> io::Result<u64> {
        self.layout.plain_size(self.file.metadata()?.len()).map_err(corrupt)
    }

    fn crypto_or_create(&mut self) -> io::Result<&FileCrypto> {
        if self.crypto.is_none() {
            let header = FileHeader::random();
            self.file.write_all_at(&header.encode(), 0)?;
            self.crypto = Some(FileCrypto::new(self.keys, header, self.layout));
        }
        Ok(self.crypto.as_ref().expect("just set"))
    }

    /// Plaintext of block `n`, which holds `len` bytes in a file of the current size. `stored` is
    /// scratch space, reused across the blocks of one call.
    fn read_block(&self, n: u64, len: usize, out: &mut [u8], stored: &mut Vec<u8>) -> io::Result<()> {
        let crypto = self.crypto.as_ref().ok_or_else(|| corrupt(ContentError::BadHeader))?;
        stored.resize(len + BLOCK_OVERHEAD, 0);
        self.file.read_exact_at(stored, self.layout.block_offset(n))?;
        crypto.open_block(n, stored, out).map_err(corrupt)?;
        Ok(())
    }

    fn write_block(&self, n: u64, plaintext: &[u8], stored: &mut Vec<u8>) -> io::Result<()> {
        let crypto = self.crypto.as_ref().expect("a header exists before any block is written");
        stored.clear();
        crypto.seal_block(n, plaintext, stored);
        self.file.write_all_at(stored, self.layout.block_offset(n))
    }

    /// A plaintext block buffer and a stored-block buffer for one call.
    fn scratch(&self) -> (Vec<u8>, Vec<u8>) {
        (vec![0u8; self.layout.block_size], Vec::with_capacity(self.layout.stored_block_len()))
    }

    /// Length of block `n` in a file of `size` plaintext bytes (0 past the end).
    fn block_len(&self, n: u64, size: u64) -> usize {
        let bs = self.layout.block_size as u64;
        size.saturating_sub(n * bs).min(bs) as usize
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer at the end of the file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.size()?;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset + buf.len() as u64);
        let bs = self.layout.block_size as u64;
        let (mut block, mut stored) = self.scratch();
        let mut done = 0usize;
        let mut pos = offset;
        while pos < end {
            let n = pos / bs;
            let len = self.block_len(n, size);
            self.read_block(n, len, &mut block, &mut stored)?;
            let from = (pos - n * bs) as usize;
            let take = (len - from).min((end - pos) as usize);
            buf[done..done + take].copy_from_slice(&block[from..from + take]);
            done += take;
            pos += take as u64;
        }
        Ok(done)
    }

    /// Writes all of `data` at `offset`, extending the file (with a hole) if it lies beyond the end.
    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let size = self.size()?;
        if offset > size {
            self.set_size(offset)?;
        }
        self.crypto_or_create()?;
        let size = size.max(offset);
        let bs = self.layout.block_size as u64;
        let end = offset + data.len() as u64;
        let (mut block, mut stored) = self.scratch();
        let mut pos = offset;
        while pos < end {
            let n = pos / bs;
            let from = (pos - n * bs) as usize;
            let take = (self.layout.block_size - from).min((end - pos) as usize);
            let old_len = self.block_len(n, size);
            let new_len = old_len.max(from + take);
            if from > 0 || take < old_len {
                // A partial overwrite keeps the rest of the block: read, patch, re-seal.
                self.read_block(n, old_len, &mut block, &mut stored)?;
            }
            let src = (pos - offset) as usize;
            block[from..from + take].copy_from_slice(&data[src..src + take]);
            self.write_block(n, &block[..new_len], &mut stored)?;
            pos += take as u64;
        }
        Ok(())
    }

    /// Truncates or extends to `new` bytes. Extension leaves a hole that reads as zeros.
    pub fn set_size(&mut self, new: u64) -> io::Result<()> {
        let size = self.size()?;
        if new == size {
            return Ok(());
        }
        if self.crypto.is_none() && new == 0 {
            return Ok(());
        }
        self.crypto_or_create()?;
        let bs = self.layout.block_size as u64;
        let (mut block, mut stored) = self.scratch();
        if new > size {
            // The old last block, if partial, becomes full (zero-padded) or grows to `new`.
            let n = size / bs;
            let old_len = self.block_len(n, size);
            if old_len > 0 {
                let grown = self.block_len(n, new);
                self.read_block(n, old_len, &mut block, &mut stored)?;
                block[old_len..grown].fill(0);
                self.write_block(n, &block[..grown], &mut stored)?;
            }
        } else {
            // The new last block, if partial, is re-sealed at its new length.
            let n = new / bs;
            let new_len = self.block_len(n, new);
            if new_len > 0 && new_len < self.block_len(n, size) {
                self.read_block(n, self.block_len(n, size), &mut block, &mut stored)?;
                self.write_block(n, &block[..new_len], &mut stored)?;
            }
        }
        let stored = if new == 0 { HEADER_LEN as u64 } else { self.layout.stored_size(new) };
        self.file.set_len(stored)
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn keys() -> VolumeKeys {
        VolumeKeys::derive(&[2; 32], &[4; 16], Algorithm::Aes256Gcm).unwrap()
    }

    fn open<'k>(path: &std::path::Path, keys: &'k VolumeKeys, bs: usize) -> EncryptedFile<'k> {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
        EncryptedFile::open(f, keys, Layout { block_size: bs }).unwrap()
    }

    fn contents(f: &EncryptedFile) -> Vec<u8> {
        let mut all = vec![0u8; f.size().unwrap() as usize];
        assert_eq!(f.read_at(&mut all, 0).unwrap(), all.len());
        all
    }

    /// Thousands of random writes, truncates and reads, checked against a plain byte vector, with
    /// the file reopened now and then (so nothing depends on in-memory state).
    #[test]
    fn random_operations_match_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        for (seed, bs) in [(1u64, 512usize), (2, 4096)] {
            let path = dir.path().join(format!("f{seed}"));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut model: Vec<u8> = Vec::new();
            let mut f = open(&path, &k, bs);
            for step in 0..2000 {
                match rng.gen_range(0..10) {
                    0..=5 => {
                        let off = rng.gen_range(0..=model.len() as u64 + 3 * bs as u64);
                        let len = rng.gen_range(1..3 * bs);
                        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                        f.write_at(&data, off).unwrap();
                        let end = off as usize + len;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                    6 | 7 => {
                        let new = rng.gen_range(0..=model.len() as u64 + 2 * bs as u64);
                        f.set_size(new).unwrap();
                        model.resize(new as usize, 0);
                    }
                    8 => {
                        let off = rng.gen_range(0..=model.len() as u64 + 10);
                        let mut buf = vec![0u8; rng.gen_range(0..2 * bs)];
                        let n = f.read_at(&mut buf, off).unwrap();
                        let want = model.get(off as usize..).map_or(&[][..], |t| &t[..t.len().min(buf.len())]);
                        assert_eq!(&buf[..n], want, "step {step}");
                    }
                    _ => f = open(&path, &k, bs),
                }
                assert_eq!(f.size().unwrap(), model.len() as u64, "step {step}");
            }
            assert_eq!(contents(&f), model);
        }
    }

    #[test]
    fn extension_leaves_holes_and_tampering_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let path = dir.path().join("sparse");
        let mut f = open(&path, &k, 4096);
        f.write_at(b"head", 0).unwrap();
        f.write_at(b"tail", 10 << 20).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 1 << 20, "10 MiB of hole takes no space: {} blocks", meta.blocks());
        let mut buf = vec![1u8; 8192];
        assert_eq!(f.read_at(&mut buf, 5 << 20).unwrap(), 8192);
        assert!(buf.iter().all(|&b| b == 0));
        // A flipped byte in a block, then in the header.
        let raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&[0xff], HEADER_LEN as u64 + 20).unwrap();
        let err = f.read_at(&mut buf[..4], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        raw.write_all_at(b"X", 0).unwrap();
        let reopened = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert!(EncryptedFile::open(reopened, &k, Layout { block_size: 4096 }).is_err());
    }
}
