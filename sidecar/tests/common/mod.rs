//! Starts the real `kms-sidecar` binary on free ports for end-to-end tests.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Runs the sidecar on `dir` expecting it to refuse to start; returns what it printed on stderr.
#[allow(dead_code)]
pub fn start_fails(dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kms-sidecar"))
        .env_remove("KMS_HSM_PIN")
        .envs(envs.iter().copied())
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the sidecar started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub const OWNER_ID: &str = "testAccessKeyId";
pub const OWNER_SECRET: &str = "testAccessKeySecret";

pub struct Sidecar {
    child: Child,
    pub dir: tempfile::TempDir,
    pub http: String,
    pub https: String,
    /// The secrets agent's address, when started with `--agent-listen`.
    pub agent: Option<String>,
}

impl Sidecar {
    pub fn start() -> Sidecar {
        Self::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// Starts on `dir` (a fresh one, or one a stopped sidecar left) with extra arguments.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Sidecar {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like [`Sidecar::start_in`], with extra environment variables.
    pub fn start_with_env(dir: tempfile::TempDir, extra: &[&str], envs: &[(&str, &str)]) -> Sidecar {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kms-sidecar"))
            .envs(envs.iter().copied())
            .args(["--data-dir"])
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .args(extra)
            .env("KMS_ACCESS_KEY_ID", OWNER_ID)
            .env("KMS_ACCESS_KEY_SECRET", OWNER_SECRET)
            .env("KMS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kms-sidecar");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut http, mut https, mut agent) = (String::new(), String::new(), None);
        loop {
            let line = lines.next().expect("kms-sidecar exited before listening").unwrap();
            if let Some(rest) = line.strip_prefix("kms-sidecar: listening on http://") {
                http = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: listening on https://") {
                https = rest.split_whitespace().next().unwrap().to_string();
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: secrets agent on http://") {
                agent = Some(rest.split_whitespace().next().unwrap().to_string());
            } else if line.starts_with("kms-sidecar: client profile in") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Sidecar { child, dir, http, https, agent }
    }

    /// What a client needs, as environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
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

impl Sidecar {
    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// Stops it gracefully and hands back its data dir.
    pub fn stop(mut self) -> tempfile::TempDir {
        sigterm(self.child.id());
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// A Rust client acting as the owner.
    pub fn client(&self) -> kms_client::client::Client {
        let cfg = kms_client::client::ClientConfig::with_key(&format!("http://{}", self.http), OWNER_ID, OWNER_SECRET);
        kms_client::client::Client::new(cfg).unwrap()
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

/// A secret created through `c`, version `v1`, under `key` (or the secrets service key).
pub fn create_secret(c: &kms_client::client::Client, name: &str, value: &str, key: Option<&str>) {
    let _: serde_json::Value = c
        .call(
            "CreateSecret",
            &kms_core::api::CreateSecretRequest {
                secret_name: name.into(),
                secret_data: kms_core::api::SecretString::new(value.into()),
                version_id: "v1".into(),
                encryption_key_id: key.map(Into::into),
                ..Default::default()
            },
        )
        .unwrap();
}

/// A V1 request signed once, as an attacker would capture it.
pub fn signed_v1(action: &str, params: &[(&str, &str)], ak: &str, secret: &str) -> String {
    let mut p: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let ts = kms_core::clock::format_iso(time::OffsetDateTime::now_utc().unix_timestamp());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    for (k, v) in [
        ("Action", action),
        ("Version", "2016-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", ak),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &ts),
    ] {
        p.push((k.into(), v.into()));
    }
    let sts = kms_sidecar::auth::sign::v1_string_to_sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    p.push((
        "Signature".into(),
        kms_sidecar::auth::sign::v1_signature(kms_sidecar::auth::sign::V1Method::HmacSha1, secret, &sts),
    ));
    form_urlencoded::Serializer::new(String::new()).extend_pairs(p).finish()
}

/// POSTs a form body to `http://{addr}/`; the status and the JSON reply.
pub fn post_form(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{addr}/");
    let r = ureq::post(&url).set("content-type", "application/x-www-form-urlencoded").send_string(body);
    let (status, text) = match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(s, resp)) => (s, resp.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    (status, serde_json::from_str(&text).unwrap())
}

impl Sidecar {
    /// SIGKILL: a crash, no shutdown path at all.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

/// Sidecars sharing one store.
pub struct Nodes {
    pub nodes: Vec<Sidecar>,
}

/// Starts `n` sidecars on the store `url`; the first makes the root key, the others get a copy of
/// it (as an operator would install it, or use an HSM).
pub fn start_nodes(url: &str, n: usize) -> Nodes {
    let first = Sidecar::start_in(tempfile::tempdir().unwrap(), &["--store", url, "--node-id", "node-0"]);
    let root = std::fs::read(first.dir.path().join("root.key")).unwrap();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start_node(url, &root, &format!("node-{i}")));
    }
    Nodes { nodes }
}

/// One more sidecar on the store `url`, with a copy of its root key.
pub fn start_node(url: &str, root: &[u8], name: &str) -> Sidecar {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.path().join("root.key")).unwrap();
    std::io::Write::write_all(&mut f, root).unwrap();
    Sidecar::start_in(dir, &["--store", url, "--node-id", name])
}
