//! Reading rows, once for both drivers: [`Db`] runs a statement and hands each row to a closure as
//! [`Fields`]; the record decoders below read those. The backends differ only in a few words of
//! SQL ([`Dialect`]).

use std::collections::HashMap;

use postgres::{Client, GenericClient, Statement};

use super::statements::Value;
use super::StoreError;
use crate::model::{
    AliasRecord, ImportTokenRecord, KeyRecord, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, SecretRecord,
    SecretVersionRecord, VersionRecord,
};

/// What differs between the backends' SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The column that orders versions by insertion.
    pub fn insertion_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "ord",
        }
    }

    /// `col` contains the text bound to `param`, case-sensitively.
    pub fn contains(self, col: &str, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({col}, {param}) > 0"),
            Dialect::Postgres => format!("strpos({col}, {param}) > 0"),
        }
    }

    /// Makes a query on `table` walk the index `index` (SQLite would rather serve an `IN (…)`
    /// condition from another index and sort; PostgreSQL's planner picks the position index
    /// itself).
    pub fn walk_index(self, table: &str, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{table} INDEXED BY {index}"),
            Dialect::Postgres => table.to_string(),
        }
    }

    /// Byte order for text, as SQLite and Rust sort (PostgreSQL's default follows the locale).
    pub fn bytewise(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        }
    }

    /// Opens a read-only transaction that sees one snapshot.
    pub fn begin_snapshot(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        }
    }
}

/// One row's columns by position.
pub trait Fields {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn flag(&self, i: usize) -> Result<bool, StoreError>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError>;
    fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
}

/// A connection that reads.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs `sql` (`$n` placeholders) and passes each row to `row`.
    fn each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        row: &mut dyn FnMut(&dyn Fields) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Runs statements without results (transaction control).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

/// Runs `f` inside one read snapshot, so what it reads in several statements belongs together.
pub fn in_snapshot<R>(db: &mut dyn Db, f: impl FnOnce(&mut dyn Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
    db.batch(db.dialect().begin_snapshot())?;
    let r = f(db);
    let end = db.batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let r = r?;
    end?;
    Ok(r)
}

/// Every row of `sql`, decoded by `decode`.
pub fn all<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Value<'_>],
    decode: impl Fn(&dyn Fields) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    db.each(sql, params, &mut |r| {
        out.push(decode(r)?);
        Ok(())
    })?;
    Ok(out)
}

/// The first row of `sql`, if any.
pub fn first<T>(
    db: &mut dyn Db,
    sql: &str,
    params: &[Value<'_>],
    decode: impl Fn(&dyn Fields) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    Ok(all(db, sql, params, decode)?.into_iter().next())
}

fn parsed<T>(r: &dyn Fields, i: usize, what: &str, f: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let s = r.text(i)?;
    f(&s).ok_or_else(|| StoreError(format!("column {what}: unknown value {s:?}")))
}

pub const KEY_COLUMNS: &str = "key_id, spec, usage, origin, protection, creator, description, state, \
     state_before_deletion, created_at, primary_version, last_rotation, rotation_enabled, rotation_interval, \
     delete_date, deletion_protection, deletion_protection_description, material_expire, service, \
     material_fingerprint";

/// A row of [`KEY_COLUMNS`].
pub fn key(r: &dyn Fields) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        key_id: r.text(0)?,
        spec: parsed(r, 1, "spec", KeySpec::parse)?,
        usage: parsed(r, 2, "usage", KeyUsage::parse)?,
        origin: parsed(r, 3, "origin", Origin::parse)?,
        protection: parsed(r, 4, "protection", ProtectionLevel::parse)?,
        creator: r.text(5)?,
        description: r.text(6)?,
        state: parsed(r, 7, "state", KeyState::parse)?,
        state_before_deletion: r.opt_text(8)?.as_deref().and_then(KeyState::parse),
        created_at: r.int(9)?,
        primary_version: r.opt_text(10)?,
        last_rotation: r.int(11)?,
        rotation_enabled: r.flag(12)?,
        rotation_interval: r.opt_int(13)?,
        delete_date: r.opt_int(14)?,
        deletion_protection: r.flag(15)?,
        deletion_protection_description: r.text(16)?,
        material_expire: r.opt_int(17)?,
        service: r.opt_text(18)?,
        material_fingerprint: r.opt_bytes(19)?,
    })
}

