//! What each [`Change`] writes, once for both backends: the SQL (`$n` placeholders, which SQLite
//! reads as parameters numbered in order of appearance) and its values in a driver-neutral
//! [`Value`]. Each backend only binds the values (`sqlite.rs`, `postgres.rs`). The reads every
//! backend shares are here too.

use super::Change;

/// One bound value.
#[derive(Debug)]
pub enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    /// Text made for the statement (a secret version's stages as JSON).
    Owned(String),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Bytes(&'a [u8]),
    OptBytes(Option<&'a [u8]>),
}

pub type Statement<'a> = (&'static str, Vec<Value<'a>>);

const PUT_KEY: &str = "INSERT INTO keys(key_id, spec, usage, origin, protection, creator, description, state,
         state_before_deletion, created_at, primary_version, last_rotation, rotation_enabled,
         rotation_interval, delete_date, deletion_protection, deletion_protection_description,
         material_expire, service, material_fingerprint, list_pos)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
         (SELECT coalesce(max(list_pos), 0) + 1 FROM keys))
     ON CONFLICT (key_id) DO UPDATE SET
         spec = excluded.spec, usage = excluded.usage, origin = excluded.origin,
         protection = excluded.protection, creator = excluded.creator,
         description = excluded.description, state = excluded.state,
         state_before_deletion = excluded.state_before_deletion,
         primary_version = excluded.primary_version, last_rotation = excluded.last_rotation,
         rotation_enabled = excluded.rotation_enabled, rotation_interval = excluded.rotation_interval,
         delete_date = excluded.delete_date, deletion_protection = excluded.deletion_protection,
         deletion_protection_description = excluded.deletion_protection_description,
         material_expire = excluded.material_expire, service = excluded.service,
         material_fingerprint = excluded.material_fingerprint";
const PUT_VERSION: &str = "INSERT INTO key_versions(version_id, key_id, created_at, sealed) VALUES ($1, $2, $3, $4)
     ON CONFLICT (version_id) DO UPDATE SET sealed = excluded.sealed";
const DELETE_KEY: &str = "DELETE FROM keys WHERE key_id = $1";
const DELETE_KEY_TAGS: &str = "DELETE FROM tags WHERE resource_type = 'key' AND resource_id = $1";
const PUT_ALIAS: &str = "INSERT INTO aliases(name, key_id, created_at) VALUES ($1, $2, $3)
     ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id";
const DELETE_ALIAS: &str = "DELETE FROM aliases WHERE name = $1";
const PUT_IMPORT_TOKEN: &str =
    "INSERT INTO import_tokens(token_id, key_id, wrapping_spec, wrapping_algorithm, expires_at, sealed)
     VALUES ($1, $2, $3, $4, $5, $6)";
const DELETE_IMPORT_TOKEN: &str = "DELETE FROM import_tokens WHERE token_id = $1";
const PUT_SECRET: &str =
    "INSERT INTO secrets(name, secret_type, description, encryption_key_id, created_at, updated_at,
         planned_delete, extended_config, list_pos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
         (SELECT coalesce(max(list_pos), 0) + 1 FROM secrets))
     ON CONFLICT (name) DO UPDATE SET secret_type = excluded.secret_type,
         description = excluded.description, encryption_key_id = excluded.encryption_key_id,
         updated_at = excluded.updated_at, planned_delete = excluded.planned_delete,
         extended_config = excluded.extended_config";
const DELETE_SECRET: &str = "DELETE FROM secrets WHERE name = $1";
const DELETE_SECRET_TAGS: &str = "DELETE FROM tags WHERE resource_type = 'secret' AND resource_id = $1";
const PUT_SECRET_VERSION: &str =
    "INSERT INTO secret_versions(secret_name, version_id, created_at, data_type, stages, sealed)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (secret_name, version_id) DO UPDATE SET stages = excluded.stages";
