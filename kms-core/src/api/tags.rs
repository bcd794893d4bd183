//! Tags on keys and secrets: the single-resource API (TagResource, UntagResource,
//! ListResourceTags) and the multi-resource one (TagResources, UntagResources, ListTagResources).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagList {
    #[serde(rename = "Tag")]
    pub tag: Vec<Tag>,
}

/// One resource by `KeyId`, `SecretName` or `CertificateId`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub key_id: Option<String>,
    pub secret_name: Option<String>,
    pub certificate_id: Option<String>,
    /// JSON: `[{"TagKey":"k","TagValue":"v"}]`.
    pub tags: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourceRequest {
    pub key_id: Option<String>,
    pub secret_name: Option<String>,
    pub certificate_id: Option<String>,
    /// JSON array of keys (`["k1","k2"]`), or keys separated by commas.
    pub tag_keys: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyTag {
    pub key_id: String,
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTagList {
    #[serde(rename = "Tag")]
    pub tag: Vec<KeyTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    pub tags: KeyTagList,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagKv {
    pub key: String,
    pub value: Option<String>,
}

/// TagResources: `ResourceId.N`, `Tag.N.Key`, `Tag.N.Value` on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourcesRequest {
    pub region_id: String,
    pub resource_type: String,
    pub resource_id: Vec<String>,
    pub tag: Vec<TagKv>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResourcesRequest {
    pub region_id: String,
    pub resource_type: String,
    pub resource_id: Vec<String>,
    #[serde(default)]
    pub tag_key: Vec<String>,
    pub all: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagResourcesRequest {
    pub region_id: String,
    pub resource_type: String,
    #[serde(default)]
    pub resource_id: Vec<String>,
    #[serde(default)]
    pub tag: Vec<TagKv>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResource {
    pub resource_id: String,
    pub resource_type: String,
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagResourceList {
    #[serde(rename = "TagResource")]
    pub tag_resource: Vec<TagResource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagResourcesResponse {
    pub tag_resources: TagResourceList,
    /// Empty on the last page.
    pub next_token: String,
}
