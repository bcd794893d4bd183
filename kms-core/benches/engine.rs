//! In-process Encrypt / Decrypt / GenerateDataKey with a warm cache, and the bare AEAD underneath
//! for reference. `bench/kms-core.sh` runs this next to `openssl speed` and prints the ratios.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_core::api::*;
use kms_core::crypto::{Algorithm, SymCipher};
use kms_core::{Caller, Engine, EngineConfig, EngineOptions};

fn engine(dir: &std::path::Path) -> Engine {
    Engine::open(EngineOptions::in_dir(dir, EngineConfig::default()).unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let me = Caller::owner();
    let key = e.create_key(&me, CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let pt = SecretBytes::new(vec![0x5a; 64]);
    let enc = |ctx: Option<&str>| EncryptRequest {
        key_id: key.clone(),
        plaintext: pt.clone(),
        encryption_context: ctx.map(Into::into),
        dry_run: false,
    };
    let blob = e.encrypt(&me, enc(None)).unwrap().ciphertext_blob;

    let mut g = c.benchmark_group("kms-core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encrypt_64B", |b| b.iter(|| black_box(e.encrypt(&me, enc(None)).unwrap())));
    g.bench_function("encrypt_64B_with_context", |b| {
        b.iter(|| black_box(e.encrypt(&me, enc(Some(r#"{"bucket":"b1","object":"o/1"}"#))).unwrap()))
    });
    g.bench_function("decrypt_64B", |b| {
        b.iter(|| {
            black_box(
                e.decrypt(
                    &me,
                    DecryptRequest { ciphertext_blob: blob.clone(), encryption_context: None, dry_run: false },
                )
                .unwrap(),
            )
        })
    });
    g.bench_function("generate_data_key_32B", |b| {
        b.iter(|| {
            black_box(
                e.generate_data_key(&me, GenerateDataKeyRequest { key_id: key.clone(), ..Default::default() }).unwrap(),
            )
        })
    });
    let aead = SymCipher::new(Algorithm::Aes256Gcm, &[7u8; 32]).unwrap();
    g.bench_function("bare_aes256gcm_seal_64B", |b| b.iter(|| black_box(aead.seal(&[0u8; 12], b"", pt.expose()))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
