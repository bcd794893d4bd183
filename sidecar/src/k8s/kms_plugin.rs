//! The KMS provider plugin, API v2: kube-apiserver hands it a data-encryption key (DEK) to
//! encrypt under the configured CMK and later to decrypt.
//!
//! - `Encrypt` is the engine's Encrypt as the plugin's principal: the ciphertext is the KMS
//!   ciphertext blob (self-describing), `key_id` is `<key id>/<key version id>`, which changes on
//!   every rotation and is never reused, so the API server knows which data to rewrite.
//! - `Decrypt` refuses a `key_id` that is not the one the blob was made under (a swapped or
//!   tampered pair), and annotations that break the API's rules.
//! - `Status` does no cryptography: a DescribeKey as the plugin's principal (the same
//!   authorisation), `ok` only while the key is Enabled and the store answers. The first poll
//!   makes the service key `acs/ack` if it does not exist yet (one Encrypt).
//!
//! Encrypt and Decrypt are audited like API calls, with the API server's `uid` in the line's user
//! agent; Status polls are not (one a minute per API server would bury the trail).

use std::collections::HashMap;
use std::sync::Arc;

use kms_core::api::{decode_base64, encode_base64, Action};
use kms_core::{Caller, ErrorCode, KmsError};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::proto::kms_v2::key_management_service_server::KeyManagementService;
use super::proto::kms_v2::*;
use super::KmsPluginConfig;
use crate::server::{call_internal, AppState, Internal};
use crate::wire::params::Params;

/// Annotations: keys and values together stay under this (the API's rule).
const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

pub struct KmsPlugin {
    app: Arc<AppState>,
    key_id: String,
    principal: kms_core::Principal,
}

impl KmsPlugin {
    pub fn new(app: Arc<AppState>, cfg: &KmsPluginConfig) -> Result<KmsPlugin, String> {
        let principal =
            crate::config::parse_principal(&cfg.principal).map_err(|e| format!("kubernetes.kms.principal: {e}"))?;
        if cfg.key_id.trim().is_empty() {
            return Err("kubernetes.kms.key_id is empty".into());
        }
        Ok(KmsPlugin { app, key_id: cfg.key_id.trim().to_string(), principal })
    }

    async fn call(
        &self,
        action: Action,
        uid: &str,
        params: Vec<(&str, String)>,
    ) -> Result<serde_json::Value, KmsError> {
        let who = Internal {
            caller: Caller::new(self.principal.clone()),
            access_key_id: "kubernetes-kms",
            source_ip: "unix".into(),
            user_agent: format!("kubernetes-kms-v2; uid={}", printable(uid)),
        };
        let params = Params::from_pairs(params);
        call_internal(&self.app, who, action, params).await
    }

    /// The key's state and primary version, or why they cannot be read.
    async fn describe(&self) -> Result<(String, String, String), KmsError> {
        let (app, caller, key) = (self.app.clone(), Caller::new(self.principal.clone()), self.key_id.clone());
        let md = tokio::task::spawn_blocking(move || app.engine.describe_key(&caller, &key).map(|r| r.key_metadata))
            .await
            .map_err(|e| KmsError::internal(format_args!("status: {e}")))??;
        Ok((md.key_id, md.key_state, md.primary_key_version))
    }
}

/// A uid as the audit line shows it: printable ASCII, at most 128 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(128).collect()
}

