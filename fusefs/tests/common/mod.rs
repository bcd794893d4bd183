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

/// kmsfs serves requests over io_uring wherever the kernel offers it, which it does only when
/// the `fuse.enable_uring` module parameter is on (off by default). As root, the tests turn it
/// on so that they exercise the transport users get; `-o no_io_uring` mounts cover /dev/fuse.
pub fn enable_fuse_io_uring() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustix::process::geteuid().is_root() {
            let _ = std::fs::write(URING_PARAM, "Y");
        }
    });
}

pub const URING_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

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
        let cipher = dirs.path().join("cipher");
        std::fs::create_dir_all(&cipher).unwrap();
        let mut args = vec!["init", cipher.to_str().unwrap()];
        args.extend_from_slice(init_args);
        ok(&kmsfs(&kms, &args));
        Self::existing(dirs, kms)
    }

    /// The volume already in `dirs/cipher` (its KMS as `kms` says), mounted – no `init`.
    pub fn existing(dirs: tempfile::TempDir, kms: Kms) -> Mount {
        let root = dirs.path();
        let (cipher, mnt, plain) = (root.join("cipher"), root.join("mnt"), root.join("plain"));
        for d in [&mnt, &plain] {
            std::fs::create_dir_all(d).unwrap();
        }
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
        enable_fuse_io_uring();
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
        // A descriptor into the mount can be held for an instant by a process another test
        // thread is forking (until its exec closes it): EBUSY then, so a few tries.
        let mut tries = 0;
        loop {
            let out = Command::new("fusermount3").arg("-u").arg(&self.mnt).output().unwrap();
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(tries < 10, "fusermount3 -u failed: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status}; log:\n{}", self.log_text());
    }

    /// kill -9 of the daemon, then the (dead) mount is cleared away.
    pub fn kill(&mut self) {
        self.kill_leaving_mount();
        let _ = Command::new("fusermount3").arg("-uz").arg(&self.mnt).stderr(Stdio::null()).status();
    }

    /// kill -9 of the daemon, its dead mount left on the mountpoint (as after a crash).
    pub fn kill_leaving_mount(&mut self) {
        let mut child = self.daemon.take().expect("mounted");
        let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait();
    }

    /// Remounts with `kmsfs mount` arguments `args` (`-o writeback`, …) from now on.
    pub fn remount_with(&mut self, args: &[&str]) {
        self.unmount();
        self.mount_args = args.iter().map(|a| a.to_string()).collect();
        self.mount();
    }

    /// Asserts that `kmsfs fsck` finds the (unmounted) volume clean.
    pub fn assert_fsck_clean(&self) {
        let fsck = self.fsck();
        assert!(fsck.status.success(), "fsck: {}", String::from_utf8_lossy(&fsck.stdout));
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

pub use kms_e2e::sidecar::Sidecar as SidecarProcess;

/// A real `kms-sidecar` on a free port; `kmsfs` reaches it through its client profile, as the
/// OSS service principal, which may use the owner's CMKs tagged `kmsfs`.
pub struct Sidecar(pub SidecarProcess);

impl std::ops::Deref for Sidecar {
    type Target = SidecarProcess;
    fn deref(&self) -> &SidecarProcess {
        &self.0
    }
}

impl Sidecar {
    pub fn start() -> Sidecar {
        Sidecar(SidecarProcess::with_config(&kms_e2e::sidecar::config_for_service("oss", "kmsfs")))
    }

    /// `kmsfs` flags: the sidecar's profile (so the OSS service key is used).
    pub fn kms(&self) -> Kms {
        Kms { args: vec!["--profile".into(), self.profile().display().to_string()], envs: vec![] }
    }

    /// A CMK of the owner's that the OSS service may use (tagged for it).
    pub fn cmk_for_oss(&self) -> String {
        self.tagged_cmk("kmsfs")
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

/// Every entry under `root`: path, kind, contents of files, device number of character devices
/// (whiteouts), link count.
pub fn snapshot(root: &Path) -> Vec<(String, &'static str, Vec<u8>, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            if ft.is_dir() {
                todo.push(e.path());
                out.push((rel, "dir", Vec::new(), 0));
            } else if std::os::unix::fs::FileTypeExt::is_char_device(&ft) {
                out.push((rel, "chr", Vec::new(), std::os::unix::fs::MetadataExt::rdev(&md)));
            } else {
                out.push((rel, "file", std::fs::read(e.path()).unwrap(), std::os::unix::fs::MetadataExt::nlink(&md)));
            }
        }
    }
    out.sort();
    out
}
