//! What `stat` shows for an object of the volume: the backing object's metadata with the
//! plaintext size (for files, from the stored size; for symlinks, from the sealed target's
//! length) – no decryption needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use rustix::fs::Stat;

use super::inodes::Kind;
use crate::content::Layout;
use crate::records::symlink_len;

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn file_type(mode: u32) -> FileType {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::Directory => FileType::Directory,
        rustix::fs::FileType::Symlink => FileType::Symlink,
        rustix::fs::FileType::Fifo => FileType::NamedPipe,
        rustix::fs::FileType::Socket => FileType::Socket,
        rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
        rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub fn dirent_type(t: rustix::fs::FileType) -> FileType {
    file_type(t.as_raw_mode())
}

/// The plaintext size of a file stored in `stored` bytes. A backing file cut inside a block (a
/// write torn by a crash) shows the whole blocks before the cut, so it can still be read up to
/// there, truncated or removed; reading the torn block is EIO and fsck names it.
pub fn plain_file_size(layout: Layout, stored: u64) -> u64 {
    layout.plain_size(stored).unwrap_or_else(|_| {
        let whole = stored.saturating_sub(crate::content::HEADER_LEN as u64) / layout.stored_block_len() as u64;
        whole * layout.block_size as u64
    })
}

/// The attributes of the backing object `st`. `long_target_len` gives the length of a symlink
/// whose target is kept in a file (FORMAT.md §6), which only the backing symlink's own target
/// holds; it is asked only for such a symlink.
pub fn attr(nodeid: u64, st: &Stat, layout: Layout, long_target_len: impl FnOnce() -> u64) -> FileAttr {
    let stored = st.st_size as u64;
    let size = match Kind::of(st) {
        Kind::File => plain_file_size(layout, stored),
        Kind::Symlink => symlink_len(stored).unwrap_or_else(long_target_len),
        _ => stored,
    };
    FileAttr {
        ino: INodeNo(nodeid),
        size,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: layout.block_size as u32,
        flags: 0,
    }
}

/// The attributes of a negative lookup answer (node id 0: "no such name", cacheable).
pub fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
