//! What the engine reads from the store on demand, written once for both backends: one
//! resource with everything that belongs to it (read in one snapshot), list pages (ordered and
//! cut in SQL), counts for limits, and what maintenance finds due.

use super::rows::{self, all, first, in_snapshot, Db, Dialect};
use super::statements::Value;
use super::StoreError;
use crate::model::{
    AliasRecord, ImportTokenRecord, KeyRecord, ResourceType, SecretRecord, SecretVersionRecord, VersionRecord,
};

/// A key with its versions (oldest first) and tags (by tag key).
#[derive(Debug)]
pub struct KeyRows {
    pub key: KeyRecord,
    pub versions: Vec<VersionRecord>,
    pub tags: Vec<(String, String)>,
}

/// A secret with its versions (oldest first) and tags (by tag key).
#[derive(Debug)]
pub struct SecretRows {
    pub secret: SecretRecord,
    pub versions: Vec<SecretVersionRecord>,
    pub tags: Vec<(String, String)>,
}

/// One page of a listing and how many items the whole listing has.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// A condition of ListKeys (every one must hold; one of its values must match).
#[derive(Debug, Clone)]
pub enum KeyCond {
    State(Vec<String>),
    Spec(Vec<String>),
    Usage(Vec<String>),
    Protection(Vec<String>),
    /// Created by a user (no service), by a service, or either.
    Creator {
        user: bool,
        service: bool,
    },
}

/// What ListSecrets shows of a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretSummary {
    pub name: String,
    pub secret_type: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub planned_delete: Option<i64>,
}

const SUMMARY_COLUMNS: &str = "name, secret_type, created_at, updated_at, planned_delete";

fn summary(r: &dyn rows::Fields) -> Result<SecretSummary, StoreError> {
    Ok(SecretSummary {
        name: r.text(0)?,
        secret_type: r.text(1)?,
        created_at: r.int(2)?,
        updated_at: r.int(3)?,
        planned_delete: r.opt_int(4)?,
    })
}

/// One row of what the secret directory is built from.
pub enum DirectoryRow<'a> {
    /// A secret, in listing order (its key id and extended configuration left empty).
    Secret(SecretRecord),
    Tag {
        name: &'a str,
        key: &'a str,
        value: &'a str,
    },
}

/// Everything the secret directory holds (`engine/directory.rs`), read in one snapshot and
/// handed over row by row (a whole store's rows at once would cost more memory than the
/// directory): the secrets, then their tags. Returns the last change list the snapshot includes
/// on a shared store (0 on SQLite).
pub fn secret_directory(db: &mut dyn Db, sink: &mut dyn FnMut(DirectoryRow<'_>)) -> Result<u64, StoreError> {
    in_snapshot(db, |db| {
        let seq = match db.dialect() {
            Dialect::Sqlite => 0,
            Dialect::Postgres => {
                first(db, "SELECT last_seq FROM kms_feed WHERE id = 1", &[], |r| r.int(0))?.unwrap_or(0).max(0) as u64
            }
        };
        let sql = "SELECT name, secret_type, description, created_at, updated_at, planned_delete FROM secrets \
                   ORDER BY list_pos";
        db.each(sql, &[], &mut |r| {
            sink(DirectoryRow::Secret(SecretRecord {
                name: r.text(0)?,
                secret_type: r.text(1)?,
                description: r.text(2)?,
                encryption_key_id: String::new(),
                created_at: r.int(3)?,
                updated_at: r.int(4)?,
                planned_delete: r.opt_int(5)?,
                extended_config: String::new(),
            }));
            Ok(())
        })?;
        let sql = "SELECT resource_id, tag_key, tag_value FROM tags WHERE resource_type = 'secret'";
        db.each(sql, &[], &mut |r| {
            sink(DirectoryRow::Tag { name: &r.text(0)?, key: &r.text(1)?, value: &r.text(2)? });
            Ok(())
        })?;
        Ok(seq)
    })
}

/// A condition of ListSecrets.
#[derive(Debug, Clone)]
pub enum SecretCond {
    NameContains(Vec<String>),
    DescriptionContains(Vec<String>),
    TagKey(Vec<String>),
    TagValue(Vec<String>),
}

/// A counter the schema's triggers keep: totals of whole listings, and what counts against a
/// limit.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Keys,
    UserKeys,
    Aliases,
    Secrets,
}

