//! The audit trail (ActionTrail-style): one JSON line per request, allowed or not, appended to
//! `<data-dir>/audit/audit.log`. Each line carries `seq`, `prev` (the MAC of the line before) and
//! its own `mac`: HMAC-SHA256 under the engine's chain key, which is sealed under the root key. So
//! only the KMS can write a line that verifies; editing, inserting, reordering or recomputing
//! lines is found by `kmsctl audit verify`. The chain's head (seq + MAC) is anchored in the store:
//! with every durable batch, and at most a second after other lines; so a log cut short or deleted
//! is found too. Rotation (by size) renames the file to `audit-<last seq>.log` and the chain
//! continues into the new file. Events hold identities, actions, resources and result codes —
//! never plaintext, data keys, secret values or signatures. Format: `AUDIT.md`.
//!
//! A writer thread owns the file. Mutating calls wait until their event is written, fsynced and
//! anchored (and are refused while the log is failing: fail closed); read-only calls do not wait.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::engine::{Anchor, ChainKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod line;
use line::{link_of, seal, split_line};
pub use line::{Entry, Rendered};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CURRENT: &str = "audit.log";
/// Events waiting for the writer, at most. A full queue makes `record` wait: requests slow down
/// to the speed of the disk rather than memory growing (and no event is ever dropped).
const QUEUE: usize = 16 * 1024;
/// How long a line written without waiting may stay unanchored.
const ANCHOR_LAG: Duration = Duration::from_secs(1);
/// How long the writer, woken for lines nobody waits for, gathers more before writing: it is
/// woken at most about once per this, not once per request (a thread wake-up per request cost a
/// third of the sidecar's throughput; README, "Benchmarks").
const GATHER: Duration = Duration::from_millis(1);
/// Bytes of rendered lines waiting for the writer, at most (besides `QUEUE` lines): a line's
/// user agent is the client's to choose.
const QUEUE_BYTES: usize = 8 << 20;
/// A drained queue's buffer is handed back for the next batch unless a burst grew it past this.
const SPARE_BYTES: usize = 1 << 20;

/// The code and HTTP status an answer is recorded with: `OK`/200, or the error's.
pub(crate) fn answer_code<T>(result: &Result<T, kms_core::KmsError>) -> (&'static str, u16) {
    match result {
        Ok(_) => ("OK", 200),
        Err(e) => (e.code().code(), e.http_status()),
    }
}

/// One request, as recorded. Field order is the line's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub prev: String,
    pub time: String,
    pub request_id: String,
    pub principal: String,
    pub access_key_id: String,
    pub source_ip: String,
    pub user_agent: String,
    pub action: String,
    pub resources: Vec<String>,
    pub code: String,
    pub http_status: u16,
    pub latency_us: u64,
    /// The line's own MAC; set by the writer, always last.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

/// Where the chain's head is kept: the engine's store in the sidecar, memory in unit tests.
pub trait AnchorStore: Send + Sync {
    fn load(&self) -> Result<Option<Anchor>, String>;
    fn save(&self, anchor: Anchor) -> Result<(), String>;
}

/// The engine's store, held weakly: the writer thread must not keep the engine (and its store
/// lock) alive after the sidecar stops; `Running::shutdown` anchors before letting it go.
impl AnchorStore for std::sync::Weak<kms_core::Engine> {
    fn load(&self) -> Result<Option<Anchor>, String> {
        let e = self.upgrade().ok_or("the engine is closed")?;
        e.audit_anchor().map_err(|e| e.message().to_string())
    }
    fn save(&self, anchor: Anchor) -> Result<(), String> {
        let e = self.upgrade().ok_or("the engine is closed")?;
        e.anchor_audit(anchor).map_err(|e| e.message().to_string())
    }
}

/// About how long a line is (they are 350–600 bytes), to size a batch's buffer.
const LINE_BYTES_HINT: usize = 512;
/// What sealing adds to an entry's rendering: `seq` (up to 20 digits), `prev` and `mac` (64 hex
/// digits each) and their names and quotes.
const SEAL_BYTES: usize = 180;

enum Job {
    /// A change's line: written, synced and anchored before the sender hears `true`.
    Write(Rendered, tokio::sync::oneshot::Sender<bool>),
    /// Anchor whatever is written, then answer.
    Flush(tokio::sync::oneshot::Sender<bool>),
    /// Lines are waiting in `Pending`.
    Kick,
}

/// Lines of read-only requests, waiting for the writer without a channel message each.
#[derive(Default)]
struct Pending {
    lines: parking_lot::Mutex<Waiting>,
    /// A Kick is on its way (or the writer is about to look): no need for another.
    kicked: AtomicBool,
    /// The most lines that have waited at once (`/metrics`: how far the writer fell behind).
    peak: std::sync::atomic::AtomicUsize,
}

/// Rendered entries ([`Entry`]), each followed by a newline, and how many.
#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    count: usize,
}

