//! Asymmetric keys and BYOK import, in process. (Interop with the openssl CLI is tested through
//! the sidecar.)

use std::sync::Arc;

use kms_core::api::*;
use kms_core::clock::{ManualClock, DAY};
use kms_core::crypto::asym::{sha256, AsymAlgorithm, AsymKey, PrivateKey};
use kms_core::model::KeySpec;
use kms_core::test_store::options;
use kms_core::ErrorCode as E;
use kms_core::*;

const T0: i64 = 1_700_000_000;

fn engine() -> (tempfile::TempDir, Arc<ManualClock>, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = Engine::open(options(dir.path(), clock.clone(), EngineConfig::default())).unwrap();
    (dir, clock, e)
}

fn me() -> Caller {
    Caller::owner()
}

fn create(e: &Engine, spec: &str, usage: &str) -> (String, String) {
    let md = e
        .create_key(
            &me(),
            CreateKeyRequest { key_spec: Some(spec.into()), key_usage: Some(usage.into()), ..Default::default() },
        )
        .unwrap()
        .key_metadata;
    assert_eq!(md.primary_key_version, "", "asymmetric keys have no primary version");
    let v = e.list_key_versions(&me(), &md.key_id, PageRequest::default()).unwrap();
    (md.key_id, v.key_versions.key_version[0].key_version_id.clone())
}

fn sign(e: &Engine, k: &str, v: &str, alg: &str, digest: &[u8]) -> Result<Vec<u8>> {
    e.asymmetric_sign(
        &me(),
        AsymmetricSignRequest {
            key_id: k.into(),
            key_version_id: v.into(),
            algorithm: alg.into(),
            digest: digest.to_vec(),
            dry_run: false,
        },
    )
    .map(|r| r.value)
}

fn verify(e: &Engine, k: &str, v: &str, alg: &str, digest: &[u8], sig: &[u8]) -> Result<bool> {
    e.asymmetric_verify(
        &me(),
        AsymmetricVerifyRequest {
            key_id: k.into(),
            key_version_id: v.into(),
            algorithm: alg.into(),
            digest: digest.to_vec(),
            value: sig.to_vec(),
            dry_run: false,
        },
    )
    .map(|r| r.value)
}

#[test]
fn sign_and_verify_for_every_signing_spec() {
    let (_d, _c, e) = engine();
    let digest = sha256(b"the message");
    for (spec, algs) in [
        ("RSA_2048", &["RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256"][..]),
        ("RSA_3072", &["RSA_PSS_SHA_256", "RSA_PKCS1_SHA_256"][..]),
        ("EC_P256", &["ECDSA_SHA_256"][..]),
        ("EC_P256K", &["ECDSA_SHA_256"][..]),
        ("EC_SM2", &["SM2DSA"][..]),
    ] {
        let (k, v) = create(&e, spec, "SIGN/VERIFY");
        for alg in algs {
            let sig = sign(&e, &k, &v, alg, &digest).unwrap();
            assert!(verify(&e, &k, &v, alg, &digest, &sig).unwrap(), "{spec} {alg}");
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 0x10;
            assert!(!verify(&e, &k, &v, alg, &digest, &bad).unwrap(), "tampered {spec} {alg} → false");
            assert!(!verify(&e, &k, &v, alg, &sha256(b"other"), &sig).unwrap());
        }
        // Wrong algorithm for the spec, wrong digest length, wrong version, encryption on a signing key.
        let other_alg = if spec.starts_with("RSA") { "ECDSA_SHA_256" } else { "RSA_PSS_SHA_256" };
        assert_eq!(sign(&e, &k, &v, other_alg, &digest).unwrap_err().code(), E::InvalidParameter);
        let err = sign(&e, &k, &v, algs[0], &digest[..20]).unwrap_err();
        assert_eq!(err.code(), E::InvalidParameter);
        assert!(err.message().contains("Digest"));
        assert_eq!(sign(&e, &k, "no-such-version", algs[0], &digest).unwrap_err().code(), E::KeyVersionNotFound);
        assert_eq!(sign(&e, &k, "", algs[0], &digest).unwrap_err().code(), E::MissingParameter);
        let enc = e.asymmetric_encrypt(
            &me(),
            AsymmetricEncryptRequest {
                key_id: k.clone(),
                key_version_id: v.clone(),
                algorithm: "RSAES_OAEP_SHA_256".into(),
                plaintext: SecretBytes::from(&b"x"[..]),
                dry_run: false,
            },
        );
        assert_eq!(enc.unwrap_err().code(), E::UnsupportedOperation);
        let pem = e
            .get_public_key(&me(), KeyVersionRequest { key_id: k.clone(), key_version_id: v.clone() })
            .unwrap()
            .public_key;
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    }
}