impl Count {
    const ALL: [Count; 4] = [Count::Keys, Count::UserKeys, Count::Aliases, Count::Secrets];

    /// The listing whose every change can change it (`footprint.rs`).
    pub fn listing(self) -> &'static str {
        match self {
            Count::Keys | Count::UserKeys => super::footprint::KEYS,
            Count::Aliases => super::footprint::ALIASES,
            Count::Secrets => super::footprint::SECRETS,
        }
    }

    /// Its row in `resource_counts`.
    pub fn row(self) -> &'static str {
        match self {
            Count::Keys => "keys",
            Count::UserKeys => "user_keys",
            Count::Aliases => "aliases",
            Count::Secrets => "secrets",
        }
    }
}

/// Counters read in a write's own transaction under the write lock: exact for its decision, and
/// no extra read while every other writer waits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts([Option<u64>; 4]);

impl Counts {
    /// Records the `resource_counts` row `kind` (rows this build does not know are ignored).
    pub fn set(&mut self, kind: &str, n: i64) {
        if let Some(i) = Count::ALL.iter().position(|c| c.row() == kind) {
            self.0[i] = Some(n.max(0) as u64);
        }
    }

    pub fn get(&self, what: Count) -> Option<u64> {
        self.0[what as usize]
    }
}

/// What a maintenance pass should look at (each is re-checked before it is acted on).
#[derive(Debug, Default)]
pub struct Due {
    pub rotation: Vec<String>,
    pub deletion: Vec<String>,
    pub material_expiry: Vec<String>,
    pub secret_purge: Vec<String>,
    pub import_tokens: Vec<String>,
}

