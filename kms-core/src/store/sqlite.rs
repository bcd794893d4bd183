//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! change survives power loss; one process owns the file (an flock on `<file>.lock`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::statements::{self, CLAIM_NONCE, META_GET, META_PUT, PURGE_NONCES};
use super::{sqlite_schema, Change};

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
        let n = self.conn.prepare_cached(CLAIM_NONCE)?.execute(rusqlite::params![id, expires_at])?;
        Ok(n == 1)
    }

    /// Forgets nonces whose requests can no longer be accepted anyway; returns how many.
    pub fn purge_nonces(&mut self, now: i64) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(PURGE_NONCES)?.execute([now])
    }

    pub fn get_meta(&self, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn.query_row(META_GET, [name], |r| r.get(0)).optional()
    }

    pub fn put_meta(&mut self, name: &str, value: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(META_PUT, params![name, value])?;
        Ok(())
    }

    /// Applies `changes` atomically and durably.
    pub fn apply(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in changes {
            for (sql, values) in statements::for_change(c) {
                tx.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values.iter()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AliasRecord, KeyRecord, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, VersionRecord};
    use crate::store::reads;

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
        let k = reads::key(&mut s.conn, "key-a").unwrap().unwrap();
        assert_eq!(k.key.state, KeyState::Disabled);
        assert_eq!(k.versions.len(), 1, "updating a key keeps its versions");
        assert_eq!(reads::aliases(&mut s.conn, Some("key-a"), 0, 10).unwrap().total, 1);
        s.apply(&[Change::DeleteKey("key-a".into())]).unwrap();
        assert!(reads::key(&mut s.conn, "key-a").unwrap().is_none());
        assert_eq!(reads::aliases(&mut s.conn, None, 0, 10).unwrap().total, 0);
        let versions: i64 = s.conn.query_row("SELECT count(*) FROM key_versions", [], |r| r.get(0)).unwrap();
        assert_eq!(versions, 0, "the versions went with the key");
    }

    #[test]
    fn pages_from_either_end_list_the_same_order() {
        use crate::store::reads::KeyCond;
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        let mut want = Vec::new();
        for i in 0..25 {
            let mut k = key(&format!("key-{:02}", 24 - i));
            // Ties on the time are broken by id.
            k.created_at = 100 + i / 2;
            k.state = if i % 3 == 0 { KeyState::Disabled } else { KeyState::Enabled };
            want.push((k.created_at, k.key_id.clone(), k.state));
            s.apply(&[Change::PutKey(k)]).unwrap();
        }
        want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (conds, keep) in [(vec![], None), (vec![KeyCond::State(vec!["Enabled".into()])], Some(KeyState::Enabled))] {
            let expect: Vec<String> =
                want.iter().filter(|w| keep.is_none_or(|k| k == w.2)).map(|w| w.1.clone()).collect();
            let mut got = Vec::new();
            for page in 0..4 {
                let p = reads::key_ids(&mut s.conn, &conds, page * 7, 7).unwrap();
                assert_eq!(p.total, expect.len() as u64);
                got.extend(p.items);
            }
            assert_eq!(got, expect);
            assert!(reads::key_ids(&mut s.conn, &conds, 100, 7).unwrap().items.is_empty());
        }
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
        assert!(reads::key(&mut s.conn, "key-a").unwrap().is_none());
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
