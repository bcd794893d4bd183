//! A disk's life against a real sidecar, as the ECS service principal: the `acs/ecs` service key,
//! a user CMK granted to ECS, rotation + rewrap, snapshot, clone with the same or a new key,
//! import/export – and every refusal with its exit code, nothing written.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kms_core::api::{CreateKeyRequest, KeyIdRequest, ScheduleKeyDeletionRequest};
use kms_e2e::sidecar::{config_for_service, Sidecar};

fn sidecar() -> (Sidecar, Kms) {
    let sc = Sidecar::with_config(&config_for_service("ecs", "blockcrypt"));
    let kms = Kms(vec!["--profile".into(), sc.profile().display().to_string()]);
    (sc, kms)
}

fn info_field(kms: &Kms, img: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(&run(kms, &["info", img, "--json"]))).unwrap();
    v[field].as_str().unwrap_or_default().to_string()
}

fn write_through_serve(kms: &Kms, socket: &std::path::Path, img: &str, offset: u64, data: &[u8]) {
    let srv = Server::start(&kms.0, socket, &[img], &[]);
    let mut c = Client::connect(&srv.socket, "");
    assert_eq!(c.write(offset, data), 0);
    assert_eq!(c.flush(), 0);
}

fn read_through_serve(kms: &Kms, socket: &std::path::Path, img: &str, offset: u64, len: usize) -> Vec<u8> {
    let srv = Server::start(&kms.0, socket, &[img], &[]);
    let mut c = Client::connect(&srv.socket, "");
    c.read(offset, len).unwrap()
}

#[test]
fn service_key_rotation_rewrap_snapshot_clone() {
    let (sc, kms) = sidecar();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let sock = dir.path().join("s.sock");
    let data = pattern(256 << 10, 5);

    // Under the ECS service key, created on first use.
    let img = p("ecs.img");
    ok(&run(&kms, &["create", &img, "--size", "4M"]));
    let acs = sc.client().describe_key("alias/acs/ecs").unwrap().key_metadata.key_id;
    assert_eq!(info_field(&kms, &img, "key_id"), acs);

    // Under a user CMK the owner granted to ECS; rotate it and rewrap: new version, same data.
    let owner = sc.client();
    let cmk = sc.tagged_cmk("blockcrypt");
    let disk = p("disk.img");
    ok(&run(&kms, &["create", &disk, "--size", "8M", "--key-id", &cmk]));
    write_through_serve(&kms, &sock, &disk, 4096, &data);
    let v1 = info_field(&kms, &disk, "key_version_id");
    let _: serde_json::Value = owner.call("CreateKeyVersion", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    let payload_before = std::fs::read(&disk).unwrap()[2 << 20..].to_vec();
    let out = ok(&run(&kms, &["rewrap", &disk]));
    assert!(out.contains("rewrapped"), "{out}");
    let v2 = info_field(&kms, &disk, "key_version_id");
    assert_ne!(v1, v2, "wrapped under the new version");
    assert!(std::fs::read(&disk).unwrap()[2 << 20..] == payload_before[..], "rewrap never touches the data");
    assert_eq!(read_through_serve(&kms, &sock, &disk, 4096, data.len()), data);
    // To another granted CMK; then to an ungranted one: refused, header untouched.
    let other = sc.tagged_cmk("blockcrypt");
    ok(&run(&kms, &["rewrap", &disk, "--key-id", &other]));
    assert_eq!(info_field(&kms, &disk, "key_id"), other);
    let untagged = owner.create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let header_before = std::fs::read(&disk).unwrap()[..2 << 20].to_vec();
    let (c, err) = code(&run(&kms, &["rewrap", &disk, "--key-id", &untagged]));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("Forbidden"), "{err}");
    assert!(std::fs::read(&disk).unwrap()[..2 << 20] == header_before[..]);

    // Snapshot: same key, point in time.
    let snap = p("disk.snap");
    ok(&run(&kms, &["snapshot", &disk, &snap]));
    write_through_serve(&kms, &sock, &disk, 4096, &[0xee; 4096]);
    assert_eq!(read_through_serve(&kms, &sock, &snap, 4096, data.len()), data);
    // Clone with the same key: same passphrase, new LUKS UUID; with a new key: re-encrypted.
    let same = p("same.img");
    ok(&run(&kms, &["clone", &snap, &same]));
    let pass = |img: &str| ok(&run(&kms, &["passphrase", img]));
    assert_eq!(pass(&same), pass(&snap));
    assert_ne!(info_field(&kms, &same, "uuid"), info_field(&kms, &snap, "uuid"));
    assert_eq!(read_through_serve(&kms, &sock, &same, 4096, data.len()), data);
    let rekeyed = p("rekeyed.img");
    ok(&run(&kms, &["clone", &snap, &rekeyed, "--new-key", "--key-id", &cmk]));
    assert_ne!(pass(&rekeyed), pass(&snap));
    assert_ne!(info_field(&kms, &rekeyed, "disk_id"), info_field(&kms, &snap, "disk_id"));
    assert_eq!(read_through_serve(&kms, &sock, &rekeyed, 4096, data.len()), data);

    // Import a raw image of an odd size and export it back.
    let raw = p("in.raw");
    let content = pattern(3 * (1 << 20) + 123, 9);
    std::fs::write(&raw, &content).unwrap();
    let imported = p("imported.img");
    ok(&run(&kms, &["import", &raw, &imported]));
    let exported = p("out.raw");
    ok(&run(&kms, &["export", &imported, &exported]));
    let back = std::fs::read(&exported).unwrap();
    assert_eq!(back.len(), content.len().next_multiple_of(512));
    assert!(back[..content.len()] == content[..] && back[content.len()..].iter().all(|&b| b == 0));
    // check is clean.
    assert!(ok(&run(&kms, &["check", &imported])).contains("ok"));
}