const DELETE_SECRET_VERSION: &str = "DELETE FROM secret_versions WHERE secret_name = $1 AND version_id = $2";
const PUT_TAG: &str = "INSERT INTO tags(resource_type, resource_id, tag_key, tag_value) VALUES ($1, $2, $3, $4)
     ON CONFLICT (resource_type, resource_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
const DELETE_TAG: &str = "DELETE FROM tags WHERE resource_type = $1 AND resource_id = $2 AND tag_key = $3";

/// The statements that apply `c`, in order.
pub fn for_change(c: &Change) -> Vec<Statement<'_>> {
    use Value::*;
    match c {
        Change::PutKey(k) => vec![(
            PUT_KEY,
            vec![
                Text(&k.key_id),
                Text(k.spec.as_str()),
                Text(k.usage.as_str()),
                Text(k.origin.as_str()),
                Text(k.protection.as_str()),
                Text(&k.creator),
                Text(&k.description),
                Text(k.state.as_str()),
                OptText(k.state_before_deletion.map(|s| s.as_str())),
                Int(k.created_at),
                OptText(k.primary_version.as_deref()),
                Int(k.last_rotation),
                Bool(k.rotation_enabled),
                OptInt(k.rotation_interval),
                OptInt(k.delete_date),
                Bool(k.deletion_protection),
                Text(&k.deletion_protection_description),
                OptInt(k.material_expire),
                OptText(k.service.as_deref()),
                OptBytes(k.material_fingerprint.as_deref()),
            ],
        )],
        Change::PutVersion(v) => {
            vec![(PUT_VERSION, vec![Text(&v.version_id), Text(&v.key_id), Int(v.created_at), Bytes(&v.sealed)])]
        }
        Change::DeleteKey(id) => vec![(DELETE_KEY, vec![Text(id)]), (DELETE_KEY_TAGS, vec![Text(id)])],
        Change::PutAlias(a) => vec![(PUT_ALIAS, vec![Text(&a.name), Text(&a.key_id), Int(a.created_at)])],
        Change::DeleteAlias(name) => vec![(DELETE_ALIAS, vec![Text(name)])],
        Change::PutImportToken(t) => vec![(
            PUT_IMPORT_TOKEN,
            vec![
                Text(&t.token_id),
                Text(&t.key_id),
                Text(t.wrapping_spec.as_str()),
                Text(&t.wrapping_algorithm),
                Int(t.expires_at),
                Bytes(&t.sealed),
            ],
        )],
        Change::DeleteImportToken(id) => vec![(DELETE_IMPORT_TOKEN, vec![Text(id)])],
        Change::PutSecret(s) => vec![(
            PUT_SECRET,
            vec![
                Text(&s.name),
                Text(&s.secret_type),
                Text(&s.description),
                Text(&s.encryption_key_id),
                Int(s.created_at),
                Int(s.updated_at),
                OptInt(s.planned_delete),
                Text(&s.extended_config),
            ],
        )],
        Change::DeleteSecret(name) => vec![(DELETE_SECRET, vec![Text(name)]), (DELETE_SECRET_TAGS, vec![Text(name)])],
        Change::PutSecretVersion(v) => vec![(
            PUT_SECRET_VERSION,
            vec![
                Text(&v.secret_name),
                Text(&v.version_id),
                Int(v.created_at),
                Text(&v.data_type),
                Owned(serde_json::to_string(&v.stages).expect("strings serialise")),
                Bytes(&v.sealed),
            ],
        )],
        Change::DeleteSecretVersion { secret_name, version_id } => {
            vec![(DELETE_SECRET_VERSION, vec![Text(secret_name), Text(version_id)])]
        }
        Change::PutTag { resource_type, resource_id, key, value } => {
            vec![(PUT_TAG, vec![Text(resource_type.as_str()), Text(resource_id), Text(key), Text(value)])]
        }
        Change::DeleteTag { resource_type, resource_id, key } => {
            vec![(DELETE_TAG, vec![Text(resource_type.as_str()), Text(resource_id), Text(key)])]
        }
    }
}

// Statements both backends run as they are.
pub const META_GET: &str = "SELECT value FROM meta WHERE name = $1";
pub const META_PUT: &str =
    "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value";
/// Stores a value whose first 8 bytes are a big-endian counter, unless the stored one's counter
/// is not smaller: one statement, so a value never moves backwards and needs no read first.
pub const META_ADVANCE: &str = "INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name)
     DO UPDATE SET value = excluded.value WHERE substr(meta.value, 1, 8) < substr(excluded.value, 1, 8)";
/// `ON CONFLICT DO NOTHING`: one row changed for a fresh nonce, none for a replay – and none for
/// a claim that expires at or before the purge horizon ($3 = [`NONCE_HORIZON_ID`]): a request
/// like it may have been claimed and purged already.
pub const CLAIM_NONCE: &str = "INSERT INTO request_nonces (id, expires_at) SELECT $1, $2
     WHERE NOT EXISTS (SELECT 1 FROM request_nonces WHERE id = $3 AND expires_at >= $2) ON CONFLICT DO NOTHING";
/// The row holding the purge horizon: the latest expiry a purge removed. Claims are 16-byte
/// hashes, so the empty id is never one.
pub const NONCE_HORIZON_ID: &[u8] = b"";
/// Raises the horizon ($1 = [`NONCE_HORIZON_ID`]) to the latest expiry [`PURGE_NONCES`] is about
/// to remove, never lowers it. The latest removed, not `now` ($2): after a clock stepped back,
/// only requests no later than one already forgotten are refused – not every request until the
/// clock catches up. Run before the purge: a crash between the two leaves rows the horizon
/// already covers, never forgotten rows it does not.
/// (SQLite numbers `$n` parameters in the order they first appear: here and in every statement
/// both backends share, they appear in order.)
pub const ADVANCE_NONCE_HORIZON: &str = "INSERT INTO request_nonces (id, expires_at)
     SELECT $1, m FROM (SELECT max(expires_at) AS m FROM request_nonces WHERE id <> $1 AND expires_at < $2) AS due
     WHERE m IS NOT NULL
     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at WHERE request_nonces.expires_at < excluded.expires_at";
/// Forgets the claims that expired before $2, but not the horizon ($1 = [`NONCE_HORIZON_ID`]).
pub const PURGE_NONCES: &str = "DELETE FROM request_nonces WHERE id <> $1 AND expires_at < $2";

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(s) => s.to_sql(),
            Value::OptText(s) => s.to_sql(),
            Value::Owned(s) => s.to_sql(),
            Value::Int(i) => i.to_sql(),
            Value::OptInt(i) => i.to_sql(),
            Value::Bool(b) => b.to_sql(),
            Value::Bytes(b) => b.to_sql(),
            Value::OptBytes(b) => b.to_sql(),
        }
    }
}

impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Each arm checks that its own type fits the column, as the driver would.
        match self {
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::OptText(s) => s.to_sql_checked(ty, out),
            Value::Owned(s) => s.to_sql_checked(ty, out),
            Value::Int(i) => i.to_sql_checked(ty, out),
            Value::OptInt(i) => i.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
            Value::Bytes(b) => b.to_sql_checked(ty, out),
            Value::OptBytes(b) => b.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}
