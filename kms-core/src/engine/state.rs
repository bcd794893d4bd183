//! The engine's cache of records: a bounded set of keys (each with its versions and tags),
//! aliases and secrets (with versions and tags), filled on demand from the store and changed only
//! by applying the same [`Change`]s the store committed (this node's, or on a shared store other
//! nodes' read from the change feed). Listings, counts and everything else that spans many
//! records are read from the store (`view.rs`), so memory does not grow with the store – except
//! the secret directory (`directory.rs`: ~70 bytes a secret, built by the first filtered
//! ListSecrets), which the same changes keep.
//!
//! **Filling without going stale.** A miss reads the store outside any lock. A change to the same
//! record may be applied while that read is in flight, and the read may have seen the store
//! before it: inserting the read would then undo the change in the cache until the record
//! changes again. So a fill registers first ([`State::begin_fill`]); applying a change to a
//! record marks its pending fills stale, and a stale fill's result is used for its own request
//! but not cached ([`State::end_fill`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::cache::CipherCache;
use super::directory::Directory;
use crate::model::{KeyRecord, ResourceType, SecretRecord, SecretVersionRecord, VersionRecord};
use crate::store::reads::{KeyRows, SecretRows};
use crate::store::Change;

/// A key with what every operation on it needs: its versions (oldest first) and tags (policy
/// conditions read them).
#[derive(Debug, Clone)]
pub(crate) struct KeyEntry {
    pub key: KeyRecord,
    pub versions: Vec<VersionRecord>,
    pub tags: BTreeMap<String, String>,
}

impl Deref for KeyEntry {
    type Target = KeyRecord;
    fn deref(&self) -> &KeyRecord {
        &self.key
    }
}

impl KeyEntry {
    pub fn from_rows(r: KeyRows) -> KeyEntry {
        KeyEntry { key: r.key, versions: r.versions, tags: r.tags.into_iter().collect() }
    }

    pub fn version(&self, id: &str) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.version_id == id)
    }
}

/// A secret with its versions (oldest first) and tags.
#[derive(Debug, Clone)]
pub(crate) struct SecretEntry {
    pub secret: SecretRecord,
    pub versions: Vec<SecretVersionRecord>,
    pub tags: BTreeMap<String, String>,
}

impl Deref for SecretEntry {
    type Target = SecretRecord;
    fn deref(&self) -> &SecretRecord {
        &self.secret
    }
}

impl SecretEntry {
    pub fn from_rows(r: SecretRows) -> SecretEntry {
        SecretEntry { secret: r.secret, versions: r.versions, tags: r.tags.into_iter().collect() }
    }
}

/// What a cached entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Key,
    Alias,
    Secret,
}

struct Slot<T> {
    value: T,
    /// Set on every hit; the clock hand gives a used entry a second chance.
    used: AtomicBool,
}

/// A map of at most `capacity` entries, evicting by the clock algorithm (an approximation of
/// least-recently-used whose hits need only a shared lock).
pub(crate) struct Bounded<T> {
    map: HashMap<String, Slot<T>>,
    /// The clock: names in insertion order; a name whose entry is gone is skipped.
    ring: VecDeque<String>,
    capacity: usize,
}

impl<T: Clone> Bounded<T> {
    fn new(capacity: usize) -> Self {
        Bounded { map: HashMap::new(), ring: VecDeque::new(), capacity: capacity.max(1) }
    }

    fn get(&self, name: &str) -> Option<T> {
        let slot = self.map.get(name)?;
        slot.used.store(true, Ordering::Relaxed);
        Some(slot.value.clone())
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        self.map.get_mut(name).map(|s| &mut s.value)
    }

