//! Authorisation under attack, over real HTTP with signed requests from principals whose policies
//! limit them: every way a request could name one resource and use another (blank and padded ids,
//! ARNs and aliases, a blob naming another key, ReEncrypt's source, Tag* on keys vs secrets,
//! batch and list calls, aliases re-pointed concurrently), service keys, and replays across a
//! restart. Each denied call is checked to change nothing and its audit line to name the resource
//! the engine resolved.

mod common;

use std::time::{Duration, Instant};

use kms_client::client::{Client, ClientConfig, ClientError, Signing};
use kms_core::api::*;
use kms_sidecar::app::{self, Running};
use kms_sidecar::audit::{self, AuditEvent};
use kms_sidecar::config::{AccessKeyConfig, Config, PolicyConfig};
use serde_json::Value;
use zeroize::Zeroizing;

const ACCOUNT_ARN: &str = "acs:kms:cn-hangzhou:1234567890123456";

/// dev may use keys tagged env=dev for envelopes and tag keys (never secrets).
const DEV: &str = r#"{"Version":"1","Statement":[
  {"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],
   "Resource":"acs:kms:*:*:key/*","Condition":{"StringEquals":{"kms:tag/env":"dev"}}},
  {"Effect":"Allow","Action":["kms:TagResource","kms:UntagResource","kms:TagResources","kms:UntagResources"],"Resource":"acs:kms:*:*:key/*"},
  {"Effect":"Allow","Action":["kms:GetSecretValue","kms:BatchGetSecretValue"],"Resource":"acs:kms:*:*:secret/dev-*"},
  {"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:tag/env":"dev"}}}]}"#;

struct World {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    cfg: Config,
    dev_key: String,
    prod_key: String,
}

fn access_key(p: &str) -> AccessKeyConfig {
    let id = p.replace(':', "-");
    AccessKeyConfig { id: id.clone(), secret: format!("{id}-secret"), principal: p.into(), enabled: true }
}

