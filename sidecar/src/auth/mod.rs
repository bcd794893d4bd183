//! Authentication: which access key signed a request, checked with either signature scheme, a
//! timestamp skew limit and nonce replay rejection. Errors carry the gateway's codes (API.md §3, §6).

pub mod nonce;
pub use kms_client::sign;

use std::collections::HashMap;
use std::sync::Arc;

use kms_core::{Caller, Clock, ErrorCode, KmsError, Principal};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::wire::params::Params;
use nonce::{NonceCache, Refused};

/// Nonces remembered per access key: 1 Mi × ~26 bytes ≈ 26 MiB at most for one key; at 40 k
/// requests/s from one key that still covers the last 26 s of timestamps.
pub const DEFAULT_NONCES_PER_KEY: usize = 1 << 20;
use sign::{V1Method, V3Authorization};

/// An access key pair and the principal it acts as.
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: Zeroizing<String>,
    pub principal: Principal,
    pub enabled: bool,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey").field("id", &self.id).field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// What a request is, for verification.
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Raw query string (without `?`).
    pub query: &'a str,
    /// `(lower-case name, value)`.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub params: &'a Params,
}

impl RequestParts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    V1,
    V3,
}

#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub access_key_id: String,
    pub scheme: Scheme,
    /// The request's signature nonce and when it stops being acceptable (its timestamp plus the
    /// accepted skew): a mutating request claims it in the store for that long.
    pub nonce: String,
    pub nonce_expires_at: i64,
}

pub struct Authenticator {
    keys: HashMap<String, AccessKey>,
    nonces: NonceCache,
    max_skew_secs: i64,
    clock: Arc<dyn Clock>,
}

/// Headers a V3 signature must cover, so none of them can be swapped on a captured request.
const V3_REQUIRED_SIGNED: &[&str] = &["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"];

impl Authenticator {
    pub fn new(keys: Vec<AccessKey>, max_skew_secs: i64, clock: Arc<dyn Clock>) -> Self {
        Self::with_nonce_budget(keys, max_skew_secs, clock, DEFAULT_NONCES_PER_KEY)
    }

    /// As `new`, holding at most `nonces_per_key` nonces per access key (module `nonce`).
    pub fn with_nonce_budget(
        keys: Vec<AccessKey>,
        max_skew_secs: i64,
        clock: Arc<dyn Clock>,
        nonces_per_key: usize,
    ) -> Self {
        Authenticator {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            nonces: NonceCache::new(max_skew_secs, nonces_per_key),
            max_skew_secs,
            clock,
        }
    }

    /// The replay cache's gauges for `/metrics` (module `nonce`).
    pub fn render_metrics(&self, out: &mut String) {
        self.nonces.render_metrics(out)
    }

    pub fn verify(&self, r: &RequestParts<'_>) -> Result<Authenticated, KmsError> {
        match r.header("authorization") {
            Some(a) if a.trim_start().starts_with("ACS3-") => self.verify_v3(r, a),
            Some(a) if !a.trim().is_empty() && !r.params.contains("Signature") => Err(KmsError::with_detail(
                ErrorCode::IncompleteSignature,
                "The Authorization header must use ACS3-HMAC-SHA256.",
            )),
            _ if r.params.contains("Signature") => self.verify_v1(r),
            _ => Err(KmsError::with_detail(
                ErrorCode::IncompleteSignature,
                "The request is not signed: send a Signature parameter (V1) or an ACS3-HMAC-SHA256 Authorization header (V3).",
            )),
        }
    }

    /// The console's sign-in: the principal of access key `id` when `secret` is its secret and
    /// the key is enabled. Which of the three failed is not said (nor told by the time taken:
    /// an unknown id is compared against a stand-in secret).
    pub fn sign_in(&self, id: &str, secret: &str) -> Result<kms_core::Principal, KmsError> {
        let key = self.keys.get(id);
        let expected: &[u8] = key.map_or(b"-no such key: a stand-in secret of some length-", |k| k.secret.as_bytes());
        let matches = bool::from(expected.ct_eq(secret.as_bytes()));
        match key {
            Some(k) if matches && k.enabled && !secret.is_empty() => Ok(k.principal.clone()),
            _ => Err(KmsError::with_detail(
                ErrorCode::InvalidAccessKeyIdNotFound,
                "The access key or its secret is wrong, or the key is disabled.",
            )),
        }
    }

    fn key(&self, id: &str) -> Result<&AccessKey, KmsError> {
        let k = self.keys.get(id).ok_or_else(|| KmsError::new(ErrorCode::InvalidAccessKeyIdNotFound))?;
        if !k.enabled {
            return Err(KmsError::new(ErrorCode::AccessKeyDisabled));
        }
        Ok(k)
    }

