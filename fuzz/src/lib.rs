//! What the fuzz targets share: a real engine with a few keys and a secret, made once per process
//! on tmpfs (its fsyncs cost nothing there), and the placeholders that let inputs name them.

use std::sync::{Arc, OnceLock};

use kms_core::api::Action;
use kms_core::crypto::seal::SoftwareRootKey;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, Principal, SystemClock};
use kms_sidecar::actions::dispatch;
use kms_sidecar::wire::params::Params;

pub struct World {
    pub engine: Engine,
    /// The AES key (tagged env=dev, alias `alias/fuzz`), an RSA and an EC key.
    pub aes: String,
    pub rsa: String,
    pub ec: String,
    /// A ciphertext blob under `aes` with the context {"k":"v"}, base64.
    pub blob: String,
    _dir: tempfile::TempDir,
}

/// Policies a limited principal has: dev-tagged keys only, the secret by name.
const LIMITED_POLICY: &str = r#"{"Version":"1","Statement":[
 {"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:GenerateDataKey","kms:ReEncrypt*","kms:Describe*","kms:List*"],
  "Resource":["acs:kms:*:*:key/*"],"Condition":{"StringEquals":{"kms:tag/env":"dev"}}},
 {"Effect":"Allow","Action":"kms:GetSecretValue","Resource":"acs:kms:*:*:secret/fuzz-*"}]}"#;

fn call(e: &Engine, action: &str, pairs: &[(&str, &str)]) -> serde_json::Value {
    let out = dispatch(e, &Caller::owner(), Action::parse(action).unwrap(), &Params::from_pairs(pairs.iter().copied()))
        .unwrap_or_else(|err| panic!("{action}: {err:?}"));
    serde_json::from_slice(&out).unwrap()
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let engine = Engine::open(EngineOptions {
            config: EngineConfig::default(),
            store: kms_core::StoreLocation::Sqlite(dir.path().join("kms.db")),
            node_id: "local".into(),
            store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
            protector: Arc::new(SoftwareRootKey::ephemeral()),
            clock: Arc::new(SystemClock),
            token: None,
        })
        .unwrap();
        let mut policies = kms_core::engine::PolicySet::new();
        policies.insert(
            Principal::User("limited".into()),
            vec![kms_core::policy::Policy::parse("limited", LIMITED_POLICY).unwrap()],
        );
        engine.set_policies(policies);
        let id = |v: serde_json::Value| v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
        let aes = id(call(&engine, "CreateKey", &[("Tags", r#"[{"TagKey":"env","TagValue":"dev"}]"#)]));
        let rsa = id(call(&engine, "CreateKey", &[("KeySpec", "RSA_2048"), ("KeyUsage", "ENCRYPT/DECRYPT")]));
        let ec = id(call(&engine, "CreateKey", &[("KeySpec", "EC_P256"), ("KeyUsage", "SIGN/VERIFY")]));
        call(&engine, "CreateAlias", &[("AliasName", "alias/fuzz"), ("KeyId", &aes)]);
        call(
            &engine,
            "CreateSecret",
            &[("SecretName", "fuzz-db"), ("SecretData", "pw"), ("VersionId", "v1"), ("EncryptionKeyId", &aes)],
        );
        let blob = call(
            &engine,
            "Encrypt",
            &[("KeyId", &aes), ("Plaintext", "aGVsbG8="), ("EncryptionContext", r#"{"k":"v"}"#)],
        )["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_string();
        World { engine, aes, rsa, ec, blob, _dir: dir }
    })
}

impl World {
    /// Replaces the placeholders `@AES@`, `@RSA@`, `@EC@` and `@BLOB@` with this world's values,
    /// so an input can name real resources although their ids are random per process.
    pub fn expand(&self, s: &str) -> String {
        s.replace("@AES@", &self.aes)
            .replace("@RSA@", &self.rsa)
            .replace("@EC@", &self.ec)
            .replace("@BLOB@", &self.blob)
    }
}

/// Splits an input at the first `sep`; the second part is empty when there is none.
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
