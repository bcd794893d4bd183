//! A real `kms-sidecar` process – the one harness every crate's end-to-end tests start it with:
//! free ports (HTTP and HTTPS), its own data directory (a fresh one, or one a stopped sidecar
//! left), a config the test passes in, optionally one node of a shared store.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kms_client::client::{Client, ClientConfig};

use crate::bin;

/// The owner's access key, given to every sidecar this starts.
pub const OWNER_ID: &str = "testAccessKeyId";
pub const OWNER_SECRET: &str = "testAccessKeySecret";

/// Encryptor command-line flags naming `endpoint` and an explicit access key.
pub fn key_args(endpoint: &str, id: &str, secret: &str) -> Vec<String> {
    ["--endpoint", endpoint, "--access-key-id", id, "--access-key-secret", secret].map(String::from).to_vec()
}

/// Encryptor command-line flags naming an endpoint where nothing listens.
pub fn unreachable_args() -> Vec<String> {
    key_args("http://127.0.0.1:9", "a", "b")
}

/// Lets `service` (`oss`, `ecs`) use the owner's CMKs tagged `tag`=`yes`, as a user grants a
/// cloud service its key; key versions may be made without the 7-day wait.
pub fn config_for_service(service: &str, tag: &str) -> String {
    config_for_services(&[(service, tag)])
}

/// [`config_for_service`] for several services at once.
pub fn config_for_services(grants: &[(&str, &str)]) -> String {
    let mut config = "[engine.limits]\nmin_manual_version_interval_secs = 0\n".to_string();
    for (service, tag) in grants {
        config.push_str(&format!(
            r#"
[[policies]]
principal = "service:{service}"
name = "{service}-uses-tagged-cmks"
document = '''{{"Version":"1","Statement":[{{"Effect":"Allow",
  "Action":["kms:GenerateDataKey","kms:Decrypt","kms:ReEncryptFrom","kms:ReEncryptTo"],
  "Resource":"*","Condition":{{"StringEqualsIgnoreCase":{{"kms:tag/{tag}":"yes"}}}}}}]}}'''
"#
        ));
    }
    config
}

