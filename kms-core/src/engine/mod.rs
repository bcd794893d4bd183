//! The KMS engine: one `Engine` per store, safe to share between threads.
//!
//! Reads (every cryptographic operation) take a read lock on the in-memory state and never touch
//! SQLite. Mutations are serialised by the store mutex: the closure given to [`Engine::mutate`]
//! checks the request against the current state and returns the changes; the store commits them
//! durably; only then are they applied to memory. So a reply is never ahead of the disk, and a
//! failed commit leaves both untouched.

mod aliases;
mod cache;
mod caller;
mod crypto_ops;
mod keys;
mod maintenance;
mod service;
mod state;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

pub use caller::{Caller, Principal};
pub use maintenance::{MaintenanceHandle, MaintenanceReport};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::EngineConfig;
use crate::crypto::seal::{material_aad, Protector, SoftwareRootKey};
use crate::crypto::{Algorithm, SymCipher};
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::KeyRef;
use crate::model::{KeyRecord, KeyState};
use crate::store::{Change, Store};
use cache::CipherCache;
use state::State;

/// Why an engine could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(pub String);

/// Where the engine keeps its data and what protects it.
pub struct EngineOptions {
    pub config: EngineConfig,
    pub store_path: PathBuf,
    pub protector: Arc<dyn Protector>,
    pub clock: Arc<dyn Clock>,
}

impl EngineOptions {
    /// The default layout of a data directory: `kms.db` and a software root key `root.key`.
    pub fn in_dir(dir: &Path, config: EngineConfig) -> Result<Self, OpenError> {
        let protector = SoftwareRootKey::load_or_create(&dir.join("root.key")).map_err(OpenError)?;
        Ok(EngineOptions {
            config,
            store_path: dir.join("kms.db"),
            protector: Arc::new(protector),
            clock: Arc::new(SystemClock),
        })
    }
}

const ROOT_CHECK_NAME: &str = "root_key_check";
const ROOT_CHECK_AAD: &[u8] = b"kms-core root key check v1";
const ROOT_CHECK_PLAINTEXT: &[u8] = b"this store is sealed under this root key";

pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    protector: Arc<dyn Protector>,
    store: Mutex<Store>,
    state: RwLock<State>,
    ciphers: CipherCache,
}

impl Engine {
    /// Opens the store, proves the root key is the one it was sealed under, and loads every key.
    pub fn open(opts: EngineOptions) -> Result<Engine, OpenError> {
        let mut store = Store::open(&opts.store_path).map_err(OpenError)?;
        let sqlite = |e: rusqlite::Error| OpenError(format!("{}: {e}", opts.store_path.display()));
        match store.get_meta(ROOT_CHECK_NAME).map_err(sqlite)? {
            Some(sealed) => {
                opts.protector.unseal(ROOT_CHECK_AAD, &sealed).map_err(|_| {
                    OpenError(format!(
                        "{} is sealed under another root key than {}",
                        opts.store_path.display(),
                        opts.protector.describe()
                    ))
                })?;
            }
            None => {
                let sealed = opts.protector.seal(ROOT_CHECK_AAD, ROOT_CHECK_PLAINTEXT);
                store.put_meta(ROOT_CHECK_NAME, &sealed).map_err(sqlite)?;
            }
        }
        let snapshot = store.load().map_err(sqlite)?;
        let state = State::from_snapshot(snapshot);
        let engine = Engine {
            ciphers: CipherCache::new(opts.config.cache_capacity),
            config: opts.config,
            clock: opts.clock,
            protector: opts.protector,
            store: Mutex::new(store),
            state: RwLock::new(state),
        };
        engine.verify_all_material()?;
        tracing::info!(
            store = %opts.store_path.display(),
            protector = %engine.protector.describe(),
            keys = engine.state.read().keys.len(),
            "kms engine open"
        );
        Ok(engine)
    }

