//! `kmsctl` end to end against the real sidecar binary: convenience verbs, generic actions, both
//! signature schemes, errors as a non-zero exit with the API's code.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Sidecar;

fn kmsctl(s: &Sidecar, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsctl"));
    cmd.args(args)
        .env("KMS_PROFILE", s.dir.path().join("profile.json"))
        .env("KMS_ENDPOINT", format!("http://{}", s.http))
        .env("KMS_ACCESS_KEY_ID", common::OWNER_ID)
        .env("KMS_ACCESS_KEY_SECRET", common::OWNER_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "kmsctl failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn verbs_actions_and_errors() {
    let s = Sidecar::start();
    let created = json(&kmsctl(&s, &["create-key", "--spec", "Aliyun_SM4", "--alias", "alias/ctl"], None));
    let key = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();

    let enc =
        kmsctl(&s, &["encrypt", "--key-id", "alias/ctl", "--context", r#"{"a":"b"}"#], Some(b"secret bytes\x00\xff"));
    assert!(enc.status.success());
    for sig in ["v1", "v3"] {
        let dec = kmsctl(&s, &["--signature", sig, "decrypt", "--context", r#"{ "a" : "b" }"#], Some(&enc.stdout));
        assert!(dec.status.success(), "{}", String::from_utf8_lossy(&dec.stderr));
        assert_eq!(dec.stdout, b"secret bytes\x00\xff");
    }
    let bad = kmsctl(&s, &["decrypt", "--context", r#"{"a":"c"}"#], Some(&enc.stdout));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidParameter (HTTP 400)"));

    let d = json(&kmsctl(&s, &["DescribeKey", "--KeyId", &key], None));
    assert_eq!(d["KeyMetadata"]["KeySpec"], "Aliyun_SM4");
    let l = json(&kmsctl(&s, &["ListAliasesByKeyId", "--KeyId=alias/ctl"], None));
    assert_eq!(l["Aliases"]["Alias"][0]["AliasName"], "alias/ctl");
    // The shared exit codes: the KMS refused (4), a file given that cannot be used (2, naming
    // it), nothing listening (5).
    let missing = kmsctl(&s, &["DescribeKey", "--KeyId", "key-nope"], None);
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Forbidden.KeyNotFound (HTTP 404)"));
    let not_pem = s.dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let https = format!("https://{}", s.http);
    let bad_ca = kmsctl(&s, &["--endpoint", &https, "--ca-file", not_pem.to_str().unwrap(), "ListKeys"], None);
    assert_eq!(bad_ca.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad_ca.stderr));
    assert!(String::from_utf8_lossy(&bad_ca.stderr).contains("not-a-ca.pem: no certificate"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let unreachable = kmsctl(&s, &["--endpoint", &format!("http://{closed}"), "ListKeys"], None);
    assert_eq!(unreachable.status.code(), Some(5), "{}", String::from_utf8_lossy(&unreachable.stderr));

    let oss = json(&kmsctl(
        &s,
        &["--service", "oss", "generate-data-key", "--key-id", "alias/acs/oss", "--bytes", "16"],
        None,
    ));
    assert_eq!(kms_core::api::decode_base64("p", oss["Plaintext"].as_str().unwrap()).unwrap().len(), 16);
}

#[test]
fn asymmetric_verbs_and_byok_import() {
    let s = Sidecar::with_config("[engine.limits]\nmin_manual_version_interval_secs = 0\n");
    let k = json(&kmsctl(&s, &["CreateKey", "--KeySpec", "RSA_2048", "--KeyUsage", "SIGN/VERIFY"], None));
    let key = k["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let v = json(&kmsctl(&s, &["ListKeyVersions", "--KeyId", &key], None));
    let version = v["KeyVersions"]["KeyVersion"][0]["KeyVersionId"].as_str().unwrap().to_string();
    let pem = kmsctl(&s, &["get-public-key", "--key-id", &key, "--version", &version], None);
    assert!(String::from_utf8_lossy(&pem.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    let sig =
        kmsctl(&s, &["sign", "--key-id", &key, "--version", &version, "--algorithm", "RSA_PSS_SHA_256"], Some(b"doc"));
    let sig = String::from_utf8(sig.stdout).unwrap();
    let args = |data: &'static [u8]| {
        kmsctl(
            &s,
            &[
                "verify",
                "--key-id",
                &key,
                "--version",
                &version,
                "--algorithm",
                "RSA_PSS_SHA_256",
                "--signature",
                sig.trim(),
            ],
            Some(data),
        )
    };
    assert!(args(b"doc").status.success());
    assert_eq!(args(b"other").status.code(), Some(1));
    // Without --version: the newest version – after a second one is made, that one.
    let pem_default = kmsctl(&s, &["get-public-key", "--key-id", &key], None);
    assert_eq!(pem_default.stdout, pem.stdout, "{}", String::from_utf8_lossy(&pem_default.stderr));
    let v2 = json(&kmsctl(&s, &["CreateKeyVersion", "--KeyId", &key], None));
    let v2 = v2["KeyVersion"]["KeyVersionId"].as_str().unwrap().to_string();
    let newest = kmsctl(&s, &["get-public-key", "--key-id", &key], None);
    let second = kmsctl(&s, &["get-public-key", "--key-id", &key, "--version", &v2], None);
    assert_eq!(newest.stdout, second.stdout);
    assert_ne!(newest.stdout, pem.stdout, "a new version has a new key pair");
    let sig2 = kmsctl(&s, &["sign", "--key-id", &key, "--algorithm", "RSA_PSS_SHA_256"], Some(b"doc"));
    let sig2 = String::from_utf8(sig2.stdout).unwrap();
    let verify2 = kmsctl(
        &s,
        &["verify", "--key-id", &key, "--version", &v2, "--algorithm", "RSA_PSS_SHA_256", "--signature", sig2.trim()],
        Some(b"doc"),
    );
    assert!(verify2.status.success(), "signed with the newest version by default");

    let ext = json(&kmsctl(&s, &["CreateKey", "--Origin", "EXTERNAL"], None));
    let ext = ext["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let material = s.dir.path().join("material.bin");
    std::fs::write(&material, [0x42u8; 32]).unwrap();
    let out = kmsctl(&s, &["import-material", "--key-id", &ext, "--in", material.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = json(&kmsctl(&s, &["DescribeKey", "--KeyId", &ext], None));
    assert_eq!(d["KeyMetadata"]["KeyState"], "Enabled");
}

#[test]
fn secret_verbs() {
    let s = Sidecar::start();
    let out = kmsctl(&s, &["create-secret", "app/token"], Some(b"t0ken v1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(kmsctl(&s, &["put-secret", "app/token", "--version-id", "v2"], Some(b"t0ken v2")).status.success());
    assert_eq!(kmsctl(&s, &["get-secret", "app/token"], None).stdout, b"t0ken v2");
    assert_eq!(kmsctl(&s, &["get-secret", "app/token", "--stage", "ACSPrevious"], None).stdout, b"t0ken v1");
    let pw = kmsctl(&s, &["random-password", "--length", "20", "--exclude", "abc"], None);
    let pw = String::from_utf8(pw.stdout).unwrap();
    assert_eq!(pw.trim().len(), 20);
    assert!(!pw.contains(['a', 'b', 'c']));
    let missing = kmsctl(&s, &["get-secret", "nope"], None);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Forbidden.ResourceNotFound (HTTP 404)"));
}

#[test]
fn a_reader_that_goes_away_ends_kmsctl_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let s = Sidecar::start();
    for _ in 0..40 {
        kmsctl(&s, &["create-key", "--description", &"x".repeat(200)], None);
    }
    // `kmsctl ListKeys | head -0`: the pipe's read end is closed before kmsctl writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_kmsctl"))
        .args(["--endpoint", &format!("http://{}", s.http), "ListKeys", "--PageSize", "100"])
        .env("KMS_ACCESS_KEY_ID", common::OWNER_ID)
        .env("KMS_ACCESS_KEY_SECRET", common::OWNER_SECRET)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    const SIGPIPE: i32 = 13;
    assert_eq!(out.status.signal(), Some(SIGPIPE), "ended by SIGPIPE like ls or cat: {:?} {stderr}", out.status);
}

#[test]
fn status_says_whether_the_kms_is_up_and_serves_signed_requests() {
    let s = Sidecar::start();
    let up = kmsctl(&s, &["status"], None);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    assert!(String::from_utf8_lossy(&up.stdout).contains("up; signed requests served"));
    let wrong = kmsctl(&s, &["--access-key-secret", "wrong", "status"], None);
    assert_eq!(wrong.status.code(), Some(4), "{}", String::from_utf8_lossy(&wrong.stderr));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = kmsctl(&s, &["--endpoint", &format!("http://{closed}"), "status"], None);
    assert_eq!(down.status.code(), Some(5), "{}", String::from_utf8_lossy(&down.stderr));
    // Something that answers HTTP but is not a sidecar: unreachable as a KMS, and it says so.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut c in other.incoming().take(2).flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "<html>Not Found</html>";
            let head = format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = c.write_all(format!("{head}{body}").as_bytes());
        }
    });
    let foreign = kmsctl(&s, &["--endpoint", &format!("http://{addr}"), "status"], None);
    assert_eq!(foreign.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("not a KMS sidecar"));
    // An API call to it: exit 5 with what it answered, not an empty refusal (exit 4).
    let call = kmsctl(&s, &["--endpoint", &format!("http://{addr}"), "ListKeys"], None);
    let err = String::from_utf8_lossy(&call.stderr);
    assert_eq!(call.status.code(), Some(5), "{err}");
    assert!(err.contains("HTTP 404 without a KMS error: <html>Not Found</html>"), "{err}");
}

#[test]
fn a_mistyped_action_is_a_usage_error_with_suggestions_before_any_request() {
    // No endpoint, no credentials: the name is checked first.
    let out = Command::new(env!("CARGO_BIN_EXE_kmsctl"))
        .args(["--endpoint", "http://127.0.0.1:9", "listkeys", "--PageSize", "5"])
        .env_remove("KMS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean ListKeys"), "{err}");
}

#[test]
fn completions_and_the_manual_come_from_the_command_line_itself() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_kmsctl")).args(args).output().unwrap();
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    assert!(script.contains("grant-service") && script.contains("--access-key-id"), "every verb and option");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kmsctl.bash"), &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(dir.path().join("kmsctl.bash")).status().unwrap();
    assert!(syntax.success(), "the bash script parses");
    let man = String::from_utf8(run(&["man"]).stdout).unwrap();
    assert!(man.contains(".TH kmsctl 1") && man.contains("grant\\-service"), "{}", &man[..man.len().min(300)]);
}
