//! Extended attributes through the kernel: names and values are sealed (crate::xattrs) and kept
//! as `user.kmsfs.*` attributes of the backing object, reached through the `/proc/self/fd` path
//! of its pinned descriptor (an `O_PATH` descriptor cannot carry xattr calls itself).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};
use rustix::fs::XattrFlags;

use super::inodes::Kind;
use super::{errno, KmsFs};
use crate::xattrs::{self, XattrError};

impl KmsFs {
    fn xattr_name(&self, name: &OsStr) -> Result<String, Errno> {
        xattrs::backing_name(&self.names, name.as_bytes()).map_err(|e| match e {
            XattrError::Unsupported => Errno::EOPNOTSUPP,
            XattrError::TooLong => Errno::ERANGE,
        })
    }

    pub(super) fn set_xattr(&self, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32) -> Result<(), Errno> {
        self.writable()?;
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Err(Errno::EPERM);
        }
        let backing = self.xattr_name(name)?;
        let sealed = xattrs::seal_value(&self.keys, name.as_bytes(), value);
        let flags = XattrFlags::from_bits(flags as u32).ok_or(Errno::EINVAL)?;
        rustix::fs::setxattr(inode.pin()?.path().as_str(), backing.as_str(), &sealed, flags).map_err(errno)
    }

    pub(super) fn get_xattr(&self, ino: INodeNo, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Err(Errno::NO_XATTR);
        }
        let backing = match self.xattr_name(name) {
            Ok(b) => b,
            // Asked for on every write (security.capability) or by `ls` (ACLs): simply absent.
            Err(Errno::EOPNOTSUPP) => return Err(Errno::NO_XATTR),
            Err(e) => return Err(e),
        };
        let pinned = inode.pin()?;
        let path = pinned.path();
        let sealed = read_sized(
            || rustix::fs::getxattr_query(path.as_str(), backing.as_str()),
            |buf| rustix::fs::getxattr(path.as_str(), backing.as_str(), buf),
        )?;
        match xattrs::open_value(&self.keys, name.as_bytes(), &sealed) {
            Some(v) => Ok(v.to_vec()),
            None => {
                tracing::error!("xattr value does not authenticate: {}", self.describe(&inode));
                Err(Errno::EIO)
            }
        }
    }

    pub(super) fn list_xattr(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Ok(Vec::new());
        }
        let pinned = inode.pin()?;
        let path = pinned.path();
        let raw =
            read_sized(|| rustix::fs::listxattr_query(path.as_str()), |buf| rustix::fs::listxattr(path.as_str(), buf))?;
        let mut out = Vec::new();
        for backing in raw.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if let Some(name) = xattrs::plain_name(&self.names, backing) {
                out.extend_from_slice(&name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub(super) fn remove_xattr(&self, ino: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Err(Errno::NO_XATTR);
        }
        let backing = match self.xattr_name(name) {
            Err(Errno::EOPNOTSUPP) => return Err(Errno::NO_XATTR),
            other => other?,
        };
        rustix::fs::removexattr(inode.pin()?.path().as_str(), backing.as_str()).map_err(errno)
    }
}

/// Calls `get` with a buffer that fits: asks for the size first, and again if the attribute grew
/// in between.
fn read_sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    get: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<u8>, Errno> {
    loop {
        let len = query().map_err(errno)?;
        let mut buf = vec![0u8; len];
        match get(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}
