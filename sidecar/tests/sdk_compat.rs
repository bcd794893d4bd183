//! Alibaba's own SDKs, unmodified, against the real `kms-sidecar` binary: the Python suites
//! (py-core V1, py-tea V3/V1) with pytest and the Node suites (Tea 1.x, pop-core GET/POST) with
//! `node --test`, over HTTP and HTTPS with the generated CA.
//!
//! The SDKs are installed by `.ci/setup` into `.ci-cache/venv` and `sidecar/tests/sdk/node`.
//! Set `KMS_SKIP_SDK_TESTS=1` to skip these tests on a machine without them.

mod common;

use std::process::Command;

use common::{workspace, Sidecar};

fn skip() -> bool {
    std::env::var("KMS_SKIP_SDK_TESTS").is_ok_and(|v| v == "1")
}

fn run_suite(name: &str, mut cmd: Command, sidecar: &Sidecar) {
    cmd.current_dir(workspace()).envs(sidecar.env());
    let status = cmd.status().unwrap_or_else(|e| panic!("{name}: cannot run: {e}"));
    assert!(status.success(), "{name} failed ({status})");
}

#[test]
fn python_sdks() {
    if skip() {
        eprintln!("KMS_SKIP_SDK_TESTS=1: skipped");
        return;
    }
    let python = workspace().join(".ci-cache/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash .ci/setup` (or set KMS_SKIP_SDK_TESTS=1)", python.display());
    // With a SoftHSM2 token behind `[hsm] enabled`, so the SDKs also drive ProtectionLevel HSM keys.
    let hsm_dir = tempfile::tempdir().unwrap();
    let with_hsm = !std::env::var("KMS_SKIP_HSM_TESTS").is_ok_and(|v| v == "1");
    let sidecar = if with_hsm {
        let hsm =
            kms_core::crypto::softhsm::SoftHsm::init(hsm_dir.path(), "kms", "1111").expect("run `bash .ci/setup`");
        let cfg = hsm_dir.path().join("kms.toml");
        std::fs::write(&cfg, format!("[hsm]\nenabled = true\nmodule = \"{}\"\n", hsm.module.display())).unwrap();
        Sidecar::start_with_env(
            tempfile::tempdir().unwrap(),
            &["--config", cfg.to_str().unwrap()],
            &[("SOFTHSM2_CONF", hsm.conf.to_str().unwrap()), ("KMS_HSM_PIN", "1111")],
        )
    } else {
        Sidecar::start()
    };
    let mut cmd = Command::new(python);
    cmd.env("KMS_HSM", if with_hsm { "1" } else { "0" });
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        "sidecar/tests/sdk/python",
    ]);
    run_suite("pytest", cmd, &sidecar);
}

#[test]
fn node_sdks() {
    if skip() {
        eprintln!("KMS_SKIP_SDK_TESTS=1: skipped");
        return;
    }
    let modules = workspace().join("sidecar/tests/sdk/node/node_modules");
    assert!(modules.exists(), "{} is missing: run `bash .ci/setup` (or set KMS_SKIP_SDK_TESTS=1)", modules.display());
    let sidecar = Sidecar::start();
    let mut cmd = Command::new("node");
    cmd.args(["--test", "sidecar/tests/sdk/node/"]);
    cmd.env("NODE_EXTRA_CA_CERTS", sidecar.dir.path().join("tls/ca.pem"));
    run_suite("node --test", cmd, &sidecar);
}
