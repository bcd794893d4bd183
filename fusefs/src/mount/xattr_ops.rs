//! Extended attributes through the kernel: names and values are sealed (crate::xattrs) and kept
//! as `user.kmsfs.*` attributes of the backing object: of an open file through its descriptor,
//! else through the `/proc/self/fd` path of its pinned descriptor (an `O_PATH` descriptor cannot
//! carry xattr calls itself).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};
use rustix::fs::XattrFlags;

use super::inodes::{Kind, Reach};
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
        inode.pin()?.reach().set(&backing, &sealed, flags).map_err(errno)
    }

    pub(super) fn get_xattr(&self, ino: INodeNo, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let backing = self.xattr_name(name)?;
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Err(Errno::NO_XATTR);
        }
        let pinned = inode.pin()?;
        let target = pinned.reach();
        let sealed = read_sized(|| target.get_query(&backing), |buf| target.get(&backing, buf))?;
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
        let target = pinned.reach();
        let raw = read_sized(|| target.list_query(), |buf| target.list(buf))?;
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
        let backing = self.xattr_name(name)?;
        let inode = self.inode(ino)?;
        if inode.kind == Kind::Symlink {
            return Err(Errno::NO_XATTR);
        }
        inode.pin()?.reach().remove(&backing).map_err(errno)
    }
}

/// The xattr calls, on the object's descriptor or through its path.
impl Reach<'_> {
    fn get_query(&self, name: &str) -> rustix::io::Result<usize> {
        match self {
            Reach::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
            Reach::Path(p) => rustix::fs::getxattr_query(p.as_str(), name),
        }
    }

    fn get(&self, name: &str, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Reach::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            Reach::Path(p) => rustix::fs::getxattr(p.as_str(), name, buf),
        }
    }

    fn list_query(&self) -> rustix::io::Result<usize> {
        match self {
            Reach::Fd(fd) => rustix::fs::flistxattr_query(fd),
            Reach::Path(p) => rustix::fs::listxattr_query(p.as_str()),
        }
    }

    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Reach::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            Reach::Path(p) => rustix::fs::listxattr(p.as_str(), buf),
        }
    }

    fn set(&self, name: &str, value: &[u8], flags: XattrFlags) -> rustix::io::Result<()> {
        match self {
            Reach::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, flags),
            Reach::Path(p) => rustix::fs::setxattr(p.as_str(), name, value, flags),
        }
    }

    fn remove(&self, name: &str) -> rustix::io::Result<()> {
        match self {
            Reach::Fd(fd) => rustix::fs::fremovexattr(fd, name),
            Reach::Path(p) => rustix::fs::removexattr(p.as_str(), name),
        }
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
