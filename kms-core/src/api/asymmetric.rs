//! Asymmetric keys (GetPublicKey, AsymmetricSign/Verify/Encrypt/Decrypt), data-key export, and
//! BYOK import (GetParametersForImport, ImportKeyMaterial, DeleteKeyMaterial).

use serde::{Deserialize, Serialize};

use super::common::{base64_bytes, SecretBytes};

/// GetPublicKey.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyVersionRequest {
    pub key_id: String,
    pub key_version_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    pub key_id: String,
    pub key_version_id: String,
    /// SubjectPublicKeyInfo, PEM.
    pub public_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricSignRequest {
    pub key_id: String,
    pub key_version_id: String,
    pub algorithm: String,
    #[serde(with = "base64_bytes")]
    pub digest: Vec<u8>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricSignResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricVerifyRequest {
    pub key_id: String,
    pub key_version_id: String,
    pub algorithm: String,
    #[serde(with = "base64_bytes")]
    pub digest: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `Value` is a JSON boolean (Node Tea type-checks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricVerifyResponse {
    pub key_id: String,
    pub key_version_id: String,
    pub value: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricEncryptRequest {
    pub key_id: String,
    pub key_version_id: String,
    pub algorithm: String,
    pub plaintext: SecretBytes,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricEncryptResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricDecryptRequest {
    pub key_id: String,
    pub key_version_id: String,
    pub algorithm: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsymmetricDecryptResponse {
    pub key_id: String,
    pub key_version_id: String,
    pub plaintext: SecretBytes,
}

/// ExportDataKey: re-wrap a data key (a symmetric blob) under a caller's public key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportDataKeyRequest {
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    /// SubjectPublicKeyInfo DER, base64.
    #[serde(with = "base64_bytes")]
    pub public_key_blob: Vec<u8>,
    pub wrapping_key_spec: String,
    pub wrapping_algorithm: String,
    pub encryption_context: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportDataKeyResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub exported_data_key: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateAndExportDataKeyRequest {
    pub key_id: String,
    pub key_spec: Option<String>,
    pub number_of_bytes: Option<i64>,
    #[serde(with = "base64_bytes")]
    pub public_key_blob: Vec<u8>,
    pub wrapping_key_spec: String,
    pub wrapping_algorithm: String,
    pub encryption_context: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateAndExportDataKeyResponse {
    pub key_id: String,
    pub key_version_id: String,
    #[serde(with = "base64_bytes")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub exported_data_key: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportRequest {
    pub key_id: String,
    pub wrapping_key_spec: String,
    pub wrapping_algorithm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    pub key_id: String,
    pub import_token: String,
    /// The wrapping public key, SubjectPublicKeyInfo DER, base64.
    #[serde(with = "base64_bytes")]
    pub public_key: Vec<u8>,
    pub token_expire_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialRequest {
    pub key_id: String,
    #[serde(with = "base64_bytes")]
    pub encrypted_key_material: Vec<u8>,
    pub import_token: String,
    /// Unix seconds after which the material is deleted; 0 or absent: never.
    pub key_material_expire_unix: Option<i64>,
}
