//! The KMS engine: one `Engine` per store, safe to share between threads.
//!
//! Reads go through a [`View`]: records from a bounded cache filled from the store on a miss, so a
//! warm key's cryptographic operation never touches the store; listings are paged in SQL
//! (module `view`). Mutations are serialised by the store mutex (and, on a shared store, by the
//! store's write lock across nodes): the cache first catches up with what other nodes committed,
//! the closure given to [`Engine::mutate`] checks the request against current state and returns
//! the changes, the store commits them durably, and only then are they applied to the cache. So
//! a reply is never ahead of the store, and a failed commit leaves both untouched. On a shared
//! store a follower keeps the cache current and reads refuse when it may be stale (module
//! `feed`).

mod aliases;
mod asymmetric;
mod audit_anchor;
mod authz;
mod cache;
mod caller;
mod combine;
mod crypto_ops;
mod directory;
mod feed;
mod grants;
mod group;
mod hsm;
mod import;
mod keys;
mod maintenance;
mod password;
mod secrets;
mod service;
mod state;
mod tags;
mod versions;
mod view;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

pub use audit_anchor::{open_for_verification, Anchor, ChainKey};
pub use authz::PolicySet;
pub use caller::{Caller, Principal, Trail};
pub use maintenance::{MaintenanceHandle, MaintenanceReport, LEASE_SECS};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::EngineConfig;
use crate::crypto::asym::PrivateKey;
use crate::crypto::seal::{material_aad, Protector, SealError, SoftwareRootKey};
use crate::crypto::token::Token;
use crate::crypto::{Algorithm, SymCipher};
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::KeyRef;
use crate::model::{KeyRecord, KeyState, ProtectionLevel};
use crate::store::{Change, Durability, Early, PgFeed, Reader, Store, StoreError, StoreLocation, StoreOpenError};
use cache::{CipherCache, Material};
use state::State;
use view::View;

/// Why an engine could not be opened, by what an operator does about it (command lines choose
/// their exit code by it).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store could not be opened (its message names where the store is).
    #[error("{0}")]
    Store(StoreOpenError),
    /// The root key given is not the one the store is sealed under.
    #[error("{0}")]
    WrongRootKey(String),
    /// Anything else: a file that cannot be read, a damaged store, keys this process cannot use.
    #[error("{0}")]
    Failed(String),
}

/// Where the engine keeps its data and what protects it.
pub struct EngineOptions {
    pub config: EngineConfig,
    pub store: StoreLocation,
    /// This process among the nodes of a shared store: names its lease and its audit anchor.
    pub node_id: String,
    /// On a shared store, how old this node's cache may be before it refuses requests.
    pub store_lease: Duration,
    pub protector: Arc<dyn Protector>,
    pub clock: Arc<dyn Clock>,
    /// The PKCS#11 token where keys with ProtectionLevel HSM live (none: such keys are refused).
    pub token: Option<Arc<Token>>,
}

impl EngineOptions {
    /// The default layout of a data directory: `kms.db` and a software root key `root.key`.
    pub fn in_dir(dir: &Path, config: EngineConfig) -> Result<Self, OpenError> {
        let protector = SoftwareRootKey::load_or_create(&dir.join("root.key")).map_err(OpenError::Failed)?;
        Ok(EngineOptions {
            config,
            store: StoreLocation::Sqlite(dir.join("kms.db")),
            node_id: "local".into(),
            store_lease: DEFAULT_STORE_LEASE,
            protector: Arc::new(protector),
            clock: Arc::new(SystemClock),
            token: None,
        })
    }
}

/// How stale a node's view of a shared store may be (the T).
pub const DEFAULT_STORE_LEASE: Duration = Duration::from_secs(2);

const ROOT_CHECK_NAME: &str = "root_key_check";
const ROOT_CHECK_AAD: &[u8] = b"kms-core root key check v1";
const ROOT_CHECK_PLAINTEXT: &[u8] = b"this store is sealed under this root key";
/// How long after a refused early decision writes go straight to the lock.
const CONFLICT_BACKOFF_MS: u64 = 250;

