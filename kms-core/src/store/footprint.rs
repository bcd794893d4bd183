//! What a write's decision read and what a change list touches, as names of resources, so the
//! shared store can check at commit that nothing committed since the decision touched what it
//! read (`STORE.md`, "Writes without a round trip under the lock").
//!
//! A name is `<kind>:<id>` for one record – `k:` a key with its versions and tags, `a:` an alias,
//! `s:` a secret with its versions and tags, `t:` an import token – or `L:<listing>` for every
//! listing, filter and counter over a kind (`L:keys`, `L:aliases`, `L:secrets`, `L:tags`): a
//! change that adds, removes or alters any record of the kind touches it.

use std::collections::BTreeSet;

use super::Change;
use crate::model::ResourceType;

pub const KEYS: &str = "L:keys";
pub const ALIASES: &str = "L:aliases";
pub const SECRETS: &str = "L:secrets";
pub const TAGS: &str = "L:tags";

pub fn key(id: &str) -> String {
    format!("k:{id}")
}

pub fn alias(name: &str) -> String {
    format!("a:{name}")
}

pub fn secret(name: &str) -> String {
    format!("s:{name}")
}

pub fn token(id: &str) -> String {
    format!("t:{id}")
}

fn owner(rt: ResourceType, id: &str) -> String {
    match rt {
        ResourceType::Key => key(id),
        ResourceType::Secret => secret(id),
    }
}

/// Everything `changes` touch: never empty for a non-empty list.
pub fn touched(changes: &[Change]) -> Vec<String> {
    let mut t = BTreeSet::new();
    for c in changes {
        match c {
            Change::PutKey(k) => {
                t.insert(key(&k.key_id));
                t.insert(KEYS.into());
            }
            Change::PutVersion(v) => {
                t.insert(key(&v.key_id));
            }
            // The key's aliases and tags go with it (names this list does not spell out: a
            // decision that read one of them also read the key).
            Change::DeleteKey(id) => {
                t.extend([key(id), KEYS.into(), ALIASES.into(), TAGS.into()]);
            }
            Change::PutAlias(a) => {
                t.extend([alias(&a.name), key(&a.key_id), ALIASES.into()]);
            }
            Change::DeleteAlias(name) => {
                t.extend([alias(name), ALIASES.into()]);
            }
            Change::PutImportToken(tok) => {
                t.extend([token(&tok.token_id), key(&tok.key_id)]);
            }
            Change::DeleteImportToken(id) => {
                t.insert(token(id));
            }
            Change::PutSecret(s) => {
                t.extend([secret(&s.name), SECRETS.into()]);
            }
            Change::DeleteSecret(name) => {
                t.extend([secret(name), SECRETS.into(), TAGS.into()]);
            }
            Change::PutSecretVersion(v) => {
                t.insert(secret(&v.secret_name));
            }
            Change::DeleteSecretVersion { secret_name, .. } => {
                t.insert(secret(secret_name));
            }
            Change::PutTag { resource_type, resource_id, .. }
            | Change::DeleteTag { resource_type, resource_id, .. } => {
                let listing = match resource_type {
                    ResourceType::Key => KEYS,
                    ResourceType::Secret => SECRETS,
                };
                t.extend([owner(*resource_type, resource_id), TAGS.into(), listing.into()]);
            }
        }
    }
    t.into_iter().collect()
}

/// What one decision read, and the limits it relied on (`(counter, max)`: the counter must not
/// exceed `max` once the write is in).
#[derive(Debug, Default, Clone)]
pub struct ReadSet {
    pub names: BTreeSet<String>,
    pub limits: Vec<(&'static str, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AliasRecord, SecretVersionRecord};

    #[test]
    fn a_change_touches_its_records_and_the_listings_it_alters() {
        let alias = Change::PutAlias(AliasRecord { name: "alias/a".into(), key_id: "key-1".into(), created_at: 0 });
        assert_eq!(touched(&[alias]), ["L:aliases", "a:alias/a", "k:key-1"]);
        let stages = Change::PutSecretVersion(SecretVersionRecord {
            secret_name: "db".into(),
            version_id: "v2".into(),
            created_at: 0,
            data_type: "text".into(),
            stages: vec!["ACSCurrent".into()],
            sealed: vec![],
        });
        assert_eq!(touched(&[stages]), ["s:db"], "a stage move alters no listing");
        assert!(touched(&[Change::DeleteKey("key-1".into())]).contains(&"L:aliases".to_string()));
    }
}
