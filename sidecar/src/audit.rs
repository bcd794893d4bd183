//! The audit trail (ActionTrail-style): one JSON line per request, allowed or not, appended to
//! `<data-dir>/audit/audit.log`. Each line carries `seq` and `prev` = SHA-256 (hex) of the previous
//! line's bytes, so deleting, reordering or editing a line breaks the chain at that point
//! (`kmsctl audit verify`). Rotation (by size) renames the file to `audit-<last seq>.log` and the
//! chain continues into the new file. Events hold identities, actions, resources and result codes —
//! never plaintext, data keys, secret values or signatures. Format: `AUDIT.md`.
//!
//! A writer thread owns the file. Mutating calls wait until their event is written and fsynced
//! (and are refused while the log is failing: fail closed); read-only calls do not wait.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CURRENT: &str = "audit.log";

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
}

enum Job {
    Write(AuditEvent, Option<tokio::sync::oneshot::Sender<bool>>),
}

/// Handle to the writer thread.
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
    dir: PathBuf,
}

struct Writer {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    seq: u64,
    prev: String,
    max_bytes: u64,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovering `seq` and the chain head from its last line.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<AuditLog, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (seq, prev) = last_link(dir)?;
        let mut w = Writer { dir: dir.to_path_buf(), file: None, size: 0, seq, prev, max_bytes: max_bytes.max(4096) };
        w.reopen().map_err(|e| format!("{}: {e}", dir.join(CURRENT).display()))?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Job>();
        let h = healthy.clone();
        std::thread::Builder::new().name("kms-audit".into()).spawn(move || w.run(rx, h)).map_err(|e| e.to_string())?;
        Ok(AuditLog { tx, healthy, dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False after a failed write, until a later write succeeds: mutating calls are refused then.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records an event without waiting (read-only calls).
    pub fn record(&self, e: AuditEvent) {
        let _ = self.tx.send(Job::Write(e, None));
    }

    /// Records an event and waits until it is on disk; `false` if it could not be written.
    pub async fn record_durably(&self, e: AuditEvent) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Write(e, Some(tx))).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>, healthy: Arc<AtomicBool>) {
        while let Ok(first) = rx.recv() {
            // Take whatever else is queued: one write (and at most one fsync) for the batch.
            let mut batch = vec![first];
            while let Ok(j) = rx.try_recv() {
                batch.push(j);
                if batch.len() >= 4096 {
                    break;
                }
            }
            let mut buf = Vec::new();
            let mut acks = Vec::new();
            let mut chain = (self.seq, self.prev.clone());
            for Job::Write(mut e, ack) in batch {
                chain.0 += 1;
                e.seq = chain.0;
                e.prev = chain.1.clone();
                let line = serde_json::to_vec(&e).expect("events serialise");
                chain.1 = hex::encode(Sha256::digest(&line));
                buf.extend_from_slice(&line);
                buf.push(b'\n');
                acks.extend(ack);
            }
            let ok = self.append(&buf, !acks.is_empty());
            if ok {
                (self.seq, self.prev) = chain;
                self.size += buf.len() as u64;
                if self.size >= self.max_bytes && self.rotate().is_err() {
                    tracing::error!("audit log rotation failed");
                }
            } else {
                tracing::error!(dir = %self.dir.display(), "audit log write failed; mutating calls are refused until it recovers");
            }
            healthy.store(ok, Ordering::Release);
            for a in acks {
                let _ = a.send(ok);
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

/// The seq and hash of the last complete line (the chain head), or (0, genesis).
fn last_link(dir: &Path) -> Result<(u64, String), String> {
    let mut head = (0, GENESIS.to_string());
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
                head = (e.seq, hex::encode(Sha256::digest(line)));
                return Ok(head);
            }
        }
    }
    Ok(head)
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub files: usize,
    /// The chain head: publish it elsewhere to anchor the log (a cut tail is otherwise invisible).
    pub last_seq: u64,
    pub last_hash: String,
}

/// Checks every line links to the one before it. The error names the file and line where the
/// chain breaks and why.
pub fn verify(dir: &Path) -> Result<Verified, String> {
    let files = log_files(dir)?;
    let (mut seq, mut prev) = (0u64, GENESIS.to_string());
    let mut events = 0;
    for f in &files {
        let reader = BufReader::new(File::open(f).map_err(|e| format!("{}: {e}", f.display()))?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", f.display()))?;
            if line.is_empty() {
                continue;
            }
            let at = format!("{} line {}", f.display(), i + 1);
            let e: AuditEvent =
                serde_json::from_slice(&line).map_err(|_| format!("{at}: not an audit event (damaged or edited)"))?;
            if e.seq != seq + 1 {
                return Err(format!("{at}: seq {} follows {seq}: events are missing or out of order", e.seq));
            }
            if e.prev != prev {
                return Err(format!(
                    "{at}: prev does not match the hash of the line before: a line was edited, removed or reordered"
                ));
            }
            seq = e.seq;
            prev = hex::encode(Sha256::digest(&line));
            events += 1;
        }
    }
    Ok(Verified { events, files: files.len(), last_seq: seq, last_hash: prev })
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
    for f in log_files(dir)? {
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

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            time: "2026-01-01T00:00:00Z".into(),
            action: action.into(),
            principal: "owner".into(),
            ..Default::default()
        }
    }

    fn write_some(dir: &Path, n: usize, max: u64) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let log = AuditLog::open(dir, max).unwrap();
        for i in 0..n {
            assert!(rt.block_on(log.record_durably(ev(&format!("A{i}")))));
        }
    }

    #[test]
    fn the_chain_verifies_across_rotation_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        write_some(d.path(), 50, 4096);
        write_some(d.path(), 50, 4096);
        let v = verify(d.path()).unwrap();
        assert_eq!((v.events, v.last_seq), (100, 100));
        assert!(v.files > 1, "rotated");
        assert_eq!(
            query(d.path(), &Query { action: Some("a7".into()), ..Default::default() }).unwrap().len(),
            2,
            "A7 from each run"
        );
    }

    #[test]
    fn removed_reordered_and_edited_lines_are_found() {
        let d = tempfile::tempdir().unwrap();
        write_some(d.path(), 5, 1 << 20);
        let path = d.path().join(CURRENT);
        let original = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("removed", lines.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| l.to_string()).collect()),
            ("reordered", {
                let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                v.swap(1, 2);
                v
            }),
            ("edited", lines.iter().map(|l| l.replace("\"A1\"", "\"A9\"")).collect()),
        ];
        for (what, content) in cases {
            fs::write(&path, content.join("\n") + "\n").unwrap();
            let e = verify(d.path()).unwrap_err();
            assert!(e.contains("line"), "{what}: {e}");
        }
        fs::write(&path, original).unwrap();
        assert!(verify(d.path()).is_ok());
    }
}
