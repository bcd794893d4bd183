//! The inodes the kernel knows about. Each holds an `O_PATH` descriptor of its backing object, so
//! every operation works relative to it (`*at` calls) – renames of a parent never invalidate a
//! child, an unlinked but open file stays reachable, and no path is ever walked twice. The node
//! id is the backing inode number (the root, whose node id FUSE fixes at 1, swaps places with a
//! backing inode 1), so hard links share one node and numbers are stable across mounts.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fuser::Errno;
use parking_lot::{Mutex, RwLock};
use rustix::fs::{FileType, Stat};

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
}

pub struct Inode {
    pub nodeid: u64,
    pub fd: OwnedFd,
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

impl Inode {
    pub fn dir_iv(&self) -> Result<[u8; DIR_IV_LEN], Errno> {
        if let Some(iv) = self.dir_iv.get() {
            return Ok(*iv);
        }
        let iv = read_dir_iv_at(&self.fd).map_err(|e| {
            tracing::error!(node = self.nodeid, "directory IV unreadable: {e}");
            Errno::EIO
        })?;
        Ok(*self.dir_iv.get_or_init(|| iv))
    }

    /// `/proc/self/fd/N`: reopens the backing object with real access modes.
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.fd))
    }
}

pub struct InodeTable {
    map: Mutex<HashMap<u64, Arc<Inode>>>,
    root_backing_ino: u64,
}

impl InodeTable {
    pub fn new(root: OwnedFd) -> std::io::Result<InodeTable> {
        let st = rustix::fs::fstat(&root)?;
        let inode = Inode {
            nodeid: fuser::INodeNo::ROOT.0,
            fd: root,
            kind: Kind::Dir,
            backing: (st.st_dev, st.st_ino),
            lookups: AtomicU64::new(1),
            dir_iv: OnceLock::new(),
            entries: RwLock::new(()),
            content: RwLock::new(Content::default()),
        };
        let map = HashMap::from([(inode.nodeid, Arc::new(inode))]);
        Ok(InodeTable { map: Mutex::new(map), root_backing_ino: st.st_ino })
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

    /// Counts one more kernel reference to the object `fd` (stat `st`) and returns its inode.
    pub fn remember(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let nodeid = self.nodeid_of(st.st_ino);
        let mut map = self.map.lock();
        if let Some(inode) = map.get(&nodeid) {
            if inode.backing == (st.st_dev, st.st_ino) {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                return inode.clone();
            }
        }
        let inode = Arc::new(Inode {
            nodeid,
            fd,
            kind: Kind::of(st),
            backing: (st.st_dev, st.st_ino),
            lookups: AtomicU64::new(1),
            dir_iv: OnceLock::new(),
            entries: RwLock::new(()),
            content: RwLock::new(Content::default()),
        });
        map.insert(nodeid, inode.clone());
        inode
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