    /// Unseals every version once, so a damaged store or a wrong root key is found at start, not
    /// at the first Decrypt; warms the cache on the way.
    fn verify_all_material(&self) -> Result<(), OpenError> {
        let st = self.state.read();
        for v in st.versions.values() {
            let k = &st.keys[&v.key_id];
            self.unseal_version(k, &v.version_id, &v.sealed).map_err(|_| {
                OpenError(format!(
                    "key {} version {} does not unseal under {}: the store was modified or belongs to another root key",
                    v.key_id,
                    v.version_id,
                    self.protector.describe()
                ))
            })?;
        }
        Ok(())
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Runs `f` against the current state under the writer lock, commits the changes it returns,
    /// then applies them to memory.
    fn mutate<T>(&self, f: impl FnOnce(&State, Timestamp) -> Result<(Vec<Change>, T)>) -> Result<T> {
        let mut store = self.store.lock();
        let now = self.clock.now();
        let (changes, out) = f(&self.state.read(), now)?;
        if changes.is_empty() {
            return Ok(out);
        }
        store.apply(&changes).map_err(|e| KmsError::internal(format_args!("store commit failed: {e}")))?;
        let mut st = self.state.write();
        for c in &changes {
            if let Change::DeleteKey(id) = c {
                for v in st.versions_of(id) {
                    self.ciphers.remove(v);
                }
            }
            st.apply(c);
        }
        Ok(out)
    }

    fn key_ref(&self, param: &str, value: &str) -> Result<KeyRef> {
        KeyRef::parse(param, value, &self.config.region, &self.config.account_id)
    }

    /// Finds the key a parsed `KeyId` names.
    fn lookup<'s>(&self, st: &'s State, r: &KeyRef) -> Result<&'s KeyRecord> {
        match r {
            KeyRef::Id(id) => st.keys.get(id).ok_or_else(|| KmsError::key_not_found(id)),
            KeyRef::Alias(name) => {
                let a = st.aliases.get(name).ok_or_else(|| KmsError::alias_not_found(name))?;
                st.keys.get(&a.key_id).ok_or_else(|| KmsError::key_not_found(&a.key_id))
            }
        }
    }

    /// Parses and looks up a `KeyId` parameter.
    fn find<'s>(&self, st: &'s State, param: &str, value: &str) -> Result<&'s KeyRecord> {
        let r = self.key_ref(param, value)?;
        self.lookup(st, &r)
    }

    /// A ready cipher for a version, from the cache or by unsealing `sealed`.
    fn cipher(&self, key: &KeyRecord, version_id: &str, sealed: &[u8]) -> Result<Arc<SymCipher>> {
        match self.ciphers.get(version_id) {
            Some(c) => Ok(c),
            None => self.unseal_version(key, version_id, sealed),
        }
    }

    fn unseal_version(&self, key: &KeyRecord, version_id: &str, sealed: &[u8]) -> Result<Arc<SymCipher>> {
        let alg = Algorithm::for_spec(key.spec)
            .ok_or_else(|| KmsError::internal(format_args!("key {} has no symmetric algorithm", key.key_id)))?;
        let material = self
            .protector
            .unseal(&material_aad(&key.key_id, version_id), sealed)
            .map_err(|e| KmsError::internal(format_args!("key {} version {version_id}: {e}", key.key_id)))?;
        let cipher =
            Arc::new(SymCipher::new(alg, &material).ok_or_else(|| {
                KmsError::internal(format_args!("key {}: material has the wrong length", key.key_id))
            })?);
        self.ciphers.insert(version_id, cipher.clone());
        Ok(cipher)
    }

    /// Fresh sealed material for a new version of `key`.
    fn new_version(&self, key: &KeyRecord, now: Timestamp) -> crate::model::VersionRecord {
        use rand::RngCore;
        let version_id = Uuid::new_v4().to_string();
        let len = key.spec.material_len().expect("symmetric key");
        let mut material = zeroize::Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut material);
        let sealed = self.protector.seal(&material_aad(&key.key_id, &version_id), &material);
        crate::model::VersionRecord { version_id, key_id: key.key_id.clone(), created_at: now, sealed }
    }
}

/// The error for a key whose state forbids a cryptographic operation (spec §6.3).
fn state_error(k: &KeyRecord) -> KmsError {
    let code = match k.state {
        KeyState::Disabled => ErrorCode::Disabled,
        KeyState::PendingDeletion => ErrorCode::PendingDeletion,
        KeyState::PendingImport => ErrorCode::PendingImport,
        KeyState::Enabled => return KmsError::internal("state_error on an enabled key"),
    };
    KmsError::with_detail(code, format_args!("KeyId: {}", k.key_id))
}

/// Cryptographic operations need an Enabled key.
fn require_enabled(k: &KeyRecord) -> Result<()> {
    if k.state == KeyState::Enabled {
        Ok(())
    } else {
        Err(state_error(k))
    }
}

fn state_modify_failed(k: &KeyRecord, why: &str) -> KmsError {
    KmsError::with_detail(ErrorCode::StateModifiedFailed, format_args!("KeyId: {} is {}; {why}", k.key_id, k.state))
}

/// Service keys are managed by their service: no lifecycle change by anyone.
fn forbid_service_key(k: &KeyRecord, action: &str) -> Result<()> {
    match &k.service {
        Some(svc) => Err(KmsError::unsupported(format_args!(
            "key {} is the service key of {} (alias acs/{svc}); {action} is not allowed on service keys",
            k.key_id,
            svc.to_uppercase()
        ))),
        None => Ok(()),
    }
}

fn dry_run_error() -> KmsError {
    KmsError::new(ErrorCode::DryRunOperation)
}

#[cfg(test)]
mod tests;
