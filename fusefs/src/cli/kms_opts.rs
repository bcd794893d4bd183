//! How `kmsfs` reaches the KMS: the sidecar (as the OSS service principal from the sidecar's
//! client profile, or with an access key given explicitly) or an engine embedded in this process
//! on a local store.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kms_sidecar::client::{Client, ClientConfig, Overrides};
use kmsfs::kms::{Embedded, KeyService, Remote};

use super::{Failure, EXIT_OTHER};

#[derive(Args, Debug, Clone)]
pub struct KmsOpts {
    /// The sidecar's endpoint (default: KMS_ENDPOINT, then the sidecar's client profile).
    #[arg(long, global = true, env = "KMS_ENDPOINT")]
    endpoint: Option<String>,
    /// The sidecar's client profile (default: KMS_PROFILE, then the sidecar's data directory).
    #[arg(long, global = true, env = "KMS_PROFILE")]
    profile: Option<PathBuf>,
    /// Sign as this access key instead of the OSS service principal of the profile.
    #[arg(long, global = true, env = "KMSFS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    #[arg(long, global = true, env = "KMSFS_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
    /// A CA to trust for an https endpoint.
    #[arg(long, global = true, env = "KMS_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Use an engine in this process on the store in DIR instead of a sidecar.
    #[arg(long, global = true, value_name = "DIR", env = "KMSFS_EMBEDDED")]
    embedded: Option<PathBuf>,
}

impl KmsOpts {
    pub fn connect(&self) -> Result<Box<dyn KeyService>, Failure> {
        if let Some(dir) = &self.embedded {
            std::fs::create_dir_all(dir).map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", dir.display())))?;
            let opts = kms_core::EngineOptions::in_dir(dir, kms_core::EngineConfig::default())
                .map_err(|e| Failure::new(EXIT_OTHER, e))?;
            let engine = kms_core::Engine::open(opts).map_err(|e| Failure::new(EXIT_OTHER, e))?;
            return Ok(Box::new(Embedded::new(Arc::new(engine))));
        }
        let explicit = self.access_key_id.is_some();
        let cfg = ClientConfig::discover(Overrides {
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            access_key_secret: self.access_key_secret.clone(),
            ca_file: self.ca_file.clone(),
            profile: self.profile.clone(),
            service: (!explicit).then(|| "oss".to_string()),
        })
        .map_err(|e| Failure::new(super::EXIT_KMS_UNREACHABLE, format!("KMS: {e}")))?;
        Ok(Box::new(Remote(Client::new(cfg).map_err(|e| Failure::new(super::EXIT_KMS_UNREACHABLE, e))?)))
    }
}
