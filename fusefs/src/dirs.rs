//! Directories of the cipher tree (FORMAT.md §4): each holds its random IV in `kmsfs.diriv`, its
//! entries under encrypted names, and for names too long for the backing filesystem a hashed
//! entry plus a `.name` file with the full encrypted name. Everything works relative to a
//! directory file descriptor, so the mount (which holds one per directory) never walks paths.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{openat, Mode, OFlags};

use crate::names::{backing_name, NameCipher, NameError, DIR_IV_LEN, LONG_NAME_PREFIX};
use crate::volume::CONFIG_NAME;

pub const DIR_IV_NAME: &str = "kmsfs.diriv";
pub const LONG_NAME_SUFFIX: &str = ".name";
/// Prefix of a directory being created (it gets its IV before it gets its name), so a crash
/// never leaves a named directory without an IV.
pub const TEMP_PREFIX: &str = ".kmsfs.tmp.";

/// Opens a directory for reading its entries (works from an `O_PATH` descriptor too).
pub fn open_dir(dir: impl AsFd) -> io::Result<OwnedFd> {
    Ok(openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

fn open_path(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Writes a new random IV into directory `dir`. `durable` fsyncs it and the directory (for the
/// root at `init`); a new subdirectory instead gets its IV before it is renamed into place.
pub fn create_dir_iv_at(dir: impl AsFd, durable: bool) -> io::Result<[u8; DIR_IV_LEN]> {
    let mut iv = [0u8; DIR_IV_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let mut f = std::fs::File::from(openat(dir.as_fd(), DIR_IV_NAME, flags, Mode::from_raw_mode(0o400))?);
    f.write_all(&iv)?;
    if durable {
        f.sync_all()?;
        rustix::fs::fsync(open_dir(dir)?)?;
    }
    Ok(iv)
}

pub fn create_dir_iv(dir: &Path) -> io::Result<[u8; DIR_IV_LEN]> {
    create_dir_iv_at(open_path(dir)?, true)
}

/// `/proc/self/fd/<n>`: the kernel resolves this magic link to the open object itself, never by
/// name, so calls through it act on exactly that object.
pub fn fd_path(fd: impl AsFd) -> String {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()))
}

/// Opens `name` in `dir` for reading only if it is a regular file of at most `max_len` bytes:
/// looked at first through an `O_PATH | O_NOFOLLOW` descriptor (opening that never blocks and
/// never has a device's side effects), then reopened through it. A symlink, FIFO, socket or
/// device planted in a cipher directory is refused with `InvalidData` at once, never waited on.
pub fn open_regular_at(dir: impl AsFd, name: &str, max_len: u64) -> io::Result<std::fs::File> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {why}"));
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(bad("not a regular file".into()));
    }
    if st.st_size as u64 > max_len {
        return Err(bad(format!("{} bytes, more than the {max_len} it may hold", st.st_size)));
    }
    Ok(std::fs::File::from(rustix::fs::open(fd_path(&fd).as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?))
}

pub fn read_dir_iv_at(dir: impl AsFd) -> io::Result<[u8; DIR_IV_LEN]> {
    let f = open_regular_at(dir, DIR_IV_NAME, DIR_IV_LEN as u64)?;
    let mut iv = [0u8; DIR_IV_LEN];
    let n = std::os::unix::fs::FileExt::read_at(&f, &mut iv, 0)?;
    if n != DIR_IV_LEN || f.metadata()?.len() != DIR_IV_LEN as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad {DIR_IV_NAME}")));
    }
    Ok(iv)
}

pub fn read_dir_iv(dir: &Path) -> io::Result<[u8; DIR_IV_LEN]> {
    read_dir_iv_at(open_path(dir)?).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}

/// Where an entry lives in its backing directory: the backing name, and for a long name the
/// `.name` file and the full encrypted name to keep in it.
pub struct EntryName {
    pub backing: String,
    pub long: Option<(String, String)>,
}

pub fn entry_name(names: &NameCipher, iv: &[u8; DIR_IV_LEN], name: &[u8]) -> EntryName {
    let encrypted = names.encrypt(iv, name);
    let backing = backing_name(&encrypted).into_owned();
    let long = (backing != encrypted).then(|| (format!("{backing}{LONG_NAME_SUFFIX}"), encrypted));
    EntryName { backing, long }
}

/// Records the full encrypted name of a long-named entry (before the entry itself is created, so
/// a crash in between leaves an orphan `.name` file, never a nameless entry).
///
/// A `.name` file that is there already – an existing entry of the same name that a rename is
/// about to replace, or a crash leftover – is never truncated in place (a crash then would leave
/// that entry nameless): kept when it says the same, else replaced whole by a rename.
pub fn write_long_name_at(dir: impl AsFd, file: &str, encrypted: &str) -> io::Result<()> {
    let dir = dir.as_fd();
    let create = |name: &str| {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let mut f = std::fs::File::from(openat(dir, name, flags, Mode::from_raw_mode(0o600))?);
        f.write_all(encrypted.as_bytes())?;
        f.sync_all()
    };
    match create(file) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        other => return other,
    }
    let mut have = Vec::new();
    // Only a regular file is read (a FIFO planted under the name would block the daemon).
    open_regular_at(dir, file, MAX_LONG_NAME_FILE)?.take(encrypted.len() as u64 + 1).read_to_end(&mut have)?;
    if have == encrypted.as_bytes() {
        return Ok(());
    }
    // Named like an orphan `.name` file (its base does not exist), so a leftover of a crash
    // here is cleaned up as one.
    let temp = format!("{}.tmp{LONG_NAME_SUFFIX}", file.trim_end_matches(LONG_NAME_SUFFIX));
    let _ = rustix::fs::unlinkat(dir, temp.as_str(), rustix::fs::AtFlags::empty());
    create(&temp)?;
    rustix::fs::renameat(dir, temp.as_str(), dir, file)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// Whether a backing name is one of the volume's own files rather than an entry.
pub fn is_internal(backing: &str) -> bool {
    backing == DIR_IV_NAME || backing == CONFIG_NAME || backing.starts_with('.') || backing.ends_with(LONG_NAME_SUFFIX)
}

/// One entry of a listing: its plaintext name, or why it could not be decrypted.
#[derive(Debug)]
pub struct Listed {
    pub backing: String,
    pub name: Result<Vec<u8>, NameError>,
    pub ino: u64,
    pub file_type: rustix::fs::FileType,
}

/// The entries of the backing directory open as `dir`, decrypted; the volume's own files are left
/// out.
pub fn list_at(names: &NameCipher, dir: impl AsFd, iv: &[u8; DIR_IV_LEN]) -> io::Result<Vec<Listed>> {
    let fd = open_dir(dir)?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let Ok(backing) = e.file_name().to_str() else {
            out.push(Listed {
                backing: e.file_name().to_string_lossy().into_owned(),
                name: Err(NameError::Encoding),
                ino: e.ino(),
                file_type: e.file_type(),
            });
            continue;
        };
        if backing == "." || backing == ".." || is_internal(backing) {
            continue;
        }
        let name = name_at(names, &fd, iv, backing);
        out.push(Listed { backing: backing.to_string(), name, ino: e.ino(), file_type: e.file_type() });
    }
    Ok(out)
}

