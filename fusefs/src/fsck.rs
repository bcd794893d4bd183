//! `kmsfs fsck`: verify every directory IV, name, file header and block of a volume and report
//! each problem with its place – never repair anything silently.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::Layout;
use crate::dirs::{list, read_dir_iv};
use crate::file_io::EncryptedFile;
use crate::keys::VolumeKeys;
use crate::names::NameCipher;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The backing path.
    pub path: PathBuf,
    /// The path in the volume, where every name on the way decrypts.
    pub plain: Option<PathBuf>,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the tree under the backing directory `root`.
pub fn check(root: &Path, keys: &Arc<VolumeKeys>, layout: Layout) -> Report {
    let names = NameCipher::new(keys);
    let mut report = Report::default();
    // Opened once; `None` when the volume never had a long symlink target.
    let links_dir = root.join(crate::links::LINKS_DIR);
    let links = std::fs::File::open(&links_dir).ok();
    // Each directory with its path in the volume (none below a name that does not decrypt).
    let mut todo = vec![(root.to_path_buf(), Some(PathBuf::from("/")))];
    while let Some((dir, plain_dir)) = todo.pop() {
        report.dirs += 1;
        let mut problem = |path: &Path, plain: &Option<PathBuf>, what: String| {
            report.problems.push(Problem { path: path.to_path_buf(), plain: plain.clone(), what })
        };
        let iv = match read_dir_iv(&dir) {
            Ok(iv) => iv,
            Err(e) => {
                problem(&dir, &plain_dir, format!("directory IV: {e}"));
                continue;
            }
        };
        let entries = match list(&names, &dir, &iv) {
            Ok(l) => l,
            Err(e) => {
                problem(&dir, &plain_dir, format!("cannot list: {e}"));
                continue;
            }
        };
        for entry in entries {
            let path = dir.join(&entry.backing);
            let plain = match (&plain_dir, &entry.name) {
                (Some(d), Ok(n)) => Some(d.join(std::ffi::OsStr::from_bytes(n))),
                _ => None,
            };
            if let Err(e) = &entry.name {
                problem(&path, &plain, format!("name: {e}"));
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    problem(&path, &plain, e.to_string());
                    continue;
                }
            };
            if !meta.is_symlink() {
                if let Err(what) = verify_xattrs(&path, keys, &names) {
                    problem(&path, &plain, what);
                }
            }
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).map(|t| t.into_os_string().into_encoded_bytes());
                if let Err(what) =
                    target.map_err(|e| e.to_string()).and_then(|t| verify_symlink(&links_dir, links.as_ref(), keys, &t))
                {
                    problem(&path, &plain, what);
                }
            } else if meta.is_dir() {
                todo.push((path, plain));
            } else if meta.is_file() {
                report.files += 1;
                match verify_file(&path, keys, layout) {
                    Ok(n) => report.bytes += n,
                    Err(what) => problem(&path, &plain, what),
                }
            }
        }
    }
    report
}

/// A symlink's sealed target opens: inline, or in the file its pointer names (FORMAT.md §6).
fn verify_symlink(links: &Path, dir: Option<&std::fs::File>, keys: &VolumeKeys, stored: &[u8]) -> Result<(), String> {
    let Some((file, len)) = crate::records::long_pointer(stored) else {
        return match crate::records::open_symlink(keys, stored) {
            Some(_) => Ok(()),
            None => Err("symlink target does not authenticate".into()),
        };
    };
    let dir = dir.ok_or_else(|| format!("{}: missing", links.display()))?;
    let record = crate::links::read_record(std::os::fd::AsFd::as_fd(dir), file)
        .map_err(|e| format!("long symlink target {}: {e}", links.join(file).display()))?;
    match crate::records::open_long_target(keys, file, len, &record) {
        Some(_) => Ok(()),
        None => Err(format!("long symlink target {} does not authenticate", links.join(file).display())),
    }
}

