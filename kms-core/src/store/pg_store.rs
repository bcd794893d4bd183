//! The shared backend's writing side: a PostgreSQL connection for writes, nonces, meta rows and
//! leases (a node holds several, one of them committing without a flush: [`Durability`]).
//!
//! - **Writes** ([`PgStore::write`]) take one transaction-scoped advisory lock, read the change
//!   lists committed since the writer's mirror position (so the engine decides on current state),
//!   apply the new changes and append them to `kms_changes` with the next sequence number, then
//!   `NOTIFY kms_changes`. The lock makes sequence order commit order, with no gaps, so a follower
//!   that has seen seq *n* has seen everything up to *n*.
//! - Every writer in the cluster waits for that one lock, so what a write does while holding it
//!   bounds the cluster's write rate. It holds it for two round trips: the first opens the
//!   transaction, takes the lock and reads the catch-up in one simple query; the second sends the
//!   change statements, the append and `COMMIT` as one pipeline (see [`in_order`]). Writes
//!   decided before the lock ([`PgStore::write_early`]) hold it for none: one pipeline opens the
//!   transaction, takes the lock, checks and commits them.
//! - **Leases** ([`PgStore::lead`]) are rows timed by the database's clock, so node clocks never
//!   decide who leads.
//!
//! The connection is driven by a single-threaded tokio runtime on the store's own thread: the
//! engine is also called from the sidecar's async workers, which must never block on a runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use super::codec::encode_changes;
use super::footprint::{self, ReadSet};
use super::location::redact;
use super::postgres::{config, describe, sets_after, CHANNEL, MAX_CATCH_UP, SESSION_LIMITS};
use super::reads::Counts;
use super::statements::{self, Value, ADVANCE_NONCE_HORIZON, META_ADVANCE, META_GET, NONCE_HORIZON_ID, PURGE_NONCES};
use super::{pg_schema, CatchUp, Change, ChangeSet, StoreError, StoreOpenError, Written};

/// Transaction advisory lock every writer holds from its catch-up to its commit.
const WRITE_LOCK: i64 = 0x6b6d_735f_7772_6974; // "kms_writ"
/// Numbers, appends and announces a batch's change lists (`kms_append`, schema migration 5);
/// returns the first list's number.
const APPEND: &str = "SELECT kms_append($1, $2, $3)";
/// Several claims in one statement; the ids it returns were not claimed before (a duplicate
/// within the batch is inserted once) and expire after the purge horizon ($3, as
/// `statements::CLAIM_NONCE`).
const CLAIM_NONCES: &str = "INSERT INTO request_nonces (id, expires_at) \
     SELECT c.id, c.e FROM unnest($1::bytea[], $2::bigint[]) AS c(id, e) \
     WHERE NOT EXISTS (SELECT 1 FROM request_nonces WHERE id = $3::bytea AND expires_at >= c.e) \
     ON CONFLICT DO NOTHING RETURNING id";
const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
/// Takes the write lock, checks a batch's early decisions and returns the lists committed after
/// the earliest position (`kms_open_batch`, schema migration 5).
const OPEN_BATCH: &str = "SELECT seq, payload FROM kms_open_batch($1, $2, $3, $4)";
/// Every limit of a batch, checked once all its writes are in.
const WITHIN: &str = "SELECT kms_within(l.counter, l.most) FROM unnest($1::text[], $2::bigint[]) AS l(counter, most)";
/// The lists between a decision's position and the list being written (under the lock).
const BETWEEN: &str = "SELECT seq, payload FROM kms_changes WHERE seq > $1 ORDER BY seq";
const HEAD: &str = "SELECT last_seq FROM kms_feed WHERE id = 1";

/// The store's connection with its runtime and prepared statements.
struct Session {
    url: String,
    /// Run at every (re)connect after [`SESSION_LIMITS`]: how this connection commits.
    durability: &'static str,
    config: tokio_postgres::Config,
    tls: Option<postgres_openssl::MakeTlsConnector>,
    rt: Rt,
    client: Option<Client>,
    /// Keyed by the statement text; every text is a constant of this crate, so the map is bounded.
    prepared: HashMap<&'static str, Statement>,
}

