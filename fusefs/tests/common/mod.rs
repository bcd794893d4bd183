//! Real mounts for end-to-end tests: `kmsfs init` + `kmsfs mount -f` as child processes on
//! temporary directories, an embedded KMS store or a real `kms-sidecar`, and a plain directory
//! beside each mount to compare against.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn kmsfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kmsfs"))
}

/// `kms-sidecar`, built beside `kmsfs` by `cargo test --workspace`.
pub fn sidecar_bin() -> PathBuf {
    let p = kmsfs_bin().with_file_name("kms-sidecar");
    assert!(p.exists(), "{} missing: run the workspace tests (cargo test --workspace)", p.display());
    p
}

/// How the volume reaches the KMS: flags for every `kmsfs` call.
#[derive(Clone)]
pub struct Kms {
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Kms {
    pub fn embedded(dir: &Path) -> Kms {
        Kms { args: vec!["--embedded".into(), dir.display().to_string()], envs: vec![] }
    }
}

/// Runs `kmsfs` with the KMS flags and `args`.
pub fn kmsfs(kms: &Kms, args: &[&str]) -> Output {
    Command::new(kmsfs_bin())
        .args(&kms.args)
        .args(args)
        .envs(kms.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("KMSFS_DAEMON")
        .stdin(Stdio::null())
        .output()
        .expect("run kmsfs")
}

pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "kmsfs failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mounted volume, its cipher directory and a plain reference directory.
pub struct Mount {
    pub kms: Kms,
    pub cipher: PathBuf,
    pub mnt: PathBuf,
    pub plain: PathBuf,
    pub log: PathBuf,
    /// A command the daemon is started under (`prlimit …`), if any.
    pub wrapper: Vec<String>,
    /// Extra `kmsfs mount` arguments (`-o writeback`, …).
    pub mount_args: Vec<String>,
    daemon: Option<Child>,
    _dirs: tempfile::TempDir,
}

impl Mount {
    /// A new AES volume on an embedded KMS, mounted.
    pub fn new() -> Mount {
        Self::with(&["--cipher", "aes-256-gcm"])
    }

    pub fn with(init_args: &[&str]) -> Mount {
        let dirs = tempfile::tempdir().unwrap();
        let kms = Kms::embedded(&dirs.path().join("kms"));
        Self::create(dirs, kms, init_args)
    }

    pub fn create(dirs: tempfile::TempDir, kms: Kms, init_args: &[&str]) -> Mount {
        let root = dirs.path();
        let (cipher, mnt, plain) = (root.join("cipher"), root.join("mnt"), root.join("plain"));
        for d in [&cipher, &mnt, &plain] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mut args = vec!["init", cipher.to_str().unwrap()];
        args.extend_from_slice(init_args);
        ok(&kmsfs(&kms, &args));
        let mut m = Mount {
            kms,
            cipher,
            mnt,
            plain,
            log: root.join("kmsfs.log"),
            wrapper: vec![],
            mount_args: vec![],
            daemon: None,
            _dirs: dirs,
        };
        m.mount();
        m
    }

    /// Mounts in the foreground as a child (its log in `self.log`), back once it is ready.
    pub fn mount(&mut self) {
        assert!(self.daemon.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(kmsfs_bin());
                c
            }
            None => Command::new(kmsfs_bin()),
        };
        let mut child = cmd
            .args(&self.kms.args)
            .args(["mount", "-f"])
            .args(&self.mount_args)
            .arg(&self.cipher)
            .arg(&self.mnt)
            .envs(self.kms.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("KMSFS_DAEMON")
            .env("KMSFS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        match lines.next() {
            Some(Ok(l)) if l == "ready" => {}
            other => panic!("mount not ready: {other:?}; log:\n{}", self.log_text()),
        }
        self.daemon = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("mounted").id()
    }

    /// Unmounts (as `umount` would) and waits for the daemon to exit cleanly.
    pub fn unmount(&mut self) {
        let mut child = self.daemon.take().expect("mounted");
        let st = Command::new("fusermount3").arg("-u").arg(&self.mnt).status().unwrap();
        assert!(st.success(), "fusermount3 -u failed");
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status}; log:\n{}", self.log_text());
    }

    /// kill -9 of the daemon, then the (dead) mount is cleared away.
    pub fn kill(&mut self) {
        let mut child = self.daemon.take().expect("mounted");
        let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait();
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.mnt).stderr(Stdio::null()).status();
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn fsck(&self) -> Output {
        kmsfs(&self.kms, &["fsck", self.cipher.to_str().unwrap()])
    }

    /// `p` in the mount and in the plain directory.
    pub fn both(&self, p: &str) -> [PathBuf; 2] {
        [self.mnt.join(p), self.plain.join(p)]
    }

    /// Drops the kernel's caches, so reads go to the daemon (and the backing files) again.
    pub fn drop_caches(&self) {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }

    /// The backing files of the cipher directory (not the volume's own), recursively.
    pub fn backing_files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("kmsfs.") || name.starts_with('.') || name.ends_with(".name") {
                    continue;
                }
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    walk(&e.path(), out);
                } else if ft.is_file() {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.cipher, &mut out);
        out
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let quiet = |flag: &str| {
                let _ = Command::new("fusermount3").arg(flag).arg(&self.mnt).stderr(Stdio::null()).status();
            };
            quiet("-u");
            quiet("-uz");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const SIDECAR_CONFIG: &str = r#"
[engine.limits]
min_manual_version_interval_secs = 0

[[policies]]
principal = "service:oss"
name = "oss-uses-tagged-cmks"
document = '''{"Version":"1","Statement":[{"Effect":"Allow",
  "Action":["kms:GenerateDataKey","kms:Decrypt","kms:ReEncryptFrom","kms:ReEncryptTo"],
  "Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:tag/kmsfs":"yes"}}}]}'''
"#;

pub const OWNER_ID: &str = "kmsfsTestOwner";
pub const OWNER_SECRET: &str = "kmsfsTestOwnerSecret";

/// A real `kms-sidecar` on a free port; `kmsfs` reaches it through its client profile, as the
/// OSS service principal.
pub struct Sidecar {
    child: Child,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
}

impl Sidecar {
    pub fn start() -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        // Manual key versions without the 7-day wait, so a test can rotate and rewrap; the OSS
        // service may use CMKs tagged for it, as a user grants a cloud service its key.
        let config = dir.path().join("sidecar.toml");
        std::fs::write(&config, SIDECAR_CONFIG).unwrap();
        let mut child = Command::new(sidecar_bin())
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
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