/// The plaintext name of entry `backing` of the directory open as `dir` (whose IV is `iv`).
pub fn name_at(names: &NameCipher, dir: &OwnedFd, iv: &[u8; DIR_IV_LEN], backing: &str) -> Result<Vec<u8>, NameError> {
    if backing.starts_with(LONG_NAME_PREFIX) {
        read_long_name(dir, backing).and_then(|full| names.decrypt(iv, &full))
    } else {
        names.decrypt(iv, backing)
    }
}

/// The full encrypted name of a long-named entry, checked against the hash in its backing name.
fn read_long_name(dir: &OwnedFd, backing: &str) -> Result<String, NameError> {
    let file = format!("{backing}{LONG_NAME_SUFFIX}");
    let f = open_regular_at(dir, file.as_str(), MAX_LONG_NAME_FILE).map_err(|_| NameError::Corrupt)?;
    let mut content = Vec::new();
    // The file holds one encrypted name: never read more than the longest one could be (it may
    // grow after the size check).
    f.take(MAX_LONG_NAME_FILE + 1).read_to_end(&mut content).map_err(|_| NameError::Corrupt)?;
    check_long_name(backing, &content)
}

/// The longest `.name` file accepted: a 255-byte name, padded and encrypted, encoded as base64.
pub const MAX_LONG_NAME_FILE: u64 = 4096;