#[test]
fn encrypt_and_decrypt_with_size_limits() {
    let (_d, _c, e) = engine();
    for (spec, alg, max) in [
        ("RSA_2048", "RSAES_OAEP_SHA_256", 190),
        ("RSA_2048", "RSAES_OAEP_SHA_1", 214),
        ("RSA_3072", "RSAES_OAEP_SHA_256", 318),
        ("RSA_3072", "RSAES_OAEP_SHA_1", 342),
        ("EC_SM2", "SM2PKE", 6047),
    ] {
        let (k, v) = create(&e, spec, "ENCRYPT/DECRYPT");
        let enc = |n: usize| {
            e.asymmetric_encrypt(
                &me(),
                AsymmetricEncryptRequest {
                    key_id: k.clone(),
                    key_version_id: v.clone(),
                    algorithm: alg.into(),
                    plaintext: SecretBytes::new(vec![0x41; n]),
                    dry_run: false,
                },
            )
        };
        let ct = enc(max).unwrap().ciphertext_blob;
        let err = enc(max + 1).unwrap_err();
        assert_eq!(err.code(), E::InvalidParameter, "{spec} {alg}");
        assert!(err.message().contains(&max.to_string()));
        let dec = |blob: Vec<u8>, alg: &str| {
            e.asymmetric_decrypt(
                &me(),
                AsymmetricDecryptRequest {
                    key_id: k.clone(),
                    key_version_id: v.clone(),
                    algorithm: alg.into(),
                    ciphertext_blob: blob,
                    dry_run: false,
                },
            )
        };
        assert_eq!(dec(ct.clone(), alg).unwrap().plaintext.len(), max);
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert_eq!(dec(bad, alg).unwrap_err().code(), E::InvalidParameter);
        assert_eq!(sign(&e, &k, &v, "SM2DSA", &[0; 32]).unwrap_err().code(), E::UnsupportedOperation);
    }
}

#[test]
fn versions_states_and_rotation_rules() {
    let (_d, clock, e) = engine();
    let (k, v1) = create(&e, "EC_P256", "SIGN/VERIFY");
    let sig = sign(&e, &k, &v1, "ECDSA_SHA_256", &[1; 32]).unwrap();
    clock.advance(7 * DAY);
    let v2 = e.create_key_version(&me(), &k).unwrap().key_version.key_version_id;
    assert_ne!(v1, v2);
    let pem1 = e
        .get_public_key(&me(), KeyVersionRequest { key_id: k.clone(), key_version_id: v1.clone() })
        .unwrap()
        .public_key;
    let pem2 = e
        .get_public_key(&me(), KeyVersionRequest { key_id: k.clone(), key_version_id: v2.clone() })
        .unwrap()
        .public_key;
    assert_ne!(pem1, pem2, "a new version is a new key pair");
    assert!(verify(&e, &k, &v1, "ECDSA_SHA_256", &[1; 32], &sig).unwrap());
    assert!(!verify(&e, &k, &v2, "ECDSA_SHA_256", &[1; 32], &sig).unwrap());
    assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.primary_key_version, "");
    let e2 = e.update_rotation_policy(
        &me(),
        UpdateRotationPolicyRequest { key_id: k.clone(), enable_automatic_rotation: true, rotation_interval: None },
    );
    assert_eq!(e2.unwrap_err().code(), E::UnsupportedOperation);
    e.disable_key(&me(), &k).unwrap();
    assert_eq!(sign(&e, &k, &v1, "ECDSA_SHA_256", &[1; 32]).unwrap_err().code(), E::Disabled);
    assert_eq!(
        e.get_public_key(&me(), KeyVersionRequest { key_id: k.clone(), key_version_id: v1.clone() })
            .unwrap_err()
            .code(),
        E::Disabled
    );
    let (sym, _) = (e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id, ());
    let sym_v = e.describe_key(&me(), &sym).unwrap().key_metadata.primary_key_version;
    assert_eq!(sign(&e, &sym, &sym_v, "ECDSA_SHA_256", &[1; 32]).unwrap_err().code(), E::UnsupportedOperation);
    assert_eq!(
        e.encrypt(
            &me(),
            EncryptRequest { key_id: k.clone(), plaintext: SecretBytes::from(&b"x"[..]), ..Default::default() }
        )
        .unwrap_err()
        .code(),
        E::UnsupportedOperation
    );
}

