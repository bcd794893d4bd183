//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! change survives power loss; one process owns the file (an flock on `<file>.lock`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::statements::{
    self, ADVANCE_NONCE_HORIZON, CLAIM_NONCE, META_ADVANCE, META_GET, META_PUT, NONCE_HORIZON_ID, PURGE_NONCES,
};
use super::{sqlite_schema, Change, StoreOpenError};

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Held for the life of the store: one process owns a store file at a time.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, takes its lock file and migrates the schema.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreOpenError> {
        let failed = StoreOpenError::Failed;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| failed(format!("cannot open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreOpenError::InUse(format!(
                    "the store {} is in use by another process (lock {})",
                    path.display(),
                    lock_path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(format!("{}: {e}", lock_path.display()))),
        }
        let at = |e: &dyn std::fmt::Display| failed(format!("{}: {e}", path.display()));
        let mut conn = Connection::open(path).map_err(|e| at(&e))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| at(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(failed(format!("{}: cannot switch to WAL mode (got {mode})", path.display())));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON; PRAGMA busy_timeout=5000;",
        )
        .map_err(|e| at(&e))?;
        sqlite_schema::migrate(&mut conn).map_err(|e| at(&e))?;
        Ok(SqliteStore { conn, path: path.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records request nonces durably, in one transaction; for each, `false` if it was
    /// recorded before (a replay – of an earlier request, or of one before it in `claims`).
    pub fn claim_nonces(&mut self, claims: &[(Vec<u8>, i64)]) -> rusqlite::Result<Vec<bool>> {
        let tx = self.conn.transaction()?;
        let mut fresh = Vec::with_capacity(claims.len());
        {
            let mut claim = tx.prepare_cached(CLAIM_NONCE)?;
            for (id, expires_at) in claims {
                fresh.push(claim.execute(rusqlite::params![id, expires_at, NONCE_HORIZON_ID])? == 1);
            }
        }
        tx.commit()?;
        Ok(fresh)
    }

    /// Forgets nonces whose requests can no longer be accepted anyway, raising the horizon below
    /// which claims are refused first (a clock stepped back must not revive them); returns how
    /// many.
    pub fn purge_nonces(&mut self, now: i64) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(ADVANCE_NONCE_HORIZON)?.execute(params![NONCE_HORIZON_ID, now])?;
        self.conn.prepare_cached(PURGE_NONCES)?.execute(params![NONCE_HORIZON_ID, now])
    }

    pub fn get_meta(&self, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
        self.conn.query_row(META_GET, [name], |r| r.get(0)).optional()
    }

    pub fn put_meta(&mut self, name: &str, value: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(META_PUT, params![name, value])?;
        Ok(())
    }

    pub fn advance_meta(&mut self, name: &str, value: &[u8]) -> rusqlite::Result<()> {
        self.conn.execute(META_ADVANCE, params![name, value])?;
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
pub(crate) mod tests {
    use super::*;
    use crate::model::{AliasRecord, KeyRecord, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, VersionRecord};
    use crate::store::reads;

    /// An enabled AES key created at time 10 (tests change what they need).
    pub(crate) fn key(id: &str) -> KeyRecord {
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
    fn pages_at_any_offset_list_insertion_order_whatever_the_filter() {
        use crate::store::reads::KeyCond;
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("kms.db")).unwrap();
        // Enough keys for several buckets; ids and times out of order, so only insertion order
        // lists them as the model does.
        let mut model: Vec<KeyRecord> = Vec::new();
        let mut puts = Vec::new();
        for i in 0..1400u32 {
            let mut k = key(&format!("key-{:04}", (i * 7919) % 1400));
            k.created_at = 1000 - i64::from(i % 13);
            k.state = if i % 3 == 0 { KeyState::Disabled } else { KeyState::Enabled };
            k.service = (i % 5 == 0).then(|| "oss".to_string());
            model.push(k.clone());
            puts.push(Change::PutKey(k));
        }
        s.apply(&puts).unwrap();
        // Deleting and re-stating keys moves them between the counted groups, not in the order.
        let mut changes = Vec::new();
        for (i, k) in model.iter_mut().enumerate() {
            if i % 11 == 4 {
                changes.push(Change::DeleteKey(k.key_id.clone()));
            } else if i % 17 == 2 {
                k.state = KeyState::PendingDeletion;
                changes.push(Change::PutKey(k.clone()));
            }
        }
        s.apply(&changes).unwrap();
        model.retain(|k| !changes.iter().any(|c| matches!(c, Change::DeleteKey(id) if *id == k.key_id)));
        type Keeps = Box<dyn Fn(&KeyRecord) -> bool>;
        let filters: Vec<(Vec<KeyCond>, Keeps)> = vec![
            (vec![], Box::new(|_| true)),
            (vec![KeyCond::State(vec!["Enabled".into()])], Box::new(|k| k.state == KeyState::Enabled)),
            (vec![KeyCond::State(vec!["PendingDeletion".into()])], Box::new(|k| k.state == KeyState::PendingDeletion)),
            (
                vec![KeyCond::State(vec!["Disabled".into()]), KeyCond::Creator { user: false, service: true }],
                Box::new(|k| k.state == KeyState::Disabled && k.service.is_some()),
            ),
            (vec![KeyCond::Spec(vec!["RSA_2048".into()])], Box::new(|_| false)),
        ];
        for (conds, keep) in &filters {
            let expect: Vec<&str> = model.iter().filter(|k| keep(k)).map(|k| k.key_id.as_str()).collect();
            for (offset, size) in [(0, 7), (3, 100), (511, 2), (expect.len().saturating_sub(5) as u64, 10), (600, 1)] {
                let p = reads::key_ids(&mut s.conn, conds, offset, size).unwrap();
                assert_eq!(p.total, expect.len() as u64, "{conds:?}");
                let want: Vec<&str> = expect.iter().skip(offset as usize).take(size as usize).copied().collect();
                assert_eq!(p.items, want, "{conds:?} at {offset}+{size}");
            }
            assert!(reads::key_ids(&mut s.conn, conds, 5000, 7).unwrap().items.is_empty());
        }
        // The counts equal what a scan counts.
        let scanned: i64 = s.conn.query_row("SELECT count(*) FROM keys", [], |r| r.get(0)).unwrap();
        let counted: i64 = s.conn.query_row("SELECT sum(n) FROM key_buckets", [], |r| r.get(0)).unwrap();
        assert_eq!((scanned, counted), (model.len() as i64, model.len() as i64));
        let empty: i64 = s.conn.query_row("SELECT count(*) FROM key_buckets WHERE n <= 0", [], |r| r.get(0)).unwrap();
        assert_eq!(empty, 0, "a group that empties loses its row");
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
        assert!(matches!(&e, StoreOpenError::InUse(m) if m.contains("in use")), "{e}");
    }
}
