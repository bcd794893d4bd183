//! Reading and writing plaintext at any offset of an encrypted backing file (FORMAT.md §3):
//! partial blocks are read, decrypted, patched and re-sealed; extending leaves holes; shrinking
//! re-seals the new last block. The caller serialises writers of one file (the mount holds a
//! per-inode lock); readers may run alongside each other.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::content::{ContentError, FileCrypto, FileHeader, Layout, BLOCK_OVERHEAD, HEADER_LEN};
use crate::keys::VolumeKeys;
use crate::streaming;

/// An open encrypted file.
pub struct EncryptedFile {
    file: File,
    keys: Arc<VolumeKeys>,
    layout: Layout,
    /// `None` until the file has a header (an empty file has none).
    crypto: Option<FileCrypto>,
    /// The backing file's length, kept here (the caller serialises writers, and nothing else
    /// writes the backing file) instead of asked of the kernel on every call.
    stored_len: u64,
}

fn corrupt(e: ContentError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

thread_local! {
    /// Stored blocks of one call: a FUSE request moves up to 1 MiB, so the buffer is kept per
    /// thread instead of being allocated (and page-faulted) per request.
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl EncryptedFile {
    pub fn open(file: File, keys: Arc<VolumeKeys>, layout: Layout) -> io::Result<EncryptedFile> {
        let len = file.metadata()?.len();
        Self::open_with_len(file, keys, layout, len)
    }

    /// Like [`EncryptedFile::open`] for a caller that has just stat'ed the file.
    pub fn open_with_len(file: File, keys: Arc<VolumeKeys>, layout: Layout, len: u64) -> io::Result<EncryptedFile> {
        let crypto = if len == 0 {
            None
        } else {
            let mut h = [0u8; HEADER_LEN];
            file.read_exact_at(&mut h, 0).map_err(|_| corrupt(ContentError::BadHeader))?;
            Some(FileCrypto::new(&keys, FileHeader::decode(&h).map_err(corrupt)?, layout))
        };
        Ok(EncryptedFile { file, keys, layout, crypto, stored_len: len })
    }

    pub fn backing(&self) -> &File {
        &self.file
    }

    /// The plaintext size.
    pub fn size(&self) -> io::Result<u64> {
        self.layout.plain_size(self.stored_len).map_err(corrupt)
    }

    fn crypto_or_create(&mut self) -> io::Result<&FileCrypto> {
        if self.crypto.is_none() {
            let header = FileHeader::random();
            self.file.write_all_at(&header.encode(), 0)?;
            self.stored_len = self.stored_len.max(HEADER_LEN as u64);
            self.crypto = Some(FileCrypto::new(&self.keys, header, self.layout));
        }
        Ok(self.crypto.as_ref().expect("just set"))
    }

    fn crypto(&self) -> io::Result<&FileCrypto> {
        self.crypto.as_ref().ok_or_else(|| corrupt(ContentError::BadHeader))
    }

    /// Plaintext of block `n`, which holds `len` bytes in a file of the current size.
    fn read_block(&self, n: u64, len: usize, out: &mut [u8]) -> io::Result<()> {
        let mut stored = vec![0u8; len + BLOCK_OVERHEAD];
        self.file.read_exact_at(&mut stored, self.layout.block_offset(n)).map_err(truncated(n))?;
        self.crypto()?.open_block(n, &stored, out).map_err(corrupt)?;
        Ok(())
    }

    /// Length of block `n` in a file of `size` plaintext bytes (0 past the end).
    fn block_len(&self, n: u64, size: u64) -> usize {
        let bs = self.layout.block_size as u64;
        size.saturating_sub(n * bs).min(bs) as usize
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer at the end of the file. The stored blocks
    /// are read with one `pread` and opened one by one, straight into `buf` where whole.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.size()?;
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset + buf.len() as u64);
        let bs = self.layout.block_size as u64;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let crypto = self.crypto()?;
        let start = self.layout.block_offset(first);
        let stop = self.layout.block_offset(last) + (self.block_len(last, size) + BLOCK_OVERHEAD) as u64;
        STORED.with_borrow_mut(|stored| {
            stored.resize((stop - start) as usize, 0);
            self.file.read_exact_at(stored, start).map_err(truncated(last))?;
            let mut partial = Vec::new();
            for n in first..=last {
                let len = self.block_len(n, size);
                let at = (self.layout.block_offset(n) - start) as usize;
                let sealed = &stored[at..at + len + BLOCK_OVERHEAD];
                let block_start = n * bs;
                let from = offset.max(block_start) - block_start;
                let to = end.min(block_start + len as u64) - block_start;
                let dst = (block_start + from - offset) as usize;
                if from == 0 && to == len as u64 {
                    crypto.open_block(n, sealed, &mut buf[dst..dst + len]).map_err(corrupt)?;
                } else {
                    partial.resize(len, 0);
                    crypto.open_block(n, sealed, &mut partial).map_err(corrupt)?;
                    buf[dst..dst + (to - from) as usize].copy_from_slice(&partial[from as usize..to as usize]);
                }
            }
            Ok((end - offset) as usize)
        })
    }

    /// Writes all of `data` at `offset`, extending the file (with a hole) if it lies beyond the end.
    /// Partial first and last blocks are read and patched; all blocks go out in one `pwrite`.
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
        let (first, last) = (offset / bs, (end - 1) / bs);
        STORED.with_borrow_mut(|out| {
            out.clear();
            let mut block = Vec::new();
            for n in first..=last {
                let block_start = n * bs;
                let from = (offset.max(block_start) - block_start) as usize;
                let to = (end.min(block_start + bs) - block_start) as usize;
                let src = &data[(block_start + from as u64 - offset) as usize..][..to - from];
                let old_len = self.block_len(n, size);
                let crypto = self.crypto.as_ref().expect("created above");
                if from == 0 && to >= old_len {
                    crypto.seal_block(n, src, out);
                } else {
                    // A partial overwrite keeps the rest of the block: read, patch, re-seal.
                    block.resize(old_len.max(to), 0);
                    if old_len > 0 {
                        self.read_block(n, old_len, &mut block[..old_len])?;
                    }
                    block[from..to].copy_from_slice(src);
                    crypto.seal_block(n, &block, out);
                }
            }
            let at = self.layout.block_offset(first);
            // All blocks but a last one the write ends inside are whole and done with.
            let whole = if end.is_multiple_of(bs) {
                out.len()
            } else {
                (last - first) as usize * self.layout.stored_block_len()
            };
            match streaming::write_all_at(&self.file, out, at, whole) {
                Ok(()) => {
                    self.stored_len = self.stored_len.max(at + out.len() as u64);
                    Ok(())
                }
                Err(e) => {
                    // Part of it may have landed: learn the length again.
                    self.stored_len = self.file.metadata().map_or(self.stored_len, |m| m.len());
                    Err(e)
                }
            }
        })
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
        let mut block = vec![0u8; self.layout.block_size];
        let mut out = Vec::with_capacity(self.layout.stored_block_len());
        // The block that changes length: the old last block (growing) or the new last block
        // (shrinking), if partial, is re-sealed at its new length.
        let (n, old_len, new_len) = if new > size {
            (size / bs, self.block_len(size / bs, size), self.block_len(size / bs, new))
        } else {
            (new / bs, self.block_len(new / bs, size), self.block_len(new / bs, new))
        };
        if old_len > 0 && new_len > 0 && old_len != new_len {
            let keep = old_len.min(new_len);
            self.read_block(n, old_len, &mut block[..old_len])?;
            block[keep..new_len].fill(0);
            self.crypto()?.seal_block(n, &block[..new_len], &mut out);
            self.file.write_all_at(&out, self.layout.block_offset(n))?;
        }
        let stored = if new == 0 { HEADER_LEN as u64 } else { self.layout.stored_size(new) };
        self.file.set_len(stored)?;
        self.stored_len = stored;
        Ok(())
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// A short read of stored blocks: the backing file was cut inside a block.
fn truncated(n: u64) -> impl Fn(io::Error) -> io::Error {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(ContentError::Corrupt(n))
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn keys() -> Arc<VolumeKeys> {
        Arc::new(VolumeKeys::derive(&[2; 32], &[4; 16], Algorithm::Aes256Gcm).unwrap())
    }

    fn open(path: &std::path::Path, keys: &Arc<VolumeKeys>, bs: usize) -> EncryptedFile {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
        EncryptedFile::open(f, keys.clone(), Layout { block_size: bs }).unwrap()
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
                        // Now and then one large enough to be streamed (streaming.rs).
                        let len = if rng.gen_range(0..16) == 0 {
                            rng.gen_range(1..48 * bs)
                        } else {
                            rng.gen_range(1..3 * bs)
                        };
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
        let mut byte = [0u8];
        std::fs::File::open(&path).unwrap().read_exact_at(&mut byte, HEADER_LEN as u64 + 20).unwrap();
        raw.write_all_at(&[!byte[0]], HEADER_LEN as u64 + 20).unwrap();
        let err = f.read_at(&mut buf[..4], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        raw.write_all_at(b"X", 0).unwrap();
        let reopened = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        assert!(EncryptedFile::open(reopened, k.clone(), Layout { block_size: 4096 }).is_err());
    }
}
