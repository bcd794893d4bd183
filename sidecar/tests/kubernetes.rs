//! The Kubernetes sockets against the real sidecar, with gRPC clients over the real Unix sockets
//! acting as kube-apiserver (KMS provider plugin v2) and as the Secrets Store CSI driver
//! (provider v1alpha1): status, round trips, rotation changing key_id with old ciphertexts still
//! decrypting, a disabled key failing health and Encrypt, annotation and key_id checks; Mount with
//! every object option, stage moves seen on the next Mount, jmesPath parts, file modes, policy
//! denials, deleted secrets; the audit trail naming uid and pod; sockets never planted.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{start_fails, Sidecar};
use kms_core::api::*;
use kms_sidecar::k8s::proto::csi::csi_driver_provider_client::CsiDriverProviderClient;
use kms_sidecar::k8s::proto::csi::{MountRequest, ObjectVersion, VersionRequest};
use kms_sidecar::k8s::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_sidecar::k8s::proto::kms_v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::transport::Channel;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn channel(path: &Path) -> Channel {
    kms_sidecar::k8s::connect(path).await.unwrap()
}

fn owner_call(s: &Sidecar, action: &str, params: &[(&str, &str)]) -> serde_json::Value {
    s.client()
        .call_params(action, params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .unwrap_or_else(|e| panic!("{action}: {e}"))
}

fn sockets() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (kms, csi) = (d.path().join("kms.sock"), d.path().join("alibabacloud.sock"));
    (d, kms, csi)
}

