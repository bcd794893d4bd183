//! File contents and attributes: open/create, read, write, truncate, fsync, fallocate, chmod,
//! chown and utimens. All handles of a file share its inode's one backing descriptor and header
//! (two handles must never give an empty file two different headers); readers share its lock,
//! writers hold it alone.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FopenFlags, INodeNo, Request, TimeOrNow};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};

use super::inodes::{Content, Inode, Kind, Reach};
use super::{errno, io_errno, KmsFs};
use crate::file_io::EncryptedFile;

/// How far ahead of a sequential reader the backing file is read.
const READ_AHEAD: u64 = 4 << 20;

pub(super) struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub caller: u32,
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        Some(TimeOrNow::Now) => Timespec { tv_sec: 0, tv_nsec: UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                    if n == 0 {
                        (s, 0)
                    } else {
                        (s - 1, 1_000_000_000 - n)
                    }
                }
            };
            Timespec { tv_sec: secs, tv_nsec: nanos }
        }
    }
}

/// The reply flags of an open: the page cache is kept across opens (the mount is the only
/// writer); `O_DIRECT` opens bypass it; without the writeback cache there is nothing to flush at
/// close (every write reached the backing file when it was answered), so no FLUSH round trip.
fn fopen_flags(flags: i32, writeback: bool) -> FopenFlags {
    let cache = if flags & libc::O_DIRECT != 0 { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
    if writeback {
        cache
    } else {
        cache | FopenFlags::FOPEN_NOFLUSH
    }
}

/// Mode bits a write or truncation by an unprivileged caller clears (as the kernel would):
/// set-user-id, and set-group-id when group-executable.
fn killed_mode(mode: u32) -> Option<u32> {
    let mut m = mode & 0o7777;
    m &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != mode & 0o7777).then_some(m)
}