impl World {
    fn new(dir: &std::path::Path) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let cfg = Config {
            data_dir: Some(dir.to_path_buf()),
            listen: "127.0.0.1:0".into(),
            access_keys: ["owner", "user:dev", "user:nobody", "service:oss"].iter().map(|p| access_key(p)).collect(),
            policies: vec![PolicyConfig {
                principal: "user:dev".into(),
                name: "dev".into(),
                document: Some(DEV.into()),
                file: None,
            }],
            ..Default::default()
        };
        let running = rt.block_on(app::start(cfg.clone())).unwrap();
        let mut w = World { rt, running: Some(running), cfg, dev_key: String::new(), prod_key: String::new() };
        let o = w.client("owner");
        let mk = |env: &str| {
            let tags = format!(r#"[{{"TagKey":"env","TagValue":"{env}"}}]"#);
            o.create_key(&CreateKeyRequest { tags: Some(tags), ..Default::default() }).unwrap().key_metadata.key_id
        };
        w.dev_key = mk("dev");
        w.prod_key = mk("prod");
        w
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn client(&self, principal: &str) -> Client {
        let id = principal.replace(':', "-");
        Client::new(ClientConfig {
            endpoint: format!("http://{}", self.running().http.unwrap()),
            access_key_id: id.clone(),
            access_key_secret: Zeroizing::new(format!("{id}-secret")),
            ca_file: None,
            signing: Signing::V3,
            timeout: Duration::from_secs(10),
        })
        .unwrap()
    }

    fn restart(&mut self) {
        let r = self.running.take().unwrap();
        self.rt.block_on(r.shutdown());
        self.running = Some(self.rt.block_on(app::start(self.cfg.clone())).unwrap());
    }

    /// The audit event of a request, waiting for the writer (reads are recorded asynchronously).
    fn audit_event(&self, request_id: &str) -> AuditEvent {
        let dir = self.running().data_dir.join("audit");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found =
                audit::query(&dir, &Default::default()).unwrap().into_iter().find(|e| e.request_id == request_id);
            if let Some(e) = found {
                return e;
            }
            assert!(Instant::now() < deadline, "no audit event for request {request_id}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tags(&self, resource_type: &str, id: &str) -> Vec<(String, String)> {
        let r: ListTagResourcesResponse = self
            .client("owner")
            .call(
                "ListTagResources",
                &ListTagResourcesRequest {
                    region_id: "cn-hangzhou".into(),
                    resource_type: resource_type.into(),
                    resource_id: vec![id.into()],
                    ..Default::default()
                },
            )
            .unwrap();
        r.tag_resources.tag_resource.into_iter().map(|t| (t.tag_key, t.tag_value)).collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

fn call(c: &Client, action: &str, params: &[(&str, &str)]) -> Result<Value, ClientError> {
    c.call_params(action, params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Asserts a denial and returns its request id.
fn denied(r: Result<Value, ClientError>, what: &str) -> String {
    match r {
        Err(ClientError::Api { code, request_id, status, message }) => {
            assert_eq!((code.as_str(), status), ("Forbidden.NoPermission", 403), "{what}: {message}");
            request_id
        }
        other => panic!("{what}: expected Forbidden.NoPermission, got {other:?}"),
    }
}

use common::create_secret;

/// A blob of `plaintext` under `key`, made by `c`.
fn encrypt(c: &Client, key: &str, plaintext: &[u8]) -> Vec<u8> {
    c.encrypt(&EncryptRequest { key_id: key.into(), plaintext: SecretBytes::from(plaintext), ..Default::default() })
        .unwrap()
        .ciphertext_blob
}

const BLANKS: &[&str] = &[" ", "\t", "\n", " \r\n "];

#[test]
fn re_encrypt_checks_the_key_that_actually_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let (owner, dev) = (w.client("owner"), w.client("user:dev"));
    let prod_blob = encrypt(&owner, &w.prod_key, b"prod secret");
    let blob = encode_base64(&prod_blob);
    // The attack: a blank SourceEncryptionAlgorithm and a SourceKeyId the caller may use.
    for alg in BLANKS.iter().chain(&[""]) {
        let r = call(
            &dev,
            "ReEncrypt",
            &[
                ("CiphertextBlob", &blob),
                ("SourceKeyId", &w.dev_key),
                ("SourceEncryptionAlgorithm", alg),
                ("DestinationKeyId", &w.dev_key),
            ],
        );
        let rid = denied(r, &format!("ReEncrypt with SourceEncryptionAlgorithm={alg:?}"));
        let e = w.audit_event(&rid);
        assert!(
            e.resources.contains(&format!("{ACCOUNT_ARN}:key/{}", w.prod_key)),
            "the audit line names the key the blob names: {:?}",
            e.resources
        );
        assert_eq!(e.code, "Forbidden.NoPermission");
    }
    // A named (non-blank) asymmetric algorithm makes SourceKeyId the decrypting key: it is a
    // symmetric key here, so the call fails without decrypting anything.
    let r = call(
        &dev,
        "ReEncrypt",
        &[
            ("CiphertextBlob", &blob),
            ("SourceKeyId", &w.dev_key),
            ("SourceKeyVersionId", "00000000-0000-0000-0000-000000000000"),
            ("SourceEncryptionAlgorithm", "RSAES_OAEP_SHA_256"),
            ("DestinationKeyId", &w.dev_key),
        ],
    );
    assert!(matches!(r, Err(ClientError::Api { ref code, .. }) if code != "OK"), "{r:?}");
    // Decrypt and ExportDataKey of the prod blob are refused alike.
    denied(call(&dev, "Decrypt", &[("CiphertextBlob", &blob)]), "Decrypt of a prod blob");
    // The caller's own blob re-encrypts.
    let dev_blob = encrypt(&dev, &w.dev_key, b"dev");
    call(&dev, "ReEncrypt", &[("CiphertextBlob", &encode_base64(&dev_blob)), ("DestinationKeyId", &w.dev_key)])
        .unwrap();
}

#[test]
fn every_spelling_of_a_forbidden_key_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let (owner, dev) = (w.client("owner"), w.client("user:dev"));
    let _: Value = owner
        .call("CreateAlias", &AliasRequest { alias_name: "alias/prod".into(), key_id: w.prod_key.clone() })
        .unwrap();
    let k = &w.prod_key;
    let spellings = [
        k.clone(),
        format!(" {k}"),
        format!("{k} "),
        format!("\t{k}\n"),
        format!("{ACCOUNT_ARN}:key/{k}"),
        format!(" {ACCOUNT_ARN}:key/{k} "),
        "alias/prod".to_string(),
        " alias/prod".to_string(),
        format!("{ACCOUNT_ARN}:alias/prod"),
    ];
    let pt = encode_base64(b"hello");
    for s in &spellings {
        let rid = denied(call(&dev, "Encrypt", &[("KeyId", s), ("Plaintext", &pt)]), &format!("Encrypt {s:?}"));
        let e = w.audit_event(&rid);
        assert!(e.resources.contains(&format!("{ACCOUNT_ARN}:key/{k}")), "{s:?}: {:?}", e.resources);
        denied(call(&dev, "GenerateDataKey", &[("KeyId", s)]), &format!("GenerateDataKey {s:?}"));
        denied(call(&dev, "DisableKey", &[("KeyId", s)]), &format!("DisableKey {s:?}"));
        denied(call(&dev, "ScheduleKeyDeletion", &[("KeyId", s), ("PendingWindowInDays", "7")]), "Schedule");
        denied(call(&dev, "UpdateKeyDescription", &[("KeyId", s), ("Description", "x")]), "UpdateKeyDescription");
        denied(call(&dev, "CreateKeyVersion", &[("KeyId", s)]), "CreateKeyVersion");
    }
    let md = owner.describe_key(k).unwrap().key_metadata;
    assert_eq!((md.key_state.as_str(), md.description.as_str()), ("Enabled", ""), "nothing changed");
    // A blank KeyId is absent, never "some key".
    for b in BLANKS {
        let r = call(&dev, "Encrypt", &[("KeyId", b), ("Plaintext", &pt)]);
        assert!(matches!(r, Err(ClientError::Api { ref code, .. }) if code == "MissingParameter"), "{b:?}: {r:?}");
    }
    // Unknown keys are not confirmed to a caller who could not use them.
    denied(call(&dev, "DescribeKey", &[("KeyId", "alias/does-not-exist")]), "DescribeKey of a missing alias");
}

#[test]
fn tag_calls_act_only_on_what_they_were_authorised_for() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let (owner, dev) = (w.client("owner"), w.client("user:dev"));
    create_secret(&owner, "prod-db", "pw", None);
    for b in BLANKS {
        let tags = r#"[{"TagKey":"env","TagValue":"dev"}]"#;
        let rid = denied(
            call(&dev, "TagResource", &[("KeyId", b), ("SecretName", "prod-db"), ("Tags", tags)]),
            &format!("TagResource KeyId={b:?} on a secret"),
        );
        assert!(w.audit_event(&rid).resources.contains(&format!("{ACCOUNT_ARN}:secret/prod-db")));
        denied(
            call(&dev, "UntagResource", &[("KeyId", b), ("SecretName", "prod-db"), ("TagKeys", r#"["x"]"#)]),
            "UntagResource on a secret",
        );
        denied(
            call(
                &dev,
                "TagResources",
                &[
                    ("RegionId", "cn-hangzhou"),
                    ("ResourceType", "secret"),
                    ("ResourceId.1", "prod-db"),
                    ("Tag.1.Key", "env"),
                    ("Tag.1.Value", "dev"),
                ],
            ),
            "TagResources on a secret",
        );
    }
    assert!(w.tags("secret", "prod-db").is_empty(), "the secret was not tagged");
    // What dev may do, it can: tag a key.
    call(&dev, "TagResource", &[("KeyId", &w.dev_key), ("Tags", r#"[{"TagKey":"team","TagValue":"a"}]"#)]).unwrap();
    assert!(w.tags("key", &w.dev_key).contains(&("team".into(), "a".into())));
    // Listing every secret's tags is a question about the collection.
    denied(call(&dev, "ListTagResources", &[("RegionId", "cn-hangzhou"), ("ResourceType", "secret")]), "list");
}

#[test]
fn batch_reads_answer_per_secret_and_never_leak_a_forbidden_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let owner = w.client("owner");
    for (name, key) in [("dev-a", &w.dev_key), ("prod-a", &w.prod_key)] {
        create_secret(&owner, name, &format!("value-of-{name}"), Some(key));
    }
    let dev = w.client("user:dev");
    let v =
        call(&dev, "BatchGetSecretValue", &[("SecretsList", r#"[{"SecretName":"dev-a"},{"SecretName":"prod-a"}]"#)])
            .unwrap();
    let text = v.to_string();
    assert!(text.contains("value-of-dev-a"), "{text}");
    assert!(!text.contains("value-of-prod-a"), "{text}");
    assert!(text.contains("Forbidden.NoPermission"), "the forbidden one is an error entry: {text}");
    denied(call(&dev, "GetSecretValue", &[("SecretName", "prod-a")]), "GetSecretValue prod-a");
    denied(call(&dev, "GetSecretValue", &[("SecretName", &format!("{ACCOUNT_ARN}:secret/prod-a"))]), "by ARN");
}

#[test]
fn an_alias_moved_concurrently_never_redirects_an_authorised_call() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let owner = w.client("owner");
    let _: Value =
        owner.call("CreateAlias", &AliasRequest { alias_name: "alias/app".into(), key_id: w.dev_key.clone() }).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (dev_key, prod_key) = (w.dev_key.clone(), w.prod_key.clone());
    let (mut ok, mut refused) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut to_prod = true;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = if to_prod { &prod_key } else { &dev_key };
                let _: Value = owner
                    .call("UpdateAlias", &AliasRequest { alias_name: "alias/app".into(), key_id: k.clone() })
                    .unwrap();
                to_prod = !to_prod;
            }
        });
        let dev = w.client("user:dev");
        for _ in 0..400 {
            match dev.encrypt(&EncryptRequest {
                key_id: "alias/app".into(),
                plaintext: SecretBytes::from(&b"x"[..]),
                ..Default::default()
            }) {
                Ok(r) => {
                    assert_eq!(r.key_id, dev_key, "a success used the key that was checked");
                    ok += 1;
                }
                Err(ClientError::Api { code, request_id, .. }) => {
                    assert_eq!(code, "Forbidden.NoPermission");
                    let e = w.audit_event(&request_id);
                    assert_eq!(e.resources, [format!("{ACCOUNT_ARN}:key/{prod_key}")], "names the key it resolved");
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(ok > 0 && refused > 0, "both outcomes were exercised: {ok} ok, {refused} refused");
}

#[test]
fn service_keys_and_reserved_aliases_stay_locked() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let oss = w.client("service:oss");
    let gdk = oss.generate_data_key(&GenerateDataKeyRequest { key_id: "alias/acs/oss".into(), ..Default::default() });
    let key = gdk.unwrap().key_id;
    for who in ["owner", "service:oss"] {
        let c = w.client(who);
        for (action, params) in [
            (
                "SetDeletionProtection",
                vec![
                    ("ProtectedResourceArn", format!("{ACCOUNT_ARN}:key/{key}")),
                    ("EnableDeletionProtection", "false".into()),
                ],
            ),
            ("UpdateKeyDescription", vec![("KeyId", key.clone()), ("Description", "mine".into())]),
            ("TagResource", vec![("KeyId", key.clone()), ("Tags", r#"[{"TagKey":"env","TagValue":"dev"}]"#.into())]),
            ("DisableKey", vec![("KeyId", key.clone())]),
        ] {
            let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = call(&c, action, &p);
            assert!(r.is_err(), "{who} {action} on the service key: {r:?}");
        }
    }
    let owner = w.client("owner");
    for name in ["alias/ACS/oss2", "alias/Acs/x", "alias/acs/x"] {
        let r = call(&owner, "CreateAlias", &[("AliasName", name), ("KeyId", &w.dev_key)]);
        assert!(matches!(r, Err(ClientError::Api { ref code, .. }) if code == "InvalidParameter"), "{name}: {r:?}");
    }
}

fn post_form(w: &World, body: &str) -> (u16, Value) {
    common::post_form(&w.running().http.unwrap().to_string(), body)
}

#[test]
fn a_captured_request_is_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    let owner = w.client("owner");
    let captured = common::signed_v1("DisableKey", &[("KeyId", &w.dev_key)], "owner", "owner-secret");
    assert_eq!(post_form(&w, &captured).0, 200);
    let _: Value = owner.call("EnableKey", &KeyIdRequest { key_id: w.dev_key.clone() }).unwrap();
    let (status, body) = post_form(&w, &captured);
    assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureNonceUsed")), "replay before the restart");
    w.restart();
    let (status, body) = post_form(&w, &captured);
    assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureNonceUsed")), "replay after the restart");
    let md = w.client("owner").describe_key(&w.dev_key).unwrap().key_metadata;
    assert_eq!(md.key_state, "Enabled", "the replay changed nothing");
}

#[test]
fn every_action_dispatches_and_checks_the_permissions_its_table_entry_names() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(dir.path());
    let owner = w.client("owner");
    let blob = encode_base64(&encrypt(&owner, &w.dev_key, b"x"));
    create_secret(&owner, "s", "v", None);
    let _: Value =
        owner.call("CreateAlias", &AliasRequest { alias_name: "alias/a".into(), key_id: w.dev_key.clone() }).unwrap();
    // One superset of parameters that lets nearly every action get past decoding to the engine.
    let digest = encode_base64(&[7u8; 32]);
    let params: Vec<(&str, &str)> = vec![
        ("KeyId", &w.dev_key),
        ("KeyVersionId", "00000000-0000-0000-0000-000000000000"),
        ("AliasName", "alias/a"),
        ("SecretName", "s"),
        ("SecretData", "v2"),
        ("VersionId", "v2"),
        ("VersionStage", "stage"),
        ("SecretsList", r#"[{"SecretName":"s"}]"#),
        ("CiphertextBlob", &blob),
        ("DestinationKeyId", &w.dev_key),
        ("Plaintext", "aGk="),
        ("Digest", &digest),
        ("Value", "aGk="),
        ("Algorithm", "RSA_PSS_SHA_256"),
        ("PendingWindowInDays", "7"),
        ("Description", "d"),
        ("Tags", r#"[{"TagKey":"a","TagValue":"b"}]"#),
        ("TagKeys", r#"["a"]"#),
        ("RegionId", "cn-hangzhou"),
        ("ResourceType", "key"),
        ("ResourceId.1", &w.dev_key),
        ("Tag.1.Key", "a"),
        ("Tag.1.Value", "b"),
        ("TagKey.1", "a"),
        ("WrappingKeySpec", "RSA_2048"),
        ("WrappingAlgorithm", "RSAES_OAEP_SHA_256"),
        ("PublicKeyBlob", "aGk="),
        ("EnableAutomaticRotation", "false"),
        ("EnableDeletionProtection", "true"),
        ("ImportToken", "t"),
        ("EncryptedKeyMaterial", "aGk="),
        ("ForceDeleteWithoutRecovery", "true"),
    ];
    let nobody = w.client("user:nobody");
    let mut reached = 0;
    for spec in ACTIONS {
        let r = call(&nobody, spec.name, &params);
        match r {
            Err(ClientError::Api { code, message, .. }) if code == "Forbidden.NoPermission" => {
                assert!(
                    spec.permissions.iter().any(|p| message.contains(&format!(" {p} on "))),
                    "{}: denied for a permission its table entry does not name: {message}",
                    spec.name
                );
                reached += 1;
            }
            Err(ClientError::Api { code, .. }) => {
                assert_ne!(code, "InvalidAction.NotFound", "{} does not dispatch", spec.name);
                assert!(!spec.permissions.is_empty() || spec.name == "DescribeRegions", "{}: {code}", spec.name);
            }
            // A batch answers per item: each denied item names the permission.
            Ok(v) if v.to_string().contains("Forbidden.NoPermission") => {
                let text = v.to_string();
                assert!(spec.permissions.iter().any(|p| text.contains(&format!(" {p} on "))), "{}: {text}", spec.name);
                reached += 1;
            }
            Ok(v) => {
                assert!(spec.permissions.is_empty(), "{} succeeded for a principal with no policy: {v}", spec.name)
            }
            Err(e) => panic!("{}: {e}", spec.name),
        }
    }
    assert!(reached >= 40, "only {reached} of {} actions reached their authorisation", ACTIONS.len());
}

mod connections {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use kms_sidecar::app;
    use kms_sidecar::config::Config;
    use kms_sidecar::conn::ConnLimits;

    fn start(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> app::Running {
        let cfg = Config {
            data_dir: Some(dir.to_path_buf()),
            listen: "127.0.0.1:0".into(),
            connections: ConnLimits {
                max_connections: 8,
                header_read_timeout_secs: 1,
                idle_timeout_secs: 2,
                max_uri_bytes: 4096,
                max_header_bytes: 4096,
            },
            ..Default::default()
        };
        rt.block_on(app::start(cfg)).unwrap()
    }

    /// Reads what the server sends until it closes; (time taken, text).
    fn read_all(s: &mut TcpStream) -> (Duration, String) {
        let t = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (t.elapsed(), String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn slow_idle_and_oversized_clients_are_bounded_and_told_why() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let r = start(dir.path(), &rt);
        let addr = r.http.unwrap();

        // Slowloris: half a head, then nothing.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /?Action=DescribeRegions HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        let (took, text) = read_all(&mut s);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("\"Code\":\"RequestTimeout\""), "{text}");
        assert!(took < Duration::from_secs(4), "{took:?}");

        // A connection that never sends a byte is closed too.
        let mut s = TcpStream::connect(addr).unwrap();
        let (took, _) = read_all(&mut s);
        assert!(took < Duration::from_secs(4), "{took:?}");

        // An idle keep-alive connection after a request is closed after the idle timeout.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (took, text) = read_all(&mut s);
        assert!(text.contains("pong"), "{text}");
        assert!(took < Duration::from_secs(5), "{took:?}");

        // 414 and 431 in the JSON error shape.
        let long = "a".repeat(5000);
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /?Action=DescribeRegions&X={long} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (_, text) = read_all(&mut s);
        assert!(text.starts_with("HTTP/1.1 414") && text.contains("\"Code\":\"RequestURITooLong\""), "{text}");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n").unwrap();
        let (_, text) = read_all(&mut s);
        assert!(
            text.starts_with("HTTP/1.1 431") && text.contains("\"Code\":\"RequestHeaderFieldsTooLarge\""),
            "{text}"
        );

        // More connections than allowed: the extra ones are answered 503 and closed; the held ones
        // are released by the timeouts, after which the server serves again.
        let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = TcpStream::connect(addr).unwrap();
        let (_, text) = read_all(&mut extra);
        assert!(text.starts_with("HTTP/1.1 503") && text.contains("ServiceUnavailableTemporary"), "{text}");
        std::thread::sleep(Duration::from_secs(3));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (_, text) = read_all(&mut s);
        assert!(text.contains("pong"), "served again once the held connections timed out: {text}");
        drop(held);
        rt.block_on(r.shutdown());
    }
}
