//! Where a background mount logs when no `--log-file` is given, so that an integrity error is
//! never lost: the system log (`/dev/log`: journald or rsyslog, facility daemon, tag `kmsfs`),
//! else a file of its own, `/var/log/kmsfs/<mountpoint>.log` for root or
//! `$XDG_STATE_HOME/kmsfs/<mountpoint>.log` (default `~/.local/state`) for a user. Not beside the
//! volume: log lines name paths in the volume, which the cipher directory must not hold.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter};

/// The syslog socket (`KMSFS_SYSLOG_SOCKET` names another, e.g. a container's).
fn syslog_socket() -> PathBuf {
    std::env::var_os("KMSFS_SYSLOG_SOCKET").map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from)
}

/// The writer for a daemon mounted on `mountpoint`.
pub fn writer(mountpoint: &Path) -> io::Result<BoxMakeWriter> {
    let sock = UnixDatagram::unbound()?;
    if sock.connect(syslog_socket()).is_ok() {
        return Ok(BoxMakeWriter::new(Syslog(Arc::new(sock))));
    }
    let path = file_for(mountpoint)?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let file =
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&path)?;
    Ok(BoxMakeWriter::new(Arc::new(file)))
}

fn file_for(mountpoint: &Path) -> io::Result<PathBuf> {
    let dir = if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/log/kmsfs")
    } else {
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .ok_or_else(|| io::Error::other("neither XDG_STATE_HOME nor HOME is set"))?;
        state.join("kmsfs")
    };
    // As systemd names mount units: the path with `/` as `-`.
    let name = mountpoint.display().to_string().trim_matches('/').replace('/', "-");
    Ok(dir.join(format!("{}.log", if name.is_empty() { "-" } else { &name })))
}

/// Sends each event as one datagram: `<priority>kmsfs[pid]: line`.
#[derive(Clone)]
struct Syslog(Arc<UnixDatagram>);

pub struct Line {
    sock: Arc<UnixDatagram>,
    severity: u8,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { sock: self.0.clone(), severity: 6, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        Line { sock: self.0.clone(), severity, buf: Vec::new() }
    }
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        const DAEMON: u8 = 3;
        let text = String::from_utf8_lossy(&self.buf);
        let msg = format!("<{}>kmsfs[{}]: {}", DAEMON * 8 + self.severity, std::process::id(), text.trim_end());
        // The log is gone (syslog restarted): nothing else to tell it to.
        let _ = self.sock.send(msg.as_bytes());
    }
}
