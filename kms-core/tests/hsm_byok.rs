//! BYOK into the HSM: the wrapping key pair of GetParametersForImport is generated in a real
//! SoftHSM2 token and ImportKeyMaterial unwraps with `C_UnwrapKey`, so the material goes from the
//! caller's `openssl`-made ciphertext into a token object without passing through the engine.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{hsm_engine, list_objects, list_secret_keys, open_token, softhsm};
use kms_core::api::*;
use kms_core::clock::{ManualClock, DAY};
use kms_core::{Caller, ErrorCode};

/// `openssl pkeyutl -encrypt` of `material` under the DER public key, RSA-OAEP with SHA-1.
fn wrap(dir: &Path, public_der: &[u8], material: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("wrap.der"), public_der).unwrap();
    std::fs::write(dir.join("material.bin"), material).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", "wrap.der", "-in", "material.bin"])
        .args(["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1"])
        .output()
        .expect("openssl CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn material_is_unwrapped_inside_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(tmp.path()) else { return };
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let e = hsm_engine(dir, open_token(&module), clock.clone());
    let me = Caller::owner();
    let key = e
        .create_key(
            &me,
            CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                protection_level: Some("HSM".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata;
    assert_eq!((key.key_state.as_str(), key.protection_level.as_str()), ("PendingImport", "HSM"));
    let key = key.key_id;
    let params = |alg: &str, spec: &str| {
        e.get_parameters_for_import(
            &me,
            GetParametersForImportRequest {
                key_id: key.clone(),
                wrapping_key_spec: spec.into(),
                wrapping_algorithm: alg.into(),
            },
        )
    };
    let sm2 = params("SM2PKE", "EC_SM2").unwrap_err();
    assert_eq!(sm2.code(), ErrorCode::UnsupportedProtectionLevel, "SM2 wrapping keys cannot live in the token");
    let p = params("RSAES_OAEP_SHA_1", "RSA_2048").unwrap();
    assert!(
        list_objects(&module, "privkey").contains(&format!("kms-import:{}", p.import_token)),
        "wrapping key in the token"
    );
    let import = |wrapped: Vec<u8>, token: &str| {
        e.import_key_material(
            &me,
            ImportKeyMaterialRequest {
                key_id: key.clone(),
                encrypted_key_material: wrapped,
                import_token: token.into(),
                key_material_expire_unix: None,
            },
        )
    };

    // Bad input: wrong length, tampered ciphertext. Nothing is left behind in the token.
    // (SoftHSM2 2.6 does not report the length of an unwrapped key, so a length AES has is only
    // refused by tokens that do; one it has not is refused by every token.)
    let short = import(wrap(dir, &p.public_key, &[1u8; 20]), &p.import_token).unwrap_err();
    assert_eq!(short.code(), ErrorCode::InvalidKeyMaterial);
    assert!(short.message().contains("32 bytes"), "{}", short.message());
    let mut tampered = wrap(dir, &p.public_key, &[2u8; 32]);
    tampered[7] ^= 1;
    assert_eq!(import(tampered, &p.import_token).unwrap_err().code(), ErrorCode::InvalidKeyMaterial);
    assert!(!list_secret_keys(&module).contains("kms-key-version:"), "no object from failed imports");

    // The real import: the key becomes usable and its material is a token object.
    let material = [0x5au8; 32];
    import(wrap(dir, &p.public_key, &material), &p.import_token).unwrap();
    let md = e.describe_key(&me, &key).unwrap().key_metadata;
    assert_eq!(md.key_state, "Enabled");
    let ct = e
        .encrypt(
            &me,
            EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(&b"byok"[..]), ..Default::default() },
        )
        .unwrap()
        .ciphertext_blob;
    let decrypt = |ct: &[u8]| e.decrypt(&me, DecryptRequest { ciphertext_blob: ct.to_vec(), ..Default::default() });
    assert_eq!(decrypt(&ct).unwrap().plaintext.expose(), b"byok");
    let listing = list_secret_keys(&module);
    assert_eq!(listing.matches("kms-key-version:").count(), 1, "{listing}");
    // Unwrapped material was outside once, so it is not "never extractable" – but it is
    // sensitive, not extractable, and good for encrypt/decrypt only.
    assert!(listing.contains("Usage:      encrypt, decrypt\n"), "{listing}");
    assert!(listing.contains("Access:     sensitive\n"), "{listing}");

    // Other material is refused and the current object is untouched.
    let other = import(wrap(dir, &p.public_key, &[0x77u8; 32]), &p.import_token).unwrap_err();
    assert_eq!(other.code(), ErrorCode::InvalidKeyMaterial);
    assert_eq!(decrypt(&ct).unwrap().plaintext.expose(), b"byok");
    assert_eq!(list_secret_keys(&module).matches("kms-key-version:").count(), 1);

    // DeleteKeyMaterial destroys the token object; re-importing the same material revives the
    // old ciphertext, so the token holds exactly the bytes the caller wrapped.
    e.delete_key_material(&me, &key).unwrap();
    assert!(!list_secret_keys(&module).contains("kms-key-version:"), "material shredded in the token");
    assert_eq!(decrypt(&ct).unwrap_err().code(), ErrorCode::PendingImport);
    import(wrap(dir, &p.public_key, &material), &p.import_token).unwrap();
    assert_eq!(decrypt(&ct).unwrap().plaintext.expose(), b"byok");

    // The store holds the object's label only.
    let db = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
    let rec: Vec<u8> = db.query_row("SELECT sealed FROM key_versions", [], |r| r.get(0)).unwrap();
    assert_eq!(rec[0], 0x10);
    assert!(std::str::from_utf8(&rec[1..]).unwrap().starts_with("kms-key-version:"));
    drop(db);

    // OAEP with SHA-256: SoftHSM2 2.6 cannot unwrap with it and says so.
    let p256 = params("RSAES_OAEP_SHA_256", "RSA_2048").unwrap();
    std::fs::write(dir.join("wrap.der"), &p256.public_key).unwrap();
    std::fs::write(dir.join("material.bin"), material).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", "wrap.der", "-in", "material.bin"])
        .args(["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"])
        .output()
        .unwrap();
    match import(out.stdout, &p256.import_token) {
        Ok(()) => assert_eq!(decrypt(&ct).unwrap().plaintext.expose(), b"byok"),
        Err(err) => {
            assert_eq!(err.code(), ErrorCode::UnsupportedProtectionLevel);
            assert!(err.message().contains("RSAES_OAEP_SHA_1"), "{}", err.message());
        }
    }

    // Import tokens expire after 24 h; maintenance then destroys their wrapping keys in the token.
    clock.advance(DAY);
    let expired = import(wrap(dir, &p.public_key, &material), &p.import_token).unwrap_err();
    assert_eq!(expired.code(), ErrorCode::ExpiredImportToken);
    assert_eq!(e.run_maintenance().tokens_purged, 2);
    assert!(!list_objects(&module, "privkey").contains("kms-import:"), "wrapping keys destroyed");
    assert_eq!(decrypt(&ct).unwrap().plaintext.expose(), b"byok", "the imported key stays");
}
