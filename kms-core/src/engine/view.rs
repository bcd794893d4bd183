//! What a request reads: records from the cache (`state.rs`), filled from the store on a miss;
//! listings, counts and due work straight from the store (paged and counted in SQL).
//!
//! A [`View`] is handed out only while the node may serve ([`Engine::view`] checks the feed's
//! freshness on a shared store), and to a write's decision, which runs under the store's write
//! lock on a caught-up cache: there every read – cached or not – is current.

use std::cell::RefCell;
use std::sync::Arc;

use super::directory::{Directory, EXTRAS_BUDGET};
use super::state::{KeyEntry, Kind, SecretEntry, State};
use super::Engine;
use crate::error::{KmsError, Result};
use crate::ids::KeyRef;
use crate::model::{AliasRecord, ImportTokenRecord, ResourceType};
use crate::store::footprint::{self, ReadSet};
use crate::store::reads::{self, Count, Counts, DirectoryRow, Due, KeyCond, Page, SecretCond, SecretSummary};
use crate::store::rows::Db;
use crate::store::StoreError;

pub(crate) struct View<'e> {
    pub(super) engine: &'e Engine,
    /// Counters a write's transaction read (exact under its lock); a count not here is read.
    pub(super) counts: Counts,
    /// Set while a write is decided before the write lock: what the decision reads, named for
    /// the commit's guard (`store/footprint.rs`).
    pub(super) reads: Option<RefCell<ReadSet>>,
}

impl<'e> View<'e> {
    /// A view for reading (or for a decision under the write lock).
    pub(super) fn new(engine: &'e Engine, counts: Counts) -> View<'e> {
        View { engine, counts, reads: None }
    }

    /// A view that names everything a decision reads.
    pub(super) fn recording(engine: &'e Engine) -> View<'e> {
        View { engine, counts: Counts::default(), reads: Some(RefCell::new(ReadSet::default())) }
    }

    /// What a recording view's decision read.
    pub(super) fn into_reads(self) -> ReadSet {
        self.reads.map(RefCell::into_inner).unwrap_or_default()
    }

    fn note(&self, name: impl FnOnce() -> String) {
        if let Some(r) = &self.reads {
            r.borrow_mut().names.insert(name());
        }
    }

    /// Reads `f` from the store, a store failure phrased for the client.
    fn read<R: Send + 'static>(
        &self,
        f: impl Fn(&mut dyn Db) -> std::result::Result<R, StoreError> + Send + 'static,
    ) -> Result<R> {
        self.engine.reader.run(f).map_err(|e| self.engine.store_failure(e))
    }

    /// `name` from the cache, or read by `load` and cached unless a change to it was applied
    /// while it was being read.
    fn through<T: Clone, R: Send + 'static>(
        &self,
        kind: Kind,
        name: &str,
        cached: impl Fn(&State) -> Option<T>,
        load: fn(&mut dyn Db, &str) -> std::result::Result<Option<R>, StoreError>,
        make: impl FnOnce(R) -> T,
        put: impl FnOnce(&mut State, T),
    ) -> Result<Option<T>> {
        if let Some(v) = cached(&self.engine.state.read()) {
            return Ok(Some(v));
        }
        let ticket = self.engine.state.write().begin_fill(kind, name);
        let owned = name.to_string();
        let r = self.engine.reader.run(move |db| load(db, &owned));
        let mut st = self.engine.state.write();
        let cacheable = st.end_fill(ticket);
        let v = r.map_err(|e| self.engine.store_failure(e))?.map(make);
        if let (true, Some(v)) = (cacheable, &v) {
            put(&mut st, v.clone());
        }
        Ok(v)
    }

    pub fn key(&self, id: &str) -> Result<Option<Arc<KeyEntry>>> {
        self.note(|| footprint::key(id));
        self.through(
            Kind::Key,
            id,
            |st| st.key(id),
            reads::key,
            |r| Arc::new(KeyEntry::from_rows(r)),
            |st, e| st.put_key(e),
        )
    }