/// Nonce claims one statement takes at most.
const MAX_NONCE_BATCH: usize = 64;

/// Writing connections per node on a shared store.
pub const WRITE_CONNECTIONS: usize = 3;

const FINGERPRINT_KEY_NAME: &str = "material_fingerprint_key";
const FINGERPRINT_KEY_AAD: &[u8] = b"kms-core material fingerprint key v1";

pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    protector: Arc<dyn Protector>,
    /// The store's writing connections: one for SQLite (one file, one writer); on PostgreSQL
    /// [`WRITE_CONNECTIONS`], so a node's writes overlap (each is a round trip or two to the
    /// database; the cluster's write lock is held only while the server runs a write).
    stores: Vec<Mutex<Store>>,
    /// On a shared store, the connection for nonce claims and audit anchors, which commit
    /// without waiting for a flush ([`Durability::Ordered`] says why that is safe for them).
    ordered: Option<Mutex<Store>>,
    /// Where [`Engine::store`] starts looking when every connection is busy.
    next_store: std::sync::atomic::AtomicUsize,
    /// Until when (ms after `opened`) writes are decided under the lock at once: set for a while
    /// after an early decision was refused (writers contending for one record would otherwise
    /// each decide twice).
    early_off_until_ms: std::sync::atomic::AtomicU64,
    opened: Instant,
    /// Early decisions waiting to be committed together.
    batcher: group::Batcher,
    /// Nonce claims waiting to go to the store together.
    nonce_claims: combine::Combiner<(Vec<u8>, i64), std::result::Result<bool, StoreError>>,
    /// Held while the secret directory is built, so concurrent filtered listings build it once.
    directory_build: Mutex<()>,
    /// Connections for reads on demand (cache misses, listings), apart from the writer's.
    reader: Reader,
    location: StoreLocation,
    node_id: String,
    state: Arc<RwLock<State>>,
    ciphers: Arc<CipherCache>,
    /// When the cache was last known current (always, on an unshared store).
    freshness: Arc<feed::Freshness>,
    /// Follows a shared store's change feed; stopped when the engine drops.
    _follower: Option<feed::Follower>,
    /// Keys the HMAC that fingerprints imported material.
    fingerprint_key: zeroize::Zeroizing<Vec<u8>>,
    /// MACs the audit trail's lines.
    chain_key: ChainKey,
    /// RAM-style policies by principal; replaced whole on reload.
    policies: RwLock<Arc<PolicySet>>,
    /// Where ProtectionLevel HSM keys live.
    token: Option<Arc<Token>>,
}

/// The value kept under `name` in the store's `meta` table, or `fresh()` stored there first. The
/// first of several nodes opening a new shared store wins; the others get its value.
fn meta_or_init(
    store: &mut Store,
    name: &str,
    fresh: impl FnOnce() -> std::result::Result<Vec<u8>, String>,
) -> std::result::Result<Vec<u8>, String> {
    match store.get_meta(name).map_err(|e| e.to_string())? {
        Some(v) => Ok(v),
        None => store.put_meta_if_absent(name, &fresh()?).map_err(|e| e.to_string()),
    }
}

/// A 32-byte secret kept sealed under the root key in the store's `meta` table under `name`
/// (made on first open).
fn sealed_secret(
    store: &mut Store,
    protector: &dyn Protector,
    name: &str,
    aad: &[u8],
) -> std::result::Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let sealed = meta_or_init(store, name, || {
        use rand::RngCore;
        let mut k = zeroize::Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut k);
        protector.seal(aad, &k).map_err(|e| e.to_string())
    })?;
    Ok(zeroize::Zeroizing::new(protector.unseal(aad, &sealed).map_err(|e| e.to_string())?.to_vec()))
}