impl Waiting {
    fn entries(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.split(|&b| b == b'\n').take(self.count)
    }
}

/// Handle to the writer thread.
pub struct AuditLog {
    tx: tokio::sync::mpsc::Sender<Job>,
    pending: Arc<Pending>,
    healthy: Arc<AtomicBool>,
    /// False while the last anchor could not be stored (the log itself may be fine).
    anchor_ok: Arc<AtomicBool>,
    dir: PathBuf,
}

struct Writer {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    seq: u64,
    prev: String,
    max_bytes: u64,
    key: ChainKey,
    anchors: Arc<dyn AnchorStore>,
    anchor_ok: Arc<AtomicBool>,
    /// The seq last anchored, and when.
    anchored: u64,
    anchored_at: Instant,
    /// The last drained queue's buffer, emptied, for the next one to fill.
    spare: Vec<u8>,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovering `seq` and the chain head from its last line
    /// and the anchor. A log that ends before the anchor (cut or deleted) is not silently
    /// restarted: the chain continues from the anchor, so the gap stays visible to `verify`.
    pub fn open(dir: &Path, max_bytes: u64, key: ChainKey, anchors: Arc<dyn AnchorStore>) -> Result<AuditLog, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (mut seq, mut prev) = last_link(dir)?;
        let anchor = anchors.load()?;
        if let Some(a) = anchor.filter(|a| a.seq > seq) {
            tracing::error!(
                dir = %dir.display(),
                "the audit log ends at seq {seq} but the store anchored seq {}: events {}..={} are missing \
                 (deleted or cut off); continuing the chain after the anchor",
                a.seq,
                seq + 1,
                a.seq
            );
            (seq, prev) = (a.seq, hex::encode(a.mac));
        }
        let mut w = Writer {
            dir: dir.to_path_buf(),
            file: None,
            size: 0,
            seq,
            prev,
            max_bytes: max_bytes.max(4096),
            key,
            anchors,
            anchor_ok: Arc::new(AtomicBool::new(true)),
            anchored: anchor.map_or(0, |a| a.seq),
            anchored_at: Instant::now(),
            spare: Vec::new(),
        };
        w.reopen().map_err(|e| format!("{}: {e}", dir.join(CURRENT).display()))?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        let h = healthy.clone();
        let anchor_ok = w.anchor_ok.clone();
        let pending = Arc::new(Pending::default());
        let p = pending.clone();
        std::thread::Builder::new()
            .name("kms-audit".into())
            .spawn(move || w.run(rx, p, h))
            .map_err(|e| e.to_string())?;
        Ok(AuditLog { tx, pending, healthy, anchor_ok, dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False after a failed write, until a later write succeeds: mutating calls are refused then.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Why the log is unhealthy, as the client should hear it: the store that keeps the anchor
    /// is unreachable (retriable, 503), or the log itself cannot be written (500).
    pub fn failure(&self) -> kms_core::KmsError {
        if self.anchor_ok.load(Ordering::Acquire) {
            kms_core::KmsError::internal("the audit log cannot be written; changes are refused until it can")
        } else {
            kms_core::KmsError::with_detail(
                kms_core::ErrorCode::ServiceUnavailableTemporary,
                "the audit trail's anchor cannot be stored (the store is unreachable); retry",
            )
        }
    }

    /// Queues a read-only call's line without waiting for the disk: rendered straight into the
    /// writer's queue, `None` once queued; when the writer is `QUEUE` lines (or `QUEUE_BYTES`)
    /// behind, the line rendered on its own – then [`record`](Self::record) waits for room. The
    /// writer is woken once for all the lines that arrive while it gathers, not once per line.
    pub fn try_record(&self, e: &Entry<'_>) -> Option<Rendered> {
        if self.enqueue(|out| e.render_into(out)) {
            None
        } else {
            Some(e.rendered())
        }
    }

    /// Records a line without waiting for the disk; waits only while the writer is `QUEUE`
    /// lines behind.
    pub async fn record(&self, line: Rendered) {
        while !self.enqueue(|out| out.extend_from_slice(line.bytes())) {
            // A writer that is gone (its thread died) never drains: drop the line, as a closed
            // channel did, rather than holding the request forever.
            if self.tx.is_closed() {
                return;
            }
            // Back-pressure: requests slow to the disk's pace rather than memory growing.
            tokio::time::sleep(GATHER).await;
        }
    }

    /// Appends one rendering (`render` writes an entry's JSON object) to the queue if it has
    /// room, and makes sure the writer is woken.
    fn enqueue(&self, render: impl FnOnce(&mut Vec<u8>)) -> bool {
        let queued = {
            let mut w = self.pending.lines.lock();
            if w.count < QUEUE && w.bytes.len() < QUEUE_BYTES {
                render(&mut w.bytes);
                w.bytes.push(b'\n');
                w.count += 1;
                if w.count > self.pending.peak.load(Ordering::Relaxed) {
                    // Under the lock: no other writer of `peak` races this one.
                    self.pending.peak.store(w.count, Ordering::Relaxed);
                }
                true
            } else {
                false
            }
        };
        if !self.pending.kicked.swap(true, Ordering::AcqRel) {
            // A full channel means the writer is busy; it takes the pending lines anyway.
            let _ = self.tx.try_send(Job::Kick);
        }
        queued
    }

    /// The trail's gauges for `/metrics`: the read-only lines waiting for the writer now, and the
    /// most that ever waited at once (at most `QUEUE`; requests wait beyond it).
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::gauge;
        let now = self.pending.lines.lock().count;
        let peak = self.pending.peak.load(Ordering::Relaxed);
        gauge(out, "kms_audit_backlog_events", "Audit lines of read-only requests waiting for the writer.", now);
        let help = format!("The most audit lines that have waited at once (requests wait beyond {QUEUE}).");
        gauge(out, "kms_audit_backlog_peak_events", &help, peak);
    }

    /// Waits until every event sent so far is written and anchored (at shutdown).
    pub async fn flush(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Records a line and waits until it is on disk and anchored; `false` if it could not be.
    pub async fn record_durably(&self, line: Rendered) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Write(line, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

impl Writer {
    fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Job>, pending: Arc<Pending>, healthy: Arc<AtomicBool>) {
        // Only for the receive timeouts; this thread does blocking file IO and nothing else.
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer runtime");
        let mut open = true;
        while open {
            // Wait for work; while lines are unanchored, no longer than the anchor may lag.
            let first = if self.anchored < self.seq {
                let wait = ANCHOR_LAG.saturating_sub(self.anchored_at.elapsed());
                match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                    Ok(Some(j)) => Some(j),
                    Ok(None) => None,
                    Err(_) => {
                        self.anchor();
                        continue;
                    }
                }
            } else {
                rx.blocking_recv()
            };
            let mut jobs = Vec::new();
            match first {
                None => open = false,
                Some(Job::Kick) => {
                    // Lines nobody waits for: gather what else comes for a moment – unless a
                    // waited-for write arrives, which ends the gathering at once.
                    if let Ok(Some(j)) = rt.block_on(async { tokio::time::timeout(GATHER, rx.recv()).await }) {
                        jobs.push(j);
                    }
                }
                Some(j) => jobs.push(j),
            }
            // Take whatever else is queued: one write (and at most one fsync) for the batch.
            while let Ok(j) = rx.try_recv() {
                jobs.push(j);
                if jobs.len() >= 4096 {
                    break;
                }
            }
            pending.kicked.store(false, Ordering::Release);
            self.drain(&pending, jobs, &healthy);
        }
        // Shutting down: write what is left, anchor it.
        self.drain(&pending, Vec::new(), &healthy);
        self.anchor();
    }

    /// Writes the waiting lines and `jobs`, then keeps the queue's buffer for the next batch.
    fn drain(&mut self, pending: &Pending, jobs: Vec<Job>, healthy: &AtomicBool) {
        let fresh = Waiting { bytes: std::mem::take(&mut self.spare), count: 0 };
        let waiting = std::mem::replace(&mut *pending.lines.lock(), fresh);
        self.write_batch(&waiting, jobs, healthy);
        let mut bytes = waiting.bytes;
        if bytes.capacity() <= SPARE_BYTES {
            bytes.clear();
            self.spare = bytes;
        }
    }

    /// Chains, writes and (for waited-for lines) syncs and anchors one batch: the pending lines
    /// first (they were recorded before anything now in the channel was answered), then the jobs.
    fn write_batch(&mut self, waiting: &Waiting, jobs: Vec<Job>, healthy: &AtomicBool) {
        if waiting.count == 0 && jobs.is_empty() {
            return;
        }
        // Sized for the batch up front: doubling a buffer of thousands of lines leaves each
        // smaller copy behind in the allocator.
        let mut buf =
            Vec::with_capacity(waiting.bytes.len() + waiting.count * SEAL_BYTES + jobs.len() * LINE_BYTES_HINT);
        let (mut changes, mut acks, mut flushes) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            match job {
                Job::Write(line, ack) => {
                    changes.push(line);
                    acks.push(ack);
                }
                Job::Flush(ack) => flushes.push(ack),
                Job::Kick => {}
            }
        }
        let mut chain = (self.seq, self.prev.clone());
        let mut hex_tag = [0u8; 64];
        for fields in waiting.entries().chain(changes.iter().map(Rendered::bytes)) {
            chain.0 += 1;
            // The line carries the previous link; the chain moves on to this line's.
            let tag = seal(&self.key, chain.0, &chain.1, fields, &mut buf);
            hex::encode_to_slice(tag, &mut hex_tag).expect("64 hex digits for 32 bytes");
            chain.1.clear();
            chain.1.push_str(std::str::from_utf8(&hex_tag).expect("hex is ASCII"));
            buf.push(b'\n');
        }
        let durable = !acks.is_empty() || !flushes.is_empty();
        let mut ok = buf.is_empty() || self.append(&buf, durable);
        if ok {
            (self.seq, self.prev) = chain;
            self.size += buf.len() as u64;
            if self.size >= self.max_bytes && self.rotate().is_err() {
                tracing::error!("audit log rotation failed");
            }
            // A durable line is anchored before its call is answered; others within a second.
            if durable || self.anchored_at.elapsed() >= ANCHOR_LAG {
                ok = self.anchor() || !durable;
            }
        } else {
            tracing::error!(dir = %self.dir.display(), "audit log write failed; mutating calls are refused until it recovers");
        }
        healthy.store(ok, Ordering::Release);
        for a in acks.into_iter().chain(flushes) {
            let _ = a.send(ok);
        }
    }

    /// Records the current head in the store; `false` (and logged) if the store refused it.
    fn anchor(&mut self) -> bool {
        if self.anchored >= self.seq {
            return true;
        }
        let mac: [u8; 32] = match hex::decode(&self.prev).ok().and_then(|m| m.try_into().ok()) {
            Some(m) => m,
            None => return false,
        };
        self.anchored_at = Instant::now();
        let saved = self.anchors.save(Anchor { seq: self.seq, mac });
        self.anchor_ok.store(saved.is_ok(), Ordering::Release);
        match saved {
            Ok(()) => {
                self.anchored = self.seq;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot anchor the audit chain in the store");
                false
            }
        }
    }

    fn append(&mut self, buf: &[u8], sync: bool) -> bool {
        if self.file.is_none() && self.reopen().is_err() {
            return false;
        }
        let f = self.file.as_mut().expect("opened");
        let r = f.write_all(buf).and_then(|_| if sync { f.sync_data() } else { Ok(()) });
        if r.is_err() {
            // Drop the handle: a partial line may be on disk; the next attempt starts a new line.
            self.file = None;
            return false;
        }
        true
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(CURRENT);
        let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        let len = f.metadata()?.len();
        // A line cut short by a crash gets a newline, so the next event starts cleanly; verify
        // reports the damaged line.
        if len > 0 {
            let content = fs::read(&path)?;
            if content.last() != Some(&b'\n') {
                f.write_all(b"\n")?;
            }
        }
        self.size = len;
        self.file = Some(f);
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let to = self.dir.join(format!("audit-{:020}.log", self.seq));
        fs::rename(self.dir.join(CURRENT), &to)?;
        kms_core::crypto::seal::sync_dir(&to)?;
        self.reopen()
    }
}

/// The files of a log directory in chain order: rotated files by their last seq, then the current.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut rotated: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("audit-") && n.ends_with(".log")
        })
        .collect();
    rotated.sort();
    let current = dir.join(CURRENT);
    if current.exists() {
        rotated.push(current);
    }
    Ok(rotated)
}

