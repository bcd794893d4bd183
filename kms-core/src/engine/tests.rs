//! Engine behaviour, with a manual clock and a real SQLite file in a temporary directory – or, with
//! `KMS_TEST_STORE=postgres`, a fresh database on a throw-away PostgreSQL cluster: the same tests
//! run on both backends (`.ci/run` runs them twice).

use std::sync::Arc;

use super::*;
use crate::api::*;
use crate::clock::{ManualClock, DAY};
use crate::test_store::{options, stored_files};
use crate::ErrorCode as E;
use crate::Limits;

const T0: i64 = 1_700_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine,
}

fn fixture_with(config: EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::open(options(dir.path(), clock.clone(), config)).unwrap();
    Fixture { dir, clock, engine }
}

fn fixture() -> Fixture {
    fixture_with(EngineConfig::default())
}

fn owner() -> Caller {
    Caller::owner()
}

impl Fixture {
    fn create(&self, spec: &str) -> String {
        let req = CreateKeyRequest { key_spec: Some(spec.into()), ..Default::default() };
        self.engine.create_key(&owner(), req).unwrap().key_metadata.key_id
    }

    fn create_external(&self) -> String {
        let req = CreateKeyRequest { origin: Some("EXTERNAL".into()), ..Default::default() };
        self.engine.create_key(&owner(), req).unwrap().key_metadata.key_id
    }

    fn describe(&self, id: &str) -> KeyMetadata {
        self.engine.describe_key(&owner(), id).unwrap().key_metadata
    }

    fn encrypt(&self, key: &str, pt: &[u8], ctx: Option<&str>) -> Result<EncryptResponse> {
        self.engine.encrypt(
            &owner(),
            EncryptRequest {
                key_id: key.into(),
                plaintext: SecretBytes::from(pt),
                encryption_context: ctx.map(Into::into),
                dry_run: false,
            },
        )
    }

    fn decrypt(&self, blob: &[u8], ctx: Option<&str>) -> Result<DecryptResponse> {
        self.engine.decrypt(
            &owner(),
            DecryptRequest { ciphertext_blob: blob.to_vec(), encryption_context: ctx.map(Into::into), dry_run: false },
        )
    }

    fn gdk(&self, key: &str, spec: Option<&str>, n: Option<i64>) -> Result<GenerateDataKeyResponse> {
        self.engine.generate_data_key(
            &owner(),
            GenerateDataKeyRequest {
                key_id: key.into(),
                key_spec: spec.map(Into::into),
                number_of_bytes: n,
                ..Default::default()
            },
        )
    }

    fn schedule(&self, key: &str, days: i64) -> Result<()> {
        self.engine.schedule_key_deletion(
            &owner(),
            ScheduleKeyDeletionRequest { key_id: key.into(), pending_window_in_days: Some(days) },
        )
    }

    fn key_count(&self) -> usize {
        self.engine.stored_key_count()
    }
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> E {
    r.expect_err("expected an error").code()
}

// ---------------------------------------------------------------- keys

#[test]
fn create_key_fills_every_metadata_field() {
    let f = fixture();
    let md = f.engine.create_key(&owner(), CreateKeyRequest::default()).unwrap().key_metadata;
    assert!(md.key_id.starts_with("key-"));
    assert_eq!(md.arn, format!("acs:kms:cn-hangzhou:1234567890123456:key/{}", md.key_id));
    assert_eq!(md.key_spec, "Aliyun_AES_256");
    assert_eq!(md.key_usage, "ENCRYPT/DECRYPT");
    assert_eq!(md.key_state, "Enabled");
    assert_eq!(md.origin, "Aliyun_KMS");
    assert_eq!(md.protection_level, "SOFTWARE");
    assert_eq!(md.creator, "1234567890123456");
    assert_eq!(md.creation_date, crate::clock::format_iso(T0));
    assert_eq!(md.last_rotation_date, md.creation_date);
    assert_eq!(md.automatic_rotation, "Disabled");
    assert_eq!((md.rotation_interval.as_str(), md.next_rotation_date.as_str()), ("", ""));
    assert_eq!((md.delete_date.as_str(), md.material_expire_time.as_str()), ("", ""));
    assert!(Uuid::parse_str(&md.primary_key_version).is_ok());
    assert_eq!(md.deletion_protection, None, "CreateKey omits the deletion-protection fields");
    let d = f.describe(&md.key_id);
    assert_eq!(d.deletion_protection.as_deref(), Some("Disabled"));
    assert_eq!(d.key_id, md.key_id);
}

#[test]
fn create_key_rejects_bad_input_and_changes_nothing() {
    let f = fixture_with(EngineConfig { limits: Limits { max_keys: 1, ..Default::default() }, ..Default::default() });
    let cases: Vec<(CreateKeyRequest, E, &str)> = vec![
        (CreateKeyRequest { key_spec: Some("AES_256".into()), ..Default::default() }, E::InvalidParameter, "KeySpec"),
        (
            CreateKeyRequest { key_spec: Some("aliyun_aes_256".into()), ..Default::default() },
            E::InvalidParameter,
            "KeySpec",
        ),
        (
            CreateKeyRequest {
                key_spec: Some("RSA_2048".into()),
                enable_automatic_rotation: Some(true),
                ..Default::default()
            },
            E::UnsupportedOperation,
            "RSA_2048",
        ),
        (
            CreateKeyRequest {
                key_spec: Some("EC_P256".into()),
                key_usage: Some("ENCRYPT/DECRYPT".into()),
                ..Default::default()
            },
            E::InvalidParameter,
            "KeyUsage",
        ),
        (
            CreateKeyRequest { key_spec: Some("EC_SM2".into()), origin: Some("EXTERNAL".into()), ..Default::default() },
            E::UnsupportedOrigin,
            "EC_SM2",
        ),
        (
            CreateKeyRequest { key_usage: Some("SIGN/VERIFY".into()), ..Default::default() },
            E::InvalidParameter,
            "KeyUsage",
        ),
        (CreateKeyRequest { key_usage: Some("ENCRYPT".into()), ..Default::default() }, E::InvalidParameter, "KeyUsage"),
        (CreateKeyRequest { origin: Some("external".into()), ..Default::default() }, E::InvalidParameter, "Origin"),
        (
            CreateKeyRequest { protection_level: Some("HSM".into()), ..Default::default() },
            E::UnsupportedProtectionLevel,
            "HSM",
        ),
        (
            CreateKeyRequest { protection_level: Some("GOLD".into()), ..Default::default() },
            E::InvalidParameter,
            "ProtectionLevel",
        ),
        (
            CreateKeyRequest { description: Some("x".repeat(8193)), ..Default::default() },
            E::InvalidParameter,
            "Description",
        ),
        (
            CreateKeyRequest {
                enable_automatic_rotation: Some(true),
                rotation_interval: Some("6d".into()),
                ..Default::default()
            },
            E::InvalidParameter,
            "RotationInterval",
        ),
        (
            CreateKeyRequest {
                enable_automatic_rotation: Some(true),
                rotation_interval: Some("731d".into()),
                ..Default::default()
            },
            E::InvalidParameter,
            "RotationInterval",
        ),
        (
            CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                enable_automatic_rotation: Some(true),
                ..Default::default()
            },
            E::UnsupportedOrigin,
            "EXTERNAL",
        ),
        (
            CreateKeyRequest { dkms_instance_id: Some("kst-1".into()), ..Default::default() },
            E::InvalidParameter,
            "DKMSInstanceId",
        ),
    ];
    for (req, want, mentions) in cases {
        let e = f.engine.create_key(&owner(), req.clone()).unwrap_err();
        assert_eq!(e.code(), want, "{req:?}");
        assert!(e.message().contains(mentions), "{} should mention {mentions}", e.message());
        assert_eq!(f.key_count(), 0);
    }
    f.create("Aliyun_SM4");
    let e = f.engine.create_key(&owner(), CreateKeyRequest::default()).unwrap_err();
    assert_eq!((e.code(), e.http_status()), (E::LimitExceeded, 400));
    assert_eq!(f.key_count(), 1);
}

