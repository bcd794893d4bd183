//! Frozen format vectors (age's testkit is the model): `tests/vectors/store/` is a KMS data
//! directory an earlier build wrote – the SQLite store and its root key – and
//! `tests/vectors/cases.json` what was done with it: a ciphertext blob of every symmetric key spec
//! (two with imported material, given here, so the blob is also opened without the engine), data
//! keys, signatures and ciphertexts of every asymmetric spec with their public keys, and a secret
//! with two versions. Every build must open that store (migrating a copy), decrypt every blob,
//! verify every signature and read every secret version: a change to the blob layout, the sealed
//! records, the secret envelope or the schema cannot slip in unnoticed.
//!
//! Regenerate only for an intended, documented format change (a new version byte, FORMAT.md):
//!     KMS_WRITE_VECTORS=1 cargo test -p kms-core --test vectors

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kms_core::api::*;
use kms_core::crypto::aead::{Algorithm, SymCipher};
use kms_core::crypto::asym::{encrypt_to_public, AsymAlgorithm};
use kms_core::model::KeySpec;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions};
use serde_json::{json, Value};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn open(dir: &Path) -> Engine {
    Engine::open(EngineOptions::in_dir(dir, EngineConfig::default()).unwrap()).unwrap()
}

fn me() -> Caller {
    Caller::owner()
}

fn b64(v: &[u8]) -> String {
    B64.encode(v)
}

fn unb64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 text")).unwrap()
}

fn text(v: &Value) -> String {
    v.as_str().expect("text").to_string()
}

const CONTEXT: &str = r#"{"purpose":"frozen vector"}"#;

fn decrypt(e: &Engine, blob: &[u8]) -> kms_core::Result<DecryptResponse> {
    e.decrypt(
        &me(),
        DecryptRequest { ciphertext_blob: blob.to_vec(), encryption_context: Some(CONTEXT.into()), dry_run: false },
    )
}