impl Session {
    fn new(url: &str, durability: Durability) -> Result<Session, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("store runtime: {e}")))?;
        let (config, tls) = config(url)?;
        let durability = match durability {
            Durability::Synchronous => "",
            Durability::Ordered => "SET synchronous_commit = off",
        };
        Ok(Session {
            url: url.to_string(),
            durability,
            config,
            tls,
            rt: Rt(Some(rt)),
            client: None,
            prepared: HashMap::new(),
        })
    }

    /// The live client, reconnecting first if the last one broke. (The connection is driven only
    /// while this thread uses it: a server that went away while it was idle is noticed by the
    /// next request, which fails; see [`recover`] for writes.)
    fn client(&mut self) -> Result<&Client, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.prepared.clear();
            let at = |e: tokio_postgres::Error| StoreError(format!("{}: {}", redact(&self.url), describe(&e)));
            let client = match &self.tls {
                Some(tls) => connect(&self.rt, &self.config, tls.clone()),
                None => connect(&self.rt, &self.config, NoTls),
            }
            .map_err(at)?;
            self.rt.block_on(client.batch_execute(SESSION_LIMITS)).map_err(at)?;
            if !self.durability.is_empty() {
                self.rt.block_on(client.batch_execute(self.durability)).map_err(at)?;
            }
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("just connected"))
    }

    /// Runs `f` with the client and the prepared forms of `sqls` (preparing what is new first).
    fn run<R>(
        &mut self,
        sqls: &[&'static str],
        f: impl AsyncFnOnce(&Client, &[Statement]) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.client()?;
        let Session { rt, client, prepared, .. } = self;
        let client = client.as_ref().expect("connected above");
        rt.block_on(async {
            let mut stmts = Vec::with_capacity(sqls.len());
            for sql in sqls {
                let s = match prepared.get(sql) {
                    Some(s) => s.clone(),
                    None => {
                        let s = client.prepare(sql).await?;
                        prepared.insert(sql, s.clone());
                        s
                    }
                };
                stmts.push(s);
            }
            f(client, &stmts).await
        })
    }

    /// Ends an abandoned transaction (a failed write), dropping the connection if even that fails.
    fn rollback(&mut self) {
        if let Some(c) = self.client.as_ref().filter(|c| !c.is_closed()) {
            if self.rt.block_on(c.batch_execute("ROLLBACK")).is_err() {
                self.client = None;
            }
        }
    }
}