/// The seq and chain value of the last complete line (the chain head), or (0, genesis).
fn last_link(dir: &Path) -> Result<(u64, String), String> {
    for f in log_files(dir)?.iter().rev() {
        // Only regular files hold events (a device such as /dev/full never ends).
        if !fs::metadata(f).map(|m| m.is_file()).unwrap_or(false) {
            continue;
        }
        let content = fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for line in content.split(|b| *b == b'\n').rev() {
            if line.is_empty() {
                continue;
            }
            if let Ok(e) = serde_json::from_slice::<AuditEvent>(line) {
                return Ok((e.seq, link_of(line)));
            }
        }
    }
    Ok((0, GENESIS.to_string()))
}

/// One thing `verify` found wrong. `at` names the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Events `from..=to` are not in the log: removed lines or files, or a cut-off end.
    Missing { from: u64, to: u64, at: String },
    /// A line that is not an audit event (damaged, or cut short by a crash).
    Unreadable { at: String },
    /// A line whose MAC does not verify: edited, or written by someone without the chain key.
    Altered { at: String, seq: u64 },
    /// A line without a MAC after keyed lines began: inserted by someone without the chain key.
    Unkeyed { at: String, seq: u64 },
    /// A line whose `prev` is not the line before it: replaced or moved lines.
    Relinked { at: String, seq: u64 },
    /// A line that repeats or goes back in the sequence.
    OutOfOrder { at: String, seq: u64, after: u64 },
    /// The line at the anchored seq is not the one that was anchored: a substituted chain.
    AnchorMismatch { at: String, seq: u64 },
    /// The store holds no anchor although the log has keyed lines: the anchor was removed, or
    /// the log belongs to another store.
    NoAnchor,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Missing { from, to, at } if from == to => write!(f, "{at}: event {from} is missing"),
            Finding::Missing { from, to, at } => write!(f, "{at}: events {from}..={to} are missing"),
            Finding::Unreadable { at } => write!(f, "{at}: not an audit event (damaged or edited)"),
            Finding::Altered { at, seq } => {
                write!(f, "{at}: event {seq} does not authenticate (edited, or not written by this KMS)")
            }
            Finding::Unkeyed { at, seq } => write!(f, "{at}: event {seq} has no MAC (inserted)"),
            Finding::Relinked { at, seq } => {
                write!(f, "{at}: event {seq} does not link to the line before it (lines replaced or moved)")
            }
            Finding::OutOfOrder { at, seq, after } => write!(f, "{at}: event {seq} comes after event {after}"),
            Finding::AnchorMismatch { at, seq } => {
                write!(f, "{at}: event {seq} is not the event the store anchored (the chain was replaced)")
            }
            Finding::NoAnchor => write!(f, "the store holds no anchor for this log (removed, or another store's log)"),
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub files: usize,
    /// Events written before lines were keyed (checked by hash only).
    pub legacy_events: u64,
    /// The chain head: seq and MAC of the last line.
    pub last_seq: u64,
    pub last_mac: String,
    /// The head the store anchored, if any.
    pub anchored_seq: Option<u64>,
    /// Authentic events after the anchor: written in the last second before the sidecar stopped
    /// or while it runs. Cutting them off is not detectable.
    pub unanchored: u64,
    /// Events `1..first` are absent and `allow_pruned` accepted that (retention removed old files).
    pub pruned_before: Option<u64>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks every line: its MAC, its place in the sequence, its link to the line before, and the