/// Bound values in order of their `$n`.
#[derive(Default)]
struct Params(Vec<Value<'static>>);

impl Params {
    fn text(&mut self, s: &str) -> String {
        self.0.push(Value::Owned(s.to_string()));
        format!("${}", self.0.len())
    }

    fn int(&mut self, i: i64) -> String {
        self.0.push(Value::Int(i));
        format!("${}", self.0.len())
    }

    fn list(&mut self, values: &[String]) -> String {
        values.iter().map(|v| self.text(v)).collect::<Vec<_>>().join(", ")
    }
}

pub fn key(db: &mut dyn Db, id: &str) -> Result<Option<KeyRows>, StoreError> {
    let order = db.dialect().insertion_order();
    in_snapshot(db, |db| {
        let sql = format!("SELECT {} FROM keys WHERE key_id = $1", rows::KEY_COLUMNS);
        let Some(key) = first(db, &sql, &[Value::Text(id)], rows::key)? else { return Ok(None) };
        let sql = format!("SELECT {} FROM key_versions WHERE key_id = $1 ORDER BY {order}", rows::VERSION_COLUMNS);
        let versions = all(db, &sql, &[Value::Text(id)], rows::version)?;
        let tags = tags(db, ResourceType::Key, id)?;
        Ok(Some(KeyRows { key, versions, tags }))
    })
}

pub fn secret(db: &mut dyn Db, name: &str) -> Result<Option<SecretRows>, StoreError> {
    let order = db.dialect().insertion_order();
    in_snapshot(db, |db| {
        let sql = format!("SELECT {} FROM secrets WHERE name = $1", rows::SECRET_COLUMNS);
        let Some(secret) = first(db, &sql, &[Value::Text(name)], rows::secret)? else { return Ok(None) };
        let sql = format!(
            "SELECT {} FROM secret_versions WHERE secret_name = $1 ORDER BY {order}",
            rows::SECRET_VERSION_COLUMNS
        );
        let versions = all(db, &sql, &[Value::Text(name)], rows::secret_version)?;
        let tags = tags(db, ResourceType::Secret, name)?;
        Ok(Some(SecretRows { secret, versions, tags }))
    })
}

fn tags(db: &mut dyn Db, rt: ResourceType, id: &str) -> Result<Vec<(String, String)>, StoreError> {
    let sql = format!(
        "SELECT tag_key, tag_value FROM tags WHERE resource_type = $1 AND resource_id = $2 ORDER BY tag_key{}",
        db.dialect().bytewise()
    );
    all(db, &sql, &[Value::Text(rt.as_str()), Value::Text(id)], rows::pair)
}

pub fn alias(db: &mut dyn Db, name: &str) -> Result<Option<AliasRecord>, StoreError> {
    let sql = format!("SELECT {} FROM aliases WHERE name = $1", rows::ALIAS_COLUMNS);
    first(db, &sql, &[Value::Text(name)], rows::alias)
}

pub fn import_token(db: &mut dyn Db, id: &str) -> Result<Option<ImportTokenRecord>, StoreError> {
    let sql = format!("SELECT {} FROM import_tokens WHERE token_id = $1", rows::IMPORT_TOKEN_COLUMNS);
    first(db, &sql, &[Value::Text(id)], rows::import_token)
}

/// Some key kept in the HSM, if the store has any (an engine without the token refuses to open).
pub fn any_hsm_key(db: &mut dyn Db) -> Result<Option<String>, StoreError> {
    first(db, "SELECT key_id FROM keys WHERE protection = 'HSM' LIMIT 1", &[], |r| r.text(0))
}

/// The number of rows `sql` (a `SELECT count(*) …`) counts.
fn count_of(db: &mut dyn Db, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
    Ok(first(db, sql, params, |r| r.int(0))?.unwrap_or(0).max(0) as u64)
}

pub fn count(db: &mut dyn Db, what: Count) -> Result<u64, StoreError> {
    let kind = what.row();
    let n = first(db, "SELECT n FROM resource_counts WHERE kind = $1", &[Value::Text(kind)], |r| r.int(0))?;
    // A missing row is a damaged schema, not an empty store.
    n.map(|n| n.max(0) as u64).ok_or_else(|| StoreError(format!("resource_counts has no row {kind:?}")))
}

/// A listing's query: what to select, from where (with the conditions, whose bound values are
/// `params`), in which order (columns, ascending).
struct Listing<'a> {
    params: Params,
    select: &'a str,
    from_where: String,
    order: Vec<String>,
    /// The counter that holds the listing's total, when it lists everything.
    counter: Option<Count>,
}

/// A page of a listing, with the listing's total. A page in the second half is read from the
/// end (descending, then reversed), so that no page skips more than half the listing: the last
/// page costs what the first does.
fn page<T>(
    db: &mut dyn Db,
    listing: Listing<'_>,
    offset: u64,
    limit: u32,
    decode: impl Fn(&dyn rows::Fields) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let Listing { mut params, select, from_where, order, counter } = listing;
    let n = params.0.len();
    in_snapshot(db, |db| {
        let total = match counter {
            Some(c) => count(db, c)?,
            None => count_of(db, &format!("SELECT count(*) {from_where}"), &params.0)?,
        };
        if offset >= total {
            return Ok(Page { items: Vec::new(), total });
        }
        let take = (limit as u64).min(total - offset);
        let from_end = offset > total / 2;
        let (skip, dir) = if from_end { (total - offset - take, " DESC") } else { (offset, "") };
        let order: Vec<String> = order.iter().map(|c| format!("{c}{dir}")).collect();
        params.0.truncate(n);
        let lim = params.int(take as i64);
        let off = params.int(skip as i64);
        let sql = format!("SELECT {select} {from_where} ORDER BY {} LIMIT {lim} OFFSET {off}", order.join(", "));
        let mut items = all(db, &sql, &params.0, &decode)?;
        if from_end {
            items.reverse();
        }
        Ok(Page { items, total })
    })
}

