//! The inodes the kernel knows about. A directory holds an `O_PATH` descriptor of its backing
//! directory, so every operation in it works relative to it (`*at` calls) and renames of a parent
//! never invalidate a child. Any other object is reached by its place – its parent directory's
//! inode and its backing name – which renames and unlinks keep current; an open file is reached by
//! its open descriptor. (A descriptor per file would cap the inodes the kernel may cache at the
//! open-file limit, 20,000 on some hosts.) The node id is the backing inode number (the root,
//! whose node id FUSE fixes at 1, swaps places with a backing inode 1), so hard links share one
//! node and numbers are stable across mounts.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fuser::Errno;
use parking_lot::{Mutex, RwLock};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use crate::dirs::read_dir_iv_at;
use crate::file_io::EncryptedFile;
use crate::names::DIR_IV_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

impl Kind {
    pub fn of(st: &Stat) -> Kind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// The open content of a regular file, shared by all its handles (one header, one writer lock).
#[derive(Default)]
pub struct Content {
    pub file: Option<EncryptedFile>,
    pub writable: bool,
    pub opens: u32,
    /// Where the last read ended: a read starting there is sequential.
    pub read_end: std::sync::atomic::AtomicU64,
}

/// Where the backing object is.
pub enum Place {
    Dir(OwnedFd),
    /// The names (parent directory, backing name) it is known under: one, or several for hard
    /// links; none once they are all gone (unlinked, replaced) while it is still open.
    Entry(Mutex<Vec<(Arc<Inode>, String)>>),
}

pub struct Inode {
    pub nodeid: u64,
    place: Place,
    pub kind: Kind,
    backing: (u64, u64),
    lookups: AtomicU64,
    dir_iv: OnceLock<[u8; DIR_IV_LEN]>,
    /// Entry changes inside this directory hold it shared; removing the directory holds it
    /// exclusively, so nothing is created in a directory while its IV is being taken away.
    pub entries: RwLock<()>,
    /// Readers share it, writers and truncation hold it alone.
    pub content: RwLock<Content>,
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

impl Inode {
    pub fn dir_iv(&self) -> Result<[u8; DIR_IV_LEN], Errno> {
        if let Some(iv) = self.dir_iv.get() {
            return Ok(*iv);
        }
        let iv = read_dir_iv_at(self.fd()?).map_err(|e| {
            tracing::error!(node = self.nodeid, "directory IV unreadable: {e}");
            Errno::EIO
        })?;
        Ok(*self.dir_iv.get_or_init(|| iv))
    }

    /// A directory's descriptor.
    pub fn fd(&self) -> Result<&OwnedFd, Errno> {
        match &self.place {
            Place::Dir(fd) => Ok(fd),
            Place::Entry(_) => Err(Errno::ENOTDIR),
        }
    }

    /// A non-directory's parent and backing name (any of its names).
    pub fn location(&self) -> Result<(Arc<Inode>, String), Errno> {
        match &self.place {
            Place::Entry(names) => names.lock().first().cloned().ok_or(Errno::ESTALE),
            Place::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Records a name of this object (a lookup, a new link, the target of a rename).
    pub fn add_location(&self, parent: &Arc<Inode>, backing: &str) {
        if let Place::Entry(names) = &self.place {
            let mut names = names.lock();
            if !names.iter().any(|(p, b)| p.nodeid == parent.nodeid && b == backing) {
                names.push((parent.clone(), backing.to_string()));
            }
        }
    }

    /// Drops the name `backing` in `parent` (unlinked, replaced, or renamed away).
    pub fn clear_location(&self, parent: &Inode, backing: &str) {
        if let Place::Entry(names) = &self.place {
            names.lock().retain(|(p, b)| !(p.nodeid == parent.nodeid && b == backing));
        }
    }

    /// The backing object itself, never another one a name now leads to: a directory's or an
    /// open file's own descriptor (duplicated), else the object opened by its name with
    /// `O_PATH | O_NOFOLLOW` and checked to be this inode's (device and inode number), so a name
    /// swapped for a symlink, a FIFO or another file after the lookup is `ESTALE`, not followed.
    pub fn pin(&self) -> Result<Pinned, Errno> {
        if let Some(f) = self.content.read().file.as_ref() {
            return Ok(Pinned { fd: dup(f.backing())?, open: true });
        }
        self.pin_by_name()
    }

    /// [`Inode::pin`] without looking at open content: for callers holding the content lock.
    pub fn pin_by_name(&self) -> Result<Pinned, Errno> {
        let fd = match &self.place {
            Place::Dir(fd) => dup(fd)?,
            Place::Entry(_) => {
                let (parent, name) = self.location()?;
                let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(parent.fd()?, name.as_str(), flags, Mode::empty()).map_err(errno)?;
                self.check_same(&fd)?;
                fd
            }
        };
        Ok(Pinned { fd, open: false })
    }

    /// `ESTALE` unless `fd` is this inode's backing object.
    pub fn check_same(&self, fd: &OwnedFd) -> Result<(), Errno> {
        let st = rustix::fs::fstat(fd).map_err(errno)?;
        if (st.st_dev, st.st_ino) == self.backing && Kind::of(&st) == self.kind {
            Ok(())
        } else {
            tracing::warn!(node = self.nodeid, "backing object replaced under a known inode; refused");
            Err(Errno::ESTALE)
        }
    }

    pub fn stat(&self) -> Result<Stat, Errno> {
        match &self.place {
            Place::Dir(fd) => rustix::fs::fstat(fd).map_err(errno),
            Place::Entry(_) => {
                if let Some(f) = self.content.read().file.as_ref() {
                    return rustix::fs::fstat(f.backing()).map_err(errno);
                }
                let (parent, name) = self.location()?;
                rustix::fs::statat(parent.fd()?, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
            }
        }
    }
}

fn dup(fd: impl std::os::fd::AsFd) -> Result<OwnedFd, Errno> {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(errno)
}

/// A backing object held open for path-based calls; see [`Inode::pin`].
pub struct Pinned {
    fd: OwnedFd,
    /// An open file's own descriptor, not an `O_PATH` one.
    open: bool,
}

impl Pinned {
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// `/proc/self/fd/<n>`: the kernel resolves this magic link to the open object itself and
    /// does not follow it further even when the object is a symlink (chmod on it answers
    /// EOPNOTSUPP), so calls that take only a path (chmod, access, xattrs) act on exactly it.
    pub fn path(&self) -> ProcPath<'_> {
        ProcPath(crate::dirs::fd_path(&self.fd), std::marker::PhantomData)
    }

    /// How a call that an `O_PATH` descriptor cannot carry (chmod, xattrs) reaches the object:
    /// an open file's own descriptor takes the `f*` call directly; otherwise through
    /// [`Pinned::path`] – a walk through procfs that was 60 % of the daemon's time for a
    /// `getxattr`.
    pub fn reach(&self) -> Reach<'_> {
        if self.open {
            Reach::Fd(&self.fd)
        } else {
            Reach::Path(self.path())
        }
    }
}

/// See [`Pinned::reach`].
pub enum Reach<'a> {
    Fd(&'a OwnedFd),
    Path(ProcPath<'a>),
}

/// The magic-link path of a [`Pinned`] object, valid only while it is: the borrow keeps the
/// descriptor open for as long as the path is used (a closed one's number could name another
/// file by then).
pub struct ProcPath<'a>(String, std::marker::PhantomData<&'a Pinned>);

impl ProcPath<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct InodeTable {
    map: Mutex<HashMap<u64, Arc<Inode>>>,
    root_backing_ino: u64,
}

impl InodeTable {
    pub fn new(root: OwnedFd) -> std::io::Result<InodeTable> {
        let st = rustix::fs::fstat(&root)?;
        let inode = Self::inode(fuser::INodeNo::ROOT.0, Place::Dir(root), &st);
        let map = HashMap::from([(inode.nodeid, Arc::new(inode))]);
        Ok(InodeTable { map: Mutex::new(map), root_backing_ino: st.st_ino })
    }

