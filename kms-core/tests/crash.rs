//! A worker process creates keys, aliases, versions and secrets (two versions each) and encrypts in
//! a loop, printing an acknowledgement after each call returns; it is killed with SIGKILL at a
//! random moment. On reopen, everything acknowledged must be there: every key, alias, version and
//! secret version with its value, and every ciphertext must decrypt. Several rounds run on the same store, so recovery after a crash is
//! itself crashed into.
//!
//! The worker is this test binary re-executed with `crash_worker` selected and `KMS_CRASH_DIR` set.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kms_core::api::*;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, Limits};
use rand::Rng;

fn config() -> EngineConfig {
    EngineConfig {
        limits: Limits {
            max_keys: 1_000_000,
            max_aliases: 1_000_000,
            min_manual_version_interval_secs: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(EngineOptions::in_dir(dir, config()).unwrap()).unwrap()
}

#[test]
#[ignore = "run by crash_kill_and_recover as a child process"]
fn crash_worker() {
    let Some(dir) = std::env::var_os("KMS_CRASH_DIR") else { return };
    let engine = open(Path::new(&dir));
    let me = Caller::owner();
    let mut n = 0u64;
    loop {
        n += 1;
        let spec = if n.is_multiple_of(2) { "Aliyun_SM4" } else { "Aliyun_AES_256" };
        let key = engine
            .create_key(&me, CreateKeyRequest { key_spec: Some(spec.into()), ..Default::default() })
            .unwrap()
            .key_metadata
            .key_id;
        println!("ACK KEY {key}");
        let alias = format!("alias/crash-{}-{n}", std::process::id());
        engine.create_alias(&me, &alias, &key).unwrap();
        println!("ACK ALIAS {alias} {key}");
        // A secret and a second version of it: acknowledged secret writes must survive too.
        let secret = format!("crash/{}-{n}", std::process::id());
        engine
            .create_secret(
                &me,
                CreateSecretRequest {
                    secret_name: secret.clone(),
                    secret_data: SecretString::new(format!("first {n}")),
                    version_id: "v1".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        println!("ACK SECRET {secret} v1 {}", encode_base64(format!("first {n}").as_bytes()));
        engine
            .put_secret_value(
                &me,
                PutSecretValueRequest {
                    secret_name: secret.clone(),
                    version_id: "v2".into(),
                    secret_data: SecretString::new(format!("second {n}")),
                    ..Default::default()
                },
            )
            .unwrap();
        println!("ACK SECRET {secret} v2 {}", encode_base64(format!("second {n}").as_bytes()));
        for i in 0..3 {
            if i == 1 {
                let v = engine.create_key_version(&me, &key).unwrap().key_version.key_version_id;
                println!("ACK VERSION {key} {v}");
            }
            let pt = format!("plaintext {n}/{i}");
            let ctx = format!(r#"{{"n":"{n}","i":"{i}"}}"#);
            let ct = engine
                .encrypt(
                    &me,
                    EncryptRequest {
                        key_id: alias.clone(),
                        plaintext: SecretBytes::from(pt.as_bytes()),
                        encryption_context: Some(ctx.clone()),
                        dry_run: false,
                    },
                )
                .unwrap();
            println!(
                "ACK CT {} {} {}",
                encode_base64(&ct.ciphertext_blob),
                encode_base64(pt.as_bytes()),
                encode_base64(ctx.as_bytes())
            );
        }
    }
}

#[derive(Default)]
struct Acks {
    keys: Vec<String>,
    aliases: Vec<(String, String)>,
    versions: Vec<(String, String)>,
    ciphertexts: Vec<(Vec<u8>, Vec<u8>, String)>,
    /// (secret, version, value)
    secrets: Vec<(String, String, String)>,
}

impl Acks {
    fn take(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        let b64 = |s: &str| decode_base64("x", s).unwrap();
        match f.as_slice() {
            ["ACK", "KEY", k] => self.keys.push(k.to_string()),
            ["ACK", "ALIAS", a, k] => self.aliases.push((a.to_string(), k.to_string())),
            ["ACK", "VERSION", k, v] => self.versions.push((k.to_string(), v.to_string())),
            ["ACK", "SECRET", name, version, value] => {
                self.secrets.push((name.to_string(), version.to_string(), String::from_utf8(b64(value)).unwrap()))
            }
            ["ACK", "CT", ct, pt, ctx] => {
                self.ciphertexts.push((b64(ct), b64(pt), String::from_utf8(b64(ctx)).unwrap()))
            }
            _ => {}
        }
    }
}

#[test]
fn crash_kill_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut acks = Acks::default();
    for round in 0..6 {
        let mut child = Command::new(&exe)
            .args(["crash_worker", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("KMS_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            // Only complete lines count: a line cut by the kill was never acknowledged.
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(_) if buf.ends_with(b"\n") => {
                        lines.push(String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned())
                    }
                    _ => break,
                }
            }
            lines
        });
        let delay = Duration::from_millis(rng.gen_range(150..700));
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acks.ciphertexts.len() + acks.keys.len();
        for l in &lines {
            if l.starts_with("ACK ") {
                acks.take(l);
            }
        }
        eprintln!(
            "round {round}: {} acknowledgements so far (+{})",
            acks.keys.len() + acks.ciphertexts.len(),
            acks.keys.len() + acks.ciphertexts.len() - before
        );

        let engine = open(dir.path());
        let me = Caller::owner();
        for k in &acks.keys {
            let md = engine.describe_key(&me, k).unwrap_or_else(|e| panic!("round {round}: key {k} lost: {e}"));
            assert_eq!(md.key_metadata.key_state, "Enabled");
        }
        for (a, k) in &acks.aliases {
            assert_eq!(&engine.describe_key(&me, a).unwrap().key_metadata.key_id, k, "round {round}: alias {a}");
        }
        for (k, v) in &acks.versions {
            engine.describe_key_version(&me, k, v).unwrap_or_else(|e| panic!("round {round}: version {v} lost: {e}"));
        }
        for (name, version, value) in &acks.secrets {
            let got = engine
                .get_secret_value(
                    &me,
                    GetSecretValueRequest {
                        secret_name: name.clone(),
                        version_id: Some(version.clone()),
                        ..Default::default()
                    },
                )
                .unwrap_or_else(|e| panic!("round {round}: acknowledged secret {name} {version} lost: {e}"));
            assert_eq!(got.secret_data.expose(), value);
        }
        for (ct, pt, ctx) in &acks.ciphertexts {
            let got = engine
                .decrypt(
                    &me,
                    DecryptRequest {
                        ciphertext_blob: ct.clone(),
                        encryption_context: Some(ctx.clone()),
                        dry_run: false,
                    },
                )
                .unwrap_or_else(|e| panic!("round {round}: acknowledged ciphertext does not decrypt: {e}"));
            assert_eq!(got.plaintext.expose(), &pt[..]);
        }
    }
    assert!(acks.ciphertexts.len() > 10, "the worker made progress ({} ciphertexts)", acks.ciphertexts.len());
    assert!(acks.secrets.len() > 4, "secrets were written ({})", acks.secrets.len());
}
