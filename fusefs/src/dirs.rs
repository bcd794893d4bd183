//! Directories of the cipher tree (FORMAT.md §4): each holds its random IV in `kmsfs.diriv`, its
//! entries under encrypted names, and for names too long for the backing filesystem a hashed
//! entry plus a `.name` file with the full encrypted name.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::names::{backing_name, NameCipher, NameError, DIR_IV_LEN, LONG_NAME_PREFIX};
use crate::volume::CONFIG_NAME;

pub const DIR_IV_NAME: &str = "kmsfs.diriv";
const LONG_NAME_SUFFIX: &str = ".name";

/// Writes a new random IV into the backing directory `dir` (read-only, fsynced).
pub fn create_dir_iv(dir: &Path) -> io::Result<[u8; DIR_IV_LEN]> {
    let mut iv = [0u8; DIR_IV_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut iv);
    let path = dir.join(DIR_IV_NAME);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&path)?;
    io::Write::write_all(&mut f, &iv)?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(iv)
}

pub fn read_dir_iv(dir: &Path) -> io::Result<[u8; DIR_IV_LEN]> {
    let b = std::fs::read(dir.join(DIR_IV_NAME))?;
    b.try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{}: bad {DIR_IV_NAME}", dir.display())))
}

/// Where the entry `name` of the directory `dir` (IV `iv`) lives, and for a long name the full
/// encrypted name to keep beside it.
pub struct BackingEntry {
    pub path: PathBuf,
    pub long_name: Option<(PathBuf, String)>,
}

pub fn backing_entry(names: &NameCipher, dir: &Path, iv: &[u8; DIR_IV_LEN], name: &[u8]) -> BackingEntry {
    let encrypted = names.encrypt(iv, name);
    let backing = backing_name(&encrypted);
    let path = dir.join(backing.as_ref());
    let long_name =
        (backing.as_ref() != encrypted).then(|| (dir.join(format!("{backing}{LONG_NAME_SUFFIX}")), encrypted.clone()));
    BackingEntry { path, long_name }
}

/// Records the full encrypted name of a long-named entry (before the entry itself is created, so
/// a crash in between leaves an orphan `.name` file, never a nameless entry).
pub fn write_long_name(path: &Path, encrypted: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    io::Write::write_all(&mut f, encrypted.as_bytes())?;
    f.sync_all()
}

/// One entry of a listing: its plaintext name, or why it could not be decrypted.
#[derive(Debug)]
pub struct Listed {
    pub backing: String,
    pub name: Result<Vec<u8>, NameError>,
}

/// The entries of backing directory `dir`, decrypted; the volume's own files are left out.
pub fn list(names: &NameCipher, dir: &Path, iv: &[u8; DIR_IV_LEN]) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let backing = e?.file_name().to_string_lossy().into_owned();
        if backing == DIR_IV_NAME
            || backing == CONFIG_NAME
            || backing.starts_with('.')
            || backing.ends_with(LONG_NAME_SUFFIX)
        {
            continue;
        }
        let name = if backing.starts_with(LONG_NAME_PREFIX) {
            match std::fs::read_to_string(dir.join(format!("{backing}{LONG_NAME_SUFFIX}"))) {
                Ok(full) if backing_name(&full) == backing.as_str() => names.decrypt(iv, &full),
                _ => Err(NameError::Corrupt),
            }
        } else {
            names.decrypt(iv, &backing)
        };
        out.push(Listed { backing, name });
    }
    Ok(out)
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
        for name in ["a.txt", "with space", long.as_str()] {
            let e = backing_entry(&names, dir.path(), &iv, name.as_bytes());
            if let Some((p, full)) = &e.long_name {
                write_long_name(p, full).unwrap();
            }
            assert_eq!(e.long_name.is_some(), name == long);
            std::fs::write(&e.path, b"").unwrap();
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
}