/// end of the log against the store's anchor. Goes on past a problem, so the report lists every
/// missing and altered event. `allow_pruned` accepts a log whose first files were removed.
pub fn verify(dir: &Path, key: &ChainKey, anchor: Option<Anchor>, allow_pruned: bool) -> Result<Report, String> {
    let files = log_files(dir)?;
    let mut r = Report {
        events: 0,
        files: files.len(),
        legacy_events: 0,
        last_seq: 0,
        last_mac: GENESIS.to_string(),
        anchored_seq: anchor.map(|a| a.seq),
        unanchored: 0,
        pruned_before: None,
        findings: Vec::new(),
    };
    // `prev` is unknown (None) after an unreadable line: the next line's link cannot be judged.
    let mut prev: Option<String> = Some(GENESIS.to_string());
    let mut keyed_seen = false;
    // Unreadable lines since the last readable one: they stand for that many events.
    let mut unreadable = 0u64;
    for f in &files {
        let reader = BufReader::new(File::open(f).map_err(|e| format!("{}: {e}", f.display()))?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", f.display()))?;
            if line.is_empty() {
                continue;
            }
            let at = format!("{} line {}", f.display(), i + 1);
            let Ok(e) = serde_json::from_slice::<AuditEvent>(&line) else {
                r.findings.push(Finding::Unreadable { at });
                prev = None;
                unreadable += 1;
                continue;
            };
            let keyed = split_line(&line);
            // The value the next line's `prev` must carry: this line's MAC, or a legacy line's hash.
            let link = match &keyed {
                Some((_, tag)) => hex::encode(tag),
                None => hex::encode(Sha256::digest(&line)),
            };
            match keyed {
                Some((signed, tag)) => {
                    keyed_seen = true;
                    if !key.verifies(&signed, &tag) || e.mac != link {
                        r.findings.push(Finding::Altered { at: at.clone(), seq: e.seq });
                    }
                }
                None if !e.mac.is_empty() => r.findings.push(Finding::Altered { at: at.clone(), seq: e.seq }),
                // Unkeyed lines are only accepted before the first keyed one (a log begun by an
                // older version). A substituted unkeyed prefix cannot link to the keyed line
                // after it, and a wholly unkeyed log does not match the anchor.
                None if keyed_seen => r.findings.push(Finding::Unkeyed { at: at.clone(), seq: e.seq }),
                None => r.legacy_events += 1,
            }
            // Events the unreadable lines before this one stand for are not also reported missing.
            let expected = r.last_seq + 1 + std::mem::take(&mut unreadable);
            if e.seq > expected {
                if r.events == 0 && allow_pruned {
                    r.pruned_before = Some(e.seq);
                } else {
                    r.findings.push(Finding::Missing { from: expected, to: e.seq - 1, at: at.clone() });
                }
            } else if e.seq <= r.last_seq {
                r.findings.push(Finding::OutOfOrder { at: at.clone(), seq: e.seq, after: r.last_seq });
            } else if prev.as_ref().is_some_and(|p| *p != e.prev) {
                r.findings.push(Finding::Relinked { at: at.clone(), seq: e.seq });
            }
            if let Some(a) = anchor.filter(|a| a.seq == e.seq) {
                if link != hex::encode(a.mac) {
                    r.findings.push(Finding::AnchorMismatch { at: at.clone(), seq: e.seq });
                }
            }
            r.events += 1;
            r.last_seq = r.last_seq.max(e.seq);
            r.last_mac = link.clone();
            prev = Some(link);
        }
    }
    match anchor {
        Some(a) if r.last_seq < a.seq => r.findings.push(Finding::Missing {
            from: r.last_seq + 1,
            to: a.seq,
            at: format!("{} (end of the log)", dir.display()),
        }),
        Some(a) => r.unanchored = r.last_seq - a.seq,
        None if keyed_seen => r.findings.push(Finding::NoAnchor),
        None => {}
    }
    Ok(r)
}

