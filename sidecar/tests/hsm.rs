//! The sidecar with its root key in a real PKCS#11 token (SoftHSM2), across a restart.
//! `KMS_SKIP_HSM_TESTS=1` skips it on a machine without SoftHSM2 (`.ci/setup` installs it).

mod common;

use std::process::Command;

use common::Sidecar;
use kms_core::api::*;

#[test]
fn the_sidecar_seals_under_a_token_root_key() {
    if std::env::var("KMS_SKIP_HSM_TESTS").is_ok_and(|v| v == "1") {
        return;
    }
    let module = kms_core::crypto::token::default_softhsm_module().expect("SoftHSM2 missing: run `bash .ci/setup`");
    let hsm = tempfile::tempdir().unwrap();
    let conf = hsm.path().join("softhsm2.conf");
    std::fs::create_dir_all(hsm.path().join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\n", hsm.path().join("tokens").display()),
    )
    .unwrap();
    let st = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "kms", "--so-pin", "12345678", "--pin", "1111"])
        .status()
        .unwrap();
    assert!(st.success());
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
            key_id: key,
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
    let out = Command::new(env!("CARGO_BIN_EXE_kms-sidecar"))
        .envs([("SOFTHSM2_CONF", conf.to_str().unwrap()), ("KMS_HSM_PIN", "9999")])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("login"), "{}", String::from_utf8_lossy(&out.stderr));
}
