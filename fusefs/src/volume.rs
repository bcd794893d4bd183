//! The volume config `kmsfs.conf` (FORMAT.md §5): what a mount needs to find and unwrap the data
//! key, and the parameters of the format. It is JSON for people and tools to read; everything in
//! it but the wrapped key is authenticated by an HMAC under a key derived from the data key, so a
//! config edited to weaken the format (another cipher, block size or volume id) is refused once
//! the data key is unwrapped.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kms_core::crypto::Algorithm;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::{VolumeKeys, VOLUME_ID_LEN};

pub const CONFIG_NAME: &str = "kmsfs.conf";
pub const CONFIG_VERSION: u32 = 1;
/// The largest config accepted (a real one is well under 1 KiB).
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}: not a kmsfs volume (no {CONFIG_NAME})")]
    NotAVolume(String),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
    #[error("the volume config was modified (its MAC does not verify under the volume's data key)")]
    Tampered,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `kmsfs.conf` as its JSON spells it (FORMAT.md §5): only [`VolumeConfig::parse`] and
/// [`VolumeConfig::store`] see this form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Always `kmsfs`: a foreign JSON file is recognised at once.
    format: String,
    version: u32,
    /// 16 bytes, hex.
    volume_id: String,
    /// `aes-256-gcm` or `sm4-gcm`.
    cipher: String,
    block_size: usize,
    key_id: String,
    /// JSON text.
    encryption_context: String,
    /// base64.
    wrapped_data_key: String,
    /// hex.
    mac: String,
}

/// The plaintext block size of a volume: a power of two in 512 B..=1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize(usize);

impl BlockSize {
    pub fn new(bytes: usize) -> Option<BlockSize> {
        ((512..=1 << 20).contains(&bytes) && bytes.is_power_of_two()).then_some(BlockSize(bytes))
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// `kmsfs.conf`, parsed: every field in the type it is used as, so nothing downstream re-checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeConfig {
    pub volume_id: [u8; VOLUME_ID_LEN],
    pub cipher: Algorithm,
    pub block_size: BlockSize,
    /// The CMK the data key is wrapped under (a key id, ARN or alias, as given at init).
    pub key_id: String,
    /// The EncryptionContext of the wrapping, JSON text.
    pub encryption_context: String,
    /// The KMS ciphertext blob of the data key.
    pub wrapped_data_key: Vec<u8>,
    /// HMAC-SHA256 under the config MAC key over every field above but the wrapped key; `None`
    /// until [`VolumeConfig::seal`], or when the file's is not 32 bytes of hex (it then fails
    /// [`VolumeConfig::verify`] like any other wrong MAC).
    mac: Option<[u8; 32]>,
}

impl VolumeConfig {
    /// A config for a new volume; [`VolumeConfig::seal`] must follow once the data key exists.
    pub fn new(
        volume_id: &[u8; VOLUME_ID_LEN],
        cipher: Algorithm,
        key_id: &str,
        context: &str,
        wrapped: &[u8],
    ) -> Self {
        VolumeConfig {
            volume_id: *volume_id,
            cipher,
            block_size: BlockSize(DEFAULT_BLOCK_SIZE),
            key_id: key_id.into(),
            encryption_context: context.into(),
            wrapped_data_key: wrapped.to_vec(),
            mac: None,
        }
    }

