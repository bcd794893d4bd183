//! RAM-style policy documents: parse, then evaluate against a request, tags and a source address.
#![no_main]
use std::collections::BTreeMap;

use kms_core::policy::{evaluate, Policy, RequestContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let Ok(p) = Policy::parse("fuzz", &s) else { return };
    let tags: BTreeMap<String, String> = [("env".to_string(), "dev".to_string())].into();
    for (action, resource) in [
        ("kms:Encrypt", "acs:kms:cn-hangzhou:123:key/key-abc"),
        ("kms:GetSecretValue", "acs:kms:cn-hangzhou:123:secret/db"),
        ("kms:CreateAlias", "acs:kms:cn-hangzhou:123:alias/app"),
    ] {
        let _ = evaluate(
            std::slice::from_ref(&p),
            &RequestContext {
                action,
                resource,
                tags: Some(&tags),
                source_ip: Some("192.168.1.7".parse().unwrap()),
                secure_transport: false,
                now: 1_700_000_000,
            },
        );
    }
});
