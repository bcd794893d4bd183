//! The shared backend: one PostgreSQL database for many nodes.
//!
//! - **Writes** ([`PgStore::write`]) take one transaction-scoped advisory lock, read the change
//!   lists committed since the writer's mirror position (so the engine decides on current state),
//!   apply the new changes and append them to `kms_changes` with the next sequence number, then
//!   `NOTIFY kms_changes`. The lock makes sequence order commit order, with no gaps, so a follower
//!   that has seen seq *n* has seen everything up to *n*.
//! - **Followers** ([`PgFeed`]) hold a second connection that `LISTEN`s, and fetch the lists after
//!   their position on every notification and on a timer (a lost notification costs at most one
//!   poll).
//! - **Leases** ([`PgStore::lead`]) are rows timed by the database's clock, so node clocks never
//!   decide who leads.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Row};

use super::codec::{decode_changes, encode_changes};
use super::location::redact;
use super::rows::Prepared;
use super::statements::{self, CLAIM_NONCE, META_GET, META_PUT, PURGE_NONCES};
use super::{pg_schema, CatchUp, Change, ChangeSet, StoreError, Written};

/// Transaction advisory lock every writer holds from its catch-up to its commit.
const WRITE_LOCK: i64 = 0x6b6d_735f_7772_6974; // "kms_writ"
/// The channel followers listen on; the payload is the new sequence number.
pub const CHANNEL: &str = "kms_changes";
/// A writer further behind than this reloads everything instead of replaying.
const MAX_CATCH_UP: i64 = 10_000;
/// The change lists after a position, oldest first, at most `$2`.
const CHANGES_AFTER: &str = "SELECT seq, payload FROM kms_changes WHERE seq > $1 ORDER BY seq LIMIT $2";

/// A message for an operator: the server's own message and code when there is one.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None if e.is_closed() => "PostgreSQL: the connection is closed".into(),
        None => format!("PostgreSQL: {e}"),
    }
}

fn config(url: &str) -> Result<Config, StoreError> {
    let mut c: Config = url.parse().map_err(|e| StoreError(format!("store URL {}: {e}", redact(url))))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    // A peer that vanishes (killed host, cut cable) is noticed within seconds, not hours.
    c.keepalives(true).keepalives_idle(Duration::from_secs(5)).tcp_user_timeout(Duration::from_secs(10));
    if c.get_application_name().is_none() {
        c.application_name("kms-core");
    }
    Ok(c)
}

fn connect(cfg: &Config, url: &str) -> Result<Client, StoreError> {
    let mut c = cfg.connect(NoTls).map_err(|e| StoreError(format!("{}: {}", redact(url), describe(&e))))?;
    // Bounds on what one node can hold: a stuck writer cannot keep the write lock for long.
    c.batch_execute(
        "SET statement_timeout = '15s'; SET lock_timeout = '10s'; \
         SET idle_in_transaction_session_timeout = '30s'",
    )?;
    Ok(c)
}

/// A connection that reconnects on its next use after it broke.
pub(crate) struct Conn {
    url: String,
    config: Config,
    client: Option<Client>,
    prepared: Prepared,
}

impl Conn {
    pub(crate) fn new(url: &str) -> Result<Conn, StoreError> {
        Ok(Conn { url: url.to_string(), config: config(url)?, client: None, prepared: Prepared::default() })
    }

    /// Whether the connection is gone (the next [`Conn::get`] reconnects).
    pub(crate) fn is_broken(&self) -> bool {
        self.client.as_ref().is_none_or(|c| c.is_closed())
    }

    /// The live client, reconnecting first if the last one broke.
    pub(crate) fn get(&mut self) -> Result<(&mut Client, &mut Prepared), StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.prepared = Prepared::default();
            self.client = Some(connect(&self.config, &self.url)?);
        }
        Ok((self.client.as_mut().expect("just connected"), &mut self.prepared))
    }
}

/// The store's connection lives on its own thread and every operation runs there: the
/// `postgres` client drives its I/O with a private runtime and must never block a thread that is
/// driving asynchronous tasks (the sidecar calls the engine from its tokio workers). The caller
/// waits on a channel, as it would on a SQLite fsync.
pub struct PgStore {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

impl Drop for PgStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Rolls back a write transaction the caller abandoned (an error or a panic in its decision), so
/// the write lock is never left held.
struct OpenWrite<'a> {
    store: &'a PgStore,
    open: bool,
}

impl Drop for OpenWrite<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.store.call(rollback);
        }
    }
}