/// Verifies the log of the sidecar `cfg` describes, with the chain key and anchor read from its
/// store (read-only, beside a running sidecar) and unsealed with its root key.
pub fn verify_configured(cfg: &crate::config::Config, allow_pruned: bool) -> Result<Report, String> {
    let data = cfg.data_dir();
    let dir = cfg.audit.dir.clone().unwrap_or_else(|| data.join("audit"));
    let root = crate::app::open_root_key(&cfg.hsm, &data, false).map_err(|e| e.to_string())?;
    let node = cfg.node_id(false).unwrap_or_else(|_| "local".into());
    let (key, anchor) = kms_core::engine::open_for_verification(&cfg.store_location()?, &node, &*root.protector)
        .map_err(|e| e.to_string())?;
    verify(&dir, &key, anchor, allow_pruned)
}

/// Filters for `kmsctl audit query`.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    pub action: Option<String>,
    /// Matches events whose resources contain this text (a key id, alias or secret name).
    pub resource: Option<String>,
}

/// Events matching `q`, oldest first. Times compare as ISO-8601 UTC strings.
pub fn query(dir: &Path, q: &Query) -> Result<Vec<AuditEvent>, String> {
    let mut out = Vec::new();
    let since_unix = q.since.as_deref().and_then(kms_core::clock::parse_iso);
    for f in log_files(dir)? {
        // A file last written before `since` holds nothing newer: skipped unread (the audit
        // page asks for the last day of a log that may hold years).
        let modified = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
        let written = modified.and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs() as i64);
        if let (Some(since), Some(written)) = (since_unix, written) {
            if written < since {
                continue;
            }
        }
        let reader = BufReader::new(File::open(&f).map_err(|e| format!("{}: {e}", f.display()))?);
        for line in reader.lines() {
            let line = line.map_err(|e| format!("{}: {e}", f.display()))?;
            let Ok(e) = serde_json::from_str::<AuditEvent>(&line) else { continue };
            let keep = q.since.as_ref().is_none_or(|s| e.time.as_str() >= s.as_str())
                && q.until.as_ref().is_none_or(|u| e.time.as_str() <= u.as_str())
                && q.principal.as_ref().is_none_or(|p| &e.principal == p)
                && q.action.as_ref().is_none_or(|a| e.action.eq_ignore_ascii_case(a))
                && q.resource.as_ref().is_none_or(|r| e.resources.iter().any(|x| x.contains(r.as_str())));
            if keep {
                out.push(e);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct MemAnchors(Mutex<Option<Anchor>>);

    impl AnchorStore for MemAnchors {
        fn load(&self) -> Result<Option<Anchor>, String> {
            Ok(*self.0.lock())
        }
        fn save(&self, a: Anchor) -> Result<(), String> {
            *self.0.lock() = Some(a);
            Ok(())
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        key: ChainKey,
        anchors: Arc<MemAnchors>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture { dir: tempfile::tempdir().unwrap(), key: ChainKey::generate(), anchors: Arc::default() }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `n` events durably (so each is anchored) through a fresh writer, then stops it.
        fn write(&self, n: usize, max: u64) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let log = AuditLog::open(self.path(), max, self.key.clone(), self.anchors.clone()).unwrap();
            for i in 0..n {
                assert!(rt.block_on(log.record_durably(Entry::from(&ev(&format!("A{i}"))).rendered())));
            }
        }

        fn verify(&self) -> Report {
            verify(self.path(), &self.key, *self.anchors.0.lock(), false).unwrap()
        }

        fn current(&self) -> PathBuf {
            self.path().join(CURRENT)
        }
    }

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            time: "2026-01-01T00:00:00Z".into(),
            action: action.into(),
            principal: "owner".into(),
            ..Default::default()
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
    }

    fn put(p: &Path, lines: &[String]) {
        fs::write(p, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn the_chain_verifies_across_rotation_and_reopen() {
        let f = Fixture::new();
        f.write(50, 4096);
        f.write(50, 4096);
        let v = f.verify();
        assert!(v.ok(), "{:?}", v.findings);
        assert_eq!((v.events, v.last_seq, v.anchored_seq, v.unanchored), (100, 100, Some(100), 0));
        assert!(v.files > 1, "rotated");
        assert_eq!(
            query(f.path(), &Query { action: Some("a7".into()), ..Default::default() }).unwrap().len(),
            2,
            "A7 from each run"
        );
    }

    #[test]
    fn a_query_from_a_time_skips_files_last_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let event = |t: &str| {
            serde_json::to_string(&AuditEvent { time: t.into(), action: "Encrypt".into(), ..Default::default() })
                .unwrap()
        };
        let old = dir.path().join("audit-00000001.log");
        put(&old, &[event("2020-01-01T00:00:00Z")]);
        let year_2020 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
        File::options().write(true).open(&old).unwrap().set_modified(year_2020).unwrap();
        put(&dir.path().join(CURRENT), &[event("2026-06-01T00:00:00Z")]);
        let all = query(dir.path(), &Query::default()).unwrap();
        assert_eq!(all.len(), 2);
        // A line in the old file claiming a later time would show if the file were read: it is not.
        put(&old, &[event("2026-06-02T00:00:00Z")]);
        File::options().write(true).open(&old).unwrap().set_modified(year_2020).unwrap();
        let recent =
            query(dir.path(), &Query { since: Some("2025-01-01T00:00:00Z".into()), ..Default::default() }).unwrap();
        assert_eq!(recent.iter().map(|e| e.time.as_str()).collect::<Vec<_>>(), ["2026-06-01T00:00:00Z"]);
    }

    #[test]
    fn the_backlog_gauges_count_waiting_lines() {
        let f = Fixture::new();
        let log = AuditLog::open(f.path(), 1 << 20, f.key.clone(), f.anchors.clone()).unwrap();
        let mut before = String::new();
        log.render_metrics(&mut before);
        assert!(before.contains("\nkms_audit_backlog_peak_events 0\n"), "{before}");
        assert!(log.try_record(&Entry::from(&ev("Encrypt"))).is_none());
        let mut after = String::new();
        log.render_metrics(&mut after);
        assert!(after.contains("\nkms_audit_backlog_peak_events 1\n"), "{after}");
        assert!(after.contains("\nkms_audit_backlog_events "), "{after}");
    }

    #[test]
    fn reads_are_anchored_within_a_second_and_at_shutdown() {
        let f = Fixture::new();
        let log = AuditLog::open(f.path(), 1 << 20, f.key.clone(), f.anchors.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(log.record(Entry::from(&ev("Encrypt")).rendered()));
        std::thread::sleep(ANCHOR_LAG + Duration::from_millis(500));
        assert_eq!(f.anchors.0.lock().map(|a| a.seq), Some(1), "anchored by the lag timer");
        rt.block_on(log.record(Entry::from(&ev("Decrypt")).rendered()));
        drop(log);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(f.anchors.0.lock().map(|a| a.seq), Some(2), "anchored when the writer stops");
        assert!(f.verify().ok());
    }

    #[test]
    fn every_tampering_is_reported_with_what_it_touched() {
        let f = Fixture::new();
        f.write(8, 1 << 20);
        let original = lines(&f.current());
        let anchor = *f.anchors.0.lock();
        let check = |what: &str, content: Vec<String>, want: &dyn Fn(&[Finding]) -> bool| {
            put(&f.current(), &content);
            let r = verify(f.path(), &f.key, anchor, false).unwrap();
            assert!(!r.ok() && want(&r.findings), "{what}: {:?}", r.findings);
        };
        let edit = |i: usize, from: &str, to: &str| {
            let mut v = original.clone();
            v[i] = v[i].replace(from, to);
            v
        };
        // The last line edited (no later line links to it: only its own MAC catches it).
        check("edit last", edit(7, "\"A7\"", "\"A9\""), &|f| {
            matches!(
                f,
                [Finding::Altered { seq: 8, .. }, Finding::AnchorMismatch { .. }] | [Finding::Altered { seq: 8, .. }]
            )
        });
        // A middle line edited: exactly that event, not the ones after it.
        check("edit middle", edit(4, "\"A4\"", "\"A5\""), &|f| matches!(f, [Finding::Altered { seq: 5, .. }]));
        // Line 5 edited and every later prev and MAC recomputed under a key the attacker chose.
        let forger = ChainKey::generate();
        let mut forged = original[..4].to_vec();
        let mut prev = serde_json::from_str::<AuditEvent>(&original[3]).unwrap().mac;
        for l in &original[4..] {
            let mut e: AuditEvent = serde_json::from_str(l).unwrap();
            e.action = e.action.replace('A', "B");
            e.prev = prev;
            e.mac.clear();
            let mut line = Vec::new();
            let tag = line::seal_event(&forger, &e, &mut line);
            prev = hex::encode(tag);
            forged.push(String::from_utf8(line).unwrap());
        }
        check("recomputed chain", forged, &|f| {
            f.iter().filter(|x| matches!(x, Finding::Altered { .. })).count() == 4
                && f.iter().any(|x| matches!(x, Finding::AnchorMismatch { seq: 8, .. }))
        });
        // The old unkeyed format substituted for the whole log.
        let unkeyed: Vec<String> = original
            .iter()
            .map(|l| {
                let mut e: AuditEvent = serde_json::from_str(l).unwrap();
                e.mac.clear();
                serde_json::to_string(&e).unwrap()
            })
            .collect();
        check("unkeyed", unkeyed.clone(), &|f| f.iter().any(|x| matches!(x, Finding::AnchorMismatch { seq: 8, .. })));
        let mut half = unkeyed[..4].to_vec();
        half.extend_from_slice(&original[4..]);
        check("unkeyed prefix", half, &|f| f.iter().any(|x| matches!(x, Finding::Relinked { seq: 5, .. })));
        let mut inserted = original.clone();
        inserted[5] = unkeyed[5].clone();
        check("unkeyed line", inserted, &|f| matches!(f, [Finding::Unkeyed { seq: 6, .. }, ..]));
        // Lines cut off the end: the anchor says how many.
        check("truncated", original[..5].to_vec(), &|f| matches!(f, [Finding::Missing { from: 6, to: 8, .. }]));
        // A line removed from the middle; two lines swapped.
        let mut removed = original.clone();
        removed.remove(2);
        check("removed", removed, &|f| matches!(f, [Finding::Missing { from: 3, to: 3, .. }]));
        let mut swapped = original.clone();
        swapped.swap(1, 2);
        check("swapped", swapped, &|f| f.iter().any(|x| matches!(x, Finding::OutOfOrder { seq: 2, .. })));
        // A damaged line.
        check("damaged", edit(3, "{", "<"), &|f| matches!(f, [Finding::Unreadable { .. }]));
        // audit.log deleted; then every file deleted.
        fs::remove_file(f.current()).unwrap();
        let r = f.verify();
        assert_eq!(
            r.findings,
            vec![Finding::Missing { from: 1, to: 8, at: format!("{} (end of the log)", f.path().display()) }]
        );
        // Without the anchor (a store that lost it) a keyed log is still reported.
        put(&f.current(), &original);
        let r = verify(f.path(), &f.key, None, false).unwrap();
        assert_eq!(r.findings, vec![Finding::NoAnchor]);
        put(&f.current(), &original);
        assert!(f.verify().ok());
    }

    #[test]
    fn a_restart_after_deletion_keeps_the_gap_visible() {
        let f = Fixture::new();
        f.write(5, 1 << 20);
        fs::remove_file(f.current()).unwrap();
        f.write(2, 1 << 20);
        let r = f.verify();
        assert_eq!(r.last_seq, 7, "the chain continued after the anchor, not from 1");
        assert!(matches!(r.findings.as_slice(), [Finding::Missing { from: 1, to: 5, .. }]), "{:?}", r.findings);
        // Retention (old files removed on purpose) is accepted when asked for.
        let pruned = verify(f.path(), &f.key, *f.anchors.0.lock(), true).unwrap();
        assert!(pruned.ok() && pruned.pruned_before == Some(6), "{pruned:?}");
    }

    #[test]
    fn a_legacy_unkeyed_log_continues_keyed() {
        let f = Fixture::new();
        let mut legacy = Vec::new();
        let mut prev = GENESIS.to_string();
        for i in 1..=3u64 {
            let e = AuditEvent { seq: i, prev: prev.clone(), ..ev("Old") };
            let l = serde_json::to_string(&e).unwrap();
            prev = hex::encode(Sha256::digest(l.as_bytes()));
            legacy.push(l);
        }
        put(&f.current(), &legacy);
        f.write(2, 1 << 20);
        let r = f.verify();
        assert!(r.ok(), "{:?}", r.findings);
        assert_eq!((r.events, r.legacy_events, r.last_seq), (5, 3, 5));
    }

    #[test]
    fn queued_lines_are_written_in_order_before_a_change() {
        let f = Fixture::new();
        let log = AuditLog::open(f.path(), 1 << 20, f.key.clone(), f.anchors.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for i in 0..100 {
            // A newline in a client's string stays escaped inside its line.
            let e = AuditEvent { user_agent: format!("agent\n{i}"), ..ev(&format!("R{i}")) };
            if let Some(line) = log.try_record(&Entry::from(&e)) {
                rt.block_on(log.record(line));
            }
        }
        assert!(rt.block_on(log.record_durably(Entry::from(&ev("Change")).rendered())));
        drop(log);
        let got: Vec<AuditEvent> = lines(&f.current()).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let actions: Vec<&str> = got.iter().map(|e| e.action.as_str()).collect();
        let want: Vec<String> = (0..100).map(|i| format!("R{i}")).chain(["Change".into()]).collect();
        assert_eq!(actions, want);
        assert_eq!(got[7].user_agent, "agent\n7");
        assert_eq!(got.last().map(|e| e.seq), Some(101));
        assert!(f.verify().ok());
    }
}
