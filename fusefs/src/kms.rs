//! Where the data key comes from: the KMS, reached either through the sidecar as the OSS service
//! principal (the normal case) or, for single-machine use, an engine embedded in this process.
//! The KMS is touched at init, mount and rewrap only – never per block.

use std::sync::Arc;

use kms_core::api::{DecryptRequest, GenerateDataKeyRequest, ReEncryptRequest};
use kms_core::{Caller, Engine, KmsError};
use kms_sidecar::client::{Client, ClientError};
use zeroize::Zeroizing;

use crate::keys::DATA_KEY_LEN;

/// A refusal or failure of the KMS, with the Alibaba error code when there is one.
#[derive(Debug, thiserror::Error)]
#[error("KMS {}: {message}", code.as_deref().unwrap_or("unreachable"))]
pub struct KmsFailure {
    pub code: Option<String>,
    pub message: String,
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

/// The three KMS calls a volume needs.
pub trait KeyService {
    /// A fresh 32-byte data key under `key_id`: (plaintext, ciphertext blob).
    fn generate_data_key(&self, key_id: &str, context: &str) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), KmsFailure>;
    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure>;
    /// The same data key wrapped under `key_id`'s current version (the CMK rotated, or another CMK).
    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<Vec<u8>, KmsFailure>;
}

fn gdk_request(key_id: &str, context: &str) -> GenerateDataKeyRequest {
    GenerateDataKeyRequest {
        key_id: key_id.into(),
        number_of_bytes: Some(DATA_KEY_LEN as i64),
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

/// The KMS through the sidecar's wire protocol (the client signs as whoever its access key is:
/// the OSS service principal for volumes under `acs/oss`).
pub struct Remote(pub Client);

impl KeyService for Remote {
    fn generate_data_key(&self, key_id: &str, context: &str) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), KmsFailure> {
        let r = self.0.generate_data_key(&gdk_request(key_id, context))?;
        Ok((Zeroizing::new(r.plaintext.expose().to_vec()), r.ciphertext_blob))
    }

    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure> {
        Ok(Zeroizing::new(self.0.decrypt(&decrypt_request(blob, context))?.plaintext.expose().to_vec()))
    }

    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<Vec<u8>, KmsFailure> {
        Ok(self.0.re_encrypt(&re_encrypt_request(blob, context, key_id))?.ciphertext_blob)
    }
}

/// An engine in this process, on a local store, acting as the OSS service.
pub struct Embedded {
    pub engine: Arc<Engine>,
    pub caller: Caller,
}

impl Embedded {
    pub fn new(engine: Arc<Engine>) -> Embedded {
        Embedded { engine, caller: Caller::service("oss") }
    }
}

impl KeyService for Embedded {
    fn generate_data_key(&self, key_id: &str, context: &str) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), KmsFailure> {
        let r = self.engine.generate_data_key(&self.caller, gdk_request(key_id, context))?;
        Ok((Zeroizing::new(r.plaintext.expose().to_vec()), r.ciphertext_blob))
    }

    fn decrypt(&self, blob: &[u8], context: &str) -> Result<Zeroizing<Vec<u8>>, KmsFailure> {
        let r = self.engine.decrypt(&self.caller, decrypt_request(blob, context))?;
        Ok(Zeroizing::new(r.plaintext.expose().to_vec()))
    }

    fn re_encrypt(&self, blob: &[u8], context: &str, key_id: &str) -> Result<Vec<u8>, KmsFailure> {
        Ok(self.engine.re_encrypt(&self.caller, re_encrypt_request(blob, context, key_id))?.ciphertext_blob)
    }
}
