//! The root key inside a real PKCS#11 token (SoftHSM2): generated there, sensitive and never
//! extractable (checked with `pkcs11-tool`), sealing every key version of a store that survives a
//! reopen. `.ci/setup` installs softhsm2 and opensc; `KMS_SKIP_HSM_TESTS=1` skips this on a machine
//! without them.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{list_secret_keys, open_token, softhsm, LABEL, PIN};

use kms_core::api::*;
use kms_core::crypto::token::{Token, TokenConfig, TokenOpenError, TokenRootKey};
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, OpenError, SystemClock};
use zeroize::Zeroizing;

fn engine(dir: &Path, module: &Path) -> Engine {
    let root = TokenRootKey::load_or_create(open_token(module), "kms-root-key").unwrap();
    Engine::open(EngineOptions {
        config: EngineConfig::default(),
        store: kms_core::StoreLocation::Sqlite(dir.join("kms.db")),
        node_id: "local".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: Arc::new(root),
        clock: Arc::new(SystemClock),
        token: None,
    })
    .unwrap()
}

#[test]
fn the_root_key_lives_in_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(dir.path()) else { return };
    let me = Caller::owner();
    let (ct, dk, key) = {
        let e = engine(dir.path(), &module);
        let key = e
            .create_key(&me, CreateKeyRequest { key_spec: Some("Aliyun_SM4".into()), ..Default::default() })
            .unwrap()
            .key_metadata
            .key_id;
        let rsa =
            e.create_key(&me, CreateKeyRequest { key_spec: Some("RSA_2048".into()), ..Default::default() }).unwrap();
        assert_eq!(rsa.key_metadata.key_state, "Enabled");
        let ct = e
            .encrypt(
                &me,
                EncryptRequest {
                    key_id: key.clone(),
                    plaintext: SecretBytes::from(&b"sealed by the token"[..]),
                    ..Default::default()
                },
            )
            .unwrap();
        let dk =
            e.generate_data_key(&me, GenerateDataKeyRequest { key_id: key.clone(), ..Default::default() }).unwrap();
        e.create_secret(
            &me,
            CreateSecretRequest {
                secret_name: "s".into(),
                secret_data: SecretString::new("v".into()),
                version_id: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        (ct, dk, key)
    };
    // Reopen: every version unseals through the token.
    let e = engine(dir.path(), &module);
    let back =
        e.decrypt(&me, DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() }).unwrap();
    assert_eq!((back.plaintext.expose(), back.key_id.as_str()), (&b"sealed by the token"[..], key.as_str()));
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: dk.ciphertext_blob, ..Default::default() }).unwrap().plaintext,
        dk.plaintext
    );
    assert_eq!(
        e.get_secret_value(&me, GetSecretValueRequest { secret_name: "s".into(), ..Default::default() })
            .unwrap()
            .secret_data
            .expose(),
        "v"
    );
    drop(e);

    // The token holds the key as sensitive and never extractable.
    let listing = list_secret_keys(&module);
    assert!(listing.contains("kms-root-key"), "{listing}");
    assert!(listing.contains("sensitive") && listing.contains("never extractable"), "{listing}");
    assert!(!listing.contains("  extractable"), "{listing}");

    // Another root key (a different label) cannot open the store; a wrong PIN cannot log in.
    let token = open_token(&module);
    let token_slot = token.slot_id();
    let other = TokenRootKey::load_or_create(token, "another-key").unwrap();
    let err = Engine::open(EngineOptions {
        config: EngineConfig::default(),
        store: kms_core::StoreLocation::Sqlite(dir.path().join("kms.db")),
        node_id: "local".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: Arc::new(other),
        clock: Arc::new(SystemClock),
        token: None,
    })
    .err()
    .unwrap();
    assert!(matches!(&err, OpenError::WrongRootKey(m) if m.contains("another root key")), "{err}");
    let module2 = module.clone();
    let bad = Token::open(&TokenConfig {
        module,
        token_label: LABEL.into(),
        slot: None,
        pin: Zeroizing::new("00000000".into()),
    })
    .err()
    .unwrap();
    assert!(matches!(&bad, TokenOpenError::Login(m) if m.contains("login")), "{bad}");

    // By slot id: the label then only has to match if given.
    let slot = Some(token_slot);
    let by_slot = |label: &str| {
        Token::open(&TokenConfig {
            module: module2.clone(),
            token_label: label.into(),
            slot,
            pin: Zeroizing::new(PIN.into()),
        })
    };
    assert_eq!(by_slot("").unwrap().label(), "");
    assert_eq!(by_slot(LABEL).unwrap().slot_id(), token_slot);
    let wrong = by_slot("other").err().unwrap();
    assert!(
        matches!(&wrong, TokenOpenError::Unavailable(m) if m.contains("holds token") && m.contains(LABEL)),
        "{wrong}"
    );
}
