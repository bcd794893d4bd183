//! The same key operations with ProtectionLevel SOFTWARE and HSM (a SoftHSM2 token through
//! PKCS#11), in one run: Encrypt/Decrypt with AES-256, AsymmetricSign with RSA-2048 and P-256.
//! `bench/hsm.sh` prints the HSM/SOFTWARE ratios.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kms_core::api::*;
use kms_core::crypto::softhsm::SoftHsm;
use kms_core::crypto::token::{Token, TokenConfig};
use kms_core::{Caller, Engine, EngineConfig, EngineOptions};
use zeroize::Zeroizing;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::init(dir.path(), "bench", "1234").expect("SoftHSM2 (bash .ci/setup)");
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let token = Token::open(&TokenConfig {
        module: hsm.module,
        token_label: "bench".into(),
        slot: None,
        pin: Zeroizing::new("1234".into()),
    })
    .unwrap();
    let e = Engine::open(EngineOptions {
        token: Some(token),
        ..EngineOptions::in_dir(dir.path(), EngineConfig::default()).unwrap()
    })
    .unwrap();
    let me = Caller::owner();
    let key = |spec: &str, level: &str| {
        let id = e
            .create_key(
                &me,
                CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    protection_level: Some(level.into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .key_metadata
            .key_id;
        let v = e.list_key_versions(&me, &id, PageRequest::default()).unwrap().key_versions.key_version[0]
            .key_version_id
            .clone();
        (id, v)
    };
    let mut g = c.benchmark_group("hsm");
    let pt = SecretBytes::from(&[7u8; 64][..]);
    let digest = kms_core::crypto::asym::sha256(b"benchmark");
    for level in ["SOFTWARE", "HSM"] {
        let lc = level.to_lowercase();
        let (k, _) = key("Aliyun_AES_256", level);
        let enc = EncryptRequest { key_id: k, plaintext: pt.clone(), encryption_context: None, dry_run: false };
        let blob = e.encrypt(&me, enc.clone()).unwrap().ciphertext_blob;
        g.bench_function(format!("encrypt_64b_{lc}"), |b| b.iter(|| black_box(e.encrypt(&me, enc.clone()).unwrap())));
        let dec = DecryptRequest { ciphertext_blob: blob, ..Default::default() };
        g.bench_function(format!("decrypt_64b_{lc}"), |b| b.iter(|| black_box(e.decrypt(&me, dec.clone()).unwrap())));
        for (name, spec, alg) in [("rsa2048_pss", "RSA_2048", "RSA_PSS_SHA_256"), ("p256", "EC_P256", "ECDSA_SHA_256")]
        {
            let (k, v) = key(spec, level);
            let req = AsymmetricSignRequest {
                key_id: k,
                key_version_id: v,
                algorithm: alg.into(),
                digest: digest.clone(),
                dry_run: false,
            };
            g.bench_function(format!("sign_{name}_{lc}"), |b| {
                b.iter(|| black_box(e.asymmetric_sign(&me, req.clone()).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