/// The full encrypted name a long-name file holds, if it is the one `backing` names (its hash).
pub fn check_long_name(backing: &str, content: &[u8]) -> Result<String, NameError> {
    if content.len() as u64 > MAX_LONG_NAME_FILE {
        return Err(NameError::Corrupt);
    }
    let full = std::str::from_utf8(content).map_err(|_| NameError::Corrupt)?;
    if backing_name(full) == backing {
        Ok(full.to_string())
    } else {
        Err(NameError::Corrupt)
    }
}

pub fn list(names: &NameCipher, dir: &Path, iv: &[u8; DIR_IV_LEN]) -> io::Result<Vec<Listed>> {
    list_at(names, open_path(dir)?, iv)
}

#[cfg(test)]
mod tests {
    use kms_core::crypto::Algorithm;

    use super::*;
    use crate::keys::VolumeKeys;

    #[test]
    fn entries_round_trip_through_a_listing() {
        let dir = tempfile::tempdir().unwrap();
        let names = NameCipher::new(&VolumeKeys::derive(&[3; 32], &[3; 16], Algorithm::Aes256Gcm).unwrap());
        let iv = create_dir_iv(dir.path()).unwrap();
        assert_eq!(read_dir_iv(dir.path()).unwrap(), iv);
        assert!(create_dir_iv(dir.path()).is_err(), "an IV is never replaced");
        let long = "长".repeat(80); // 240 bytes of UTF-8: too long once encrypted and encoded
        let fd = open_path(dir.path()).unwrap();
        for name in ["a.txt", "with space", long.as_str()] {
            let e = entry_name(&names, &iv, name.as_bytes());
            if let Some((file, full)) = &e.long {
                write_long_name_at(&fd, file, full).unwrap();
            }
            assert_eq!(e.long.is_some(), name == long);
            std::fs::write(dir.path().join(&e.backing), b"").unwrap();
        }
        // A foreign file with a name that does not decrypt is reported, not hidden or guessed.
        std::fs::write(dir.path().join("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), b"").unwrap();
        let mut listed = list(&names, dir.path(), &iv).unwrap();
        listed.sort_by(|a, b| a.backing.cmp(&b.backing));
        let mut good: Vec<Vec<u8>> = listed.iter().filter_map(|l| l.name.as_ref().ok().cloned()).collect();
        good.sort();
        let mut want = vec![b"a.txt".to_vec(), b"with space".to_vec(), long.as_bytes().to_vec()];
        want.sort();
        assert_eq!(good, want);
        assert_eq!(listed.iter().filter(|l| l.name.is_err()).count(), 1);
    }

    #[test]
    fn a_name_file_that_is_there_is_kept_or_replaced_whole() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let file = d.path().join("X.name");
        write_long_name_at(&dir, "X.name", "encrypted").unwrap();
        let ino = std::fs::metadata(&file).unwrap().ino();
        // The same name again (a rename over an entry of that name): the file is left alone.
        write_long_name_at(&dir, "X.name", "encrypted").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);
        // A torn leftover is replaced by a new file, never truncated in place.
        std::fs::write(&file, "encr").unwrap();
        write_long_name_at(&dir, "X.name", "encrypted").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "encrypted");
        assert_ne!(std::fs::metadata(&file).unwrap().ino(), ino);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["X.name"], "no temporary file is left");
    }
}
