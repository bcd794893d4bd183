//! The FUSE filesystem: the plaintext view of a cipher directory. Requests come over FUSE's
//! io_uring queues where the kernel offers them (threads per CPU, see
//! `third_party/fuser/src/uring.rs`), else over several `/dev/fuse` clones; the kernel keeps
//! file pages, attributes and names (also negative ones) cached across opens, which is safe
//! because the mount owns the cipher directory (it holds a lock on it); the writeback cache is
//! opt-in. The KMS is not used here at all: the keys were derived at unlock.
//!
//! Each operation is a method returning `Result<_, Errno>` in one of the submodules; the
//! `Filesystem` impl below only routes requests and replies.

mod attr;
mod entries;
mod files;
mod inodes;
mod listing;
mod session;
mod trash;
mod xattr_ops;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileAttr, Generation, INodeNo};
use parking_lot::Mutex;

pub use session::{mount, mounted_device, MountOptions};

use self::inodes::{Inode, InodeTable};
use self::listing::DirItem;
use crate::content::Layout;
use crate::dirs::{entry_name, EntryName};
use crate::keys::VolumeKeys;
use crate::names::NameCipher;

/// How long the kernel may trust attributes and names without asking again. The mount is the
/// only writer of its cipher directory, so this is about memory, not coherence.
const TTL: Duration = Duration::from_secs(1);
/// A plaintext path component's limit (NAME_MAX); longer encrypted forms are hashed (§4).
const NAME_MAX: usize = 255;