#[test]
fn re_encrypt_from_an_asymmetric_ciphertext() {
    let (_d, _c, e) = engine();
    let (k, v) = create(&e, "RSA_2048", "ENCRYPT/DECRYPT");
    let dst = e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let ct = e
        .asymmetric_encrypt(
            &me(),
            AsymmetricEncryptRequest {
                key_id: k.clone(),
                key_version_id: v.clone(),
                algorithm: "RSAES_OAEP_SHA_1".into(),
                plaintext: SecretBytes::from(&b"moved"[..]),
                dry_run: false,
            },
        )
        .unwrap()
        .ciphertext_blob;
    let req = |alg: &str| ReEncryptRequest {
        ciphertext_blob: ct.clone(),
        destination_key_id: dst.clone(),
        source_key_id: Some(k.clone()),
        source_key_version_id: Some(v.clone()),
        source_encryption_algorithm: Some(alg.into()),
        ..Default::default()
    };
    let moved = e.re_encrypt(&me(), req("RSAES_OAEP_SHA_1")).unwrap();
    let back =
        e.decrypt(&me(), DecryptRequest { ciphertext_blob: moved.ciphertext_blob, ..Default::default() }).unwrap();
    assert_eq!(back.plaintext.expose(), b"moved");
    assert_eq!(e.re_encrypt(&me(), req("RSAES_OAEP_SHA_256")).unwrap_err().code(), E::InvalidParameter);
    let mut no_version = req("RSAES_OAEP_SHA_1");
    no_version.source_key_version_id = None;
    assert_eq!(e.re_encrypt(&me(), no_version).unwrap_err().code(), E::MissingParameter);
}

