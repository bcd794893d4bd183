//! The product as one deployment uses it: one sidecar serving an application written against
//! Alibaba's own Python SDK, two kmsfs volumes and two blockcrypt disks – one of each under its
//! service key (`acs/oss`, `acs/ecs`) and one under a CMK of the owner's, granted to the service
//! with `kmsctl grant-service` – and the owner's `kmsctl`. The owner rotates the CMKs and the app's secret; the app keeps opening its old
//! records and reads the new secret; both encryptors rewrap onto the new versions and mount and
//! serve again with every byte intact. Then `kmsctl audit verify` accepts the trail and every line
//! of it names the principal that made the call: the app never appears on the volumes' keys, the
//! services never on the app's, and the app's one forbidden attempt is recorded as its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use kms_e2e::sidecar::{Sidecar, OWNER_ID, OWNER_SECRET};
use kms_e2e::{
    bin, kmsfs_wrapping_version, ok, run, sdk_tests_skipped, tool, venv_python, workspace, KmsfsMount, NbdServer,
};
use serde_json::Value;

const APP_ID: &str = "LTAIorderService0001";
const APP_SECRET: &str = "orderServiceSecret0001";

/// The app may use its own CMK and secret. The services get the owner's CMKs by grants
/// (`kmsctl grant-service`), not by configuration.
fn config() -> String {
    let mut c = "[engine.limits]\nmin_manual_version_interval_secs = 0\n".to_string();
    c.push_str(&format!(
        r#"
[[access_keys]]
id = "{APP_ID}"
secret = "{APP_SECRET}"
principal = "user:orders"

[[policies]]
principal = "user:orders"
name = "orders-app"
document = '''{{"Version":"1","Statement":[
  {{"Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"*",
    "Condition":{{"StringEqualsIgnoreCase":{{"kms:tag/app":"orders"}}}}}},
  {{"Effect":"Allow","Action":"kms:GetSecretValue","Resource":"acs:kms:*:*:secret/orders/*"}}]}}'''
"#
    ));
    c
}

/// The owner's `kmsctl` against `s`: its output.
fn kmsctl_out(s: &Sidecar, args: &[&str]) -> String {
    let out = Command::new(bin("kmsctl"))
        .args(["--endpoint", &s.endpoint, "--access-key-id", OWNER_ID, "--access-key-secret", OWNER_SECRET])
        .args(args)
        .output()
        .unwrap();
    ok(&out)
}

/// The owner's `kmsctl` against `s`: its JSON answer.
fn kmsctl(s: &Sidecar, args: &[&str]) -> Value {
    serde_json::from_str(&kmsctl_out(s, args)).unwrap()
}

/// The SDK application, one command a run (as a job or a request handler would).
fn app(s: &Sidecar, args: &[&str]) -> String {
    let out: Output = Command::new(venv_python())
        .arg(workspace().join("tests/apps/envelope_app.py"))
        .args(args)
        .env("KMS_HTTP", &s.http)
        .env("KMS_APP_KEY_ID", APP_ID)
        .env("KMS_APP_KEY_SECRET", APP_SECRET)
        .output()
        .unwrap();
    ok(&out).trim().to_string()
}

/// A field of `blockcrypt info --json`.
fn disk_info(kms: &[&str], disk: &str, field: &str) -> String {
    let info: Value =
        serde_json::from_str(&ok(&run("blockcrypt", &[kms, &["info", "--json", disk]].concat()))).unwrap();
    info[field].as_str().unwrap_or_else(|| panic!("{field} in {info}")).to_string()
}

fn new_version(s: &Sidecar, key: &str) -> String {
    kmsctl(s, &["CreateKeyVersion", "--KeyId", key])["KeyVersion"]["KeyVersionId"].as_str().unwrap().to_string()
}