    /// `kmsfs` flags: the sidecar's profile (so the OSS service key is used).
    pub fn kms(&self) -> Kms {
        Kms {
            args: vec!["--profile".into(), self.dir.path().join("data/profile.json").display().to_string()],
            envs: vec![],
        }
    }

    /// A CMK of the owner's that the OSS service may use (tagged for it).
    pub fn cmk_for_oss(&self) -> String {
        let req = kms_core::api::CreateKeyRequest {
            tags: Some(r#"[{"TagKey":"kmsfs","TagValue":"yes"}]"#.into()),
            ..Default::default()
        };
        self.owner().create_key(&req).unwrap().key_metadata.key_id
    }

    /// A client acting as the owner (to create, disable and rotate CMKs).
    pub fn owner(&self) -> kms_sidecar::client::Client {
        let cfg = kms_sidecar::client::ClientConfig::with_key(&self.endpoint, OWNER_ID, OWNER_SECRET);
        kms_sidecar::client::Client::new(cfg).unwrap()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Names, sizes and modification times of everything in `dir`: equal before and after a refused
/// command means nothing was written.
pub fn tree_state(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let md = std::fs::symlink_metadata(&d).unwrap();
        out.push((d.clone(), md.len(), md.mtime(), md.mtime_nsec()));
        if md.is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}
