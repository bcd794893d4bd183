//! Names in directories: lookup, creation of every kind of object, removal, rename and hard
//! links. A long name's `.name` file is written before its entry appears and removed after the
//! entry is gone (FORMAT.md §4); a new directory gets its IV before it gets its name.

use std::ffi::OsStr;

use fuser::{Errno, FileAttr, INodeNo, RenameFlags, Request};
use rustix::fs::{AtFlags, Mode, OFlags};

use super::inodes::{Inode, Kind};
use super::{errno, io_errno, KmsFs};
use crate::dirs::{
    create_dir_iv_at, is_internal, open_dir, read_dir_iv_at, write_long_name_at, EntryName, DIR_IV_NAME,
};
use crate::records::{self, SealedTarget};
use std::os::fd::OwnedFd;

/// The `.name` file of a long entry, written first.
fn write_long(dir: &Inode, e: &EntryName) -> Result<(), Errno> {
    match &e.long {
        Some((file, full)) => write_long_name_at(dir.fd()?, file, full).map_err(io_errno),
        None => Ok(()),
    }
}

/// Removes the `.name` file of a long entry that is gone (or never came).
fn drop_long(dir: &Inode, e: &EntryName) {
    if let Some((file, _)) = &e.long {
        if let Ok(fd) = dir.fd() {
            let _ = rustix::fs::unlinkat(fd, file.as_str(), AtFlags::empty());
        }
    }
}

