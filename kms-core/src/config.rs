//! Engine configuration: identity (region, account) and the limits of the user documents, all
//! overridable.

use serde::{Deserialize, Serialize};

use crate::clock::DAY;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The region this engine serves; it appears in every ARN.
    pub region: String,
    /// What DescribeRegions lists; the serving region is always included.
    pub regions: Vec<String>,
    /// The account id (UID) in ARNs, and the `Creator` of keys the owner creates.
    pub account_id: String,
    pub limits: Limits,
    /// How many unsealed key versions are kept in memory.
    pub cache_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            region: "cn-hangzhou".into(),
            regions: Vec::new(),
            account_id: "1234567890123456".into(),
            limits: Limits::default(),
            cache_capacity: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CMKs per region (service keys do not count).
    pub max_keys: usize,
    /// Aliases per region.
    pub max_aliases: usize,
    /// Encrypt plaintext, bytes.
    pub max_plaintext_bytes: usize,
    /// EncryptionContext, characters of the JSON string.
    pub max_context_chars: usize,
    pub max_description_chars: usize,
    pub min_deletion_window_days: i64,
    pub max_deletion_window_days: i64,
    pub min_rotation_interval_secs: i64,
    pub max_rotation_interval_secs: i64,
    /// Interval used when rotation is enabled without one.
    pub default_rotation_interval_secs: i64,
    /// CreateKeyVersion is refused within this many seconds of the last version.
    pub min_manual_version_interval_secs: i64,
    pub max_data_key_bytes: i64,
    /// SecretData, bytes.
    pub max_secret_bytes: usize,
    /// Versions kept per secret; the oldest deprecated ones (no stage) go first.
    pub max_secret_versions: usize,
    pub max_secrets: usize,
    pub min_secret_recovery_days: i64,
    pub max_secret_recovery_days: i64,
    pub max_tags_per_resource: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_keys: 200,
            max_aliases: 300,
            max_plaintext_bytes: 6 * 1024,
            max_context_chars: 8192,
            max_description_chars: 8192,
            min_deletion_window_days: 7,
            max_deletion_window_days: 366,
            min_rotation_interval_secs: 7 * DAY,
            max_rotation_interval_secs: 730 * DAY,
            default_rotation_interval_secs: 365 * DAY,
            min_manual_version_interval_secs: 7 * DAY,
            max_data_key_bytes: 1024,
            max_secret_bytes: 30 * 1024,
            max_secret_versions: 100,
            max_secrets: 10_000,
            min_secret_recovery_days: 7,
            max_secret_recovery_days: 30,
            max_tags_per_resource: 20,
        }
    }
}

impl EngineConfig {
    pub fn all_regions(&self) -> Vec<String> {
        let mut r = vec![self.region.clone()];
        for x in &self.regions {
            if !r.contains(x) {
                r.push(x.clone());
            }
        }
        r
    }
}
