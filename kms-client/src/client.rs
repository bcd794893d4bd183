//! A Rust client for the sidecar (and for the Alibaba KMS API in general): signs with V1 or V3
//! using the same functions the server verifies with, speaks HTTP or HTTPS with a custom CA, and
//! returns the shared `kms_core::api` response types. Synchronous, so FUSE and NBD code can call
//! it from any thread.
//!
//! Configuration comes from [`ClientConfig::discover`]: flags the caller already parsed, then
//! `KMS_ENDPOINT` / `KMS_ACCESS_KEY_ID` / `KMS_ACCESS_KEY_SECRET` / `KMS_CA_FILE`, then the
//! sidecar's `profile.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kms_core::api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::profile::{default_data_dir, Profile};
use crate::sign;
use crate::API_VERSION;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    V1,
    V3,
}

#[derive(Clone)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: Zeroizing<String>,
    /// PEM file of a CA to trust (the sidecar's generated `tls/ca.pem`).
    pub ca_file: Option<PathBuf>,
    pub signing: Signing,
    pub timeout: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("signing", &self.signing)
            .finish_non_exhaustive()
    }
}

/// Values given explicitly (flags); anything left `None` is discovered.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub profile: Option<PathBuf>,
    /// Use this service principal's key from the profile (`oss`, `ecs`) instead of the owner's.
    pub service: Option<String>,
}

impl ClientConfig {
    /// An explicit endpoint and access key, V3 signing, a 10 s timeout (tests, tools).
    pub fn with_key(endpoint: &str, access_key_id: &str, access_key_secret: &str) -> ClientConfig {
        ClientConfig {
            endpoint: endpoint.to_string(),
            access_key_id: access_key_id.to_string(),
            access_key_secret: Zeroizing::new(access_key_secret.to_string()),
            ca_file: None,
            signing: Signing::V3,
            timeout: Duration::from_secs(10),
        }
    }

    /// The configuration from `o`, the environment and the sidecar's profile, in that order.
    pub fn discover(o: Overrides) -> Result<ClientConfig, SetupError> {
        use SetupError::NotConfigured;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let named = o.profile.clone().or_else(|| env("KMS_PROFILE").map(PathBuf::from));
        let profile_path = named.clone().unwrap_or_else(|| default_data_dir().join("profile.json"));
        let profile: Option<Profile> = match std::fs::read(&profile_path) {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                SetupError::Invalid(format!("{}: not a sidecar client profile: {e}", profile_path.display()))
            })?),
            // A profile named (--profile, KMS_PROFILE) must be there; the default one may not be
            // yet, and the other settings may make up for it.
            Err(e) if named.is_some() => {
                return Err(SetupError::Invalid(format!(
                    "{}: cannot read the client profile (--profile or KMS_PROFILE names it): {e}",
                    profile_path.display()
                )))
            }
            Err(_) => None,
        };
        let from_profile = |f: fn(&Profile) -> Option<String>| profile.as_ref().and_then(f);
        let endpoint = o
            .endpoint
            .or_else(|| env("KMS_ENDPOINT"))
            .or_else(|| from_profile(|p| Some(p.endpoint.clone()).filter(|e| !e.is_empty())))
            .ok_or_else(|| {
                NotConfigured(
                    "no endpoint: pass --endpoint, set KMS_ENDPOINT, or start kms-sidecar to create its profile".into(),
                )
            })?;
        let endpoint = if endpoint.contains("://") { endpoint } else { format!("http://{endpoint}") };
        let (pid, psecret) = match (&o.service, &profile) {
            (Some(svc), Some(p)) => match p.services.get(svc) {
                Some(k) => (Some(k.access_key_id.clone()), Some(k.access_key_secret.clone())),
                None => return Err(NotConfigured(format!("the profile has no access key for service {svc}"))),
            },
            (Some(svc), None) => {
                return Err(NotConfigured(format!("service {svc}: no profile at {}", profile_path.display())))
            }
            (None, Some(p)) => (p.access_key_id.clone(), p.access_key_secret.clone()),
            (None, None) => (None, None),
        };
        let (env_id, env_secret) =
            if o.service.is_some() { (None, None) } else { (env("KMS_ACCESS_KEY_ID"), env("KMS_ACCESS_KEY_SECRET")) };
        let access_key_id = o.access_key_id.or(env_id).or(pid).ok_or_else(|| {
            NotConfigured(
                "no access key: pass --access-key-id, set KMS_ACCESS_KEY_ID, or use the sidecar's profile".into(),
            )
        })?;
        let secret = o
            .access_key_secret
            .or(env_secret)
            .or(psecret)
            .ok_or_else(|| NotConfigured("no access key secret".into()))?;
        let ca_file = o.ca_file.or_else(|| env("KMS_CA_FILE").map(PathBuf::from)).or_else(|| {
            if endpoint.starts_with("https://") {
                profile.as_ref().and_then(|p| p.ca_file.clone())
            } else {
                None
            }
        });
        Ok(ClientConfig {
            endpoint,
            access_key_id,
            access_key_secret: Zeroizing::new(secret),
            ca_file,
            signing: Signing::V3,
            timeout: Duration::from_secs(30),
        })
    }
}