/// Runs the sidecar on `dir` expecting it to refuse to start; its exit code and what it printed
/// on stderr.
pub fn start_fails(dir: &std::path::Path, extra: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(bin("kms-sidecar"))
        .env_remove("KMS_HSM_PIN")
        .envs(envs.iter().copied())
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the sidecar started");
    (out.status.code().expect("exited, not killed"), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub struct Sidecar {
    child: Child,
    /// Its data directory (profile, root key, store, TLS files, audit log).
    pub dir: tempfile::TempDir,
    /// `host:port` of the HTTP and HTTPS listeners.
    pub http: String,
    pub https: String,
    /// `http://` + [`Sidecar::http`].
    pub endpoint: String,
    /// The secrets agent's address, when started with `--agent-listen`.
    pub agent: Option<String>,
    /// The console's URL (`http://host:port/`), when started with one.
    pub console: Option<String>,
}

impl Sidecar {
    /// On a fresh data directory with the default configuration.
    pub fn start() -> Sidecar {
        Self::start_in(tempfile::tempdir().unwrap(), &[])
    }

    /// On a fresh data directory with `config` (TOML) as its configuration file.
    pub fn with_config(config: &str) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, config);
        Self::start_in(dir, &["--config", &path])
    }

    /// One node of a shared store: `--store url --node-id node`, with `config` if given, sealed
    /// under `root_key` (a copy of the first node's, as an operator installs it) or under a new
    /// one.
    pub fn node(config: Option<&str>, url: &str, node: &str, root_key: Option<&[u8]>) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        if let Some(key) = root_key {
            install_root_key(&dir, key);
        }
        let mut args = vec!["--store", url, "--node-id", node];
        let path = config.map(|c| write_config(&dir, c));
        if let Some(p) = &path {
            args.extend(["--config", p.as_str()]);
        }
        Self::start_in(dir, &args)
    }

    /// Starts on `dir` (a fresh one, or one a stopped sidecar left) with extra arguments.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Sidecar {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like [`Sidecar::start_in`], with extra environment variables.
    pub fn start_with_env(dir: tempfile::TempDir, extra: &[&str], envs: &[(&str, &str)]) -> Sidecar {
        let mut child = Command::new(bin("kms-sidecar"))
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
        let (mut http, mut https, mut agent, mut console) = (String::new(), String::new(), None, None);
        loop {
            let line = lines.next().expect("kms-sidecar exited before listening").unwrap();
            if let Some(rest) = line.strip_prefix("kms-sidecar: listening on http://") {
                http = rest.trim().to_string();
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: listening on https://") {
                https = rest.split_whitespace().next().unwrap().to_string();
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: secrets agent on http://") {
                agent = Some(rest.split_whitespace().next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("kms-sidecar: console on ") {
                console = Some(rest.trim().to_string());
            } else if line.starts_with("kms-sidecar: client profile in") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let endpoint = format!("http://{http}");
        Sidecar { child, dir, http, https, endpoint, agent, console }
    }

    /// What a client needs, as environment variables.
    pub fn env(&self) -> Vec<(String, String)> {
        let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(self.profile()).unwrap()).unwrap();
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

    /// The software root key the store is sealed under.
    pub fn root_key(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("root.key")).unwrap()
    }

    /// The client profile (endpoint and the service principals' keys).
    pub fn profile(&self) -> PathBuf {
        self.dir.path().join("profile.json")
    }

    /// A client acting as the owner (to create, disable, rotate and delete CMKs).
    pub fn client(&self) -> Client {
        Client::new(ClientConfig::with_key(&self.endpoint, OWNER_ID, OWNER_SECRET)).unwrap()
    }

    /// A new CMK of the owner's tagged `tag`=`yes`.
    pub fn tagged_cmk(&self, tag: &str) -> String {
        let req = kms_core::api::CreateKeyRequest {
            tags: Some(format!(r#"[{{"TagKey":"{tag}","TagValue":"yes"}}]"#)),
            ..Default::default()
        };
        self.client().create_key(&req).unwrap().key_metadata.key_id
    }

    /// Encryptor command-line flags that reach this sidecar with an access key it does not know.
    pub fn unknown_key_args(&self) -> Vec<String> {
        key_args(&self.endpoint, "nobody", "unknown")
    }

    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// Stops it gracefully and hands back its data dir.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// SIGKILL: a crash, no shutdown path at all; hands back its data dir.
    pub fn kill9(mut self) -> tempfile::TempDir {
        self.crash();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// SIGKILL, keeping the value (an outage the test later reads the state of).
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SIGTERM: the graceful path; `wait` makes sure it is gone.
        self.terminate();
    }
}

/// Writes `config` as the data directory's `sidecar.toml`; its path.
fn write_config(dir: &tempfile::TempDir, config: &str) -> String {
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, config).unwrap();
    path.display().to_string()
}

/// Writes a copy of a root key into a data directory about to be used, mode 0600.
pub fn install_root_key(dir: &tempfile::TempDir, key: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.path().join("root.key")).unwrap();
    std::io::Write::write_all(&mut f, key).unwrap();
}

/// Sidecars sharing one store.
pub struct Nodes {
    pub nodes: Vec<Sidecar>,
}

/// Starts `n` sidecars on the store `url` with the default configuration; the first makes the
/// root key, the others get a copy of it (as an operator would install it, or use an HSM).
pub fn start_nodes(url: &str, n: usize) -> Nodes {
    start_nodes_with(url, n, None)
}

/// Like [`start_nodes`], every node with `config` (TOML) if given.
pub fn start_nodes_with(url: &str, n: usize, config: Option<&str>) -> Nodes {
    let first = Sidecar::node(config, url, "node-0", None);
    let root = first.root_key();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(Sidecar::node(config, url, &format!("node-{i}"), Some(&root)));
    }
    Nodes { nodes }
}
