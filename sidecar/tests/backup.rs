//! `kms-sidecar backup` while the sidecar serves writes, `restore` into a new data directory on
//! another "machine", and the restored sidecar decrypting everything acknowledged before the
//! backup began; damaged backups, occupied targets and shared stores refused.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Sidecar;
use kms_client::client::Client;
use kms_core::api::*;
use kms_e2e::{ok, run};

/// A key and a ciphertext under it, and when the client had both acknowledged.
type Acknowledged = (Instant, String, Vec<u8>);

/// A new key and a ciphertext under it, as acknowledged to the client.
fn key_and_blob(c: &Client, i: usize) -> (String, Vec<u8>) {
    let key = c.create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let plaintext = SecretBytes::from(format!("record {i}").as_bytes());
    let blob = c.encrypt(&EncryptRequest { key_id: key.clone(), plaintext, ..Default::default() }).unwrap();
    (key, blob.ciphertext_blob)
}

fn decrypts(c: &Client, blob: &[u8], i: usize) -> bool {
    match c.decrypt(&DecryptRequest { ciphertext_blob: blob.to_vec(), ..Default::default() }) {
        Ok(r) => {
            assert_eq!(r.plaintext.expose(), format!("record {i}").as_bytes());
            true
        }
        Err(_) => false,
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn refused(args: &[&str], code: i32, why: &str) {
    let out = run("kms-sidecar", args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(why), "{args:?}: {err}");
}

#[test]
fn a_backup_under_write_load_restores_elsewhere_with_every_acknowledged_key() {
    // The writer creates a key per write for as long as the backup runs; on a fast machine that
    // is more than the default 200-key region limit, which is not what this test is about.
    let s = Sidecar::with_config("[engine.limits]\nmax_keys = 1000000\n");
    let c = s.client();
    let before: Vec<(String, Vec<u8>)> = (0..10).map(|i| key_and_blob(&c, i)).collect();

    // A client keeps writing while the backup is taken; each write is timed at its acknowledgement.
    let stop = Arc::new(AtomicBool::new(false));
    let during: Arc<Mutex<Vec<Acknowledged>>> = Arc::default();
    let writer = {
        let (c, stop, during) = (s.client(), stop.clone(), during.clone());
        std::thread::spawn(move || {
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                let (k, b) = key_and_blob(&c, i);
                during.lock().unwrap().push((Instant::now(), k, b));
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("backup");
    let (data, backup_s) = (s.dir.path().to_str().unwrap().to_string(), backup.to_str().unwrap().to_string());
    let started = Instant::now();
    let out = ok(&run("kms-sidecar", &["backup", "--data-dir", &data, "--to", &backup_s]));
    assert!(out.contains("backed up") && out.contains("file root.key"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let during = std::mem::take(&mut *during.lock().unwrap());
    assert!(during.iter().any(|(t, ..)| *t < started), "the writer was writing when the backup began");
    assert!(during.iter().any(|(t, ..)| *t > started), "and went on while it ran");
    drop(s.stop());

    // What the backup holds is as private as the data directory.
    assert_eq!(mode(&backup), 0o700);
    for f in ["kms.db", "root.key", "credentials.toml", "backup.json"] {
        assert_eq!(mode(&backup.join(f)), 0o600, "{f}");
    }

    // Restored on another machine: everything acknowledged before the backup began decrypts;
    // whatever else the snapshot caught is whole (its key and ciphertext work together).
    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().to_str().unwrap().to_string();
    let out = ok(&run("kms-sidecar", &["restore", "--data-dir", &target, "--from", &backup_s]));
    assert!(out.contains("opens under its root key"), "{out}");
    let r = Sidecar::start_in(restored, &[]);
    let c = r.client();
    for (i, (_, blob)) in before.iter().enumerate() {
        assert!(decrypts(&c, blob, i), "key {i}, acknowledged before the backup, is missing");
    }
    let mut caught = 0;
    for (n, (t, key, blob)) in during.iter().enumerate() {
        let present = c.describe_key(key).is_ok();
        if *t < started {
            assert!(present, "{key}, acknowledged before the backup began, is missing");
        }
        if present {
            assert!(decrypts(&c, blob, 1000 + n), "{key} is in the backup but its ciphertext does not open");
            caught += 1;
        }
    }
    assert!(caught > 0);
    let restored = r.stop();
    // The audit trail came along and goes on from where the backup left it.
    let verified = ok(&run("kmsctl", &["audit", "verify", "--data-dir", restored.path().to_str().unwrap()]));
    assert!(verified.starts_with("audit log OK"), "{verified}");

    // Refusals, each changing nothing.
    let target = restored.path().to_str().unwrap();
    refused(&["restore", "--data-dir", target, "--from", &backup_s], 2, "already holds kms.db");
    refused(&["backup", "--data-dir", target, "--to", &backup_s], 2, "is not empty");
    let inner = restored.path().join("backups/today");
    refused(&["backup", "--data-dir", target, "--to", inner.to_str().unwrap()], 2, "inside the data directory");
    assert!(!restored.path().join("backups").exists(), "nothing made");
    refused(
        &["backup", "--store", "postgres://kms@127.0.0.1:9/kms", "--to", work.path().join("pg").to_str().unwrap()],
        2,
        "pg_dump",
    );
    let damaged = work.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for e in std::fs::read_dir(&backup).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), damaged.join(e.file_name())).unwrap();
        }
    }
    let mut db = std::fs::read(damaged.join("kms.db")).unwrap();
    let n = db.len();
    db[n - 100] ^= 1;
    std::fs::write(damaged.join("kms.db"), db).unwrap();
    let fresh = work.path().join("fresh");
    refused(
        &["restore", "--data-dir", fresh.to_str().unwrap(), "--from", damaged.to_str().unwrap()],
        1,
        "kms.db does not match the manifest",
    );
    assert!(!fresh.join("kms.db").exists(), "nothing restored from a damaged backup");
}