/// Removes the `.name` file of a long entry unless an entry of that name exists: the file stays
/// exactly while its entry does, whatever happened to it – a creation refused because one was
/// there (EEXIST), a rename refused over a non-empty directory, an exchange (both names stay), a
/// whiteout rename (the whiteout now holds the name).
fn drop_long_unless_there(dir: &Inode, e: &EntryName) {
    if e.long.is_some()
        && !dir.fd().is_ok_and(|fd| rustix::fs::statat(fd, e.backing.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok())
    {
        drop_long(dir, e);
    }
}

/// Runs `create` for entry `e` of `dir` with its `.name` file around it.
fn with_long<T>(dir: &Inode, e: &EntryName, create: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    write_long(dir, e)?;
    create().inspect_err(|_| drop_long_unless_there(dir, e))
}

impl KmsFs {
    pub(super) fn lookup_entry(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let dir = self.inode(parent)?;
        let e = self.entry(&dir, name)?;
        Ok(self.remember(&dir, &e.backing)?.1)
    }

    /// Creates an object with `make` (given the parent and the backing name), gives it to the
    /// caller and returns its attributes as a new kernel reference.
    pub(super) fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(&Inode, &str) -> Result<(), Errno>,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let dir = self.inode(parent)?;
        let _entries = dir.entries.read_recursive();
        let e = self.entry(&dir, name)?;
        with_long(&dir, &e, || make(&dir, &e.backing))?;
        self.give_to_caller(&dir, &e.backing, req.uid(), req.gid())?;
        Ok(self.remember(&dir, &e.backing)?.1)
    }

    pub(super) fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<FileAttr, Errno> {
        let kind = rustix::fs::FileType::from_raw_mode(mode);
        let perm = Mode::from_raw_mode(mode & 0o7777);
        self.create_entry(req, parent, name, |dir, backing| {
            rustix::fs::mknodat(dir.fd()?, backing, kind, perm, rdev as u64).map_err(errno)
        })
    }

    pub(super) fn make_dir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        self.create_entry(req, parent, name, |dir, backing| {
            // Made under a temporary name, given its IV, then renamed into place: a crash leaves
            // at worst a hidden temporary directory, never a named one without an IV.
            let tmp = format!("{}{}", crate::dirs::TEMP_PREFIX, hex::encode(rand::random::<[u8; 8]>()));
            let dfd = dir.fd()?;
            rustix::fs::mkdirat(dfd, tmp.as_str(), Mode::from_raw_mode(0o700)).map_err(errno)?;
            let done = (|| {
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(dfd, tmp.as_str(), flags, Mode::empty()).map_err(errno)?;
                create_dir_iv_at(&fd, false).map_err(io_errno)?;
                // Through the descriptor: the directory made above, whatever the name holds now.
                let path = crate::dirs::fd_path(&fd);
                rustix::fs::chmodat(
                    rustix::fs::CWD,
                    path.as_str(),
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(errno)?;
                rustix::fs::renameat_with(dfd, tmp.as_str(), dfd, backing, rustix::fs::RenameFlags::NOREPLACE)
                    .map_err(errno)
            })();
            if done.is_err() {
                let _ = rustix::fs::unlinkat(dfd, format!("{tmp}/{DIR_IV_NAME}").as_str(), AtFlags::empty());
                let _ = rustix::fs::unlinkat(dfd, tmp.as_str(), AtFlags::REMOVEDIR);
            }
            done
        })
    }

    pub(super) fn make_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &[u8],
    ) -> Result<FileAttr, Errno> {
        match records::seal_symlink(&self.keys, target).ok_or(Errno::ENAMETOOLONG)? {
            SealedTarget::Inline(stored) => self.create_entry(req, parent, name, |dir, backing| {
                rustix::fs::symlinkat(stored.as_str(), dir.fd()?, backing).map_err(errno)
            }),
            SealedTarget::Long(t) => {
                // The target's file first, so no symlink ever points at nothing.
                self.writable()?;
                let links = self.links.as_ref().ok_or(Errno::EROFS)?;
                links.write(&t).map_err(io_errno)?;
                self.create_entry(req, parent, name, |dir, backing| {
                    rustix::fs::symlinkat(t.pointer.as_str(), dir.fd()?, backing).map_err(errno)
                })
                .inspect_err(|_| links.remove(&t.file))
            }
        }
    }

    pub(super) fn read_link(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(ino)?;
        let stored = rustix::fs::readlinkat(inode.pin()?.fd(), "", Vec::new()).map_err(errno)?;
        let opened = match records::long_pointer(stored.as_bytes()) {
            Some((file, len)) => match self.links.as_ref().map(|l| l.read(file)) {
                Some(Ok(record)) => records::open_long_target(&self.keys, file, len, &record),
                _ => None,
            },
            None => records::open_symlink(&self.keys, stored.as_bytes()),
        };
        match opened {
            Some(t) => Ok(t.to_vec()),
            None => {
                tracing::error!("symlink target does not authenticate: {}", self.describe(&inode));
                Err(Errno::EIO)
            }
        }
    }

    /// For entry `backing` of `dir` that is a symlink to a long target: the symlink (an `O_PATH`
    /// descriptor, to see its link count after an unlink or a rename over it) and its target's
    /// file.
    fn long_target_of(&self, dir: &Inode, backing: &str, st: &rustix::fs::Stat) -> Option<(OwnedFd, String)> {
        if Kind::of(st) != Kind::Symlink || records::symlink_len(st.st_size as u64).is_some() {
            return None;
        }
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir.fd().ok()?, backing, flags, Mode::empty()).ok()?;
        let (file, _) = super::long_pointer_at(&fd, "")?;
        Some((fd, file))
    }

    /// Removes a long target's file once its symlink has no name left. Decided on the symlink
    /// itself after the unlink or rename, so a hard link made meanwhile keeps the file.
    fn release_long_target(&self, held: Option<(OwnedFd, String)>) {
        if let (Some((fd, file)), Some(links)) = (held, &self.links) {
            if rustix::fs::fstat(&fd).is_ok_and(|st| st.st_nlink == 0) {
                links.remove(&file);
            }
        }
    }

    pub(super) fn hard_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> Result<FileAttr, Errno> {
        self.writable()?;
        let inode = self.inode(ino)?;
        let dir = self.inode(newparent)?;
        let _entries = dir.entries.read_recursive();
        let e = self.entry(&dir, newname)?;
        // Linked through the pinned object (the magic link of an open file also works once its
        // names are gone); link(2) of a symlink links the symlink itself, as the magic link is
        // not followed further.
        let pinned = inode.pin()?;
        with_long(&dir, &e, || {
            rustix::fs::linkat(
                rustix::fs::CWD,
                pinned.path().as_str(),
                dir.fd()?,
                e.backing.as_str(),
                AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(errno)
        })?;
        Ok(self.remember(&dir, &e.backing)?.1)
    }

    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, is_dir: bool) -> Result<(), Errno> {
        self.writable()?;
        let dir = self.inode(parent)?;
        let _entries = dir.entries.read_recursive();
        let e = self.entry(&dir, name)?;
        if is_dir {
            self.with_empty_dir(&dir, &e.backing, || {
                rustix::fs::unlinkat(dir.fd()?, e.backing.as_str(), AtFlags::REMOVEDIR).map_err(errno)
            })?;
        } else {
            let st = rustix::fs::statat(dir.fd()?, e.backing.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
            if Kind::of(&st) == Kind::Dir {
                return Err(Errno::EISDIR);
            }
            let gone = self.inodes.find(&st);
            let long_target = self.long_target_of(&dir, &e.backing, &st);
            // Into the trash only what nothing can observe any more: a last name, not open (and
            // not a symlink whose target's file goes with its last name).
            let unseen =
                st.st_nlink == 1 && long_target.is_none() && gone.as_ref().is_none_or(|i| i.content.read().opens == 0);
            match &self.trash {
                Some(trash) if unseen => trash.remove(dir.fd()?, e.backing.as_str()).map_err(errno)?,
                _ => rustix::fs::unlinkat(dir.fd()?, e.backing.as_str(), AtFlags::empty()).map_err(errno)?,
            }
            self.release_long_target(long_target);
            if let Some(gone) = gone {
                gone.clear_location(&dir, &e.backing);
            }
        }
        drop_long(&dir, &e);
        Ok(())
    }

    /// Runs `op` (a removal of, or a rename over, the directory `backing` of `dir`) once that
    /// directory is empty but for its IV and the IV is gone – all under the directory's own lock,
    /// so nothing is created in it meanwhile. If `op` fails, the IV is put back.
    fn with_empty_dir(&self, dir: &Inode, backing: &str, op: impl FnOnce() -> Result<(), Errno>) -> Result<(), Errno> {
        let fd =
            rustix::fs::openat(dir.fd()?, backing, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(errno)?;
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        if Kind::of(&st) != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let known = self.inodes.find(&st);
        let _guard = known.as_ref().map(|i| i.entries.write());
        let listing = open_dir(&fd).map_err(io_errno)?;
        let mut leftovers = Vec::new();
        for entry in rustix::fs::Dir::read_from(&listing).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let n = entry.file_name().to_string_lossy().into_owned();
            if n == "." || n == ".." || n == DIR_IV_NAME {
                continue;
            }
            // Crash leftovers (an orphan `.name` file, a half-made directory) do not count.
            let orphan_name = n
                .strip_suffix(crate::dirs::LONG_NAME_SUFFIX)
                .is_some_and(|base| rustix::fs::statat(&fd, base, AtFlags::SYMLINK_NOFOLLOW).is_err());
            if is_internal(&n) && (orphan_name || n.starts_with(crate::dirs::TEMP_PREFIX)) {
                leftovers.push(n);
                continue;
            }
            return Err(Errno::ENOTEMPTY);
        }
        for n in &leftovers {
            let _ = rustix::fs::unlinkat(&fd, format!("{n}/{DIR_IV_NAME}").as_str(), AtFlags::empty());
            let flag = if n.starts_with(crate::dirs::TEMP_PREFIX) { AtFlags::REMOVEDIR } else { AtFlags::empty() };
            let _ = rustix::fs::unlinkat(&fd, n.as_str(), flag);
        }
        let iv = read_dir_iv_at(&fd).ok();
        match rustix::fs::unlinkat(&fd, DIR_IV_NAME, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(errno(e)),
        }
        op().inspect_err(|_| {
            if let Some(iv) = iv {
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                if let Ok(f) = rustix::fs::openat(&fd, DIR_IV_NAME, flags, Mode::from_raw_mode(0o400)) {
                    let _ = std::io::Write::write_all(&mut std::fs::File::from(f), &iv);
                }
            }
        })
    }

    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        self.writable()?;
        let from_dir = self.inode(parent)?;
        let to_dir = self.inode(newparent)?;
        let _from_entries = from_dir.entries.read_recursive();
        let _to_entries = to_dir.entries.read_recursive();
        let from = self.entry(&from_dir, name)?;
        let to = self.entry(&to_dir, newname)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        // What moves and what it replaces, so their places can be kept current.
        let src =
            rustix::fs::statat(from_dir.fd()?, from.backing.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
        let dst = rustix::fs::statat(to_dir.fd()?, to.backing.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        // A directory renamed over an empty directory: the target's IV must go first, or the
        // backing rename would see a non-empty directory.
        let mut over_dir = false;
        if let (Some(dst), false) = (&dst, exchange || flags.contains(RenameFlags::RENAME_NOREPLACE)) {
            if (src.st_dev, src.st_ino) == (dst.st_dev, dst.st_ino) {
                return Ok(());
            }
            match (Kind::of(&src) == Kind::Dir, Kind::of(dst) == Kind::Dir) {
                (true, true) => over_dir = true,
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (false, false) => {}
            }
        }
        // A symlink to a long target that the rename replaces: its file goes with its last name.
        let replaced_target = match (&dst, exchange) {
            (Some(dst), false) => self.long_target_of(&to_dir, &to.backing, dst),
            _ => None,
        };
        let rename = || {
            rustix::fs::renameat_with(
                from_dir.fd()?,
                from.backing.as_str(),
                to_dir.fd()?,
                to.backing.as_str(),
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )
            .map_err(errno)
        };
        with_long(
            &to_dir,
            &to,
            || if over_dir { self.with_empty_dir(&to_dir, &to.backing, rename) } else { rename() },
        )?;
        self.release_long_target(replaced_target);
        let moved = self.inodes.find(&src);
        let replaced = dst.as_ref().and_then(|d| self.inodes.find(d));
        if let Some(other) = &replaced {
            other.clear_location(&to_dir, &to.backing);
        }
        if let Some(moved) = &moved {
            moved.clear_location(&from_dir, &from.backing);
            moved.add_location(&to_dir, &to.backing);
        }
        if let (Some(other), true) = (&replaced, exchange) {
            other.add_location(&from_dir, &from.backing);
        }
        drop_long_unless_there(&from_dir, &from);
        Ok(())
    }
}