#[test]
fn export_data_keys_under_a_callers_public_key() {
    let (_d, _c, e) = engine();
    let sym = e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    for (spec, alg) in
        [(KeySpec::Rsa2048, "RSAES_OAEP_SHA_256"), (KeySpec::Rsa2048, "RSAES_OAEP_SHA_1"), (KeySpec::EcSm2, "SM2PKE")]
    {
        let (mine, _) = PrivateKey::generate(spec).unwrap();
        let public = mine.public_der().unwrap();
        let g = e
            .generate_and_export_data_key(
                &me(),
                GenerateAndExportDataKeyRequest {
                    key_id: sym.clone(),
                    public_key_blob: public.clone(),
                    wrapping_key_spec: spec.to_string(),
                    wrapping_algorithm: alg.into(),
                    encryption_context: Some(r#"{"x":"1"}"#.into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let a = AsymAlgorithm::parse(alg).unwrap();
        let dk = mine.decrypt(a, &g.exported_data_key, "x").unwrap();
        let via_kms = e
            .decrypt(
                &me(),
                DecryptRequest {
                    ciphertext_blob: g.ciphertext_blob.clone(),
                    encryption_context: Some(r#"{"x":"1"}"#.into()),
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(&dk[..], via_kms.plaintext.expose(), "{spec} {alg}");
        let x = e
            .export_data_key(
                &me(),
                ExportDataKeyRequest {
                    ciphertext_blob: g.ciphertext_blob,
                    public_key_blob: public,
                    wrapping_key_spec: spec.to_string(),
                    wrapping_algorithm: alg.into(),
                    encryption_context: Some(r#"{"x":"1"}"#.into()),
                    dry_run: false,
                },
            )
            .unwrap();
        assert_eq!(&mine.decrypt(a, &x.exported_data_key, "x").unwrap()[..], &dk[..]);
    }
    let bad = e.export_data_key(
        &me(),
        ExportDataKeyRequest {
            ciphertext_blob: vec![1],
            public_key_blob: b"junk".to_vec(),
            wrapping_key_spec: "RSA_2048".into(),
            wrapping_algorithm: "SM2PKE".into(),
            ..Default::default()
        },
    );
    assert_eq!(bad.unwrap_err().code(), E::InvalidParameter);
    let bad = e.generate_and_export_data_key(
        &me(),
        GenerateAndExportDataKeyRequest {
            key_id: sym,
            public_key_blob: b"junk".to_vec(),
            wrapping_key_spec: "RSA_2048".into(),
            wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
            ..Default::default()
        },
    );
    let err = bad.unwrap_err();
    assert!(err.message().contains("PublicKeyBlob"), "{err:?}");
}

// ---------------------------------------------------------------- BYOK

fn external(e: &Engine, spec: &str) -> String {
    e.create_key(
        &me(),
        CreateKeyRequest { key_spec: Some(spec.into()), origin: Some("EXTERNAL".into()), ..Default::default() },
    )
    .unwrap()
    .key_metadata
    .key_id
}

fn params(e: &Engine, k: &str, spec: &str, alg: &str) -> GetParametersForImportResponse {
    e.get_parameters_for_import(
        &me(),
        GetParametersForImportRequest {
            key_id: k.into(),
            wrapping_key_spec: spec.into(),
            wrapping_algorithm: alg.into(),
        },
    )
    .unwrap()
}

fn wrap(p: &GetParametersForImportResponse, spec: KeySpec, alg: &str, material: &[u8]) -> Vec<u8> {
    kms_core::crypto::asym::encrypt_to_public(spec, &p.public_key, AsymAlgorithm::parse(alg).unwrap(), material)
        .unwrap()
}

fn import(e: &Engine, k: &str, p: &GetParametersForImportResponse, wrapped: Vec<u8>, expire: i64) -> Result<()> {
    e.import_key_material(
        &me(),
        ImportKeyMaterialRequest {
            key_id: k.into(),
            encrypted_key_material: wrapped,
            import_token: p.import_token.clone(),
            key_material_expire_unix: Some(expire),
        },
    )
}

#[test]
fn byok_import_with_every_wrapping_algorithm() {
    let (_d, _c, e) = engine();
    for (spec, alg, key_spec, len) in [
        (KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", "Aliyun_AES_256", 32),
        (KeySpec::Rsa2048, "RSAES_OAEP_SHA_1", "Aliyun_AES_256", 32),
        (KeySpec::Rsa2048, "RSAES_PKCS1_V1_5", "Aliyun_SM4", 16),
        (KeySpec::EcSm2, "SM2PKE", "Aliyun_SM4", 16),
    ] {
        let k = external(&e, key_spec);
        assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, "PendingImport");
        let p = params(&e, &k, spec.as_str(), alg);
        assert_eq!(p.token_expire_time, kms_core::clock::format_iso(T0 + DAY));
        let material = vec![0x5c; len];
        import(&e, &k, &p, wrap(&p, spec, alg, &material), 0).unwrap();
        let md = e.describe_key(&me(), &k).unwrap().key_metadata;
        assert_eq!(
            (md.key_state.as_str(), md.origin.as_str(), md.material_expire_time.as_str()),
            ("Enabled", "EXTERNAL", "")
        );
        // The imported bytes really are the key: a blob made here opens under a cipher built from them.
        let ct = e
            .encrypt(
                &me(),
                EncryptRequest { key_id: k.clone(), plaintext: SecretBytes::from(&b"byok"[..]), ..Default::default() },
            )
            .unwrap();
        let alg_sym = kms_core::crypto::Algorithm::for_spec(KeySpec::parse(key_spec).unwrap()).unwrap();
        let cipher = kms_core::crypto::SymCipher::new(alg_sym, &material).unwrap();
        let h = kms_core::crypto::blob::parse(&ct.ciphertext_blob).unwrap();
        assert_eq!(&kms_core::crypto::blob::open(&cipher, &h, &ct.ciphertext_blob, b"").unwrap()[..], b"byok");
    }
}

#[test]
fn byok_rejects_bad_imports() {
    let (_d, clock, e) = engine();
    let k = external(&e, "Aliyun_AES_256");
    let p = params(&e, &k, "RSA_2048", "RSAES_OAEP_SHA_256");
    let code = |r: Result<()>| r.unwrap_err().code();
    // Wrong length, wrongly wrapped, garbage, empty.
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &[1; 16]), 0)),
        E::InvalidKeyMaterial
    );
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_1", &[1; 32]), 0)),
        E::InvalidKeyMaterial
    );
    assert_eq!(code(import(&e, &k, &p, vec![7; 256], 0)), E::InvalidKeyMaterial);
    assert_eq!(code(import(&e, &k, &p, vec![], 0)), E::MissingParameter);
    // A token of another key, an unknown token, a past expiry.
    let other = external(&e, "Aliyun_AES_256");
    let p_other = params(&e, &other, "RSA_2048", "RSAES_OAEP_SHA_256");
    assert_eq!(
        code(import(&e, &k, &p_other, wrap(&p_other, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &[1; 32]), 0)),
        E::InvalidImportToken
    );
    let mut fake = p.clone();
    fake.import_token = "00".repeat(32);
    assert_eq!(
        code(import(&e, &k, &fake, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &[1; 32]), 0)),
        E::InvalidImportToken
    );
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &[1; 32]), T0 - 1)),
        E::InvalidParameter
    );
    assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, "PendingImport", "nothing was imported");
    // Bad wrapping parameters, and import into a key that is not EXTERNAL.
    for (spec, alg) in [("RSA_3072", "RSAES_OAEP_SHA_256"), ("EC_SM2", "RSAES_OAEP_SHA_1"), ("RSA_2048", "SM2PKE")] {
        let r = e.get_parameters_for_import(
            &me(),
            GetParametersForImportRequest {
                key_id: k.clone(),
                wrapping_key_spec: spec.into(),
                wrapping_algorithm: alg.into(),
            },
        );
        assert_eq!(r.unwrap_err().code(), E::InvalidParameter, "{spec} {alg}");
    }
    let native = e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let r = e.get_parameters_for_import(
        &me(),
        GetParametersForImportRequest {
            key_id: native,
            wrapping_key_spec: "RSA_2048".into(),
            wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
        },
    );
    assert_eq!(r.unwrap_err().code(), E::UnsupportedOrigin);
    // The token is reusable for 24 hours, then expired.
    let good = [9u8; 32];
    import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &good), 0).unwrap();
    import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &good), 0).unwrap();
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &[8; 32]), 0)),
        E::InvalidKeyMaterial,
        "different material"
    );
    clock.advance(DAY);
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &good), 0)),
        E::ExpiredImportToken
    );
    assert_eq!(e.run_maintenance().tokens_purged, 2);
    assert_eq!(
        code(import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &good), 0)),
        E::InvalidImportToken
    );
    // External keys have no versions and no rotation.
    assert_eq!(e.create_key_version(&me(), &k).unwrap_err().code(), E::UnsupportedOrigin);
}

