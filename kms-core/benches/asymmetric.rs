//! In-process AsymmetricSign / AsymmetricVerify / AsymmetricDecrypt per key spec, through the
//! engine (state checks, cache, OpenSSL). `bench/asymmetric.sh` prints them next to `openssl speed`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kms_core::api::*;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(EngineOptions::in_dir(dir.path(), EngineConfig::default()).unwrap()).unwrap();
    let me = Caller::owner();
    let key = |spec: &str, usage: &str| {
        let id = e
            .create_key(
                &me,
                CreateKeyRequest { key_spec: Some(spec.into()), key_usage: Some(usage.into()), ..Default::default() },
            )
            .unwrap()
            .key_metadata
            .key_id;
        let v = e.list_key_versions(&me, &id, PageRequest::default()).unwrap().key_versions.key_version[0]
            .key_version_id
            .clone();
        (id, v)
    };
    let digest = kms_core::crypto::asym::sha256(b"benchmark");
    let mut g = c.benchmark_group("asymmetric");
    for (name, spec, alg) in [
        ("rsa2048_pkcs1", "RSA_2048", "RSA_PKCS1_SHA_256"),
        ("rsa2048_pss", "RSA_2048", "RSA_PSS_SHA_256"),
        ("rsa3072_pkcs1", "RSA_3072", "RSA_PKCS1_SHA_256"),
        ("p256", "EC_P256", "ECDSA_SHA_256"),
        ("p256k", "EC_P256K", "ECDSA_SHA_256"),
        ("sm2", "EC_SM2", "SM2DSA"),
    ] {
        let (k, v) = key(spec, "SIGN/VERIFY");
        let sreq = AsymmetricSignRequest {
            key_id: k.clone(),
            key_version_id: v.clone(),
            algorithm: alg.into(),
            digest: digest.clone(),
            dry_run: false,
        };
        let sig = e.asymmetric_sign(&me, sreq.clone()).unwrap().value;
        g.bench_function(format!("sign_{name}"), |b| {
            b.iter(|| black_box(e.asymmetric_sign(&me, sreq.clone()).unwrap()))
        });
        let vreq = AsymmetricVerifyRequest {
            key_id: k,
            key_version_id: v,
            algorithm: alg.into(),
            digest: digest.clone(),
            value: sig,
            dry_run: false,
        };
        g.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| assert!(e.asymmetric_verify(&me, vreq.clone()).unwrap().value))
        });
    }
    for (name, spec, alg) in [("rsa2048_oaep256", "RSA_2048", "RSAES_OAEP_SHA_256"), ("sm2pke", "EC_SM2", "SM2PKE")] {
        let (k, v) = key(spec, "ENCRYPT/DECRYPT");
        let ct = e
            .asymmetric_encrypt(
                &me,
                AsymmetricEncryptRequest {
                    key_id: k.clone(),
                    key_version_id: v.clone(),
                    algorithm: alg.into(),
                    plaintext: SecretBytes::new(vec![1; 32]),
                    dry_run: false,
                },
            )
            .unwrap()
            .ciphertext_blob;
        let dreq = AsymmetricDecryptRequest {
            key_id: k,
            key_version_id: v,
            algorithm: alg.into(),
            ciphertext_blob: ct,
            dry_run: false,
        };
        g.bench_function(format!("decrypt_{name}"), |b| {
            b.iter(|| black_box(e.asymmetric_decrypt(&me, dreq.clone()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
