//! The durable store. The engine describes each mutation as a list of [`Change`]s; the store
//! commits the list in one transaction, and only then does the engine apply the same list to its
//! in-memory mirror: a success reply always means the change is durable.
//!
//! Two backends (spec: `STORE.md`):
//! - [`sqlite`], the embedded default: one file, one owning process.
//! - PostgreSQL ([`PgStore`] writes, [`postgres`] follows), shared by many nodes. Writes are serialised by one advisory lock; each commits
//!   its change list as a sequence-numbered row of `kms_changes` in the same transaction, which
//!   the other nodes follow ([`PgFeed`]) to keep their mirrors coherent.

pub mod codec;
pub mod footprint;
mod location;
mod pg_schema;
mod pg_store;
mod pg_tls;
pub mod postgres;
pub mod reader;
pub mod reads;
pub mod rows;
pub mod snapshot;
pub mod sqlite;
mod sqlite_schema;
pub(crate) mod statements;
#[cfg(test)]
mod tests_listing;

pub use location::{redact as redact_url, StoreLocation};
pub use pg_store::{Decided, Durability, Early, PgStore};
pub use postgres::PgFeed;
pub use reader::Reader;
pub use sqlite::SqliteStore;

use reads::Counts;

use crate::model::{
    AliasRecord, ImportTokenRecord, KeyRecord, ResourceType, SecretRecord, SecretVersionRecord, VersionRecord,
};

/// One durable mutation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    /// Inserts or replaces a key's metadata (versions and aliases are kept).
    PutKey(KeyRecord),
    /// Inserts a version, or replaces the sealed material of an existing one (import, deletion
    /// of imported material).
    PutVersion(VersionRecord),
    /// Deletes a key with all its versions (its sealed material) and aliases.
    DeleteKey(String),
    PutAlias(AliasRecord),
    DeleteAlias(String),
    PutImportToken(ImportTokenRecord),
    DeleteImportToken(String),
    PutSecret(SecretRecord),
    /// Deletes a secret with its versions and tags.
    DeleteSecret(String),
    /// Inserts a version or replaces its stages (values are written once).
    PutSecretVersion(SecretVersionRecord),
    DeleteSecretVersion {
        secret_name: String,
        version_id: String,
    },
    PutTag {
        resource_type: ResourceType,
        resource_id: String,
        key: String,
        value: String,
    },
    DeleteTag {
        resource_type: ResourceType,
        resource_id: String,
        key: String,
    },
}

/// One committed change list and its place in the shared store's order.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub seq: u64,
    pub changes: Vec<Change>,
}

/// What a write transaction's first step found: the change lists other nodes committed since the
/// caller's mirror was last brought up to date.
pub enum CatchUp {
    /// Every list after the caller's position, in order (empty on an unshared store).
    Sets(Vec<ChangeSet>),
    /// The caller was behind the oldest list still kept: it must forget what it holds and resume
    /// at this sequence number (reading afresh what it needs).
    Reset(u64),
}

/// What a write committed: its sequence number (0 on an unshared store) and changes; `None` when
/// there was nothing to commit.
pub type Written = Option<(u64, Vec<Change>)>;

/// A store failure, already phrased for an operator (never contains key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        StoreError(postgres::describe(&e))
    }
}

/// Why a store could not be opened, by what an operator does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreOpenError {
    /// The location is malformed (a store URL that does not parse, an unusable TLS setting).
    #[error("{0}")]
    Invalid(String),
    /// The database server cannot be reached or would not let us in.
    #[error("{0}")]
    Unreachable(String),
    /// Another process holds the store: an embedded SQLite file is one process's at a time.
    #[error("{0}")]
    InUse(String),
    /// Anything else: the file cannot be created or read, the schema cannot be migrated.
    #[error("{0}")]
    Failed(String),
}

impl StoreOpenError {
    /// The same refusal, its message prefixed with where the store is.
    pub fn at(self, location: &impl std::fmt::Display) -> StoreOpenError {
        let prefixed = |m: String| format!("{location}: {m}");
        match self {
            StoreOpenError::Invalid(m) => StoreOpenError::Invalid(prefixed(m)),
            StoreOpenError::Unreachable(m) => StoreOpenError::Unreachable(prefixed(m)),
            StoreOpenError::InUse(m) => StoreOpenError::InUse(prefixed(m)),
            StoreOpenError::Failed(m) => StoreOpenError::Failed(prefixed(m)),
        }
    }
}

impl From<StoreOpenError> for StoreError {
    fn from(e: StoreOpenError) -> Self {
        StoreError(e.to_string())
    }
}

