//! Against the real binaries: policies reload on SIGHUP; `kmsctl audit verify` and `query`.

mod common;

use std::process::Command;

use common::Sidecar;
use kms_core::api::*;

fn kmsctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kmsctl")).args(args).output().unwrap()
}

#[test]
fn policies_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kms.toml");
    let write_cfg = |doc: &str| {
        std::fs::write(
            &cfg,
            r#"
[[access_keys]]
id = "appKey"
secret = "appSecret"
principal = "user:app"

[[policies]]
principal = "user:app"
name = "app"
file = "app.json"
"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("app.json"), doc).unwrap();
    };
    write_cfg(r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:ListKeys","Resource":"*"}]}"#);
    let data = tempfile::tempdir().unwrap();
    let s = Sidecar::start_in(data, &["--config", cfg.to_str().unwrap()]);
    let app = || {
        let cfg = kms_client::client::ClientConfig::with_key(&format!("http://{}", s.http), "appKey", "appSecret");
        kms_client::client::Client::new(cfg).unwrap()
    };
    assert!(app().call_params("ListKeys", vec![]).is_ok());
    assert_eq!(app().create_key(&CreateKeyRequest::default()).unwrap_err().code(), Some("Forbidden.NoPermission"));
    write_cfg(
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:ListKeys","kms:CreateKey"],"Resource":"*"}]}"#,
    );
    s.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app().create_key(&CreateKeyRequest::default()).is_err() {
        assert!(std::time::Instant::now() < deadline, "the new policy never took effect");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A broken document on reload keeps the previous policies.
    write_cfg(r#"{"Version":"1","Statement":[{"Effect":"Sometimes","Action":"kms:*"}]}"#);
    s.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(app().create_key(&CreateKeyRequest::default()).is_ok());
}

#[test]
fn kmsctl_verifies_and_queries_the_audit_log() {
    let s = Sidecar::start();
    let c = s.client();
    let key = c.create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    for _ in 0..3 {
        c.encrypt(&EncryptRequest {
            key_id: key.clone(),
            plaintext: SecretBytes::from(&b"x"[..]),
            ..Default::default()
        })
        .unwrap();
    }
    let dir = s.dir.path().join("audit");
    let dir_s = dir.to_str().unwrap();
    // Read-only events are written asynchronously: wait for the last one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let q = kmsctl(&["audit", "query", "--dir", dir_s, "--action", "Encrypt", "--key", &key]);
        if String::from_utf8_lossy(&q.stdout).lines().count() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "three Encrypt events expected");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Beside the running sidecar: the key and anchor come from its store, read-only.
    let data_s = s.dir.path().to_str().unwrap().to_string();
    let verify = || kmsctl(&["audit", "verify", "--data-dir", &data_s]);
    let ok = verify();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("audit log OK"));
    let q = kmsctl(&["audit", "query", "--dir", dir_s, "--principal", "owner", "--action", "CreateKey"]);
    let line: serde_json::Value =
        serde_json::from_slice(String::from_utf8_lossy(&q.stdout).lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!((line["code"].as_str(), line["access_key_id"].as_str()), (Some("OK"), Some(common::OWNER_ID)));
    let _data = s.stop();
    let path = dir.join("audit.log");
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = original.lines().map(str::to_string).collect();
    let n = lines.len();
    assert!(n >= 4, "{n} lines");
    assert!(verify().status.success(), "anchored at shutdown");
    let broken = |what: &str, content: Option<Vec<String>>, expect: &str| {
        match content {
            Some(c) => std::fs::write(&path, c.join("\n") + "\n").unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let out = verify();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{what}: verify passed: {stdout}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN"), "{what}");
        assert!(stdout.contains(expect), "{what}: expected {expect:?} in {stdout}");
        std::fs::write(&path, &original).unwrap();
    };
    // The last line edited.
    let mut edited = lines.clone();
    edited[n - 1] = edited[n - 1].replace("\"code\":\"OK\"", "\"code\":\"Forbidden\"");
    assert_ne!(edited[n - 1], lines[n - 1]);
    broken("edit last", Some(edited), &format!("event {n} does not authenticate"));
    // Line 3 edited and every later `prev` recomputed as a plain SHA-256 chain.
    use sha2::Digest;
    let mut chain: Vec<String> = lines[..2].to_vec();
    for (i, l) in lines[2..].iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        if i == 0 {
            v["principal"] = "user:someone-else".into();
        } else {
            v["prev"] = hex::encode(sha2::Sha256::digest(chain.last().unwrap().as_bytes())).into();
        }
        v.as_object_mut().unwrap().remove("mac");
        chain.push(serde_json::to_string(&v).unwrap());
    }
    broken("recomputed chain", Some(chain), "has no MAC (inserted)");
    // The last lines cut off; audit.log deleted; every file deleted.
    broken("truncated", Some(lines[..n - 2].to_vec()), &format!("events {}..={n} are missing", n - 1));
    broken("deleted", None, &format!("events 1..={n} are missing"));
    for f in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    broken("every file deleted", None, &format!("events 1..={n} are missing"));
}
