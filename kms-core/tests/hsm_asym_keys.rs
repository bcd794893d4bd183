//! Asymmetric keys with ProtectionLevel HSM in a real SoftHSM2 token: key pairs generated inside
//! it, signing and decryption done by it, results checked by the `openssl` CLI; the store holds
//! only object labels and public keys.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{close_all_sessions, hsm_engine, list_objects, open_token, softhsm};
use kms_core::api::*;
use kms_core::clock::ManualClock;
use kms_core::{Caller, Engine, ErrorCode};
use sha2::{Digest, Sha256};

fn open(dir: &Path, module: &Path) -> Engine {
    hsm_engine(dir, open_token(module), Arc::new(ManualClock::new(1_700_000_000)))
}

fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl CLI");
    assert!(
        out.status.success() || args.contains(&"-verify"),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Hsm<'a> {
    e: &'a Engine,
    me: Caller,
    dir: &'a Path,
}

impl Hsm<'_> {
    /// A key of `spec`/`usage` in the token, its first version id, and its public key in `name`.pem.
    fn key(&self, spec: &str, usage: &str, name: &str) -> (String, String) {
        let md = self
            .e
            .create_key(
                &self.me,
                CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    protection_level: Some("HSM".into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .key_metadata;
        assert_eq!(md.protection_level, "HSM");
        let v = self.first_version(&md.key_id);
        self.public_pem(&md.key_id, &v, name);
        (md.key_id, v)
    }

    fn first_version(&self, key: &str) -> String {
        let v = self.e.list_key_versions(&self.me, key, PageRequest::default()).unwrap();
        v.key_versions.key_version[0].key_version_id.clone()
    }

    fn public_pem(&self, key: &str, version: &str, name: &str) {
        let pk = self
            .e
            .get_public_key(&self.me, KeyVersionRequest { key_id: key.into(), key_version_id: version.into() })
            .unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), pk.public_key).unwrap();
    }

    fn sign(&self, key: &str, version: &str, alg: &str, digest: &[u8]) -> Vec<u8> {
        self.e
            .asymmetric_sign(
                &self.me,
                AsymmetricSignRequest {
                    key_id: key.into(),
                    key_version_id: version.into(),
                    algorithm: alg.into(),
                    digest: digest.to_vec(),
                    dry_run: false,
                },
            )
            .unwrap()
            .value
    }

    fn verify(&self, key: &str, version: &str, alg: &str, digest: &[u8], value: &[u8]) -> bool {
        self.e
            .asymmetric_verify(
                &self.me,
                AsymmetricVerifyRequest {
                    key_id: key.into(),
                    key_version_id: version.into(),
                    algorithm: alg.into(),
                    digest: digest.to_vec(),
                    value: value.to_vec(),
                    dry_run: false,
                },
            )
            .unwrap()
            .value
    }

    /// The signature checked by `openssl pkeyutl -verify` with the public key from GetPublicKey.
    fn openssl_verifies(&self, name: &str, digest: &[u8], sig: &[u8], opts: &[&str]) -> bool {
        std::fs::write(self.dir.join("digest.bin"), digest).unwrap();
        std::fs::write(self.dir.join("sig.bin"), sig).unwrap();
        let pem = format!("{name}.pem");
        let mut args = vec!["pkeyutl", "-verify", "-pubin", "-inkey", &pem, "-in", "digest.bin", "-sigfile", "sig.bin"];
        args.extend_from_slice(opts);
        openssl(self.dir, &args).status.success()
    }

    fn decrypt(&self, key: &str, version: &str, alg: &str, ct: &[u8]) -> Result<Vec<u8>, kms_core::KmsError> {
        self.e
            .asymmetric_decrypt(
                &self.me,
                AsymmetricDecryptRequest {
                    key_id: key.into(),
                    key_version_id: version.into(),
                    algorithm: alg.into(),
                    ciphertext_blob: ct.to_vec(),
                    dry_run: false,
                },
            )
            .map(|r| r.plaintext.expose().to_vec())
    }
}

