//! Creating a volume, unlocking it for a mount, and rewrapping its data key – the only places
//! the KMS is used. Each either completes or leaves the cipher directory as it found it.

use std::path::Path;

use kms_core::crypto::Algorithm;

use crate::keys::{VolumeKeys, VOLUME_ID_LEN};
use crate::kms::{KeyService, KmsFailure};
use crate::volume::{ConfigError, VolumeConfig};

/// The CMK of volumes that name none: the OSS service key, created on first use.
pub const DEFAULT_KEY_ID: &str = "alias/acs/oss";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0} is not empty; a volume is created in an empty directory")]
    NotEmpty(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Kms(#[from] KmsFailure),
    #[error("the KMS returned a data key of {0} bytes, not 32")]
    BadDataKey(usize),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Exposed(String),
}

/// The EncryptionContext that binds a wrapped data key to its volume.
pub fn volume_context(volume_id: &[u8; VOLUME_ID_LEN]) -> String {
    format!(r#"{{"kmsfs:volume":"{}"}}"#, hex::encode(volume_id))
}

/// Creates a volume in the empty directory `dir`: a fresh DK from the KMS under `key_id`, wrapped
/// with the volume's context; only the wrapped DK is written.
pub fn init(dir: &Path, kms: &dyn KeyService, key_id: &str, cipher: Algorithm) -> Result<VolumeConfig, VolumeError> {
    // Errors on the directory itself name it: the caller gave it.
    let at = |e: std::io::Error| VolumeError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
    if std::fs::read_dir(dir).map_err(at)?.next().is_some() {
        return Err(VolumeError::NotEmpty(dir.display().to_string()));
    }
    // Only the daemon's user may reach backing objects: see `check_private_dir`.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(at)?;
    let mut volume_id = [0u8; VOLUME_ID_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut volume_id);
    let context = volume_context(&volume_id);
    let (dk, wrapped) = kms.generate_data_key(key_id, &context, crate::keys::DATA_KEY_LEN)?;
    let keys = VolumeKeys::derive(&dk, &volume_id, cipher).ok_or(VolumeError::BadDataKey(dk.len()))?;
    let mut config = VolumeConfig::new(&volume_id, cipher, key_id, &context, &wrapped.blob);
    config.seal(&keys);
    // The root's IV first, the config last: a directory with a config is a complete volume.
    let stored = crate::dirs::create_dir_iv(dir).map_err(VolumeError::from).and_then(|_| Ok(config.store(dir)?));
    if let Err(e) = stored {
        let _ = std::fs::remove_file(dir.join(crate::dirs::DIR_IV_NAME));
        return Err(e);
    }
    Ok(config)
}

/// Refuses a cipher directory other users can enter: the daemon (root with `allow_other`) acts
/// on backing objects by descriptor and checks each is the object it names, but nobody else
/// should be able to plant links or swap files there in the first place.
pub fn check_private_dir(dir: &Path) -> Result<(), VolumeError> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(dir)?.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VolumeError::Exposed(format!(
            "cipher directory {} is mode {mode:o}: other users could reach its backing files; `chmod 700` it",
            dir.display()
        )));
    }
    Ok(())
}

/// Reads the config, unwraps the DK through the KMS and checks the config's MAC with it.
pub fn unlock(dir: &Path, kms: &dyn KeyService) -> Result<(VolumeConfig, VolumeKeys), VolumeError> {
    unlock_config(VolumeConfig::load(dir)?, kms)
}

/// [`unlock`] for a config the caller has already loaded (and checked).
pub fn unlock_config(config: VolumeConfig, kms: &dyn KeyService) -> Result<(VolumeConfig, VolumeKeys), VolumeError> {
    let dk = kms.decrypt(&config.wrapped_data_key, &config.encryption_context)?;
    let keys = VolumeKeys::derive(&dk, &config.volume_id, config.cipher).ok_or(VolumeError::BadDataKey(dk.len()))?;
    config.verify(&keys)?;
    Ok((config, keys))
}

/// Re-wraps the DK under `key_id` (default: the volume's CMK, i.e. its current version after a
/// rotation). The data is not rewritten: the DK does not change.
pub fn rewrap(dir: &Path, kms: &dyn KeyService, key_id: Option<&str>) -> Result<VolumeConfig, VolumeError> {
    rewrap_config(dir, VolumeConfig::load(dir)?, kms, key_id)
}