/// A client whose connection task runs on `rt` – driven whenever the session's thread waits in
/// `block_on`, which is whenever it uses the client.
fn connect<T>(rt: &Runtime, config: &tokio_postgres::Config, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = rt.block_on(config.connect(tls))?;
    rt.spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The session's runtime. Dropped without waiting for anything (a runtime may not block to shut
/// down where the last owner of an engine might drop it).
struct Rt(Option<Runtime>);

impl std::ops::Deref for Rt {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// What one request of a pipeline returned that the writer needs.
enum Reply {
    Done,
    /// The sequence number the change list was given.
    Seq(i64),
    /// Change lists (`seq`, `payload`).
    Lists(Vec<(i64, String)>),
}

/// One request of a pipeline.
type Step<'a> = Pin<Box<dyn Future<Output = Result<Reply, tokio_postgres::Error>> + 'a>>;

/// Runs `steps` as one pipeline and returns their results in order.
///
/// tokio-postgres writes a request to the connection when its future is first polled – for a
/// prepared statement or a simple query nothing is awaited before that – and this polls every
/// step for the first time in order, so the server receives, and runs, the requests in order while
/// the client waits for the replies only once. (A general-purpose join gives no such promise.)
async fn in_order(mut steps: Vec<Step<'_>>) -> Vec<Result<Reply, tokio_postgres::Error>> {
    let mut out: Vec<Option<Result<Reply, tokio_postgres::Error>>> = steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (step, slot) in steps.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match step.as_mut().poll(cx) {
                    Poll::Ready(r) => *slot = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|r| r.expect("every step finished")).collect()
}

/// An execute of a prepared statement as a pipeline step.
fn execute<'a>(client: &'a Client, stmt: &'a Statement, values: &'a [Value<'a>]) -> Step<'a> {
    Box::pin(async move {
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        client.execute(stmt, &params).await.map(|_| Reply::Done)
    })
}

/// `sql` run through the simple query protocol (transaction control) as a pipeline step.
fn simple<'a>(client: &'a Client, sql: &'a str) -> Step<'a> {
    Box::pin(async move { client.batch_execute(sql).await.map(|_| Reply::Done) })
}

/// When a connection's commits are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed (and, where configured, replicated) before the commit returns: every write of a
    /// key, secret or change list.
    Synchronous,
    /// Returned before the flush (`synchronous_commit = off`); made durable by the server within
    /// a few hundred ms, or at once by any later synchronous commit on any connection, since the
    /// log is one sequence and a flush covers all of it up to the flushed commit. For records
    /// whose only use is to order what follows them: a request's nonce claim, which is always
    /// followed by its write's synchronous commit (acknowledged only then, so an acknowledged
    /// write's nonce is durable – a crash can forget only the nonce of a request that was never
    /// acknowledged, whose replay is what the client's own retry would do), and the audit
    /// anchor, a lower bound on the node's log that may lag by that window after a database
    /// crash. It saves a WAL flush each – a third of the database's work per write.
    Ordered,
}

/// The store's connection lives on its own thread and every operation runs there; the caller
/// waits on a channel, as it would on a SQLite fsync. (Driving it on the calling thread saves two
/// wake-ups per call – no measurable difference in the store benchmark – but would make every
/// store call a `block_on`, which panics where the engine is called from an async task: a
/// service key made on first use by an inline GenerateDataKey, say.)
pub struct PgStore {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

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
            let _ = self.store.call(Session::rollback);
        }
    }
}

impl PgStore {
    /// Connects and migrates.
    pub fn open(url: &str, durability: Durability) -> Result<PgStore, StoreOpenError> {
        let mut session = Session::new(url, durability).map_err(|e| StoreOpenError::Invalid(e.0))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("kms-store".into())
            .spawn(move || {
                for job in queue {
                    job(&mut session);
                }
            })
            .map_err(|e| StoreOpenError::Failed(format!("store thread: {e}")))?;
        let store = PgStore { jobs: Some(jobs), worker: Some(worker) };
        let failed = |e: StoreError| StoreOpenError::Failed(e.0);
        store.call(|s| s.client().map(|_| ())).map_err(failed)?.map_err(|e| StoreOpenError::Unreachable(e.0))?;
        store
            .call(|s| {
                let Session { rt, client, .. } = s;
                rt.block_on(pg_schema::migrate(client.as_mut().expect("connected above")))
            })
            .map_err(failed)?
            .map_err(failed)?;
        Ok(store)
    }

