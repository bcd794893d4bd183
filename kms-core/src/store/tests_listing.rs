//! The listing buckets (schema migrations SQLite 6 / PostgreSQL 4) on a store written before
//! them: every existing row keeps the place it listed at, and rows put afterwards list after it.

use super::reads::{self, KeyCond, SecretCond};
use super::rows::{Db, PgDb, Prepared};
use super::sqlite::tests::key;
use super::statements;
use super::{pg_schema, sqlite_schema, Change};

/// Rows as a build before the buckets wrote them: times and ids out of insertion order.
const OLD_ROWS: &str = "
    INSERT INTO keys(key_id, spec, usage, origin, protection, creator, description, state, created_at,
        last_rotation, rotation_enabled, deletion_protection, deletion_protection_description, service)
    VALUES ('key-c', 'Aliyun_AES_256', 'ENCRYPT/DECRYPT', 'Aliyun_KMS', 'SOFTWARE', 'u', '', 'Enabled', 30, 0, FALSE, FALSE, '', NULL),
           ('key-b', 'Aliyun_AES_256', 'ENCRYPT/DECRYPT', 'Aliyun_KMS', 'SOFTWARE', 'u', '', 'Enabled', 10, 0, FALSE, FALSE, '', 'oss'),
           ('key-a', 'Aliyun_AES_256', 'ENCRYPT/DECRYPT', 'Aliyun_KMS', 'SOFTWARE', 'u', '', 'Disabled', 10, 0, FALSE, FALSE, '', NULL);
    INSERT INTO secrets(name, secret_type, description, encryption_key_id, created_at, updated_at, extended_config)
    VALUES ('s-z', 'Generic', '', 'key-a', 5, 5, '{}'), ('s-y', 'Generic', '', 'key-a', 9, 9, '{}');
";

/// What the store lists after migrating and one more key and secret (`key-0`, `s-0`) were put.
fn check(db: &mut dyn Db) {
    let ids = |db: &mut dyn Db, conds: &[KeyCond]| reads::key_ids(db, conds, 0, 10).unwrap();
    let all = ids(db, &[]);
    assert_eq!(all.items, ["key-a", "key-b", "key-c", "key-0"]);
    assert_eq!(all.total, 4);
    let enabled = ids(db, &[KeyCond::State(vec!["Enabled".into()])]);
    assert_eq!(enabled.items, ["key-b", "key-c", "key-0"]);
    let users = ids(db, &[KeyCond::Creator { user: true, service: false }]);
    assert_eq!(users.items, ["key-a", "key-c", "key-0"]);
    assert_eq!(reads::key_ids(db, &[], 3, 10).unwrap().items, ["key-0"]);
    let names = |db: &mut dyn Db, conds: &[SecretCond]| {
        reads::secrets(db, conds, 0, 10).unwrap().items.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    assert_eq!(names(db, &[]), ["s-z", "s-y", "s-0"]);
    assert_eq!(names(db, &[SecretCond::NameContains(vec!["s-".into()])]), ["s-z", "s-y", "s-0"]);
}

fn put_new(db: &mut dyn Db) {
    let mut k = key("key-0");
    k.created_at = 1; // older than every key: still listed last, as it was put last
    let secret = crate::model::SecretRecord {
        name: "s-0".into(),
        secret_type: "Generic".into(),
        description: String::new(),
        encryption_key_id: "key-0".into(),
        created_at: 1,
        updated_at: 1,
        planned_delete: None,
        extended_config: "{}".into(),
    };
    for c in [Change::PutKey(k), Change::PutSecret(secret)] {
        for (sql, values) in statements::for_change(&c) {
            db.each(sql, &values, &mut |_| Ok(())).unwrap();
        }
    }
}

#[test]
fn sqlite_rows_written_before_the_buckets_keep_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kms.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for sql in &sqlite_schema::MIGRATIONS[..5] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 5).unwrap();
        c.execute_batch(OLD_ROWS).unwrap();
    }
    // Opening migrates.
    drop(super::sqlite::SqliteStore::open(&path).unwrap());
    let mut c = rusqlite::Connection::open(&path).unwrap();
    put_new(&mut c);
    check(&mut c);
}

#[test]
fn postgres_rows_written_before_the_buckets_keep_their_place() {
    if !pg_harness::available() {
        eprintln!("PostgreSQL is not installed: skipped");
        return;
    }
    let url = pg_harness::fresh_database("listing");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE kms_schema (version INTEGER NOT NULL); INSERT INTO kms_schema VALUES (3)").unwrap();
    for sql in &pg_schema::MIGRATIONS[..3] {
        c.batch_execute(sql).unwrap();
    }
    c.batch_execute(OLD_ROWS).unwrap();
    // Opening migrates.
    drop(super::pg_store::PgStore::open(&url, super::Durability::Synchronous).unwrap());
    let mut prepared = Prepared::default();
    let mut db = PgDb { client: &mut c, prepared: &mut prepared };
    put_new(&mut db);
    check(&mut db);
}