fn status_of(e: &KmsError) -> Status {
    let msg = format!("{} (HTTP {}): {}", e.code().code(), e.http_status(), e.message());
    match e.http_status() {
        400 => Status::invalid_argument(msg),
        403 => Status::permission_denied(msg),
        404 => Status::not_found(msg),
        409 => Status::failed_precondition(msg),
        429 => Status::resource_exhausted(msg),
        503 => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

/// A DNS subdomain name (RFC 1123): what an annotation key must be.
fn dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').count() >= 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn check_annotations(a: &HashMap<String, Vec<u8>>) -> Result<(), Status> {
    let total: usize = a.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total >= MAX_ANNOTATIONS_BYTES {
        return Err(Status::invalid_argument(format!("annotations are {total} bytes; they must stay under 32 kB")));
    }
    if let Some(k) = a.keys().find(|k| !dns_name(k)) {
        return Err(Status::invalid_argument(format!("annotation key {:?} is not a DNS name", printable(k))));
    }
    Ok(())
}

#[tonic::async_trait]
impl KeyManagementService for KmsPlugin {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let mut described = self.describe().await;
        if matches!(&described, Err(e) if e.code() == ErrorCode::KeyNotFound || e.code() == ErrorCode::AliasNotFound)
            && self.key_id.contains("acs/")
        {
            // The service key is made on its principal's first use, as acs/oss is for kmsfs.
            let _ = self
                .call(
                    Action::Encrypt,
                    "status",
                    vec![("KeyId", self.key_id.clone()), ("Plaintext", encode_base64(b"-"))],
                )
                .await;
            described = self.describe().await;
        }
        let (healthz, key_id) = match described {
            Ok((id, state, primary)) if state == "Enabled" => ("ok".to_string(), format!("{id}/{primary}")),
            Ok((id, state, primary)) => (format!("key {id} is {state}"), format!("{id}/{primary}")),
            Err(e) => (format!("{}: {}", e.code().code(), e.message()), String::new()),
        };
        Ok(Response::new(StatusResponse { version: "v2".into(), healthz, key_id }))
    }

    async fn encrypt(&self, req: Request<EncryptRequest>) -> Result<Response<EncryptResponse>, Status> {
        let r = req.into_inner();
        let plaintext = Zeroizing::new(r.plaintext);
        if plaintext.is_empty() {
            return Err(Status::invalid_argument("plaintext is empty"));
        }
        let params = vec![("KeyId", self.key_id.clone()), ("Plaintext", encode_base64(&plaintext))];
        let v = self.call(Action::Encrypt, &r.uid, params).await.map_err(|e| status_of(&e))?;
        let blob = decode_base64("CiphertextBlob", v["CiphertextBlob"].as_str().unwrap_or(""))
            .map_err(|e| Status::internal(e.message().to_string()))?;
        let key_id = format!("{}/{}", v["KeyId"].as_str().unwrap_or(""), v["KeyVersionId"].as_str().unwrap_or(""));
        Ok(Response::new(EncryptResponse { ciphertext: blob, key_id, annotations: HashMap::new() }))
    }

    async fn decrypt(&self, req: Request<DecryptRequest>) -> Result<Response<DecryptResponse>, Status> {
        let r = req.into_inner();
        check_annotations(&r.annotations)?;
        if r.ciphertext.is_empty() {
            return Err(Status::invalid_argument("ciphertext is empty"));
        }
        let v = self
            .call(Action::Decrypt, &r.uid, vec![("CiphertextBlob", encode_base64(&r.ciphertext))])
            .await
            .map_err(|e| status_of(&e))?;
        let plaintext = Zeroizing::new(
            decode_base64("Plaintext", v["Plaintext"].as_str().unwrap_or(""))
                .map_err(|e| Status::internal(e.message().to_string()))?,
        );
        let made_under = format!("{}/{}", v["KeyId"].as_str().unwrap_or(""), v["KeyVersionId"].as_str().unwrap_or(""));
        if r.key_id != made_under {
            return Err(Status::invalid_argument(format!(
                "key_id {:?} is not the key version this ciphertext was made under",
                printable(&r.key_id)
            )));
        }
        Ok(Response::new(DecryptResponse { plaintext: plaintext.to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_are_dns_names_and_the_total_is_bounded() {
        let ok: HashMap<String, Vec<u8>> = [("version.encryption.example.com".to_string(), b"1".to_vec())].into();
        assert!(check_annotations(&ok).is_ok());
        for bad in ["nodots", "UPPER.example.com", "-a.example.com", "a..b", "a b.example.com"] {
            let a: HashMap<String, Vec<u8>> = [(bad.to_string(), b"1".to_vec())].into();
            assert!(check_annotations(&a).is_err(), "{bad}");
        }
        let big: HashMap<String, Vec<u8>> = [("a.example.com".to_string(), vec![0u8; 32 * 1024])].into();
        assert!(check_annotations(&big).is_err());
    }
}