fn rollback(conn: &mut Conn) {
    if let Some(c) = conn.client.as_mut().filter(|c| !c.is_closed()) {
        if c.batch_execute("ROLLBACK").is_err() {
            conn.client = None;
        }
    }
}

impl PgStore {
    /// Connects and migrates.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let mut conn = Conn::new(url)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("kms-store".into())
            .spawn(move || {
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError(format!("store thread: {e}")))?;
        let store = PgStore { jobs: Some(jobs), worker: Some(worker) };
        store.call(|c| pg_schema::migrate(c.get()?.0))??;
        Ok(store)
    }

    /// Runs `f` on the connection's thread and waits for its result.
    fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Conn) -> R + Send + 'static) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || StoreError("the store's connection thread has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }

    pub fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.call(move |conn| {
            let (c, _) = conn.get()?;
            Ok(c.query_opt(META_GET, &[&name])?.map(|r| r.get(0)))
        })?
    }

    pub fn put_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(move |conn| {
            let (c, _) = conn.get()?;
            c.execute(META_PUT, &[&name, &value])?;
            Ok(())
        })?
    }

    pub fn put_meta_if_absent(&mut self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(move |conn| {
            let (c, _) = conn.get()?;
            c.execute("INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[&name, &value])?;
            Ok(c.query_one(META_GET, &[&name])?.get(0))
        })?
    }

    pub fn claim_nonce(&mut self, id: &[u8], expires_at: i64) -> Result<bool, StoreError> {
        let id = id.to_vec();
        self.call(move |conn| {
            let (c, p) = conn.get()?;
            let s = p.get(c, CLAIM_NONCE)?;
            Ok(c.execute(&s, &[&id, &expires_at])? == 1)
        })?
    }

    pub fn purge_nonces(&mut self, now: i64) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let (c, _) = conn.get()?;
            Ok(c.execute(PURGE_NONCES, &[&now])? as usize)
        })?
    }

    /// The sequence number of the last committed change list.
    pub fn position(&mut self) -> Result<u64, StoreError> {
        self.call(|conn| head(conn.get()?.0))?
    }

    pub fn write<E>(
        &mut self,
        applied: u64,
        catch_up: &mut dyn FnMut(CatchUp),
        decide: &mut dyn FnMut() -> Result<Vec<Change>, E>,
    ) -> Result<Result<Written, E>, StoreError> {
        let mut open = OpenWrite { store: self, open: true };
        let began = self.call(move |conn| {
            let r = begin_write(conn, applied);
            if r.is_err() {
                rollback(conn);
            }
            r
        })?;
        let cu = match began {
            Ok(cu) => cu,
            Err(e) => {
                open.open = false;
                return Err(e);
            }
        };
        catch_up(cu);
        let changes = match decide() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if changes.is_empty() {
            return Ok(Ok(None));
        }
        open.open = false;
        let seq = self.call(move |conn| {
            let r = finish_write(conn, &changes);
            if r.is_err() {
                rollback(conn);
            }
            r.map(|seq| (seq, changes))
        })??;
        Ok(Ok(Some(seq)))
    }

    pub fn lead(&mut self, name: &str, holder: &str, secs: u32) -> Result<bool, StoreError> {
        let (name, holder, secs) = (name.to_string(), holder.to_string(), secs as f64);
        self.call(move |conn| {
            let (c, _) = conn.get()?;
            let row = c.query_opt(
                "INSERT INTO kms_leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE kms_leases.holder = excluded.holder OR kms_leases.expires_at < now()
                 RETURNING holder",
                &[&name, &holder, &secs],
            )?;
            Ok(row.is_some())
        })?
    }

    /// Keeps the last thousand lists and everything younger than an hour: a node further behind
    /// than that reloads (see [`CatchUp::Reload`]).
    pub fn prune_changes(&mut self) -> Result<u64, StoreError> {
        self.call(|conn| {
            let (c, _) = conn.get()?;
            Ok(c.execute(
                "DELETE FROM kms_changes WHERE committed_at < now() - interval '1 hour'
                   AND seq <= (SELECT last_seq FROM kms_feed WHERE id = 1) - 1000",
                &[],
            )?)
        })?
    }
}

/// Opens a write transaction holding the write lock; returns what the caller must catch up on.
fn begin_write(conn: &mut Conn, applied: u64) -> Result<CatchUp, StoreError> {
    let (c, p) = conn.get()?;
    let since = p.get(c, CHANGES_AFTER)?;
    // One round trip for both: every round trip under the lock is one all writers wait for.
    c.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
    let rows = c.query(&since, &[&(applied as i64), &(MAX_CATCH_UP + 1)])?;
    Ok(match sets_after(applied, &rows)? {
        Some(sets) => CatchUp::Sets(sets),
        // Under the write lock nothing else commits: the head is where the caller resumes.
        None => CatchUp::Reset(head(c)?),
    })
}