/// Every extended attribute of ours: its name decrypts and its value opens under that name.
fn verify_xattrs(path: &Path, keys: &VolumeKeys, names: &NameCipher) -> Result<(), String> {
    let p = path.to_str().ok_or("path is not UTF-8")?;
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::listxattr(p, &mut list[..]).map_err(|e| format!("xattrs: {e}"))?;
    for backing in list[..n].split(|&b| b == 0).filter(|b| b.starts_with(crate::xattrs::BACKING_PREFIX.as_bytes())) {
        let shown = String::from_utf8_lossy(backing);
        let name =
            crate::xattrs::plain_name(names, backing).ok_or(format!("xattr {shown}: name does not authenticate"))?;
        let mut value = vec![0u8; 65536 + 64];
        let len = rustix::fs::getxattr(p, backing, &mut value[..]).map_err(|e| format!("xattr {shown}: {e}"))?;
        crate::xattrs::open_value(keys, &name, &value[..len])
            .ok_or(format!("xattr {shown}: value does not authenticate"))?;
    }
    Ok(())
}

/// Reads every block of one file; the first failure is the problem reported.
fn verify_file(path: &Path, keys: &Arc<VolumeKeys>, layout: Layout) -> Result<u64, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file = EncryptedFile::open(f, keys.clone(), layout).map_err(|e| e.to_string())?;
    let size = file.size().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; layout.block_size];
    let mut off = 0;
    while off < size {
        let n = file.read_at(&mut buf, off).map_err(|e| format!("at offset {off}: {e}"))?;
        off += n as u64;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::content::HEADER_LEN;
    use crate::dirs::{create_dir_iv, entry_name, DIR_IV_NAME};

    #[test]
    fn a_clean_tree_and_each_kind_of_damage() {
        let root = tempfile::tempdir().unwrap();
        let keys = Arc::new(VolumeKeys::derive(&[8; 32], &[8; 16], Algorithm::Sm4Gcm).unwrap());
        let names = NameCipher::new(&keys);
        let layout = Layout { block_size: 4096 };
        let iv = create_dir_iv(root.path()).unwrap();
        let sub = root.path().join(entry_name(&names, &iv, b"docs").backing);
        std::fs::create_dir(&sub).unwrap();
        let sub_iv = create_dir_iv(&sub).unwrap();
        let mut files = Vec::new();
        for (dir, dir_iv, name) in [(root.path(), iv, "a"), (sub.as_path(), sub_iv, "b")] {
            let path = dir.join(entry_name(&names, &dir_iv, name.as_bytes()).backing);
            let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
            let mut ef = EncryptedFile::open(f, keys.clone(), layout).unwrap();
            ef.write_at(&vec![7u8; 10_000], 0).unwrap();
            files.push(path);
        }
        let r = check(root.path(), &keys, layout);
        assert!(r.is_clean(), "{:?}", r.problems);
        assert_eq!((r.dirs, r.files, r.bytes), (2, 2, 20_000));

        // A flipped byte in the second block of one file, a foreign name, a lost directory IV.
        let at = (HEADER_LEN + 4124 + 50) as u64;
        let mut byte = [0u8];
        std::fs::File::open(&files[0]).unwrap().read_exact_at(&mut byte, at).unwrap();
        std::fs::OpenOptions::new().write(true).open(&files[0]).unwrap().write_all_at(&[!byte[0]], at).unwrap();
        std::fs::write(root.path().join("bm90LWEtbmFtZQ"), b"").unwrap();
        std::fs::remove_file(sub.join(DIR_IV_NAME)).unwrap();
        let r = check(root.path(), &keys, layout);
        let whats: Vec<String> = r.problems.iter().map(|p| format!("{}: {}", p.path.display(), p.what)).collect();
        assert_eq!(r.problems.len(), 3, "{whats:#?}");
        assert!(whats.iter().any(|w| w.contains("at offset 4096") && w.contains("block 1")), "{whats:#?}");
        assert!(whats.iter().any(|w| w.contains("bm90LWEtbmFtZQ") && w.contains("name")), "{whats:#?}");
        assert!(whats.iter().any(|w| w.contains("directory IV")), "{whats:#?}");
    }
}
