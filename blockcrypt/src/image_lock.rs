//! qemu's image locking, spoken by blockcrypt: so qemu refuses a disk `serve` has open and
//! `serve` refuses one qemu has open (FORMAT.md §6). qemu (block/file-posix.c) takes open file
//! description (OFD) read locks on single bytes of the image file: byte 100 + i for each
//! permission i it uses and byte 200 + i for each permission it does not share, with i = 0
//! consistent read, 1 write, 2 write-unchanged, 3 resize. Before using permission i it checks
//! that nobody holds byte 200 + i; before refusing to share it, that nobody holds 100 + i.
//! A flock (which `serve` also takes, for blockcrypt's own commands) is invisible to qemu.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;
const CONSISTENT_READ: i64 = 0;
const WRITE: i64 = 1;
const RESIZE: i64 = 3;

/// How a disk is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

impl Access {
    /// Permissions used, and those not shared: a reader or writer of a served disk lets others
    /// read, never write or resize (what qemu-nbd asks for a writable image).
    fn bits(self) -> (&'static [i64], &'static [i64]) {
        match self {
            Access::ReadWrite => (&[CONSISTENT_READ, WRITE], &[WRITE, RESIZE]),
            Access::ReadOnly => (&[CONSISTENT_READ], &[WRITE, RESIZE]),
        }
    }
}

/// Takes qemu's locks for `access` on `file` (held while this open file description is), or
/// says which permission another process (qemu, another blockcrypt) holds against it.
pub fn lock(file: &File, access: Access) -> Result<(), String> {
    let (used, unshared) = access.bits();
    for &i in used {
        set(file, libc::F_RDLCK, PERM_BASE + i).map_err(|e| e.to_string())?;
    }
    for &i in unshared {
        set(file, libc::F_RDLCK, SHARED_BASE + i).map_err(|e| e.to_string())?;
    }
    let conflict = used
        .iter()
        .map(|&i| (SHARED_BASE + i, i, "does not share"))
        .chain(unshared.iter().map(|&i| (PERM_BASE + i, i, "holds")))
        .find(|&(byte, _, _)| held_by_another(file, byte).unwrap_or(true));
    match conflict {
        None => Ok(()),
        Some((_, i, how)) => {
            for byte in used.iter().map(|i| PERM_BASE + i).chain(unshared.iter().map(|i| SHARED_BASE + i)) {
                let _ = set(file, libc::F_UNLCK, byte);
            }
            Err(format!("another process (qemu?) {how} the {:?} permission of this image", name(i)))
        }
    }
}

fn name(i: i64) -> &'static str {
    match i {
        CONSISTENT_READ => "consistent read",
        WRITE => "write",
        RESIZE => "resize",
        _ => "write unchanged",
    }
}

fn flock_of(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all zeroes is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

fn set(file: &File, kind: libc::c_int, byte: i64) -> io::Result<()> {
    let fl = flock_of(kind, byte);
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and F_OFD_SETLK only reads
    // the `flock` passed by pointer, which lives across the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another open file description holds a lock on `byte` (a write lock there would
/// conflict). Our own locks never count: OFD locks do not conflict with their own description.
fn held_by_another(file: &File, byte: i64) -> io::Result<bool> {
    let mut fl = flock_of(libc::F_WRLCK, byte);
    // SAFETY: as in `set`; F_OFD_GETLK writes the answer into the `flock` behind the pointer,
    // which is valid and exclusively ours for the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