impl KmsFs {
    /// Makes sure the inode's content is open (for writing if `write`), counting one more
    /// handle if `handle`.
    fn open_content(&self, inode: &Inode, content: &mut Content, write: bool) -> Result<(), Errno> {
        if inode.kind != Kind::File {
            return Err(if inode.kind == Kind::Dir { Errno::EISDIR } else { Errno::EINVAL });
        }
        if content.file.is_some() && (content.writable || !write) {
            return Ok(());
        }
        // Read-write even for write-only opens: partial blocks are read back (and the writeback
        // cache reads pages in). A file the daemon may only read is opened read-only.
        // Reopened through the pinned object: only ever the regular file this inode names (a
        // FIFO, device or symlink swapped in under its name is ESTALE, never opened).
        let pinned = inode.pin_by_name()?;
        let path = pinned.path();
        let open = |mode| rustix::fs::open(path.as_str(), mode | OFlags::CLOEXEC, Mode::empty());
        let (fd, writable) = match open(OFlags::RDWR) {
            Ok(fd) => (fd, true),
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::ROFS) if !write => {
                (open(OFlags::RDONLY).map_err(errno)?, false)
            }
            Err(e) => return Err(errno(e)),
        };
        let file = EncryptedFile::open(fd.into(), self.keys.clone(), self.layout).map_err(|e| {
            tracing::error!("file header: {}: {e}", self.describe(inode));
            Errno::EIO
        })?;
        content.file = Some(file);
        content.writable = writable;
        Ok(())
    }

    pub(super) fn open_file(&self, ino: INodeNo, flags: i32) -> Result<FopenFlags, Errno> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if write {
            self.writable()?;
        }
        let inode = self.inode(ino)?;
        let mut content = inode.content.write();
        self.open_content(&inode, &mut content, write)?;
        if flags & libc::O_TRUNC != 0 && write {
            self.content_result(&inode, content.file.as_mut().expect("opened").set_size(0))?;
        }
        content.opens += 1;
        Ok(fopen_flags(flags, self.writeback))
    }

    pub(super) fn create_file(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, FopenFlags), Errno> {
        let excl = if flags & libc::O_EXCL != 0 { OFlags::EXCL } else { OFlags::empty() };
        let perm = Mode::from_raw_mode(mode & 0o7777);
        // The descriptor that creates the file becomes its content: no second open, no re-stat.
        let mut created = None;
        let attr = self.create_entry(req, parent, name, |dir, backing| {
            let fd =
                rustix::fs::openat(dir.fd()?, backing, OFlags::CREATE | excl | OFlags::RDWR | OFlags::CLOEXEC, perm)
                    .map_err(errno)?;
            created = Some(fd);
            Ok(())
        })?;
        let inode = self.inode(attr.ino)?;
        let mut content = inode.content.write();
        match (created, content.file.is_some() && content.writable) {
            (Some(fd), false) => {
                let len = rustix::fs::fstat(&fd).map_err(errno)?.st_size as u64;
                let file =
                    EncryptedFile::open_with_len(fd.into(), self.keys.clone(), self.layout, len).map_err(|e| {
                        tracing::error!("file header: {}: {e}", self.describe(&inode));
                        Errno::EIO
                    })?;
                content.file = Some(file);
                content.writable = true;
            }
            _ => self.open_content(&inode, &mut content, true)?,
        }
        if flags & libc::O_TRUNC != 0 {
            self.content_result(&inode, content.file.as_mut().expect("opened").set_size(0))?;
        }
        content.opens += 1;
        Ok((attr, fopen_flags(flags, self.writeback)))
    }

    pub(super) fn release_file(&self, ino: INodeNo) -> Result<(), Errno> {
        let inode = self.inode(ino)?;
        let mut content = inode.content.write();
        content.opens = content.opens.saturating_sub(1);
        if content.opens == 0 {
            content.file = None;
        }
        Ok(())
    }

    /// Maps an I/O error of the content to an errno, logging damage with the backing path.
    fn content_result<T>(&self, inode: &Inode, r: std::io::Result<T>) -> Result<T, Errno> {
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                tracing::error!("integrity error in {}: {e}", self.describe(inode));
            }
            io_errno(e)
        })
    }

    pub(super) fn read_file(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(ino)?;
        let content = inode.content.read();
        let file = content.file.as_ref().ok_or(Errno::EBADF)?;
        let mut buf = vec![0u8; size as usize];
        let n = self.content_result(&inode, file.read_at(&mut buf, offset))?;
        buf.truncate(n);
        // A sequential reader: have the backing file's next stored blocks read from disk while
        // this answer travels, so the next request finds them in the page cache.
        let end = offset + n as u64;
        if content.read_end.swap(end, std::sync::atomic::Ordering::Relaxed) == offset && n > 0 {
            let layout = self.layout;
            let from = layout.stored_size(end);
            let _ = rustix::fs::fadvise(
                file.backing(),
                from,
                std::num::NonZeroU64::new(READ_AHEAD),
                rustix::fs::Advice::WillNeed,
            );
        }
        Ok(buf)
    }

    pub(super) fn write_file(&self, ino: INodeNo, offset: u64, data: &[u8], kill_suid: bool) -> Result<(), Errno> {
        let inode = self.inode(ino)?;
        let mut content = inode.content.write();
        if !content.writable {
            return Err(Errno::EBADF);
        }
        let file = content.file.as_mut().ok_or(Errno::EBADF)?;
        if kill_suid {
            kill_suid_sgid(file.backing())?;
        }
        self.content_result(&inode, file.write_at(data, offset))
    }

    pub(super) fn sync_file(&self, ino: INodeNo, datasync: bool) -> Result<(), Errno> {
        let inode = self.inode(ino)?;
        let content = inode.content.read();
        let file = content.file.as_ref().ok_or(Errno::EBADF)?;
        if datasync { file.sync_data() } else { file.sync_all() }.map_err(io_errno)
    }

    /// Runs `f` on the file's content, opening it for the call if no handle has it open (a
    /// `truncate(2)` by path).
    fn with_content<T>(
        &self,
        inode: &Inode,
        f: impl FnOnce(&mut EncryptedFile) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let mut content = inode.content.write();
        let temporary = content.file.is_none();
        self.open_content(inode, &mut content, true)?;
        let r = f(content.file.as_mut().expect("opened"));
        if temporary {
            content.file = None;
        }
        self.content_result(inode, r)
    }

    pub(super) fn set_attr(&self, ino: INodeNo, c: AttrChange) -> Result<FileAttr, Errno> {
        self.writable()?;
        let inode = self.inode(ino)?;
        if let Some(size) = c.size {
            let kill = c.caller != 0;
            self.with_content(&inode, |f| {
                if kill {
                    kill_suid_sgid(f.backing()).map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
                }
                f.set_size(size)
            })?;
        }
        // Every change goes to the pinned object (inodes.rs `pin`), never through a name a
        // local user could swap for a symlink between lookup and call.
        if let Some(mode) = c.mode {
            let mode = Mode::from_raw_mode(mode & 0o7777);
            let pinned = inode.pin()?;
            match pinned.reach() {
                Reach::Fd(fd) => rustix::fs::fchmod(fd, mode),
                Reach::Path(p) => rustix::fs::chmodat(rustix::fs::CWD, p.as_str(), mode, AtFlags::empty()),
            }
            .map_err(errno)?;
        }
        if c.uid.is_some() || c.gid.is_some() {
            let uid = c.uid.map(rustix::process::Uid::from_raw);
            let gid = c.gid.map(rustix::process::Gid::from_raw);
            rustix::fs::chownat(inode.pin()?.fd(), "", uid, gid, AtFlags::EMPTY_PATH).map_err(errno)?;
        }
        if c.atime.is_some() || c.mtime.is_some() {
            let times = Timestamps { last_access: timespec(c.atime), last_modification: timespec(c.mtime) };
            rustix::fs::utimensat(inode.pin()?.fd(), "", &times, AtFlags::EMPTY_PATH).map_err(errno)?;
        }
        self.attr_of(&inode)
    }

    /// `access(2)` on a private mount (no default_permissions): the backing object answers for
    /// the daemon's user, who is the only user let in.
    pub(super) fn check_access(&self, ino: INodeNo, mask: i32) -> Result<(), Errno> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Ok(());
        }
        if mask & libc::W_OK != 0 {
            self.writable()?;
        }
        let access = rustix::fs::Access::from_bits_truncate(mask as u32);
        rustix::fs::accessat(rustix::fs::CWD, inode.pin()?.path().as_str(), access, AtFlags::EACCESS).map_err(errno)
    }

    /// `fallocate`: mode 0 and `KEEP_SIZE` reserve the stored blocks of the range (a reserved
    /// all-zero block reads as a hole, i.e. zeros); `PUNCH_HOLE` zeroes whole stored blocks and
    /// writes zeros into partial ones. Other modes would move or reinterpret blocks: unsupported.
    pub(super) fn allocate(&self, ino: INodeNo, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        self.writable()?;
        let inode = self.inode(ino)?;
        let layout = self.layout;
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        let bs = layout.block_size as u64;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => self.with_content(&inode, |f| {
                let size = f.size()?;
                let from = layout.block_offset(offset / bs);
                let to = layout.stored_size(end);
                rustix::fs::fallocate(f.backing(), rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from)?;
                if !keep_size && end > size {
                    f.set_size(end)?;
                }
                Ok(())
            }),
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => self.with_content(&inode, |f| {
                let size = f.size()?;
                let end = end.min(size);
                if offset >= end {
                    return Ok(());
                }
                let (first_whole, last_whole) = (offset.div_ceil(bs), end / bs);
                if first_whole < last_whole {
                    let from = layout.block_offset(first_whole);
                    let to = layout.block_offset(last_whole);
                    let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
                    rustix::fs::fallocate(f.backing(), punch, from, to - from)?;
                }
                // The partial blocks at either end are written as zeros.
                let head_end = end.min(first_whole * bs);
                if offset < head_end {
                    f.write_at(&vec![0; (head_end - offset) as usize], offset)?;
                }
                let tail_start = (last_whole * bs).max(offset);
                if tail_start < end && last_whole >= first_whole {
                    f.write_at(&vec![0; (end - tail_start) as usize], tail_start)?;
                }
                Ok(())
            }),
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

fn kill_suid_sgid(file: &std::fs::File) -> Result<(), Errno> {
    let st = rustix::fs::fstat(file).map_err(errno)?;
    if let Some(mode) = killed_mode(st.st_mode) {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(errno)?;
    }
    Ok(())
}