/// Why a client could not be set up – before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// Nothing says where the KMS is, or whom to sign as.
    #[error("{0}")]
    NotConfigured(String),
    /// A file or value the configuration names cannot be used (a CA file that is missing or holds
    /// no certificate, an endpoint without a scheme): the caller's mistake, not the KMS's.
    #[error("{0}")]
    Invalid(String),
}

/// An API error as the server sent it, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{code} (HTTP {status}): {message} [RequestId {request_id}]")]
    Api { status: u16, code: String, message: String, request_id: String },
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::Transport(_) => None,
        }
    }
}

pub struct Client {
    cfg: ClientConfig,
    agent: ureq::Agent,
    host: String,
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Client, SetupError> {
        let mut builder = ureq::AgentBuilder::new().timeout(cfg.timeout);
        if let Some(ca) = &cfg.ca_file {
            builder = builder.tls_config(tls_with_ca(ca).map_err(SetupError::Invalid)?);
        }
        let host =
            cfg.endpoint
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
                .ok_or_else(|| SetupError::Invalid(format!("endpoint {:?} needs http:// or https://", cfg.endpoint)))?;
        Ok(Client { agent: builder.build(), host, cfg })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Calls `action` with a typed request; parses the typed response.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(&self, action: &str, req: &Req) -> Result<Resp, ClientError> {
        let v = serde_json::to_value(req).map_err(|e| ClientError::Transport(e.to_string()))?;
        let out = self.call_params(action, to_params(&v))?;
        serde_json::from_value(out).map_err(|e| ClientError::Transport(format!("{action}: unexpected response: {e}")))
    }

    /// Calls `action` with raw parameters; returns the JSON body.
    pub fn call_params(&self, action: &str, params: Vec<(String, String)>) -> Result<Value, ClientError> {
        let url = format!("{}/", self.cfg.endpoint.trim_end_matches('/'));
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let now = time::OffsetDateTime::now_utc();
        let ts = kms_core::clock::format_iso(now.unix_timestamp());
        let result = match self.cfg.signing {
            Signing::V1 => {
                let mut p = params;
                p.extend(
                    [
                        ("Action", action),
                        ("Version", API_VERSION),
                        ("Format", "JSON"),
                        ("AccessKeyId", &self.cfg.access_key_id),
                        ("SignatureMethod", "HMAC-SHA1"),
                        ("SignatureVersion", "1.0"),
                        ("SignatureNonce", &nonce),
                        ("Timestamp", &ts),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string())),
                );
                let sts = sign::v1_string_to_sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let sig = sign::v1_signature(sign::V1Method::HmacSha1, &self.cfg.access_key_secret, &sts);
                p.push(("Signature".into(), sig));
                let form: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.agent.post(&url).set("x-acs-action", action).set("x-acs-version", API_VERSION).send_form(&form)
            }
            Signing::V3 => {
                let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
                let hash = sign::sha256_hex(body.as_bytes());
                let headers: Vec<(String, String)> = [
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("host", self.host.as_str()),
                    ("x-acs-action", action),
                    ("x-acs-content-sha256", hash.as_str()),
                    ("x-acs-date", ts.as_str()),
                    ("x-acs-signature-nonce", nonce.as_str()),
                    ("x-acs-version", API_VERSION),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .to_vec();
                let signed = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
                let cr = sign::v3_canonical_request("POST", "/", std::iter::empty(), &headers, &signed, &hash);
                let sig = sign::v3_signature(&self.cfg.access_key_secret, &sign::v3_string_to_sign(&cr));
                let mut req = self.agent.post(&url);
                for (k, v) in &headers {
                    if k != "host" {
                        req = req.set(k, v);
                    }
                }
                req.set(
                    "authorization",
                    &format!(
                        "{} Credential={},SignedHeaders={signed},Signature={sig}",
                        sign::V3_ALGORITHM,
                        self.cfg.access_key_id
                    ),
                )
                .send_string(&body)
            }
        };
        match result {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| ClientError::Transport(format!("{action}: {e}")))?;
                serde_json::from_str(&text).map_err(|e| ClientError::Transport(format!("{action}: {e}")))
            }
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                if s("Code").is_empty() {
                    // Not the KMS's error shape: whatever answers there (a proxy, another server)
                    // is not a KMS, and the caller is told what it said.
                    return Err(ClientError::Transport(format!(
                        "{action} to {}: HTTP {status} without a KMS error: {}",
                        self.cfg.endpoint,
                        snippet(&text)
                    )));
                }
                Err(ClientError::Api { status, code: s("Code"), message: s("Message"), request_id: s("RequestId") })
            }
            Err(e) => Err(ClientError::Transport(format!("{action} to {}: {e}", self.cfg.endpoint))),
        }
    }

    /// `GET /ping`: whether a sidecar answers at the endpoint at all (no signature, no store).
    pub fn ping(&self) -> Result<(), ClientError> {
        let url = format!("{}/ping", self.cfg.endpoint.trim_end_matches('/'));
        match self.agent.get(&url).call() {
            Ok(resp) => match resp.into_string() {
                Ok(body) if body.trim() == "pong" => Ok(()),
                _ => Err(ClientError::Transport(format!("{url} answers, but not as a KMS sidecar"))),
            },
            Err(ureq::Error::Status(status, _)) => {
                Err(ClientError::Transport(format!("{url} answers HTTP {status}: not a KMS sidecar")))
            }
            Err(e) => Err(ClientError::Transport(format!("{url}: {e}"))),
        }
    }

    pub fn create_key(&self, req: &CreateKeyRequest) -> Result<KeyMetadataResponse, ClientError> {
        self.call("CreateKey", req)
    }

    pub fn describe_key(&self, key_id: &str) -> Result<KeyMetadataResponse, ClientError> {
        self.call("DescribeKey", &KeyIdRequest { key_id: key_id.into() })
    }

    pub fn encrypt(&self, req: &EncryptRequest) -> Result<EncryptResponse, ClientError> {
        self.call("Encrypt", req)
    }

    pub fn decrypt(&self, req: &DecryptRequest) -> Result<DecryptResponse, ClientError> {
        self.call("Decrypt", req)
    }

    pub fn generate_data_key(&self, req: &GenerateDataKeyRequest) -> Result<GenerateDataKeyResponse, ClientError> {
        self.call("GenerateDataKey", req)
    }

    pub fn re_encrypt(&self, req: &ReEncryptRequest) -> Result<EncryptResponse, ClientError> {
        self.call("ReEncrypt", req)
    }
}

/// Flattens a serialised request into wire parameters: strings as they are, booleans and numbers
/// as text, absent fields left out, lists as `Name.N` and objects in lists as `Name.N.Field`
/// (as the SDKs send them).
pub fn to_params(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            flatten(k, v, &mut out);
        }
    }
    out
}

fn flatten(name: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Null => {}
        Value::String(s) => out.push((name.to_string(), s.clone())),
        Value::Bool(b) => out.push((name.to_string(), b.to_string())),
        Value::Number(n) => out.push((name.to_string(), n.to_string())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{name}.{}", i + 1), item, out);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                flatten(&format!("{name}.{k}"), item, out);
            }
        }
    }
}

fn tls_with_ca(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.map_err(|e| format!("{}: {e}", ca.display()))?).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate (a CA file holds PEM certificates)", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The start of a body to show in an error: one line, at most 200 characters.
fn snippet(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None if line.is_empty() => "(empty body)".into(),
        None => line,
    }
}