    pub fn load(dir: &Path) -> Result<VolumeConfig, ConfigError> {
        let path = dir.join(CONFIG_NAME);
        // A regular file of bounded size only: a FIFO or device planted here fails at once.
        let read = || -> std::io::Result<Vec<u8>> {
            use std::io::Read;
            let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC;
            let dirfd = rustix::fs::open(dir, flags, rustix::fs::Mode::empty())?;
            let f = crate::dirs::open_regular_at(&dirfd, CONFIG_NAME, MAX_CONFIG_LEN)?;
            let mut text = Vec::new();
            f.take(MAX_CONFIG_LEN + 1).read_to_end(&mut text)?;
            Ok(text)
        };
        let text = match read() {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotAVolume(dir.display().to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses a config file's bytes into their types; `path` only names it in errors.
    pub fn parse(path: &str, text: &[u8]) -> Result<VolumeConfig, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid { path: path.to_string(), why };
        let f: ConfigFile = serde_json::from_slice(text).map_err(|e| invalid(format!("not a kmsfs config: {e}")))?;
        if f.format != "kmsfs" {
            return Err(invalid(format!("format {:?} is not kmsfs", f.format)));
        }
        if f.version != CONFIG_VERSION {
            return Err(invalid(format!(
                "config version {} is not supported (this build reads {CONFIG_VERSION})",
                f.version
            )));
        }
        // Lowercase hex only, as written: the MAC covers the canonical spelling.
        let volume_id = hex::decode(&f.volume_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .filter(|id| hex::encode(id) == f.volume_id)
            .ok_or_else(|| invalid("volume_id is not 16 bytes of lowercase hex".into()))?;
        let cipher = cipher_from_name(&f.cipher)
            .ok_or_else(|| invalid(format!("cipher {:?} is not aes-256-gcm or sm4-gcm", f.cipher)))?;
        let block_size = BlockSize::new(f.block_size)
            .ok_or_else(|| invalid(format!("block_size {} is not a power of two in 512..=1 MiB", f.block_size)))?;
        let wrapped_data_key =
            STANDARD.decode(&f.wrapped_data_key).map_err(|_| invalid("wrapped_data_key is not base64".into()))?;
        let mac = hex::decode(&f.mac).ok().and_then(|m| m.try_into().ok());
        Ok(VolumeConfig {
            volume_id,
            cipher,
            block_size,
            key_id: f.key_id,
            encryption_context: f.encryption_context,
            wrapped_data_key,
            mac,
        })
    }

    fn to_file(&self) -> ConfigFile {
        ConfigFile {
            format: "kmsfs".into(),
            version: CONFIG_VERSION,
            volume_id: self.volume_id_hex(),
            cipher: cipher_name(self.cipher).into(),
            block_size: self.block_size.get(),
            key_id: self.key_id.clone(),
            encryption_context: self.encryption_context.clone(),
            wrapped_data_key: STANDARD.encode(&self.wrapped_data_key),
            mac: self.mac.map(hex::encode).unwrap_or_default(),
        }
    }

    /// Writes the config atomically (temp file, fsync, rename, fsync of the directory), mode 0600.
    pub fn store(&self, dir: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = dir.join(format!(".{CONFIG_NAME}.tmp"));
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&self.to_file()).expect("plain struct").as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(CONFIG_NAME))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// The volume id as the config and the encryption context spell it.
    pub fn volume_id_hex(&self) -> String {
        hex::encode(self.volume_id)
    }

    /// The MAC input: each authenticated field, length-prefixed so no two configs collide. The
    /// wrapped key is left out so `rewrap` can replace it without the data key changing.
    fn mac_input(&self) -> Vec<u8> {
        let mut m = b"kmsfs v1 config\0".to_vec();
        for field in [
            b"kmsfs".as_slice(),
            &CONFIG_VERSION.to_be_bytes(),
            self.volume_id_hex().as_bytes(),
            cipher_name(self.cipher).as_bytes(),
            &(self.block_size.get() as u64).to_be_bytes(),
            self.key_id.as_bytes(),
            self.encryption_context.as_bytes(),
        ] {
            m.extend_from_slice(&(field.len() as u32).to_be_bytes());
            m.extend_from_slice(field);
        }
        m
    }

    fn compute_mac(&self, keys: &VolumeKeys) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(keys.config_mac_key()).expect("any key length");
        mac.update(&self.mac_input());
        mac.finalize().into_bytes().into()
    }

    pub fn seal(&mut self, keys: &VolumeKeys) {
        self.mac = Some(self.compute_mac(keys));
    }

    /// Constant-time check of the MAC.
    pub fn verify(&self, keys: &VolumeKeys) -> Result<(), ConfigError> {
        use subtle::ConstantTimeEq;
        match &self.mac {
            Some(stored) if bool::from(stored.ct_eq(&self.compute_mac(keys))) => Ok(()),
            _ => Err(ConfigError::Tampered),
        }
    }
}

fn cipher_from_name(name: &str) -> Option<Algorithm> {
    [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm].into_iter().find(|a| cipher_name(*a) == name)
}

pub fn cipher_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Aes256Gcm => "aes-256-gcm",
        Algorithm::Sm4Gcm => "sm4-gcm",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> (VolumeConfig, VolumeKeys) {
        let vid = [8u8; 16];
        let keys = VolumeKeys::derive(&[1; 32], &vid, Algorithm::Sm4Gcm).unwrap();
        let mut c = VolumeConfig::new(&vid, Algorithm::Sm4Gcm, "alias/acs/oss", r#"{"kmsfs:volume":"08"}"#, b"blob");
        c.seal(&keys);
        (c, keys)
    }

    #[test]
    fn store_load_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (c, keys) = sealed();
        c.store(dir.path()).unwrap();
        let back = VolumeConfig::load(dir.path()).unwrap();
        assert_eq!(back, c);
        back.verify(&keys).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CONFIG_NAME)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(back.cipher, Algorithm::Sm4Gcm);
        assert_eq!(back.wrapped_data_key, b"blob");
    }