    fn verify_v1(&self, r: &RequestParts<'_>) -> Result<Authenticated, KmsError> {
        let p = r.params;
        let ak = p.get("AccessKeyId").filter(|s| !s.is_empty()).ok_or_else(|| KmsError::missing("AccessKeyId"))?;
        let key = self.key(ak)?;
        let method = match p.get("SignatureMethod") {
            None | Some("") => V1Method::HmacSha1,
            Some(m) => V1Method::parse(m)
                .ok_or_else(|| KmsError::invalid("SignatureMethod", "use HMAC-SHA1 or HMAC-SHA256"))?,
        };
        if let Some(v) = p.get("SignatureVersion").filter(|v| *v != "1.0") {
            return Err(KmsError::invalid("SignatureVersion", format_args!("{v:?} is not 1.0")));
        }
        let sts = sign::v1_string_to_sign(r.method, p.iter());
        let expected = sign::v1_signature(method, &key.secret, &sts);
        let got = p.get("Signature").unwrap_or_default();
        if !bool::from(expected.as_bytes().ct_eq(got.as_bytes())) {
            return Err(signature_mismatch(&sts));
        }
        let ts =
            p.get("Timestamp").filter(|s| !s.is_empty()).ok_or_else(|| KmsError::new(ErrorCode::IllegalTimestamp))?;
        let t = self.check_time(ts)?;
        let nonce =
            p.get("SignatureNonce").filter(|s| !s.is_empty()).ok_or_else(|| KmsError::missing("SignatureNonce"))?;
        self.check_nonce(ak, nonce, t)?;
        Ok(Authenticated {
            caller: Caller::new(key.principal.clone()),
            access_key_id: ak.to_string(),
            scheme: Scheme::V1,
            nonce: nonce.to_string(),
            nonce_expires_at: t + self.max_skew_secs,
        })
    }

    fn verify_v3(&self, r: &RequestParts<'_>, header: &str) -> Result<Authenticated, KmsError> {
        let auth = V3Authorization::parse(header).ok_or_else(|| {
            KmsError::with_detail(
                ErrorCode::IncompleteSignature,
                "Authorization needs Credential, SignedHeaders and Signature.",
            )
        })?;
        if auth.algorithm != sign::V3_ALGORITHM {
            return Err(KmsError::with_detail(
                ErrorCode::IncompleteSignature,
                format_args!("Unsupported signature algorithm {:?}; use ACS3-HMAC-SHA256.", auth.algorithm),
            ));
        }
        let key = self.key(&auth.credential)?;
        let signed: Vec<&str> = auth.signed_headers.split(';').collect();
        let mut required: Vec<&str> = V3_REQUIRED_SIGNED.to_vec();
        if !r.params.contains("Action") {
            required.push("x-acs-action");
        }
        if let Some(missing) = required.iter().find(|h| !signed.contains(h)) {
            return Err(KmsError::with_detail(
                ErrorCode::IncompleteSignature,
                format_args!("SignedHeaders must include {missing}."),
            ));
        }
        let payload_hash = sign::sha256_hex(r.body);
        if r.header("x-acs-content-sha256") != Some(payload_hash.as_str()) {
            return Err(KmsError::with_detail(
                ErrorCode::SignatureDoesNotMatch,
                "x-acs-content-sha256 does not match the SHA-256 of the request body.",
            ));
        }
        let query: Vec<(String, String)> = form_urlencoded::parse(r.query.as_bytes()).into_owned().collect();
        let cr = sign::v3_canonical_request(
            r.method,
            r.path,
            query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            r.headers,
            &auth.signed_headers,
            &payload_hash,
        );
        let sts = sign::v3_string_to_sign(&cr);
        let expected = sign::v3_signature(&key.secret, &sts);
        if !bool::from(expected.as_bytes().ct_eq(auth.signature.to_ascii_lowercase().as_bytes())) {
            return Err(signature_mismatch(&sts));
        }
        let ts = r.header("x-acs-date").ok_or_else(|| KmsError::new(ErrorCode::IllegalTimestamp))?;
        let t = self.check_time(ts)?;
        let nonce = r.header("x-acs-signature-nonce").ok_or_else(|| KmsError::missing("x-acs-signature-nonce"))?;
        self.check_nonce(&auth.credential, nonce, t)?;
        Ok(Authenticated {
            caller: Caller::new(key.principal.clone()),
            access_key_id: auth.credential,
            scheme: Scheme::V3,
            nonce: nonce.to_string(),
            nonce_expires_at: t + self.max_skew_secs,
        })
    }

    /// The request's timestamp, if it lies within the accepted skew.
    fn check_time(&self, ts: &str) -> Result<i64, KmsError> {
        let t = kms_core::clock::parse_iso(ts.trim()).ok_or_else(|| {
            KmsError::with_detail(
                ErrorCode::IllegalTimestamp,
                format_args!("{ts:?} is not an ISO-8601 UTC time such as 2025-01-01T12:00:00Z."),
            )
        })?;
        let skew = (t - self.clock.now()).abs();
        if skew > self.max_skew_secs {
            return Err(KmsError::with_detail(
                ErrorCode::InvalidTimeStampExpired,
                format_args!(
                    "{ts} is {skew}s away from the server's time; at most {}s is accepted.",
                    self.max_skew_secs
                ),
            ));
        }
        Ok(t)
    }

    fn check_nonce(&self, ak: &str, nonce: &str, ts: i64) -> Result<(), KmsError> {
        match self.nonces.check_and_insert(ak, nonce, ts, self.clock.now()) {
            Ok(()) => Ok(()),
            Err(Refused::Replayed) => Err(KmsError::new(ErrorCode::SignatureNonceUsed)),
            Err(Refused::BeyondHorizon) => Err(KmsError::with_detail(
                ErrorCode::InvalidTimeStampExpired,
                "This access key sent more requests within the timestamp window than replay protection \
                 holds; requests signed this long ago are refused for now. Sign again and retry.",
            )),
        }
    }

    /// Nonces held in memory now.
    pub fn nonces_held(&self) -> usize {
        self.nonces.len()
    }
}

/// py-core parses this message: the text after `:` must be the server's string to sign.
fn signature_mismatch(sts: &str) -> KmsError {
    KmsError::from_parts(
        ErrorCode::SignatureDoesNotMatch,
        format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
    )
}