/// Bytes the filesystem holds for `path` (holes take none).
fn allocated(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

#[test]
fn snapshots_and_clones_of_a_mostly_empty_disk_keep_its_holes() {
    let (_sc, kms) = sidecar();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let sock = dir.path().join("s.sock");
    let disk = p("disk.img");
    ok(&run(&kms, &["create", &disk, "--size", "2G"]));
    let data = pattern(64 << 10, 3);
    write_through_serve(&kms, &sock, &disk, 1 << 30, &data);
    let (snap, same, rekeyed) = (p("disk.snap"), p("same.img"), p("rekeyed.img"));
    ok(&run(&kms, &["snapshot", &disk, &snap]));
    ok(&run(&kms, &["clone", &snap, &same]));
    ok(&run(&kms, &["clone", &snap, &rekeyed, "--new-key"]));
    // The header area (2 MiB, mostly luksmeta's unwritten gap) plus what was written: no copy
    // fills the 2 GiB of holes (without reflink – /tmp here is ext4).
    for img in [&disk, &snap, &same, &rekeyed] {
        assert_eq!(std::fs::metadata(img).unwrap().len(), (2 << 30) + (2 << 20), "{img}");
        assert!(allocated(img) < 8 << 20, "{img}: {} bytes allocated", allocated(img));
    }
    for img in [&snap, &same, &rekeyed] {
        assert_eq!(read_through_serve(&kms, &sock, img, 1 << 30, data.len()), data, "{img}");
    }
}

#[test]
fn refusals_have_exit_codes_and_write_nothing() {
    let (sc, kms) = sidecar();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let sock = dir.path().join("s.sock");
    let owner = sc.client();
    let cmk = sc.tagged_cmk("blockcrypt");
    let img = p("d.img");
    ok(&run(&kms, &["create", &img, "--size", "4M", "--key-id", &cmk]));
    let serve = |k: &Kms, img: &str| run(k, &["serve", "--socket", sock.to_str().unwrap(), img]);
    let snapshot_of = |f: &str| std::fs::read(f).unwrap();
    let before = snapshot_of(&img);

    // A disabled CMK, then one pending deletion: the disk cannot be opened (ECS after detach).
    let _: serde_json::Value = owner.call("DisableKey", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    let (c, err) = code(&serve(&kms, &img));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("Disabled"), "{err}");
    let _: serde_json::Value = owner.call("EnableKey", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    let del = ScheduleKeyDeletionRequest { key_id: cmk.clone(), pending_window_in_days: Some(7) };
    let _: serde_json::Value = owner.call("ScheduleKeyDeletion", &del).unwrap();
    let (c, err) = code(&serve(&kms, &img));
    assert_eq!(c, Some(4), "{err}");
    let (c, err) = code(&run(&kms, &["create", &p("new.img"), "--size", "1M", "--key-id", &cmk]));
    assert_eq!(c, Some(4), "{err}");
    assert!(!dir.path().join("new.img").exists(), "nothing left behind");
    let _: serde_json::Value = owner.call("CancelKeyDeletion", &KeyIdRequest { key_id: cmk.clone() }).unwrap();
    // A key that does not exist (the policy check comes first: its existence is not revealed).
    let (c, err) = code(&run(&kms, &["create", &p("new.img"), "--size", "1M", "--key-id", "key-nosuchkey000000000"]));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("Forbidden.NoPermission"), "{err}");

    // Wrong endpoint (fails fast), wrong credentials.
    let nowhere = Kms(kms_e2e::sidecar::unreachable_args());
    let t = Instant::now();
    let (c, err) = code(&serve(&nowhere, &img));
    assert_eq!(c, Some(5), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "fails fast");
    // A CA file that cannot be used is the caller's mistake (2), named – not "unreachable".
    let mut args = kms_e2e::sidecar::key_args("https://127.0.0.1:9", "a", "b");
    args.extend(["--ca-file".to_string(), "/nonexistent/ca.pem".to_string()]);
    let (c, err) = code(&serve(&Kms(args), &img));
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let wrong = Kms(sc.unknown_key_args());
    let (c, err) = code(&serve(&wrong, &img));
    assert_eq!(c, Some(4), "{err}");
    assert!(snapshot_of(&img) == before, "nothing written by refused commands");

    // A damaged LUKS header, a damaged record, a record from another disk.
    let mut bytes = before.clone();
    bytes[0] ^= 0xff;
    std::fs::write(&img, &bytes).unwrap();
    let (c, err) = code(&serve(&kms, &img));
    assert_eq!(c, Some(3), "{err}");
    let gap = 2_068_480;
    let mut bytes = before.clone();
    bytes[gap + 4096 + 10] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let (c, err) = code(&serve(&kms, &img));
    assert_eq!(c, Some(3), "{err}");
    assert!(err.contains("checksum"), "{err}");
    let other = p("other.img");
    ok(&run(&kms, &["create", &other, "--size", "4M", "--key-id", &cmk]));
    let mut bytes = before.clone();
    bytes[gap..2 << 20].copy_from_slice(&snapshot_of(&other)[gap..2 << 20]);
    std::fs::write(&img, &bytes).unwrap();
    let (c, err) = code(&serve(&kms, &img));
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("does not open this volume"), "{err}");
    std::fs::write(&img, &before).unwrap();

    // A disk being served cannot be served twice (its snapshot is the server's copy:
    // snapshot_reflink.rs); a bad size is refused.
    let _srv = Server::start(&kms.0, &sock, &[&img], &[]);
    let (c, err) = code(&run(&kms, &["serve", "--socket", &p("s2.sock"), &img]));
    assert_eq!(c, Some(6), "{err}");
    let (c, err) = code(&run(&kms, &["create", &p("odd.img"), "--size", "1000"]));
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("multiple of 512"), "{err}");
    let (c, err) = code(&run(&kms, &["create", &img, "--size", "1M"]));
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");
}
