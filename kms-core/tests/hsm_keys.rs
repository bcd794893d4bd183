//! Keys with ProtectionLevel HSM in a real PKCS#11 token (SoftHSM2): AES-256 generated and used
//! inside the token, never readable out of it; new versions are new token objects; deletion
//! destroys them; specs the token cannot do are refused naming what is missing.

mod common;

use std::sync::Arc;

use common::{close_all_sessions, hsm_engine, list_secret_keys, open_token, softhsm};
use cryptoki::object::AttributeType;
use kms_core::api::*;
use kms_core::clock::{ManualClock, DAY};
use kms_core::crypto::seal::SoftwareRootKey;
use kms_core::crypto::token::Token;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, ErrorCode};

fn open(dir: &std::path::Path, module: &std::path::Path, clock: Arc<ManualClock>) -> (Engine, Arc<Token>) {
    let token = open_token(module);
    (hsm_engine(dir, token.clone(), clock), token)
}

#[test]
fn hsm_protected_symmetric_keys() {
    let dir = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(dir.path()) else { return };
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let me = Caller::owner();
    let hsm_key = |e: &Engine, spec: &str| {
        e.create_key(
            &me,
            CreateKeyRequest {
                key_spec: Some(spec.into()),
                protection_level: Some("HSM".into()),
                ..Default::default()
            },
        )
    };
    let (e, token) = open(dir.path(), &module, clock.clone());
    let md = hsm_key(&e, "Aliyun_AES_256").unwrap().key_metadata;
    assert_eq!(md.protection_level, "HSM");
    let key = md.key_id.clone();
    let ctx = Some(r#"{"app":"hsm"}"#.to_string());
    let ct = e
        .encrypt(
            &me,
            EncryptRequest {
                key_id: key.clone(),
                plaintext: SecretBytes::from(&b"inside the token"[..]),
                encryption_context: ctx.clone(),
                dry_run: false,
            },
        )
        .unwrap();
    let back = e
        .decrypt(
            &me,
            DecryptRequest {
                ciphertext_blob: ct.ciphertext_blob.clone(),
                encryption_context: ctx.clone(),
                dry_run: false,
            },
        )
        .unwrap();
    assert_eq!(back.plaintext.expose(), b"inside the token");
    let wrong = e.decrypt(
        &me,
        DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), encryption_context: None, dry_run: false },
    );
    assert_eq!(wrong.unwrap_err().code(), ErrorCode::InvalidParameter, "the token checks the tag and the context");
    let dk = e
        .generate_data_key(
            &me,
            GenerateDataKeyRequest { key_id: key.clone(), number_of_bytes: Some(24), ..Default::default() },
        )
        .unwrap();
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: dk.ciphertext_blob.clone(), ..Default::default() })
            .unwrap()
            .plaintext,
        dk.plaintext
    );
    // Between software and HSM keys.
    let soft = e.create_key(&me, CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let to_soft = e
        .re_encrypt(
            &me,
            ReEncryptRequest {
                ciphertext_blob: ct.ciphertext_blob.clone(),
                destination_key_id: soft,
                source_encryption_context: ctx.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    let to_hsm = e
        .re_encrypt(
            &me,
            ReEncryptRequest {
                ciphertext_blob: to_soft.ciphertext_blob,
                destination_key_id: key.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: to_hsm.ciphertext_blob, ..Default::default() })
            .unwrap()
            .plaintext
            .expose(),
        b"inside the token"
    );
    // A new version is a new token object; the old one still decrypts.
    let v2 = e.create_key_version(&me, &key).unwrap().key_version.key_version_id;
    let ct2 = e
        .encrypt(
            &me,
            EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(&b"v2"[..]), ..Default::default() },
        )
        .unwrap();
    assert_eq!(ct2.key_version_id, v2);
    // Specs the token cannot hold, named.
    let sm4 = hsm_key(&e, "Aliyun_SM4").unwrap_err();
    assert_eq!(sm4.code(), ErrorCode::UnsupportedProtectionLevel);
    assert!(sm4.message().contains("SM4"), "{}", sm4.message());
    assert_eq!(hsm_key(&e, "EC_SM2").unwrap_err().code(), ErrorCode::UnsupportedProtectionLevel);

    // The token refuses to reveal the key; pkcs11-tool agrees it is sensitive, never extractable.
    let label = format!("kms-key-version:{}", md.primary_key_version);
    let handle = token.find_secret_key(&label).unwrap().expect("the version's token object");
    let attrs = token.session().unwrap().get_attributes(handle, &[AttributeType::Value]).unwrap_or_default();
    assert!(attrs.is_empty(), "CKA_VALUE must not be readable: {attrs:?}");
    let listing = list_secret_keys(&module);
    assert!(listing.contains(&label), "{listing}");
    assert_eq!(listing.matches("never extractable").count(), 2, "both versions: {listing}");
    drop(e);

    // Reopen: old ciphertexts decrypt through the token; the store holds only references.
    let (e, token) = open(dir.path(), &module, clock.clone());
    assert_eq!(
        e.decrypt(
            &me,
            DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), encryption_context: ctx, dry_run: false }
        )
        .unwrap()
        .plaintext
        .expose(),
        b"inside the token"
    );
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: ct2.ciphertext_blob.clone(), ..Default::default() })
            .unwrap()
            .plaintext
            .expose(),
        b"v2"
    );

    // The module drops every session of this process (as when a device reconnects or the module is
    // reset): pooled sessions and the login are gone; the next calls reconnect instead of failing.
    close_all_sessions(&module);
    let again = e
        .encrypt(
            &me,
            EncryptRequest {
                key_id: key.clone(),
                plaintext: SecretBytes::from(&b"after reset"[..]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: again.ciphertext_blob, ..Default::default() })
            .unwrap()
            .plaintext
            .expose(),
        b"after reset"
    );
    close_all_sessions(&module);
    assert!(e
        .decrypt(&me, DecryptRequest { ciphertext_blob: ct2.ciphertext_blob.clone(), ..Default::default() })
        .is_ok());

    // The token goes away (its object store vanishes): clean 503s, no other error. When it comes
    // back, the next call resets the module and succeeds – no restart.
    let enc = |m: &'static [u8]| {
        e.encrypt(&me, EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(m), ..Default::default() })
    };
    std::fs::rename(dir.path().join("tokens"), dir.path().join("tokens.away")).unwrap();
    assert_eq!(enc(b"away").unwrap_err().code(), ErrorCode::ServiceUnavailableTemporary);
    let gone = e.decrypt(&me, DecryptRequest { ciphertext_blob: ct2.ciphertext_blob.clone(), ..Default::default() });
    assert_eq!(gone.unwrap_err().code(), ErrorCode::ServiceUnavailableTemporary);
    std::fs::rename(dir.path().join("tokens.away"), dir.path().join("tokens")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // one reset per second at most
    let back = enc(b"back").unwrap();
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: back.ciphertext_blob, ..Default::default() })
            .unwrap()
            .plaintext
            .expose(),
        b"back"
    );

    // Automatic rotation makes a new token object, and the old version still decrypts.
    let auto = e
        .create_key(
            &me,
            CreateKeyRequest {
                protection_level: Some("HSM".into()),
                enable_automatic_rotation: Some(true),
                rotation_interval: Some("604800s".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    let before = e
        .encrypt(
            &me,
            EncryptRequest {
                key_id: auto.key_id.clone(),
                plaintext: SecretBytes::from(&b"v1"[..]),
                ..Default::default()
            },
        )
        .unwrap();
    clock.advance(7 * DAY + 1);
    let report = e.run_maintenance();
    let (_, rotated) = report.rotated.iter().find(|(k, _)| k == &auto.key_id).expect("rotated by maintenance");
    assert!(token.find_secret_key(&format!("kms-key-version:{rotated}")).unwrap().is_some());
    let after = e
        .encrypt(
            &me,
            EncryptRequest {
                key_id: auto.key_id.clone(),
                plaintext: SecretBytes::from(&b"v2"[..]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(&after.key_version_id, rotated);
    assert_eq!(
        e.decrypt(&me, DecryptRequest { ciphertext_blob: before.ciphertext_blob, ..Default::default() })
            .unwrap()
            .plaintext
            .expose(),
        b"v1"
    );

    // Deletion destroys the token objects.
    for k in [&key, &auto.key_id] {
        e.schedule_key_deletion(&me, ScheduleKeyDeletionRequest { key_id: k.clone(), pending_window_in_days: Some(7) })
            .unwrap();
    }
    clock.advance(7 * DAY);
    let mut deleted = e.run_maintenance().deleted;
    deleted.sort();
    let mut both = vec![key.clone(), auto.key_id.clone()];
    both.sort();
    assert_eq!(deleted, both);
    assert!(token.find_secret_key(&label).unwrap().is_none(), "the token object is gone");
    assert!(!list_secret_keys(&module).contains("kms-key-version:"));

    drop(e);

    // An engine without the token refuses a store that has HSM keys it cannot reach.
    let (e2, _) = open(dir.path(), &module, clock.clone());
    let k = e2
        .create_key(&me, CreateKeyRequest { protection_level: Some("HSM".into()), ..Default::default() })
        .unwrap()
        .key_metadata
        .key_id;
    drop(e2);
    let err = Engine::open(EngineOptions {
        config: EngineConfig::default(),
        store: kms_core::StoreLocation::Sqlite(dir.path().join("kms.db")),
        node_id: "local".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: Arc::new(SoftwareRootKey::load_or_create(&dir.path().join("root.key")).unwrap()),
        clock,
        token: None,
    })
    .err()
    .unwrap();
    assert!(matches!(&err, kms_core::OpenError::Failed(m) if m.contains(&k)), "{err}");
}