/// Key ids in listing order (insertion order: oldest first) matching every condition.
pub fn key_ids(db: &mut dyn Db, conds: &[KeyCond], offset: u64, limit: u32) -> Result<Page<String>, StoreError> {
    let mut p = Params::default();
    // The same condition on a key row and on its bucket count's group (the same column names;
    // the bucket records whether a service owns the key).
    let mut clauses = Vec::new();
    let mut group = Vec::new();
    for c in conds {
        let (col, values) = match c {
            KeyCond::State(v) => ("state", v),
            KeyCond::Spec(v) => ("spec", v),
            KeyCond::Usage(v) => ("usage", v),
            KeyCond::Protection(v) => ("protection", v),
            KeyCond::Creator { user, service } => {
                let (row, bucket) = match (user, service) {
                    (true, true) => continue,
                    (true, false) => ("service IS NULL", "NOT by_service"),
                    (false, true) => ("service IS NOT NULL", "by_service"),
                    (false, false) => ("FALSE", "FALSE"),
                };
                clauses.push(row.to_string());
                group.push(bucket.to_string());
                continue;
            }
        };
        let clause = format!("{col} IN ({})", p.list(values));
        clauses.push(clause.clone());
        group.push(clause);
    }
    let counts = format!(
        "SELECT bucket, CAST(sum(n) AS BIGINT) FROM key_buckets{} GROUP BY bucket ORDER BY bucket",
        where_clause(&group)
    );
    let listing = Bucketed { params: p, counts, select: "key_id", table: "keys", clauses };
    bucketed_page(db, listing, offset, limit, |r| r.text(0))
}

/// Listings in insertion order: each row's `list_pos` is one more than the largest when it was
/// inserted, and the schema's triggers count the rows of each bucket of `1 << BUCKET_BITS`
/// positions (per filterable group for keys). A page at any offset reads the counts (one row
/// per bucket and group), finds the bucket its first row is in, and reads from there only the
/// buckets that hold a matching row – no `OFFSET` walks past more than one bucket.
const BUCKET_BITS: u32 = 9;

struct Bucketed<'a> {
    params: Params,
    /// `SELECT bucket, count … ORDER BY bucket` over the buckets that hold matching rows.
    counts: String,
    select: &'a str,
    table: &'a str,
    /// Conditions on the listed rows (bound values in `params`).
    clauses: Vec<String>,
}

/// Where a page lies in a bucketed listing.
#[derive(Debug, PartialEq)]
struct Located {
    total: u64,
    /// Rows to take, and matching rows to skip in the first range.
    take: u64,
    skip: u64,
    /// Inclusive `list_pos` ranges that hold the page's rows (adjacent buckets merged).
    ranges: Vec<(i64, i64)>,
}

/// Finds the page `[offset, offset + limit)` in `buckets` (`(bucket, matching rows)`, in order).
fn locate(buckets: &[(i64, u64)], offset: u64, limit: u64) -> Located {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    let take = limit.min(total.saturating_sub(offset));
    let mut located = Located { total, take, skip: 0, ranges: Vec::new() };
    if take == 0 {
        return located;
    }
    let mut before = 0u64;
    for &(bucket, n) in buckets {
        let after = before + n;
        if after > offset && before < offset + take {
            if located.ranges.is_empty() {
                located.skip = offset - before;
            }
            let lo = bucket << BUCKET_BITS;
            let hi = lo + (1 << BUCKET_BITS) - 1;
            match located.ranges.last_mut() {
                Some(last) if last.1 + 1 == lo => last.1 = hi,
                _ => located.ranges.push((lo, hi)),
            }
        }
        before = after;
        if before >= offset + take {
            break;
        }
    }
    located
}

