//! Connections for reading on demand, apart from the writer's: a request that misses the cache
//! reads here while a write holds the store's own connection (the engine reads inside its write
//! decisions too, so one connection for both would deadlock).
//!
//! - SQLite: read-only connections to the same file; WAL mode lets them read a committed snapshot
//!   while the writer writes. A few are kept idle.
//! - PostgreSQL: [`READ_CONNECTIONS`] connections, each on its own thread (as the writer's, since
//!   the `postgres` client must not block an async runtime's thread), taking jobs from one queue.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::postgres::Conn;
use super::rows::{Db, PgDb};
use super::{StoreError, StoreLocation};

/// Idle SQLite readers kept open.
const MAX_IDLE: usize = 4;
/// PostgreSQL reader connections per node.
pub const READ_CONNECTIONS: usize = 2;

pub enum Reader {
    Sqlite(SqliteReader),
    Postgres(PgReader),
}

impl Reader {
    pub fn open(location: &StoreLocation) -> Result<Reader, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Ok(Reader::Sqlite(SqliteReader::new(path))),
            StoreLocation::Postgres(url) => PgReader::new(url).map(Reader::Postgres),
        }
    }

    /// Runs `f` on a reading connection. A read is repeatable: on PostgreSQL it runs again on a
    /// new connection when it failed because its connection was gone (a server restart is seen
    /// only by the first statement after it).
    pub fn run<R: Send + 'static>(
        &self,
        f: impl Fn(&mut dyn Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        match self {
            Reader::Sqlite(r) => r.run(f),
            Reader::Postgres(r) => r.run(f),
        }
    }
}

pub struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    fn new(path: &Path) -> SqliteReader {
        SqliteReader { path: path.to_path_buf(), idle: Mutex::new(Vec::new()) }
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let c = Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError(format!("{}: {e}", self.path.display())))?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }

    fn run<R>(&self, f: impl Fn(&mut dyn Db) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let idle = self.idle.lock().pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        let r = f(&mut conn);
        // A connection left inside a transaction (a failed rollback) is not reused.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        r
    }
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

pub struct PgReader {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for PgReader {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl PgReader {
    fn new(url: &str) -> Result<PgReader, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::new();
        for i in 0..READ_CONNECTIONS {
            let mut conn = Conn::new(url)?;
            let queue = queue.clone();
            let w = std::thread::Builder::new()
                .name(format!("kms-read-{i}"))
                .spawn(move || loop {
                    // The lock is held only while taking a job, not while running it.
                    let job = queue.lock().recv();
                    match job {
                        Ok(job) => job(&mut conn),
                        Err(_) => return,
                    }
                })
                .map_err(|e| StoreError(format!("store reader thread: {e}")))?;
            workers.push(w);
        }
        Ok(PgReader { jobs: Some(jobs), workers })
    }

    fn run<R: Send + 'static>(
        &self,
        f: impl Fn(&mut dyn Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || StoreError("the store's reader threads have stopped".into());
        let job: Job = Box::new(move |conn| {
            let attempt = |conn: &mut Conn| {
                conn.get().and_then(|(client, prepared)| {
                    let mut db = PgDb { client, prepared };
                    let r = f(&mut db);
                    if r.is_err() && !db.client.is_closed() {
                        // Leave no transaction open behind a failed read.
                        let _ = db.client.batch_execute("ROLLBACK");
                    }
                    r
                })
            };
            let mut r = attempt(conn);
            if r.is_err() && conn.is_broken() {
                r = attempt(conn);
            }
            let _ = tx.send(r);
        });
        self.jobs.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}