#[test]
fn the_kms_v2_plugin_encrypts_dek_rotates_and_reports_health() {
    let (_d, kms, _) = sockets();
    let config = format!(
        r#"
[engine.limits]
min_manual_version_interval_secs = 0

[kubernetes.kms]
socket = "{}"
key_id = "alias/k8s-secrets"
principal = "user:apiserver"

[[access_keys]]
id = "apiserverKey"
secret = "apiserverSecret"
principal = "user:apiserver"

[[policies]]
principal = "user:apiserver"
name = "etcd-encryption"
document = '''{{"Version":"1","Statement":[{{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"*"}}]}}'''
"#,
        kms.display()
    );
    let s = Sidecar::with_config(&config);
    let key = s.client().create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    owner_call(&s, "CreateAlias", &[("AliasName", "alias/k8s-secrets"), ("KeyId", &key)]);
    runtime().block_on(async {
        let mut c = KeyManagementServiceClient::new(channel(&kms).await);
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!((st.version.as_str(), st.healthz.as_str()), ("v2", "ok"));
        assert!(st.key_id.starts_with(&format!("{key}/")), "{}", st.key_id);

        let dek = vec![7u8; 32];
        let e1 = c.encrypt(EncryptRequest { plaintext: dek.clone(), uid: "uid-1".into() }).await.unwrap().into_inner();
        assert_eq!(e1.key_id, st.key_id, "the key in use, as Status says");
        assert!(e1.annotations.is_empty());
        let d = |ct: Vec<u8>, key_id: String, annotations: HashMap<String, Vec<u8>>| DecryptRequest {
            ciphertext: ct,
            uid: "uid-2".into(),
            key_id,
            annotations,
        };
        let back = c.decrypt(d(e1.ciphertext.clone(), e1.key_id.clone(), HashMap::new())).await.unwrap().into_inner();
        assert_eq!(back.plaintext, dek);

        // A ciphertext presented with another key_id, annotations that break the API's rules.
        let swapped = c.decrypt(d(e1.ciphertext.clone(), format!("{key}/other"), HashMap::new())).await.unwrap_err();
        assert_eq!(swapped.code(), tonic::Code::InvalidArgument, "{swapped}");
        let bad_key: HashMap<String, Vec<u8>> = [("NotADomain".to_string(), b"x".to_vec())].into();
        let e = c.decrypt(d(e1.ciphertext.clone(), e1.key_id.clone(), bad_key)).await.unwrap_err();
        assert!(e.message().contains("not a DNS name"), "{e}");
        let big: HashMap<String, Vec<u8>> = [("a.example.com".to_string(), vec![0; 40_000])].into();
        let e = c.decrypt(d(e1.ciphertext.clone(), e1.key_id.clone(), big)).await.unwrap_err();
        assert!(e.message().contains("32 kB"), "{e}");

        // Rotation: a new version is a new key_id, never an old one; old ciphertexts still decrypt.
        owner_call(&s, "CreateKeyVersion", &[("KeyId", &key)]);
        let st2 = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_ne!(st2.key_id, st.key_id);
        let e2 = c.encrypt(EncryptRequest { plaintext: dek.clone(), uid: "uid-3".into() }).await.unwrap().into_inner();
        assert_eq!(e2.key_id, st2.key_id);
        let old = c.decrypt(d(e1.ciphertext.clone(), e1.key_id.clone(), HashMap::new())).await.unwrap().into_inner();
        assert_eq!(old.plaintext, dek, "data written before the rotation still reads");

        // A disabled key: health says so and Encrypt is refused; enabled again, ok.
        owner_call(&s, "DisableKey", &[("KeyId", &key)]);
        let sick = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(sick.healthz != "ok" && sick.healthz.contains("Disabled"), "{}", sick.healthz);
        let refused = c.encrypt(EncryptRequest { plaintext: dek.clone(), uid: "uid-4".into() }).await.unwrap_err();
        assert!(refused.message().contains("Disabled"), "{refused}");
        owner_call(&s, "EnableKey", &[("KeyId", &key)]);
        assert_eq!(c.status(StatusRequest {}).await.unwrap().into_inner().healthz, "ok");
        // Pending deletion is not healthy either.
        owner_call(&s, "ScheduleKeyDeletion", &[("KeyId", &key), ("PendingWindowInDays", "7")]);
        let pending = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert!(pending.healthz.contains("PendingDeletion"), "{}", pending.healthz);
    });
    let dir = s.stop();
    let events = kms_sidecar::audit::query(&dir.path().join("audit"), &Default::default()).unwrap();
    let line = |uid: &str, action: &str| {
        events.iter().find(|e| e.user_agent == format!("kubernetes-kms-v2; uid={uid}") && e.action == action)
    };
    let e = line("uid-1", "Encrypt").expect("the Encrypt of uid-1 is audited");
    assert_eq!((e.principal.as_str(), e.code.as_str()), ("user:apiserver", "OK"));
    assert!(line("uid-2", "Decrypt").is_some());
    assert_eq!(line("uid-4", "Encrypt").unwrap().code, "Rejected.Disabled");
}

#[test]
fn the_kms_v2_plugin_uses_the_ack_service_key_by_default() {
    let (_d, kms, _) = sockets();
    let s = Sidecar::with_config(&format!("[kubernetes.kms]\nsocket = \"{}\"\n", kms.display()));
    runtime().block_on(async {
        let mut c = KeyManagementServiceClient::new(channel(&kms).await);
        let st = c.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.healthz, "ok", "the first poll made acs/ack");
        let e = c.encrypt(EncryptRequest { plaintext: b"dek".to_vec(), uid: "u".into() }).await.unwrap().into_inner();
        let d =
            DecryptRequest { ciphertext: e.ciphertext, uid: "u".into(), key_id: e.key_id, annotations: HashMap::new() };
        assert_eq!(c.decrypt(d).await.unwrap().into_inner().plaintext, b"dek");
    });
    let aliases = owner_call(&s, "ListAliases", &[("PageSize", "100")]);
    assert!(aliases.to_string().contains("alias/acs/ack"), "{aliases}");
    let (creator, state) = {
        let id =
            aliases["Aliases"]["Alias"].as_array().unwrap().iter().find(|a| a["AliasName"] == "alias/acs/ack").unwrap()
                ["KeyId"]
                .as_str()
                .unwrap()
                .to_string();
        let md = s.client().describe_key(&id).unwrap().key_metadata;
        (md.creator, md.key_state)
    };
    assert_eq!((creator.as_str(), state.as_str()), ("ACK", "Enabled"));
}

