//! The secrets agent and secret durability, against the real binary.

mod common;

use common::{start_fails, Sidecar};
use kms_core::api::*;
use serde_json::Value;

fn put(c: &kms_client::client::Client, name: &str, version: &str, value: &str) {
    let _: Value = c
        .call(
            "PutSecretValue",
            &PutSecretValueRequest {
                secret_name: name.into(),
                version_id: version.into(),
                secret_data: SecretString::new(value.into()),
                ..Default::default()
            },
        )
        .unwrap();
}

fn create(c: &kms_client::client::Client, name: &str, value: &str) {
    common::create_secret(c, name, value, None);
}

fn agent_get(s: &Sidecar, path: &str, token: Option<&str>, extra: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = ureq::get(&format!("http://{}{path}", s.agent.as_ref().unwrap()));
    if let Some(t) = token {
        req = req.set("X-KMS-Token", t);
    }
    if let Some((k, v)) = extra {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    (resp.status(), serde_json::from_str(&resp.into_string().unwrap()).unwrap())
}

#[test]
fn agent_serves_secrets_to_token_holders_only() {
    let s = Sidecar::start_in(tempfile::tempdir().unwrap(), &["--agent-listen", "127.0.0.1:0"]);
    let token = std::fs::read_to_string(s.dir.path().join("agent.token")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.dir.path().join("agent.token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let c = s.client();
    create(&c, "app/db", "first");
    put(&c, "app/db", "v2", "second");

    let (st, b) = agent_get(&s, "/v1/app%2Fdb", Some(&token), None);
    assert_eq!((st, b["SecretData"].as_str(), b["VersionId"].as_str()), (200, Some("second"), Some("v2")));
    let (st, b) = agent_get(&s, "/v1/app/db?versionStage=ACSPrevious", Some(&token), None);
    assert_eq!((st, b["SecretData"].as_str()), (200, Some("first")));
    let (st, b) = agent_get(&s, "/secretsmanager/get?secretId=app/db&versionId=v1", Some(&token), None);
    assert_eq!((st, b["SecretData"].as_str()), (200, Some("first")));

    let (st, b) = agent_get(&s, "/v1/app/db", None, None);
    assert_eq!((st, b["Code"].as_str()), (403, Some("Forbidden.NoPermission")));
    let (st, _) = agent_get(&s, "/v1/app/db", Some("wrong-token-of-some-length"), None);
    assert_eq!(st, 403);
    let (st, b) = agent_get(&s, "/v1/app/db", Some(&token), Some(("X-Forwarded-For", "203.0.113.9")));
    assert_eq!((st, b["Code"].as_str()), (400, Some("InvalidParameter")));
    let (st, b) = agent_get(&s, "/v1/nope", Some(&token), None);
    assert_eq!((st, b["Code"].as_str()), (404, Some("Forbidden.ResourceNotFound")));
    let (st, _) = agent_get(&s, "/secretsmanager/get", Some(&token), None);
    assert_eq!(st, 400);

    let metrics = ureq::get(&format!("http://{}/metrics", s.http)).call().unwrap().into_string().unwrap();
    assert!(metrics.contains(r#"kms_agent_requests_total{result="miss"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"kms_agent_requests_total{result="denied"} 2"#), "{metrics}");
}

#[test]
fn the_agent_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = start_fails(dir.path(), &["--agent-listen", "0.0.0.0:0"], &[]);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn every_secret_version_survives_a_restart() {
    let s = Sidecar::start();
    let c = s.client();
    create(&c, "durable", "value 1");
    for i in 2..=5 {
        put(&c, "durable", &format!("v{i}"), &format!("value {i}"));
    }
    let dir = s.stop();
    let s = Sidecar::start_in(dir, &[]);
    let c = s.client();
    for i in 1..=5 {
        let v: GetSecretValueResponse = c
            .call(
                "GetSecretValue",
                &GetSecretValueRequest {
                    secret_name: "durable".into(),
                    version_id: Some(format!("v{i}")),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(v.secret_data.expose(), format!("value {i}"));
    }
    let cur: GetSecretValueResponse = c
        .call("GetSecretValue", &GetSecretValueRequest { secret_name: "durable".into(), ..Default::default() })
        .unwrap();
    assert_eq!(cur.version_id, "v5");
}

#[test]
fn the_agent_reads_with_its_principals_permissions_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kms.toml");
    std::fs::write(
        &cfg,
        r#"
[agent]
principal = "user:agent"

[[policies]]
principal = "user:agent"
name = "agent"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:GetSecretValue","Resource":"acs:kms:*:*:secret/app/*"}]}'''
"#,
    )
    .unwrap();
    let s = Sidecar::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", cfg.to_str().unwrap(), "--agent-listen", "127.0.0.1:0"],
    );
    let token = std::fs::read_to_string(s.dir.path().join("agent.token")).unwrap();
    let c = s.client();
    create(&c, "app/db", "allowed");
    create(&c, "ops/root", "not for the app");
    let (st, b) = agent_get(&s, "/v1/app/db", Some(&token), None);
    assert_eq!((st, b["SecretData"].as_str()), (200, Some("allowed")));
    let (st, b) = agent_get(&s, "/v1/ops/root", Some(&token), None);
    assert_eq!((st, b["Code"].as_str()), (403, Some("Forbidden.NoPermission")));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let events = kms_sidecar::audit::query(
        &s.dir.path().join("audit"),
        &kms_sidecar::audit::Query { principal: Some("user:agent".into()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().any(|e| e.code == "Forbidden.NoPermission" && e.http_status == 403));
    let log = std::fs::read_to_string(s.dir.path().join("audit/audit.log")).unwrap();
    assert!(!log.contains("allowed") && !log.contains("not for the app"), "no secret values in the log");
}
