//! Backgrounding a mount: the command re-runs itself as a daemon (a new session, no terminal)
//! and waits on the daemon's stdout for one line – `ready`, or `error <code> <message>` – so
//! `kmsfs mount` returns only once the mount works, or fails with the daemon's own exit code and
//! message.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Failure, EXIT_OTHER};

const DAEMON_ENV: &str = "KMSFS_DAEMON";

pub fn is_daemon() -> bool {
    std::env::var_os(DAEMON_ENV).is_some_and(|v| v == "1")
}

/// Starts the daemon and waits until it is ready or has failed.
pub fn spawn(log_file: Option<&Path>) -> Result<u32, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::new(EXIT_OTHER, e))?;
    let stderr = match log_file {
        Some(p) => Stdio::from(
            std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().create(true).append(true), 0o600)
                .open(p)
                .map_err(|e| Failure::new(EXIT_OTHER, format!("log file {}: {e}", p.display())))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DAEMON_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Failure::new(EXIT_OTHER, format!("cannot start the daemon: {e}")))?;
    let pid = child.id();
    let out = BufReader::new(child.stdout.take().expect("piped"));
    for line in out.lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            return Ok(pid);
        }
        if let Some(rest) = line.strip_prefix("error ") {
            let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let _ = child.wait();
            return Err(Failure::new(code.parse().unwrap_or(EXIT_OTHER), message));
        }
    }
    let status = child.wait().map_err(|e| Failure::new(EXIT_OTHER, e))?;
    Err(Failure::new(
        status.code().unwrap_or(EXIT_OTHER),
        format!("the daemon exited ({status}) before the mount was ready"),
    ))
}

/// In the daemon: leave the caller's session so a closing terminal does not take the mount.
pub fn detach() {
    if is_daemon() {
        let _ = rustix::process::setsid();
    }
}

/// Tells the waiting command the mount is live; a daemon then lets go of its stdout (the pipe)
/// so the command's caller sees end-of-file.
pub fn report_ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    if is_daemon() {
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    }
}

pub fn report_failure(f: &Failure) {
    if is_daemon() {
        println!("error {} {}", f.code, f.message.replace('\n', " "));
    }
}
