//! Envelope encryption for the storage encryptors (kmsfs, blockcrypt): a volume's data key comes
//! from the KMS – through the sidecar as a cloud service principal (`oss`, `ecs`), or from an
//! engine embedded in the process for single-machine use. The KMS is touched when a volume is
//! created, opened or rewrapped – never per block.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kms_core::api::{
    DecryptRequest, DecryptResponse, GenerateDataKeyRequest, GenerateDataKeyResponse, ReEncryptRequest,
    ReEncryptResponse,
};
use kms_core::store::StoreOpenError;
use kms_core::{Caller, Engine, KmsError, OpenError};
use zeroize::Zeroizing;

use crate::client::{Client, ClientConfig, ClientError, Overrides, SetupError};
use crate::exit::{Failure, EXIT_KMS_REFUSED, EXIT_KMS_UNREACHABLE, EXIT_OTHER, EXIT_USAGE};

/// A refusal or failure of the KMS, with the Alibaba error code when there is one.
#[derive(Debug, thiserror::Error)]
#[error("KMS {}: {message}", code.as_deref().unwrap_or("unreachable"))]
pub struct KmsFailure {
    pub code: Option<String>,
    pub message: String,
}

impl KmsFailure {
    /// The KMS answered and said no (as opposed to: it could not be reached).
    pub fn is_refusal(&self) -> bool {
        self.code.is_some()
    }
}

impl From<KmsError> for KmsFailure {
    fn from(e: KmsError) -> Self {
        KmsFailure { code: Some(e.code().code().to_string()), message: e.message().to_string() }
    }
}

impl From<ClientError> for KmsFailure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { code, message, .. } => KmsFailure { code: Some(code), message },
            ClientError::Transport(message) => KmsFailure { code: None, message },
        }
    }
}

/// A data key as the KMS wrapped it: the blob and the CMK version that wraps it.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    pub blob: Vec<u8>,
    pub key_id: String,
    pub key_version_id: String,
}

/// The three KMS calls a volume needs.
pub trait KeyService: Send + Sync {
    /// A fresh data key of `len` bytes under `key_id`: (plaintext, ciphertext blob).
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &str,
        len: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, WrappedKey), KmsFailure>;
    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure>;
    /// The same data key wrapped under `key_id`'s current version (the CMK rotated, or another CMK).
    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<WrappedKey, KmsFailure>;
}

fn gdk_request(key_id: &str, context: &str, len: usize) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: key_id.into(),
        number_of_bytes: Some(len as i64),
        encryption_context: Some(context.into()),
        ..Default::default()
    }
}

fn re_encrypt_request(blob: &[u8], context: &str, key_id: &str) -> ReEncryptRequest {
    ReEncryptRequest {
        ciphertext_blob: blob.to_vec(),
        destination_key_id: key_id.into(),
        source_encryption_context: Some(context.into()),
        destination_encryption_context: Some(context.into()),
        ..Default::default()
    }
}

fn decrypt_request(blob: &[u8], context: &str) -> DecryptRequest {
    DecryptRequest { ciphertext_blob: blob.to_vec(), encryption_context: Some(context.into()), dry_run: false }
}

// The same answers whether they came over the wire or from the engine in process.
fn data_key(r: GenerateDataKeyResponse) -> (Zeroizing<Vec<u8>>, WrappedKey) {
    let wrapped = WrappedKey { blob: r.ciphertext_blob, key_id: r.key_id, key_version_id: r.key_version_id };
    (Zeroizing::new(r.plaintext.expose().to_vec()), wrapped)
}

fn wrapped(r: ReEncryptResponse) -> WrappedKey {
    WrappedKey { blob: r.ciphertext_blob, key_id: r.key_id, key_version_id: r.key_version_id }
}

fn plaintext(r: DecryptResponse) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(r.plaintext.expose().to_vec())
}

/// The KMS through the sidecar's wire protocol (the client signs as whoever its access key is:
/// normally a service principal).
pub struct Remote(pub Client);

impl KeyService for Remote {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &str,
        len: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, WrappedKey), KmsFailure> {
        Ok(data_key(self.0.generate_data_key(&gdk_request(key_id, context, len))?))
    }

    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure> {
        Ok(plaintext(self.0.decrypt(&decrypt_request(blob, context))?))
    }

    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<WrappedKey, KmsFailure> {
        Ok(wrapped(self.0.re_encrypt(&re_encrypt_request(blob, context, key_id))?))
    }
}

/// An engine in this process, on a local store, acting as a service principal.
pub struct Embedded {
    pub engine: Arc<Engine>,
    pub caller: Caller,
}

impl Embedded {
    /// The engine is this process's own: whoever runs it holds its root key, i.e. owns every key
    /// in it. The service principal names (and creates on first use) the service key; a policy
    /// lets it use the other keys of this private store for envelopes, as the owner could.
    pub fn new(engine: Arc<Engine>, service: &str) -> Embedded {
        let caller = Caller::service(service);
        let policy = kms_core::policy::Policy::parse(
            "embedded-owner",
            r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:GenerateDataKey","kms:Decrypt","kms:ReEncrypt*"],"Resource":"*"}]}"#,
        )
        .expect("a valid built-in policy");
        engine.set_policies([(caller.principal.clone(), vec![policy])].into_iter().collect());
        Embedded { engine, caller }
    }
}

