//! Secrets Manager: secrets, versions and stages; GetRandomPassword.

use serde::{Deserialize, Serialize};

use super::common::SecretString;
use super::TagList;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateSecretRequest {
    pub secret_name: String,
    pub secret_data: SecretString,
    pub version_id: String,
    pub secret_data_type: Option<String>,
    pub encryption_key_id: Option<String>,
    pub description: Option<String>,
    /// JSON: `[{"TagKey":"k","TagValue":"v"}]`.
    pub tags: Option<String>,
    pub secret_type: Option<String>,
    pub enable_automatic_rotation: Option<bool>,
    pub rotation_interval: Option<String>,
    pub extended_config: Option<String>,
    #[serde(rename = "DKMSInstanceId")]
    pub dkms_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateSecretResponse {
    pub arn: String,
    pub secret_name: String,
    pub version_id: String,
    pub secret_type: String,
    pub automatic_rotation: String,
    pub rotation_interval: String,
    pub next_rotation_date: String,
    pub extended_config: String,
    #[serde(rename = "DKMSInstanceId")]
    pub dkms_instance_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetSecretValueRequest {
    /// The name or the ARN.
    pub secret_name: String,
    pub version_id: Option<String>,
    pub version_stage: Option<String>,
    pub fetch_extended_config: Option<bool>,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStageList {
    #[serde(rename = "VersionStage")]
    pub version_stage: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetSecretValueResponse {
    pub secret_name: String,
    pub secret_type: String,
    pub version_id: String,
    pub create_time: String,
    pub secret_data: SecretString,
    pub secret_data_type: String,
    pub version_stages: VersionStageList,
    pub automatic_rotation: String,
    pub extended_config: String,
    pub last_rotation_date: String,
    pub next_rotation_date: String,
    pub rotation_interval: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchGetSecretValueRequest {
    /// JSON: `[{"SecretName":"a","VersionStage":"ACSCurrent"}, …]`, at most 10.
    pub secrets_list: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchSecretError {
    pub secret_name: String,
    pub code: String,
    pub http_status: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchGetSecretValueResponse {
    pub secret_values: Vec<GetSecretValueResponse>,
    pub errors: Vec<BatchSecretError>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutSecretValueRequest {
    pub secret_name: String,
    pub version_id: String,
    pub secret_data: SecretString,
    pub secret_data_type: Option<String>,
    /// JSON array of stage names; default `["ACSCurrent"]`.
    pub version_stages: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutSecretValueResponse {
    pub secret_name: String,
    pub version_id: String,
    pub version_stages: VersionStageList,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateSecretVersionStageRequest {
    pub secret_name: String,
    pub version_stage: String,
    pub remove_from_version: Option<String>,
    pub move_to_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretNameResponse {
    pub secret_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretVersionIdsRequest {
    pub secret_name: String,
    pub include_deprecated: Option<bool>,
    pub page_number: Option<i64>,
    pub page_size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretVersionId {
    pub version_id: String,
    pub create_time: String,
    pub version_stages: VersionStageList,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionIdList {
    #[serde(rename = "VersionId")]
    pub version_id: Vec<SecretVersionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretVersionIdsResponse {
    pub secret_name: String,
    pub version_ids: SecretVersionIdList,
    pub page_number: u32,
    pub page_size: u32,
    pub total_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeSecretRequest {
    pub secret_name: String,
    pub fetch_tags: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeSecretResponse {
    pub arn: String,
    pub secret_name: String,
    pub secret_type: String,
    pub description: String,
    pub encryption_key_id: String,
    pub create_time: String,
    pub update_time: String,
    pub planned_delete_time: String,
    pub automatic_rotation: String,
    pub rotation_interval: String,
    pub last_rotation_date: String,
    pub next_rotation_date: String,
    pub extended_config: String,
    pub owing_service: String,
    #[serde(rename = "DKMSInstanceId")]
    pub dkms_instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<TagList>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretsRequest {
    pub fetch_tags: Option<bool>,
    /// JSON: `[{"Key":"SecretName","Values":["db"]}]`; keys SecretName, Description, TagKey, TagValue.
    pub filters: Option<String>,
    pub page_number: Option<i64>,
    pub page_size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretListEntry {
    pub secret_name: String,
    pub secret_type: String,
    pub create_time: String,
    pub update_time: String,
    pub planned_delete_time: String,
    pub owing_service: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tags: Option<TagList>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretList {
    #[serde(rename = "Secret")]
    pub secret: Vec<SecretListEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretsResponse {
    pub secret_list: SecretList,
    pub page_number: u32,
    pub page_size: u32,
    pub total_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateSecretRequest {
    pub secret_name: String,
    pub description: Option<String>,
    /// JSON text (the sidecar folds the SDKs' `ExtendedConfig.*` forms into it).
    pub extended_config: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteSecretRequest {
    pub secret_name: String,
    pub force_delete_without_recovery: Option<bool>,
    pub recovery_window_in_days: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteSecretResponse {
    pub secret_name: String,
    pub planned_delete_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretNameRequest {
    pub secret_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetRandomPasswordRequest {
    pub password_length: Option<i64>,
    pub exclude_characters: Option<String>,
    pub exclude_lowercase: Option<bool>,
    pub exclude_uppercase: Option<bool>,
    pub exclude_numbers: Option<bool>,
    pub exclude_punctuation: Option<bool>,
    pub require_each_included_type: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetRandomPasswordResponse {
    pub random_password: SecretString,
}
