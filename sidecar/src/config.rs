//! Configuration: a TOML file (optional), command-line overrides, and the data directory that a
//! zero-configuration start fills in: the SQLite store, the root key, the access keys
//! (`credentials.toml`, 0600) and a client profile (`profile.json`, 0600).

pub use kms_client::profile::{default_data_dir, Profile, ServiceKey};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kms_core::{EngineConfig, Principal};
use rand::Rng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::auth::AccessKey;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:18080";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where relative policy files are found: the config file's directory.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Plain HTTP listener; empty disables it.
    pub listen: String,
    /// HTTPS listener (certificate from `tls`, or generated in the data dir).
    pub tls_listen: Option<String>,
    pub unix_socket: Option<PathBuf>,
    pub tls: TlsConfig,
    /// Accepted distance between a request's timestamp and the server clock.
    pub max_clock_skew_secs: i64,
    pub maintenance_interval_secs: u64,
    pub max_body_bytes: usize,
    /// Connection count, timeouts and head sizes (module `conn`).
    pub connections: crate::conn::ConnLimits,
    pub engine: EngineConfig,
    /// Access keys in addition to those in `credentials.toml`.
    pub access_keys: Vec<AccessKeyConfig>,
    /// The secrets agent for application containers (off unless it has a listener).
    pub agent: crate::agent::AgentConfig,
    pub audit: AuditConfig,
    /// A PKCS#11 token (HSM) for the root key.
    pub hsm: HsmConfig,
    /// RAM-style policies attached to principals (reloaded on SIGHUP).
    pub policies: Vec<PolicyConfig>,
    /// Where keys and secrets are stored: the embedded SQLite file, or a shared PostgreSQL.
    pub store: StoreConfig,
    /// Per-principal request rates (module `throttle`; reloaded on SIGHUP); none by default.
    pub throttling: crate::throttle::ThrottleConfig,
    /// The management console (module `console`); off unless it has a listener.
    pub console: crate::console::ConsoleConfig,
    /// The Kubernetes KMS v2 plugin and Secrets Store CSI provider sockets (module `k8s`).
    pub kubernetes: crate::k8s::KubernetesConfig,
}

/// `[store]`: the embedded default, or one PostgreSQL database shared by many sidecars.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A file path (SQLite) or `postgres://user:password@host1:5432,host2:5432/kms?target_session_attrs=read-write`.
    /// Default: `<data-dir>/kms.db`.
    pub url: Option<String>,
    /// This sidecar's name among the nodes of a shared store: it names the node's maintenance
    /// lease and its audit anchor. Default: a random id kept in `<data-dir>/node.id`.
    pub node_id: Option<String>,
    /// On a shared store, how long this node may go without hearing from the database before it
    /// refuses requests (ServiceUnavailableTemporary), in milliseconds.
    pub lease_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: None, node_id: None, lease_ms: kms_core::engine::DEFAULT_STORE_LEASE.as_millis() as u64 }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.url.as_deref().map(kms_core::store::redact_url);
        f.debug_struct("StoreConfig")
            .field("url", &url)
            .field("node_id", &self.node_id)
            .field("lease_ms", &self.lease_ms)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Default `<data-dir>/audit`.
    pub dir: Option<PathBuf>,
    /// The log rotates past this size; the hash chain continues into the next file.
    pub max_file_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { enabled: true, dir: None, max_file_bytes: 64 << 20 }
    }
}

/// The PKCS#11 token. `enabled`: keys created with ProtectionLevel HSM are generated and used in
/// it. `root_key_in_hsm` (implies `enabled`): the root key that seals the store lives there too – a
/// store is sealed under one root key for life, so choose before the first start.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmConfig {
    pub enabled: bool,
    pub root_key_in_hsm: bool,
    /// The PKCS#11 module; default: SoftHSM2's.
    pub module: Option<PathBuf>,
    pub token_label: String,
    /// The slot id, to pick the token by slot (the label is then checked if set).
    pub slot: Option<u64>,
    /// A file holding the user PIN (mode 0600); the `KMS_HSM_PIN` environment variable wins.
    pub pin_file: Option<PathBuf>,
    pub root_key_label: String,
}

impl Default for HsmConfig {
    fn default() -> Self {
        HsmConfig {
            enabled: false,
            root_key_in_hsm: false,
            module: None,
            token_label: "kms".into(),
            slot: None,
            pin_file: None,
            root_key_label: "kms-root-key".into(),
        }
    }
}

