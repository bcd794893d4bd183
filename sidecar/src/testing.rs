//! A real `kms-sidecar` process for other crates' end-to-end tests (feature `testing`): started on
//! a free port with its own data directory, a client profile holding the cloud service
//! principals' keys, and policies the test passes in.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use kms_client::client::{Client, ClientConfig};

pub const OWNER_ID: &str = "testOwnerAccessKey";
pub const OWNER_SECRET: &str = "testOwnerAccessKeySecret";

/// `kms-sidecar` beside the running test binary (`target/<profile>/deps/…` → `target/<profile>/`),
/// built there by `cargo test --workspace`.
pub fn sidecar_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let p = exe.parent().and_then(|d| d.parent()).expect("target dir").join("kms-sidecar");
    assert!(p.exists(), "{} missing: run the workspace tests (cargo test --workspace)", p.display());
    p
}

/// Encryptor command-line flags naming `endpoint` and an explicit access key.
pub fn key_args(endpoint: &str, id: &str, secret: &str) -> Vec<String> {
    ["--endpoint", endpoint, "--access-key-id", id, "--access-key-secret", secret].map(String::from).to_vec()
}

/// Encryptor command-line flags naming an endpoint where nothing listens.
pub fn unreachable_args() -> Vec<String> {
    key_args("http://127.0.0.1:9", "a", "b")
}

pub struct Sidecar {
    child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
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

impl Sidecar {
    pub fn start(config: &str) -> Sidecar {
        Self::start_with(config, &[], None)
    }

    /// One node of a shared store: `--store url --node-id node`, sealed under `root_key` (a copy
    /// of the first node's, as an operator installs it) or under a new one.
    pub fn start_node(config: &str, url: &str, node: &str, root_key: Option<&[u8]>) -> Sidecar {
        Self::start_with(config, &["--store", url, "--node-id", node], root_key)
    }

    fn start_with(config: &str, extra: &[&str], root_key: Option<&[u8]>) -> Sidecar {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("sidecar.toml");
        std::fs::write(&config_path, config).unwrap();
        let data = dir.path().join("data");
        if let Some(key) = root_key {
            std::fs::create_dir_all(&data).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(data.join("root.key"))
                .unwrap();
            std::io::Write::write_all(&mut f, key).unwrap();
        }
        let mut child = Command::new(sidecar_bin())
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KMS_ACCESS_KEY_ID", OWNER_ID)
            .env("KMS_ACCESS_KEY_SECRET", OWNER_SECRET)
            .env("KMS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start kms-sidecar");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut endpoint = String::new();
        loop {
            let line = lines.next().expect("kms-sidecar exited before listening").unwrap();
            if let Some(rest) = line.strip_prefix("kms-sidecar: listening on ") {
                endpoint = rest.split_whitespace().next().unwrap().to_string();
            } else if line.starts_with("kms-sidecar: client profile in") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Sidecar { child, dir, endpoint }
    }

    /// The software root key the store is sealed under.
    pub fn root_key(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("data/root.key")).unwrap()
    }

    /// The client profile (endpoint and the service principals' keys).
    pub fn profile(&self) -> PathBuf {
        self.dir.path().join("data/profile.json")
    }

    /// A client acting as the owner (to create, disable, rotate and delete CMKs).
    pub fn owner(&self) -> Client {
        Client::new(ClientConfig::with_key(&self.endpoint, OWNER_ID, OWNER_SECRET)).unwrap()
    }

    /// A new CMK of the owner's tagged `tag`=`yes`.
    pub fn tagged_cmk(&self, tag: &str) -> String {
        let req = kms_core::api::CreateKeyRequest {
            tags: Some(format!(r#"[{{"TagKey":"{tag}","TagValue":"yes"}}]"#)),
            ..Default::default()
        };
        self.owner().create_key(&req).unwrap().key_metadata.key_id
    }

    /// Encryptor command-line flags that reach this sidecar with an access key it does not know.
    pub fn unknown_key_args(&self) -> Vec<String> {
        key_args(&self.endpoint, "nobody", "unknown")
    }

    /// Stops the process (as a crash or an outage would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}
