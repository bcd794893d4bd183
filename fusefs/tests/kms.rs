//! The volume's life against a real sidecar, as the OSS service principal: init under
//! `acs/oss` and under a user CMK, rotation + rewrap + remount, an SM4 volume, the background
//! daemon with SIGTERM, and every refusal – with a clear message, its exit code, and nothing
//! written to the cipher directory.

mod common;

use std::fs;
use std::process::Command;

use common::{kmsfs, ok, tree_state, Kms, Mount, Sidecar};
use kms_core::api::{CreateKeyRequest, KeyIdRequest};

fn code(out: &std::process::Output) -> (Option<i32>, String) {
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn sidecar_volumes_rotate_rewrap_and_sm4() {
    let sc = Sidecar::start();
    // Under acs/oss (created by the OSS principal's first use).
    let mut m = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &[]);
    fs::write(m.mnt.join("doc"), b"under acs/oss").unwrap();
    m.unmount();
    let info = ok(&kmsfs(&m.kms, &["info", m.cipher.to_str().unwrap()]));
    assert!(info.contains("alias/acs/oss") && info.contains("mounted:            no"), "{info}");
    let conf = fs::read_to_string(m.cipher.join("kmsfs.conf")).unwrap();
    assert!(conf.contains("kmsfs:volume"), "the context names the volume");

    // Under a user CMK: rotate it, rewrap to its new version, remount; then rewrap to another CMK.
    let owner = sc.client();
    let cmk = sc.cmk_for_oss();
    let mut v = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &["--key-id", &cmk]);
    fs::write(v.mnt.join("data"), vec![7u8; 100_000]).unwrap();
    v.unmount();
    let before = fs::read_to_string(v.cipher.join("kmsfs.conf")).unwrap();
    let _: serde_json::Value = owner.call("CreateKeyVersion", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    let out = ok(&kmsfs(&v.kms, &["rewrap", v.cipher.to_str().unwrap()]));
    assert!(out.contains("re-wrapped"), "{out}");
    let after = fs::read_to_string(v.cipher.join("kmsfs.conf")).unwrap();
    assert_ne!(before, after, "a new wrapped key");
    // A CMK the service was not granted is refused, and the volume keeps its wrapping.
    let untagged = owner.create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let (c, err) = code(&kmsfs(&v.kms, &["rewrap", v.cipher.to_str().unwrap(), "--key-id", &untagged]));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("Forbidden.NoPermission"), "{err}");
    assert_eq!(fs::read_to_string(v.cipher.join("kmsfs.conf")).unwrap(), after);
    let other = sc.cmk_for_oss();
    ok(&kmsfs(&v.kms, &["rewrap", v.cipher.to_str().unwrap(), "--key-id", &other]));
    v.mount();
    assert_eq!(fs::read(v.mnt.join("data")).unwrap(), vec![7u8; 100_000], "data intact after rewraps");
    v.unmount();
    // The old CMK can now go away without touching the volume.
    let _: serde_json::Value = owner.call("DisableKey", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    v.mount();
    assert_eq!(fs::read(v.mnt.join("data")).unwrap().len(), 100_000);

    // SM4.
    let mut s = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &["--cipher", "sm4-gcm"]);
    fs::write(s.mnt.join("国密"), "SM4-GCM 数据".repeat(1000)).unwrap();
    s.remount();
    assert_eq!(fs::read_to_string(s.mnt.join("国密")).unwrap(), "SM4-GCM 数据".repeat(1000));
    assert!(fs::read_to_string(s.cipher.join("kmsfs.conf")).unwrap().contains("sm4-gcm"));
    s.unmount();
    assert!(s.fsck().status.success());
}