    /// The key id an alias points at.
    pub fn alias(&self, name: &str) -> Result<Option<String>> {
        self.note(|| footprint::alias(name));
        let id = self.through(
            Kind::Alias,
            name,
            |st| st.alias(name),
            reads::alias,
            |a: AliasRecord| a.key_id,
            |st, k| st.put_alias(name, &k),
        )?;
        // The key it names too: deleting that key deletes the alias.
        if let Some(id) = &id {
            self.note(|| footprint::key(id));
        }
        Ok(id)
    }

    /// An alias's whole record, read from the store (writes need its creation time).
    pub fn alias_record(&self, name: &str) -> Result<Option<AliasRecord>> {
        self.note(|| footprint::alias(name));
        let owned = name.to_string();
        let a = self.read(move |db| reads::alias(db, &owned))?;
        if let Some(a) = &a {
            self.note(|| footprint::key(&a.key_id));
        }
        Ok(a)
    }

    pub fn secret(&self, name: &str) -> Result<Option<Arc<SecretEntry>>> {
        self.note(|| footprint::secret(name));
        self.through(
            Kind::Secret,
            name,
            |st| st.secret(name),
            reads::secret,
            |r| Arc::new(SecretEntry::from_rows(r)),
            |st, e| st.put_secret(e),
        )
    }

    /// The key a parsed `KeyId` names.
    pub fn lookup(&self, r: &KeyRef) -> Result<Arc<KeyEntry>> {
        match r {
            KeyRef::Id(id) => self.key(id)?.ok_or_else(|| KmsError::key_not_found(id)),
            KeyRef::Alias(name) => {
                let id = self.alias(name)?.ok_or_else(|| KmsError::alias_not_found(name))?;
                self.key(&id)?.ok_or_else(|| KmsError::key_not_found(&id))
            }
        }
    }

    pub fn import_token(&self, id: &str) -> Result<Option<ImportTokenRecord>> {
        self.note(|| footprint::token(id));
        let id = id.to_string();
        self.read(move |db| reads::import_token(db, &id))
    }

    pub fn count(&self, what: Count) -> Result<u64> {
        self.note(|| what.listing().into());
        if let Some(n) = self.counts.get(what) {
            return Ok(n);
        }
        self.read(move |db| reads::count(db, what))
    }

    /// Whether one more `what` stays within `max`. A decision made before the write lock leaves
    /// the check to the commit (`kms_within`: the counter after the write must not exceed `max`),
    /// so writes that each add one record do not conflict over the counter.
    pub fn within_limit(&self, what: Count, max: usize) -> Result<bool> {
        if let Some(r) = &self.reads {
            r.borrow_mut().limits.push((what.row(), max as i64));
            return Ok(true);
        }
        Ok(self.count(what)? < max as u64)
    }

    pub fn key_ids(&self, conds: Vec<KeyCond>, offset: u64, limit: u32) -> Result<Page<String>> {
        self.note(|| footprint::KEYS.into());
        self.read(move |db| reads::key_ids(db, &conds, offset, limit))
    }

    pub fn aliases(&self, key_id: Option<String>, offset: u64, limit: u32) -> Result<Page<AliasRecord>> {
        self.note(|| footprint::ALIASES.into());
        self.read(move |db| reads::aliases(db, key_id.as_deref(), offset, limit))
    }

    /// A ListSecrets page: without conditions from the store's bucket counts; with them from the
    /// secret directory (`directory.rs`), or – when it has dropped descriptions and tags and a
    /// condition needs them – by a scan of the store.
    pub fn secrets(&self, conds: Vec<SecretCond>, offset: u64, limit: u32) -> Result<Page<SecretSummary>> {
        self.note(|| footprint::SECRETS.into());
        if !conds.is_empty() {
            if let Some(page) = self.directory_page(&conds, offset, limit)? {
                return Ok(page);
            }
        }
        self.read(move |db| reads::secrets(db, &conds, offset, limit))
    }