impl HsmConfig {
    pub fn token_config(&self) -> Result<kms_core::crypto::token::TokenConfig, String> {
        let module = self
            .module
            .clone()
            .or_else(kms_core::crypto::token::default_softhsm_module)
            .ok_or("hsm.module: no PKCS#11 module given and SoftHSM2 is not installed")?;
        let pin = match (std::env::var("KMS_HSM_PIN"), &self.pin_file) {
            (Ok(p), _) if !p.is_empty() => p,
            (_, Some(f)) => {
                check_private(f).map_err(|e| format!("hsm.pin_file: {e}"))?;
                let raw =
                    Zeroizing::new(fs::read_to_string(f).map_err(|e| format!("hsm.pin_file {}: {e}", f.display()))?);
                raw.trim().to_string()
            }
            _ => return Err("hsm: set KMS_HSM_PIN or hsm.pin_file".into()),
        };
        Ok(kms_core::crypto::token::TokenConfig {
            module,
            token_label: self.token_label.clone(),
            slot: self.slot,
            pin: Zeroizing::new(pin),
        })
    }
}

/// A policy document attached to a principal, inline or from a file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `user:<name>` or `service:<name>` (the owner needs none).
    pub principal: String,
    pub name: String,
    pub document: Option<String>,
    pub file: Option<PathBuf>,
}

/// Parses every policy; the first bad one stops the load with a message naming it.
pub fn load_policies(cfg: &Config, base: Option<&Path>) -> Result<kms_core::engine::PolicySet, String> {
    let mut set = kms_core::engine::PolicySet::new();
    for p in &cfg.policies {
        let principal = parse_principal(&p.principal)?;
        if principal == Principal::Owner {
            return Err(format!(
                "policy {}: the owner may do everything; attach policies to users and services",
                p.name
            ));
        }
        let text = match (&p.document, &p.file) {
            (Some(d), None) => d.clone(),
            (None, Some(f)) => {
                let path = match base {
                    Some(b) if f.is_relative() => b.join(f),
                    _ => f.clone(),
                };
                fs::read_to_string(&path).map_err(|e| format!("policy {}: {}: {e}", p.name, path.display()))?
            }
            _ => return Err(format!("policy {}: give either document or file", p.name)),
        };
        set.entry(principal).or_default().push(kms_core::policy::Policy::parse(&p.name, &text)?);
    }
    Ok(set)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_dir: None,
            data_dir: None,
            listen: DEFAULT_LISTEN.into(),
            tls_listen: None,
            unix_socket: None,
            tls: TlsConfig::default(),
            max_clock_skew_secs: 15 * 60,
            maintenance_interval_secs: 60,
            max_body_bytes: 1 << 20,
            connections: crate::conn::ConnLimits::default(),
            engine: EngineConfig::default(),
            access_keys: Vec::new(),
            agent: crate::agent::AgentConfig::default(),
            audit: AuditConfig::default(),
            hsm: HsmConfig::default(),
            policies: Vec::new(),
            store: StoreConfig::default(),
            throttling: crate::throttle::ThrottleConfig::default(),
            console: crate::console::ConsoleConfig::default(),
            kubernetes: crate::k8s::KubernetesConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub id: String,
    pub secret: String,
    /// `owner`, `user:<name>` or `service:<name>` (e.g. `service:oss`).
    pub principal: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyConfig")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl AccessKeyConfig {
    pub fn to_access_key(&self) -> Result<AccessKey, String> {
        Ok(AccessKey {
            id: self.id.clone(),
            secret: Zeroizing::new(self.secret.clone()),
            principal: parse_principal(&self.principal)?,
            enabled: self.enabled,
        })
    }
}