fn tagged_key(s: &Sidecar, tag: &str, value: &str) -> String {
    let tags = format!(r#"[{{"TagKey":"{tag}","TagValue":"{value}"}}]"#);
    kmsctl(s, &["CreateKey", "--Tags", &tags])["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

fn write_volume(mnt: &Path, tag: u8) {
    for i in 0..8u8 {
        std::fs::write(mnt.join(format!("f{i}")), vec![tag ^ i; 3000 + 4099 * i as usize]).unwrap();
    }
}

fn check_volume(mnt: &Path, tag: u8) {
    for i in 0..8u8 {
        assert_eq!(std::fs::read(mnt.join(format!("f{i}"))).unwrap(), vec![tag ^ i; 3000 + 4099 * i as usize]);
    }
}

#[test]
fn an_sdk_app_two_volumes_and_two_disks_on_one_sidecar_rotate_rewrap_and_leave_an_attributed_trail() {
    if sdk_tests_skipped() {
        return;
    }
    let s = Sidecar::with_config(&config());
    let profile = s.profile().display().to_string();
    let kms = ["--profile", profile.as_str()];

    // The owner's keys: one for the app (and its secret), one each granted to OSS and ECS.
    let app_key = tagged_key(&s, "app", "orders");
    let fs_key = tagged_key(&s, "volume", "yes");
    let disk_key = tagged_key(&s, "disk", "yes");
    kmsctl(
        &s,
        &[
            "CreateSecret",
            "--SecretName",
            "orders/db",
            "--SecretData",
            "pw-1",
            "--VersionId",
            "v1",
            "--EncryptionKeyId",
            &app_key,
        ],
    );

    // The app seals a record and reads its secret.
    let record = app(&s, &["seal", &app_key, "order #1"]);
    let sealed_under: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(app(&s, &["secret", "orders/db"]), r#"{"value": "pw-1", "version": "v1"}"#);

    // Two volumes (acs/oss, the owner's CMK) and two disks (acs/ecs, the owner's CMK).
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (vol_svc, vol_cmk, mnt) = (p("vol-svc"), p("vol-cmk"), p("mnt"));
    for d in [&vol_svc, &vol_cmk, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (vol_svc_s, vol_cmk_s) = (vol_svc.to_str().unwrap(), vol_cmk.to_str().unwrap());
    ok(&run("kmsfs", &[&kms[..], &["init", vol_svc_s]].concat()));
    // An owner CMK is the service's to use only once granted; the refusal says how.
    let refused = run("kmsfs", &[&kms[..], &["init", vol_cmk_s, "--key-id", &fs_key]].concat());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{why}");
    assert!(why.contains(&format!("kmsctl grant-service oss --key-id {fs_key}")), "{why}");
    assert_eq!(std::fs::read_dir(&vol_cmk).unwrap().count(), 0, "nothing written");
    let granted = kmsctl_out(&s, &["grant-service", "oss", "--key-id", &fs_key]);
    assert!(granted.contains("oss may now use"), "{granted}");
    kmsctl_out(&s, &["grant-service", "ecs", "--key-id", &disk_key]);
    ok(&run("kmsfs", &[&kms[..], &["init", vol_cmk_s, "--key-id", &fs_key]].concat()));
    let (disk_svc, disk_cmk) = (p("disk-svc.img"), p("disk-cmk.img"));
    let (disk_svc_s, disk_cmk_s) = (disk_svc.to_str().unwrap(), disk_cmk.to_str().unwrap());
    ok(&run("blockcrypt", &[&kms[..], &["create", disk_svc_s, "--size", "16M"]].concat()));
    ok(&run("blockcrypt", &[&kms[..], &["create", disk_cmk_s, "--size", "16M", "--key-id", &disk_key]].concat()));
    let describe = |alias: &str| kmsctl(&s, &["DescribeKey", "--KeyId", alias])["KeyMetadata"].clone();
    let (oss_md, ecs_md) = (describe("alias/acs/oss"), describe("alias/acs/ecs"));
    assert_eq!((oss_md["Creator"].as_str(), ecs_md["Creator"].as_str()), (Some("OSS"), Some("ECS")));
    let (oss_key, ecs_key) =
        (oss_md["KeyId"].as_str().unwrap().to_string(), ecs_md["KeyId"].as_str().unwrap().to_string());
    assert_eq!(disk_info(&kms, disk_svc_s, "key_id"), ecs_key);

    for (vol, tag) in [(&vol_svc, 0x11u8), (&vol_cmk, 0x22)] {
        let mut m = KmsfsMount::start(&kms, vol, &mnt);
        write_volume(&mnt, tag);
        m.unmount();
    }
    let sock = p("nbd.sock");
    let mut server = NbdServer::start(&kms, &sock, &[disk_svc_s, disk_cmk_s], &[]);
    for (export, pattern) in [("disk-svc.img", 0x33), ("disk-cmk.img", 0x44)] {
        tool("qemu-io", &["-f", "raw", &server.uri(export), "-c", &format!("write -P {pattern} 1M 2M")]);
    }
    server.stop();

    // The owner rotates: new versions of the three CMKs, a new value of the secret.
    let (app_v2, fs_v2, disk_v2) = (new_version(&s, &app_key), new_version(&s, &fs_key), new_version(&s, &disk_key));
    kmsctl(&s, &["PutSecretValue", "--SecretName", "orders/db", "--SecretData", "pw-2", "--VersionId", "v2"]);

    // The app opens the record sealed under the old version, seals new ones under the new, and
    // reads both stages of its secret.
    assert_eq!(app(&s, &["open", &record]), "order #1");
    let newer: Value = serde_json::from_str(&app(&s, &["seal", &app_key, "order #2"])).unwrap();
    assert_ne!(newer["version"], sealed_under["version"]);
    assert_eq!(newer["version"].as_str(), Some(app_v2.as_str()));
    assert_eq!(app(&s, &["secret", "orders/db"]), r#"{"value": "pw-2", "version": "v2"}"#);
    assert_eq!(app(&s, &["secret", "orders/db", "ACSPrevious"]), r#"{"value": "pw-1", "version": "v1"}"#);
    // A key the app was not granted: refused, whatever the services may do with it.
    assert_eq!(app(&s, &["encrypt", &fs_key]), "Forbidden.NoPermission");

    // Both encryptors rewrap: the CMK-wrapped ones onto the new versions, the service-key ones
    // onto their key's primary version (service keys rotate themselves).
    let fs_v1 = kmsfs_wrapping_version(&vol_cmk);
    for vol in [vol_svc_s, vol_cmk_s] {
        ok(&run("kmsfs", &[&kms[..], &["rewrap", vol]].concat()));
    }
    assert_eq!(kmsfs_wrapping_version(&vol_cmk), fs_v2);
    assert_ne!(fs_v1, fs_v2);
    for disk in [disk_svc_s, disk_cmk_s] {
        ok(&run("blockcrypt", &[&kms[..], &["rewrap", disk]].concat()));
    }
    assert_eq!(disk_info(&kms, disk_cmk_s, "key_version_id"), disk_v2);

    // Remount and serve again: every byte is what was written before the rotation.
    for (vol, tag) in [(&vol_svc, 0x11u8), (&vol_cmk, 0x22)] {
        let mut m = KmsfsMount::start(&kms, vol, &mnt);
        check_volume(&mnt, tag);
        m.unmount();
    }
    let mut server = NbdServer::start(&kms, &sock, &[disk_svc_s, disk_cmk_s], &[]);
    for (export, pattern) in [("disk-svc.img", 0x33), ("disk-cmk.img", 0x44)] {
        tool("qemu-io", &["-f", "raw", &server.uri(export), "-c", &format!("read -P {pattern} 1M 2M")]);
        tool("qemu-io", &["-f", "raw", &server.uri(export), "-c", "read -P 0 0 1M"]);
    }
    server.stop();

    // The trail: it verifies, and every call is the caller's own.
    let data = s.stop();
    let data_s = data.path().to_str().unwrap();
    let verified = ok(&run("kmsctl", &["audit", "verify", "--data-dir", data_s]));
    assert!(verified.starts_with("audit log OK"), "{verified}");
    let audit_dir = data.path().join("audit");
    let events = ok(&run("kmsctl", &["audit", "query", "--dir", audit_dir.to_str().unwrap()]));
    let arn = |key: &str| format!(":key/{key}");
    let mut by_principal: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for line in events.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let principal = e["principal"].as_str().unwrap().to_string();
        let action = e["action"].as_str().unwrap().to_string();
        let code = e["code"].as_str().unwrap().to_string();
        let keys: Vec<&str> = e["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        // What each principal may have touched.
        let allowed: Vec<String> = match principal.as_str() {
            "service:oss" => vec![arn(&oss_key), arn(&fs_key)],
            "service:ecs" => vec![arn(&ecs_key), arn(&disk_key)],
            "user:orders" => vec![arn(&app_key), ":secret/orders/db".into(), arn(&fs_key)],
            // The owner made the keys and may use them all.
            "owner" => Vec::new(),
            other => panic!("a call attributed to {other:?}: {line}"),
        };
        for r in keys.iter().filter(|_| principal != "owner") {
            assert!(allowed.iter().any(|a| r.ends_with(a.as_str())), "{principal} on {r}: {line}");
        }
        if keys.iter().any(|r| r.ends_with(&arn(&fs_key))) && principal == "user:orders" {
            assert_eq!((action.as_str(), code.as_str()), ("Encrypt", "Forbidden.NoPermission"), "{line}");
        }
        by_principal.entry(principal).or_default().insert((action, code));
    }
    let set =
        |pairs: &[(&str, &str)]| pairs.iter().map(|(a, c)| (a.to_string(), c.to_string())).collect::<BTreeSet<_>>();
    let service = set(&[("GenerateDataKey", "OK"), ("Decrypt", "OK"), ("ReEncrypt", "OK")]);
    // OSS's one refusal: the init before the owner granted it the CMK.
    let mut oss_calls = service.clone();
    oss_calls.insert(("GenerateDataKey".into(), "Forbidden.NoPermission".into()));
    assert_eq!(by_principal["service:oss"], oss_calls);
    assert_eq!(by_principal["service:ecs"], service);
    assert_eq!(
        by_principal["user:orders"],
        set(&[
            ("GenerateDataKey", "OK"),
            ("Decrypt", "OK"),
            ("GetSecretValue", "OK"),
            ("Encrypt", "Forbidden.NoPermission")
        ])
    );
    assert!(by_principal["owner"].contains(&("CreateKeyVersion".to_string(), "OK".to_string())));
    assert!(by_principal["owner"].contains(&("PutSecretValue".to_string(), "OK".to_string())));
    assert!(by_principal["owner"].contains(&("GrantServiceKeyUse".to_string(), "OK".to_string())));
}
