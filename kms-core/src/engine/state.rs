//! The in-memory mirror of the store. It changes only by applying the same [`Change`]s the store
//! has committed (this node's, or on a shared store other nodes' read from the change feed), so it
//! never holds anything the store does not.

use std::collections::{BTreeMap, HashMap};

use crate::model::{
    AliasRecord, ImportTokenRecord, KeyRecord, ResourceType, SecretRecord, SecretVersionRecord, VersionRecord,
};
use crate::store::{Change, Snapshot};

#[derive(Debug, Default)]
pub(crate) struct State {
    pub keys: HashMap<String, KeyRecord>,
    pub versions: HashMap<String, VersionRecord>,
    /// Version ids of each key, oldest first.
    pub key_versions: HashMap<String, Vec<String>>,
    /// Sorted by name.
    pub aliases: BTreeMap<String, AliasRecord>,
    pub import_tokens: HashMap<String, ImportTokenRecord>,
    /// Sorted by name.
    pub secrets: BTreeMap<String, SecretRecord>,
    /// Each secret's versions, oldest first.
    pub secret_versions: HashMap<String, Vec<SecretVersionRecord>>,
    /// Tags by resource, sorted by tag key.
    pub tags: BTreeMap<(ResourceType, String), BTreeMap<String, String>>,
    /// On a shared store: the sequence number of the last change list this mirror includes.
    pub applied_seq: u64,
}

impl State {
    pub fn from_snapshot(s: Snapshot, applied_seq: u64) -> State {
        let mut st = State { applied_seq, ..State::default() };
        for k in s.keys {
            st.keys.insert(k.key_id.clone(), k);
        }
        for v in s.versions {
            st.apply(&Change::PutVersion(v));
        }
        for a in s.aliases {
            st.aliases.insert(a.name.clone(), a);
        }
        for t in s.import_tokens {
            st.import_tokens.insert(t.token_id.clone(), t);
        }
        for x in s.secrets {
            st.secrets.insert(x.name.clone(), x);
        }
        for v in s.secret_versions {
            st.apply(&Change::PutSecretVersion(v));
        }
        for (rt, id, k, v) in s.tags {
            st.tags.entry((rt, id)).or_default().insert(k, v);
        }
        st
    }

    pub fn apply(&mut self, c: &Change) {
        match c {
            Change::PutKey(k) => {
                self.keys.insert(k.key_id.clone(), k.clone());
            }
            Change::PutVersion(v) => {
                if self.versions.insert(v.version_id.clone(), v.clone()).is_none() {
                    self.key_versions.entry(v.key_id.clone()).or_default().push(v.version_id.clone());
                }
            }
            Change::DeleteKey(id) => {
                self.keys.remove(id);
                for v in self.key_versions.remove(id).unwrap_or_default() {
                    self.versions.remove(&v);
                }
                self.aliases.retain(|_, a| &a.key_id != id);
                self.import_tokens.retain(|_, t| &t.key_id != id);
                self.tags.remove(&(ResourceType::Key, id.clone()));
            }
            Change::PutAlias(a) => {
                self.aliases.insert(a.name.clone(), a.clone());
            }
            Change::DeleteAlias(name) => {
                self.aliases.remove(name);
            }
            Change::PutImportToken(t) => {
                self.import_tokens.insert(t.token_id.clone(), t.clone());
            }
            Change::DeleteImportToken(id) => {
                self.import_tokens.remove(id);
            }
            Change::PutSecret(x) => {
                self.secrets.insert(x.name.clone(), x.clone());
            }
            Change::DeleteSecret(name) => {
                self.secrets.remove(name);
                self.secret_versions.remove(name);
                self.tags.remove(&(ResourceType::Secret, name.clone()));
            }
            Change::PutSecretVersion(v) => {
                let list = self.secret_versions.entry(v.secret_name.clone()).or_default();
                match list.iter_mut().find(|x| x.version_id == v.version_id) {
                    Some(existing) => existing.stages = v.stages.clone(),
                    None => list.push(v.clone()),
                }
            }
            Change::DeleteSecretVersion { secret_name, version_id } => {
                if let Some(list) = self.secret_versions.get_mut(secret_name) {
                    list.retain(|v| &v.version_id != version_id);
                }
            }
            Change::PutTag { resource_type, resource_id, key, value } => {
                self.tags.entry((*resource_type, resource_id.clone())).or_default().insert(key.clone(), value.clone());
            }
            Change::DeleteTag { resource_type, resource_id, key } => {
                let r = (*resource_type, resource_id.clone());
                if let Some(m) = self.tags.get_mut(&r) {
                    m.remove(key);
                    if m.is_empty() {
                        self.tags.remove(&r);
                    }
                }
            }
        }
    }

    pub fn versions_of(&self, key_id: &str) -> &[String] {
        self.key_versions.get(key_id).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn aliases_of<'a>(&'a self, key_id: &'a str) -> impl Iterator<Item = &'a AliasRecord> + 'a {
        self.aliases.values().filter(move |a| a.key_id == key_id)
    }

    /// Keys in listing order: oldest first, ties by id.
    pub fn keys_in_order(&self) -> Vec<&KeyRecord> {
        let mut v: Vec<&KeyRecord> = self.keys.values().collect();
        v.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        v
    }
}
