//! The sidecar with its root key in a real PKCS#11 token (SoftHSM2), across a restart.
//! `KMS_SKIP_HSM_TESTS=1` skips it on a machine without SoftHSM2 (`.ci/setup` installs it).

mod common;

use common::{start_fails, Sidecar};
use kms_client::client::ClientError;
use kms_core::api::*;

/// A fresh SoftHSM2 token labelled `kms` (PIN 1111): its directory, the module, its config file.
fn softhsm() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let hsm = kms_core::crypto::softhsm::SoftHsm::init(dir.path(), "kms", "1111").expect("run `bash .ci/setup`");
    (dir, hsm.module, hsm.conf)
}

fn skip() -> bool {
    std::env::var("KMS_SKIP_HSM_TESTS").is_ok_and(|v| v == "1")
}

#[test]
fn hsm_keys_over_the_wire() {
    if skip() {
        return;
    }
    let (hsm, module, conf) = softhsm();
    let cfg = hsm.path().join("kms.toml");
    std::fs::write(&cfg, format!("[hsm]\nenabled = true\nmodule = \"{}\"\ntoken_label = \"kms\"\n", module.display()))
        .unwrap();
    let envs = [("SOFTHSM2_CONF", conf.to_str().unwrap()), ("KMS_HSM_PIN", "1111")];
    let args = ["--config", cfg.to_str().unwrap()];

    let s = Sidecar::start_with_env(tempfile::tempdir().unwrap(), &args, &envs);
    let c = s.client();
    let hsm_key = |spec: &str| CreateKeyRequest {
        key_spec: Some(spec.into()),
        protection_level: Some("HSM".into()),
        ..Default::default()
    };
    let md = c.create_key(&hsm_key("Aliyun_AES_256")).unwrap().key_metadata;
    assert_eq!(md.protection_level, "HSM");
    assert_eq!(c.describe_key(&md.key_id).unwrap().key_metadata.protection_level, "HSM");
    let ct = c
        .encrypt(&EncryptRequest {
            key_id: md.key_id.clone(),
            plaintext: SecretBytes::from(&b"in the token"[..]),
            encryption_context: Some(r#"{"k":"v"}"#.into()),
            ..Default::default()
        })
        .unwrap();
    // An RSA key pair in the token signs over the wire.
    let rsa = c
        .create_key(&CreateKeyRequest { key_usage: Some("SIGN/VERIFY".into()), ..hsm_key("RSA_2048") })
        .unwrap()
        .key_metadata
        .key_id;
    let versions = c.call_params("ListKeyVersions", vec![("KeyId".into(), rsa.clone())]).unwrap();
    let rsa_v = versions["KeyVersions"]["KeyVersion"][0]["KeyVersionId"].as_str().unwrap().to_string();
    let digest = kms_core::crypto::asym::sha256(b"signed in the token, over the wire");
    let sign_req = AsymmetricSignRequest {
        key_id: rsa.clone(),
        key_version_id: rsa_v.clone(),
        algorithm: "RSA_PSS_SHA_256".into(),
        digest: digest.clone(),
        dry_run: false,
    };
    let sig: AsymmetricSignResponse = c.call("AsymmetricSign", &sign_req).unwrap();
    match c.create_key(&hsm_key("Aliyun_SM4")).unwrap_err() {
        ClientError::Api { status, code, message, .. } => {
            assert_eq!((status, code.as_str()), (400, "Unsupported.ProtectionLevel"));
            assert!(message.contains("SM4"), "{message}");
        }
        e => panic!("{e}"),
    }
    let data = s.stop();

    // Restarted: the store holds only the token object's label, the token does the decryption.
    let s = Sidecar::start_with_env(data, &args, &envs);
    let c = s.client();
    let wrong = c.decrypt(&DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() });
    assert_eq!(wrong.unwrap_err().code(), Some("InvalidParameter"));
    let back = c
        .decrypt(&DecryptRequest {
            ciphertext_blob: ct.ciphertext_blob,
            encryption_context: Some(r#"{"k":"v"}"#.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(back.plaintext.expose(), b"in the token");
    let verify = AsymmetricVerifyRequest {
        key_id: rsa,
        key_version_id: rsa_v,
        algorithm: "RSA_PSS_SHA_256".into(),
        digest,
        value: sig.value,
        dry_run: false,
    };
    let ok: AsymmetricVerifyResponse = c.call("AsymmetricVerify", &verify).unwrap();
    assert!(ok.value, "the signature made before the restart verifies");
    let data = s.stop();

    // Without the token configured, a store holding HSM keys does not start half-working.
    let (code, stderr) = start_fails(data.path(), &[], &[]);
    assert!(stderr.contains("HSM-protected and no PKCS#11 token is configured"), "{stderr}");
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn the_sidecar_seals_under_a_token_root_key() {
    if skip() {
        return;
    }
    let (hsm, module, conf) = softhsm();
    let cfg = hsm.path().join("kms.toml");
    std::fs::write(
        &cfg,
        format!("[hsm]\nroot_key_in_hsm = true\nmodule = \"{}\"\ntoken_label = \"kms\"\n", module.display()),
    )
    .unwrap();
    let envs = [("SOFTHSM2_CONF", conf.to_str().unwrap()), ("KMS_HSM_PIN", "1111")];
    let args = ["--config", cfg.to_str().unwrap()];

    let s = Sidecar::start_with_env(tempfile::tempdir().unwrap(), &args, &envs);
    let c = s.client();
    let key = c.create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let ct = c
        .encrypt(&EncryptRequest {
            key_id: key.clone(),
            plaintext: SecretBytes::from(&b"hsm-rooted"[..]),
            ..Default::default()
        })
        .unwrap();
    assert!(!s.dir.path().join("root.key").exists(), "no software root key is made");
    let data = s.stop();
    let s = Sidecar::start_with_env(data, &args, &envs);
    let back =
        s.client().decrypt(&DecryptRequest { ciphertext_blob: ct.ciphertext_blob, ..Default::default() }).unwrap();
    assert_eq!(back.plaintext.expose(), b"hsm-rooted");
    let data = s.stop();
    // The wrong PIN stops the start with a clear message.
    let (code, stderr) =
        start_fails(data.path(), &args, &[("SOFTHSM2_CONF", conf.to_str().unwrap()), ("KMS_HSM_PIN", "9999")]);
    assert!(stderr.contains("login"), "{stderr}");
    assert_eq!(code, 4, "the token refused: {stderr}");

    // The PIN from a file: refused while others can read it, used once it is 0600.
    use std::os::unix::fs::PermissionsExt;
    let pin_file = hsm.path().join("pin");
    std::fs::write(&pin_file, "1111\n").unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg2 = hsm.path().join("kms-pinfile.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[hsm]\nroot_key_in_hsm = true\nmodule = \"{}\"\ntoken_label = \"kms\"\npin_file = \"{}\"\n",
            module.display(),
            pin_file.display()
        ),
    )
    .unwrap();
    let args2 = ["--config", cfg2.to_str().unwrap()];
    let (code, stderr) = start_fails(data.path(), &args2, &[("SOFTHSM2_CONF", conf.to_str().unwrap())]);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert_eq!(code, 2, "a configuration problem: {stderr}");
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Sidecar::start_with_env(data, &args2, &[("SOFTHSM2_CONF", conf.to_str().unwrap())]);
    assert!(s.client().describe_key(&key).is_ok(), "started with the PIN from the file");
    s.stop();
}
