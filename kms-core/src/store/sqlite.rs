//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! change survives power loss; one process owns the file (an flock on `<file>.lock`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{sqlite_schema, Change, Snapshot};
use crate::model::{
    AliasRecord, ImportTokenRecord, KeyRecord, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, ResourceType,
    SecretRecord, SecretVersionRecord, VersionRecord,
};

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Held for the life of the store: one process owns a store file at a time.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, takes its lock file and migrates the schema.
    pub fn open(path: &Path) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "the store {} is in use by another process (lock {})",
                    path.display(),
                    lock_path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("{}: {e}", lock_path.display())),
        }
        let mut conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| e.to_string())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("{}: cannot switch to WAL mode (got {mode})", path.display()));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON; PRAGMA busy_timeout=5000;",
        )
        .map_err(|e| e.to_string())?;
        sqlite_schema::migrate(&mut conn).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(SqliteStore { conn, path: path.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a request nonce durably; `false` if it was recorded before (a replay).
    pub fn claim_nonce(&mut self, id: &[u8], expires_at: i64) -> rusqlite::Result<bool> {
        let n = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO request_nonces (id, expires_at) VALUES (?1, ?2)")?
            .execute(rusqlite::params![id, expires_at])?;
        Ok(n == 1)
    }

    /// Forgets nonces whose requests can no longer be accepted anyway; returns how many.
    pub fn purge_nonces(&mut self, now: i64) -> rusqlite::Result<usize> {
        self.conn.prepare_cached("DELETE FROM request_nonces WHERE expires_at < ?1")?.execute([now])
    }

    pub fn get_meta(&self, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional()
    }

    pub fn put_meta(&mut self, name: &str, value: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO meta(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Reads `names` from the `meta` table of the store at `path` without taking its lock and
    /// without writing: for tools that run beside the process that owns the store. WAL mode lets
    /// this read a consistent snapshot while the owner writes.
    pub fn read_meta(path: &Path, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        if !path.is_file() {
            return Err(format!("{}: no such store", path.display()));
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
        names
            .iter()
            .map(|n| {
                conn.query_row("SELECT value FROM meta WHERE name = ?1", [n], |r| r.get(0))
                    .optional()
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
            .collect()
    }

    /// Reads every key, version and alias.
    pub fn load(&self) -> rusqlite::Result<Snapshot> {
        let mut snap = Snapshot::default();
        let mut stmt = self.conn.prepare("SELECT * FROM keys ORDER BY created_at, key_id")?;
        let cols = column_index(&stmt);
        snap.keys = stmt.query_map([], |r| key_from_row(r, &cols))?.collect::<rusqlite::Result<_>>()?;
        let mut stmt =
            self.conn.prepare("SELECT version_id, key_id, created_at, sealed FROM key_versions ORDER BY rowid")?;
        snap.versions = stmt
            .query_map([], |r| {
                Ok(VersionRecord { version_id: r.get(0)?, key_id: r.get(1)?, created_at: r.get(2)?, sealed: r.get(3)? })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare("SELECT name, key_id, created_at FROM aliases ORDER BY created_at, name")?;
        snap.aliases = stmt
            .query_map([], |r| Ok(AliasRecord { name: r.get(0)?, key_id: r.get(1)?, created_at: r.get(2)? }))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT token_id, key_id, wrapping_spec, wrapping_algorithm, expires_at, sealed FROM import_tokens",
        )?;
        snap.import_tokens = stmt
            .query_map([], |r| {
                let spec: String = r.get(2)?;
                Ok(ImportTokenRecord {
                    token_id: r.get(0)?,
                    key_id: r.get(1)?,
                    wrapping_spec: KeySpec::parse(&spec).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, spec.clone().into())
                    })?,
                    wrapping_algorithm: r.get(3)?,
                    expires_at: r.get(4)?,
                    sealed: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT name, secret_type, description, encryption_key_id, created_at, updated_at, planned_delete,
                    extended_config FROM secrets",
        )?;
        snap.secrets = stmt
            .query_map([], |r| {
                Ok(SecretRecord {
                    name: r.get(0)?,
                    secret_type: r.get(1)?,
                    description: r.get(2)?,
                    encryption_key_id: r.get(3)?,
                    created_at: r.get(4)?,
                    updated_at: r.get(5)?,
                    planned_delete: r.get(6)?,
                    extended_config: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT secret_name, version_id, created_at, data_type, stages, sealed FROM secret_versions ORDER BY rowid",
        )?;
        snap.secret_versions = stmt
            .query_map([], |r| {
                let stages: String = r.get(4)?;
                Ok(SecretVersionRecord {
                    secret_name: r.get(0)?,
                    version_id: r.get(1)?,
                    created_at: r.get(2)?,
                    data_type: r.get(3)?,
                    stages: serde_json::from_str(&stages).map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
                    })?,
                    sealed: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare("SELECT resource_type, resource_id, tag_key, tag_value FROM tags")?;
        snap.tags = stmt
            .query_map([], |r| {
                let t: String = r.get(0)?;
                let rt = ResourceType::parse(&t).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, t.clone().into())
                })?;
                Ok((rt, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(snap)
    }

    /// Applies `changes` atomically and durably.
    pub fn apply(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in changes {
            match c {
                Change::PutKey(k) => put_key(&tx, k)?,
                Change::PutVersion(v) => {
                    tx.execute(
                        "INSERT INTO key_versions(version_id, key_id, created_at, sealed) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(version_id) DO UPDATE SET sealed = excluded.sealed",
                        params![v.version_id, v.key_id, v.created_at, v.sealed],
                    )?;
                }
                Change::DeleteKey(id) => {
                    tx.execute("DELETE FROM keys WHERE key_id = ?1", [id])?;
                    tx.execute("DELETE FROM tags WHERE resource_type = 'key' AND resource_id = ?1", [id])?;
                }
                Change::PutAlias(a) => {
                    tx.execute(
                        "INSERT INTO aliases(name, key_id, created_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT(name) DO UPDATE SET key_id = excluded.key_id",
                        params![a.name, a.key_id, a.created_at],
                    )?;
                }
                Change::DeleteAlias(name) => {
                    tx.execute("DELETE FROM aliases WHERE name = ?1", [name])?;
                }
                Change::PutImportToken(t) => {
                    tx.execute(
                        "INSERT INTO import_tokens(token_id, key_id, wrapping_spec, wrapping_algorithm, expires_at, sealed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![t.token_id, t.key_id, t.wrapping_spec.as_str(), t.wrapping_algorithm, t.expires_at, t.sealed],
                    )?;
                }
                Change::DeleteImportToken(id) => {
                    tx.execute("DELETE FROM import_tokens WHERE token_id = ?1", [id])?;
                }
                Change::PutSecret(s) => {
                    tx.execute(
                        "INSERT INTO secrets(name, secret_type, description, encryption_key_id, created_at, updated_at,
                             planned_delete, extended_config) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT(name) DO UPDATE SET secret_type = excluded.secret_type,
                             description = excluded.description, encryption_key_id = excluded.encryption_key_id,
                             updated_at = excluded.updated_at, planned_delete = excluded.planned_delete,
                             extended_config = excluded.extended_config",
                        params![
                            s.name,
                            s.secret_type,
                            s.description,
                            s.encryption_key_id,
                            s.created_at,
                            s.updated_at,
                            s.planned_delete,
                            s.extended_config
                        ],
                    )?;
                }
                Change::DeleteSecret(name) => {
                    tx.execute("DELETE FROM secrets WHERE name = ?1", [name])?;
                    tx.execute("DELETE FROM tags WHERE resource_type = 'secret' AND resource_id = ?1", [name])?;
                }
                Change::PutSecretVersion(v) => {
                    let stages = serde_json::to_string(&v.stages).expect("strings serialise");
                    tx.execute(
                        "INSERT INTO secret_versions(secret_name, version_id, created_at, data_type, stages, sealed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(secret_name, version_id) DO UPDATE SET stages = excluded.stages",
                        params![v.secret_name, v.version_id, v.created_at, v.data_type, stages, v.sealed],
                    )?;
                }
                Change::DeleteSecretVersion { secret_name, version_id } => {
                    tx.execute(
                        "DELETE FROM secret_versions WHERE secret_name = ?1 AND version_id = ?2",
                        params![secret_name, version_id],
                    )?;
                }
                Change::PutTag { resource_type, resource_id, key, value } => {
                    tx.execute(
                        "INSERT INTO tags(resource_type, resource_id, tag_key, tag_value) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(resource_type, resource_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
                        params![resource_type.as_str(), resource_id, key, value],
                    )?;
                }
                Change::DeleteTag { resource_type, resource_id, key } => {
                    tx.execute(
                        "DELETE FROM tags WHERE resource_type = ?1 AND resource_id = ?2 AND tag_key = ?3",
                        params![resource_type.as_str(), resource_id, key],
                    )?;
                }
            }
        }
        tx.commit()
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    db.with_file_name(name)
}

fn put_key(tx: &rusqlite::Transaction<'_>, k: &KeyRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO keys(key_id, spec, usage, origin, protection, creator, description, state,
             state_before_deletion, created_at, primary_version, last_rotation, rotation_enabled,
             rotation_interval, delete_date, deletion_protection, deletion_protection_description,
             material_expire, service, material_fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
         ON CONFLICT(key_id) DO UPDATE SET
             spec = excluded.spec, usage = excluded.usage, origin = excluded.origin,
             protection = excluded.protection, creator = excluded.creator,
             description = excluded.description, state = excluded.state,
             state_before_deletion = excluded.state_before_deletion,
             primary_version = excluded.primary_version, last_rotation = excluded.last_rotation,
             rotation_enabled = excluded.rotation_enabled, rotation_interval = excluded.rotation_interval,
             delete_date = excluded.delete_date, deletion_protection = excluded.deletion_protection,
             deletion_protection_description = excluded.deletion_protection_description,
             material_expire = excluded.material_expire, service = excluded.service,
             material_fingerprint = excluded.material_fingerprint",
        params![
            k.key_id,
            k.spec.as_str(),
            k.usage.as_str(),
            k.origin.as_str(),
            k.protection.as_str(),
            k.creator,
            k.description,
            k.state.as_str(),
            k.state_before_deletion.map(|s| s.as_str()),
            k.created_at,
            k.primary_version,
            k.last_rotation,
            k.rotation_enabled,
            k.rotation_interval,
            k.delete_date,
            k.deletion_protection,
            k.deletion_protection_description,
            k.material_expire,
            k.service,
            k.material_fingerprint,
        ],
    )?;
    Ok(())
}

fn column_index(stmt: &rusqlite::Statement<'_>) -> HashMap<String, usize> {
    stmt.column_names().iter().enumerate().map(|(i, n)| (n.to_string(), i)).collect()
}

fn key_from_row(r: &Row<'_>, cols: &HashMap<String, usize>) -> rusqlite::Result<KeyRecord> {
    let col = |name: &str| cols[name];
    fn parsed<T>(r: &Row<'_>, i: usize, f: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
        let s: String = r.get(i)?;
        f(&s).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Text,
                format!("unknown value {s:?}").into(),
            )
        })
    }
    let before: Option<String> = r.get(col("state_before_deletion"))?;
    Ok(KeyRecord {
        key_id: r.get(col("key_id"))?,
        spec: parsed(r, col("spec"), KeySpec::parse)?,
        usage: parsed(r, col("usage"), KeyUsage::parse)?,
        origin: parsed(r, col("origin"), Origin::parse)?,
        protection: parsed(r, col("protection"), ProtectionLevel::parse)?,
        creator: r.get(col("creator"))?,
        description: r.get(col("description"))?,
        state: parsed(r, col("state"), KeyState::parse)?,
        state_before_deletion: before.as_deref().and_then(KeyState::parse),
        created_at: r.get(col("created_at"))?,
        primary_version: r.get(col("primary_version"))?,
        last_rotation: r.get(col("last_rotation"))?,
        rotation_enabled: r.get(col("rotation_enabled"))?,
        rotation_interval: r.get(col("rotation_interval"))?,
        delete_date: r.get(col("delete_date"))?,
        deletion_protection: r.get(col("deletion_protection"))?,
        deletion_protection_description: r.get(col("deletion_protection_description"))?,
        material_expire: r.get(col("material_expire"))?,
        service: r.get(col("service"))?,
        material_fingerprint: r.get(col("material_fingerprint"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            key_id: id.into(),
            spec: KeySpec::Aes256,
            usage: KeyUsage::EncryptDecrypt,
            origin: Origin::AliyunKms,
            protection: ProtectionLevel::Software,
            creator: "1".into(),
            description: "d".into(),
            state: KeyState::Enabled,
            state_before_deletion: None,
            created_at: 10,
            primary_version: Some("v1".into()),
            last_rotation: 10,
            rotation_enabled: false,
            rotation_interval: None,
            delete_date: None,
            deletion_protection: false,
            deletion_protection_description: String::new(),
            material_expire: None,
            service: None,
            material_fingerprint: None,
        }
    }

    #[test]
    fn changes_round_trip_and_cascade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        {
            let mut s = SqliteStore::open(&path).unwrap();
            let v =
                VersionRecord { version_id: "v1".into(), key_id: "key-a".into(), created_at: 10, sealed: vec![1, 2] };
            let a = AliasRecord { name: "alias/a".into(), key_id: "key-a".into(), created_at: 11 };
            s.apply(&[Change::PutKey(key("key-a")), Change::PutVersion(v), Change::PutAlias(a)]).unwrap();
            let mut k = key("key-a");
            k.state = KeyState::Disabled;
            s.apply(&[Change::PutKey(k)]).unwrap();
        }
        let mut s = SqliteStore::open(&path).unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.keys.len(), 1);
        assert_eq!(snap.keys[0].state, KeyState::Disabled);
        assert_eq!(snap.versions.len(), 1, "updating a key keeps its versions");
        assert_eq!(snap.aliases.len(), 1);
        s.apply(&[Change::DeleteKey("key-a".into())]).unwrap();
        let snap = s.load().unwrap();
        assert!(snap.keys.is_empty() && snap.versions.is_empty() && snap.aliases.is_empty());
    }

    #[test]
    fn a_failed_change_list_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        // A version of a key that does not exist violates the foreign key: the key put before it
        // in the same list must not survive either.
        let orphan =
            VersionRecord { version_id: "v".into(), key_id: "key-missing".into(), created_at: 1, sealed: vec![] };
        assert!(s.apply(&[Change::PutKey(key("key-a")), Change::PutVersion(orphan)]).is_err());
        assert!(s.load().unwrap().keys.is_empty());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let _s = SqliteStore::open(&path).unwrap();
        let e = SqliteStore::open(&path).err().unwrap();
        assert!(e.contains("in use"), "{e}");
    }
}