pub fn parse_principal(s: &str) -> Result<Principal, String> {
    match s.split_once(':') {
        None if s == "owner" => Ok(Principal::Owner),
        Some(("user", name)) if !name.is_empty() => Ok(Principal::User(name.into())),
        Some(("service", name)) if !name.is_empty() => Ok(Principal::Service(name.to_ascii_lowercase())),
        _ => Err(format!("principal {s:?}: use owner, user:<name> or service:<name>")),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut c: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        c.base_dir = path.parent().map(Path::to_path_buf);
        Ok(c)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// Where the store is: `[store] url`, else `<data-dir>/kms.db`.
    pub fn store_location(&self) -> Result<kms_core::StoreLocation, String> {
        match &self.store.url {
            Some(u) => kms_core::StoreLocation::parse(u),
            None => Ok(kms_core::StoreLocation::Sqlite(self.data_dir().join("kms.db"))),
        }
    }

    /// This node's id: `[store] node_id`, else the one kept in `<data-dir>/node.id` (made on first
    /// use; `create: false` for tools that only read).
    pub fn node_id(&self, create: bool) -> Result<String, String> {
        if let Some(id) = &self.store.node_id {
            return check_node_id(id);
        }
        let path = self.data_dir().join("node.id");
        match fs::read_to_string(&path) {
            Ok(s) => check_node_id(s.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                write_private(&path, id.as_bytes())?;
                Ok(id)
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

fn check_node_id(id: &str) -> Result<String, String> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(id.to_string())
    } else {
        Err(format!("node id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"))
    }
}

/// The access keys kept in the data dir.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Credentials {
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
}

/// An access key id in the service's shape (`LTAI` + 20 alphanumerics) and a 30-character secret.
pub fn generate_key_pair(principal: &str) -> AccessKeyConfig {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let mut pick = |n: usize| (0..n).map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char).collect::<String>();
    AccessKeyConfig { id: format!("LTAI{}", pick(20)), secret: pick(30), principal: principal.into(), enabled: true }
}

/// Loads `credentials.toml`, creating it on first start with a service key pair for OSS and ECS,
/// and an owner key pair unless `owner_from_env`. Returns the credentials and whether they were
/// created now.
pub fn load_or_create_credentials(dir: &Path, owner_from_env: bool) -> Result<(Credentials, bool), String> {
    let path = dir.join("credentials.toml");
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: Credentials = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((c, false));
    }
    let mut c = Credentials::default();
    if !owner_from_env {
        c.access_keys.push(generate_key_pair("owner"));
    }
    c.access_keys.push(generate_key_pair("service:oss"));
    c.access_keys.push(generate_key_pair("service:ecs"));
    let text = toml::to_string(&c).map_err(|e| e.to_string())?;
    write_private(&path, text.as_bytes())?;
    Ok((c, true))
}

/// Writes a file only its owner can read, atomically (temporary file, fsync, rename).
/// Refuses a secret file that others than its owner may read (like ssh does for keys).
pub fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777));
    }
    Ok(())
}

pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    kms_core::crypto::seal::sync_dir(path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse() {
        assert_eq!(parse_principal("owner").unwrap(), Principal::Owner);
        assert_eq!(parse_principal("service:OSS").unwrap(), Principal::Service("oss".into()));
        assert_eq!(parse_principal("user:alice").unwrap(), Principal::User("alice".into()));
        assert!(parse_principal("root").is_err());
        assert!(parse_principal("service:").is_err());
    }

    #[test]
    fn credentials_are_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (c, created) = load_or_create_credentials(d.path(), false).unwrap();
        assert!(created);
        assert_eq!(c.access_keys.len(), 3);
        assert!(c.access_keys[0].id.starts_with("LTAI") && c.access_keys[0].id.len() == 24);
        let mode = fs::metadata(d.path().join("credentials.toml")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create_credentials(d.path(), false).unwrap();
        assert!(!created);
        assert_eq!(again.access_keys[0].secret, c.access_keys[0].secret);
    }

    #[test]
    fn config_file_parses_with_defaults() {
        let c: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            [engine]
            region = "cn-shanghai"
            [engine.limits]
            max_keys = 5
            [[access_keys]]
            id = "ak"
            secret = "sk"
            principal = "service:oss"
            "#,
        )
        .unwrap();
        assert_eq!(
            (c.listen.as_str(), c.engine.region.as_str(), c.engine.limits.max_keys),
            ("127.0.0.1:9000", "cn-shanghai", 5)
        );
        assert_eq!(c.engine.limits.max_aliases, 300);
        assert!(toml::from_str::<Config>("listne = 1").is_err(), "typos are refused");
    }
}

#[cfg(test)]
mod example_file {
    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../kms-sidecar.example.toml");
        let c: super::Config = toml::from_str(text).unwrap();
        assert_eq!(c, super::Config::default());
    }
}
