//! An RPC request after authentication: form parameters decoded into the action's typed request
//! and run by the engine – EncryptionContext, blobs, key specs, paging, tags, secrets and the
//! authorization of a limited principal included. Read-only actions only: a mutating one would
//! grow the store across millions of runs. Input: one byte picks the action (bit 7: the limited
//! principal), the rest is `query \n form body`; `@AES@`, `@RSA@`, `@EC@`, `@BLOB@` name real ones.
#![no_main]
use kms_core::api::{Action, ACTIONS};
use kms_core::{Caller, Principal};
use kms_sidecar::actions::dispatch;
use kms_sidecar::wire::params::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let reads: Vec<Action> = ACTIONS.iter().filter(|a| !a.mutating).map(|a| a.action).collect();
    let action = reads[(pick & 0x7f) as usize % reads.len()];
    let w = kms_fuzz::world();
    let (query, body) = kms_fuzz::split(rest, b'\n');
    let query = w.expand(&String::from_utf8_lossy(query));
    let body = w.expand(&String::from_utf8_lossy(body));
    let params = Params::from_request(&query, Some(body.as_bytes()));
    let caller = if pick & 0x80 != 0 { Caller::new(Principal::User("limited".into())) } else { Caller::owner() };
    if let Ok(out) = dispatch(&w.engine, &caller, action, &params) {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "{action:?} answered non-JSON");
    }
});
