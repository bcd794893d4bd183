//! Holes: which parts of a backing file hold data (SEEK_DATA/SEEK_HOLE), and copies that keep
//! the rest a hole. A disk's unwritten sectors are holes in its file until something writes them,
//! so copying only the data keeps a mostly empty disk's snapshot as small as the disk.

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;

/// The data extents of `file` within `[from, to)`, as `(offset, len)` in order. A filesystem
/// that cannot tell reports the whole range as data (the kernel's generic SEEK_DATA does).
pub fn data_extents(file: &File, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(s) => s,
            // No data at or after `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if start >= to {
            break;
        }
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(e) => e.min(to),
            Err(rustix::io::Errno::NXIO) => to,
            Err(e) => return Err(e.into()),
        };
        out.push((start, end - start));
        at = end;
    }
    Ok(out)
}

/// Copies `from` into the empty file `to` extent by extent (`copy_file_range`), leaving holes
/// where `from` has them, and gives `to` the same length.
pub fn copy_sparse(from: &File, to: &File) -> io::Result<()> {
    let len = from.metadata()?.len();
    for (start, n) in data_extents(from, 0, len)? {
        copy_extent(from, to, start, n)?;
    }
    to.set_len(len)
}

/// Copies `[start, start + n)` of `from` to the same place in `to` (`copy_file_range`).
fn copy_extent(from: &File, to: &File, start: u64, n: u64) -> io::Result<()> {
    let (mut off_in, mut off_out, mut left) = (start, start, n);
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        let done = rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), chunk)?;
        if done == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the source file shrank while it was copied"));
        }
        left -= done as u64;
    }
    Ok(())
}

/// Makes `[start, end)` of `to` what it is in `from`: the data extents copied, the rest punched
/// out (or zeroed, where the filesystem cannot punch).
pub fn recopy(from: &File, to: &File, start: u64, end: u64) -> io::Result<()> {
    let mut at = start;
    let mut extents = data_extents(from, start, end)?;
    extents.push((end, 0));
    for (data, n) in extents {
        if data > at {
            clear(to, at, data - at)?;
        }
        copy_extent(from, to, data, n)?;
        at = data + n;
    }
    Ok(())
}

/// A hole at `[at, at + len)` of `f`: punched, or zeroes where the filesystem cannot punch.
fn clear(f: &File, at: u64, len: u64) -> io::Result<()> {
    let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    if rustix::fs::fallocate(f, flags, at, len).is_ok() {
        return Ok(());
    }
    use std::os::unix::fs::FileExt;
    let zeroes = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeroes.len() as u64) as usize;
        f.write_all_at(&zeroes[..n], at + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;

    #[test]
    fn a_copy_keeps_holes_and_data() {
        let d = tempfile::tempdir().unwrap();
        let src = File::options().read(true).write(true).create(true).truncate(true).open(d.path().join("a")).unwrap();
        src.set_len(64 << 20).unwrap();
        src.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        src.write_all_at(&[9u8; 4096], 40 << 20).unwrap();
        let extents = data_extents(&src, 0, 64 << 20).unwrap();
        assert!(extents.iter().all(|&(s, n)| s <= 40 << 20 && n < 1 << 20), "{extents:?}");
        assert_eq!(extents.iter().map(|e| e.1).sum::<u64>(), 12288);
        let dst = File::create(d.path().join("b")).unwrap();
        copy_sparse(&src, &dst).unwrap();
        let b = std::fs::read(d.path().join("b")).unwrap();
        assert_eq!(b, std::fs::read(d.path().join("a")).unwrap());
        assert!(dst.metadata().unwrap().blocks() * 512 <= 64 << 10, "the copy filled holes");
    }

    #[test]
    fn a_recopy_brings_a_range_up_to_date_holes_included() {
        let d = tempfile::tempdir().unwrap();
        let src = File::options().read(true).write(true).create(true).truncate(true).open(d.path().join("a")).unwrap();
        src.set_len(8 << 20).unwrap();
        src.write_all_at(&[7u8; 1 << 20], 1 << 20).unwrap();
        let dst = File::options().read(true).write(true).create(true).truncate(true).open(d.path().join("b")).unwrap();
        copy_sparse(&src, &dst).unwrap();
        // Then the source changes: new data in one place, a hole punched where data was.
        src.write_all_at(&[9u8; 4096], 5 << 20).unwrap();
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&src, punch, 1 << 20, 1 << 19).unwrap();
        recopy(&src, &dst, 1 << 20, 2 << 20).unwrap();
        recopy(&src, &dst, 5 << 20, 6 << 20).unwrap();
        assert_eq!(std::fs::read(d.path().join("b")).unwrap(), std::fs::read(d.path().join("a")).unwrap());
    }
}
