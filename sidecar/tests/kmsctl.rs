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
        let dec =
            kmsctl(&s, &["--signature-version", sig, "decrypt", "--context", r#"{ "a" : "b" }"#], Some(&enc.stdout));
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

#[test]
fn action_help_and_parameter_warnings_come_from_what_the_server_decodes() {
    // Help needs no KMS: nothing listens at the endpoint and there are no credentials.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kmsctl"))
            .args(["--endpoint", "http://127.0.0.1:9"])
            .args(args)
            .env_remove("KMS_ACCESS_KEY_ID")
            .output()
            .unwrap()
    };
    let help = run(&["GenerateDataKey", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{}", String::from_utf8_lossy(&help.stderr));
    assert!(text.contains("Usage: kmsctl GenerateDataKey --KeyId <string>"), "{text}");
    assert!(text.contains("[--NumberOfBytes <integer>]"), "{text}");
    assert!(text.contains("kms:GenerateDataKey"), "{text}");
    let all = String::from_utf8(run(&["actions"]).stdout).unwrap();
    assert!(all.lines().any(|l| l.starts_with("UpdateSecretVersionStage ") && l.contains("change")), "{all}");

    // A misspelt parameter is named, with the right one, and the request still goes out as
    // typed: here the KMS then refuses for the required parameter it did not get.
    let s = Sidecar::start();
    let key = json(&kmsctl(&s, &["create-key"], None))["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let out = kmsctl(&s, &["GenerateDataKey", "--KeyId", &key, "--NumberOfByte", "16"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: GenerateDataKey has no parameter --NumberOfByte; did you mean --NumberOfBytes?"),
        "{err}"
    );
    let v = json(&out);
    assert_eq!(v["Plaintext"].as_str().map(|p| p.len()), Some(44), "32 bytes: the misspelt 16 was ignored");
    let out = kmsctl(&s, &["Encrypt", "--KeyID", &key, "--Plaintext", "aGk="], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--KeyID; did you mean --KeyId?") && err.contains("MissingParameter"), "{err}");
    assert_eq!(out.status.code(), Some(4));
    // Names it does read pass without a word.
    let quiet = kmsctl(&s, &["Encrypt", "--KeyId", &key, "--Plaintext", "aGk=", "--RegionId", "cn-hangzhou"], None);
    assert!(quiet.status.success() && quiet.stderr.is_empty(), "{}", String::from_utf8_lossy(&quiet.stderr));
}

#[test]
fn lists_as_tables_and_text_with_stored_strings_made_harmless() {
    let s = Sidecar::start();
    let hostile = "pay\nKEY-FORGED\tEnabled \u{1b}[2J<script>alert(1)</script>";
    let a = json(&kmsctl(&s, &["create-key", "--alias", "alias/orders", "--description", hostile], None));
    let a = a["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let b = json(&kmsctl(&s, &["create-key", "--spec", "Aliyun_SM4", "--description", "数据库密钥"], None));
    let b = b["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();

    let table = kmsctl(&s, &["list-keys", "--output", "table"], None);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KeyId") && lines[0].contains("Aliases") && lines[0].contains("KeyState"), "{table}");
    assert_eq!(lines.len(), 4, "header, rule, two keys – the description's newline made no row: {table}");
    let row_a = lines.iter().find(|l| l.starts_with(&a)).unwrap();
    assert!(row_a.contains("alias/orders") && row_a.contains("Aliyun_AES_256") && row_a.contains("Enabled"), "{row_a}");
    assert!(row_a.contains("pay\\nKEY-FORGED\\tEnabled \\u{1b}[2J<script>"), "{row_a}");
    assert!(!table.contains('\u{1b}'), "no escape sequence reaches the terminal");
    assert!(lines.iter().any(|l| l.starts_with(&b) && l.contains("Aliyun_SM4") && l.contains("数据库密钥")));

    // Text: one line per key, tab-separated, the id first – what `cut -f1` wants.
    let text = String::from_utf8(kmsctl(&s, &["list-keys", "--output", "text"], None).stdout).unwrap();
    let mut ids: Vec<&str> = text.lines().map(|l| l.split('\t').next().unwrap()).collect();
    ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want, "{text}");
    // JSON (the default) is the same rows, unescaped.
    let rows = json(&kmsctl(&s, &["list-keys"], None));
    let row = rows.as_array().unwrap().iter().find(|r| r["KeyId"] == a.as_str()).unwrap();
    assert_eq!(row["Description"], hostile);
    assert_eq!(row["Aliases"][0], "alias/orders");

    // Any action's answer, as a field/value table or rows, and the format from the environment.
    let described = kmsctl(&s, &["DescribeKey", "--KeyId", &b, "--output", "text"], None);
    let described = String::from_utf8(described.stdout).unwrap();
    assert!(described.lines().next().unwrap().starts_with(&format!("KeyId\t{b}")), "{described}");
    assert!(described.lines().any(|l| l == "KeySpec\tAliyun_SM4"), "{described}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsctl"));
    cmd.args(["--endpoint", &format!("http://{}", s.http), "ListAliases"])
        .env("KMS_ACCESS_KEY_ID", common::OWNER_ID)
        .env("KMS_ACCESS_KEY_SECRET", common::OWNER_SECRET)
        .env("KMSCTL_OUTPUT", "table");
    let aliases = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    assert!(aliases.lines().next().unwrap().starts_with("AliasName"), "{aliases}");
    assert!(aliases.contains("TotalCount: 1"), "the paging fields under the rows: {aliases}");
    let bad = kmsctl(&s, &["list-keys", "--output", "yaml"], None);
    assert_eq!(bad.status.code(), Some(2), "an unknown format is a usage error");
}
