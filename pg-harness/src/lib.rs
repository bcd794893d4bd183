//! Throw-away PostgreSQL clusters for tests and benchmarks: Debian's server binaries, `initdb` into
//! a temp dir, `pg_ctl start` on a free loopback port with the socket in that dir. No Docker, no
//! system service. As root the server runs as the `postgres` user (it refuses to run as root).
//!
//! [`Cluster::start`] gives one owned by the caller (stopped on drop); [`shared`] gives one per
//! test process, stopped by a watchdog when the process exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if a server is installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file() && b.join("postgres").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

/// Whether tests can start a cluster here.
pub fn available() -> bool {
    bin_dir().is_some()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Waits until `f` holds, polling every 2 ms; panics after `limit`. Returns how long it took (the
/// multi-node tests measure propagation with it).
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() <= limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// One cluster: its data directory, port and server process.
pub struct Cluster {
    _dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// `initdb` and start, with `settings` appended to `postgresql.conf`.
    pub fn start(settings: &[&str]) -> Result<Cluster, String> {
        let bin = bin_dir().ok_or("no PostgreSQL server installed (Debian package postgresql)")?;
        let dir = tempfile::Builder::new().prefix("kms-pg-").tempdir().map_err(|e| e.to_string())?;
        let root = dir.path().to_path_buf();
        let c = Cluster { _dir: Some(dir), root, bin, port: free_port() };
        c.give_to_postgres(&c.root)?;
        c.run(
            "initdb",
            &["-D", &c.data().to_string_lossy(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        )?;
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nmax_connections = 300\nfsync = on\nsynchronous_commit = on\n\
             wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '256MB'\nlog_min_messages = warning\n",
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        c.append_conf(&conf)?;
        c.start_server()?;
        Ok(c)
    }

    /// A streaming replica of `self` (`pg_basebackup -R`), started on its own port.
    pub fn replica(&self) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new().prefix("kms-pg-replica-").tempdir().map_err(|e| e.to_string())?;
        let root = dir.path().to_path_buf();
        let r = Cluster { _dir: Some(dir), root, bin: self.bin.clone(), port: free_port() };
        r.give_to_postgres(&r.root)?;
        r.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &r.data().to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        // `-R` wrote primary_conninfo into postgresql.auto.conf, which wins over postgresql.conf:
        // name the standby there, so `synchronous_standby_names = 'replica1'` can match it.
        r.append_file(
            "postgresql.auto.conf",
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=replica1'\n",
                self.port
            ),
        )?;
        r.start_server()?;
        Ok(r)
    }

    /// The data directory (for tests that inspect what the server wrote).
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` (which must exist: see [`Cluster::create_database`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs `sql` in `db` and returns the first column of every row, as text.
    pub fn sql(&self, db: &str, sql: &str) -> Result<Vec<String>, String> {
        let mut c = postgres::Client::connect(&self.url(db), postgres::NoTls).map_err(|e| e.to_string())?;
        let msgs = c.simple_query(sql).map_err(|e| format!("{sql}: {e}"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .collect())
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// `pg_ctl stop -m fast` (clients are disconnected, everything committed is kept).
    pub fn stop(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "fast", "-w", "stop"]).map(|_| ())
    }

    /// SIGKILL to the postmaster and its children: a crash.
    pub fn kill9(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("pkill").args(["-9", "-P", &pid.to_string()]).status();
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            // Gone once nothing accepts on its port (a killed postmaster may linger as a zombie).
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts the server again after [`Cluster::stop`] or [`Cluster::kill9`] (crash recovery).
    pub fn restart(&self) -> Result<(), String> {
        // A killed postmaster may stay a zombie (when nothing reaps orphans, as in some
        // containers), and its pid in these lock files would then look alive.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        let _ = std::fs::remove_file(self.root.join(format!(".s.PGSQL.{}.lock", self.port)));
        self.start_server()
    }

    /// Promotes a replica to primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "-w", "promote"])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.sql("postgres", "SELECT pg_is_in_recovery()").ok().as_deref() == Some(&["f".to_string()]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the replica did not leave recovery".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_server(&self) -> Result<(), String> {
        let opts = format!("-p {} -k {}", self.port, self.root.display());
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.log().to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(self.log()).unwrap_or_default()))?;
        Ok(())
    }

    fn append_conf(&self, text: &str) -> Result<(), String> {
        self.append_file("postgresql.conf", text)
    }

    fn append_file(&self, name: &str, text: &str) -> Result<(), String> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.data().join(name)).map_err(|e| e.to_string())?;
        f.write_all(text.as_bytes()).map_err(|e| e.to_string())
    }

    fn give_to_postgres(&self, dir: &Path) -> Result<(), String> {
        if !is_root() {
            return Ok(());
        }
        let ids = |flag: &str| -> Result<u32, String> {
            let out = Command::new("id").args([flag, "postgres"]).output().map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "no postgres user".to_string())
        };
        std::os::unix::fs::chown(dir, Some(ids("-u")?), Some(ids("-g")?)).map_err(|e| e.to_string())
    }

    /// Runs a server program, as `postgres` when we are root.
    fn run(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let exe = self.bin.join(prog);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out =
            cmd.args(args).current_dir(&self.root).stdin(Stdio::null()).output().map_err(|e| format!("{prog}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{prog} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Hands the cluster to a watchdog that stops it and removes its directory when process
    /// `pid` has exited.
    fn watch(mut self, pid: u32) -> Cluster {
        let dir = self._dir.take().map(|d| d.keep()).unwrap_or_else(|| self.root.clone());
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if is_root() {
            format!("runuser -u postgres -- {} -D {}/data -m immediate stop", pg_ctl.display(), dir.display())
        } else {
            format!("{} -D {}/data -m immediate stop", pg_ctl.display(), dir.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            dir.display()
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // After a kill9 nothing listens, and pg_ctl would wait on the zombie's pid.
        let running = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        if self._dir.is_some() && running {
            let _ = self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// One cluster for the whole test process, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start(&[]).expect("start a PostgreSQL cluster for the tests").watch(std::process::id())
    })
}

/// A fresh database on the [`shared`] cluster; returns its URL.
pub fn fresh_database(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{prefix}_{}_{n}", std::process::id());
    shared().create_database(&name).expect("create a test database")
}