    #[test]
    fn every_authenticated_field_is_covered() {
        let (c, keys) = sealed();
        let edits: [fn(&mut VolumeConfig); 6] = [
            |c| c.cipher = Algorithm::Aes256Gcm,
            |c| c.block_size = BlockSize::new(8192).unwrap(),
            |c| c.volume_id = [9u8; 16],
            |c| c.key_id = "alias/other".into(),
            |c| c.encryption_context = "{}".into(),
            |c| c.mac = Some([0; 32]),
        ];
        for edit in edits {
            let mut t = c.clone();
            edit(&mut t);
            assert!(matches!(t.verify(&keys), Err(ConfigError::Tampered)), "{t:?}");
        }
        let mut rewrapped = c.clone();
        rewrapped.wrapped_data_key = b"another blob".to_vec();
        rewrapped.verify(&keys).expect("the wrapped key may change (rewrap)");
    }

    #[test]
    fn foreign_and_broken_configs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(VolumeConfig::load(dir.path()), Err(ConfigError::NotAVolume(_))));
        let path = dir.path().join(CONFIG_NAME);
        for (text, why) in [("not json", "not a kmsfs config"), (r#"{"creator":"gocryptfs"}"#, "not a kmsfs config")] {
            std::fs::write(&path, text).unwrap();
            let err = VolumeConfig::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        let (c, _) = sealed();
        let file = serde_json::to_value(c.to_file()).unwrap();
        for (field, value, why) in [
            ("version", serde_json::json!(2), "version 2"),
            ("cipher", "rot13".into(), "rot13"),
            ("block_size", 1000.into(), "block_size 1000"),
            ("volume_id", "xyz".into(), "volume_id"),
            ("volume_id", "AB".repeat(16).into(), "lowercase hex"),
            ("format", "other".into(), "is not kmsfs"),
            ("wrapped_data_key", "!!".into(), "not base64"),
        ] {
            let mut t = file.clone();
            t[field] = value;
            std::fs::write(&path, serde_json::to_vec(&t).unwrap()).unwrap();
            let err = VolumeConfig::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        // A MAC that is not 32 bytes of hex parses, and is refused as tampered once checked.
        let mut t = file.clone();
        t["mac"] = "zz".into();
        std::fs::write(&path, serde_json::to_vec(&t).unwrap()).unwrap();
        let keys = VolumeKeys::derive(&[1; 32], &[8u8; 16], Algorithm::Sm4Gcm).unwrap();
        assert!(matches!(VolumeConfig::load(dir.path()).unwrap().verify(&keys), Err(ConfigError::Tampered)));
    }
}