    /// Runs `f` on the connection's thread and waits for its result.
    fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Session) -> R + Send + 'static) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || StoreError("the store's connection thread has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }

    pub fn get_meta(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.call(move |s| {
            s.run(&[META_GET], async |c, st| Ok(c.query_opt(&st[0], &[&name]).await?.map(|r| r.get(0))))
        })?
    }

    pub fn advance_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(move |s| {
            s.run(&[META_ADVANCE], async |c, st| {
                c.execute(&st[0], &[&name, &value]).await?;
                Ok(())
            })
        })?
    }

    pub fn put_meta_if_absent(&mut self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(move |s| {
            s.run(
                &["INSERT INTO meta(name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", META_GET],
                async |c, st| {
                    c.execute(&st[0], &[&name, &value]).await?;
                    Ok(c.query_one(&st[1], &[&name]).await?.get(0))
                },
            )
        })?
    }

    /// Records request nonces in one statement; for each, `false` if it was recorded before (a
    /// replay – of an earlier request, or of one before it in `claims`).
    pub fn claim_nonces(&mut self, claims: &[(Vec<u8>, i64)]) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<Vec<u8>> = claims.iter().map(|c| c.0.clone()).collect();
        let expiries: Vec<i64> = claims.iter().map(|c| c.1).collect();
        let inserted: std::collections::HashSet<Vec<u8>> = self.call(move |s| {
            s.run(&[CLAIM_NONCES], async |c, st| {
                let rows = c.query(&st[0], &[&ids, &expiries, &NONCE_HORIZON_ID]).await?;
                rows.iter().map(|r| r.try_get::<_, Vec<u8>>(0)).collect::<Result<_, _>>().map_err(StoreError::from)
            })
        })??;
        // A row inserted once answers only the first claim of its id.
        let mut first = std::collections::HashSet::new();
        Ok(claims.iter().map(|(id, _)| inserted.contains(id) && first.insert(id)).collect())
    }

    /// As the SQLite store's: the horizon first, then the rows below it.
    pub fn purge_nonces(&mut self, now: i64) -> Result<usize, StoreError> {
        self.call(move |s| {
            s.run(&[ADVANCE_NONCE_HORIZON, PURGE_NONCES], async |c, st| {
                c.execute(&st[0], &[&NONCE_HORIZON_ID, &now]).await?;
                Ok(c.execute(&st[1], &[&NONCE_HORIZON_ID, &now]).await? as usize)
            })
        })?
    }

    /// The sequence number of the last committed change list.
    pub fn position(&mut self) -> Result<u64, StoreError> {
        self.call(|s| s.run(&[HEAD], async |c, st| head(c, &st[0]).await))?
    }

    pub fn write<E>(
        &mut self,
        applied: u64,
        catch_up: &mut dyn FnMut(CatchUp),
        decide: &mut dyn FnMut(&Counts) -> Result<Vec<Change>, E>,
    ) -> Result<Result<Written, E>, StoreError> {
        let mut open = OpenWrite { store: self, open: true };
        let began = self.call(move |s| {
            let mut r = s.run(&[HEAD], async |c, st| begin_write(c, &st[0], applied).await);
            if r.is_err() && s.client.as_ref().is_some_and(Client::is_closed) {
                // A connection that died while idle: nothing was written, so once more on a new one.
                r = s.run(&[HEAD], async |c, st| begin_write(c, &st[0], applied).await);
            }
            if r.is_err() {
                s.rollback();
            }
            r
        })?;
        let (cu, counts) = match began {
            Ok(began) => began,
            Err(e) => {
                open.open = false;
                return Err(e);
            }
        };
        // Where this write's list goes: after the head as it was under the lock.
        let head = match &cu {
            CatchUp::Sets(sets) => sets.last().map_or(applied, |set| set.seq),
            CatchUp::Reset(seq) => *seq,
        };
        catch_up(cu);
        let changes = match decide(&counts) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if changes.is_empty() {
            return Ok(Ok(None));
        }
        open.open = false;
        let seq = self.call(move |s| {
            let mut r = finish_write(s, &changes);
            if let Err(e) = &r {
                s.rollback();
                if s.client.is_none() || s.client.as_ref().is_some_and(Client::is_closed) {
                    // The connection broke: committed or not? Not committed is still an error
                    // (nothing was written; the client may safely retry).
                    r = match recover(s, head, &changes) {
                        Ok(Some((seq, _))) => Ok(seq),
                        _ => Err(e.clone()),
                    };
                }
            }
            r.map(|seq| (seq, changes))
        })??;
        Ok(Ok(Some(seq)))
    }

    pub fn lead(&mut self, name: &str, holder: &str, secs: u32) -> Result<bool, StoreError> {
        let (name, holder, secs) = (name.to_string(), holder.to_string(), secs as f64);
        const LEAD: &str =
            "INSERT INTO kms_leases (name, holder, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE kms_leases.holder = excluded.holder OR kms_leases.expires_at < now()
             RETURNING holder";
        self.call(move |s| {
            s.run(&[LEAD], async |c, st| Ok(c.query_opt(&st[0], &[&name, &holder, &secs]).await?.is_some()))
        })?
    }

    /// Keeps the last thousand lists and everything younger than an hour: a node further behind
    /// than that reloads (see [`CatchUp::Reset`]).
    pub fn prune_changes(&mut self) -> Result<u64, StoreError> {
        const PRUNE: &str = "DELETE FROM kms_changes WHERE committed_at < now() - interval '1 hour'
               AND seq <= (SELECT last_seq FROM kms_feed WHERE id = 1) - 1000";
        self.call(|s| s.run(&[PRUNE], async |c, st| Ok(c.execute(&st[0], &[]).await?)))?
    }
}

