//! Sealing key material before it reaches the store (kms-core/FORMAT.md §2).
//!
//! A [`Protector`] seals and unseals material; the store only ever sees sealed bytes. The software
//! protector holds a 256-bit root key read from a `0600` file created on first start; an HSM
//! protector (PKCS#11) implements the same trait.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

use super::aead::{random_nonce, Algorithm, SymCipher, NONCE_LEN, TAG_LEN};

const SEALED_V1: u8 = 1;
const AAD_LABEL: &[u8] = b"kms-core sealed key material v1\0";
const ROOT_KEY_MAGIC: &[u8; 8] = b"KMSRK001";
const ROOT_KEY_FILE_LEN: usize = 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed record is malformed")]
    Malformed,
    #[error("sealed record does not authenticate under this root key (wrong root key, or the store was modified)")]
    Unauthentic,
    /// The protector cannot work now (an HSM that went away); worth retrying later.
    #[error("the key protector is unavailable: {0}")]
    Unavailable(String),
}

impl From<SealError> for crate::error::KmsError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Unavailable(why) => {
                tracing::error!(error = %why, "key protector unavailable");
                crate::error::KmsError::new(crate::error::ErrorCode::ServiceUnavailableTemporary)
            }
            other => crate::error::KmsError::internal(other),
        }
    }
}

/// Seals and unseals key material; `aad` binds a sealed record to the key and version it belongs to.
pub trait Protector: Send + Sync {
    fn seal(&self, aad: &[u8], material: &[u8]) -> Result<Vec<u8>, SealError>;
    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
    /// A short description for logs (never key bytes).
    fn describe(&self) -> String;
}

/// The AAD that binds a sealed record to its key version.
pub fn material_aad(key_id: &str, version_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_LABEL.len() + key_id.len() + 1 + version_id.len());
    a.extend_from_slice(AAD_LABEL);
    a.extend_from_slice(key_id.as_bytes());
    a.push(0);
    a.extend_from_slice(version_id.as_bytes());
    a
}

/// The software root key: AES-256-GCM over material, key held in memory, zeroized on drop.
pub struct SoftwareRootKey {
    cipher: SymCipher,
    path: PathBuf,
}

impl SoftwareRootKey {
    /// Reads the root key file, or creates it (mode 0600, fsynced with its directory) when it does
    /// not exist. A file readable by group or others is refused rather than used.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let key = match OpenOptions::new().read(true).open(path) {
            Ok(f) => read_root_key(path, f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_root_key(path)?,
            Err(e) => return Err(format!("cannot open root key file {}: {e}", path.display())),
        };
        let cipher = SymCipher::new(Algorithm::Aes256Gcm, &key[..]).expect("32-byte key");
        Ok(SoftwareRootKey { cipher, path: path.to_path_buf() })
    }

    /// Reads an existing root key file; never creates one (for tools that only verify).
    pub fn load(path: &Path) -> Result<Self, String> {
        let f = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| format!("cannot open root key file {}: {e}", path.display()))?;
        let key = read_root_key(path, f)?;
        let cipher = SymCipher::new(Algorithm::Aes256Gcm, &key[..]).expect("32-byte key");
        Ok(SoftwareRootKey { cipher, path: path.to_path_buf() })
    }

    /// A root key that lives only in memory (tests, benchmarks).
    pub fn ephemeral() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        let cipher = SymCipher::new(Algorithm::Aes256Gcm, &key[..]).expect("32-byte key");
        SoftwareRootKey { cipher, path: PathBuf::from("<memory>") }
    }
}

fn read_root_key(path: &Path, mut f: File) -> Result<Zeroizing<[u8; 32]>, String> {
    let meta = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "root key file {} has mode {mode:o}; it must be readable by its owner only (chmod 600)",
            path.display()
        ));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(ROOT_KEY_FILE_LEN));
    f.read_to_end(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() != ROOT_KEY_FILE_LEN || &buf[..8] != ROOT_KEY_MAGIC {
        return Err(format!("{} is not a root key file of this service", path.display()));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&buf[8..]);
    Ok(key)
}

fn create_root_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, String> {
    let err = |e: std::io::Error| format!("cannot create root key file {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    let mut content = Zeroizing::new(Vec::with_capacity(ROOT_KEY_FILE_LEN));
    content.extend_from_slice(ROOT_KEY_MAGIC);
    content.extend_from_slice(&key[..]);
    // Written to a temporary name and renamed, so a crash never leaves a short root key file.
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(&content).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    sync_dir(path).map_err(err)?;
    tracing::info!(path = %path.display(), "created a new root key");
    Ok(key)
}

/// Fsyncs the directory holding `path`, so a created or renamed entry survives a crash.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

impl Protector for SoftwareRootKey {
    fn seal(&self, aad: &[u8], material: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + material.len() + TAG_LEN);
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&self.cipher.seal(&nonce, aad, material));
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEALED_V1 {
            return Err(SealError::Malformed);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("length checked");
        self.cipher.open(&nonce, aad, &sealed[1 + NONCE_LEN..]).ok_or(SealError::Unauthentic)
    }

    fn describe(&self) -> String {
        format!("software root key ({})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_file_is_created_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/root.key");
        let a = SoftwareRootKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal(b"aad", b"material").unwrap();
        let b = SoftwareRootKey::load_or_create(&path).unwrap();
        assert_eq!(&b.unseal(b"aad", &sealed).unwrap()[..], b"material");
        assert!(matches!(b.unseal(b"other", &sealed), Err(SealError::Unauthentic)));
    }

    #[test]
    fn loose_permissions_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        SoftwareRootKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = SoftwareRootKey::load_or_create(&path).err().unwrap();
        assert!(e.contains("chmod 600"), "{e}");
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SoftwareRootKey::load_or_create(&path).is_err());
    }

    #[test]
    fn another_root_key_cannot_unseal() {
        let a = SoftwareRootKey::ephemeral();
        let b = SoftwareRootKey::ephemeral();
        let sealed = a.seal(b"x", b"material").unwrap();
        assert!(b.unseal(b"x", &sealed).is_err());
        let mut t = sealed.clone();
        t[5] ^= 1;
        assert!(a.unseal(b"x", &t).is_err());
    }
}
