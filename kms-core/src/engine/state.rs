//! The in-memory mirror of the store. It changes only by applying the same [`Change`]s the store
//! has just committed, so it never holds anything the disk does not.

use std::collections::{BTreeMap, HashMap};

use crate::model::{AliasRecord, ImportTokenRecord, KeyRecord, VersionRecord};
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
}

impl State {
    pub fn from_snapshot(s: Snapshot) -> State {
        let mut st = State::default();
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