    fn directory_page(&self, conds: &[SecretCond], offset: u64, limit: u32) -> Result<Option<Page<SecretSummary>>> {
        let e = self.engine;
        if let Some(d) = e.state.read().directory() {
            return Ok(d.page(conds, offset, limit));
        }
        let _one = e.directory_build.lock();
        if let Some(d) = e.state.read().directory() {
            return Ok(d.page(conds, offset, limit));
        }
        // On an unshared store the writer is held while the snapshot is read: every commit
        // before it has been applied to the cache, and none comes while it is read. On a shared
        // store the lists applied meanwhile are kept and applied on top, by sequence number.
        let shared = e.location.is_shared();
        let _writer = (!shared).then(|| e.store());
        let ticket = e.state.write().begin_directory();
        let built = self.read(move |db| {
            let mut d = Directory::new(None, EXTRAS_BUDGET);
            let seq = reads::secret_directory(db, &mut |row| match row {
                DirectoryRow::Secret(s) => d.put(&s),
                DirectoryRow::Tag { name, key, value } => d.set_tag(name, key, Some(value)),
            })?;
            d.seq = shared.then_some(seq);
            d.shrink();
            Ok(d)
        });
        let page = built.as_ref().ok().and_then(|d| d.page(conds, offset, limit));
        let mut st = e.state.write();
        match built {
            Ok(d) => {
                tracing::debug!(secrets = d.len(), "secret directory built");
                st.end_directory(ticket, Some(d));
                Ok(page)
            }
            Err(err) => {
                st.end_directory(ticket, None);
                Err(err)
            }
        }
    }

    pub fn tag_rows(
        &self,
        rt: ResourceType,
        ids: Option<Vec<String>>,
        wanted: Vec<(String, Option<String>)>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<(String, String, String)>> {
        self.note(|| footprint::TAGS.into());
        self.read(move |db| reads::tag_rows(db, rt, ids.as_deref(), &wanted, offset, limit))
    }

    pub fn due(&self, now: i64) -> Result<Due> {
        self.note(|| footprint::KEYS.into());
        self.note(|| footprint::SECRETS.into());
        self.read(move |db| reads::due(db, now))
    }
}

/// What tests – the crate's own and its integration tests (feature `test-store`) – read past the
/// API: rows that must really be gone.
#[cfg(any(test, feature = "test-store"))]
impl Engine {
    /// Every version row of every key.
    pub fn stored_versions(&self) -> Vec<crate::model::VersionRecord> {
        self.reader
            .run(|db| {
                let sql = format!("SELECT {} FROM key_versions", crate::store::rows::VERSION_COLUMNS);
                crate::store::rows::all(db, &sql, &[], crate::store::rows::version)
            })
            .unwrap()
    }

    /// Every tag row of a resource type.
    pub fn stored_tags(&self, rt: ResourceType) -> Vec<(String, String, String)> {
        self.reader.run(move |db| reads::tag_rows(db, rt, None, &[], 0, u32::MAX)).unwrap()
    }
}

/// What the crate's own tests look at besides the API: the store's rows and the cache's entries.
#[cfg(test)]
impl Engine {
    pub(super) fn stored_key(&self, id: &str) -> Option<reads::KeyRows> {
        let id = id.to_string();
        self.reader.run(move |db| reads::key(db, &id)).unwrap()
    }

    pub(super) fn stored_secret(&self, name: &str) -> Option<reads::SecretRows> {
        let name = name.to_string();
        self.reader.run(move |db| reads::secret(db, &name)).unwrap()
    }

    pub(super) fn stored_key_count(&self) -> usize {
        self.reader
            .run(|db| crate::store::rows::first(db, "SELECT count(*) FROM keys", &[], |r| r.int(0)))
            .unwrap()
            .unwrap() as usize
    }

    /// A ListSecrets page as the store's scan finds it (what the secret directory must agree
    /// with): `(names, total)`.
    pub(super) fn stored_secret_page(&self, conds: &[SecretCond], offset: u64, limit: u32) -> (Vec<String>, u64) {
        let conds = conds.to_vec();
        let p = self.reader.run(move |db| reads::secrets(db, &conds, offset, limit)).unwrap();
        (p.items.into_iter().map(|s| s.name).collect(), p.total)
    }

    pub(super) fn cached_key(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.state.read().key(id)
    }

    pub(super) fn cached_secret(&self, name: &str) -> Option<Arc<SecretEntry>> {
        self.state.read().secret(name)
    }
}