pub const VERSION_COLUMNS: &str = "version_id, key_id, created_at, sealed";

pub fn version(r: &dyn Fields) -> Result<VersionRecord, StoreError> {
    Ok(VersionRecord { version_id: r.text(0)?, key_id: r.text(1)?, created_at: r.int(2)?, sealed: r.bytes(3)? })
}

pub const ALIAS_COLUMNS: &str = "name, key_id, created_at";

pub fn alias(r: &dyn Fields) -> Result<AliasRecord, StoreError> {
    Ok(AliasRecord { name: r.text(0)?, key_id: r.text(1)?, created_at: r.int(2)? })
}

pub const IMPORT_TOKEN_COLUMNS: &str = "token_id, key_id, wrapping_spec, wrapping_algorithm, expires_at, sealed";

pub fn import_token(r: &dyn Fields) -> Result<ImportTokenRecord, StoreError> {
    Ok(ImportTokenRecord {
        token_id: r.text(0)?,
        key_id: r.text(1)?,
        wrapping_spec: parsed(r, 2, "wrapping_spec", KeySpec::parse)?,
        wrapping_algorithm: r.text(3)?,
        expires_at: r.int(4)?,
        sealed: r.bytes(5)?,
    })
}

pub const SECRET_COLUMNS: &str =
    "name, secret_type, description, encryption_key_id, created_at, updated_at, planned_delete, extended_config";

pub fn secret(r: &dyn Fields) -> Result<SecretRecord, StoreError> {
    Ok(SecretRecord {
        name: r.text(0)?,
        secret_type: r.text(1)?,
        description: r.text(2)?,
        encryption_key_id: r.text(3)?,
        created_at: r.int(4)?,
        updated_at: r.int(5)?,
        planned_delete: r.opt_int(6)?,
        extended_config: r.text(7)?,
    })
}

pub const SECRET_VERSION_COLUMNS: &str = "secret_name, version_id, created_at, data_type, stages, sealed";

pub fn secret_version(r: &dyn Fields) -> Result<SecretVersionRecord, StoreError> {
    let stages = r.text(4)?;
    Ok(SecretVersionRecord {
        secret_name: r.text(0)?,
        version_id: r.text(1)?,
        created_at: r.int(2)?,
        data_type: r.text(3)?,
        stages: serde_json::from_str(&stages).map_err(|e| StoreError(format!("secret version stages: {e}")))?,
        sealed: r.bytes(5)?,
    })
}

/// A `(key, value)` pair.
pub fn pair(r: &dyn Fields) -> Result<(String, String), StoreError> {
    Ok((r.text(0)?, r.text(1)?))
}

/// `Fields` for a driver's row type whose typed getter is `$get` (both return their own error).
macro_rules! fields_by {
    ($row:ty, $get:ident) => {
        impl Fields for $row {
            fn text(&self, i: usize) -> Result<String, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn int(&self, i: usize) -> Result<i64, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn flag(&self, i: usize) -> Result<bool, StoreError> {
                Ok(self.$get(i)?)
            }
            fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
                Ok(self.$get(i)?)
            }
            fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(self.$get(i)?)
            }
        }
    };
}

fields_by!(rusqlite::Row<'_>, get);
fields_by!(postgres::Row, try_get);

impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        row: &mut dyn FnMut(&dyn Fields) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(r) = rows.next()? {
            row(r)?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.execute_batch(sql)?)
    }
}

/// Prepared statements of one PostgreSQL connection, by their text. Bounded: list queries are
/// built from the filters a request gives, so their texts vary.
#[derive(Default)]
pub struct Prepared(HashMap<String, Statement>);

impl Prepared {
    const MAX: usize = 256;

    pub fn get(&mut self, c: &mut impl GenericClient, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql)?;
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A PostgreSQL connection with its statements, as a [`Db`].
pub struct PgDb<'a> {
    pub client: &'a mut Client,
    pub prepared: &'a mut Prepared,
}

impl Db for PgDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        row: &mut dyn FnMut(&dyn Fields) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let stmt = self.prepared.get(self.client, sql)?;
        use postgres::fallible_iterator::FallibleIterator;
        // Streamed: a listing or the secret directory's build never holds every row at once.
        let mut rows =
            self.client.query_raw(&stmt, params.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)))?;
        while let Some(r) = rows.next()? {
            row(&r)?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql)?)
    }
}
