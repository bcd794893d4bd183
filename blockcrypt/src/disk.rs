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

use parking_lot::{Mutex, MutexGuard, RwLock};

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
    /// Held shared by every change to the file (write, zeroes, discard) for its whole duration,
    /// and exclusively by [`Disk::copy_to`] while it starts tracking changes and while it
    /// recopies what changed: what it copies then holds each write wholly or not at all.
    gate: RwLock<()>,
    /// While [`Disk::copy_to`] copies with writes going on: one bit per [`DIRTY_CHUNK`] of the
    /// file, set by every change to it.
    dirty: Mutex<Option<Vec<u64>>>,
    tracking: std::sync::atomic::AtomicBool,
}

/// The unit in which changes made during an online copy are recopied.
const DIRTY_CHUNK: u64 = 1 << 20;

fn einval(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// An unwritten sector: its ciphertext is all zeroes (a hole of the file). Written ciphertext
/// starts with eight zero bytes once in 2^64 sectors, so the first word nearly always decides.
fn unwritten(sector: &[u8]) -> bool {
    sector[..8] == [0u8; 8] && sector.iter().all(|&b| b == 0)
}

impl Disk {
    pub fn new(file: File, cipher: Arc<SectorCipher>, base: u64, size: u64, read_only: bool) -> Disk {
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        Disk {
            file,
            cipher,
            base,
            size,
            read_only,
            stripes,
            gate: RwLock::new(()),
            dirty: Mutex::new(None),
            tracking: Default::default(),
        }
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

    fn lock(&self, stripe: u64) -> MutexGuard<'_, ()> {
        self.stripes[stripe as usize].lock()
    }

    /// Reads and decrypts whole sectors starting at sector `first` into `buf`.
    fn read_sectors(&self, first: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, self.base + first * S)?;
        self.decrypt(first, buf);
        Ok(())
    }

    /// Decrypts whole sectors in place, but for unwritten ones (FORMAT.md: a sector whose
    /// ciphertext is all zeroes – a hole of the file – reads as zeroes, as on a new cloud disk).
    fn decrypt(&self, first: u64, buf: &mut [u8]) {
        let mut run_start = None;
        for i in 0..buf.len() / SECTOR {
            match (unwritten(&buf[i * SECTOR..(i + 1) * SECTOR]), run_start) {
                (false, None) => run_start = Some(i),
                (true, Some(start)) => {
                    self.cipher.decrypt(first + start as u64, &mut buf[start * SECTOR..i * SECTOR]);
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            self.cipher.decrypt(first + start as u64, &mut buf[start * SECTOR..]);
        }
    }

    /// Encrypts `buf` (whole sectors) in place and writes it at sector `first`.
    fn write_sectors(&self, first: u64, buf: &mut [u8]) -> io::Result<()> {
        self.cipher.encrypt(first, buf);
        self.changed(self.base + first * S, buf.len() as u64);
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
        self.decrypt(offset / S, &mut out[start..]);
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

    /// Copies the disk's file into the empty file `copy` as it is at one instant, without
    /// stopping writes for longer than it takes to recopy what they change meanwhile: changes
    /// are tracked from the start (set under the gate, so no change in flight is missed), the
    /// data extents are copied with writes going on, then, with writes held back (the ones in
    /// flight finish first), the chunks changed since are copied again – data, or holes punched
    /// meanwhile. Returns how long writes were held back.
    pub fn copy_to(&self, copy: &File) -> io::Result<std::time::Duration> {
        use std::sync::atomic::Ordering;
        let len = self.file.metadata()?.len();
        {
            let _gate = self.gate.write();
            *self.dirty.lock() = Some(vec![0u64; len.div_ceil(DIRTY_CHUNK).div_ceil(64) as usize]);
            self.tracking.store(true, Ordering::Release);
        }
        let first = crate::sparse::copy_sparse(&self.file, copy);
        let t0 = std::time::Instant::now();
        let _gate = self.gate.write();
        self.tracking.store(false, Ordering::Release);
        let dirty = self.dirty.lock().take().unwrap_or_default();
        first?;
        for (word, bits) in dirty.iter().enumerate().filter(|(_, b)| **b != 0) {
            for bit in (0..64).filter(|b| bits & (1 << b) != 0) {
                let start = (word as u64 * 64 + bit) * DIRTY_CHUNK;
                crate::sparse::recopy(&self.file, copy, start, (start + DIRTY_CHUNK).min(len))?;
            }
        }
        Ok(t0.elapsed())
    }

    /// Records a change to the file's bytes `[start, start + len)` for a copy in progress.
    fn changed(&self, start: u64, len: u64) {
        if len == 0 || !self.tracking.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let Some(bits) = self.dirty.lock().as_mut() {
            for chunk in start / DIRTY_CHUNK..=(start + len - 1) / DIRTY_CHUNK {
                if let Some(w) = bits.get_mut((chunk / 64) as usize) {
                    *w |= 1 << (chunk % 64);
                }
            }
        }
    }

    /// Writes `data` at `offset`; `data` is encrypted in place (the caller's buffer is consumed).
    pub fn write_at(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let _gate = self.gate.read();
        self.write_ungated(offset, data)
    }

    fn write_ungated(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
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
        // Two edge sectors, two stripes: always taken lowest first, so writes that share
        // stripes in opposite order cannot deadlock.
        let (sa, sb) = (first % STRIPES as u64, last % STRIPES as u64);
        let _a = self.lock(sa.min(sb));
        let _b = (sa != sb).then(|| self.lock(sa.max(sb)));
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

    /// Zeroes the range: whole sectors become unwritten again (a hole, which reads as zeroes)
    /// unless `allocate` asks for them to keep their space (or the filesystem cannot punch
    /// holes); then, like the partial sectors at the edges, they get encrypted zeroes.
    pub fn write_zeroes(&self, offset: u64, len: u64, allocate: bool) -> io::Result<()> {
        let _gate = self.gate.read();
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.check(offset, len)?;
        let (start, end) = (offset.div_ceil(S) * S, (offset + len) / S * S);
        if !allocate && end > start && self.punch(start, end - start).is_ok() {
            // The partial sectors at either edge keep the rest of their contents.
            self.encrypted_zeroes(offset, start - offset)?;
            return self.encrypted_zeroes(end, offset + len - end);
        }
        self.encrypted_zeroes(offset, len)
    }

    fn encrypted_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK as u64);
            let mut zeroes = vec![0u8; n as usize];
            self.write_ungated(offset + done, &mut zeroes)?;
            done += n;
        }
        Ok(())
    }

    /// Gives back the space of the whole sectors in the range; they read as zeroes afterwards.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _gate = self.gate.read();
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        self.check(offset, len)?;
        let start = offset.div_ceil(S) * S;
        let end = (offset + len) / S * S;
        if end > start {
            self.punch(start, end - start)?;
        }
        Ok(())
    }

    /// Punches whole sectors out of the file (a filesystem block only partly covered gets
    /// zeroes written, which read as unwritten sectors just the same).
    fn punch(&self, start: u64, len: u64) -> io::Result<()> {
        self.changed(self.base + start, len);
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            self.base + start,
            len,
        )?;
        Ok(())
    }

    /// Whether the disk range `(offset, len)` is unwritten (a hole), as runs `(len, hole)`
    /// covering it in order – what NBD's `base:allocation` reports.
    pub fn map(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, bool)>> {
        self.check(offset, len)?;
        let mut out = Vec::new();
        let mut at = offset;
        for (start, n) in crate::sparse::data_extents(&self.file, self.base + offset, self.base + offset + len)? {
            let start = start - self.base;
            if start > at {
                out.push((start - at, true));
            }
            out.push((n, false));
            at = start + n;
        }
        if at < offset + len {
            out.push((offset + len - at, true));
        }
        Ok(out)
    }

    pub fn flush(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }

    /// The disk ranges `(offset, len)` its file holds data for (the runs [`Disk::map`] does not
    /// call holes), in whole sectors: the sectors ever written.
    pub fn allocated(&self) -> io::Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = 0;
        for (len, hole) in self.map(0, self.size)? {
            if !hole {
                let (start, end) = (at / S * S, (at + len).next_multiple_of(S).min(self.size));
                match out.last_mut() {
                    Some(last) if last.0 + last.1 >= start => last.1 = last.1.max(end - last.0),
                    _ => out.push((start, end - start)),
                }
            }
            at += len;
        }
        Ok(out)
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
    fn unwritten_sectors_read_zeroes_and_map_as_holes() {
        let (d, _f) = disk(1 << 20);
        let mut back = vec![1u8; 1 << 20];
        d.read_at(0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0), "a new disk reads zeroes");
        assert_eq!(d.map(0, 1 << 20).unwrap(), [(1 << 20, true)]);
        d.write_at(65536, &mut [7u8; 4096]).unwrap();
        assert_eq!(d.map(0, 1 << 20).unwrap(), [(65536, true), (4096, false), ((1 << 20) - 69632, true)]);
        // Zeroing whole blocks punches them out again; keeping them allocated does not.
        d.write_zeroes(65536, 4096, true).unwrap();
        assert_eq!(d.map(65536, 4096).unwrap(), [(4096, false)]);
        d.write_zeroes(65536, 4096, false).unwrap();
        assert_eq!(d.map(0, 1 << 20).unwrap(), [(1 << 20, true)]);
        d.read_at(0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        // A write that ends mid-sector next to unwritten sectors keeps them zero.
        d.write_at(1000, &mut [9u8; 100]).unwrap();
        let mut s = vec![1u8; 2048];
        d.read_at(0, &mut s).unwrap();
        assert!(
            s[..1000].iter().all(|&b| b == 0)
                && s[1000..1100].iter().all(|&b| b == 9)
                && s[1100..].iter().all(|&b| b == 0)
        );
    }

    #[test]
    fn unaligned_writes_patch_their_sectors() {
        let (d, _f) = disk(8192);
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

    /// Four threads write single bytes interleaved across the same sectors (thread t owns the
    /// bytes at t, t+4, t+8, …): every byte lands, because edge-sector read-modify-writes are
    /// serialised per sector.
    #[test]
    fn concurrent_unaligned_writes_to_shared_sectors_all_land() {
        let (d, _f) = disk(4096);
        let d = Arc::new(d);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for at in (t..4096).step_by(4) {
                        d.write_at(at, &mut [t as u8 + 1]).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|h| h.join().unwrap());
        let mut back = vec![0u8; 4096];
        d.read_at(0, &mut back).unwrap();
        let want: Vec<u8> = (0..4096).map(|i| (i % 4) as u8 + 1).collect();
        assert_eq!(back, want);
    }

    /// An unaligned write over sectors 255→256 needs stripes 255 and 0; one over 256→511 needs
    /// 0 and 255: taken in a fixed order, the two can run at once forever without deadlock.
    #[test]
    fn edge_locks_in_opposite_stripe_order_do_not_deadlock() {
        let (d, _f) = disk(512 * 512);
        let d = Arc::new(d);
        let spans = [(255 * 512 + 100, 600usize), (256 * 512 + 1, 255 * 512)];
        let threads: Vec<_> = spans
            .into_iter()
            .map(|(at, len)| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        d.write_at(at, &mut vec![1u8; len]).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|h| h.join().unwrap());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of writes, zeroings and reads at any offsets behaves like a byte array.
        #[test]
        fn behaves_like_a_byte_array(ops in proptest::collection::vec((0u8..3, 0u64..6000, 1usize..3000, proptest::prelude::any::<u8>()), 1..40)) {
            const SIZE: u64 = 6144;
            let (d, _f) = disk(SIZE);
            let mut model = vec![0u8; SIZE as usize];
            for (op, off, len, byte) in ops {
                let len = len.min((SIZE - off) as usize);
                let range = off as usize..off as usize + len;
                match op {
                    0 => {
                        d.write_at(off, &mut vec![byte; len]).unwrap();
                        model[range].fill(byte);
                    }
                    1 => {
                        // Holes punched, or encrypted zeroes kept allocated: zeroes either way.
                        d.write_zeroes(off, len as u64, byte % 2 == 0).unwrap();
                        model[range].fill(0);
                    }
                    _ => {
                        let mut got = Vec::new();
                        d.read_append(off, len, &mut got).unwrap();
                        proptest::prop_assert_eq!(&got[..], &model[range]);
                    }
                }
            }
            let mut all = vec![0u8; SIZE as usize];
            d.read_at(0, &mut all).unwrap();
            proptest::prop_assert_eq!(all, model);
        }
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