#[test]
fn refusals_are_clear_and_write_nothing() {
    let sc = Sidecar::start();
    let owner = sc.client();
    let cmk = sc.cmk_for_oss();
    let mut m = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &["--key-id", &cmk]);
    fs::write(m.mnt.join("f"), b"x").unwrap();
    m.unmount();
    let cipher = m.cipher.to_str().unwrap().to_string();
    let mnt = m.mnt.to_str().unwrap().to_string();
    let state = tree_state(&m.cipher);
    let mount = |kms: &Kms, dir: &str| kmsfs(kms, &["mount", dir, &mnt]);

    // A disabled CMK.
    let _: serde_json::Value = owner.call("DisableKey", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    let (c, err) = code(&mount(&m.kms, &cipher));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("Disabled"), "{err}");
    let _: serde_json::Value = owner.call("EnableKey", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    // A CMK pending deletion.
    let del = kms_core::api::ScheduleKeyDeletionRequest { key_id: cmk.clone(), pending_window_in_days: Some(7) };
    let _: serde_json::Value = owner.call("ScheduleKeyDeletion", &del).unwrap();
    let (c, err) = code(&mount(&m.kms, &cipher));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("PendingDeletion") || err.contains("Rejected"), "{err}");
    let _: serde_json::Value = owner.call("CancelKeyDeletion", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    // Wrong endpoint, wrong credentials.
    let nowhere = Kms { args: kms_e2e::sidecar::unreachable_args(), envs: vec![] };
    let (c, err) = code(&mount(&nowhere, &cipher));
    assert_eq!(c, Some(5), "{err}");
    let wrong = Kms { args: sc.unknown_key_args(), envs: vec![] };
    let (c, err) = code(&mount(&wrong, &cipher));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    // Not a volume; a damaged config; a foreign one.
    let empty = tempfile::tempdir().unwrap();
    let (c, err) = code(&mount(&m.kms, empty.path().to_str().unwrap()));
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("not a kmsfs volume"), "{err}");
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
    let conf = m.cipher.join("kmsfs.conf");
    let good = fs::read(&conf).unwrap();
    for (what, bad) in
        [("truncated", good[..good.len() / 2].to_vec()), ("foreign", br#"{"format":"gocryptfs","version":2}"#.to_vec())]
    {
        fs::write(&conf, &bad).unwrap();
        let (c, err) = code(&mount(&m.kms, &cipher));
        assert_eq!(c, Some(3), "{what}: {err}");
        assert_eq!(fs::read(&conf).unwrap(), bad, "{what}: left as it was");
    }
    fs::write(&conf, &good).unwrap();
    let edited = String::from_utf8(good.clone()).unwrap().replace("\"block_size\": 4096", "\"block_size\": 8192");
    fs::write(&conf, edited).unwrap();
    let (c, err) = code(&mount(&m.kms, &cipher));
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("modified"), "{err}");
    fs::write(&conf, &good).unwrap();
    assert!(tree_state(&m.cipher).len() == state.len(), "nothing added to the cipher directory");

    // Usage: a mistyped mount option, refused before the daemon starts or the KMS is asked; a
    // missing directory and an unreadable profile named.
    let (c, err) = code(&kmsfs(&nowhere, &["mount", "-o", "ro,bogus", &cipher, &mnt]));
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("unknown mount option \"bogus\""), "{err}");
    let missing = empty.path().join("missing");
    let (c, err) = code(&kmsfs(&m.kms, &["init", missing.to_str().unwrap()]));
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains(&format!("{}: No such file", missing.display())), "{err}");
    let no_profile =
        Kms { args: vec!["--profile".into(), missing.join("profile.json").display().to_string()], envs: vec![] };
    let (c, err) = code(&kmsfs(&no_profile, &["mount", &cipher, &mnt]));
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("cannot read the client profile"), "{err}");

    // A mountpoint in use; the same volume mounted twice.
    m.mount();
    let other = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &[]);
    let (c, err) = code(&kmsfs(&other.kms, &["mount", other.cipher.to_str().unwrap(), &mnt]));
    assert_eq!(c, Some(6), "{err}");
    assert!(err.contains("in use"), "{err}");
    let spare = tempfile::tempdir().unwrap();
    let (c, err) = code(&kmsfs(&m.kms, &["mount", &cipher, spare.path().to_str().unwrap()]));
    assert_eq!(c, Some(6), "{err}");
    assert!(err.contains("already mounted") || err.contains("in use"), "{err}");
    assert_eq!(fs::read(m.mnt.join("f")).unwrap(), b"x", "the first mount is unaffected");
}

#[test]
fn background_daemon_reports_ready_and_unmounts_on_sigterm() {
    let dirs = tempfile::tempdir().unwrap();
    let kms = Kms::embedded(&dirs.path().join("kms"));
    let (cipher, mnt) = (dirs.path().join("c"), dirs.path().join("m"));
    fs::create_dir(&cipher).unwrap();
    fs::create_dir(&mnt).unwrap();
    ok(&kmsfs(&kms, &["init", cipher.to_str().unwrap()]));
    let out = ok(&kmsfs(&kms, &["mount", cipher.to_str().unwrap(), mnt.to_str().unwrap()]));
    let pid: u32 = out.rsplit("pid ").next().unwrap().trim_end_matches([')', '\n']).parse().unwrap();
    fs::write(mnt.join("bg"), b"daemon").unwrap();
    assert_eq!(fs::read(mnt.join("bg")).unwrap(), b"daemon");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(mounts.contains(mnt.to_str().unwrap()));
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::read_to_string("/proc/self/mountinfo").unwrap().contains(mnt.to_str().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "still mounted after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "daemon still running");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!mnt.join("bg").exists(), "unmounted");
    // A failure in the daemon comes back as the command's own message and code.
    let (c, err) = code(&kmsfs(&kms, &["mount", dirs.path().join("nope").to_str().unwrap(), mnt.to_str().unwrap()]));
    assert_eq!(c, Some(3), "{err}");
}

/// Once mounted, I/O never needs the KMS: the sidecar goes away, reads and writes go on; only a
/// new mount fails, with the "unreachable" exit code.
#[test]
fn io_goes_on_without_the_kms_once_mounted() {
    let sc = Sidecar::start();
    let mut m = Mount::create(tempfile::tempdir().unwrap(), sc.kms(), &[]);
    fs::write(m.mnt.join("before"), b"written with the KMS up").unwrap();
    // Stopped, its data directory (and the profile the mount names) kept, as on a real host.
    let _data = sc.0.stop();
    fs::write(m.mnt.join("after"), vec![3u8; 300_000]).unwrap();
    m.drop_caches();
    assert_eq!(fs::read(m.mnt.join("before")).unwrap(), b"written with the KMS up");
    assert_eq!(fs::read(m.mnt.join("after")).unwrap(), vec![3u8; 300_000]);
    m.unmount();
    let (c, err) = code(&kmsfs(&m.kms, &["mount", m.cipher.to_str().unwrap(), m.mnt.to_str().unwrap()]));
    assert_eq!(c, Some(5), "{err}");
}