#[test]
fn deleted_or_expired_material_blocks_ciphertexts_until_the_same_material_returns() {
    let (dir, clock, e) = engine();
    let k = external(&e, "Aliyun_SM4");
    let material = [3u8; 16];
    let p = params(&e, &k, "EC_SM2", "SM2PKE");
    import(&e, &k, &p, wrap(&p, KeySpec::EcSm2, "SM2PKE", &material), T0 + 10 * DAY).unwrap();
    let md = e.describe_key(&me(), &k).unwrap().key_metadata;
    assert_eq!(md.material_expire_time, kms_core::clock::format_iso(T0 + 10 * DAY));
    let ct = e
        .encrypt(
            &me(),
            EncryptRequest { key_id: k.clone(), plaintext: SecretBytes::from(&b"keep"[..]), ..Default::default() },
        )
        .unwrap();
    let dec = || e.decrypt(&me(), DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() });

    e.delete_key_material(&me(), &k).unwrap();
    assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, "PendingImport");
    assert_eq!(dec().unwrap_err().code(), E::PendingImport);
    assert!(e.stored_versions().iter().filter(|v| v.key_id == k).all(|v| !v.has_material()), "sealed material is gone");
    import(&e, &k, &p, wrap(&p, KeySpec::EcSm2, "SM2PKE", &material), 0).unwrap();
    assert_eq!(dec().unwrap().plaintext.expose(), b"keep", "the same material revives old ciphertexts");

    // Expiry: refused at once when the time passes, deleted by the next maintenance pass.
    import(&e, &k, &p, wrap(&p, KeySpec::EcSm2, "SM2PKE", &material), T0 + 2 * DAY).unwrap();
    clock.advance(2 * DAY);
    assert_eq!(dec().unwrap_err().code(), E::PendingImport);
    assert_eq!(e.run_maintenance().material_expired, vec![k.clone()]);
    assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, "PendingImport");

    // Everything survives a reopen: fingerprint, the version id, the deleted state.
    drop(e);
    let e = Engine::open(options(dir.path(), clock.clone(), EngineConfig::default())).unwrap();
    let p = params(&e, &k, "RSA_2048", "RSAES_OAEP_SHA_1");
    assert_eq!(
        import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_1", &[4; 16]), 0).unwrap_err().code(),
        E::InvalidKeyMaterial
    );
    import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_1", &material), 0).unwrap();
    let back =
        e.decrypt(&me(), DecryptRequest { ciphertext_blob: ct.ciphertext_blob.clone(), ..Default::default() }).unwrap();
    assert_eq!(back.plaintext.expose(), b"keep");
}

