//! A background mount without `--log-file` keeps its log: in the system log when there is one,
//! else in a file of its own – and an integrity error reaches it, naming the file in the volume.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Mounts `m`'s volume in the background with `env`, runs `f`, unmounts.
fn in_background(m: &common::Mount, env: &[(&str, &str)], f: impl FnOnce()) {
    let out = Command::new(common::kmsfs_bin())
        .args(&m.kms.args)
        .arg("mount")
        .arg(&m.cipher)
        .arg(&m.mnt)
        .env_remove("KMSFS_DAEMON")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    common::ok(&out);
    f();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Command::new("fusermount3").arg("-u").arg(&m.mnt).status().unwrap().success() {
        assert!(Instant::now() < deadline, "could not unmount");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Flips a byte inside the first block of the only backing file (the volume holds one file).
fn damage(m: &common::Mount) {
    let files = m.backing_files();
    let f = fs::OpenOptions::new().read(true).write(true).open(&files[0]).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100).unwrap();
    f.write_all_at(&[!b[0]], 100).unwrap();
}

fn read_fails(p: &Path) {
    assert_eq!(fs::read(p).unwrap_err().raw_os_error(), Some(5), "EIO");
}

#[test]
fn integrity_errors_reach_the_system_log() {
    let mut m = common::Mount::new();
    fs::create_dir(m.mnt.join("docs")).unwrap();
    fs::write(m.mnt.join("docs/report.txt"), vec![7u8; 10_000]).unwrap();
    m.unmount();
    damage(&m);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log");
    let syslog = UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let env = [("KMSFS_SYSLOG_SOCKET", socket.to_str().unwrap())];
    in_background(&m, &env, || read_fails(&m.mnt.join("docs/report.txt")));
    let mut buf = [0u8; 8192];
    let line = loop {
        let n = syslog.recv(&mut buf).expect("no integrity error reached the log");
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains("integrity error") {
            break line;
        }
    };
    // Facility daemon, severity error: 3 * 8 + 3.
    assert!(line.starts_with("<27>kmsfs["), "{line}");
    assert!(line.contains("integrity error in /docs/report.txt (backing "), "{line}");
}

#[test]
fn without_a_system_log_the_daemon_keeps_a_file() {
    let mut m = common::Mount::new();
    fs::write(m.mnt.join("a"), vec![7u8; 10_000]).unwrap();
    m.unmount();
    damage(&m);
    let env = [("KMSFS_SYSLOG_SOCKET", "/nonexistent/log")];
    in_background(&m, &env, || read_fails(&m.mnt.join("a")));
    // Tests run as root: /var/log/kmsfs/<mountpoint, / as ->.log.
    let mp = fs::canonicalize(&m.mnt).unwrap().display().to_string();
    let log = Path::new("/var/log/kmsfs").join(format!("{}.log", mp.trim_matches('/').replace('/', "-")));
    let text = fs::read_to_string(&log).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&log).unwrap().permissions());
    fs::remove_file(&log).unwrap();
    assert!(text.contains("integrity error in /a (backing "), "{text}");
    assert_eq!(mode & 0o777, 0o600);
}