async fn head(c: &Client, stmt: &Statement) -> Result<u64, StoreError> {
    let seq: i64 = c.query_one(stmt, &[]).await?.try_get(0)?;
    Ok(seq as u64)
}

/// Opens a write transaction holding the write lock; returns what the caller must catch up on,
/// and the counters. One simple query, so one round trip: in READ COMMITTED each of its
/// statements reads a snapshot taken when that statement starts, so the reads, starting after the
/// lock is granted, see every list committed before. (The two numbers are formatted integers,
/// never caller text.)
async fn begin_write(c: &Client, head_stmt: &Statement, applied: u64) -> Result<(CatchUp, Counts), StoreError> {
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}); \
         SELECT seq, payload FROM kms_changes WHERE seq > {applied} ORDER BY seq LIMIT {}; \
         SELECT kind, n FROM resource_counts",
        MAX_CATCH_UP + 1
    );
    let malformed = |what: &str| StoreError(format!("{what}: a row with a missing or malformed column"));
    let mut done = 0;
    let mut rows = Vec::new();
    let mut counts = Counts::default();
    for m in c.simple_query(&sql).await? {
        let SimpleQueryMessage::Row(r) = m else {
            if let SimpleQueryMessage::CommandComplete(_) = m {
                done += 1;
            }
            continue;
        };
        // BEGIN and the lock's SELECT complete first; then come the catch-up and the counters.
        let number = |i: usize| r.get(i).and_then(|s| s.parse::<i64>().ok());
        match done {
            2 => match (number(0), r.get(1)) {
                (Some(seq), Some(payload)) => rows.push((seq, payload.to_string())),
                _ => return Err(malformed("kms_changes")),
            },
            3 => match (r.get(0), number(1)) {
                (Some(kind), Some(n)) => counts.set(kind, n),
                _ => return Err(malformed("resource_counts")),
            },
            _ => {}
        }
    }
    let cu = match sets_after(applied, &rows)? {
        Some(sets) => CatchUp::Sets(sets),
        // Under the write lock nothing else commits: the head is where the caller resumes.
        None => CatchUp::Reset(head(c, head_stmt).await?),
    };
    Ok((cu, counts))
}

/// Writes `changes` as the next change list and commits, in one round trip (the transaction and
/// the lock are open already).
fn finish_write(s: &mut Session, changes: &[Change]) -> Result<u64, StoreError> {
    let touched = footprint::touched(changes);
    let lists = [(changes, &touched[..])];
    let (seq, _) = commit(s, &lists, None)?.ok_or_else(|| StoreError("the change list was refused".into()))?;
    Ok(seq)
}

/// Change lists as read (`seq`, `payload`).
type Lists = Vec<(i64, String)>;
/// A written list's sequence number, and the lists committed between its decision and it.
type Landed = (u64, Lists);

/// One write decided before the lock: the changes, the position of the state they were decided
/// on, and what the decision read.
pub struct Early {
    pub after: u64,
    pub changes: Vec<Change>,
    pub reads: ReadSet,
    /// What `changes` touch (`footprint::touched`), named once for the batch's filter and the
    /// append.
    pub touched: Vec<String>,
}

