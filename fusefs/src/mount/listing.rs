//! Directory listings: a snapshot of the decrypted names is taken at `opendir` and served by
//! offset, so a listing is stable while entries come and go. `readdirplus` answers with each
//! entry's attributes too (one request instead of a lookup per entry for `ls -l`). Entries whose
//! names do not decrypt are left out and logged; `kmsfs fsck` names them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use fuser::{Errno, FileType, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::attr::dirent_type;
use super::{errno, io_errno, KmsFs, GEN, TTL};
use crate::dirs::{list_at, open_dir};

pub(super) struct DirItem {
    name: OsString,
    backing: String,
    ino: u64,
    kind: FileType,
}

impl KmsFs {
    pub(super) fn open_dir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let dir = self.inode(ino)?;
        let iv = dir.dir_iv()?;
        let mut items = vec![
            DirItem { name: ".".into(), backing: ".".into(), ino: dir.nodeid, kind: FileType::Directory },
            DirItem { name: "..".into(), backing: "..".into(), ino: dir.nodeid, kind: FileType::Directory },
        ];
        for l in list_at(&self.names, dir.fd()?, &iv).map_err(io_errno)? {
            match l.name {
                Ok(name) => items.push(DirItem {
                    name: OsString::from_vec(name),
                    backing: l.backing,
                    ino: self.inodes.nodeid_of(l.ino),
                    kind: dirent_type(l.file_type),
                }),
                Err(e) => tracing::warn!("{}: entry {} left out: {e}", self.describe(&dir), l.backing),
            }
        }
        let fh = self.new_handle();
        self.dir_handles.lock().insert(fh, Arc::new(items));
        Ok(fh)
    }

    fn items(&self, fh: u64) -> Result<Arc<Vec<DirItem>>, Errno> {
        self.dir_handles.lock().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    pub(super) fn read_dir(
        &self,
        _ino: INodeNo,
        fh: u64,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> Result<(), Errno> {
        let items = self.items(fh)?;
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(item.ino), i as u64 + 1, item.kind, &item.name) {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn read_dir_plus(
        &self,
        ino: INodeNo,
        fh: u64,
        offset: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> Result<(), Errno> {
        let dir = self.inode(ino)?;
        let items = self.items(fh)?;
        for (i, item) in items.iter().enumerate().skip(offset as usize) {
            if item.backing == "." || item.backing == ".." {
                // No attributes (and no new reference) for these two: the kernel knows them.
                let attr = self.attr_of(&dir)?;
                if reply.add(INodeNo(item.ino), i as u64 + 1, &item.name, &std::time::Duration::ZERO, &attr, GEN) {
                    break;
                }
                continue;
            }
            let Ok((inode, attr)) = self.remember(&dir, &item.backing) else {
                continue; // gone since opendir
            };
            if reply.add(INodeNo(inode.nodeid), i as u64 + 1, &item.name, &TTL, &attr, GEN) {
                // Not sent: the reference just counted is not the kernel's.
                self.inodes.forget(inode.nodeid, 1);
                break;
            }
        }
        Ok(())
    }

    pub(super) fn sync_dir(&self, ino: INodeNo) -> Result<(), Errno> {
        let dir = self.inode(ino)?;
        rustix::fs::fsync(open_dir(dir.fd()?).map_err(io_errno)?).map_err(errno)
    }
}
