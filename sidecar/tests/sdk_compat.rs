//! Alibaba's own SDKs, unmodified, against the real `kms-sidecar` binary: the Python suites
//! (py-core V1, py-tea V3/V1) with pytest and the Node suites (Tea 1.x, pop-core GET/POST) with
//! `node --test`, over HTTP and HTTPS with the generated CA.
//!
//! And one KMS behind three sidecars on a shared PostgreSQL: the Python suites run on all three
//! nodes at once, and what the SDKs make on one node is used through the others
//! (`test_cross_node.py`).
//!
//! The SDKs are installed by `.ci/setup` into `.ci-cache/venv` and `sidecar/tests/sdk/node`.
//! Set `KMS_SKIP_SDK_TESTS=1` to skip these tests on a machine without them.

mod common;

use std::process::Command;

use common::{start_nodes, workspace, Sidecar};
use kms_e2e::{sdk_tests_skipped, venv_python};

fn run_suite(name: &str, mut cmd: Command, sidecar: &Sidecar) {
    cmd.current_dir(workspace()).envs(sidecar.env());
    let status = cmd.status().unwrap_or_else(|e| panic!("{name}: cannot run: {e}"));
    assert!(status.success(), "{name} failed ({status})");
}

fn pytest(python: &std::path::Path, suite: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", suite]);
    cmd
}

#[test]
fn python_sdks() {
    if sdk_tests_skipped() {
        return;
    }
    let python = venv_python();
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
    let mut cmd = pytest(&python, "sidecar/tests/sdk/python");
    cmd.env("KMS_HSM", if with_hsm { "1" } else { "0" });
    run_suite("pytest", cmd, &sidecar);
}

#[test]
fn python_sdks_on_three_nodes_of_one_store() {
    if sdk_tests_skipped() {
        return;
    }
    assert!(pg_harness::available(), "PostgreSQL server binaries are needed (bash .ci/setup installs postgresql)");
    let python = venv_python();
    let url = pg_harness::fresh_database("sdk_nodes");
    let n = start_nodes(&url, 3);
    // Every node runs the whole suite at the same time; node 0 also uses its keys and secrets
    // through the other two.
    let runs: Vec<_> = n
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut cmd = pytest(&python, "sidecar/tests/sdk/python");
            cmd.current_dir(workspace()).envs(node.env()).env("KMS_HSM", "0");
            if i == 0 {
                let peers: Vec<&str> = n.nodes[1..].iter().map(|p| p.http.as_str()).collect();
                cmd.env("KMS_PEERS", peers.join(","));
            }
            (i, cmd.spawn().unwrap_or_else(|e| panic!("pytest: cannot run: {e}")))
        })
        .collect();
    for (i, mut child) in runs {
        let status = child.wait().unwrap();
        assert!(status.success(), "pytest on node {i} failed ({status})");
    }
}

#[test]
fn node_sdks() {
    if sdk_tests_skipped() {
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