impl Early {
    pub fn new(after: u64, changes: Vec<Change>, reads: ReadSet) -> Early {
        let touched = footprint::touched(&changes);
        Early { after, changes, reads, touched }
    }
}

/// What [`PgStore::write_early`] did.
pub enum Decided {
    /// Committed, each write as its own change list, in order. `sets` are the lists from the
    /// earliest position on: others' lists in between, then these – for the caller to apply.
    Committed { sets: Vec<ChangeSet> },
    /// Something a decision read changed since its position, or a counter would pass its limit:
    /// nothing was written; decide again under the lock.
    Conflict,
}

impl PgStore {
    /// Commits a batch of early writes (their reads must not meet what an earlier one in the
    /// batch touches: the caller checks) in one round trip and one WAL flush: `BEGIN`, the write
    /// lock, each write's guard, the change statements, the limit checks, the lists committed in
    /// between, one append per write and `COMMIT`, pipelined. The lock is held only while the
    /// server runs them, never across a round trip to this node. All or nothing.
    pub fn write_early(&mut self, batch: Vec<Early>) -> Result<Decided, StoreError> {
        self.call(move |s| {
            let mut r = write_early(s, &batch);
            if let Err(e) = &r {
                s.rollback();
                if s.client.is_none() || s.client.as_ref().is_some_and(Client::is_closed) {
                    // The connection broke: the batch may or may not have committed.
                    let from = batch.iter().map(|e| e.after).min().unwrap_or(0);
                    let first = batch.first().map_or(&[][..], |e| &e.changes[..]);
                    r = recover(s, from, first).map_err(|_| e.clone());
                }
            }
            let from = batch.iter().map(|e| e.after).min().unwrap_or(0);
            r.map(|d| match d {
                Some((first, between)) => {
                    let mut sets =
                        crate::store::postgres::sets_after(from, &between).ok().flatten().unwrap_or_default();
                    sets.extend(batch.into_iter().zip(first..).map(|(e, seq)| ChangeSet { seq, changes: e.changes }));
                    Decided::Committed { sets }
                }
                None => Decided::Conflict,
            })
        })?
    }
}

/// The pipeline of [`PgStore::write_early`]: `Some((the first write's seq, lists in between))`,
/// or `None` when a guard or a limit refused.
fn write_early(s: &mut Session, batch: &[Early]) -> Result<Option<Landed>, StoreError> {
    let lists: Vec<(&[Change], &[String])> = batch.iter().map(|e| (&e.changes[..], &e.touched[..])).collect();
    commit(s, &lists, Some(Guarded::new(batch)))
}

/// What a write decided before the lock adds to its pipeline: its own transaction and the lock,
/// each decision's position with the names it read (one `(after, NULL)` pair per decision for
/// its position alone, then one pair per name), the limits, and the earliest position – the
/// lists after it are read back.
struct Guarded<'a> {
    afters: Vec<i64>,
    names: Vec<Option<&'a str>>,
    counters: Vec<&'a str>,
    mosts: Vec<i64>,
    from: i64,
}

