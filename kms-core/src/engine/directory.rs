//! The secret directory: what ListSecrets shows and filters on, for every secret, in listing
//! order, kept in memory from the same change lists the cache applies. A page with filters
//! (name or description substrings, tag keys or values) has to count every match for its
//! `TotalCount`; in SQL that is a scan of the whole table (about 10 ms at 100,000 secrets), here
//! a pass over a contiguous buffer of names and a bit set.
//!
//! **Order.** A new secret is listed after every existing one (its `list_pos` is one more than the
//! largest), and lists are applied in commit order, so appending each secret that is new to the
//! directory keeps the store's order; deleting leaves a tombstone (compacted when half are dead).
//!
//! **Memory.** Per secret: its name (twice: the entry and the search buffer), type (shared),
//! three timestamps – about 150 bytes, 15 MB per 100,000. Descriptions and tags are held too while
//! they fit in [`EXTRAS_BUDGET`]; past it they are dropped (a description may be 8 KiB, twenty tags
//! 7 KiB), and filters on them are answered by the store instead. Built on the first filtered
//! listing (not at open, so a node that never filters never pays for it).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use memchr::memmem::Finder;

use crate::model::{ResourceType, SecretRecord};
use crate::store::reads::{Page, SecretCond, SecretSummary};
use crate::store::Change;

/// Bytes of descriptions and tags the directory holds at most.
pub(crate) const EXTRAS_BUDGET: usize = 32 << 20;

/// Ends every name in the search buffer: names cannot contain it (`A-Z a-z 0-9 _ / + = . @ -`),
/// so a match never spans two names.
const END: u8 = 0;

/// `Listed::secret_type` of a deleted entry.
const DEAD: u32 = u32::MAX;

/// `Listed::planned_delete` of a secret not scheduled for deletion.
const NOT_PLANNED: i64 = i64::MIN;

/// One secret: 40 bytes, its name in the search buffer.
#[derive(Clone, Copy)]
struct Listed {
    /// Where its name starts in `names` (it ends at the next entry's start, less the `END`).
    start: usize,
    /// Index into `types`, or [`DEAD`].
    secret_type: u32,
    created_at: i64,
    updated_at: i64,
    planned_delete: i64,
}

/// What only some secrets have, kept apart so that the many without cost nothing.
#[derive(Default)]
struct Extras {
    description: Box<str>,
    /// By tag key.
    tags: Vec<(Box<str>, Box<str>)>,
}

