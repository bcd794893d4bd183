//! Where a client finds a sidecar: the data directory's `profile.json`, which the sidecar writes
//! at start (endpoints, CA file, access keys, the agent, service principals' keys).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `$KMS_DATA_DIR`, else `$XDG_DATA_HOME/kms-sidecar`, else `~/.local/share/kms-sidecar`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KMS_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("kms-sidecar");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/kms-sidecar")
}

/// What clients need to reach this sidecar, written to `profile.json` in the data dir.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Profile {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_secret: Option<String>,
    /// The secrets agent, when it runs: its address and token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_file: Option<PathBuf>,
    /// Service principals' keys by service name (`oss`, `ecs`).
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, ServiceKey>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ServiceKey {
    pub access_key_id: String,
    pub access_key_secret: String,
}
