//! Alibaba's own SDKs, unmodified, against the real `kms-sidecar` binary: the Python suites
//! (py-core V1, py-tea V3/V1) with pytest and the Node suites (Tea 1.x, pop-core GET/POST) with
//! `node --test`, over HTTP and HTTPS with the generated CA.
//!
//! The SDKs are installed by `.ci/setup` into `.ci-cache/venv` and `sidecar/tests/sdk/node`.
//! Set `KMS_SKIP_SDK_TESTS=1` to skip these tests on a machine without them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn skip() -> bool {
    std::env::var("KMS_SKIP_SDK_TESTS").is_ok_and(|v| v == "1")
}

const OWNER_ID: &str = "testAccessKeyId";
const OWNER_SECRET: &str = "testAccessKeySecret";

struct Sidecar {
    child: Child,
    dir: tempfile::TempDir,
    http: String,
    https: String,
}

impl Sidecar {
    fn start() -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kms-sidecar"))
            .args(["--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .env("KMS_ACCESS_KEY_ID", OWNER_ID)
            .env("KMS_ACCESS_KEY_SECRET", OWNER_SECRET)
            .env("KMS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kms-sidecar");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut http, mut https) = (String::new(), String::new());
        while http.is_empty() || https.is_empty() {
            let line = lines.next().expect("kms-sidecar exited before listening").unwrap();
            if let Some(rest) = line.strip_prefix("kms-sidecar: listening on http://") {
                http = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: listening on https://") {
                https = rest.split_whitespace().next().unwrap().to_string();
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Sidecar { child, dir, http, https }
    }

    fn env(&self) -> Vec<(String, String)> {
        let profile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("profile.json")).unwrap()).unwrap();
        let oss = &profile["services"]["oss"];
        vec![
            ("KMS_HTTP".into(), self.http.clone()),
            ("KMS_HTTPS".into(), self.https.clone()),
            ("KMS_CA_FILE".into(), self.dir.path().join("tls/ca.pem").display().to_string()),
            ("KMS_ACCESS_KEY_ID".into(), OWNER_ID.into()),
            ("KMS_ACCESS_KEY_SECRET".into(), OWNER_SECRET.into()),
            ("KMS_OSS_ACCESS_KEY_ID".into(), oss["access_key_id"].as_str().unwrap().into()),
            ("KMS_OSS_ACCESS_KEY_SECRET".into(), oss["access_key_secret"].as_str().unwrap().into()),
        ]
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SIGTERM: the graceful path; then make sure it is gone.
        sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM through the `kill` command (no libc binding needed in the test).
fn sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

fn run_suite(name: &str, mut cmd: Command, sidecar: &Sidecar) {
    cmd.current_dir(workspace()).envs(sidecar.env());
    let status = cmd.status().unwrap_or_else(|e| panic!("{name}: cannot run: {e}"));
    assert!(status.success(), "{name} failed ({status})");
}

#[test]
fn python_sdks() {
    if skip() {
        eprintln!("KMS_SKIP_SDK_TESTS=1: skipped");
        return;
    }
    let python = workspace().join(".ci-cache/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash .ci/setup` (or set KMS_SKIP_SDK_TESTS=1)", python.display());
    let sidecar = Sidecar::start();
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        "sidecar/tests/sdk/python",
    ]);
    run_suite("pytest", cmd, &sidecar);
}

#[test]
fn node_sdks() {
    if skip() {
        eprintln!("KMS_SKIP_SDK_TESTS=1: skipped");
        return;
    }
    let modules = workspace().join("sidecar/tests/sdk/node/node_modules");
    assert!(modules.exists(), "{} is missing: run `bash .ci/setup` (or set KMS_SKIP_SDK_TESTS=1)", modules.display());
    let sidecar = Sidecar::start();
    let mut cmd = Command::new("node");
    cmd.args(["--test", "sidecar/tests/sdk/node/"]);
    cmd.env("NODE_EXTRA_CA_CERTS", sidecar.dir.path().join("tls/ca.pem"));
    run_suite("node --test", cmd, &sidecar);
}
