//! kill -9 of the daemon in the middle of writes: after a remount, everything fsync'ed before the
//! kill is intact and `fsck` is clean apart from the file that was being written.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

#[test]
fn kill_9_mid_write_loses_nothing_fsynced() {
    let mut m = common::Mount::new();
    let mut want = Vec::new();
    for i in 0..20 {
        let name = format!("durable-{i}");
        let data: Vec<u8> = (0..(i * 37_000 + 5)).map(|j| (j * 31 + i) as u8).collect();
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(m.mnt.join(&name)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        want.push((name, data));
    }
    fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    // A writer that never fsyncs, killed with the daemon.
    let mut writer = Command::new("dd")
        .args(["if=/dev/urandom", "bs=64k", "count=100000", "status=none"])
        .arg(format!("of={}", m.mnt.join("inflight").display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let inflight_ino = fs::metadata(m.mnt.join("inflight")).unwrap().ino();
    m.kill();
    let _ = writer.kill();
    let _ = writer.wait();

    m.mount();
    for (name, data) in &want {
        assert!(fs::read(m.mnt.join(name)).unwrap() == *data, "{name} changed");
    }
    m.unmount();
    let out = m.fsck();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    // Each problem names the file in the volume, then its backing path.
    for line in report.lines().filter(|l| l.starts_with("problem: ")) {
        let rest = line.trim_start_matches("problem: ");
        assert!(rest.starts_with("/inflight (backing "), "only the in-flight file may be damaged: {line}");
        let backing = rest.trim_start_matches("/inflight (backing ").split("): ").next().unwrap();
        let ino = fs::metadata(backing).map(|md| md.ino()).unwrap_or(0);
        assert_eq!(ino, inflight_ino, "{line}");
    }
    assert!(report.contains("21 files"), "{report}");
}

#[test]
fn a_dead_mount_is_named_with_the_command_that_lifts_it() {
    let mut m = common::Mount::new();
    fs::write(m.mnt.join("kept"), b"kept").unwrap();
    m.kill_leaving_mount();
    let (cipher, mnt) = (m.cipher.to_str().unwrap().to_string(), m.mnt.to_str().unwrap().to_string());
    let out = common::kmsfs(&m.kms, &["mount", "-f", &cipher, &mnt]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains(&format!("fusermount3 -u {mnt}")), "{err}");
    // After the command it names, the volume mounts again with what it held.
    assert!(Command::new("fusermount3").args(["-u", &mnt]).status().unwrap().success());
    m.mount();
    assert_eq!(fs::read(m.mnt.join("kept")).unwrap(), b"kept");
}
