//! Keys, versions, aliases and regions.

use serde::{Deserialize, Serialize};

use super::common::PageRequest;

impl ListKeysRequest {
    pub fn page(&self) -> PageRequest {
        PageRequest { page_number: self.page_number, page_size: self.page_size }
    }
}

impl KeyPageRequest {
    pub fn page(&self) -> PageRequest {
        PageRequest { page_number: self.page_number, page_size: self.page_size }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyRequest {
    pub key_spec: Option<String>,
    pub key_usage: Option<String>,
    pub origin: Option<String>,
    pub protection_level: Option<String>,
    pub description: Option<String>,
    pub enable_automatic_rotation: Option<bool>,
    pub rotation_interval: Option<String>,
    #[serde(rename = "DKMSInstanceId")]
    pub dkms_instance_id: Option<String>,
    /// JSON: `[{"TagKey":"k","TagValue":"v"}]`.
    pub tags: Option<String>,
}

/// `KeyMetadata` as DescribeKey returns it; every field is a string on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    pub key_id: String,
    pub arn: String,
    pub key_spec: String,
    pub key_usage: String,
    pub key_state: String,
    pub origin: String,
    pub protection_level: String,
    pub creator: String,
    pub creation_date: String,
    pub description: String,
    pub primary_key_version: String,
    pub automatic_rotation: String,
    pub rotation_interval: String,
    pub last_rotation_date: String,
    pub next_rotation_date: String,
    pub delete_date: String,
    pub material_expire_time: String,
    #[serde(rename = "DKMSInstanceId")]
    pub dkms_instance_id: String,
    /// Absent from CreateKey's answer, present in DescribeKey's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_protection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deletion_protection_description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadataResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysRequest {
    /// JSON: `[{"Key":"KeyState","Values":["Enabled"]}, …]`.
    pub filters: Option<String>,
    pub page_number: Option<i64>,
    pub page_size: Option<i64>,
}

/// Actions that take only a `KeyId`: DescribeKey, EnableKey, DisableKey, CancelKeyDeletion,
/// CreateKeyVersion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdRequest {
    pub key_id: String,
}

/// GrantServiceKeyUse and RevokeServiceKeyUse – this service's own actions, not Alibaba's: the
/// RAM service-role analogue that lets a cloud service's principal (`service:oss`, …) use a CMK
/// for its envelopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceKeyUseRequest {
    pub key_id: String,
    /// The service, as its principal names it: `oss`, `ecs`, …
    pub service: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescriptionRequest {
    pub key_id: String,
    pub description: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyVersionRequest {
    pub key_id: String,
    pub key_version_id: String,
}

/// ListKeyVersions and ListAliasesByKeyId: a key and a page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyPageRequest {
    pub key_id: String,
    pub page_number: Option<i64>,
    pub page_size: Option<i64>,
}

/// CreateAlias and UpdateAlias.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRequest {
    pub alias_name: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteAliasRequest {
    pub alias_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    #[serde(rename = "Key")]
    pub key: Vec<KeyListEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: KeyList,
    pub page_number: u32,
    pub page_size: u32,
    pub total_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionRequest {
    pub key_id: String,
    pub pending_window_in_days: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetDeletionProtectionRequest {
    pub key_id: Option<String>,
    /// The key's ARN; either this or `KeyId` names the key.
    pub protected_resource_arn: Option<String>,
    pub enable_deletion_protection: bool,
    pub deletion_protection_description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateRotationPolicyRequest {
    pub key_id: String,
    pub enable_automatic_rotation: bool,
    pub rotation_interval: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyVersion {
    pub key_id: String,
    pub key_version_id: String,
    pub creation_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyVersionResponse {
    pub key_version: KeyVersion,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersionList {
    #[serde(rename = "KeyVersion")]
    pub key_version: Vec<KeyVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyVersionsResponse {
    pub key_versions: KeyVersionList,
    pub page_number: u32,
    pub page_size: u32,
    pub total_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Alias {
    pub alias_name: String,
    pub alias_arn: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasList {
    #[serde(rename = "Alias")]
    pub alias: Vec<Alias>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: AliasList,
    pub page_number: u32,
    pub page_size: u32,
    pub total_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Region {
    pub region_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionList {
    #[serde(rename = "Region")]
    pub region: Vec<Region>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeRegionsResponse {
    pub regions: RegionList,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_use_xml_style_wrappers_and_integer_paging() {
        let r = ListKeysResponse {
            keys: KeyList { key: vec![KeyListEntry { key_id: "key-a".into(), key_arn: "arn".into() }] },
            page_number: 1,
            page_size: 10,
            total_count: 1,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["Keys"]["Key"][0]["KeyId"], "key-a");
        assert_eq!(v["TotalCount"], 1);
        let md = serde_json::to_value(KeyMetadata::default()).unwrap();
        assert!(md.get("DKMSInstanceId").is_some());
        assert!(md.get("DeletionProtection").is_none());
    }
}