impl Extras {
    fn bytes(&self) -> usize {
        self.description.len() + self.tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

pub(crate) struct Directory {
    /// In listing order; deleted ones stay (as [`DEAD`]) until the next compaction.
    entries: Vec<Listed>,
    /// Every entry's name followed by [`END`], in entry order (dead ones' too).
    names: Vec<u8>,
    /// Live entries by name (the table holds indices into `entries`; names hash by `hasher`).
    slots: HashTable<usize>,
    hasher: RandomState,
    live: usize,
    types: Vec<Box<str>>,
    /// Descriptions and tags by entry index (only entries that have one).
    extras: HashMap<usize, Extras>,
    /// Their bytes; `None` once they outgrew `budget` and were dropped.
    extra_bytes: Option<usize>,
    budget: usize,
    /// On a shared store, the last change list it includes (`None`: every list applied to the
    /// cache is new to it).
    pub seq: Option<u64>,
}

impl Directory {
    pub fn new(seq: Option<u64>, budget: usize) -> Directory {
        Directory {
            entries: Vec::new(),
            names: Vec::new(),
            slots: HashTable::new(),
            hasher: RandomState::new(),
            live: 0,
            types: Vec::new(),
            extras: HashMap::new(),
            extra_bytes: Some(0),
            budget,
            seq,
        }
    }

    /// Whether it can answer filters on descriptions and tags.
    #[cfg(test)]
    pub fn has_extras(&self) -> bool {
        self.extra_bytes.is_some()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Gives back what building grew but does not need.
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        self.names.shrink_to_fit();
        self.slots.shrink_to_fit(|&i| hash_of(&self.hasher, name_in(&self.entries, &self.names, i)));
    }

    /// Applies one change list at `seq` (`None` on an unshared store), unless it has it already
    /// (`false`).
    pub fn apply_list(&mut self, seq: Option<u64>, changes: &[Change]) -> bool {
        if let (Some(have), Some(s)) = (self.seq, seq) {
            if s <= have {
                return false;
            }
            self.seq = Some(s);
        }
        for c in changes {
            self.apply(c);
        }
        true
    }

    fn apply(&mut self, c: &Change) {
        match c {
            Change::PutSecret(s) => self.put(s),
            Change::DeleteSecret(name) => self.delete(name),
            Change::PutTag { resource_type: ResourceType::Secret, resource_id, key, value } => {
                self.set_tag(resource_id, key, Some(value))
            }
            Change::DeleteTag { resource_type: ResourceType::Secret, resource_id, key } => {
                self.set_tag(resource_id, key, None)
            }
            _ => {}
        }
    }

    /// Whether a change can change the directory (the others need not be kept for it).
    pub fn concerns(c: &Change) -> bool {
        matches!(
            c,
            Change::PutSecret(_)
                | Change::DeleteSecret(_)
                | Change::PutTag { resource_type: ResourceType::Secret, .. }
                | Change::DeleteTag { resource_type: ResourceType::Secret, .. }
        )
    }

    fn find(&self, name: &str) -> Option<usize> {
        let h = hash_of(&self.hasher, name.as_bytes());
        self.slots.find(h, |&i| name_in(&self.entries, &self.names, i) == name.as_bytes()).copied()
    }

    fn type_index(&mut self, t: &str) -> u32 {
        match self.types.iter().position(|x| &**x == t) {
            Some(i) => i as u32,
            None => {
                self.types.push(t.into());
                (self.types.len() - 1) as u32
            }
        }
    }

    /// Inserts a new secret at the end, or updates a listed one in place.
    pub fn put(&mut self, s: &SecretRecord) {
        let secret_type = self.type_index(&s.secret_type);
        let i = match self.find(&s.name) {
            Some(i) => i,
            None => {
                let i = self.entries.len();
                self.entries.push(Listed {
                    start: self.names.len(),
                    secret_type,
                    created_at: 0,
                    updated_at: 0,
                    planned_delete: 0,
                });
                self.names.extend_from_slice(s.name.as_bytes());
                self.names.push(END);
                let h = hash_of(&self.hasher, s.name.as_bytes());
                let (entries, names, hasher) = (&self.entries, &self.names, &self.hasher);
                self.slots.insert_unique(h, i, |&j| hash_of(hasher, name_in(entries, names, j)));
                self.live += 1;
                i
            }
        };
        self.entries[i] = Listed {
            start: self.entries[i].start,
            secret_type,
            created_at: s.created_at,
            updated_at: s.updated_at,
            planned_delete: s.planned_delete.unwrap_or(NOT_PLANNED),
        };
        self.with_extras(i, |x| x.description = s.description.as_str().into());
    }

    fn delete(&mut self, name: &str) {
        let Some(i) = self.find(name) else { return };
        let h = hash_of(&self.hasher, name.as_bytes());
        if let Ok(slot) = self.slots.find_entry(h, |&j| j == i) {
            slot.remove();
        }
        self.entries[i].secret_type = DEAD;
        if let (Some(x), Some(n)) = (self.extras.remove(&i), &mut self.extra_bytes) {
            *n -= x.bytes();
        }
        self.live -= 1;
        if self.entries.len() > 1024 && self.live < self.entries.len() / 2 {
            self.compact();
        }
    }

    /// Sets (`Some`) or removes a tag of a listed secret.
    pub fn set_tag(&mut self, name: &str, key: &str, value: Option<&str>) {
        let Some(i) = self.find(name) else { return };
        self.with_extras(i, |x| {
            let at = x.tags.binary_search_by(|(k, _)| (**k).cmp(key));
            match (at, value) {
                (Ok(j), Some(v)) => x.tags[j].1 = v.into(),
                (Err(j), Some(v)) => x.tags.insert(j, (key.into(), v.into())),
                (Ok(j), None) => drop(x.tags.remove(j)),
                (Err(_), None) => {}
            }
        });
    }

    /// Changes entry `i`'s description or tags, keeping the count of their bytes and the budget
    /// (past it, every description and tag is dropped).
    fn with_extras(&mut self, i: usize, change: impl FnOnce(&mut Extras)) {
        let Some(total) = self.extra_bytes else { return };
        let x = self.extras.entry(i).or_default();
        let before = x.bytes();
        change(x);
        let after = x.bytes();
        if x.description.is_empty() && x.tags.is_empty() {
            self.extras.remove(&i);
        }
        let total = total - before + after;
        if total > self.budget {
            self.extra_bytes = None;
            self.extras = HashMap::new();
            tracing::info!(
                budget_mib = self.budget >> 20,
                "secret descriptions and tags outgrew the directory's budget; filters on them now scan the store"
            );
        } else {
            self.extra_bytes = Some(total);
        }
    }

    /// Drops the dead entries: the search buffer and the table are rebuilt, order kept.
    fn compact(&mut self) {
        let old_entries = std::mem::take(&mut self.entries);
        let old_names = std::mem::take(&mut self.names);
        let mut old_extras = std::mem::take(&mut self.extras);
        self.slots.clear();
        for (i, e) in old_entries.iter().enumerate().filter(|(_, e)| e.secret_type != DEAD) {
            let name = name_in(&old_entries, &old_names, i);
            let j = self.entries.len();
            self.entries.push(Listed { start: self.names.len(), ..*e });
            self.names.extend_from_slice(name);
            self.names.push(END);
            let (entries, names, hasher) = (&self.entries, &self.names, &self.hasher);
            self.slots.insert_unique(hash_of(hasher, name), j, |&k| hash_of(hasher, name_in(entries, names, k)));
            if let Some(x) = old_extras.remove(&i) {
                self.extras.insert(j, x);
            }
        }
    }

    fn summary(&self, i: usize) -> SecretSummary {
        let e = &self.entries[i];
        SecretSummary {
            name: String::from_utf8_lossy(name_in(&self.entries, &self.names, i)).into_owned(),
            secret_type: self.types[e.secret_type as usize].to_string(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            planned_delete: (e.planned_delete != NOT_PLANNED).then_some(e.planned_delete),
        }
    }

    /// The page `[offset, offset + limit)` of the secrets matching every condition (one of each
    /// condition's values), and how many match; `None` if a condition needs the dropped extras.
    pub fn page(&self, conds: &[SecretCond], offset: u64, limit: u32) -> Option<Page<SecretSummary>> {
        let mut set = Bits::new(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if e.secret_type != DEAD {
                set.insert(i);
            }
        }
        // Names first: one pass over the buffer each, and it narrows what the others look at.
        let mut conds: Vec<&SecretCond> = conds.iter().collect();
        conds.sort_by_key(|c| !matches!(c, SecretCond::NameContains(_)));
        for c in conds {
            match c {
                SecretCond::NameContains(values) => set.and(&self.names_containing(values)),
                SecretCond::DescriptionContains(values) => {
                    self.extra_bytes?;
                    let finders: Vec<Finder<'_>> = values.iter().map(|v| Finder::new(v.as_bytes())).collect();
                    self.keep(&mut set, |x| finders.iter().any(|f| f.find(x.description.as_bytes()).is_some()));
                }
                SecretCond::TagKey(values) => {
                    self.extra_bytes?;
                    self.keep(&mut set, |x| x.tags.iter().any(|(k, _)| values.iter().any(|v| **k == **v)));
                }
                SecretCond::TagValue(values) => {
                    self.extra_bytes?;
                    self.keep(&mut set, |x| x.tags.iter().any(|(_, t)| values.iter().any(|v| **t == **v)));
                }
            }
        }
        let total = set.count();
        let items = set
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit as usize)
            .map(|i| self.summary(i))
            .collect();
        Some(Page { items, total })
    }

    /// Entries (live or not) whose name contains one of `values`.
    fn names_containing(&self, values: &[String]) -> Bits {
        let mut found = Bits::new(self.entries.len());
        for v in values {
            if v.is_empty() {
                // Every string contains the empty one (as `instr`/`strpos` say).
                found.fill();
                return found;
            }
            if v.as_bytes().contains(&END) {
                continue;
            }
            let mut from = 0usize;
            for at in memchr::memmem::find_iter(&self.names, v.as_bytes()) {
                if at < from {
                    continue;
                }
                // The entry whose name holds the match; the next match worth looking at starts
                // after that name.
                let i = self.entries.partition_point(|e| e.start <= at) - 1;
                found.insert(i);
                from = self.entries.get(i + 1).map_or(usize::MAX, |e| e.start);
            }
        }
        found
    }

    /// Keeps in `set` the entries whose extras pass `test` (an entry without any has an empty
    /// description and no tags).
    fn keep(&self, set: &mut Bits, test: impl Fn(&Extras) -> bool) {
        let none = Extras::default();
        for i in set.iter().collect::<Vec<_>>() {
            if !test(self.extras.get(&i).unwrap_or(&none)) {
                set.remove(i);
            }
        }
    }
}

/// Entry `i`'s name in the search buffer.
fn name_in<'a>(entries: &[Listed], names: &'a [u8], i: usize) -> &'a [u8] {
    let end = entries.get(i + 1).map_or(names.len(), |e| e.start);
    &names[entries[i].start..end - 1]
}