/// The BYOK rows of API.md §5: GetParametersForImport and DeleteKeyMaterial work in every state;
/// ImportKeyMaterial in every state but PendingDeletion.
#[test]
fn byok_rows_of_the_key_state_matrix() {
    let (_d, _c, e) = engine();
    let material = [6u8; 32];
    for state in ["Enabled", "Disabled", "PendingDeletion", "PendingImport"] {
        let k = external(&e, "Aliyun_AES_256");
        let p = params(&e, &k, "RSA_2048", "RSAES_OAEP_SHA_256");
        if state != "PendingImport" {
            import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &material), 0).unwrap();
        }
        match state {
            "Disabled" => e.disable_key(&me(), &k).unwrap(),
            "PendingDeletion" => e
                .schedule_key_deletion(
                    &me(),
                    ScheduleKeyDeletionRequest { key_id: k.clone(), pending_window_in_days: Some(7) },
                )
                .unwrap(),
            _ => {}
        }
        assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, state);
        let p2 = e.get_parameters_for_import(
            &me(),
            GetParametersForImportRequest {
                key_id: k.clone(),
                wrapping_key_spec: "RSA_2048".into(),
                wrapping_algorithm: "RSAES_OAEP_SHA_1".into(),
            },
        );
        assert!(p2.is_ok(), "GetParametersForImport in {state}");
        let r = import(&e, &k, &p, wrap(&p, KeySpec::Rsa2048, "RSAES_OAEP_SHA_256", &material), 0);
        if state == "PendingDeletion" {
            let err = r.unwrap_err();
            assert_eq!((err.code(), err.http_status()), (E::StateModifiedFailed, 409));
        } else {
            r.unwrap_or_else(|err| panic!("ImportKeyMaterial in {state}: {err:?}"));
        }
        e.delete_key_material(&me(), &k).unwrap_or_else(|err| panic!("DeleteKeyMaterial in {state}: {err:?}"));
        let after = e.describe_key(&me(), &k).unwrap().key_metadata.key_state;
        assert_eq!(after, if state == "PendingDeletion" { "PendingDeletion" } else { "PendingImport" });
        if state == "PendingDeletion" {
            e.cancel_key_deletion(&me(), &k).unwrap();
            assert_eq!(e.describe_key(&me(), &k).unwrap().key_metadata.key_state, "PendingImport");
        }
    }
}