const CSI_POLICIES: &str = r#"
[[access_keys]]
id = "webKey"
secret = "webSecret"
principal = "user:web"

[[policies]]
principal = "user:web"
name = "shop-secrets"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:GetSecretValue","kms:Decrypt"],"Resource":["acs:kms:*:*:secret/shop-*","acs:kms:*:*:key/*"]}]}'''

[[kubernetes.csi.workloads]]
namespace = "shop"
service_account = "web"
principal = "user:web"

[[kubernetes.csi.workloads]]
namespace = "shop"
service_account = "*"
principal = "user:nobody"
"#;

fn mount_request(namespace: &str, account: &str, objects: &str, current: Vec<ObjectVersion>) -> MountRequest {
    let attrs = serde_json::json!({
        "csi.storage.k8s.io/pod.namespace": namespace,
        "csi.storage.k8s.io/serviceAccount.name": account,
        "csi.storage.k8s.io/pod.name": "web-0",
        "region": "cn-hangzhou",
        "objects": objects,
    });
    MountRequest {
        attributes: attrs.to_string(),
        secrets: "{}".into(),
        target_path: "/var/lib/kubelet/pods/x/volumes/y".into(),
        permission: "420".into(),
        current_object_version: current,
    }
}

#[test]
fn the_csi_provider_mounts_secrets_as_the_pods_principal() {
    let (_d, _, csi) = sockets();
    let s = Sidecar::with_config(&format!("[kubernetes.csi]\nsocket = \"{}\"\n{CSI_POLICIES}", csi.display()));
    let secret = |name: &str, value: &str| {
        owner_call(&s, "CreateSecret", &[("SecretName", name), ("SecretData", value), ("VersionId", "v1")]);
    };
    secret("shop-db", r#"{"username":"app","password":"p1","port":5432}"#);
    secret("shop-api", "k1");
    secret("other-x", "nope");
    secret("shop-gone", "soon");
    let arn = format!("acs:kms:cn-hangzhou:{}:secret/shop-api", "1234567890123456");
    let objects = format!(
        r#"
- objectName: shop-db
  jmesPath:
    - path: username
      objectAlias: db/user
    - path: port
      objectAlias: db/port
- objectName: "{arn}"
  objectAlias: api-key
"#
    );
    runtime().block_on(async {
        let mut c = CsiDriverProviderClient::new(channel(&csi).await);
        let v = c.version(VersionRequest { version: "v1.6.0".into() }).await.unwrap().into_inner();
        assert_eq!(v.runtime_name, "kms-sidecar");

        let m = c.mount(mount_request("shop", "web", &objects, vec![])).await.unwrap().into_inner();
        let files: HashMap<&str, (&[u8], i32)> =
            m.files.iter().map(|f| (f.path.as_str(), (f.contents.as_slice(), f.mode))).collect();
        assert_eq!(files["db_user"], (&b"app"[..], 0o644), "jmesPath part, '/' translated to '_'");
        assert_eq!(files["db_port"].0, b"5432");
        assert_eq!(files["shop-db"].0, br#"{"username":"app","password":"p1","port":5432}"#);
        assert_eq!(files["api-key"].0, b"k1", "an ARN names the secret");
        assert_eq!(m.files.len(), 4);
        let versions: HashMap<String, String> = m.object_version.iter().map(|o| (o.id.clone(), o.version.clone())).collect();
        assert_eq!(versions["api-key"], "v1");

        // Rotation: a new value moves ACSCurrent; the next Mount reports it changed, the rest not.
        owner_call(&s, "PutSecretValue", &[("SecretName", "shop-api"), ("SecretData", "k2"), ("VersionId", "v2")]);
        let again = c.mount(mount_request("shop", "web", &objects, m.object_version.clone())).await.unwrap().into_inner();
        let api = again.files.iter().find(|f| f.path == "api-key").unwrap();
        assert_eq!(api.contents, b"k2");
        let versions2: HashMap<String, String> = again.object_version.iter().map(|o| (o.id.clone(), o.version.clone())).collect();
        assert_eq!((versions2["api-key"].as_str(), versions2["shop-db"].as_str()), ("v2", "v1"));
        // A stage and a pinned version, and the file mode the driver asks for.
        let pinned = "- objectName: shop-api\n  objectVersionLabel: ACSPrevious\n  objectAlias: previous\n- objectName: shop-api\n  objectVersion: v2\n  objectAlias: pinned\n";
        let mut req = mount_request("shop", "web", pinned, vec![]);
        req.permission = "384".into();
        let p = c.mount(req).await.unwrap().into_inner();
        let f: HashMap<&str, (&[u8], i32)> = p.files.iter().map(|f| (f.path.as_str(), (f.contents.as_slice(), f.mode))).collect();
        assert_eq!((f["previous"], f["pinned"]), ((&b"k1"[..], 0o600), (&b"k2"[..], 0o600)));

        // Refusals, each failing the whole mount with the API's error and no files.
        let denied = c.mount(mount_request("shop", "web", "- objectName: other-x", vec![])).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
        assert!(denied.message().contains("Forbidden.NoPermission"), "{denied}");
        let other_sa = c.mount(mount_request("shop", "batch", "- objectName: shop-api", vec![])).await.unwrap_err();
        assert_eq!(other_sa.code(), tonic::Code::PermissionDenied, "the namespace's * maps to a principal with no policy");
        let unmapped = c.mount(mount_request("default", "web", "- objectName: shop-api", vec![])).await.unwrap_err();
        assert!(unmapped.message().contains("no [[kubernetes.csi.workloads]] entry"), "{unmapped}");
        owner_call(&s, "DeleteSecret", &[("SecretName", "shop-gone"), ("ForceDeleteWithoutRecovery", "true")]);
        let gone = c.mount(mount_request("shop", "web", &format!("{objects}- objectName: shop-gone\n"), vec![])).await.unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound, "{gone}");
        let traversal = c.mount(mount_request("shop", "web", "- objectName: shop-api\n  objectAlias: ../../etc/x", vec![])).await.unwrap_err();
        assert_eq!(traversal.code(), tonic::Code::InvalidArgument);
        let missing_part = c
            .mount(mount_request("shop", "web", "- objectName: shop-db\n  jmesPath:\n    - path: nothing\n      objectAlias: n", vec![]))
            .await
            .unwrap_err();
        assert!(missing_part.message().contains("selects nothing"), "{missing_part}");
    });
    let dir = s.stop();
    let events = kms_sidecar::audit::query(&dir.path().join("audit"), &Default::default()).unwrap();
    assert!(events.iter().any(|e| e.user_agent == "kubernetes-csi; pod=shop/web-0"
        && e.principal == "user:web"
        && e.action == "GetSecretValue"
        && e.code == "OK"));
    assert!(events.iter().any(|e| e.principal == "user:web" && e.code == "Forbidden.NoPermission"));
}

#[test]
fn sockets_are_never_planted() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("kms.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let config = data.path().join("c.toml");
    std::fs::write(&config, format!("[kubernetes.kms]\nsocket = \"{}\"\n", file.display())).unwrap();
    let (code, err) = start_fails(data.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("something other than a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket", "left alone");
    use std::os::unix::fs::PermissionsExt;
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&config, format!("[kubernetes.csi]\nsocket = \"{}\"\n", open.join("p.sock").display())).unwrap();
    let (code, err) = start_fails(data.path(), &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("writable by everyone"), "{err}");
}