fn hash_of(h: &RandomState, name: &[u8]) -> u64 {
    h.hash_one(name)
}

/// A set of entry indices.
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn new(len: usize) -> Bits {
        Bits { words: vec![0; len.div_ceil(64)], len }
    }

    fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    fn fill(&mut self) {
        self.words.iter_mut().for_each(|w| *w = u64::MAX);
        if !self.len.is_multiple_of(64) {
            if let Some(last) = self.words.last_mut() {
                *last = (1 << (self.len % 64)) - 1;
            }
        }
    }

    fn and(&mut self, other: &Bits) {
        self.words.iter_mut().zip(&other.words).for_each(|(a, b)| *a &= b);
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, description: &str) -> SecretRecord {
        SecretRecord {
            name: name.into(),
            secret_type: "Generic".into(),
            description: description.into(),
            encryption_key_id: String::new(),
            created_at: 1,
            updated_at: 1,
            planned_delete: None,
            extended_config: String::new(),
        }
    }

    fn names(d: &Directory, conds: &[SecretCond], offset: u64, limit: u32) -> Option<(Vec<String>, u64)> {
        d.page(conds, offset, limit).map(|p| (p.items.into_iter().map(|s| s.name).collect(), p.total))
    }

    fn name(v: &[&str]) -> SecretCond {
        SecretCond::NameContains(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn matches_stay_inside_one_name_and_pages_keep_list_order() {
        let mut d = Directory::new(None, EXTRAS_BUDGET);
        for n in ["ab", "cab", "b", "abab", "zz"] {
            d.put(&secret(n, ""));
        }
        // "ba" occurs across "ab|cab" only if names ran together; only "abab" holds it.
        assert_eq!(names(&d, &[name(&["ba"])], 0, 10), Some((vec!["abab".into()], 1)));
        assert_eq!(names(&d, &[name(&["ab"])], 0, 10), Some((vec!["ab".into(), "cab".into(), "abab".into()], 3)));
        assert_eq!(names(&d, &[name(&["ab"])], 1, 1), Some((vec!["cab".into()], 3)));
        assert_eq!(names(&d, &[name(&["z", "b"])], 0, 10).unwrap().1, 5);
        assert_eq!(names(&d, &[name(&[""])], 0, 10).unwrap().1, 5, "the empty string is in every name");
        assert_eq!(names(&d, &[name(&["b\0c"])], 0, 10).unwrap().1, 0);
        // A deleted name no longer matches; a new one with the same name lists last.
        d.apply(&Change::DeleteSecret("cab".into()));
        d.put(&secret("cab", ""));
        assert_eq!(names(&d, &[name(&["ab"])], 0, 10), Some((vec!["ab".into(), "abab".into(), "cab".into()], 3)));
    }

    #[test]
    fn compaction_keeps_order_and_lookups() {
        let mut d = Directory::new(None, EXTRAS_BUDGET);
        for i in 0..3000 {
            d.put(&secret(&format!("s{i:04}"), ""));
        }
        for i in (0..3000).filter(|i| i % 3 != 0) {
            d.apply(&Change::DeleteSecret(format!("s{i:04}")));
        }
        assert_eq!(d.len(), 1000);
        assert!(d.entries.len() < 3000, "compacted");
        assert!(d.find("s0001").is_none() && d.find("s0999").is_some());
        d.set_tag("s0999", "k", Some("v"));
        let tagged = names(&d, &[SecretCond::TagKey(vec!["k".into()])], 0, 10).unwrap();
        assert_eq!(tagged, (vec!["s0999".into()], 1));
        let (first, total) = names(&d, &[name(&["s"])], 998, 5).unwrap();
        assert_eq!((first, total), (vec!["s2994".into(), "s2997".into()], 1000));
    }

    #[test]
    fn lists_its_snapshot_already_has_are_skipped_by_sequence() {
        let mut d = Directory::new(Some(10), EXTRAS_BUDGET);
        d.apply_list(Some(9), &[Change::PutSecret(secret("old", ""))]);
        d.apply_list(Some(11), &[Change::PutSecret(secret("new", ""))]);
        d.apply_list(Some(11), &[Change::DeleteSecret("new".into())]);
        assert_eq!(names(&d, &[name(&[""])], 0, 10), Some((vec!["new".into()], 1)));
        assert_eq!(d.seq, Some(11));
    }

    #[test]
    fn descriptions_and_tags_past_the_budget_are_dropped_and_their_filters_declined() {
        let mut d = Directory::new(None, 100);
        d.put(&secret("a", &"x".repeat(60)));
        d.set_tag("a", "team", Some("ops"));
        let desc = [SecretCond::DescriptionContains(vec!["x".into()])];
        assert_eq!(names(&d, &desc, 0, 10), Some((vec!["a".into()], 1)));
        d.put(&secret("b", &"y".repeat(60)));
        assert!(!d.has_extras());
        assert_eq!(names(&d, &desc, 0, 10), None, "the caller asks the store");
        assert_eq!(names(&d, &[SecretCond::TagKey(vec!["team".into()])], 0, 10), None);
        assert_eq!(names(&d, &[name(&["b"])], 0, 10), Some((vec!["b".into()], 1)), "names are always held");
    }
}
