//! The console in a real browser: Debian's Chromium, headless, driven through chromedriver by
//! `console/console_flow.py` (Selenium), against a real sidecar. The script walks the guides'
//! console workflows and checks what the page shows; this side checks what the audit trail
//! recorded of it, by principal. Screenshots of the main pages go to
//! `target/console-screenshots/`. `KMS_SKIP_BROWSER_TESTS=1` skips it on a machine without
//! Chromium (CI installs it: `.ci/setup`).

mod common;

use std::process::Command;

use common::{workspace, Sidecar};

#[test]
fn the_guides_console_workflows_in_chromium() {
    if std::env::var("KMS_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("KMS_SKIP_BROWSER_TESTS=1: skipped");
        return;
    }
    let python = workspace().join(".ci-cache/console-venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash .ci/setup`", python.display());
    let s = Sidecar::with_config(common::CONSOLE_CONFIG);
    let shots = workspace().join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(workspace().join("sidecar/tests/console/console_flow.py"))
        .env("KMS_CONSOLE", s.console.as_deref().unwrap())
        .env("KMS_OWNER_ID", common::OWNER_ID)
        .env("KMS_OWNER_SECRET", common::OWNER_SECRET)
        .env("KMS_VIEWER_ID", "viewerKey")
        .env("KMS_VIEWER_SECRET", "viewerSecret")
        .env("KMS_SHOTS", &shots)
        .env("KMS_WORK", work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    for page in ["key-list", "key-detail", "tools", "byok", "secret", "audit", "viewer-refused"] {
        assert!(shots.join(format!("{page}.png")).exists(), "screenshot {page}");
    }

    // What the browser did is in the trail, each call as the principal who signed in.
    let dir = s.stop();
    let events = kms_sidecar::audit::query(&dir.path().join("audit"), &Default::default()).unwrap();
    let by = |principal: &str, action: &str, code: &str| {
        events.iter().any(|e| {
            e.principal == principal && e.action == action && e.code == code && e.user_agent.starts_with("console; ")
        })
    };
    let key = seen["key"].as_str().unwrap();
    for (action, code) in [
        ("CreateKey", "OK"),
        ("CreateAlias", "OK"),
        ("TagResource", "OK"),
        ("Encrypt", "OK"),
        ("Decrypt", "OK"),
        ("ScheduleKeyDeletion", "OK"),
        ("CancelKeyDeletion", "OK"),
        ("GetParametersForImport", "OK"),
        ("ImportKeyMaterial", "OK"),
        ("CreateSecret", "OK"),
        ("PutSecretValue", "OK"),
        ("GetSecretValue", "OK"),
        ("UpdateSecretVersionStage", "OK"),
    ] {
        assert!(by("owner", action, code), "the owner's {action} {code}");
    }
    assert!(by("user:viewer", "DisableKey", "Forbidden.NoPermission"), "the viewer's refused DisableKey");
    assert!(
        events.iter().any(|e| e.action == "ScheduleKeyDeletion" && e.resources.iter().any(|r| r.contains(key))),
        "the deletion names the key it scheduled"
    );
    assert!(
        !events.iter().any(|e| e.principal == "user:viewer" && e.code == "OK" && e.action == "DisableKey"),
        "the viewer changed nothing"
    );
    let verified =
        kms_e2e::ok(&kms_e2e::run("kmsctl", &["audit", "verify", "--data-dir", dir.path().to_str().unwrap()]));
    assert!(verified.starts_with("audit log OK"), "{verified}");
}