    fn insert(&mut self, name: String, value: T) {
        if let Some(slot) = self.map.get_mut(&name) {
            slot.value = value;
            return;
        }
        while self.map.len() >= self.capacity {
            self.evict_one();
        }
        self.ring.push_back(name.clone());
        self.map.insert(name, Slot { value, used: AtomicBool::new(false) });
        if self.ring.len() > 2 * self.capacity {
            // Names of removed entries pile up in the ring: start it again from the live ones.
            self.ring = self.map.keys().cloned().collect();
        }
    }

    fn evict_one(&mut self) {
        while let Some(name) = self.ring.pop_front() {
            match self.map.get(&name) {
                None => continue,
                Some(s) if s.used.swap(false, Ordering::Relaxed) => self.ring.push_back(name),
                Some(_) => {
                    self.map.remove(&name);
                    return;
                }
            }
        }
        // The ring lost track (cannot happen): any entry will do.
        if let Some(name) = self.map.keys().next().cloned() {
            self.map.remove(&name);
        }
    }

    fn remove(&mut self, name: &str) -> Option<T> {
        self.map.remove(name).map(|s| s.value)
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.map.retain(|_, s| keep(&s.value));
    }

    fn clear(&mut self) {
        self.map.clear();
        self.ring.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

struct Fill {
    ticket: u64,
    kind: Kind,
    name: String,
    stale: bool,
}

/// The secret directory's state (`directory.rs`).
enum Listing {
    /// Not built (or forgotten with the cache): built by the next filtered listing.
    Absent,
    /// Being read from the store in a snapshot (build `ticket`); the lists applied meanwhile
    /// that concern it wait here to be applied on top of the snapshot.
    Building {
        ticket: u64,
        lists: Vec<(Option<u64>, Vec<Change>)>,
    },
    Ready(Directory),
}

pub(crate) struct State {
    keys: Bounded<Arc<KeyEntry>>,
    /// Alias name → key id.
    aliases: Bounded<String>,
    secrets: Bounded<Arc<SecretEntry>>,
    fills: Vec<Fill>,
    next_ticket: u64,
    listing: Listing,
    /// How many change lists the last directory build applied on top of its snapshot (lists its
    /// snapshot already had are not counted).
    pub directory_catch_up: usize,
    /// On a shared store: the sequence number of the last change list applied.
    pub applied_seq: u64,
}

impl State {
    /// An empty cache holding at most `capacity` keys, as many aliases and as many secrets.
    pub fn new(capacity: usize, applied_seq: u64) -> State {
        State {
            keys: Bounded::new(capacity),
            aliases: Bounded::new(capacity),
            secrets: Bounded::new(capacity),
            fills: Vec::new(),
            next_ticket: 0,
            listing: Listing::Absent,
            directory_catch_up: 0,
            applied_seq,
        }
    }

    pub fn key(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.keys.get(id)
    }

    pub fn alias(&self, name: &str) -> Option<String> {
        self.aliases.get(name)
    }

    pub fn secret(&self, name: &str) -> Option<Arc<SecretEntry>> {
        self.secrets.get(name)
    }

    /// Registers a read of `name` from the store about to start.
    pub fn begin_fill(&mut self, kind: Kind, name: &str) -> u64 {
        self.next_ticket += 1;
        self.fills.push(Fill { ticket: self.next_ticket, kind, name: name.to_string(), stale: false });
        self.next_ticket
    }

    /// Ends a read; `true` if no change to its record was applied meanwhile (it may be cached).
    pub fn end_fill(&mut self, ticket: u64) -> bool {
        match self.fills.iter().position(|f| f.ticket == ticket) {
            Some(i) => !self.fills.swap_remove(i).stale,
            None => false,
        }
    }

    pub fn put_key(&mut self, e: Arc<KeyEntry>) {
        self.keys.insert(e.key.key_id.clone(), e);
    }

    pub fn put_alias(&mut self, name: &str, key_id: &str) {
        self.aliases.insert(name.to_string(), key_id.to_string());
    }

    pub fn put_secret(&mut self, e: Arc<SecretEntry>) {
        self.secrets.insert(e.secret.name.clone(), e);
    }

    fn touched(&mut self, kind: Kind, name: &str) {
        for f in self.fills.iter_mut().filter(|f| f.kind == kind && f.name == name) {
            f.stale = true;
        }
    }

    /// Forgets everything (the feed lost its place): what is needed is read again.
    pub fn reset(&mut self, seq: u64, ciphers: &CipherCache) {
        self.keys.clear();
        self.aliases.clear();
        self.secrets.clear();
        for f in &mut self.fills {
            f.stale = true;
        }
        self.listing = Listing::Absent;
        ciphers.clear();
        self.applied_seq = seq;
    }

    /// The secret directory, if built.
    pub fn directory(&self) -> Option<&Directory> {
        match &self.listing {
            Listing::Ready(d) => Some(d),
            _ => None,
        }
    }

    /// Forgets the directory (as a reset would), so the next filtered listing builds it again.
    #[cfg(test)]
    pub fn forget_directory(&mut self) {
        self.listing = Listing::Absent;
    }

    /// Registers a build of the directory about to read the store.
    pub fn begin_directory(&mut self) -> u64 {
        self.next_ticket += 1;
        self.listing = Listing::Building { ticket: self.next_ticket, lists: Vec::new() };
        self.next_ticket
    }

    /// Installs a directory read from the store (`None`: the read failed), bringing it up to the
    /// cache's position with the lists applied while it was read (those its snapshot already has
    /// are skipped by their sequence numbers). A build overtaken by a reset is dropped.
    pub fn end_directory(&mut self, ticket: u64, built: Option<Directory>) {
        match std::mem::replace(&mut self.listing, Listing::Absent) {
            Listing::Building { ticket: t, lists } if t == ticket => {
                if let Some(mut d) = built {
                    self.directory_catch_up = lists.iter().filter(|(seq, changes)| d.apply_list(*seq, changes)).count();
                    self.listing = Listing::Ready(d);
                }
            }
            other => self.listing = other,
        }
    }

    /// Applies one committed change list (at `seq` on a shared store) to the cache and the
    /// secret directory.
    pub fn apply_list(&mut self, seq: Option<u64>, changes: &[Change], ciphers: &CipherCache) {
        for c in changes {
            self.apply(c, ciphers);
        }
        match &mut self.listing {
            Listing::Absent => {}
            Listing::Ready(d) => {
                d.apply_list(seq, changes);
            }
            Listing::Building { lists, .. } => {
                let kept: Vec<Change> = changes.iter().filter(|c| Directory::concerns(c)).cloned().collect();
                if !kept.is_empty() {
                    lists.push((seq, kept));
                }
            }
        }
    }

    /// Applies one committed change to whatever of it is cached, dropping unsealed material it
    /// replaces or deletes (the cipher cache's `Arc` zeroizes it when the last user lets go).
    fn apply(&mut self, c: &Change, ciphers: &CipherCache) {
        match c {
            Change::PutKey(k) => {
                self.touched(Kind::Key, &k.key_id);
                if let Some(e) = self.keys.get_mut(&k.key_id) {
                    Arc::make_mut(e).key = k.clone();
                }
            }
            Change::PutVersion(v) => {
                self.touched(Kind::Key, &v.key_id);
                ciphers.remove(&v.version_id);
                if let Some(e) = self.keys.get_mut(&v.key_id) {
                    let e = Arc::make_mut(e);
                    match e.versions.iter_mut().find(|x| x.version_id == v.version_id) {
                        Some(x) => x.sealed = v.sealed.clone(),
                        None => e.versions.push(v.clone()),
                    }
                }
            }
            Change::DeleteKey(id) => {
                self.touched(Kind::Key, id);
                self.keys.remove(id);
                ciphers.remove_key(id);
                // Its aliases went with it; which names pointed at it is known only for cached
                // ones, so reads of any alias in flight are not cached.
                self.aliases.retain(|k| k != id);
                for f in self.fills.iter_mut().filter(|f| f.kind == Kind::Alias) {
                    f.stale = true;
                }
            }
            Change::PutAlias(a) => {
                self.touched(Kind::Alias, &a.name);
                self.aliases.insert(a.name.clone(), a.key_id.clone());
            }
            Change::DeleteAlias(name) => {
                self.touched(Kind::Alias, name);
                self.aliases.remove(name);
            }
            Change::PutImportToken(_) | Change::DeleteImportToken(_) => {}
            Change::PutSecret(x) => {
                self.touched(Kind::Secret, &x.name);
                if let Some(e) = self.secrets.get_mut(&x.name) {
                    Arc::make_mut(e).secret = x.clone();
                }
            }
            Change::DeleteSecret(name) => {
                self.touched(Kind::Secret, name);
                self.secrets.remove(name);
            }
            Change::PutSecretVersion(v) => {
                self.touched(Kind::Secret, &v.secret_name);
                if let Some(e) = self.secrets.get_mut(&v.secret_name) {
                    let e = Arc::make_mut(e);
                    match e.versions.iter_mut().find(|x| x.version_id == v.version_id) {
                        Some(existing) => existing.stages = v.stages.clone(),
                        None => e.versions.push(v.clone()),
                    }
                }
            }
            Change::DeleteSecretVersion { secret_name, version_id } => {
                self.touched(Kind::Secret, secret_name);
                if let Some(e) = self.secrets.get_mut(secret_name) {
                    Arc::make_mut(e).versions.retain(|v| &v.version_id != version_id);
                }
            }
            Change::PutTag { resource_type, resource_id, key, value } => {
                if let Some(tags) = self.tags_mut(*resource_type, resource_id) {
                    tags.insert(key.clone(), value.clone());
                }
            }
            Change::DeleteTag { resource_type, resource_id, key } => {
                if let Some(tags) = self.tags_mut(*resource_type, resource_id) {
                    tags.remove(key);
                }
            }
        }
    }

    fn tags_mut(&mut self, rt: ResourceType, id: &str) -> Option<&mut BTreeMap<String, String>> {
        match rt {
            ResourceType::Key => {
                self.touched(Kind::Key, id);
                self.keys.get_mut(id).map(|e| &mut Arc::make_mut(e).tags)
            }
            ResourceType::Secret => {
                self.touched(Kind::Secret, id);
                self.secrets.get_mut(id).map(|e| &mut Arc::make_mut(e).tags)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_keeps_what_is_used_and_stays_bounded() {
        let mut b: Bounded<u32> = Bounded::new(3);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            b.insert(n.to_string(), i as u32);
        }
        assert_eq!(b.get("a"), Some(0));
        b.insert("d".into(), 3);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get("a"), Some(0), "a was used: it got a second chance");
        assert_eq!(b.get("b"), None, "b was the oldest unused");
        for i in 0..100 {
            b.insert(format!("x{i}"), i);
            assert!(b.len() <= 3 && b.ring.len() <= 6);
        }
    }

    #[test]
    fn a_change_during_a_fill_keeps_the_fill_out_of_the_cache() {
        let ciphers = CipherCache::new(4);
        let mut st = State::new(10, 0);
        let t = st.begin_fill(Kind::Alias, "alias/a");
        st.apply(&Change::DeleteAlias("alias/a".into()), &ciphers);
        assert!(!st.end_fill(t), "the read may predate the delete");
        let t = st.begin_fill(Kind::Alias, "alias/b");
        st.apply(&Change::DeleteAlias("alias/a".into()), &ciphers);
        assert!(st.end_fill(t), "another record's change does not matter");
        let t = st.begin_fill(Kind::Secret, "s");
        st.reset(5, &ciphers);
        assert!(!st.end_fill(t), "a reset makes every read in flight stale");
        assert_eq!(st.applied_seq, 5);
    }
}