/// [`rewrap`] for the config of `dir`, already loaded by the caller.
pub fn rewrap_config(
    dir: &Path,
    config: VolumeConfig,
    kms: &dyn KeyService,
    key_id: Option<&str>,
) -> Result<VolumeConfig, VolumeError> {
    let (mut config, keys) = unlock_config(config, kms)?;
    let target = key_id.unwrap_or(&config.key_id).to_string();
    let wrapped = kms.re_encrypt(&config.wrapped_data_key, &config.encryption_context, &target)?;
    config.key_id = target;
    config.wrapped_data_key = wrapped.blob;
    config.seal(&keys);
    config.store(dir)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kms_core::api::CreateKeyRequest;
    use kms_core::{Caller, Engine, EngineConfig, EngineOptions};

    use super::*;
    use crate::kms::Embedded;

    fn kms(dir: &Path) -> Embedded {
        Embedded::new(
            Arc::new(Engine::open(EngineOptions::in_dir(dir, EngineConfig::default()).unwrap()).unwrap()),
            "oss",
        )
    }

    #[test]
    fn init_unlock_rewrap() {
        let (store, vol) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let k = kms(store.path());
        let c = init(vol.path(), &k, DEFAULT_KEY_ID, Algorithm::Aes256Gcm).unwrap();
        assert!(c.encryption_context.contains(&c.volume_id_hex()));
        let (c1, keys1) = unlock(vol.path(), &k).unwrap();
        // Another CMK of the owner's, usable by the service through a policy-free embedded engine.
        let other = k.engine.create_key(&Caller::owner(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
        let c2 = rewrap(vol.path(), &k, Some(&other)).unwrap();
        assert_eq!(c2.key_id, other);
        assert_ne!(c2.wrapped_data_key, c1.wrapped_data_key);
        let (_, keys2) = unlock(vol.path(), &k).unwrap();
        assert_eq!(keys1.config_mac_key(), keys2.config_mac_key(), "the data key did not change");
    }

    #[test]
    fn refusals_write_nothing() {
        let (store, vol) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let k = kms(store.path());
        std::fs::write(vol.path().join("existing"), b"x").unwrap();
        assert!(matches!(init(vol.path(), &k, DEFAULT_KEY_ID, Algorithm::Sm4Gcm), Err(VolumeError::NotEmpty(_))));
        std::fs::remove_file(vol.path().join("existing")).unwrap();
        let err = init(vol.path(), &k, "alias/no-such-key", Algorithm::Sm4Gcm).unwrap_err();
        assert!(err.to_string().contains("Forbidden.AliasNotFound"), "{err}");
        assert_eq!(std::fs::read_dir(vol.path()).unwrap().count(), 0, "nothing written");
        assert!(matches!(unlock(vol.path(), &k), Err(VolumeError::Config(ConfigError::NotAVolume(_)))));
    }

    #[test]
    fn a_disabled_cmk_or_an_edited_config_stops_the_unlock() {
        let (store, vol) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let k = kms(store.path());
        let cmk = k.engine.create_key(&Caller::owner(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
        init(vol.path(), &k, &cmk, Algorithm::Aes256Gcm).unwrap();
        k.engine.disable_key(&Caller::owner(), &cmk).unwrap();
        let err = unlock(vol.path(), &k).unwrap_err();
        assert!(err.to_string().contains("Rejected.Disabled"), "{err}");
        k.engine.enable_key(&Caller::owner(), &cmk).unwrap();
        unlock(vol.path(), &k).unwrap();

        let mut c = VolumeConfig::load(vol.path()).unwrap();
        c.block_size = crate::volume::BlockSize::new(65536).unwrap();
        c.store(vol.path()).unwrap();
        assert!(matches!(unlock(vol.path(), &k), Err(VolumeError::Config(ConfigError::Tampered))));
        let mut c = VolumeConfig::load(vol.path()).unwrap();
        c.block_size = crate::volume::BlockSize::new(4096).unwrap();
        c.encryption_context = r#"{"kmsfs:volume":"00"}"#.into();
        c.store(vol.path()).unwrap();
        let err = unlock(vol.path(), &k).unwrap_err();
        assert!(err.to_string().contains("InvalidParameter"), "the context is bound to the wrapped key: {err}");
    }
}