impl Engine {
    /// Opens the store and proves the root key is the one it was sealed under. Nothing else is
    /// read or unsealed until a request needs it, so opening takes the same time for ten keys or
    /// a million. On a shared store, also starts following its change feed.
    pub fn open(opts: EngineOptions) -> Result<Engine, OpenError> {
        let at = |e: StoreError| OpenError::Failed(format!("{}: {e}", opts.store));
        let opening = |e: StoreOpenError| OpenError::Store(e.at(&opts.store));
        let mut store = Store::open(&opts.store).map_err(opening)?;
        let sealed = meta_or_init(&mut store, ROOT_CHECK_NAME, || {
            opts.protector.seal(ROOT_CHECK_AAD, ROOT_CHECK_PLAINTEXT).map_err(|e| e.to_string())
        })
        .map_err(|e| OpenError::Failed(format!("{}: {e}", opts.store)))?;
        opts.protector.unseal(ROOT_CHECK_AAD, &sealed).map_err(|_| {
            OpenError::WrongRootKey(format!(
                "{} is sealed under another root key than {}",
                opts.store,
                opts.protector.describe()
            ))
        })?;
        let fingerprint_key = sealed_secret(&mut store, &*opts.protector, FINGERPRINT_KEY_NAME, FINGERPRINT_KEY_AAD)
            .map_err(|e| OpenError::Failed(format!("{}: fingerprint key: {e}", opts.store)))?;
        let chain_key =
            sealed_secret(&mut store, &*opts.protector, audit_anchor::CHAIN_KEY_NAME, audit_anchor::CHAIN_KEY_AAD)
                .and_then(|k| ChainKey::from_secret(&k))
                .map_err(|e| OpenError::Failed(format!("{}: audit chain key: {e}", opts.store)))?;
        let t0 = Instant::now();
        let seq = store.position().map_err(at)?;
        let mut stores = vec![Mutex::new(store)];
        let mut ordered = None;
        if opts.store.is_shared() {
            for _ in 1..WRITE_CONNECTIONS {
                stores.push(Mutex::new(Store::open(&opts.store).map_err(opening)?));
            }
            ordered = Some(Mutex::new(Store::open_with(&opts.store, Durability::Ordered).map_err(opening)?));
        }
        let reader = Reader::open(&opts.store).map_err(at)?;
        if opts.token.is_none() {
            // Found at start, not at the first request: keys this process could never use.
            if let Some(id) = reader.run(crate::store::reads::any_hsm_key).map_err(at)? {
                return Err(OpenError::Failed(format!("{}: {}", opts.store, hsm::no_token(&id))));
            }
        }
        let state = Arc::new(RwLock::new(State::new(opts.config.cache_capacity, seq)));
        let ciphers = Arc::new(CipherCache::new(opts.config.cache_capacity));
        let (freshness, follower) = match &opts.store {
            StoreLocation::Postgres(url) => {
                let fresh = Arc::new(feed::Freshness::shared(opts.store_lease, t0));
                fresh.mark(t0);
                let pg = PgFeed::new(url).map_err(at)?;
                let f = feed::spawn(pg, state.clone(), ciphers.clone(), fresh.clone());
                (fresh, Some(f))
            }
            StoreLocation::Sqlite(_) => (Arc::new(feed::Freshness::unshared()), None),
        };
        let engine = Engine {
            token: opts.token,
            policies: RwLock::new(Arc::new(PolicySet::new())),
            fingerprint_key,
            chain_key,
            ciphers,
            config: opts.config,
            clock: opts.clock,
            protector: opts.protector,
            stores,
            ordered,
            next_store: Default::default(),
            early_off_until_ms: std::sync::atomic::AtomicU64::new(0),
            opened: Instant::now(),
            batcher: Default::default(),
            directory_build: Mutex::new(()),
            nonce_claims: Default::default(),
            reader,
            location: opts.store,
            node_id: opts.node_id,
            state,
            freshness,
            _follower: follower,
        };
        tracing::info!(
            store = %engine.location,
            node = %engine.node_id,
            protector = %engine.protector.describe(),
            "kms engine open"
        );
        Ok(engine)
    }

