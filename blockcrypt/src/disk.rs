//! Plaintext I/O on an open volume: byte ranges in, whole encrypted sectors on the backing file.
//!
//! Every request is one positioned read or write of the sectors it covers. A request that starts
//! or ends inside a sector reads, decrypts, patches and re-encrypts that edge sector under the
//! sector's stripe lock, so two unaligned writes to disjoint parts of one sector both land. All
//! users of a `Disk` share one descriptor, so `flush` (fdatasync) covers every write that has
//! returned – on any connection.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::xts::{SectorCipher, SECTOR};

const S: u64 = SECTOR as u64;
const STRIPES: usize = 256;
/// Zeroes are encrypted and written in pieces of this size.
const ZERO_CHUNK: usize = 1 << 20;

pub struct Disk {
    file: File,
    cipher: Arc<SectorCipher>,
    /// Where the payload starts in the file (0 for a detached header).
    base: u64,
    size: u64,
    read_only: bool,
    stripes: Vec<Mutex<()>>,
}

fn einval(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

impl Disk {
    pub fn new(file: File, cipher: Arc<SectorCipher>, base: u64, size: u64, read_only: bool) -> Disk {
        Disk { file, cipher, base, size, read_only, stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(einval("beyond the end of the disk")),
        }
    }

    fn lock(&self, sector: u64) -> MutexGuard<'_, ()> {
        self.stripes[(sector % STRIPES as u64) as usize].lock()
    }

    /// Reads and decrypts whole sectors starting at sector `first` into `buf`.
    fn read_sectors(&self, first: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, self.base + first * S)?;
        self.cipher.decrypt(first, buf);
        Ok(())
    }

    /// Encrypts `buf` (whole sectors) in place and writes it at sector `first`.
    fn write_sectors(&self, first: u64, buf: &mut [u8]) -> io::Result<()> {
        self.cipher.encrypt(first, buf);
        self.file.write_all_at(buf, self.base + first * S)
    }

    /// Appends `len` plaintext bytes from `offset` to `out`. Aligned reads go straight into the
    /// vector's spare capacity (no zero-filling of a buffer that is about to be overwritten).
    pub fn read_append(&self, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        self.check(offset, len as u64)?;
        let start = out.len();
        if !(offset.is_multiple_of(S) && (len as u64).is_multiple_of(S)) {
            out.resize(start + len, 0);
            return self.read_at(offset, &mut out[start..]);
        }
        out.reserve_exact(len);
        while out.len() < start + len {
            let at = self.base + offset + (out.len() - start) as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(out), at) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The spare capacity may have been larger than asked: drop what was read beyond.
        out.truncate(start + len);
        self.cipher.decrypt(offset / S, &mut out[start..]);
        Ok(())
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        if offset.is_multiple_of(S) && (buf.len() as u64).is_multiple_of(S) {
            return self.read_sectors(offset / S, buf);
        }
        let first = offset / S;
        let end = (offset + buf.len() as u64).div_ceil(S);
        let mut covering = vec![0u8; ((end - first) * S) as usize];
        self.read_sectors(first, &mut covering)?;
        let skip = (offset - first * S) as usize;
        buf.copy_from_slice(&covering[skip..skip + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `offset`; `data` is encrypted in place (the caller's buffer is consumed).
    pub fn write_at(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.check(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        if offset.is_multiple_of(S) && (data.len() as u64).is_multiple_of(S) {
            return self.write_sectors(offset / S, data);
        }
        let first = offset / S;
        let last = (offset + data.len() as u64 - 1) / S;
        let _a = self.lock(first);
        let _b = (last % STRIPES as u64 != first % STRIPES as u64).then(|| self.lock(last));
        let mut covering = vec![0u8; ((last - first + 1) * S) as usize];
        let skip = (offset - first * S) as usize;
        // Only the edge sectors need their old contents.
        if skip != 0 {
            self.read_sectors(first, &mut covering[..SECTOR])?;
        }
        let tail = (offset + data.len() as u64) % S;
        if tail != 0 && (last != first || skip == 0) {
            let at = covering.len() - SECTOR;
            self.read_sectors(last, &mut covering[at..])?;
        }
        covering[skip..skip + data.len()].copy_from_slice(data);
        self.write_sectors(first, &mut covering)
    }

    /// Writes encrypted zeroes (never holes: a hole would read back as garbage, not zeroes).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK as u64);
            let mut zeroes = vec![0u8; n as usize];
            self.write_at(offset + done, &mut zeroes)?;
            done += n;
        }
        Ok(())
    }

    /// Gives back the space of the whole sectors in the range (their contents become undefined).
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.check(offset, len)?;
        let start = offset.div_ceil(S) * S;
        let end = (offset + len) / S * S;
        if end > start {
            rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                self.base + start,
                end - start,
            )?;
        }
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xts::Algorithm;

    fn disk(size: u64) -> (Disk, tempfile::NamedTempFile) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(4096 + size).unwrap();
        let key: Vec<u8> = (0..64).collect();
        let c = Arc::new(SectorCipher::new(Algorithm::Aes, &key).unwrap());
        (Disk::new(f.reopen().unwrap(), c, 4096, size, false), f)
    }

    #[test]
    fn unaligned_writes_patch_their_sectors() {
        let (d, _f) = disk(8192);
        d.write_zeroes(0, 8192).unwrap();
        let mut model = vec![0u8; 8192];
        for (off, len, byte) in [(3u64, 10usize, 1u8), (500, 30, 2), (1024, 512, 3), (1500, 3000, 4), (8191, 1, 5)] {
            let mut data = vec![byte; len];
            d.write_at(off, &mut data).unwrap();
            model[off as usize..off as usize + len].fill(byte);
        }
        let mut back = vec![0u8; 8192];
        d.read_at(0, &mut back).unwrap();
        assert_eq!(back, model);
        let mut piece = vec![0u8; 777];
        d.read_at(1234, &mut piece).unwrap();
        assert_eq!(piece, model[1234..1234 + 777]);
    }

    #[test]
    fn read_append_after_a_prefix() {
        let (d, _f) = disk(8192);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        d.write_at(0, &mut data.clone()).unwrap();
        for (off, len) in [(0u64, 8192usize), (512, 1024), (3, 700)] {
            let mut out = b"hdr".to_vec();
            d.read_append(off, len, &mut out).unwrap();
            assert_eq!(&out[..3], b"hdr");
            assert_eq!(&out[3..], &data[off as usize..off as usize + len]);
        }
        assert!(d.read_append(8192, 512, &mut Vec::new()).is_err());
    }

    #[test]
    fn bounds_and_read_only() {
        let (d, f) = disk(4096);
        assert!(d.read_at(4000, &mut [0u8; 200]).is_err());
        assert!(d.write_at(u64::MAX - 1, &mut [0u8; 4]).is_err());
        let ro = Disk::new(f.reopen().unwrap(), d.cipher.clone(), 4096, 4096, true);
        assert_eq!(ro.write_at(0, &mut [0u8; 512]).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