    fn inode(nodeid: u64, place: Place, st: &Stat) -> Inode {
        Inode {
            nodeid,
            place,
            kind: Kind::of(st),
            backing: (st.st_dev, st.st_ino),
            lookups: AtomicU64::new(1),
            dir_iv: OnceLock::new(),
            entries: RwLock::new(()),
            content: RwLock::new(Content::default()),
        }
    }

    pub fn nodeid_of(&self, backing_ino: u64) -> u64 {
        let root = fuser::INodeNo::ROOT.0;
        match backing_ino {
            i if i == self.root_backing_ino => root,
            i if i == root => self.root_backing_ino,
            i => i,
        }
    }

    pub fn get(&self, nodeid: u64) -> Result<Arc<Inode>, Errno> {
        self.map.lock().get(&nodeid).cloned().ok_or(Errno::ESTALE)
    }

    /// The inode of a backing object, if the kernel knows it.
    pub fn find(&self, st: &Stat) -> Option<Arc<Inode>> {
        let inode = self.map.lock().get(&self.nodeid_of(st.st_ino)).cloned()?;
        (inode.backing == (st.st_dev, st.st_ino)).then_some(inode)
    }

    /// Counts one more kernel reference to the object `backing` in directory `dir` and returns
    /// its inode and metadata.
    pub fn remember(&self, dir: &Arc<Inode>, backing: &str) -> Result<(Arc<Inode>, Stat), Errno> {
        let st = rustix::fs::statat(dir.fd()?, backing, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        let nodeid = self.nodeid_of(st.st_ino);
        if let Some(inode) = self.map.lock().get(&nodeid) {
            if inode.backing == (st.st_dev, st.st_ino) {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                // A hard link may be found under another name.
                inode.add_location(dir, backing);
                return Ok((inode.clone(), st));
            }
        }
        let place = if Kind::of(&st) == Kind::Dir {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            Place::Dir(rustix::fs::openat(dir.fd()?, backing, flags, Mode::empty()).map_err(errno)?)
        } else {
            Place::Entry(Mutex::new(vec![(dir.clone(), backing.to_string())]))
        };
        let mut map = self.map.lock();
        // Another request may have added it meanwhile: count on that one.
        if let Some(inode) = map.get(&nodeid).filter(|i| i.backing == (st.st_dev, st.st_ino)) {
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            return Ok((inode.clone(), st));
        }
        let inode = Arc::new(Self::inode(nodeid, place, &st));
        map.insert(nodeid, inode.clone());
        Ok((inode, st))
    }

    /// The kernel dropped `n` references; the last one frees the inode (and its descriptor once
    /// no request holds it any more).
    pub fn forget(&self, nodeid: u64, n: u64) {
        if nodeid == fuser::INodeNo::ROOT.0 {
            return;
        }
        let mut map = self.map.lock();
        if let Some(inode) = map.get(&nodeid) {
            if inode.lookups.fetch_sub(n, Ordering::Relaxed) <= n {
                map.remove(&nodeid);
            }
        }
    }
}