fn bucketed_page<T>(
    db: &mut dyn Db,
    listing: Bucketed<'_>,
    offset: u64,
    limit: u32,
    decode: impl Fn(&dyn rows::Fields) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let Bucketed { mut params, counts, select, table, mut clauses } = listing;
    in_snapshot(db, |db| {
        let buckets = all(db, &counts, &params.0, |r| Ok((r.int(0)?, r.int(1)?.max(0) as u64)))?;
        let at = locate(&buckets, offset, limit as u64);
        if at.take == 0 {
            return Ok(Page { items: Vec::new(), total: at.total });
        }
        let mut ranges = Vec::with_capacity(at.ranges.len());
        for (lo, hi) in &at.ranges {
            let (lo, hi) = (params.int(*lo), params.int(*hi));
            ranges.push(format!("list_pos BETWEEN {lo} AND {hi}"));
        }
        clauses.push(any_of(ranges));
        let lim = params.int(at.take as i64);
        let off = params.int(at.skip as i64);
        // The position ranges are narrower than any filter: walk the positions.
        let from = db.dialect().walk_index(table, &format!("{table}_in_order"));
        let sql =
            format!("SELECT {select} FROM {from}{} ORDER BY list_pos LIMIT {lim} OFFSET {off}", where_clause(&clauses));
        let items = all(db, &sql, &params.0, &decode)?;
        Ok(Page { items, total: at.total })
    })
}

/// Aliases by name, all of them or those of one key.
pub fn aliases(
    db: &mut dyn Db,
    key_id: Option<&str>,
    offset: u64,
    limit: u32,
) -> Result<Page<AliasRecord>, StoreError> {
    let mut p = Params::default();
    let from_where = match key_id {
        Some(id) => format!("FROM aliases WHERE key_id = {}", p.text(id)),
        None => "FROM aliases".to_string(),
    };
    let counter = key_id.is_none().then_some(Count::Aliases);
    let order = vec![format!("name{}", db.dialect().bytewise())];
    let listing = Listing { params: p, select: rows::ALIAS_COLUMNS, from_where, order, counter };
    page(db, listing, offset, limit, rows::alias)
}

/// Secrets in listing order (insertion order: oldest first) matching every condition. Without
/// conditions a page is found by the bucket counts; substring and tag conditions are not
/// counted, so those are counted and cut by a scan (the engine answers them from its secret
/// directory, and comes here only when that has dropped descriptions and tags).
pub fn secrets(
    db: &mut dyn Db,
    conds: &[SecretCond],
    offset: u64,
    limit: u32,
) -> Result<Page<SecretSummary>, StoreError> {
    let d = db.dialect();
    let mut p = Params::default();
    let mut clauses = Vec::new();
    for c in conds {
        let clause = match c {
            SecretCond::NameContains(v) => any_of(v.iter().map(|x| d.contains("name", &p.text(x))).collect()),
            SecretCond::DescriptionContains(v) => {
                any_of(v.iter().map(|x| d.contains("description", &p.text(x))).collect())
            }
            SecretCond::TagKey(v) => format!(
                "EXISTS (SELECT 1 FROM tags t WHERE t.resource_type = 'secret' AND t.resource_id = secrets.name \
                 AND t.tag_key IN ({}))",
                p.list(v)
            ),
            SecretCond::TagValue(v) => format!(
                "EXISTS (SELECT 1 FROM tags t WHERE t.resource_type = 'secret' AND t.resource_id = secrets.name \
                 AND t.tag_value IN ({}))",
                p.list(v)
            ),
        };
        clauses.push(clause);
    }
    if clauses.is_empty() {
        let counts = "SELECT bucket, n FROM secret_buckets ORDER BY bucket".to_string();
        let listing = Bucketed { params: p, counts, select: SUMMARY_COLUMNS, table: "secrets", clauses };
        return bucketed_page(db, listing, offset, limit, summary);
    }
    let from_where = format!("FROM secrets{}", where_clause(&clauses));
    let listing =
        Listing { params: p, select: SUMMARY_COLUMNS, from_where, order: vec!["list_pos".into()], counter: None };
    page(db, listing, offset, limit, summary)
}