#[test]
fn hsm_protected_key_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(tmp.path()) else { return };
    let dir = tmp.path();
    let digest = Sha256::digest(b"signed inside the token").to_vec();
    let e = open(dir, &module);
    let h = Hsm { e: &e, me: Caller::owner(), dir };

    // RSA-2048 signing: PSS (salt = digest length) and PKCS#1 v1.5, both checked by openssl.
    let (rsa, rsa_v1) = h.key("RSA_2048", "SIGN/VERIFY", "rsa");
    let pss = h.sign(&rsa, &rsa_v1, "RSA_PSS_SHA_256", &digest);
    assert!(h.verify(&rsa, &rsa_v1, "RSA_PSS_SHA_256", &digest, &pss));
    let pss_opts = ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:-1"];
    assert!(h.openssl_verifies("rsa", &digest, &pss, &pss_opts));
    let pkcs1 = h.sign(&rsa, &rsa_v1, "RSA_PKCS1_SHA_256", &digest);
    assert!(h.openssl_verifies("rsa", &digest, &pkcs1, &["-pkeyopt", "digest:sha256"]));
    let mut bad = pkcs1.clone();
    bad[10] ^= 1;
    assert!(!h.verify(&rsa, &rsa_v1, "RSA_PKCS1_SHA_256", &digest, &bad), "a tampered signature is false");
    assert!(!h.openssl_verifies("rsa", &digest, &bad, &["-pkeyopt", "digest:sha256"]));

    // ECDSA P-256: DER signatures openssl accepts.
    let (ec, ec_v1) = h.key("EC_P256", "SIGN/VERIFY", "p256");
    let sig = h.sign(&ec, &ec_v1, "ECDSA_SHA_256", &digest);
    assert_eq!(sig[0], 0x30, "DER SEQUENCE, not r‖s");
    assert!(h.verify(&ec, &ec_v1, "ECDSA_SHA_256", &digest, &sig));
    assert!(h.openssl_verifies("p256", &digest, &sig, &[]));

    // secp256k1 where the token has the curve; otherwise refused naming it.
    match e.create_key(
        &h.me,
        CreateKeyRequest {
            key_spec: Some("EC_P256K".into()),
            protection_level: Some("HSM".into()),
            ..Default::default()
        },
    ) {
        Ok(r) => {
            let k = r.key_metadata.key_id;
            let v = h.first_version(&k);
            h.public_pem(&k, &v, "k1");
            let sig = h.sign(&k, &v, "ECDSA_SHA_256", &digest);
            assert!(h.openssl_verifies("k1", &digest, &sig, &[]));
            eprintln!("secp256k1: generated and signed in the token");
        }
        Err(err) => {
            assert_eq!(err.code(), ErrorCode::UnsupportedProtectionLevel);
            assert!(err.message().contains("curve"), "{}", err.message());
            eprintln!("secp256k1: {}", err.message());
        }
    }

    // RSA-2048 decryption in the token: ciphertexts from the engine and from openssl.
    let (enc, enc_v1) = h.key("RSA_2048", "ENCRYPT/DECRYPT", "enc");
    for alg in ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"] {
        let ct = e
            .asymmetric_encrypt(
                &h.me,
                AsymmetricEncryptRequest {
                    key_id: enc.clone(),
                    key_version_id: enc_v1.clone(),
                    algorithm: alg.into(),
                    plaintext: SecretBytes::from(&b"for the token only"[..]),
                    dry_run: false,
                },
            )
            .unwrap()
            .ciphertext_blob;
        match h.decrypt(&enc, &enc_v1, alg, &ct) {
            Ok(pt) => assert_eq!(pt, b"for the token only"),
            // SoftHSM2 before 2.7 does OAEP with SHA-1 only; the refusal must say so.
            Err(err) if alg == "RSAES_OAEP_SHA_256" => {
                assert_eq!(err.code(), ErrorCode::UnsupportedProtectionLevel);
                assert!(err.message().contains("RSAES_OAEP_SHA_256"), "{}", err.message());
                continue;
            }
            Err(err) => panic!("{alg}: {err}"),
        }
        let mut bad = ct.clone();
        bad[100] ^= 1;
        assert_eq!(h.decrypt(&enc, &enc_v1, alg, &bad).unwrap_err().code(), ErrorCode::InvalidParameter, "{alg}");
    }
    std::fs::write(dir.join("msg.bin"), b"from openssl").unwrap();
    openssl(
        dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "enc.pem",
            "-in",
            "msg.bin",
            "-out",
            "ct.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ],
    );
    let ct = std::fs::read(dir.join("ct.bin")).unwrap();
    assert_eq!(h.decrypt(&enc, &enc_v1, "RSAES_OAEP_SHA_1", &ct).unwrap(), b"from openssl");

    // A new version is a new key pair in the token.
    let rsa_v2 = e.create_key_version(&h.me, &rsa).unwrap().key_version.key_version_id;
    assert_ne!(rsa_v2, rsa_v1);
    h.public_pem(&rsa, &rsa_v2, "rsa2");
    assert_ne!(std::fs::read(dir.join("rsa.pem")).unwrap(), std::fs::read(dir.join("rsa2.pem")).unwrap());
    let sig2 = h.sign(&rsa, &rsa_v2, "RSA_PSS_SHA_256", &digest);
    assert!(h.openssl_verifies("rsa2", &digest, &sig2, &pss_opts));
    assert!(!h.openssl_verifies("rsa", &digest, &sig2, &pss_opts), "signed by the new version, not the old");

    // The token holds the private keys: sensitive, never extractable, one per version.
    let listing = list_objects(&module, "privkey");
    assert!(listing.contains(&format!("kms-key-version:{rsa_v2}")), "{listing}");
    let n = listing.matches("kms-key-version:").count();
    assert!(n >= 4, "{listing}");
    assert_eq!(listing.matches("never extractable").count(), n, "{listing}");
    assert!(!list_objects(&module, "pubkey").contains("kms-key-version:"), "public halves are not kept");
    drop(e);

    // The store holds references: each HSM version record is its label (and public key), nothing else.
    let db = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
    let mut q = db.prepare("SELECT version_id, sealed FROM key_versions").unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    assert!(rows.len() >= 4);
    for (v, rec) in &rows {
        let label = format!("kms-key-version:{v}");
        assert_eq!(rec[0], 0x11, "a key-pair reference");
        assert_eq!(&rec[3..3 + label.len()], label.as_bytes());
        let spki = &rec[3 + label.len()..];
        let pem = openssl::pkey::PKey::public_key_from_der(spki).expect("the rest is the public key");
        assert!(pem.public_key_to_der().unwrap() == spki);
    }
    drop(q);
    drop(db);

    // Reopened, the token still signs and decrypts for the old versions.
    let e = open(dir, &module);
    let h = Hsm { e: &e, me: Caller::owner(), dir };
    let sig = h.sign(&ec, &ec_v1, "ECDSA_SHA_256", &digest);
    assert!(h.openssl_verifies("p256", &digest, &sig, &[]));
    assert_eq!(h.decrypt(&enc, &enc_v1, "RSAES_OAEP_SHA_1", &ct).unwrap(), b"from openssl");

    // Every session closed under the engine (a module reset): it reconnects and finds its keys.
    close_all_sessions(&module);
    let sig = h.sign(&rsa, &rsa_v2, "RSA_PKCS1_SHA_256", &digest);
    assert!(h.openssl_verifies("rsa2", &digest, &sig, &["-pkeyopt", "digest:sha256"]));
    close_all_sessions(&module);
    assert_eq!(h.decrypt(&enc, &enc_v1, "RSAES_OAEP_SHA_1", &ct).unwrap(), b"from openssl");
}
