//! The engine a test opens: on a SQLite file in the test's directory, or – with
//! `KMS_TEST_STORE=postgres` – on a fresh database of a throw-away PostgreSQL cluster, so one
//! suite runs on both backends (`.ci/run` runs the engine's suites twice). For the crate's own
//! tests and benchmarks only (feature `test-store`, enabled by kms-core's dev-dependencies).

use std::path::Path;
use std::sync::Arc;

use crate::clock::ManualClock;
use crate::crypto::seal::SoftwareRootKey;
use crate::engine::DEFAULT_STORE_LEASE;
use crate::{EngineConfig, EngineOptions, StoreLocation};

/// Options for a test engine on `dir`: a software root key, the given clock and config; the store
/// is `dir/kms.db`, or the PostgreSQL database that belongs to `dir` (the same one on reopen).
pub fn options(dir: &Path, clock: Arc<ManualClock>, config: EngineConfig) -> EngineOptions {
    let root = SoftwareRootKey::load_or_create(&dir.join("root.key")).unwrap();
    let store = test_store(dir);
    EngineOptions {
        config,
        store,
        node_id: "test".into(),
        store_lease: DEFAULT_STORE_LEASE,
        protector: Arc::new(root),
        clock,
        token: None,
    }
}

/// Every file the store of `dir` keeps its data in: the SQLite file and its WAL, or (after a
/// checkpoint) the PostgreSQL cluster's relation files of that database and its WAL.
pub fn stored_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let read_dir = |d: &Path, keep: &dyn Fn(&Path) -> bool| -> Vec<(String, Vec<u8>)> {
        std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.is_file() && keep(&p)).then(|| (p.display().to_string(), std::fs::read(&p).unwrap()))
            })
            .collect()
    };
    let recent = |p: &Path| {
        // The shared cluster's WAL holds every test's writes; this test's are in the segments
        // written in the last minute.
        let name = p.file_name().unwrap().len();
        let age = p.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default());
        name == 24 && age.is_ok_and(|a| a < std::time::Duration::from_secs(60))
    };
    match test_store(dir) {
        StoreLocation::Sqlite(_) => read_dir(dir, &|p| p.file_name().unwrap().to_string_lossy().starts_with("kms.db")),
        StoreLocation::Postgres(url) => {
            let db = url.rsplit('/').next().unwrap().to_string();
            let c = pg_harness::shared();
            c.sql("postgres", "CHECKPOINT").unwrap();
            let oid = c.sql("postgres", &format!("SELECT oid FROM pg_database WHERE datname = '{db}'")).unwrap();
            let mut files = read_dir(&c.data_dir().join("base").join(&oid[0]), &|_| true);
            files.extend(read_dir(&c.data_dir().join("pg_wal"), &recent));
            files
        }
    }
}

/// Which backend the engine tests run on.
fn on_postgres() -> bool {
    std::env::var("KMS_TEST_STORE").is_ok_and(|v| v == "postgres")
}

pub fn test_store(dir: &Path) -> StoreLocation {
    if !on_postgres() {
        return StoreLocation::Sqlite(dir.join("kms.db"));
    }
    static DBS: std::sync::OnceLock<parking_lot::Mutex<std::collections::HashMap<std::path::PathBuf, String>>> =
        std::sync::OnceLock::new();
    let mut dbs = DBS.get_or_init(Default::default).lock();
    let url = dbs.entry(dir.to_path_buf()).or_insert_with(|| pg_harness::fresh_database("engine")).clone();
    StoreLocation::Postgres(url)
}