pub struct KmsFs {
    keys: Arc<VolumeKeys>,
    names: NameCipher,
    layout: Layout,
    inodes: InodeTable,
    dir_handles: Mutex<std::collections::HashMap<u64, Arc<Vec<DirItem>>>>,
    next_handle: AtomicU64,
    read_only: bool,
    writeback: bool,
    /// Ask for FUSE over io_uring (used when the kernel offers it: `fuse.enable_uring=1`).
    io_uring: bool,
    /// Where unlinked files go to be deleted in the background (none on read-only mounts).
    trash: Option<trash::Trash>,
    /// The files of symlink targets too long for a backing symlink (none on a read-only mount
    /// of a volume that never had one).
    links: Option<crate::links::Links>,
    /// Running as root: new objects are given to the caller (for `allow_other` mounts).
    as_root: bool,
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

/// The pointer to a long target (FORMAT.md §6) that the symlink `name` of `dir` holds (`""`:
/// `dir` is the symlink): its target's file and the length it claims (`stat` shows it; readlink
/// checks it). `None` if it holds no pointer.
fn long_pointer_at(dir: impl std::os::fd::AsFd, name: &str) -> Option<(String, u64)> {
    let stored = rustix::fs::readlinkat(dir, name, Vec::new()).ok()?;
    crate::records::long_pointer(stored.as_bytes()).map(|(file, len)| (file.to_string(), len))
}

impl KmsFs {
    /// A filesystem over the cipher directory open as `root` (an `O_PATH` descriptor).
    pub fn new(root: OwnedFd, keys: Arc<VolumeKeys>, layout: Layout, options: &MountOptions) -> std::io::Result<KmsFs> {
        let trash = match options.read_only {
            true => None,
            false => trash::Trash::open(std::os::fd::AsFd::as_fd(&root))
                .inspect_err(|e| tracing::warn!("no trash directory ({e}): files are deleted in place"))
                .ok(),
        };
        let links = crate::links::Links::open(std::os::fd::AsFd::as_fd(&root), !options.read_only)?;
        Ok(KmsFs {
            links,
            names: NameCipher::new(&keys),
            keys,
            layout,
            inodes: InodeTable::new(root)?,
            dir_handles: Mutex::new(Default::default()),
            next_handle: AtomicU64::new(1),
            read_only: options.read_only,
            writeback: options.writeback && !options.read_only,
            io_uring: options.io_uring,
            trash,
            as_root: rustix::process::geteuid().is_root(),
        })
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, Errno> {
        self.inodes.get(ino.0)
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// The backing name of entry `name` of directory `dir`.
    fn entry(&self, dir: &Inode, name: &OsStr) -> Result<EntryName, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if dir.kind != inodes::Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(entry_name(&self.names, &dir.dir_iv()?, name.as_bytes()))
    }

    /// Counts `backing` in `dir` as a new kernel reference and returns its inode and attributes.
    fn remember(&self, dir: &Arc<Inode>, backing: &str) -> Result<(Arc<Inode>, FileAttr), Errno> {
        let (inode, st) = self.inodes.remember(dir, backing)?;
        let fd = dir.fd()?;
        let attr = attr::attr(inode.nodeid, &st, self.layout, || long_pointer_at(fd, backing).map_or(0, |p| p.1));
        Ok((inode, attr))
    }

    fn attr_of(&self, inode: &Inode) -> Result<FileAttr, Errno> {
        let st = inode.stat()?;
        let long_len = || inode.pin().ok().and_then(|p| long_pointer_at(p.fd(), "")).map_or(0, |p| p.1);
        Ok(attr::attr(inode.nodeid, &st, self.layout, long_len))
    }

    /// Gives a new object to the caller when the daemon runs as root (otherwise it is the
    /// daemon's user's anyway).
    fn give_to_caller(&self, dir: &Inode, backing: &str, uid: u32, gid: u32) -> Result<(), Errno> {
        // Not root: objects are the daemon's user's anyway; root caller: they already are root's.
        if !self.as_root || (uid == 0 && gid == 0) {
            return Ok(());
        }
        let (uid, gid) = ids(uid, gid);
        rustix::fs::chownat(dir.fd()?, backing, Some(uid), Some(gid), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno)
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// The backing path of an inode, for log lines about damaged data.
    fn backing_path(&self, inode: &Inode) -> String {
        // By name, never through the content lock (the caller may hold it).
        let dir_path = |fd: &OwnedFd| std::fs::read_link(crate::dirs::fd_path(fd));
        let path = match inode.location() {
            Ok((parent, name)) => parent.fd().ok().and_then(|fd| dir_path(fd).ok()).map(|d| d.join(name)),
            Err(_) => inode.fd().ok().and_then(|fd| dir_path(fd).ok()),
        };
        path.map_or_else(|| format!("node {}", inode.nodeid), |p| p.display().to_string())
    }

    /// Where an object is, for a log line about it: its path in the volume where that can be
    /// derived (each backing name decrypted under its directory's IV), and its backing path.
    fn describe(&self, inode: &Inode) -> String {
        let backing = self.backing_path(inode);
        match self.plain_path(&backing) {
            Some(plain) => format!("{plain} (backing {backing})"),
            None => backing,
        }
    }

    /// The path in the volume of the backing path `backing`, or `None` if a name on the way
    /// does not decrypt (the damage being reported may be just that).
    fn plain_path(&self, backing: &str) -> Option<String> {
        let root = self.inodes.get(INodeNo::ROOT.0).ok()?;
        let root_path = std::fs::read_link(crate::dirs::fd_path(root.fd().ok()?)).ok()?;
        let rel = std::path::Path::new(backing).strip_prefix(&root_path).ok()?;
        let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW;
        let mut dir =
            rustix::fs::openat(root.fd().ok()?, ".", flags | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
                .ok()?;
        let mut plain = std::path::PathBuf::from("/");
        let parts: Vec<&str> = rel.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
        for (i, part) in parts.iter().enumerate() {
            let iv = crate::dirs::read_dir_iv_at(&dir).ok()?;
            plain.push(OsStr::from_bytes(&crate::dirs::name_at(&self.names, &dir, &iv, part).ok()?));
            if i + 1 < parts.len() {
                dir = rustix::fs::openat(&dir, *part, flags | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
                    .ok()?;
            }
        }
        Some(plain.display().to_string())
    }
}

fn ids(uid: u32, gid: u32) -> (rustix::process::Uid, rustix::process::Gid) {
    (rustix::process::Uid::from_raw(uid), rustix::process::Gid::from_raw(gid))
}

const GEN: Generation = Generation(0);

macro_rules! reply_with {
    ($reply:ident, $result:expr, |$v:pat_param| $ok:expr) => {
        match $result {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl fuser::Filesystem for KmsFs {
    fn init(&mut self, _req: &fuser::Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        use fuser::InitFlags as F;
        // HANDLE_KILLPRIV_V2: we clear set-user/group-id bits on writes ourselves, so the kernel
        // does not ask for security.capability before every write.
        let wanted = F::FUSE_WRITEBACK_CACHE
            | F::FUSE_HANDLE_KILLPRIV_V2
            | F::FUSE_PARALLEL_DIROPS
            | F::FUSE_CACHE_SYMLINKS
            | F::FUSE_DO_READDIRPLUS
            | F::FUSE_READDIRPLUS_AUTO
            | F::FUSE_ASYNC_DIO;
        let wanted = if self.writeback { wanted } else { wanted - F::FUSE_WRITEBACK_CACHE };
        // Requests over per-CPU io_uring queues served on the caller's CPU (see
        // third_party/fuser/src/uring.rs): the kernel offers it only when the administrator
        // enabled it (`fuse.enable_uring=1`).
        let wanted = if self.io_uring { wanted | F::FUSE_OVER_IO_URING } else { wanted };
        if let Err(missing) = config.add_capabilities(wanted & config.capabilities()) {
            tracing::warn!("kernel lacks FUSE capabilities {missing:?}");
        }
        if !self.io_uring {
            tracing::info!("requests over /dev/fuse (-o no_io_uring)");
        } else if config.capabilities().contains(F::FUSE_OVER_IO_URING) {
            tracing::info!("requests over io_uring, one queue per CPU");
        } else {
            tracing::info!(
                "requests over /dev/fuse: the kernel does not offer FUSE over io_uring (fuse.enable_uring=0)"
            );
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: fuser::ReplyEntry) {
        match self.lookup_entry(parent, name) {
            Ok(a) => reply.entry(&TTL, &a, GEN),
            // A negative entry (node id 0) the kernel may cache: nothing but this mount creates
            // names in the cipher directory, and it does so through the kernel.
            Err(e) if e == Errno::ENOENT => reply.entry(&TTL, &attr::negative(), GEN),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &fuser::Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &fuser::Request, ino: INodeNo, _fh: Option<fuser::FileHandle>, reply: fuser::ReplyAttr) {
        reply_with!(reply, self.inode(ino).and_then(|i| self.attr_of(&i)), |a| reply.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<fuser::FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: fuser::ReplyAttr,
    ) {
        let change = files::AttrChange { mode, uid, gid, size, atime, mtime, caller: req.uid() };
        reply_with!(reply, self.set_attr(ino, change), |a| reply.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &fuser::Request, ino: INodeNo, reply: fuser::ReplyData) {
        reply_with!(reply, self.read_link(ino), |t| reply.data(&t));
    }

    fn mknod(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: fuser::ReplyEntry,
    ) {
        let r = self.make_node(req, parent, name, mode, rdev);
        reply_with!(reply, r, |a| reply.entry(&TTL, &a, GEN));
    }

    fn mkdir(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: fuser::ReplyEntry,
    ) {
        reply_with!(reply, self.make_dir(req, parent, name, mode), |a| reply.entry(&TTL, &a, GEN));
    }

    fn unlink(&self, _req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: fuser::ReplyEmpty) {
        reply_with!(reply, self.remove(parent, name, false), |()| reply.ok());
    }

    fn rmdir(&self, _req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: fuser::ReplyEmpty) {
        reply_with!(reply, self.remove(parent, name, true), |()| reply.ok());
    }

    fn symlink(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: fuser::ReplyEntry,
    ) {
        let r = self.make_symlink(req, parent, link_name, target.as_os_str().as_bytes());
        reply_with!(reply, r, |a| reply.entry(&TTL, &a, GEN));
    }

    fn rename(
        &self,
        _req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.rename_entry(parent, name, newparent, newname, flags), |()| reply.ok());
    }

    fn link(&self, _req: &fuser::Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: fuser::ReplyEntry) {
        reply_with!(reply, self.hard_link(ino, newparent, newname), |a| reply.entry(&TTL, &a, GEN));
    }

    fn open(&self, _req: &fuser::Request, ino: INodeNo, flags: fuser::OpenFlags, reply: fuser::ReplyOpen) {
        reply_with!(reply, self.open_file(ino, flags.0), |f| reply.opened(fuser::FileHandle(0), f));
    }

    fn read(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        reply_with!(reply, self.read_file(ino, offset, size), |d| reply.data(&d));
    }

    fn write(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let kill = write_flags.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        reply_with!(reply, self.write_file(ino, offset, data, kill), |()| reply.written(data.len() as u32));
    }

    fn flush(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Nothing is buffered here: every write went to the backing file when it was answered.
        reply.ok();
    }

    fn release(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.release_file(ino), |()| reply.ok());
    }

    fn fsync(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        datasync: bool,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.sync_file(ino, datasync), |()| reply.ok());
    }

    fn opendir(&self, _req: &fuser::Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: fuser::ReplyOpen) {
        reply_with!(reply, self.open_dir(ino), |fh| reply.opened(fuser::FileHandle(fh), fuser::FopenFlags::empty()));
    }

    fn readdir(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectory,
    ) {
        reply_with!(reply, self.read_dir(ino, fh.0, offset, &mut reply), |()| reply.ok());
    }

    fn readdirplus(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        fh: fuser::FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        reply_with!(reply, self.read_dir_plus(ino, fh.0, offset, &mut reply), |()| reply.ok());
    }

    fn releasedir(
        &self,
        _req: &fuser::Request,
        _ino: INodeNo,
        fh: fuser::FileHandle,
        _flags: fuser::OpenFlags,
        reply: fuser::ReplyEmpty,
    ) {
        self.dir_handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        _datasync: bool,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.sync_dir(ino), |()| reply.ok());
    }

    fn statfs(&self, _req: &fuser::Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        match self.inode(INodeNo::ROOT).and_then(|r| rustix::fs::fstatvfs(r.fd()?).map_err(errno)) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                NAME_MAX as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.set_xattr(ino, name, value, flags), |()| reply.ok());
    }

    fn getxattr(&self, _req: &fuser::Request, ino: INodeNo, name: &OsStr, size: u32, reply: fuser::ReplyXattr) {
        match self.get_xattr(ino, name) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &fuser::Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        match self.list_xattr(ino) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &fuser::Request, ino: INodeNo, name: &OsStr, reply: fuser::ReplyEmpty) {
        reply_with!(reply, self.remove_xattr(ino, name), |()| reply.ok());
    }

    fn access(&self, _req: &fuser::Request, ino: INodeNo, mask: fuser::AccessFlags, reply: fuser::ReplyEmpty) {
        reply_with!(reply, self.check_access(ino, mask.bits()), |()| reply.ok());
    }

    fn create(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply_with!(reply, self.create_file(req, parent, name, mode, flags), |(a, f)| reply.created(
            &TTL,
            &a,
            GEN,
            fuser::FileHandle(0),
            f
        ));
    }

    fn fallocate(
        &self,
        _req: &fuser::Request,
        ino: INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: fuser::ReplyEmpty,
    ) {
        reply_with!(reply, self.allocate(ino, offset, length, mode), |()| reply.ok());
    }
}
