//! The SQLite schema as an ordered list of migrations; `PRAGMA user_version` records how many ran.
//! A migration is appended, never edited, once released.

use rusqlite::Connection;

/// A key row's count leaving its bucket and group (`OLD`), in SQLite trigger SQL (migration 6):
/// a group that empties loses its row.
macro_rules! key_bucket_out {
    () => {
        "
        DELETE FROM key_buckets WHERE n = 1 AND bucket = OLD.list_pos >> 9 AND state = OLD.state
            AND spec = OLD.spec AND usage = OLD.usage AND protection = OLD.protection
            AND by_service = (OLD.service IS NOT NULL);
        UPDATE key_buckets SET n = n - 1 WHERE bucket = OLD.list_pos >> 9 AND state = OLD.state
            AND spec = OLD.spec AND usage = OLD.usage AND protection = OLD.protection
            AND by_service = (OLD.service IS NOT NULL);
        "
    };
}

/// A key row's count entering its bucket and group (`NEW`).
macro_rules! key_bucket_in {
    () => {
        "
        INSERT INTO key_buckets VALUES
            (NEW.list_pos >> 9, NEW.state, NEW.spec, NEW.usage, NEW.protection, NEW.service IS NOT NULL, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
        "
    };
}

pub const MIGRATIONS: &[&str] = &[
    // 1: keys, versions (sealed material), aliases, store metadata.
    r#"
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE TABLE keys (
        key_id                          TEXT PRIMARY KEY,
        spec                            TEXT NOT NULL,
        usage                           TEXT NOT NULL,
        origin                          TEXT NOT NULL,
        protection                      TEXT NOT NULL,
        creator                         TEXT NOT NULL,
        description                     TEXT NOT NULL,
        state                           TEXT NOT NULL,
        state_before_deletion           TEXT,
        created_at                      INTEGER NOT NULL,
        primary_version                 TEXT,
        last_rotation                   INTEGER NOT NULL,
        rotation_enabled                INTEGER NOT NULL,
        rotation_interval               INTEGER,
        delete_date                     INTEGER,
        deletion_protection             INTEGER NOT NULL,
        deletion_protection_description TEXT NOT NULL,
        material_expire                 INTEGER,
        service                         TEXT
    ) STRICT;
    CREATE TABLE key_versions (
        version_id TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        sealed     BLOB NOT NULL
    ) STRICT;
    CREATE INDEX key_versions_by_key ON key_versions(key_id);
    CREATE TABLE aliases (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX aliases_by_key ON aliases(key_id);
    "#,
    // 2: BYOK: fingerprints of imported material, import tokens with their sealed wrapping keys.
    r#"
    ALTER TABLE keys ADD COLUMN material_fingerprint BLOB;
    CREATE TABLE import_tokens (
        token_id           TEXT PRIMARY KEY,
        key_id             TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        wrapping_spec      TEXT NOT NULL,
        wrapping_algorithm TEXT NOT NULL,
        expires_at         INTEGER NOT NULL,
        sealed             BLOB NOT NULL
    ) STRICT;
    CREATE INDEX import_tokens_by_key ON import_tokens(key_id);
    "#,
    // 3: Secrets Manager (secrets, envelope-encrypted versions with their stages) and tags.
    r#"
    CREATE TABLE secrets (
        name              TEXT PRIMARY KEY,
        secret_type       TEXT NOT NULL,
        description       TEXT NOT NULL,
        encryption_key_id TEXT NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL,
        planned_delete    INTEGER,
        extended_config   TEXT NOT NULL
    ) STRICT;
    CREATE TABLE secret_versions (
        secret_name TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
        version_id  TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        data_type   TEXT NOT NULL,
        stages      TEXT NOT NULL,
        sealed      BLOB NOT NULL,
        PRIMARY KEY (secret_name, version_id)
    ) STRICT;
    CREATE TABLE tags (
        resource_type TEXT NOT NULL,
        resource_id   TEXT NOT NULL,
        tag_key       TEXT NOT NULL,
        tag_value     TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_id, tag_key)
    ) STRICT;
    "#,
    // 4: signature nonces of mutating requests, kept until their timestamp can no longer be
    // accepted, so a replay is refused across restarts (and, on a shared store, across nodes).
    r#"
    CREATE TABLE request_nonces (
        id         BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX request_nonces_by_expiry ON request_nonces(expires_at);
    "#,
    // 5: the engine reads on demand instead of loading everything: indexes for list pages in
    // listing order, for counting user keys, and for what maintenance finds due.
    r#"
    CREATE INDEX keys_by_creation ON keys(created_at, key_id);
    CREATE INDEX keys_by_state ON keys(state, created_at, key_id);
    CREATE INDEX keys_of_users ON keys(key_id) WHERE service IS NULL;
    CREATE INDEX keys_by_delete_date ON keys(delete_date);
    CREATE INDEX keys_by_material_expiry ON keys(material_expire);
    CREATE INDEX keys_rotating ON keys(key_id) WHERE rotation_enabled = 1;
    CREATE INDEX secrets_by_purge ON secrets(planned_delete);
    CREATE INDEX import_tokens_by_expiry ON import_tokens(expires_at);
    CREATE INDEX tags_by_value ON tags(resource_type, tag_value);
    -- What counts against the limits (and the totals of whole listings), kept by triggers in the writing transaction: a count(*)
    -- over every key on each CreateKey would grow with the store.
    CREATE TABLE resource_counts (
        kind TEXT PRIMARY KEY,
        n    INTEGER NOT NULL
    ) STRICT;
    INSERT INTO resource_counts VALUES
        ('keys', (SELECT count(*) FROM keys)),
        ('user_keys', (SELECT count(*) FROM keys WHERE service IS NULL)),
        ('aliases', (SELECT count(*) FROM aliases)),
        ('secrets', (SELECT count(*) FROM secrets));
    CREATE TRIGGER count_keys_in AFTER INSERT ON keys
        BEGIN UPDATE resource_counts SET n = n + 1 WHERE kind = 'keys'; END;
    CREATE TRIGGER count_keys_out AFTER DELETE ON keys
        BEGIN UPDATE resource_counts SET n = n - 1 WHERE kind = 'keys'; END;
    CREATE TRIGGER count_user_keys_in AFTER INSERT ON keys WHEN NEW.service IS NULL
        BEGIN UPDATE resource_counts SET n = n + 1 WHERE kind = 'user_keys'; END;
    CREATE TRIGGER count_user_keys_out AFTER DELETE ON keys WHEN OLD.service IS NULL
        BEGIN UPDATE resource_counts SET n = n - 1 WHERE kind = 'user_keys'; END;
    CREATE TRIGGER count_aliases_in AFTER INSERT ON aliases
        BEGIN UPDATE resource_counts SET n = n + 1 WHERE kind = 'aliases'; END;
    CREATE TRIGGER count_aliases_out AFTER DELETE ON aliases
        BEGIN UPDATE resource_counts SET n = n - 1 WHERE kind = 'aliases'; END;
    CREATE TRIGGER count_secrets_in AFTER INSERT ON secrets
        BEGIN UPDATE resource_counts SET n = n + 1 WHERE kind = 'secrets'; END;
    CREATE TRIGGER count_secrets_out AFTER DELETE ON secrets
        BEGIN UPDATE resource_counts SET n = n - 1 WHERE kind = 'secrets'; END;
    "#,
    // 6: keys and secrets list in insertion order (`list_pos`, given by the inserting statement),
    // and triggers count each bucket of 512 positions (keys per filterable group), so a page at
    // any offset reads one count row per bucket and then at most a bucket of rows (reads.rs).
    // Existing rows keep the order they listed in before.
    concat!(
        r#"
    ALTER TABLE keys ADD COLUMN list_pos INTEGER;
    UPDATE keys SET list_pos = r.n
        FROM (SELECT key_id, row_number() OVER (ORDER BY created_at, key_id) AS n FROM keys) AS r
        WHERE r.key_id = keys.key_id;
    CREATE UNIQUE INDEX keys_in_order ON keys(list_pos);
    DROP INDEX keys_by_creation;
    DROP INDEX keys_by_state;
    CREATE TABLE key_buckets (
        bucket     INTEGER NOT NULL,
        state      TEXT NOT NULL,
        spec       TEXT NOT NULL,
        usage      TEXT NOT NULL,
        protection TEXT NOT NULL,
        by_service INTEGER NOT NULL,
        n          INTEGER NOT NULL,
        PRIMARY KEY (bucket, state, spec, usage, protection, by_service)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO key_buckets
        SELECT list_pos >> 9, state, spec, usage, protection, service IS NOT NULL, count(*)
        FROM keys GROUP BY 1, 2, 3, 4, 5, 6;
    CREATE TRIGGER key_buckets_in AFTER INSERT ON keys BEGIN
    "#,
        key_bucket_in!(),
        r#"
    END;
    CREATE TRIGGER key_buckets_out AFTER DELETE ON keys BEGIN
    "#,
        key_bucket_out!(),
        r#"
    END;
    CREATE TRIGGER key_buckets_moved AFTER UPDATE OF list_pos, state, spec, usage, protection, service ON keys
        WHEN OLD.list_pos IS NOT NEW.list_pos OR OLD.state IS NOT NEW.state OR OLD.spec IS NOT NEW.spec
            OR OLD.usage IS NOT NEW.usage OR OLD.protection IS NOT NEW.protection
            OR (OLD.service IS NULL) IS NOT (NEW.service IS NULL)
    BEGIN
    "#,
        key_bucket_out!(),
        key_bucket_in!(),
        r#"
    END;
    ALTER TABLE secrets ADD COLUMN list_pos INTEGER;
    UPDATE secrets SET list_pos = r.n
        FROM (SELECT name, row_number() OVER (ORDER BY created_at, name) AS n FROM secrets) AS r
        WHERE r.name = secrets.name;
    CREATE UNIQUE INDEX secrets_in_order ON secrets(list_pos);
    CREATE TABLE secret_buckets (
        bucket INTEGER NOT NULL PRIMARY KEY,
        n      INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT INTO secret_buckets SELECT list_pos >> 9, count(*) FROM secrets GROUP BY 1;
    CREATE TRIGGER secret_buckets_in AFTER INSERT ON secrets BEGIN
        INSERT INTO secret_buckets VALUES (NEW.list_pos >> 9, 1) ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER secret_buckets_out AFTER DELETE ON secrets BEGIN
        DELETE FROM secret_buckets WHERE n = 1 AND bucket = OLD.list_pos >> 9;
        UPDATE secret_buckets SET n = n - 1 WHERE bucket = OLD.list_pos >> 9;
    END;
    "#
    ),
];

/// Brings the schema up to date. A store written by a newer build is refused, not downgraded.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).map_err(|e| e.to_string())? as usize;
    if current > MIGRATIONS.len() {
        return Err(format!(
            "the store has schema version {current}, newer than this build knows ({}); upgrade kms-core",
            MIGRATIONS.len()
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}