impl<'a> Guarded<'a> {
    fn new(batch: &'a [Early]) -> Guarded<'a> {
        let (mut afters, mut names) = (Vec::new(), Vec::new());
        for e in batch {
            let after = e.after as i64;
            afters.push(after);
            names.push(None);
            for n in &e.reads.names {
                afters.push(after);
                names.push(Some(n.as_str()));
            }
        }
        // Each write of a kind checks the same limit: once is enough.
        let mut limits: Vec<(&str, i64)> = batch.iter().flat_map(|e| e.reads.limits.iter().copied()).collect();
        limits.sort_unstable();
        limits.dedup();
        Guarded {
            afters,
            names,
            counters: limits.iter().map(|l| l.0).collect(),
            mosts: limits.iter().map(|l| l.1).collect(),
            from: batch.iter().map(|e| e.after).min().unwrap_or(0) as i64,
        }
    }
}

/// One pipeline that writes `lists` (each: its changes and the names they touch) as the next
/// change lists and commits. With `guarded`, it first opens the transaction, takes the lock,
/// checks the decisions and reads the lists in between, and after the statements checks the
/// limits. `Some((the first list's seq, lists in between))`, or `None` when a guard or a limit
/// refused.
fn commit(
    s: &mut Session,
    lists: &[(&[Change], &[String])],
    guarded: Option<Guarded<'_>>,
) -> Result<Option<Landed>, StoreError> {
    let planned: Vec<statements::Statement<'_>> =
        lists.iter().flat_map(|(changes, _)| changes.iter().flat_map(statements::for_change)).collect();
    let mut sqls: Vec<&'static str> = vec![OPEN_BATCH, WITHIN, APPEND];
    sqls.extend(planned.iter().map(|(sql, _)| *sql));
    let payloads: Vec<String> = lists.iter().map(|(changes, _)| encode_changes(changes)).collect();
    let touched: Vec<String> = lists.iter().map(|(_, t)| serde_json::to_string(t).expect("names serialise")).collect();
    s.run(&sqls, async |c, st| {
        let [open, within, append, writes @ ..] = st else { unreachable!("three fixed statements") };
        let mut steps: Vec<Step<'_>> = Vec::new();
        if let Some(g) = &guarded {
            steps.push(simple(c, "BEGIN"));
            steps.push(Box::pin(async {
                let rows = c.query(open, &[&WRITE_LOCK, &g.from, &g.afters, &g.names]).await?;
                let lists = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>()?;
                Ok(Reply::Lists(lists))
            }));
        }
        steps.extend(writes.iter().zip(&planned).map(|(stmt, (_, values))| execute(c, stmt, values)));
        if let Some(g) = guarded.as_ref().filter(|g| !g.counters.is_empty()) {
            // Against the counters once every write of the batch is in.
            steps.push(Box::pin(async { c.execute(within, &[&g.counters, &g.mosts]).await.map(|_| Reply::Done) }));
        }
        steps.push(Box::pin(async {
            let row = c.query_one(append, &[&payloads, &touched, &CHANNEL]).await?;
            row.try_get::<_, i64>(0).map(Reply::Seq)
        }));
        // After a failed statement the server refuses the rest and turns COMMIT into a rollback
        // (reporting no error for it): the write succeeded only if every step did.
        steps.push(simple(c, "COMMIT"));
        let (mut first, mut between_lists) = (None, Vec::new());
        for r in in_order(steps).await {
            match r {
                Ok(Reply::Seq(n)) => first = Some(n),
                Ok(Reply::Lists(l)) => between_lists = l,
                Ok(Reply::Done) => {}
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) => {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let first = first.ok_or_else(|| StoreError("the change lists were not numbered".into()))?;
        Ok(Some((first as u64, between_lists)))
    })
}

/// After the connection broke during a write: whether it committed, asked on a new connection
/// under the write lock – so a transaction still running on the old backend has ended first. The
/// write (for a batch, its first list: a batch commits whole or not at all) is found among the
/// lists after `from` by its payload, which holds the new records' fresh ids and times: two lists
/// are never equal. Committed: `Some`, with the lists in between; not committed: `None`. A
/// client told "unavailable" after a write that did commit would retry it and make it twice;
/// this is what prevents that.
fn recover(s: &mut Session, from: u64, first: &[Change]) -> Result<Option<Landed>, StoreError> {
    if first.is_empty() {
        return Ok(None);
    }
    let payload = encode_changes(first);
    let from = from as i64;
    s.run(&[LOCK, BETWEEN], async |c, st| {
        c.batch_execute("BEGIN").await?;
        c.execute(&st[0], &[&WRITE_LOCK]).await?;
        let rows = c.query(&st[1], &[&from]).await?;
        c.batch_execute("COMMIT").await?;
        let mut lists = Vec::new();
        for r in rows {
            let (seq, p): (i64, String) = (r.try_get(0)?, r.try_get(1)?);
            if p == payload {
                return Ok(Some((seq as u64, lists)));
            }
            lists.push((seq, p));
        }
        Ok(None)
    })
}
