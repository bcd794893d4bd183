//! Envelope encryption: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext).
//!
//! EncryptionContext fields carry the raw JSON string as the caller sent it; the engine parses and
//! canonicalises it.

use serde::{Deserialize, Serialize};

use super::common::{base64_bytes, SecretBytes};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptRequest {
    pub key_id: String,
    pub plaintext: SecretBytes,
    pub encryption_context: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptRequest {
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    pub encryption_context: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptRequest {
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    pub destination_key_id: String,
    pub source_encryption_context: Option<String>,
    pub destination_encryption_context: Option<String>,
    /// Asymmetric sources (`SourceKeyId`, `SourceKeyVersionId`, `SourceEncryptionAlgorithm`).
    pub source_key_id: Option<String>,
    pub source_key_version_id: Option<String>,
    pub source_encryption_algorithm: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyRequest {
    pub key_id: String,
    /// `AES_256` or `AES_128`.
    pub key_spec: Option<String>,
    pub number_of_bytes: Option<i64>,
    pub encryption_context: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
}

/// Encrypt, ReEncrypt and GenerateDataKeyWithoutPlaintext answer alike.
pub type ReEncryptResponse = EncryptResponse;
pub type GenerateDataKeyWithoutPlaintextResponse = EncryptResponse;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    pub key_version_id: String,
    pub plaintext: SecretBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    pub plaintext: SecretBytes,
}