/// Writes `changes` as the next change list and commits.
fn finish_write(conn: &mut Conn, changes: &[Change]) -> Result<u64, StoreError> {
    let (c, p) = conn.get()?;
    // Number, append and announce the list in one statement.
    let append = p.get(
        c,
        "WITH n AS (UPDATE kms_feed SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq),
              i AS (INSERT INTO kms_changes (seq, payload) SELECT last_seq, $1 FROM n RETURNING seq)
         SELECT seq, pg_notify($2, seq::text) FROM i",
    )?;
    for ch in changes {
        apply_change(c, p, ch)?;
    }
    let seq: i64 = c.query_one(&append, &[&encode_changes(changes), &CHANNEL])?.try_get(0)?;
    c.batch_execute("COMMIT")?;
    Ok(seq as u64)
}

/// The change lists in `rows` if they follow `applied` without a gap; `None` when the caller
/// must reload (it is behind what is kept, or too far behind to replay).
fn sets_after(applied: u64, rows: &[Row]) -> Result<Option<Vec<ChangeSet>>, StoreError> {
    if rows.len() as i64 > MAX_CATCH_UP {
        return Ok(None);
    }
    let mut sets = Vec::with_capacity(rows.len());
    for (expect, r) in (applied + 1..).zip(rows) {
        let seq = r.try_get::<_, i64>(0)? as u64;
        if seq != expect {
            return Ok(None);
        }
        let payload: &str = r.try_get(1)?;
        let changes = decode_changes(payload).map_err(|e| StoreError(format!("change list {seq}: {e}")))?;
        sets.push(ChangeSet { seq, changes });
    }
    Ok(Some(sets))
}

/// The sequence number of the last committed change list.
fn head(c: &mut Client) -> Result<u64, StoreError> {
    let seq: i64 = c.query_one("SELECT last_seq FROM kms_feed WHERE id = 1", &[])?.try_get(0)?;
    Ok(seq as u64)
}

fn apply_change(c: &mut Client, p: &mut Prepared, change: &Change) -> Result<(), StoreError> {
    for (sql, values) in statements::for_change(change) {
        let s = p.get(c, sql)?;
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        c.execute(&s, &params)?;
    }
    Ok(())
}

/// A follower's connection: `LISTEN`s on [`CHANNEL`] and fetches change lists.
pub struct PgFeed {
    conn: Conn,
    listening: bool,
}

/// What one fetch found.
pub enum FeedPage {
    /// The lists after the position asked for, in order; fewer than the limit means "all".
    Sets(Vec<ChangeSet>),
    /// The position is older than what is kept: reload.
    Behind,
}

impl PgFeed {
    pub fn new(url: &str) -> Result<PgFeed, StoreError> {
        Ok(PgFeed { conn: Conn::new(url)?, listening: false })
    }

    fn client(&mut self) -> Result<(&mut Client, &mut Prepared), StoreError> {
        if self.conn.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.listening = false;
        }
        let listening = &mut self.listening;
        let (c, p) = self.conn.get()?;
        if !*listening {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))?;
            *listening = true;
        }
        Ok((c, p))
    }

    /// Drops the connection (the next call reconnects and listens again).
    pub fn reset(&mut self) {
        self.conn.client = None;
        self.listening = false;
    }

    /// Up to `limit` lists after `after`, read in one statement (so in one snapshot).
    pub fn fetch(&mut self, after: u64, limit: i64) -> Result<FeedPage, StoreError> {
        let (c, p) = self.client()?;
        let s = p.get(c, CHANGES_AFTER)?;
        let rows = c.query(&s, &[&(after as i64), &limit])?;
        Ok(match sets_after(after, &rows)? {
            Some(sets) => FeedPage::Sets(sets),
            None => FeedPage::Behind,
        })
    }

    /// The sequence number of the last committed change list.
    pub fn head(&mut self) -> Result<u64, StoreError> {
        head(self.client()?.0)
    }

    /// Waits up to `timeout` for a notification; `true` if one (or more) arrived.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        let (c, _) = self.client()?;
        let mut n = c.notifications();
        let got = n.timeout_iter(timeout).next()?.is_some();
        if got {
            // Drain what else queued up: one fetch covers them all.
            while n.iter().next()?.is_some() {}
        }
        Ok(got)
    }
}