#[test]
fn description_updates_and_unknown_keys_are_not_found() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    f.engine.update_key_description(&owner(), &k, "密钥 ✓ a+b=c&d").unwrap();
    assert_eq!(f.describe(&k).description, "密钥 ✓ a+b=c&d");
    assert_eq!(code(f.engine.describe_key(&owner(), "key-doesnotexist")), E::KeyNotFound);
    assert_eq!(code(f.engine.describe_key(&owner(), "alias/none")), E::AliasNotFound);
    assert_eq!(code(f.engine.describe_key(&owner(), "")), E::MissingParameter);
    assert_eq!(code(f.engine.enable_key(&owner(), "key-nope")), E::KeyNotFound);
}

#[test]
fn list_keys_pages_and_filters() {
    let f = fixture();
    let mut ids = Vec::new();
    for i in 0..5 {
        f.clock.advance(1);
        ids.push(f.create(if i % 2 == 0 { "Aliyun_AES_256" } else { "Aliyun_SM4" }));
    }
    f.engine.disable_key(&owner(), &ids[0]).unwrap();
    let list = |filters: Option<&str>, n, size| {
        f.engine
            .list_keys(&owner(), ListKeysRequest { filters: filters.map(Into::into), page_number: n, page_size: size })
    };
    let p = list(None, Some(2), Some(2)).unwrap();
    assert_eq!((p.total_count, p.page_number, p.page_size), (5, 2, 2));
    let got: Vec<_> = p.keys.key.iter().map(|k| k.key_id.clone()).collect();
    assert_eq!(got, ids[2..4]);
    assert!(p.keys.key[0].key_arn.ends_with(&ids[2]));
    let sm4 = list(Some(r#"[{"Key":"KeySpec","Values":["Aliyun_SM4"]}]"#), None, None).unwrap();
    assert_eq!(sm4.total_count, 2);
    let both = list(
        Some(
            r#"[{"Key":"KeyState","Values":["Disabled"]},{"Key":"KeySpec","Values":["Aliyun_AES_256","Aliyun_SM4"]}]"#,
        ),
        None,
        None,
    )
    .unwrap();
    assert_eq!(both.keys.key.len(), 1);
    assert_eq!(both.keys.key[0].key_id, ids[0]);
    for bad in [
        r#"{"Key":"KeyState"}"#,
        r#"[{"Key":"Color","Values":["red"]}]"#,
        r#"[{"Key":"KeyState","Values":["On"]}]"#,
        r#"[{"Key":"KeyState","Values":[]}]"#,
    ] {
        assert_eq!(code(list(Some(bad), None, None)), E::InvalidParameter, "{bad}");
    }
    assert_eq!(code(list(None, Some(0), None)), E::InvalidParameter);
    assert_eq!(code(list(None, None, Some(101))), E::InvalidParameter);
}

// ---------------------------------------------------------------- crypto

#[test]
fn encrypt_decrypt_round_trip_for_both_specs() {
    let f = fixture();
    for spec in ["Aliyun_AES_256", "Aliyun_SM4"] {
        let k = f.create(spec);
        let ct = f.encrypt(&k, b"hello kms", Some(r#"{"purpose": "demo", "env": "dev"}"#)).unwrap();
        assert_eq!(ct.key_id, k);
        assert_eq!(ct.key_version_id, f.describe(&k).primary_key_version);
        let pt = f.decrypt(&ct.ciphertext_blob, Some(r#"{"env":"dev","purpose":"demo"}"#)).unwrap();
        assert_eq!(pt.plaintext.expose(), b"hello kms");
        assert_eq!((pt.key_id.as_str(), pt.key_version_id.as_str()), (k.as_str(), ct.key_version_id.as_str()));
    }
}

#[test]
fn wrong_or_missing_context_fails_to_decrypt() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    let ct = f.encrypt(&k, b"secret", Some(r#"{"a":"b"}"#)).unwrap().ciphertext_blob;
    for bad in [None, Some("{}"), Some(r#"{"a":"c"}"#), Some(r#"{"a":"b","x":"y"}"#), Some(r#"{"A":"b"}"#)] {
        let e = f.decrypt(&ct, bad).unwrap_err();
        assert_eq!(e.code(), E::InvalidParameter, "{bad:?}");
        assert!(e.message().contains("EncryptionContext"), "{}", e.message());
    }
    let plain = f.encrypt(&k, b"secret", None).unwrap().ciphertext_blob;
    assert!(f.decrypt(&plain, Some("{}")).is_ok(), "an empty context equals none");
    assert_eq!(code(f.decrypt(&plain, Some(r#"{"a":"b"}"#))), E::InvalidParameter);
    assert_eq!(code(f.decrypt(&plain, Some(r#"{"a":1}"#))), E::InvalidParameter);
}

#[test]
fn every_flipped_byte_of_a_blob_is_rejected() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    let ct = f.encrypt(&k, b"tamper me", Some(r#"{"k":"v"}"#)).unwrap().ciphertext_blob;
    for i in 0..ct.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = ct.clone();
            t[i] ^= bit;
            let e = f.decrypt(&t, Some(r#"{"k":"v"}"#)).unwrap_err();
            assert!(
                matches!(e.code(), E::InvalidParameter | E::KeyNotFound | E::KeyVersionNotFound),
                "byte {i}: {e:?}"
            );
        }
    }
    assert_eq!(code(f.decrypt(&ct[..ct.len() - 1], Some(r#"{"k":"v"}"#))), E::InvalidParameter);
    assert_eq!(code(f.decrypt(b"", None)), E::MissingParameter);
    assert_eq!(code(f.decrypt(b"random garbage that is long enough to parse", None)), E::InvalidParameter);
}

#[test]
fn size_limits_are_enforced() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    assert!(f.encrypt(&k, &[7u8; 6144], None).is_ok());
    let e = f.encrypt(&k, &[7u8; 6145], None).unwrap_err();
    assert_eq!(e.code(), E::InvalidParameter);
    assert!(e.message().contains("Plaintext"));
    assert_eq!(code(f.encrypt(&k, b"", None)), E::InvalidParameter);
    let big = format!(r#"{{"k":"{}"}}"#, "v".repeat(8186));
    assert_eq!(big.chars().count(), 8194);
    assert_eq!(code(f.encrypt(&k, b"x", Some(&big))), E::InvalidParameter);
    let ok = format!(r#"{{"k":"{}"}}"#, "v".repeat(8184));
    let ct = f.encrypt(&k, b"x", Some(&ok)).unwrap();
    assert!(f.decrypt(&ct.ciphertext_blob, Some(&ok)).is_ok());
}

#[test]
fn generate_data_key_lengths_and_round_trip() {
    let f = fixture();
    let k = f.create("Aliyun_SM4");
    for (spec, n, want) in [
        (None, None, 32),
        (Some("AES_128"), None, 16),
        (Some("AES_256"), None, 32),
        (None, Some(1), 1),
        (None, Some(1024), 1024),
        (Some("AES_128"), Some(24), 24),
    ] {
        let dk = f.gdk(&k, spec, n).unwrap();
        assert_eq!(dk.plaintext.len(), want, "{spec:?} {n:?}");
        let back = f.decrypt(&dk.ciphertext_blob, None).unwrap();
        assert_eq!(back.plaintext.expose(), dk.plaintext.expose());
    }
    assert_ne!(f.gdk(&k, None, None).unwrap().plaintext, f.gdk(&k, None, None).unwrap().plaintext);
    assert_eq!(code(f.gdk(&k, None, Some(0))), E::InvalidParameter);
    assert_eq!(code(f.gdk(&k, None, Some(1025))), E::InvalidParameter);
    assert_eq!(code(f.gdk(&k, Some("AES_512"), None)), E::InvalidParameter);
    let wp = f
        .engine
        .generate_data_key_without_plaintext(
            &owner(),
            GenerateDataKeyRequest {
                key_id: k.clone(),
                encryption_context: Some(r#"{"vol":"1"}"#.into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(f.decrypt(&wp.ciphertext_blob, Some(r#"{"vol":"1"}"#)).unwrap().plaintext.len(), 32);
}

#[test]
fn re_encrypt_moves_a_ciphertext_between_keys() {
    let f = fixture();
    let a = f.create("Aliyun_AES_256");
    let b = f.create("Aliyun_SM4");
    let ct = f.encrypt(&a, b"move me", Some(r#"{"s":"1"}"#)).unwrap().ciphertext_blob;
    let req = |src_ctx: Option<&str>| ReEncryptRequest {
        ciphertext_blob: ct.clone(),
        destination_key_id: b.clone(),
        source_encryption_context: src_ctx.map(Into::into),
        destination_encryption_context: Some(r#"{"d":"2"}"#.into()),
        ..Default::default()
    };
    let moved = f.engine.re_encrypt(&owner(), req(Some(r#"{"s":"1"}"#))).unwrap();
    assert_eq!(moved.key_id, b);
    assert_eq!(f.decrypt(&moved.ciphertext_blob, Some(r#"{"d":"2"}"#)).unwrap().plaintext.expose(), b"move me");
    assert_eq!(code(f.engine.re_encrypt(&owner(), req(None))), E::InvalidParameter);
    f.engine.disable_key(&owner(), &b).unwrap();
    assert_eq!(code(f.engine.re_encrypt(&owner(), req(Some(r#"{"s":"1"}"#)))), E::Disabled);
}

#[test]
fn dry_run_validates_without_acting() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    let e = f
        .engine
        .encrypt(
            &owner(),
            EncryptRequest {
                key_id: k.clone(),
                plaintext: SecretBytes::from(&b"x"[..]),
                encryption_context: None,
                dry_run: true,
            },
        )
        .unwrap_err();
    assert_eq!((e.code().code(), e.http_status()), ("DryRunOperationError", 400));
    f.engine.disable_key(&owner(), &k).unwrap();
    let e = f
        .engine
        .encrypt(
            &owner(),
            EncryptRequest {
                key_id: k,
                plaintext: SecretBytes::from(&b"x"[..]),
                encryption_context: None,
                dry_run: true,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), E::Disabled, "a dry run reports what the real call would hit");
}

// ---------------------------------------------------------------- the key-state matrix (API.md §5)

#[derive(Debug, Clone, Copy, PartialEq)]
enum S {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
}

/// A key in state `s`, an alias on it, and (where the key has material) a ciphertext under it.
fn key_in_state(f: &Fixture, s: S) -> (String, String, Option<Vec<u8>>) {
    let k = if s == S::PendingImport { f.create_external() } else { f.create("Aliyun_AES_256") };
    let alias = format!("alias/m-{}", &k[4..]);
    f.engine.create_alias(&owner(), &alias, &k).unwrap();
    let blob = (s != S::PendingImport).then(|| f.encrypt(&k, b"x", None).unwrap().ciphertext_blob);
    match s {
        S::Enabled | S::PendingImport => {}
        S::Disabled => f.engine.disable_key(&owner(), &k).unwrap(),
        S::PendingDeletion => f.schedule(&k, 7).unwrap(),
    }
    (k, alias, blob)
}

#[test]
fn key_state_matrix() {
    use E::*;
    type Op = fn(&Fixture, &str, &str, Option<&[u8]>, &str) -> Result<()>;
    let ok = None;
    // (API, operation, expected outcome per state: Enabled, Disabled, PendingDeletion, PendingImport)
    let table: Vec<(&str, Op, [Option<E>; 4])> = vec![
        (
            "Encrypt",
            |f, k, _, _, _| f.encrypt(k, b"p", None).map(drop),
            [ok, Some(Disabled), Some(PendingDeletion), Some(PendingImport)],
        ),
        (
            "GenerateDataKey",
            |f, k, _, _, _| f.gdk(k, None, None).map(drop),
            [ok, Some(Disabled), Some(PendingDeletion), Some(PendingImport)],
        ),
        (
            "Decrypt",
            |f, _, _, b, _| match b {
                Some(b) => f.decrypt(b, None).map(drop),
                None => Err(KmsError::new(PendingImport)), // no ciphertext can exist without material
            },
            [ok, Some(Disabled), Some(PendingDeletion), Some(PendingImport)],
        ),
        ("DescribeKey", |f, k, _, _, _| f.engine.describe_key(&owner(), k).map(drop), [ok; 4]),
        (
            "ListKeys",
            |f, k, _, _, _| {
                let l = f.engine.list_keys(&owner(), ListKeysRequest { page_size: Some(100), ..Default::default() })?;
                assert!(l.keys.key.iter().any(|e| e.key_id == k));
                Ok(())
            },
            [ok; 4],
        ),
        ("ListAliases", |f, _, _, _, _| f.engine.list_aliases(&owner(), PageRequest::default()).map(drop), [ok; 4]),
        ("DeleteAlias", |f, _, a, _, _| f.engine.delete_alias(&owner(), a), [ok; 4]),
        (
            "EnableKey",
            |f, k, _, _, _| f.engine.enable_key(&owner(), k),
            [ok, ok, Some(StateModifiedFailed), Some(StateModifiedFailed)],
        ),
        (
            "DisableKey",
            |f, k, _, _, _| f.engine.disable_key(&owner(), k),
            [ok, ok, Some(StateModifiedFailed), Some(StateModifiedFailed)],
        ),
        ("ScheduleKeyDeletion", |f, k, _, _, _| f.schedule(k, 30), [ok, ok, Some(StateModifiedFailed), ok]),
        (
            "CancelKeyDeletion",
            |f, k, _, _, _| f.engine.cancel_key_deletion(&owner(), k),
            [Some(StateModifiedFailed), Some(StateModifiedFailed), ok, Some(StateModifiedFailed)],
        ),
        (
            "CreateAlias",
            |f, k, _, _, _| f.engine.create_alias(&owner(), &format!("alias/new-{}", &k[4..]), k),
            [ok, ok, Some(StateModifiedFailed), ok],
        ),
        (
            "UpdateAlias(target)",
            |f, k, _, _, other_alias| f.engine.update_alias(&owner(), other_alias, k),
            [ok, ok, Some(PendingDeletion), ok],
        ),
    ];
    let states = [S::Enabled, S::Disabled, S::PendingDeletion, S::PendingImport];
    for (api, op, expect) in &table {
        for (i, s) in states.iter().enumerate() {
            let f = fixture();
            let (k, alias, blob) = key_in_state(&f, *s);
            // A second alias, on an Enabled key of the same kind, for UpdateAlias to re-point.
            let other = if *s == S::PendingImport { f.create_external() } else { f.create("Aliyun_AES_256") };
            let other_alias = format!("alias/o-{}", &other[4..]);
            f.engine.create_alias(&owner(), &other_alias, &other).unwrap();
            let before = f.describe(&k);
            let got = op(&f, &k, &alias, blob.as_deref(), &other_alias);
            match (expect[i], got) {
                (None, Ok(())) => {}
                (Some(want), Err(e)) => {
                    assert_eq!(e.code(), want, "{api} in {s:?}: {e:?}");
                    assert_eq!(e.http_status(), want.http_status());
                    assert_eq!(f.describe(&k), before, "{api} in {s:?} failed but changed the key");
                }
                (want, got) => panic!("{api} in {s:?}: expected {want:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn state_errors_carry_409() {
    for c in [E::Disabled, E::PendingDeletion, E::PendingImport, E::StateModifiedFailed] {
        assert_eq!(c.http_status(), 409);
    }
}

// ---------------------------------------------------------------- rotation and versions

#[test]
fn automatic_rotation_follows_the_clock() {
    let f = fixture();
    let md = f
        .engine
        .create_key(
            &owner(),
            CreateKeyRequest {
                enable_automatic_rotation: Some(true),
                rotation_interval: Some("7d".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    let k = md.key_id.clone();
    assert_eq!((md.automatic_rotation.as_str(), md.rotation_interval.as_str()), ("Enabled", "604800s"));
    assert_eq!(md.next_rotation_date, crate::clock::format_iso(T0 + 7 * DAY));
    let old = f.encrypt(&k, b"before", None).unwrap();

    f.clock.advance(7 * DAY - 1);
    assert!(f.engine.run_maintenance().rotated.is_empty());
    f.clock.advance(1);
    let r = f.engine.run_maintenance();
    assert_eq!(r.rotated.len(), 1);
    let md = f.describe(&k);
    assert_eq!(md.primary_key_version, r.rotated[0].1);
    assert_ne!(md.primary_key_version, old.key_version_id);
    assert_eq!(md.last_rotation_date, crate::clock::format_iso(T0 + 7 * DAY));
    assert_eq!(md.next_rotation_date, crate::clock::format_iso(T0 + 14 * DAY));
    let new = f.encrypt(&k, b"after", None).unwrap();
    assert_eq!(new.key_version_id, md.primary_key_version);
    assert_eq!(f.decrypt(&old.ciphertext_blob, None).unwrap().plaintext.expose(), b"before");
    assert_eq!(f.decrypt(&old.ciphertext_blob, None).unwrap().key_version_id, old.key_version_id);

    // Disabled: suspended, no rotation however late; enabled again: resumes at once.
    f.engine.disable_key(&owner(), &k).unwrap();
    assert_eq!(f.describe(&k).automatic_rotation, "Suspended");
    f.clock.advance(30 * DAY);
    assert!(f.engine.run_maintenance().rotated.is_empty());
    f.engine.enable_key(&owner(), &k).unwrap();
    assert_eq!(f.describe(&k).automatic_rotation, "Enabled");
    assert_eq!(f.engine.run_maintenance().rotated.len(), 1);
    let versions = f.engine.list_key_versions(&owner(), &k, PageRequest::default()).unwrap();
    assert_eq!(versions.total_count, 3);
    // Every version still decrypts its own ciphertexts.
    assert_eq!(f.decrypt(&new.ciphertext_blob, None).unwrap().plaintext.expose(), b"after");
    // PendingDeletion suspends too.
    f.schedule(&k, 7).unwrap();
    assert_eq!(f.describe(&k).automatic_rotation, "Suspended");
}

#[test]
fn update_rotation_policy_validates_and_switches() {
    let f = fixture();
    let k = f.create("Aliyun_SM4");
    let set = |enable, interval: Option<&str>| {
        f.engine.update_rotation_policy(
            &owner(),
            UpdateRotationPolicyRequest {
                key_id: k.clone(),
                enable_automatic_rotation: enable,
                rotation_interval: interval.map(Into::into),
            },
        )
    };
    set(true, Some("604800s")).unwrap();
    assert_eq!(f.describe(&k).rotation_interval, "604800s");
    set(true, Some("30d")).unwrap();
    let md = f.describe(&k);
    assert_eq!((md.rotation_interval.as_str(), md.automatic_rotation.as_str()), ("2592000s", "Enabled"));
    set(true, None).unwrap();
    assert_eq!(f.describe(&k).rotation_interval, "2592000s", "enabling without an interval keeps the last one");
    for bad in ["6d", "731d", "1w", "abc"] {
        assert_eq!(code(set(true, Some(bad))), E::InvalidParameter, "{bad}");
    }
    set(false, None).unwrap();
    let md = f.describe(&k);
    assert_eq!(
        (md.automatic_rotation.as_str(), md.next_rotation_date.as_str(), md.rotation_interval.as_str()),
        ("Disabled", "", "")
    );
    let ext = f.create_external();
    assert_eq!(
        code(f.engine.update_rotation_policy(
            &owner(),
            UpdateRotationPolicyRequest { key_id: ext, enable_automatic_rotation: true, rotation_interval: None }
        )),
        E::UnsupportedOrigin
    );
}

#[test]
fn manual_versions_are_rate_limited_and_listed() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    let first = f.describe(&k).primary_key_version;
    let e = f.engine.create_key_version(&owner(), &k).unwrap_err();
    assert_eq!(e.code(), E::UnsupportedOperation);
    assert!(e.to_string().contains("min_manual_version_interval_secs"), "names the setting: {e}");
    f.clock.advance(7 * DAY);
    let v = f.engine.create_key_version(&owner(), &k).unwrap().key_version;
    assert_eq!(f.describe(&k).primary_key_version, v.key_version_id);
    let d = f.engine.describe_key_version(&owner(), &k, &first).unwrap().key_version;
    assert_eq!((d.key_id.as_str(), d.creation_date.as_str()), (k.as_str(), crate::clock::format_iso(T0).as_str()));
    let page =
        f.engine.list_key_versions(&owner(), &k, PageRequest { page_number: Some(2), page_size: Some(1) }).unwrap();
    assert_eq!((page.total_count, page.key_versions.key_version[0].key_version_id.clone()), (2, v.key_version_id));
    let other = f.create("Aliyun_AES_256");
    assert_eq!(code(f.engine.describe_key_version(&owner(), &other, &first)), E::KeyVersionNotFound);
    assert_eq!(code(f.engine.describe_key_version(&owner(), &k, "nope")), E::KeyVersionNotFound);
    assert_eq!(code(f.engine.describe_key_version(&owner(), &k, "")), E::MissingParameter);
    f.engine.disable_key(&owner(), &k).unwrap();
    f.clock.advance(7 * DAY);
    assert_eq!(code(f.engine.create_key_version(&owner(), &k)), E::Disabled);
}

// ---------------------------------------------------------------- deletion

#[test]
fn deletion_window_then_reaper() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    f.engine.create_alias(&owner(), "alias/doomed", &k).unwrap();
    let ct = f.encrypt(&k, b"bye", None).unwrap().ciphertext_blob;
    assert_eq!(code(f.schedule(&k, 6)), E::InvalidParameter);
    assert_eq!(code(f.schedule(&k, 367)), E::InvalidParameter);
    assert_eq!(
        code(f.engine.schedule_key_deletion(
            &owner(),
            ScheduleKeyDeletionRequest { key_id: k.clone(), pending_window_in_days: None }
        )),
        E::MissingParameter
    );
    f.schedule(&k, 7).unwrap();
    let md = f.describe(&k);
    assert_eq!(
        (md.key_state.as_str(), md.delete_date.clone()),
        ("PendingDeletion", crate::clock::format_iso(T0 + 7 * DAY))
    );
    f.clock.advance(7 * DAY - 1);
    assert!(f.engine.run_maintenance().deleted.is_empty());
    f.clock.advance(1);
    assert_eq!(f.engine.run_maintenance().deleted, vec![k.clone()]);
    assert_eq!(code(f.engine.describe_key(&owner(), &k)), E::KeyNotFound);
    assert_eq!(code(f.decrypt(&ct, None)), E::KeyNotFound);
    assert_eq!(code(f.engine.describe_key(&owner(), "alias/doomed")), E::AliasNotFound);
    assert!(f.engine.stored_versions().iter().all(|v| v.key_id != k), "material is gone");
}

#[test]
fn cancel_restores_the_previous_state_and_protection_blocks_deletion() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    f.engine.disable_key(&owner(), &k).unwrap();
    f.schedule(&k, 10).unwrap();
    f.engine.cancel_key_deletion(&owner(), &k).unwrap();
    let md = f.describe(&k);
    assert_eq!((md.key_state.as_str(), md.delete_date.as_str()), ("Disabled", ""));
    f.engine
        .set_deletion_protection(
            &owner(),
            SetDeletionProtectionRequest {
                protected_resource_arn: Some(md.arn.clone()),
                enable_deletion_protection: true,
                deletion_protection_description: Some("prod".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let md = f.describe(&k);
    assert_eq!(
        (md.deletion_protection.as_deref(), md.deletion_protection_description.as_deref()),
        (Some("Enabled"), Some("prod"))
    );
    let e = f.schedule(&k, 7).unwrap_err();
    assert_eq!(e.code(), E::StateModifiedFailed);
    assert!(e.message().contains("deletion protection"));
    f.engine
        .set_deletion_protection(
            &owner(),
            SetDeletionProtectionRequest { key_id: Some(k.clone()), ..Default::default() },
        )
        .unwrap();
    f.schedule(&k, 7).unwrap();
    assert_eq!(
        code(f.engine.set_deletion_protection(&owner(), SetDeletionProtectionRequest::default())),
        E::MissingParameter
    );
}

// ---------------------------------------------------------------- aliases

#[test]
fn aliases_and_arns_work_wherever_a_key_id_does() {
    let f = fixture();
    let k = f.create("Aliyun_AES_256");
    f.engine.create_alias(&owner(), "alias/app/prod-1", &k).unwrap();
    let arn = f.describe(&k).arn;
    for id in ["alias/app/prod-1", arn.as_str(), "acs:kms:cn-hangzhou:1234567890123456:alias/app/prod-1"] {
        let ct = f.encrypt(id, b"x", None).unwrap();
        assert_eq!(ct.key_id, k, "{id}");
    }
    assert_eq!(code(f.engine.create_alias(&owner(), "alias/app/prod-1", &k)), E::AliasAlreadyExists);
    for bad in ["app", "alias/", "alias/has space", "alias/acs/mine"] {
        assert_eq!(code(f.engine.create_alias(&owner(), bad, &k)), E::InvalidParameter, "{bad}");
    }
    assert_eq!(code(f.engine.create_alias(&owner(), "alias/x", "key-missing")), E::KeyNotFound);

    let k2 = f.create("Aliyun_AES_256");
    f.engine.update_alias(&owner(), "alias/app/prod-1", &k2).unwrap();
    assert_eq!(f.encrypt("alias/app/prod-1", b"x", None).unwrap().key_id, k2);
    assert_eq!(code(f.engine.update_alias(&owner(), "alias/none", &k2)), E::AliasNotFound);
    let by_key = f.engine.list_aliases_by_key_id(&owner(), &k2, PageRequest::default()).unwrap();
    assert_eq!(by_key.aliases.alias[0].alias_name, "alias/app/prod-1");
    assert_eq!(by_key.aliases.alias[0].alias_arn, "acs:kms:cn-hangzhou:1234567890123456:alias/app/prod-1");
    assert_eq!(f.engine.list_aliases_by_key_id(&owner(), &k, PageRequest::default()).unwrap().total_count, 0);
    f.engine.delete_alias(&owner(), "alias/app/prod-1").unwrap();
    assert_eq!(code(f.engine.delete_alias(&owner(), "alias/app/prod-1")), E::AliasNotFound);
    assert_eq!(code(f.encrypt("alias/app/prod-1", b"x", None)), E::AliasNotFound);
}

#[test]
fn alias_limit_and_paging() {
    let f =
        fixture_with(EngineConfig { limits: Limits { max_aliases: 3, ..Default::default() }, ..Default::default() });
    let k = f.create("Aliyun_AES_256");
    for i in 0..3 {
        f.engine.create_alias(&owner(), &format!("alias/a{i}"), &k).unwrap();
    }
    assert_eq!(code(f.engine.create_alias(&owner(), "alias/a3", &k)), E::LimitExceeded);
    let p = f.engine.list_aliases(&owner(), PageRequest { page_number: Some(2), page_size: Some(2) }).unwrap();
    assert_eq!((p.total_count, p.aliases.alias.len(), p.aliases.alias[0].alias_name.as_str()), (3, 1, "alias/a2"));
}

// ---------------------------------------------------------------- service keys

#[test]
fn service_keys_are_created_on_first_use_and_locked_down() {
    let f = fixture();
    let oss = Caller::service("OSS");
    assert_eq!(
        code(f.encrypt("alias/acs/oss", b"x", None)),
        E::AliasNotFound,
        "the owner does not create service keys"
    );
    let gdk = |c: &Caller, alias: &str| {
        f.engine.generate_data_key(c, GenerateDataKeyRequest { key_id: alias.into(), ..Default::default() })
    };
    let first = gdk(&oss, "alias/acs/oss").unwrap();
    let second = gdk(&oss, "alias/acs/oss").unwrap();
    assert_eq!(first.key_id, second.key_id, "created once");
    assert_eq!(
        code(gdk(&oss, "alias/acs/ecs")),
        E::NoPermission,
        "a service creates only its own key, and learns nothing of others it may not use"
    );
    let md = f.describe("alias/acs/oss");
    assert_eq!(
        (md.creator.as_str(), md.key_state.as_str(), md.automatic_rotation.as_str()),
        ("OSS", "Enabled", "Enabled")
    );
    assert_eq!(f.decrypt(&first.ciphertext_blob, None).unwrap().plaintext, first.plaintext);

    let k = md.key_id.clone();
    let user_key = f.create("Aliyun_AES_256");
    f.engine.create_alias(&owner(), "alias/mine", &user_key).unwrap();
    f.clock.advance(30 * DAY);
    let refused: Vec<(&str, Result<()>)> = vec![
        ("DisableKey", f.engine.disable_key(&owner(), &k)),
        ("EnableKey", f.engine.enable_key(&owner(), &k)),
        ("ScheduleKeyDeletion", f.schedule(&k, 7)),
        ("CreateKeyVersion", f.engine.create_key_version(&owner(), &k).map(drop)),
        (
            "UpdateRotationPolicy",
            f.engine.update_rotation_policy(
                &owner(),
                UpdateRotationPolicyRequest {
                    key_id: k.clone(),
                    enable_automatic_rotation: false,
                    rotation_interval: None,
                },
            ),
        ),
        ("CreateAlias", f.engine.create_alias(&owner(), "alias/steal", &k)),
        ("UpdateAlias(acs)", f.engine.update_alias(&owner(), "alias/acs/oss", &user_key)),
        ("UpdateAlias(to service key)", f.engine.update_alias(&owner(), "alias/mine", &k)),
        ("DeleteAlias", f.engine.delete_alias(&owner(), "alias/acs/oss")),
    ];
    for (what, r) in refused {
        let e = r.expect_err(what);
        assert_eq!(e.code(), E::UnsupportedOperation, "{what}: {e:?}");
        assert!(e.message().contains("service key") || e.message().contains("OSS"), "{what}: {}", e.message());
    }
    assert_eq!(f.describe(&k), md, "nothing changed");
    let svc = f
        .engine
        .list_keys(
            &owner(),
            ListKeysRequest {
                filters: Some(r#"[{"Key":"CreatorType","Values":["Service"]}]"#.into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(svc.keys.key.len(), 1);
}

#[test]
fn service_keys_do_not_count_against_the_key_limit() {
    let f = fixture_with(EngineConfig { limits: Limits { max_keys: 1, ..Default::default() }, ..Default::default() });
    f.create("Aliyun_AES_256");
    f.engine.ensure_service_key("ecs").unwrap();
    assert_eq!(f.describe("alias/acs/ecs").creator, "ECS");
}

// ---------------------------------------------------------------- persistence and material at rest

#[test]
fn reopening_yields_the_same_keys() {
    let f = fixture();
    let k = f.create("Aliyun_SM4");
    f.engine.create_alias(&owner(), "alias/keep", &k).unwrap();
    f.clock.advance(8 * DAY);
    f.engine.create_key_version(&owner(), &k).unwrap();
    let ct = f.encrypt("alias/keep", b"persist", Some(r#"{"a":"b"}"#)).unwrap();
    let old = f.gdk(&k, None, None).unwrap();
    let md = f.describe(&k);
    let Fixture { dir, clock, engine } = f;
    drop(engine);
    let engine = Engine::open(options(dir.path(), clock.clone(), EngineConfig::default())).unwrap();
    let f = Fixture { dir, clock, engine };
    assert_eq!(f.describe(&k), md);
    assert_eq!(f.decrypt(&ct.ciphertext_blob, Some(r#"{"a":"b"}"#)).unwrap().plaintext.expose(), b"persist");
    assert_eq!(f.decrypt(&old.ciphertext_blob, None).unwrap().plaintext, old.plaintext);
    assert_eq!(f.engine.list_key_versions(&owner(), &k, PageRequest::default()).unwrap().total_count, 2);
}

#[test]
fn another_root_key_cannot_open_the_store() {
    let f = fixture();
    f.create("Aliyun_AES_256");
    let Fixture { dir, clock, engine } = f;
    drop(engine);
    std::fs::rename(dir.path().join("root.key"), dir.path().join("root.key.bak")).unwrap();
    let e = Engine::open(options(dir.path(), clock, EngineConfig::default())).err().unwrap();
    assert!(matches!(&e, OpenError::WrongRootKey(m) if m.contains("another root key")), "{e}");
}

#[test]
fn the_store_files_hold_no_key_material() {
    let f = fixture();
    let mut keys = Vec::new();
    for spec in ["Aliyun_AES_256", "Aliyun_SM4", "Aliyun_AES_256"] {
        keys.push(f.create(spec));
    }
    f.engine.ensure_service_key("oss").unwrap();
    // Read back each version's material through the protector, as only the engine can.
    let materials: Vec<Vec<u8>> = {
        f.engine
            .stored_versions()
            .iter()
            .map(|v| f.engine.protector.unseal(&material_aad(&v.key_id, &v.version_id), &v.sealed).unwrap().to_vec())
            .collect()
    };
    assert_eq!(materials.len(), 4);
    let root = std::fs::read(f.dir.path().join("root.key")).unwrap();
    let mut scanned = 0;
    for (name, bytes) in stored_files(f.dir.path()) {
        scanned += bytes.len();
        for m in materials.iter().chain(std::iter::once(&root[8..].to_vec())) {
            assert!(!bytes.windows(m.len()).any(|w| w == &m[..]), "{name} contains key bytes");
            // Not even half of a key in a row.
            let half = &m[..m.len() / 2];
            assert!(!bytes.windows(half.len()).any(|w| w == half), "{name} contains part of a key");
        }
    }
    assert!(scanned > 4096, "the database and its WAL were scanned");
}

#[test]
fn describe_regions_lists_the_configured_ones() {
    let f =
        fixture_with(EngineConfig { regions: vec!["cn-shanghai".into(), "cn-hangzhou".into()], ..Default::default() });
    let r = f.engine.describe_regions(&owner());
    let ids: Vec<_> = r.regions.region.iter().map(|r| r.region_id.as_str()).collect();
    assert_eq!(ids, ["cn-hangzhou", "cn-shanghai"]);
    assert_eq!(serde_json::to_value(&r).unwrap()["Regions"]["Region"][0]["RegionId"], "cn-hangzhou");
}

#[test]
fn the_audit_anchor_never_moves_backwards() {
    use crate::engine::Anchor;
    let f = fixture();
    let e = &f.engine;
    assert_eq!(e.audit_anchor().unwrap(), None);
    let at = |seq: u64, b: u8| Anchor { seq, mac: [b; 32] };
    e.anchor_audit(at(5, 1)).unwrap();
    e.anchor_audit(at(3, 2)).unwrap();
    e.anchor_audit(at(5, 3)).unwrap();
    assert_eq!(e.audit_anchor().unwrap(), Some(at(5, 1)), "a lower or equal seq is ignored");
    // 256 > 255 in the first bytes that differ, not only in the last one.
    e.anchor_audit(at(256, 4)).unwrap();
    assert_eq!(e.audit_anchor().unwrap(), Some(at(256, 4)));
}

#[test]
fn a_purged_nonce_stays_refused_when_the_clock_steps_back() {
    let f = fixture();
    let e = &f.engine;
    let claim = |id: u8, expires: i64| e.ordered_store().claim_nonces(&[(vec![id; 16], expires)]).unwrap()[0];
    // Two requests signed at T0 and T0 + 60 (skew 900 s), claimed.
    assert!(claim(1, T0 + 900));
    assert!(claim(2, T0 + 960));
    // An hour later the sweep forgets both: neither can be accepted any more.
    assert_eq!(e.ordered_store().purge_nonces(T0 + 3600).unwrap(), 2);
    // The clock steps back to T0 + 30, where both timestamps are acceptable again: their replays
    // are refused although their rows are gone...
    assert!(!claim(1, T0 + 900), "replay of a purged request after the clock stepped back");
    assert!(!claim(2, T0 + 960));
    // ...and so is anything no later than the latest forgotten, but not what comes after it.
    assert!(!claim(3, T0 + 960));
    assert!(claim(4, T0 + 961));
    // A later purge that removes nothing keeps the horizon; one that removes more raises it.
    assert_eq!(e.ordered_store().purge_nonces(T0 + 900).unwrap(), 0);
    assert!(!claim(5, T0 + 960));
    assert_eq!(e.ordered_store().purge_nonces(T0 + 7200).unwrap(), 1);
    assert!(!claim(6, T0 + 961));
    assert!(claim(7, T0 + 962));
}

#[test]
fn claims_that_go_to_the_store_together_still_admit_each_nonce_once() {
    let f = fixture();
    let e = &f.engine;
    // One batch with a replay inside it, then the same batch again.
    let claims = [(vec![1u8; 16], T0 + 900), (vec![1u8; 16], T0 + 900), (vec![2u8; 16], T0 + 900)];
    assert_eq!(e.ordered_store().claim_nonces(&claims).unwrap(), [true, false, true]);
    assert_eq!(e.ordered_store().claim_nonces(&claims).unwrap(), [false, false, false]);
    for round in 0..20 {
        let shared = format!("shared-{round}");
        let (wins, own): (Vec<bool>, Vec<bool>) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let shared = shared.clone();
                    s.spawn(move || {
                        // A replay racing its original, and a request of its own, from each thread.
                        let won = e.claim_nonce("AK", &shared, T0 + 900).is_ok();
                        let own = e.claim_nonce("AK", &format!("own-{round}-{i}"), T0 + 900).is_ok();
                        (won, own)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).unzip()
        });
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "round {round}: {wins:?}");
        assert!(own.iter().all(|o| *o), "round {round}: {own:?}");
        assert_eq!(code(e.claim_nonce("AK", &shared, T0 + 900)), E::SignatureNonceUsed);
    }
}
