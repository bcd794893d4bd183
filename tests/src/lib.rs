//! Helpers for the end-to-end tests in `tests/`: the workspace's programs as real processes.
//! `cargo test --workspace` builds every binary into the target directory these tests run from;
//! the tests run them from there, as a user runs the installed programs.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod sidecar;

/// A workspace binary beside the running test binary (`target/<profile>/deps/…` →
/// `target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let p = exe.parent().and_then(|d| d.parent()).expect("target dir").join(name);
    assert!(p.exists(), "{} missing: run the workspace tests (cargo test --workspace)", p.display());
    p
}

/// The workspace's root directory (where `.ci-cache/` and the SDK test suites are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// Whether the tests that need Alibaba's SDKs are to be skipped (`KMS_SKIP_SDK_TESTS=1`, on a
/// machine without them); says so on stderr when they are.
pub fn sdk_tests_skipped() -> bool {
    let skip = std::env::var("KMS_SKIP_SDK_TESTS").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("KMS_SKIP_SDK_TESTS=1: skipped");
    }
    skip
}

/// The Python of the virtualenv `.ci/setup` installs Alibaba's Python SDKs into.
pub fn venv_python() -> PathBuf {
    let python = workspace().join(".ci-cache/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash .ci/setup` (or set KMS_SKIP_SDK_TESTS=1)", python.display());
    python
}

/// The key version a kmsfs volume's data key is wrapped under, from the blob header in its config.
pub fn kmsfs_wrapping_version(cipher: &Path) -> String {
    use base64::Engine as _;
    let conf: serde_json::Value = serde_json::from_slice(&std::fs::read(cipher.join("kmsfs.conf")).unwrap()).unwrap();
    let blob = base64::engine::general_purpose::STANDARD.decode(conf["wrapped_data_key"].as_str().unwrap()).unwrap();
    kms_core::crypto::blob::parse(&blob).unwrap().version_id.to_string()
}

/// Runs `program` with `args`; its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program)).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Stdout of a successful run, or a panic with its stderr.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a system tool (`qemu-io`, …) and returns its stdout, panicking with stderr on failure.
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    ok(&out)
}

/// `kmsfs mount -f` as a child, ready once it printed `ready`; unmounted when dropped.
pub struct KmsfsMount {
    child: Option<Child>,
    pub mnt: PathBuf,
}

impl KmsfsMount {
    pub fn start(kms: &[&str], cipher: &Path, mnt: &Path) -> KmsfsMount {
        let mut child = Command::new(bin("kmsfs"))
            .args(kms)
            .args(["mount", "-f"])
            .arg(cipher)
            .arg(mnt)
            .env_remove("KMSFS_DAEMON")
            .env("KMSFS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kmsfs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(l)) if l == "ready" => {}
            other => panic!("kmsfs mount not ready: {other:?}"),
        }
        KmsfsMount { child: Some(child), mnt: mnt.to_path_buf() }
    }

    /// Unmounts as `umount` would and waits for the daemon to exit cleanly.
    pub fn unmount(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mnt).status();
            let status = c.wait().unwrap();
            assert!(status.success(), "kmsfs exited with {status}");
        }
    }
}

impl Drop for KmsfsMount {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.mnt).status();
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `blockcrypt serve` on a Unix socket; stopped when dropped.
pub struct NbdServer {
    pub child: Child,
    pub socket: PathBuf,
    stopped: bool,
}

impl NbdServer {
    /// `blockcrypt <kms flags> serve --socket SOCKET <extra> <exports>`, back once it accepts
    /// connections (or a panic with its log if it exits first).
    pub fn start<S: AsRef<std::ffi::OsStr>>(kms: &[S], socket: &Path, exports: &[&str], extra: &[&str]) -> NbdServer {
        let mut child = Command::new(bin("blockcrypt"))
            .args(kms)
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .args(exports)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start blockcrypt serve");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("blockcrypt serve exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "blockcrypt serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Keep reading its log so it never blocks on a full pipe.
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        NbdServer { child, socket: socket.to_path_buf(), stopped: false }
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    /// SIGTERM (a clean stop that flushes) and waits for the exit.
    pub fn stop(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).stderr(Stdio::null()).status();
            let _ = self.child.wait();
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        self.stopped = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
