//! The files that hold sealed symlink targets too long for a backing symlink (FORMAT.md §6):
//! `.kmsfs-links/<base64url record id>` in the cipher directory's root. A file is written and
//! synced before the symlink that points at it exists, and removed once that symlink's last name
//! is gone – so a crash leaves at worst a file nothing points at (space only), never a symlink
//! without its target. Symlinks are immutable, so hard links and renames share the file as is.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::records::{LongTarget, MAX_TARGET_LEN, RECORD_OVERHEAD};

/// The directory's name in the cipher directory's root (internal: it starts with a dot).
pub const LINKS_DIR: &str = ".kmsfs-links";

pub struct Links {
    dir: OwnedFd,
}

impl Links {
    /// The links directory of the cipher directory `root`, made if `create`; `None` if it does
    /// not exist and is not to be made.
    pub fn open(root: BorrowedFd<'_>, create: bool) -> io::Result<Option<Links>> {
        if create {
            match rustix::fs::mkdirat(root, LINKS_DIR, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    // `root` may be an O_PATH descriptor, which cannot be synced itself.
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                    rustix::fs::fsync(rustix::fs::openat(root, ".", flags, Mode::empty())?)?
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(root, LINKS_DIR, flags, Mode::empty()) {
            Ok(dir) => Ok(Some(Links { dir })),
            Err(rustix::io::Errno::NOENT) if !create => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a long target's file, durably, before its symlink is made.
    pub fn write(&self, t: &LongTarget) -> io::Result<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir, t.file.as_str(), flags, Mode::from_raw_mode(0o600))?;
        let mut f = std::fs::File::from(fd);
        let written = f.write_all(&t.record).and_then(|()| f.sync_all()).and_then(|()| {
            rustix::fs::fsync(&self.dir)?;
            Ok(())
        });
        if written.is_err() {
            self.remove(&t.file);
        }
        written
    }

    /// The record in file `file` (a name [`crate::records::long_pointer`] checked): a regular
    /// file, not followed if it is a symlink, read up to the longest a record can be.
    pub fn read(&self, file: &str) -> io::Result<Vec<u8>> {
        read_record(self.dir.as_fd(), file)
    }

    pub fn remove(&self, file: &str) {
        let _ = rustix::fs::unlinkat(&self.dir, file, AtFlags::empty());
    }
}

/// The record in file `file` of the links directory `dir`: only a regular file, never followed
/// or opened if it is anything else (a FIFO planted there would block the daemon).
pub fn read_record(dir: BorrowedFd<'_>, file: &str) -> io::Result<Vec<u8>> {
    let longest = (MAX_TARGET_LEN + RECORD_OVERHEAD) as u64;
    let mut out = Vec::new();
    crate::dirs::open_regular_at(dir, file, longest)?.take(longest + 1).read_to_end(&mut out)?;
    Ok(out)
}