/// Whichever backend a location names.
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(Box<PgStore>),
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `location`.
    pub fn open(location: &StoreLocation) -> Result<Store, StoreOpenError> {
        Store::open_with(location, Durability::Synchronous)
    }

    /// [`Store::open`] with commits as durable as `durability` says (PostgreSQL; SQLite's are
    /// always synchronous: one file, one writer, nothing to order against).
    pub fn open_with(location: &StoreLocation, durability: Durability) -> Result<Store, StoreOpenError> {
        match location {
            StoreLocation::Sqlite(path) => SqliteStore::open(path).map(Store::Sqlite),
            StoreLocation::Postgres(url) => PgStore::open(url, durability).map(|s| Store::Postgres(Box::new(s))),
        }
    }

    /// Whether other processes share this store (and so its contents can change underneath).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.get_meta(name)?),
            Store::Postgres(s) => s.get_meta(name),
        }
    }

    /// Stores `value` (its first 8 bytes a big-endian counter) under `name` unless the stored
    /// value's counter is as large already (`statements::META_ADVANCE`).
    pub fn advance_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.advance_meta(name, value)?),
            Store::Postgres(s) => s.advance_meta(name, value),
        }
    }

    /// Stores `value` under `name` unless a value is there already; returns the value that is
    /// stored now. Two nodes opening a new shared store at once agree on one value this way.
    pub fn put_meta_if_absent(&mut self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                if let Some(v) = s.get_meta(name)? {
                    return Ok(v);
                }
                s.put_meta(name, value)?;
                Ok(value.to_vec())
            }
            Store::Postgres(s) => s.put_meta_if_absent(name, value),
        }
    }

    /// Records request nonces durably; for each, `false` if it was recorded before (a replay –
    /// of an earlier request, or of one before it in `claims`).
    pub fn claim_nonces(&mut self, claims: &[(Vec<u8>, i64)]) -> Result<Vec<bool>, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.claim_nonces(claims)?),
            Store::Postgres(s) => s.claim_nonces(claims),
        }
    }

    /// Forgets nonces whose requests can no longer be accepted anyway; returns how many.
    pub fn purge_nonces(&mut self, now: i64) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(s.purge_nonces(now)?),
            Store::Postgres(s) => s.purge_nonces(now),
        }
    }

    /// The sequence number of the last committed change list (0 on an unshared store).
    pub fn position(&mut self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.position(),
        }
    }

    /// One write. `catch_up` first receives what others committed since `applied` (on a shared
    /// store, under the write lock, so nothing can be committed in between); then `decide` looks at
    /// the caught-up state (and the counters, when the transaction read them) and returns the
    /// changes, which commit atomically and durably as the next change list. Returns its sequence number (0 on an unshared store) with the changes, or
    /// `None` when `decide` returned no change.
    /// An error from `decide` rolls everything back and is returned as `Ok(Err(..))`.
    pub fn write<E>(
        &mut self,
        applied: u64,
        catch_up: &mut dyn FnMut(CatchUp),
        decide: &mut dyn FnMut(&Counts) -> Result<Vec<Change>, E>,
    ) -> Result<Result<Written, E>, StoreError> {
        match self {
            Store::Sqlite(s) => {
                catch_up(CatchUp::Sets(Vec::new()));
                // The embedded store counts in-process, as cheaply as any read.
                let changes = match decide(&Counts::default()) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                if changes.is_empty() {
                    return Ok(Ok(None));
                }
                s.apply(&changes)?;
                Ok(Ok(Some((0, changes))))
            }
            Store::Postgres(s) => s.write(applied, catch_up, decide),
        }
    }

    /// Commits writes decided before the write lock, unless a list committed since touched what
    /// one of them read (PostgreSQL only; see [`PgStore::write_early`]).
    pub fn write_early(&mut self, batch: Vec<Early>) -> Result<Decided, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Decided::Conflict),
            Store::Postgres(s) => s.write_early(batch),
        }
    }

    /// Takes or renews the lease `name` for `holder` for `secs` seconds (on the database's clock);
    /// `true` while `holder` has it. An unshared store has one holder, always.
    pub fn lead(&mut self, name: &str, holder: &str, secs: u32) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(s) => s.lead(name, holder, secs),
        }
    }

    /// Forgets change lists every node has had time to follow (leader's chore).
    pub fn prune_changes(&mut self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.prune_changes(),
        }
    }

    /// Reads `names` from the `meta` table without taking the store's lock or writing: for tools
    /// that run beside the process (or processes) that own the store.
    pub fn read_meta(location: &StoreLocation, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if let StoreLocation::Sqlite(path) = location {
            if !path.is_file() {
                return Err(StoreError(format!("{}: no such store", path.display())));
            }
        }
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        // A reader takes no lock and writes nothing (SQLite: a read-only connection, a consistent
        // snapshot under WAL while the owner writes).
        Reader::open(location)?.run(move |db| {
            names
                .iter()
                .map(|n| rows::first(db, statements::META_GET, &[statements::Value::Text(n)], |r| r.bytes(0)))
                .collect()
        })
    }
}
