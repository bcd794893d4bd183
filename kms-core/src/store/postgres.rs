//! The shared backend's reading side: connection settings for every PostgreSQL connection, and
//! the follower's connection.
//!
//! - **Followers** ([`PgFeed`]) hold a connection that `LISTEN`s, and fetch the change lists after
//!   their position on every notification and on a timer (a lost notification costs at most one
//!   poll).
//! - The writing side is `pg_store.rs`; the read-through connections are `reader.rs`.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use postgres_openssl::MakeTlsConnector;

use super::codec::decode_changes;
use super::location::redact;
use super::rows::Prepared;
use super::{ChangeSet, StoreError};

/// The channel followers listen on; the payload is the new sequence number.
pub const CHANNEL: &str = "kms_changes";
/// A writer further behind than this reloads everything instead of replaying.
pub(crate) const MAX_CATCH_UP: i64 = 10_000;
/// The change lists after a position, oldest first, at most `$2`.
const CHANGES_AFTER: &str = "SELECT seq, payload FROM kms_changes WHERE seq > $1 ORDER BY seq LIMIT $2";
/// Bounds on what one node can hold: a stuck writer cannot keep the write lock for long.
pub(crate) const SESSION_LIMITS: &str =
    "SET statement_timeout = '15s'; SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '30s'";

/// A message for an operator: the server's own message and code when there is one.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None if e.is_closed() => "PostgreSQL: the connection is closed".into(),
        // The cause too (a TLS handshake's: "certificate verify failed", …).
        None => match std::error::Error::source(e) {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

/// Every connection's settings: the URL's, with timeouts and keepalives where it names none, and
/// its TLS connector (`pg_tls.rs`).
pub(crate) fn config(url: &str) -> Result<(tokio_postgres::Config, Option<MakeTlsConnector>), StoreError> {
    let (rest, ca_file) = super::pg_tls::split_url(url);
    let mut c: tokio_postgres::Config =
        rest.parse().map_err(|e| StoreError(format!("store URL {}: {e}", redact(url))))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(5));
    }
    // A peer that vanishes (killed host, cut cable) is noticed within seconds, not hours.
    c.keepalives(true).keepalives_idle(Duration::from_secs(5)).tcp_user_timeout(Duration::from_secs(10));
    if c.get_application_name().is_none() {
        c.application_name("kms-core");
    }
    let tls = super::pg_tls::connector(c.get_ssl_mode(), ca_file.as_deref())?;
    Ok((c, tls))
}

fn connect(cfg: &postgres::Config, tls: &Option<MakeTlsConnector>, url: &str) -> Result<Client, StoreError> {
    let at = |e: postgres::Error| StoreError(format!("{}: {}", redact(url), describe(&e)));
    let mut c = match tls {
        Some(t) => cfg.connect(t.clone()).map_err(at)?,
        None => cfg.connect(NoTls).map_err(at)?,
    };
    c.batch_execute(SESSION_LIMITS)?;
    Ok(c)
}

/// A connection that reconnects on its next use after it broke.
pub(crate) struct Conn {
    url: String,
    config: postgres::Config,
    tls: Option<MakeTlsConnector>,
    client: Option<Client>,
    prepared: Prepared,
}

impl Conn {
    pub(crate) fn new(url: &str) -> Result<Conn, StoreError> {
        let (config, tls) = config(url)?;
        Ok(Conn { url: url.to_string(), config: config.into(), tls, client: None, prepared: Prepared::default() })
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
            self.client = Some(connect(&self.config, &self.tls, &self.url)?);
        }
        Ok((self.client.as_mut().expect("just connected"), &mut self.prepared))
    }
}

/// The change lists in `rows` if they follow `applied` without a gap; `None` when the caller
/// must reload (it is behind what is kept, or too far behind to replay).
pub(crate) fn sets_after(applied: u64, rows: &[(i64, String)]) -> Result<Option<Vec<ChangeSet>>, StoreError> {
    if rows.len() as i64 > MAX_CATCH_UP {
        return Ok(None);
    }
    let mut sets = Vec::with_capacity(rows.len());
    for (expect, r) in (applied + 1..).zip(rows) {
        let seq = r.0 as u64;
        if seq != expect {
            return Ok(None);
        }
        let payload = r.1.as_str();
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
        let rows = c
            .query(&s, &[&(after as i64), &limit])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, String)>, postgres::Error>>()?;
        Ok(match sets_after(after, &rows)? {
            Some(sets) => FeedPage::Sets(sets),
            None => FeedPage::Behind,
        })
    }

    /// The sequence number of the last committed change list.
    pub fn head(&mut self) -> Result<u64, StoreError> {
        head(self.client()?.0)
    }

    /// Waits up to `timeout` for notifications; the highest sequence number they announce
    /// (`u64::MAX` when one cannot be read), or `None` if none arrived.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<u64>, StoreError> {
        let (c, _) = self.client()?;
        let mut n = c.notifications();
        let seq = |m: postgres::Notification| m.payload().parse::<u64>().unwrap_or(u64::MAX);
        let Some(first) = n.timeout_iter(timeout).next()? else { return Ok(None) };
        let mut top = seq(first);
        // Drain what else queued up: one fetch covers them all.
        while let Some(m) = n.iter().next()? {
            top = top.max(seq(m));
        }
        Ok(Some(top))
    }
}