/// `(resource id, tag key, tag value)` of every resource of type `rt` (or of those in `ids`)
/// whose tags include each `(key, value)` asked for (any value when `None`), by resource and key.
pub fn tag_rows(
    db: &mut dyn Db,
    rt: ResourceType,
    ids: Option<&[String]>,
    wanted: &[(String, Option<String>)],
    offset: u64,
    limit: u32,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let mut p = Params::default();
    let mut clauses = vec![format!("resource_type = {}", p.text(rt.as_str()))];
    if let Some(ids) = ids {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        clauses.push(format!("resource_id IN ({})", p.list(ids)));
    }
    for (k, v) in wanted {
        let mut c = format!(
            "EXISTS (SELECT 1 FROM tags w WHERE w.resource_type = tags.resource_type \
             AND w.resource_id = tags.resource_id AND w.tag_key = {}",
            p.text(k)
        );
        if let Some(v) = v {
            c.push_str(&format!(" AND w.tag_value = {}", p.text(v)));
        }
        c.push(')');
        clauses.push(c);
    }
    let b = db.dialect().bytewise();
    let lim = p.int(limit as i64);
    let off = p.int(offset.min(i64::MAX as u64) as i64);
    let sql = format!(
        "SELECT resource_id, tag_key, tag_value FROM tags{} ORDER BY resource_id{b}, tag_key{b} LIMIT {lim} OFFSET {off}",
        where_clause(&clauses)
    );
    all(db, &sql, &p.0, |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
}

/// Candidates for each maintenance job at `now` (a superset: each is re-checked).
pub fn due(db: &mut dyn Db, now: i64) -> Result<Due, StoreError> {
    let ids = |db: &mut dyn Db, sql: &str| all(db, sql, &[Value::Int(now)], |r| r.text(0));
    let rotating = match db.dialect() {
        Dialect::Sqlite => "rotation_enabled = 1",
        Dialect::Postgres => "rotation_enabled",
    };
    Ok(Due {
        rotation: ids(
            db,
            &format!(
                "SELECT key_id FROM keys WHERE {rotating} AND state = 'Enabled' AND rotation_interval IS NOT NULL \
                 AND last_rotation + rotation_interval <= $1"
            ),
        )?,
        deletion: ids(db, "SELECT key_id FROM keys WHERE state = 'PendingDeletion' AND delete_date <= $1")?,
        material_expiry: ids(db, "SELECT key_id FROM keys WHERE material_expire <= $1")?,
        secret_purge: ids(db, "SELECT name FROM secrets WHERE planned_delete <= $1")?,
        import_tokens: ids(db, "SELECT token_id FROM import_tokens WHERE expires_at <= $1")?,
    })
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

fn any_of(parts: Vec<String>) -> String {
    format!("({})", parts.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::{locate, Located, BUCKET_BITS};

    const B: i64 = 1 << BUCKET_BITS;

    #[test]
    fn a_page_is_found_in_the_buckets_that_hold_it() {
        // Buckets 0, 1 and 5 hold matching rows (3 + 4 + 2); 2–4 hold none.
        let buckets = [(0, 3), (1, 4), (5, 2)];
        let at = |offset, limit| locate(&buckets, offset, limit);
        assert_eq!(at(0, 2), Located { total: 9, take: 2, skip: 0, ranges: vec![(0, B - 1)] });
        // Rows 2..6 span buckets 0 and 1, merged into one range.
        assert_eq!(at(2, 4), Located { total: 9, take: 4, skip: 2, ranges: vec![(0, 2 * B - 1)] });
        // Rows 5..9: bucket 1 from its third row, then bucket 5; the empty ones are not read.
        assert_eq!(at(5, 10), Located { total: 9, take: 4, skip: 2, ranges: vec![(B, 2 * B - 1), (5 * B, 6 * B - 1)] });
        assert_eq!(at(7, 1), Located { total: 9, take: 1, skip: 0, ranges: vec![(5 * B, 6 * B - 1)] });
        assert_eq!(at(9, 10), Located { total: 9, take: 0, skip: 0, ranges: vec![] });
        assert_eq!(locate(&[], 0, 10), Located { total: 0, take: 0, skip: 0, ranges: vec![] });
    }
}
