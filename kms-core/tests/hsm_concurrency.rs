//! HSM keys under concurrent load: threads encrypting, decrypting and signing through the session
//! pool, with every session of the process closed between rounds, so that all threads then meet
//! stale pooled sessions at once and recover concurrently. Every call must succeed and every
//! result must be right. (The sessions are closed between calls, not during them: SoftHSM2 itself
//! crashes when a session is closed under a call in flight.)

mod common;

use std::sync::{Arc, Barrier};

use common::{close_all_sessions, hsm_engine, open_token, softhsm};
use kms_core::api::*;
use kms_core::clock::ManualClock;
use kms_core::Caller;

const THREADS: usize = 6;
const ROUNDS: usize = 10;
const OPS: usize = 20;

#[test]
fn pool_survives_concurrent_use_and_session_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(module) = softhsm(tmp.path()) else { return };
    let dir = tmp.path();
    let e = Arc::new(hsm_engine(dir, open_token(&module), Arc::new(ManualClock::new(1_700_000_000))));
    let me = Caller::owner();
    let aes = e
        .create_key(&me, CreateKeyRequest { protection_level: Some("HSM".into()), ..Default::default() })
        .unwrap()
        .key_metadata
        .key_id;
    let ec = e
        .create_key(
            &me,
            CreateKeyRequest {
                key_spec: Some("EC_P256".into()),
                protection_level: Some("HSM".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .key_metadata
        .key_id;
    let ec_v = e.list_key_versions(&me, &ec, PageRequest::default()).unwrap().key_versions.key_version[0]
        .key_version_id
        .clone();

    // Workers and this thread meet twice per round: after the round's work, and after the
    // sessions were closed.
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, aes, ec, ec_v, barrier) = (e.clone(), aes.clone(), ec.clone(), ec_v.clone(), barrier.clone());
            std::thread::spawn(move || {
                let me = Caller::owner();
                // Failures are collected, not panicked on, so that no thread leaves the others
                // waiting at the barrier.
                let mut failures = Vec::new();
                let one = |i: usize| -> Result<(), String> {
                    let msg = format!("thread {t} op {i}");
                    let ctx = Some(format!(r#"{{"t":"{t}"}}"#));
                    let plaintext = SecretBytes::from(msg.as_bytes());
                    let req = EncryptRequest {
                        key_id: aes.clone(),
                        plaintext,
                        encryption_context: ctx.clone(),
                        dry_run: false,
                    };
                    let ct = e.encrypt(&me, req).map_err(|err| format!("encrypt {t}/{i}: {err}"))?;
                    let req =
                        DecryptRequest { ciphertext_blob: ct.ciphertext_blob, encryption_context: ctx, dry_run: false };
                    let back = e.decrypt(&me, req).map_err(|err| format!("decrypt {t}/{i}: {err}"))?;
                    if back.plaintext.expose() != msg.as_bytes() {
                        return Err(format!("decrypt {t}/{i}: wrong plaintext"));
                    }
                    if i.is_multiple_of(10) {
                        let digest = kms_core::crypto::asym::sha256(msg.as_bytes());
                        let (key_id, key_version_id, algorithm) =
                            (ec.clone(), ec_v.clone(), "ECDSA_SHA_256".to_string());
                        let req = AsymmetricSignRequest {
                            key_id: key_id.clone(),
                            key_version_id: key_version_id.clone(),
                            algorithm: algorithm.clone(),
                            digest: digest.clone(),
                            dry_run: false,
                        };
                        let sig = e.asymmetric_sign(&me, req).map_err(|err| format!("sign {t}/{i}: {err}"))?;
                        let req = AsymmetricVerifyRequest {
                            key_id,
                            key_version_id,
                            algorithm,
                            digest,
                            value: sig.value,
                            dry_run: false,
                        };
                        if !e.asymmetric_verify(&me, req).map_err(|err| format!("verify {t}/{i}: {err}"))?.value {
                            return Err(format!("verify {t}/{i}: the token's signature does not verify"));
                        }
                    }
                    Ok(())
                };
                for i in 0..ROUNDS * OPS {
                    if i.is_multiple_of(OPS) && i > 0 {
                        barrier.wait();
                        barrier.wait();
                    }
                    if let Err(f) = one(i) {
                        failures.push(f);
                    }
                }
                failures
            })
        })
        .collect();
    for _ in 1..ROUNDS {
        barrier.wait();
        close_all_sessions(&module);
        barrier.wait();
    }
    let failures: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} calls failed, first: {:?}",
        failures.len(),
        THREADS * ROUNDS * OPS,
        failures.first()
    );
}