impl KeyService for Embedded {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &str,
        len: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, WrappedKey), KmsFailure> {
        Ok(data_key(self.engine.generate_data_key(&self.caller, gdk_request(key_id, context, len))?))
    }

    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure> {
        Ok(plaintext(self.engine.decrypt(&self.caller, decrypt_request(blob, context))?))
    }

    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<WrappedKey, KmsFailure> {
        Ok(wrapped(self.engine.re_encrypt(&self.caller, re_encrypt_request(blob, context, key_id))?))
    }
}

/// Why no key service could be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No endpoint, profile or credentials to reach a sidecar with.
    #[error("KMS: {0}")]
    Unreachable(String),
    /// A file or value given to reach it cannot be used (a bad `--ca-file`, an endpoint without
    /// a scheme).
    #[error("KMS: {0}")]
    Invalid(String),
    /// The embedded store could not be opened.
    #[error("{0}")]
    Store(#[from] kms_core::OpenError),
    /// Its directory cannot be made.
    #[error("{0}")]
    StoreDir(String),
}

impl From<SetupError> for ConnectError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::NotConfigured(m) => ConnectError::Unreachable(m),
            SetupError::Invalid(m) => ConnectError::Invalid(m),
        }
    }
}

/// How an encryptor's command line reaches the KMS: the sidecar (as a service principal from the
/// sidecar's client profile, or with an access key given explicitly) or an embedded engine.
#[derive(Args, Debug, Clone, Default)]
pub struct KmsArgs {
    /// The sidecar's endpoint (default: KMS_ENDPOINT, then the sidecar's client profile).
    #[arg(long, global = true, env = "KMS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The sidecar's client profile (default: KMS_PROFILE, then the sidecar's data directory).
    #[arg(long, global = true, env = "KMS_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Sign as this access key instead of the service principal of the profile.
    #[arg(long, global = true, env = "KMS_ENCRYPTOR_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    #[arg(long, global = true, env = "KMS_ENCRYPTOR_ACCESS_KEY_SECRET", hide_env_values = true)]
    pub access_key_secret: Option<String>,
    /// A CA to trust for an https endpoint.
    #[arg(long, global = true, env = "KMS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Use an engine in this process on the store in DIR instead of a sidecar.
    #[arg(long, global = true, value_name = "DIR", env = "KMS_EMBEDDED")]
    pub embedded: Option<PathBuf>,
}

impl KmsArgs {
    /// A key service acting as `service` (`oss`, `ecs`) unless an access key was given.
    pub fn connect(&self, service: &str) -> Result<Box<dyn KeyService>, ConnectError> {
        if let Some(dir) = &self.embedded {
            std::fs::create_dir_all(dir).map_err(|e| ConnectError::StoreDir(format!("{}: {e}", dir.display())))?;
            let opts = kms_core::EngineOptions::in_dir(dir, kms_core::EngineConfig::default())?;
            let engine = Engine::open(opts)?;
            return Ok(Box::new(Embedded::new(Arc::new(engine), service)));
        }
        let explicit = self.access_key_id.is_some();
        let cfg = ClientConfig::discover(Overrides {
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            access_key_secret: self.access_key_secret.clone(),
            ca_file: self.ca_file.clone(),
            profile: self.profile.clone(),
            service: (!explicit).then(|| service.to_string()),
        })?;
        Ok(Box::new(Remote(Client::new(cfg)?)))
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Failure {
        let code = match e {
            ConnectError::Unreachable(_) => EXIT_KMS_UNREACHABLE,
            ConnectError::Invalid(_) => EXIT_USAGE,
            // The embedded engine is the KMS: a store it cannot reach or that another process
            // holds is an unreachable KMS, a root key that does not open it a refusal.
            ConnectError::Store(OpenError::Store(StoreOpenError::Unreachable(_) | StoreOpenError::InUse(_))) => {
                EXIT_KMS_UNREACHABLE
            }
            ConnectError::Store(OpenError::WrongRootKey(_)) => EXIT_KMS_REFUSED,
            ConnectError::Store(OpenError::Store(StoreOpenError::Invalid(_))) => EXIT_USAGE,
            ConnectError::Store(OpenError::Store(StoreOpenError::Failed(_)) | OpenError::Failed(_))
            | ConnectError::StoreDir(_) => EXIT_OTHER,
        };
        Failure::new(code, e)
    }
}

impl From<KmsFailure> for Failure {
    fn from(e: KmsFailure) -> Failure {
        Failure::new(if e.is_refusal() { EXIT_KMS_REFUSED } else { EXIT_KMS_UNREACHABLE }, e)
    }
}
