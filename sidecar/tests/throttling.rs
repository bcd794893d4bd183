//! Per-principal throttling against the real sidecar and Alibaba's own clients: a principal over
//! its rate gets 429 Rejected.Throttling with x-acs-retry-after, which py-tea turns into
//! ThrottlingException; the secrets-manager client's cache keeps serving through it; a neighbour
//! with its own rate keeps being served meanwhile.

mod common;

use std::process::Command;

use common::{workspace, Sidecar};
use kms_client::client::{Client, ClientConfig};
use kms_core::api::*;

const CONFIG: &str = r#"
[[access_keys]]
id = "noisyKey"
secret = "noisySecret"
principal = "user:noisy"

[[access_keys]]
id = "quietKey"
secret = "quietSecret"
principal = "user:quiet"

[[policies]]
principal = "user:noisy"
name = "all"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'''

[[policies]]
principal = "user:quiet"
name = "all"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'''

[throttling]
crypto_per_second = 3
secrets_per_second = 0.5
burst_seconds = 1

[throttling.principals]
"user:quiet" = { crypto_per_second = 1000 }
"#;

fn as_key(s: &Sidecar, id: &str, secret: &str) -> Client {
    Client::new(ClientConfig::with_key(&s.endpoint, id, secret)).unwrap()
}

#[test]
fn a_noisy_principal_is_throttled_its_neighbour_is_not_and_alibabas_clients_cope() {
    if kms_e2e::sdk_tests_skipped() {
        return;
    }
    let s = Sidecar::with_config(CONFIG);
    let (noisy, quiet) = (as_key(&s, "noisyKey", "noisySecret"), as_key(&s, "quietKey", "quietSecret"));
    let key = s.client().create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let enc = || EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(&b"x"[..]), ..Default::default() };

    // The noisy one spends its burst and is refused; the quiet one is served all the while.
    let mut refused = None;
    for _ in 0..50 {
        if let Err(e) = noisy.encrypt(&enc()) {
            refused = Some(e);
            break;
        }
    }
    for _ in 0..100 {
        quiet.encrypt(&enc()).expect("the neighbour is not starved");
    }
    let e = refused.expect("the noisy principal was throttled");
    assert_eq!(e.code(), Some("Rejected.Throttling"), "{e}");
    assert!(e.to_string().contains("HTTP 429") && e.to_string().contains("user:noisy"), "{e}");
    // Management actions have their own (here unlimited) budget.
    noisy.describe_key(&key).unwrap();

    // Alibaba's Python clients, as the noisy principal.
    let _: serde_json::Value = s
        .client()
        .call(
            "CreateSecret",
            &CreateSecretRequest {
                secret_name: "noisy/db".into(),
                secret_data: SecretString::new("pw".into()),
                version_id: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = Command::new(kms_e2e::venv_python())
        .arg(workspace().join("sidecar/tests/sdk/python_throttling/throttled_clients.py"))
        .env("KMS_HTTP", &s.http)
        .env("KMS_AK", "noisyKey")
        .env("KMS_SK", "noisySecret")
        .env("KMS_SECRET", "noisy/db")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(seen["tea"]["code"], "Rejected.Throttling", "{seen}");
    assert_eq!(seen["tea"]["status"], 429, "{seen}");
    let wait = seen["tea"]["retry_after"].as_u64().unwrap_or(0);
    assert!((1..=1000).contains(&wait), "py-tea read the retry-after header: {seen}");
    // The secrets-manager client does not retry a server's 429 (py-core makes it a
    // ServerException); its cache keeps serving the last value through a refused refresh.
    assert_eq!(seen["direct"], serde_json::json!(["pw", "Rejected.Throttling"]), "{seen}");
    assert_eq!(seen["cached"], serde_json::json!(["pw", "pw"]), "{seen}");
}

#[test]
fn rates_are_reloaded_on_sighup_and_a_broken_file_changes_nothing() {
    let tight = CONFIG.replace("crypto_per_second = 3\n", "crypto_per_second = 0.01\n");
    let s = Sidecar::with_config(&tight);
    let noisy = as_key(&s, "noisyKey", "noisySecret");
    let key = s.client().create_key(&CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let enc = || EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(&b"x"[..]), ..Default::default() };
    noisy.encrypt(&enc()).expect("the one request of its burst");
    assert_eq!(noisy.encrypt(&enc()).unwrap_err().code(), Some("Rejected.Throttling"));

    // Unlimited for everyone now: in force once the signal is handled.
    let config = s.dir.path().join("sidecar.toml");
    std::fs::write(&config, CONFIG.replace("crypto_per_second = 3\n", "crypto_per_second = 0\n")).unwrap();
    s.signal("HUP");
    let t0 = std::time::Instant::now();
    while noisy.encrypt(&enc()).is_err() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the new rates never came into force");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for _ in 0..50 {
        noisy.encrypt(&enc()).expect("unlimited after the reload");
    }

    // A file with a bad rate: the reload is refused and the rates in force stay.
    std::fs::write(&config, CONFIG.replace("crypto_per_second = 3\n", "crypto_per_second = -1\n")).unwrap();
    s.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..50 {
        noisy.encrypt(&enc()).expect("still unlimited: the broken file changed nothing");
    }
}