#[test]
fn frozen_store_and_blobs_still_open() {
    if std::env::var_os("KMS_WRITE_VECTORS").is_some() {
        write_vectors();
    }
    let cases: Value = serde_json::from_slice(&std::fs::read(vectors().join("cases.json")).unwrap()).unwrap();
    // A copy: opening migrates the store to this build's schema.
    let dir = tempfile::tempdir().unwrap();
    for f in ["kms.db", "root.key"] {
        std::fs::copy(vectors().join("store").join(f), dir.path().join(f)).unwrap();
    }
    // A checkout makes every file world-readable; a root key must not be.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path().join("root.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = open(dir.path());

    for c in cases["symmetric"].as_array().unwrap() {
        let blob = unb64(&c["blob"]);
        let plaintext = unb64(&c["plaintext"]);
        let got = decrypt(&e, &blob).unwrap_or_else(|err| panic!("{}: {err:?}", c["spec"]));
        assert_eq!(got.plaintext.expose(), &plaintext[..], "{}", c["spec"]);
        assert_eq!(got.key_id, text(&c["key_id"]));
        if let Some(material) = c.get("material").filter(|m| !m.is_null()) {
            // The layout itself (FORMAT.md §1), without the engine: header, nonce, AAD, tag.
            let header = kms_core::crypto::blob::parse(&blob).unwrap();
            assert_eq!(header.key_id, text(&c["key_id"]));
            let alg = match c["spec"].as_str().unwrap() {
                "Aliyun_AES_256" => Algorithm::Aes256Gcm,
                _ => Algorithm::Sm4Gcm,
            };
            let cipher = SymCipher::new(alg, &unb64(material)).unwrap();
            let opened = kms_core::crypto::blob::open(&cipher, &header, &blob, CONTEXT.as_bytes()).unwrap();
            assert_eq!(&opened[..], &plaintext[..]);
        }
    }
    for c in cases["data_keys"].as_array().unwrap() {
        let got = decrypt(&e, &unb64(&c["blob"])).unwrap();
        assert_eq!(got.plaintext.expose(), &unb64(&c["plaintext"])[..]);
    }
    for c in cases["asymmetric"].as_array().unwrap() {
        let (key_id, version) = (text(&c["key_id"]), text(&c["version_id"]));
        let pem = e
            .get_public_key(&me(), KeyVersionRequest { key_id: key_id.clone(), key_version_id: version.clone() })
            .unwrap()
            .public_key;
        assert_eq!(pem, text(&c["public_key"]), "{}", c["spec"]);
        if let Some(s) = c.get("sign") {
            let ok = e
                .asymmetric_verify(
                    &me(),
                    AsymmetricVerifyRequest {
                        key_id: key_id.clone(),
                        key_version_id: version.clone(),
                        algorithm: text(&s["algorithm"]),
                        digest: unb64(&s["digest"]),
                        value: unb64(&s["value"]),
                        dry_run: false,
                    },
                )
                .unwrap();
            assert!(ok.value, "{} signature", c["spec"]);
        }
        if let Some(x) = c.get("encrypt") {
            let got = e
                .asymmetric_decrypt(
                    &me(),
                    AsymmetricDecryptRequest {
                        key_id: key_id.clone(),
                        key_version_id: version.clone(),
                        algorithm: text(&x["algorithm"]),
                        ciphertext_blob: unb64(&x["ciphertext"]),
                        dry_run: false,
                    },
                )
                .unwrap();
            assert_eq!(got.plaintext.expose(), &unb64(&x["plaintext"])[..], "{}", c["spec"]);
        }
    }
    for s in cases["secrets"].as_array().unwrap() {
        for v in s["versions"].as_array().unwrap() {
            let got = e
                .get_secret_value(
                    &me(),
                    GetSecretValueRequest {
                        secret_name: text(&s["name"]),
                        version_stage: Some(text(&v["stage"])),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(
                (got.version_id.as_str(), got.secret_data.expose()),
                (text(&v["version_id"]).as_str(), text(&v["value"]).as_str())
            );
        }
    }
    // Each key kept its metadata.
    for c in cases["symmetric"].as_array().unwrap().iter().chain(cases["asymmetric"].as_array().unwrap()) {
        let md = e.describe_key(&me(), &text(&c["key_id"])).unwrap().key_metadata;
        assert_eq!((md.key_spec.as_str(), md.key_state.as_str()), (text(&c["spec"]).as_str(), "Enabled"));
    }
}

/// Writes `tests/vectors/` anew with this build (see the module comment).
fn write_vectors() {
    let out = vectors();
    let store = out.join("store");
    let _ = std::fs::remove_dir_all(&store);
    std::fs::create_dir_all(&store).unwrap();
    let e = open(&store);
    let mut symmetric = Vec::new();
    for spec in ["Aliyun_AES_256", "Aliyun_SM4"] {
        let key_id = e
            .create_key(&me(), CreateKeyRequest { key_spec: Some(spec.into()), ..Default::default() })
            .unwrap()
            .key_metadata
            .key_id;
        symmetric.push((spec, key_id, None));
    }
    // Imported material, known: the blob can be opened without the engine.
    for (spec, material) in [("Aliyun_AES_256", vec![0x42u8; 32]), ("Aliyun_SM4", vec![0x24u8; 16])] {
        let key_id = e
            .create_key(
                &me(),
                CreateKeyRequest { key_spec: Some(spec.into()), origin: Some("EXTERNAL".into()), ..Default::default() },
            )
            .unwrap()
            .key_metadata
            .key_id;
        let p = e
            .get_parameters_for_import(
                &me(),
                GetParametersForImportRequest {
                    key_id: key_id.clone(),
                    wrapping_key_spec: "RSA_2048".into(),
                    wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
                },
            )
            .unwrap();
        let alg = AsymAlgorithm::parse("RSAES_OAEP_SHA_256").unwrap();
        let wrapped = encrypt_to_public(KeySpec::Rsa2048, &p.public_key, alg, &material).unwrap();
        e.import_key_material(
            &me(),
            ImportKeyMaterialRequest {
                key_id: key_id.clone(),
                encrypted_key_material: wrapped,
                import_token: p.import_token.clone(),
                key_material_expire_unix: None,
            },
        )
        .unwrap();
        symmetric.push((spec, key_id, Some(material)));
    }
    let symmetric: Vec<Value> = symmetric
        .into_iter()
        .map(|(spec, key_id, material)| {
            let plaintext = format!("frozen {spec} plaintext").into_bytes();
            let blob = e
                .encrypt(
                    &me(),
                    EncryptRequest {
                        key_id: key_id.clone(),
                        plaintext: SecretBytes::new(plaintext.clone()),
                        encryption_context: Some(CONTEXT.into()),
                        dry_run: false,
                    },
                )
                .unwrap()
                .ciphertext_blob;
            json!({"spec": spec, "key_id": key_id, "plaintext": b64(&plaintext), "blob": b64(&blob),
                   "material": material.map(|m| b64(&m))})
        })
        .collect();
    let data_keys: Vec<Value> = symmetric
        .iter()
        .map(|c| {
            let d = e
                .generate_data_key(
                    &me(),
                    GenerateDataKeyRequest {
                        key_id: text(&c["key_id"]),
                        encryption_context: Some(CONTEXT.into()),
                        ..Default::default()
                    },
                )
                .unwrap();
            json!({"key_id": c["key_id"], "plaintext": b64(d.plaintext.expose()), "blob": b64(&d.ciphertext_blob)})
        })
        .collect();
    let mut asymmetric = Vec::new();
    for (spec, usage, sign, encrypt) in [
        ("RSA_2048", "SIGN/VERIFY", Some("RSA_PSS_SHA_256"), None),
        ("RSA_2048", "ENCRYPT/DECRYPT", None, Some("RSAES_OAEP_SHA_256")),
        ("RSA_3072", "SIGN/VERIFY", Some("RSA_PKCS1_SHA_256"), None),
        ("RSA_3072", "ENCRYPT/DECRYPT", None, Some("RSAES_OAEP_SHA_1")),
        ("EC_P256", "SIGN/VERIFY", Some("ECDSA_SHA_256"), None),
        ("EC_P256K", "SIGN/VERIFY", Some("ECDSA_SHA_256"), None),
        ("EC_SM2", "SIGN/VERIFY", Some("SM2DSA"), None),
        ("EC_SM2", "ENCRYPT/DECRYPT", None, Some("SM2PKE")),
    ] {
        let key_id = e
            .create_key(
                &me(),
                CreateKeyRequest { key_spec: Some(spec.into()), key_usage: Some(usage.into()), ..Default::default() },
            )
            .unwrap()
            .key_metadata
            .key_id;
        let version_id = e.list_key_versions(&me(), &key_id, PageRequest::default()).unwrap().key_versions.key_version
            [0]
        .key_version_id
        .clone();
        let public_key = e
            .get_public_key(&me(), KeyVersionRequest { key_id: key_id.clone(), key_version_id: version_id.clone() })
            .unwrap()
            .public_key;
        let mut case = json!({"spec": spec, "usage": usage, "key_id": key_id, "version_id": version_id,
                              "public_key": public_key});
        if let Some(algorithm) = sign {
            let digest = vec![0x5au8; 32];
            let value = e
                .asymmetric_sign(
                    &me(),
                    AsymmetricSignRequest {
                        key_id: key_id.clone(),
                        key_version_id: version_id.clone(),
                        algorithm: algorithm.into(),
                        digest: digest.clone(),
                        dry_run: false,
                    },
                )
                .unwrap()
                .value;
            case["sign"] = json!({"algorithm": algorithm, "digest": b64(&digest), "value": b64(&value)});
        }
        if let Some(algorithm) = encrypt {
            let plaintext = format!("frozen {spec} {algorithm}").into_bytes();
            let ciphertext = e
                .asymmetric_encrypt(
                    &me(),
                    AsymmetricEncryptRequest {
                        key_id: key_id.clone(),
                        key_version_id: version_id.clone(),
                        algorithm: algorithm.into(),
                        plaintext: SecretBytes::new(plaintext.clone()),
                        dry_run: false,
                    },
                )
                .unwrap()
                .ciphertext_blob;
            case["encrypt"] =
                json!({"algorithm": algorithm, "plaintext": b64(&plaintext), "ciphertext": b64(&ciphertext)});
        }
        asymmetric.push(case);
    }
    e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: "frozen/db".into(),
            secret_data: SecretString::new("first value".into()),
            version_id: "v1".into(),
            ..Default::default()
        },
    )
    .unwrap();
    e.put_secret_value(
        &me(),
        PutSecretValueRequest {
            secret_name: "frozen/db".into(),
            version_id: "v2".into(),
            secret_data: SecretString::new("second value".into()),
            secret_data_type: None,
            version_stages: None,
        },
    )
    .unwrap();
    let secrets = json!([{"name": "frozen/db", "versions": [
        {"version_id": "v2", "stage": "ACSCurrent", "value": "second value"},
        {"version_id": "v1", "stage": "ACSPrevious", "value": "first value"}]}]);
    drop(e);
    // Everything into the database file itself (the engine leaves its log to the next opener).
    let db = rusqlite::Connection::open(store.join("kms.db")).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    db.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(db);
    let cases = json!({"symmetric": symmetric, "data_keys": data_keys, "asymmetric": asymmetric, "secrets": secrets});
    std::fs::write(out.join("cases.json"), serde_json::to_string_pretty(&cases).unwrap() + "\n").unwrap();
    // Only the store and the root key are kept (an audit key or lock file would be noise).
    for entry in std::fs::read_dir(&store).unwrap() {
        let p = entry.unwrap().path();
        if !["kms.db", "root.key"].contains(&p.file_name().unwrap().to_str().unwrap()) {
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
    }
}
