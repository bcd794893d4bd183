//! The PostgreSQL schema as an ordered list of migrations; `kms_schema.version` records how many
//! ran. A migration is appended, never edited, once released. Nodes that start together run them
//! once: the runner holds a session advisory lock.

use tokio_postgres::Client;

use super::StoreError;

/// Session advisory lock taken while migrating.
const MIGRATE_LOCK: i64 = 0x6b6d_735f_6d69_6772; // "kms_migr"

pub const MIGRATIONS: &[&str] = &[
    // 1: everything the SQLite store holds, plus the change feed and the leases.
    r#"
    CREATE TABLE meta (
        name  TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
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
        created_at                      BIGINT NOT NULL,
        primary_version                 TEXT,
        last_rotation                   BIGINT NOT NULL,
        rotation_enabled                BOOLEAN NOT NULL,
        rotation_interval               BIGINT,
        delete_date                     BIGINT,
        deletion_protection             BOOLEAN NOT NULL,
        deletion_protection_description TEXT NOT NULL,
        material_expire                 BIGINT,
        service                         TEXT,
        material_fingerprint            BYTEA
    );
    CREATE INDEX keys_by_creation ON keys(created_at, key_id);
    CREATE TABLE key_versions (
        version_id TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        sealed     BYTEA NOT NULL,
        ord        BIGSERIAL NOT NULL
    );
    CREATE INDEX key_versions_by_key ON key_versions(key_id, ord);
    CREATE TABLE aliases (
        name       TEXT PRIMARY KEY,
        key_id     TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX aliases_by_key ON aliases(key_id);
    CREATE TABLE import_tokens (
        token_id           TEXT PRIMARY KEY,
        key_id             TEXT NOT NULL REFERENCES keys(key_id) ON DELETE CASCADE,
        wrapping_spec      TEXT NOT NULL,
        wrapping_algorithm TEXT NOT NULL,
        expires_at         BIGINT NOT NULL,
        sealed             BYTEA NOT NULL
    );
    CREATE INDEX import_tokens_by_key ON import_tokens(key_id);
    CREATE TABLE secrets (
        name              TEXT PRIMARY KEY,
        secret_type       TEXT NOT NULL,
        description       TEXT NOT NULL,
        encryption_key_id TEXT NOT NULL,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL,
        planned_delete    BIGINT,
        extended_config   TEXT NOT NULL
    );
    CREATE TABLE secret_versions (
        secret_name TEXT NOT NULL REFERENCES secrets(name) ON DELETE CASCADE,
        version_id  TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        data_type   TEXT NOT NULL,
        stages      TEXT NOT NULL,
        sealed      BYTEA NOT NULL,
        ord         BIGSERIAL NOT NULL,
        PRIMARY KEY (secret_name, version_id)
    );
    CREATE TABLE tags (
        resource_type TEXT NOT NULL,
        resource_id   TEXT NOT NULL,
        tag_key       TEXT NOT NULL,
        tag_value     TEXT NOT NULL,
        PRIMARY KEY (resource_type, resource_id, tag_key)
    );
    CREATE TABLE request_nonces (
        id         BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX request_nonces_by_expiry ON request_nonces(expires_at);
    -- The change feed: one row per committed change list, numbered densely in commit order (every
    -- writer holds the write lock from its catch-up to its commit).
    CREATE TABLE kms_feed (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq BIGINT NOT NULL
    );
    INSERT INTO kms_feed VALUES (1, 0);
    CREATE TABLE kms_changes (
        seq          BIGINT PRIMARY KEY,
        payload      TEXT NOT NULL,
        committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    -- Leases for work one node does at a time (maintenance), timed by the database's clock.
    CREATE TABLE kms_leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    "#,
    // 2: the engine reads on demand instead of loading everything: indexes for list pages in
    // listing order (byte order, `COLLATE "C"`, whatever the database's locale), for counting
    // user keys, and for what maintenance finds due.
    r#"
    DROP INDEX keys_by_creation;
    CREATE INDEX keys_by_creation ON keys(created_at, key_id COLLATE "C");
    CREATE INDEX keys_by_state ON keys(state, created_at, key_id COLLATE "C");
    CREATE INDEX keys_of_users ON keys(key_id) WHERE service IS NULL;
    CREATE INDEX keys_by_delete_date ON keys(delete_date);
    CREATE INDEX keys_by_material_expiry ON keys(material_expire);
    CREATE INDEX keys_rotating ON keys(key_id) WHERE rotation_enabled;
    CREATE INDEX aliases_by_name ON aliases(name COLLATE "C");
    CREATE INDEX secrets_by_name ON secrets(name COLLATE "C");
    CREATE INDEX secrets_by_purge ON secrets(planned_delete);
    CREATE INDEX secret_versions_by_secret ON secret_versions(secret_name, ord);
    CREATE INDEX import_tokens_by_expiry ON import_tokens(expires_at);
    CREATE INDEX tags_in_order ON tags(resource_type, resource_id COLLATE "C", tag_key COLLATE "C");
    CREATE INDEX tags_by_value ON tags(resource_type, tag_value);
    -- What counts against the limits (and the totals of whole listings), kept by triggers in the writing transaction: a count(*)
    -- over every key on each CreateKey would grow with the store (and writes are serialised).
    CREATE TABLE resource_counts (
        kind TEXT PRIMARY KEY,
        n    BIGINT NOT NULL
    );
    INSERT INTO resource_counts VALUES
        ('keys', (SELECT count(*) FROM keys)),
        ('user_keys', (SELECT count(*) FROM keys WHERE service IS NULL)),
        ('aliases', (SELECT count(*) FROM aliases)),
        ('secrets', (SELECT count(*) FROM secrets));
    CREATE FUNCTION kms_count() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        UPDATE resource_counts SET n = n + CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE -1 END
            WHERE kind = TG_ARGV[0];
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER count_keys AFTER INSERT OR DELETE ON keys FOR EACH ROW
        EXECUTE FUNCTION kms_count('keys');
    CREATE TRIGGER count_user_keys_in AFTER INSERT ON keys FOR EACH ROW WHEN (NEW.service IS NULL)
        EXECUTE FUNCTION kms_count('user_keys');
    CREATE TRIGGER count_user_keys_out AFTER DELETE ON keys FOR EACH ROW WHEN (OLD.service IS NULL)
        EXECUTE FUNCTION kms_count('user_keys');
    CREATE TRIGGER count_aliases AFTER INSERT OR DELETE ON aliases FOR EACH ROW
        EXECUTE FUNCTION kms_count('aliases');
    CREATE TRIGGER count_secrets AFTER INSERT OR DELETE ON secrets FOR EACH ROW
        EXECUTE FUNCTION kms_count('secrets');
    "#,
    // 3: writes decided before the write lock (pg_store.rs): each change list names what it
    // touched; at commit, `kms_guard` refuses a decision when a list committed since its position
    // touched what it read (lists written before this migration, with no names, touch
    // everything), and `kms_within` refuses a write that took a counter past its limit. Both
    // raise `serialization_failure`: the writer then decides again under the lock.
    r#"
    ALTER TABLE kms_changes ADD COLUMN touched TEXT[] NOT NULL DEFAULT '{}';
    CREATE FUNCTION kms_guard(after BIGINT, reads TEXT[]) RETURNS void LANGUAGE plpgsql AS $fn$
    BEGIN
        IF after < (SELECT coalesce(min(seq), after + 1) FROM kms_changes) - 1
           OR EXISTS (SELECT 1 FROM kms_changes
                      WHERE seq > after AND (touched && reads OR touched = '{}')) THEN
            RAISE EXCEPTION 'kms: a change list committed since the decision touched what it read'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END
    $fn$;
    CREATE FUNCTION kms_within(counter TEXT, most BIGINT) RETURNS void LANGUAGE plpgsql AS $fn$
    BEGIN
        IF (SELECT n FROM resource_counts WHERE kind = counter) > most THEN
            RAISE EXCEPTION 'kms: % would exceed %', counter, most
                USING ERRCODE = 'serialization_failure';
        END IF;
    END
    $fn$;
    "#,
    // 4: keys and secrets list in insertion order (`list_pos`, given by the inserting statement
    // under the write lock), and triggers count each bucket of 512 positions (keys per filterable
    // group), so a page at any offset reads one count row per bucket and then at most a bucket of
    // rows (reads.rs). Existing rows keep the order they listed in before.
    r#"
    ALTER TABLE keys ADD COLUMN list_pos BIGINT;
    UPDATE keys SET list_pos = r.n
        FROM (SELECT key_id, row_number() OVER (ORDER BY created_at, key_id COLLATE "C") AS n FROM keys) AS r
        WHERE r.key_id = keys.key_id;
    ALTER TABLE keys ALTER COLUMN list_pos SET NOT NULL;
    CREATE UNIQUE INDEX keys_in_order ON keys(list_pos) INCLUDE (key_id);
    DROP INDEX keys_by_creation;
    DROP INDEX keys_by_state;
    CREATE TABLE key_buckets (
        bucket     BIGINT NOT NULL,
        state      TEXT NOT NULL,
        spec       TEXT NOT NULL,
        usage      TEXT NOT NULL,
        protection TEXT NOT NULL,
        by_service BOOLEAN NOT NULL,
        n          BIGINT NOT NULL,
        PRIMARY KEY (bucket, state, spec, usage, protection, by_service)
    );
    INSERT INTO key_buckets
        SELECT list_pos >> 9, state, spec, usage, protection, service IS NOT NULL, count(*)
        FROM keys GROUP BY 1, 2, 3, 4, 5, 6;
    CREATE FUNCTION kms_key_buckets() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            DELETE FROM key_buckets WHERE n = 1 AND bucket = OLD.list_pos >> 9 AND state = OLD.state
                AND spec = OLD.spec AND usage = OLD.usage AND protection = OLD.protection
                AND by_service = (OLD.service IS NOT NULL);
            IF NOT FOUND THEN
                UPDATE key_buckets SET n = n - 1 WHERE bucket = OLD.list_pos >> 9 AND state = OLD.state
                    AND spec = OLD.spec AND usage = OLD.usage AND protection = OLD.protection
                    AND by_service = (OLD.service IS NOT NULL);
            END IF;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO key_buckets VALUES
                (NEW.list_pos >> 9, NEW.state, NEW.spec, NEW.usage, NEW.protection, NEW.service IS NOT NULL, 1)
                ON CONFLICT (bucket, state, spec, usage, protection, by_service)
                DO UPDATE SET n = key_buckets.n + 1;
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER key_buckets AFTER INSERT OR DELETE ON keys FOR EACH ROW
        EXECUTE FUNCTION kms_key_buckets();
    CREATE TRIGGER key_buckets_moved AFTER UPDATE ON keys FOR EACH ROW
        WHEN (OLD.list_pos IS DISTINCT FROM NEW.list_pos OR OLD.state IS DISTINCT FROM NEW.state
            OR OLD.spec IS DISTINCT FROM NEW.spec OR OLD.usage IS DISTINCT FROM NEW.usage
            OR OLD.protection IS DISTINCT FROM NEW.protection
            OR (OLD.service IS NULL) IS DISTINCT FROM (NEW.service IS NULL))
        EXECUTE FUNCTION kms_key_buckets();
    ALTER TABLE secrets ADD COLUMN list_pos BIGINT;
    UPDATE secrets SET list_pos = r.n
        FROM (SELECT name, row_number() OVER (ORDER BY created_at, name COLLATE "C") AS n FROM secrets) AS r
        WHERE r.name = secrets.name;
    ALTER TABLE secrets ALTER COLUMN list_pos SET NOT NULL;
    CREATE UNIQUE INDEX secrets_in_order ON secrets(list_pos);
    CREATE TABLE secret_buckets (
        bucket BIGINT PRIMARY KEY,
        n      BIGINT NOT NULL
    );
    INSERT INTO secret_buckets SELECT list_pos >> 9, count(*) FROM secrets GROUP BY 1;
    CREATE FUNCTION kms_secret_buckets() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM secret_buckets WHERE n = 1 AND bucket = OLD.list_pos >> 9;
            IF NOT FOUND THEN
                UPDATE secret_buckets SET n = n - 1 WHERE bucket = OLD.list_pos >> 9;
            END IF;
        ELSE
            INSERT INTO secret_buckets VALUES (NEW.list_pos >> 9, 1)
                ON CONFLICT (bucket) DO UPDATE SET n = secret_buckets.n + 1;
        END IF;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER secret_buckets AFTER INSERT OR DELETE ON secrets FOR EACH ROW
        EXECUTE FUNCTION kms_secret_buckets();
    "#,
    // 5: fewer statements per write (every writer waits for the one lock, so the server's work
    // per write bounds the cluster's write rate). `kms_open_batch` takes the lock, checks every
    // decision of a batch and returns the lists committed since the earliest position in one
    // statement; `kms_append` numbers, appends and announces all of a batch's lists in one; a
    // key row's two counters are kept by one trigger instead of three.
    r#"
    CREATE FUNCTION kms_open_batch(lock_id BIGINT, since BIGINT, afters BIGINT[], names TEXT[])
        RETURNS TABLE (seq BIGINT, payload TEXT) LANGUAGE plpgsql AS $fn$
    DECLARE
        c RECORD;
        n INT := 0;
    BEGIN
        PERFORM pg_advisory_xact_lock(lock_id);
        -- Each query below reads a snapshot taken after the lock was granted.
        IF since < (SELECT coalesce(min(k.seq), since + 1) FROM kms_changes k) - 1 THEN
            RAISE EXCEPTION 'kms: the decision is older than the kept change lists'
                USING ERRCODE = 'serialization_failure';
        END IF;
        -- In order by the primary key, bounded: a node this far behind decides under the lock.
        FOR c IN SELECT k.seq, k.payload, k.touched FROM kms_changes k
                 WHERE k.seq > since ORDER BY k.seq LIMIT 1001 LOOP
            n := n + 1;
            IF n > 1000 OR c.touched = '{}'
               OR (c.touched && names AND EXISTS (SELECT 1 FROM unnest(afters, names) AS d(after, name)
                                                  WHERE c.seq > d.after AND d.name = ANY (c.touched))) THEN
                RAISE EXCEPTION 'kms: a change list committed since the decision touched what it read'
                    USING ERRCODE = 'serialization_failure';
            END IF;
            seq := c.seq;
            payload := c.payload;
            RETURN NEXT;
        END LOOP;
    END
    $fn$;
    CREATE FUNCTION kms_append(payloads TEXT[], touched TEXT[], channel TEXT) RETURNS BIGINT
        LANGUAGE plpgsql AS $fn$
    DECLARE
        last BIGINT;
        n    INT := cardinality(payloads);
    BEGIN
        UPDATE kms_feed SET last_seq = last_seq + n WHERE id = 1 RETURNING last_seq INTO last;
        INSERT INTO kms_changes (seq, payload, touched)
            SELECT last - n + l.i, l.payload, ARRAY(SELECT json_array_elements_text(l.names::json))
            FROM unnest(payloads, touched) WITH ORDINALITY AS l(payload, names, i);
        PERFORM pg_notify(channel, last::text);
        RETURN last - n + 1;
    END
    $fn$;
    CREATE FUNCTION kms_key_counts() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        r keys;
        d INT;
    BEGIN
        IF TG_OP = 'INSERT' THEN r := NEW; d := 1; ELSE r := OLD; d := -1; END IF;
        UPDATE resource_counts SET n = n + d
            WHERE kind = 'keys' OR (kind = 'user_keys' AND r.service IS NULL);
        RETURN NULL;
    END
    $fn$;
    DROP TRIGGER count_keys ON keys;
    DROP TRIGGER count_user_keys_in ON keys;
    DROP TRIGGER count_user_keys_out ON keys;
    CREATE TRIGGER key_counts AFTER INSERT OR DELETE ON keys FOR EACH ROW EXECUTE FUNCTION kms_key_counts();
    "#,
    // 6: the guards read `kms_changes` in primary-key order whatever the statistics say. The
    // table starts empty, and a plan made then – kept by each connection for its life, until an
    // ANALYZE happens to invalidate it – scans and sorts the whole table (an hour of lists) under
    // the write lock: 0.55 ms per batch a minute into a fresh cluster, growing with the table. A
    // range of the primary key is always best walked by its index.
    r#"
    ALTER FUNCTION kms_open_batch(BIGINT, BIGINT, BIGINT[], TEXT[]) SET enable_seqscan = off;
    ALTER FUNCTION kms_guard(BIGINT, TEXT[]) SET enable_seqscan = off;
    "#,
];

/// Brings the schema up to date. A database written by a newer build is refused, not downgraded.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await?;
    let r = run(client).await;
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
    r?;
    unlock?;
    Ok(())
}

async fn run(client: &mut Client) -> Result<(), StoreError> {
    client.batch_execute("CREATE TABLE IF NOT EXISTS kms_schema (version INTEGER NOT NULL)").await?;
    let current: i32 = match client.query_opt("SELECT version FROM kms_schema", &[]).await? {
        Some(r) => r.try_get(0)?,
        None => {
            client.execute("INSERT INTO kms_schema VALUES (0)", &[]).await?;
            0
        }
    };
    let current = current.max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError(format!(
            "the database has schema version {current}, newer than this build knows ({}); upgrade kms-core",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError(format!("migration {}: {}", i + 1, super::postgres::describe(&e))))?;
        tx.execute("UPDATE kms_schema SET version = $1", &[&((i + 1) as i32)]).await?;
        tx.commit().await?;
    }
    Ok(())
}
