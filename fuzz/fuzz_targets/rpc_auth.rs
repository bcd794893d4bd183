//! Request authentication: the V1 query signature (`Signature`, `SignatureMethod`, `Timestamp`,
//! `SignatureNonce`) and the V3 `Authorization: ACS3-HMAC-SHA256 …` header with its signed
//! headers, over arbitrary methods, queries, headers and bodies. Input: `method \n query \n
//! header lines (name: value) \n\n body`.
#![no_main]
use std::sync::{Arc, OnceLock};

use kms_core::{Principal, SystemClock};
use kms_sidecar::auth::{AccessKey, Authenticator, RequestParts};
use kms_sidecar::wire::params::Params;
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static Authenticator {
    static A: OnceLock<Authenticator> = OnceLock::new();
    A.get_or_init(|| {
        let key = AccessKey {
            id: "fuzzKey".into(),
            secret: zeroize::Zeroizing::new("fuzzSecret".into()),
            principal: Principal::Owner,
            enabled: true,
        };
        // A small nonce budget: a long run must not grow without bound.
        Authenticator::with_nonce_budget(vec![key], 900, Arc::new(SystemClock), 4096)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let method = parts.next().unwrap_or("");
    let query = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
    let owned: Vec<(String, String)> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let headers: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let params = Params::from_request(query, Some(body.as_bytes()));
    let r = RequestParts { method, path: "/", query, headers: &headers, body: body.as_bytes(), params: &params };
    let _ = auth().verify(&r);
});