    /// What a request reads through: refused (retriably) on a shared store when this node may
    /// have missed changes for longer than the lease.
    fn view(&self) -> Result<View<'_>> {
        self.freshness.check()?;
        Ok(View::new(self, Default::default()))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Runs `f` against the current state under the writer lock, commits the changes it returns,
    /// then applies them to memory. On a shared store the state is first brought up to date with
    /// what other nodes committed, under the store's write lock, so `f` always decides on current
    /// state.
    ///
    /// On a shared store a write is first decided on this node's cache, before the lock, and
    /// committed in one round trip if nothing it read changed since ([`Engine::mutate_decided`]);
    /// otherwise – or when that decision changes nothing or fails – `f` runs again as above, so
    /// every refusal and every no-op is decided on current state. `f` may so run twice.
    fn mutate<T>(&self, mut f: impl FnMut(&View<'_>, Timestamp) -> Result<(Vec<Change>, T)>) -> Result<T> {
        if self.location.is_shared() {
            if let Some(out) = self.mutate_decided(&mut f)? {
                return Ok(out);
            }
        }
        let mut store = self.store();
        let t0 = Instant::now();
        let applied = self.state.read().applied_seq;
        let mut out = None;
        let written = store
            .write::<KmsError>(applied, &mut |cu| feed::catch_up(&self.state, &self.ciphers, cu), &mut |counts| {
                let (changes, o) = f(&View::new(self, *counts), self.clock.now())?;
                out = Some(o);
                Ok(changes)
            })
            .map_err(|e| self.store_failure(e))??;
        if let Some((seq, changes)) = written {
            let mut st = self.state.write();
            if !store.is_shared() {
                st.apply_list(None, &changes, &self.ciphers);
            } else if seq > st.applied_seq {
                // The follower may have applied it already; it never skips one.
                feed::apply_sets(&mut st, &self.ciphers, &[crate::store::ChangeSet { seq, changes }]);
            }
        }
        if store.is_shared() {
            self.freshness.mark(t0);
        }
        Ok(out.expect("decide ran"))
    }

    /// A write decided on this node's cache as of its position, with every read named, then
    /// committed by the store only if no change list committed since touched what it read
    /// (`STORE.md`). `None`: decide again under the lock.
    fn mutate_decided<T>(
        &self,
        f: &mut impl FnMut(&View<'_>, Timestamp) -> Result<(Vec<Change>, T)>,
    ) -> Result<Option<T>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.freshness.check().is_err() {
            // A cache that may be stale decides nothing early; under the lock it is caught up.
            return Ok(None);
        }
        if (self.opened.elapsed().as_millis() as u64) < self.early_off_until_ms.load(Relaxed) {
            return Ok(None);
        }
        let after = self.state.read().applied_seq;
        let view = View::recording(self);
        let (changes, out) = match f(&view, self.clock.now()) {
            Ok((changes, out)) if !changes.is_empty() => (changes, out),
            _ => return Ok(None),
        };
        let reads = view.into_reads();
        // The decision may have made token objects for new versions: dropped if it is refused.
        let objects: Vec<(String, String)> = changes
            .iter()
            .filter_map(|c| match c {
                Change::PutVersion(v) => hsm::record_label(&v.sealed)
                    .filter(|l| *l == hsm::token_label(&v.version_id))
                    .map(|l| (v.key_id.clone(), l)),
                _ => None,
            })
            .collect();
        match self.commit_early(Early::new(after, changes, reads)) {
            group::Outcome::Committed => Ok(Some(out)),
            group::Outcome::Failed(e) => Err(self.store_failure(e)),
            group::Outcome::Conflict => {
                // Only a refused decision is certainly not in the store: after a failure the
                // commit's outcome is unknown, and a committed version's object must stay.
                for (key_id, label) in &objects {
                    self.destroy_token_objects(key_id, std::slice::from_ref(label));
                }
                let until = self.opened.elapsed().as_millis() as u64 + CONFLICT_BACKOFF_MS;
                self.early_off_until_ms.store(until, Relaxed);
                Ok(None)
            }
        }
    }

    /// A free writing connection, or – all busy – the next in turn, once it is free.
    pub(super) fn store(&self) -> parking_lot::MutexGuard<'_, Store> {
        for s in &self.stores {
            if let Some(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.next_store.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.stores.len();
        self.stores[i].lock()
    }

    /// The connection for records that only order what follows them (nonce claims, audit
    /// anchors): [`Engine::ordered`] on a shared store, else a writing one.
    pub(super) fn ordered_store(&self) -> parking_lot::MutexGuard<'_, Store> {
        match &self.ordered {
            Some(s) => s.lock(),
            None => self.store(),
        }
    }

    /// A store failure as the client sees it: a shared store that cannot be reached is a
    /// retriable 503; anything else an internal failure. The message never holds key material.
    fn store_failure(&self, e: StoreError) -> KmsError {
        // Debug: in an outage this is every request; the follower reports the outage once.
        tracing::debug!(store = %self.location, error = %e, "store operation failed");
        if self.location.is_shared() {
            KmsError::with_detail(ErrorCode::ServiceUnavailableTemporary, format_args!("the store: {e}"))
        } else {
            KmsError::internal(format_args!("store commit failed: {e}"))
        }
    }

    /// Claims a mutating request's signature nonce durably before it runs: a replay – after a
    /// restart, or against another node of a shared store – is refused with
    /// `SignatureNonceUsed`. The nonce is kept until `expires_at` (its timestamp plus the accepted
    /// skew), when the request would be refused as expired anyway. A crash between the claim and
    /// the change leaves the nonce claimed and the change not made: the client signs again (the
    /// SDKs draw a fresh nonce for every attempt).
    pub fn claim_nonce(&self, access_key_id: &str, nonce: &str, expires_at: i64) -> Result<()> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"kms request nonce v1\0");
        h.update(access_key_id.as_bytes());
        h.update([0]);
        h.update(nonce.as_bytes());
        let id = h.finalize()[..16].to_vec();
        // Claims made while another is in flight go to the store together, in one statement.
        let fresh = self.nonce_claims.submit((id, expires_at), MAX_NONCE_BATCH, |batch| {
            let (tickets, claims): (Vec<u64>, Vec<(Vec<u8>, i64)>) = batch.into_iter().unzip();
            match self.ordered_store().claim_nonces(&claims) {
                Ok(fresh) => tickets.into_iter().zip(fresh.into_iter().map(Ok)).collect(),
                Err(e) => tickets.into_iter().map(|t| (t, Err(e.clone()))).collect(),
            }
        });
        match fresh.map_err(|e| self.store_failure(e))? {
            true => Ok(()),
            false => Err(KmsError::new(ErrorCode::SignatureNonceUsed)),
        }
    }

    fn key_ref(&self, param: &str, value: &str) -> Result<KeyRef> {
        KeyRef::parse(param, value, &self.config.region, &self.config.account_id)
    }

    /// A version ready to use, from the cache or by unsealing `sealed`.
    fn material(&self, key: &KeyRecord, version_id: &str, sealed: &[u8]) -> Result<Arc<Material>> {
        match self.ciphers.get(version_id) {
            Some(c) => Ok(c),
            None => self.unseal_version(key, version_id, sealed),
        }
    }

    /// The symmetric cipher of a version.
    fn cipher(&self, key: &KeyRecord, version_id: &str, sealed: &[u8]) -> Result<Arc<Material>> {
        let m = self.material(key, version_id, sealed)?;
        match m.blob_aead() {
            Some(_) => Ok(m),
            None => Err(KmsError::internal(format_args!("key {} is not symmetric", key.key_id))),
        }
    }

    fn unseal_version(&self, key: &KeyRecord, version_id: &str, sealed: &[u8]) -> Result<Arc<Material>> {
        if key.protection == ProtectionLevel::Hsm {
            let m = Arc::new(self.token_material(key, version_id, sealed)?);
            self.ciphers.insert(&key.key_id, version_id, m.clone());
            return Ok(m);
        }
        let material = self.protector.unseal(&material_aad(&key.key_id, version_id), sealed).map_err(|e| match e {
            SealError::Unavailable(_) => KmsError::from(e),
            e => KmsError::internal(format_args!("key {} version {version_id}: {e}", key.key_id)),
        })?;
        let m = match Algorithm::for_spec(key.spec) {
            Some(alg) => Material::Sym(SymCipher::new(alg, &material).ok_or_else(|| {
                KmsError::internal(format_args!("key {}: material has the wrong length", key.key_id))
            })?),
            None => Material::Asym(PrivateKey::from_pkcs8(key.spec, &material)?),
        };
        let m = Arc::new(m);
        self.ciphers.insert(&key.key_id, version_id, m.clone());
        Ok(m)
    }

    /// Fresh sealed material for a new version of `key`: random bytes for a symmetric key, a new
    /// key pair (PKCS#8) for an asymmetric one; for an HSM key, a new token object and a record
    /// that only names it.
    fn new_version(&self, key: &KeyRecord, now: Timestamp) -> Result<crate::model::VersionRecord> {
        use rand::RngCore;
        let version_id = Uuid::new_v4().to_string();
        if key.protection == ProtectionLevel::Hsm {
            let sealed = self.new_token_version(key, &version_id)?;
            return Ok(crate::model::VersionRecord { version_id, key_id: key.key_id.clone(), created_at: now, sealed });
        }
        let material = match key.spec.material_len() {
            Some(len) => {
                let mut m = zeroize::Zeroizing::new(vec![0u8; len]);
                rand::rngs::OsRng.fill_bytes(&mut m);
                m
            }
            None => PrivateKey::generate(key.spec)?.1,
        };
        let sealed = self.protector.seal(&material_aad(&key.key_id, &version_id), &material)?;
        Ok(crate::model::VersionRecord { version_id, key_id: key.key_id.clone(), created_at: now, sealed })
    }

    /// HMAC-SHA256 fingerprint of imported material, bound to its key.
    fn fingerprint(&self, key_id: &str, material: &[u8]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.fingerprint_key).expect("any key length");
        mac.update(b"kms-core import fingerprint v1\0");
        mac.update(key_id.as_bytes());
        mac.update(&[0]);
        mac.update(material);
        mac.finalize().into_bytes().to_vec()
    }
}

/// The error for a key whose state forbids a cryptographic operation (API.md §5).
fn state_error(k: &KeyRecord) -> KmsError {
    let code = match k.state {
        KeyState::Disabled => ErrorCode::Disabled,
        KeyState::PendingDeletion => ErrorCode::PendingDeletion,
        KeyState::PendingImport => ErrorCode::PendingImport,
        KeyState::Enabled => return KmsError::internal("state_error on an enabled key"),
    };
    KmsError::with_detail(code, format_args!("KeyId: {}", k.key_id))
}

/// Cryptographic operations need an Enabled key whose (imported) material has not expired.
fn require_enabled(k: &KeyRecord, now: Timestamp) -> Result<()> {
    if k.state != KeyState::Enabled {
        return Err(state_error(k));
    }
    if k.material_expire.is_some_and(|t| now >= t) {
        return Err(KmsError::with_detail(
            ErrorCode::PendingImport,
            format_args!("KeyId: {}: its imported key material expired", k.key_id),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests_shared;

#[cfg(test)]
mod tests_directory;
