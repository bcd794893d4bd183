//! The root key inside a real PKCS#11 token (SoftHSM2): generated there, sensitive and never
//! extractable (checked with `pkcs11-tool`), sealing every key version of a store that survives a
//! reopen. `.ci/setup` installs softhsm2 and opensc; `KMS_SKIP_HSM_TESTS=1` skips this on a machine
//! without them.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kms_core::api::*;
use kms_core::crypto::token::{default_softhsm_module, Token, TokenConfig, TokenRootKey};
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, SystemClock};
use zeroize::Zeroizing;

const LABEL: &str = "kms-test";
const PIN: &str = "87654321";

fn softhsm(dir: &Path) -> Option<std::path::PathBuf> {
    if std::env::var("KMS_SKIP_HSM_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("KMS_SKIP_HSM_TESTS=1: skipped");
        return None;
    }
    let module = default_softhsm_module()
        .expect("SoftHSM2 is not installed: run `bash .ci/setup` (or set KMS_SKIP_HSM_TESTS=1)");
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    // SoftHSM reads its configuration when the module initialises; this test binary has only
    // this one test, so setting the variable here affects nothing else.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL, "--so-pin", "12345678", "--pin", PIN])
        .output()
        .expect("softhsm2-util");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(module)
}

fn engine(dir: &Path, module: &Path) -> Engine {
    let token = Token::open(&TokenConfig {
        module: module.to_path_buf(),
        token_label: LABEL.into(),
        pin: Zeroizing::new(PIN.into()),
    })
    .unwrap();
    let root = TokenRootKey::load_or_create(token, "kms-root-key").unwrap();
    Engine::open(EngineOptions {
        config: EngineConfig::default(),
        store_path: dir.join("kms.db"),
        protector: Arc::new(root),
        clock: Arc::new(SystemClock),
    })
    .unwrap()
}

#[test]
fn the_root_key_lives_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(dir.path()) else { return };
    let me = Caller::owner();
    let (ct, dk, key) = {
        let e = engine(dir.path(), &module);
        let key = e
            .create_key(&me, CreateKeyRequest { key_spec: Some("Aliyun_SM4".into()), ..Default::default() })
            .unwrap()
            .key_metadata
            .key_id;
        let rsa =
            e.create_key(&me, CreateKeyRequest { key_spec: Some("RSA_2048".into()), ..Default::default() }).unwrap();
        assert_eq!(rsa.key_metadata.key_state, "Enabled");
        let ct = e
            .encrypt(
                &me,
                EncryptRequest {
                    key_id: key.clone(),
                    plaintext: SecretBytes::from(&b"sealed by the token"[..]),
                    ..Default::default()
                },
            )
            .unwrap();
        let dk =
            e.generate_data_key(&me, GenerateDataKeyRequest { key_id: key.clone(), ..Default::default() }).unwrap();
        e.create_secret(
            &me,
            CreateSecretRequest {
                secret_name: "s".into(),
                secret_data: SecretString::new("v".into()),
                version_id: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        (ct, dk, key)
    };
    // Reopen: every version unseals through the token.
    let e = engine(dir.path(), &module);
    let back =
        e.decrypt(&me, DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() }).unwrap();
    assert_eq!((back.plaintext.expose(), back.key_id.as_str()), (&b"sealed by the token"[..], key.as_str()));
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: dk.ciphertext_blob, ..Default::default() }).unwrap().plaintext,
        dk.plaintext
    );
    assert_eq!(
        e.get_secret_value(&me, GetSecretValueRequest { secret_name: "s".into(), ..Default::default() })
            .unwrap()
            .secret_data
            .expose(),
        "v"
    );
    drop(e);

    // The token holds the key as sensitive and never extractable.
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&module)
        .args(["--token-label", LABEL, "--login", "--pin", PIN, "--list-objects", "--type", "secrkey"])
        .output()
        .expect("pkcs11-tool (opensc)");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("kms-root-key"), "{listing}");
    assert!(listing.contains("sensitive") && listing.contains("never extractable"), "{listing}");
    assert!(!listing.contains("  extractable"), "{listing}");

    // Another root key (a different label) cannot open the store; a wrong PIN cannot log in.
    let token = Token::open(&TokenConfig {
        module: module.clone(),
        token_label: LABEL.into(),
        pin: Zeroizing::new(PIN.into()),
    })
    .unwrap();
    let other = TokenRootKey::load_or_create(token, "another-key").unwrap();
    let err = Engine::open(EngineOptions {
        config: EngineConfig::default(),
        store_path: dir.path().join("kms.db"),
        protector: Arc::new(other),
        clock: Arc::new(SystemClock),
    })
    .err()
    .unwrap();
    assert!(err.0.contains("another root key"), "{err}");
    let bad = Token::open(&TokenConfig { module, token_label: LABEL.into(), pin: Zeroizing::new("00000000".into()) })
        .err()
        .unwrap();
    assert!(bad.contains("login"), "{bad}");
}
