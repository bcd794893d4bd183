//! Tags on keys and secrets. Keys are 1–128 characters and may not start with `acs:` or `aliyun`
//! (reserved by the cloud); values are 0–128 characters; a resource holds at most
//! `max_tags_per_resource` tags.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::authz::{Access, Resource, ResourceKind};
use super::state::KeyEntry;
use super::view::View;
use super::{Caller, Engine};
use crate::api::*;
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::ResourceType;
use crate::store::Change;

const MAX_RESOURCES_PER_CALL: usize = 50;
const MAX_TAGS_PER_CALL: usize = 20;
const LIST_PAGE: usize = 50;

/// Parses the old API's `Tags` JSON: `[{"TagKey":"k","TagValue":"v"}]`.
pub(crate) fn parse_tags_json(param: &str, raw: &str) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct T {
        tag_key: String,
        #[serde(default)]
        tag_value: String,
    }
    let list: Vec<T> = serde_json::from_str(raw.trim()).map_err(|e| {
        KmsError::invalid(param, format_args!("expected [{{\"TagKey\":\"k\",\"TagValue\":\"v\"}}] ({e})"))
    })?;
    let tags: Vec<(String, String)> = list.into_iter().map(|t| (t.tag_key, t.tag_value)).collect();
    for (k, v) in &tags {
        validate_tag(param, k, v)?;
    }
    Ok(tags)
}

fn validate_tag(param: &str, key: &str, value: &str) -> Result<()> {
    let n = key.chars().count();
    if n == 0 || n > 128 {
        return Err(KmsError::invalid(param, "a tag key has 1 to 128 characters"));
    }
    refuse_reserved(param, key)?;
    if value.chars().count() > 128 {
        return Err(KmsError::invalid(param, "a tag value has at most 128 characters"));
    }
    Ok(())
}

/// Whether a tag key is reserved for the service itself (service grants: `grants.rs`).
fn is_reserved(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower.starts_with("acs:") || lower.starts_with("aliyun")
}

/// Tag keys users may neither set nor remove.
fn refuse_reserved(param: &str, key: &str) -> Result<()> {
    if is_reserved(key) {
        return Err(KmsError::invalid(
            param,
            format_args!(
                "tag key {key:?}: the prefixes acs: and aliyun are reserved (a service grant changes \
                 through GrantServiceKeyUse and RevokeServiceKeyUse)"
            ),
        ));
    }
    Ok(())
}

/// A resource a tag call resolved, with its tags now.
struct Tagged {
    rt: ResourceType,
    id: String,
    tags: BTreeMap<String, String>,
    /// The key, if the resource is a service's key.
    service_key: Option<Arc<KeyEntry>>,
}

impl Tagged {
    /// A service key's tags are its service's: tags feed `kms:tag/…` policy conditions, so a
    /// tag set by hand could grant others the use of it.
    fn check_taggable(&self) -> Result<()> {
        match &self.service_key {
            Some(k) => super::forbid_service_key(k, "tagging"),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// The changes that set `tags` on a resource that has `current` tags, refused if it would
    /// exceed the limit.
    pub(crate) fn tag_changes(
        &self,
        current: Option<&BTreeMap<String, String>>,
        rt: ResourceType,
        id: &str,
        tags: &[(String, String)],
    ) -> Result<Vec<Change>> {
        let max = self.config.limits.max_tags_per_resource;
        let mut after: BTreeMap<&str, &str> =
            current.map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default();
        for (k, v) in tags {
            after.insert(k, v);
        }
        if after.len() > max {
            return Err(KmsError::with_detail(
                ErrorCode::LimitExceeded,
                format_args!("A resource holds at most {max} tags; {id} would have {}.", after.len()),
            ));
        }
        Ok(tags
            .iter()
            .map(|(k, v)| Change::PutTag {
                resource_type: rt,
                resource_id: id.to_string(),
                key: k.clone(),
                value: v.clone(),
            })
            .collect())
    }

    pub(crate) fn tags_of(&self, tags: &BTreeMap<String, String>) -> TagList {
        TagList { tag: tags.iter().map(|(k, v)| Tag { tag_key: k.clone(), tag_value: v.clone() }).collect() }
    }

    /// The canonical id of a resource named by the caller (key id/alias/ARN, secret name/ARN),
    /// authorised for `access` on what it resolves to.
    fn resource(&self, st: &View<'_>, access: Access<'_>, rt: ResourceType, param: &str, id: &str) -> Result<Tagged> {
        Ok(match rt {
            ResourceType::Key => {
                let k = self.find_key(st, access, param, id)?;
                Tagged {
                    rt,
                    id: k.key_id.clone(),
                    tags: k.tags.clone(),
                    service_key: k.service.is_some().then(|| k.clone()),
                }
            }
            ResourceType::Secret => {
                let s = self.find_secret_for(st, access, id)?;
                Tagged { rt, id: s.name.clone(), tags: s.tags.clone(), service_key: None }
            }
        })
    }

    /// The one resource a single-resource tag call names, authorised for `access`. Which kind
    /// it is is decided here, once, from the same values the call then uses.
    fn single_resource(
        &self,
        st: &View<'_>,
        access: Access<'_>,
        key_id: &Option<String>,
        secret_name: &Option<String>,
        certificate_id: &Option<String>,
    ) -> Result<Tagged> {
        let given = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.trim().is_empty());
        if given(certificate_id) {
            return Err(KmsError::unsupported("certificates are not managed by this service"));
        }
        match (given(key_id), given(secret_name)) {
            (true, false) => {
                self.resource(st, access, ResourceType::Key, "KeyId", key_id.as_deref().unwrap_or_default())
            }
            (false, true) => self.resource(
                st,
                access,
                ResourceType::Secret,
                "SecretName",
                secret_name.as_deref().unwrap_or_default(),
            ),
            (false, false) => Err(KmsError::missing("KeyId")),
            (true, true) => Err(KmsError::invalid("KeyId", "name either KeyId or SecretName, not both")),
        }
    }

    pub fn tag_resource(&self, caller: &Caller, req: TagResourceRequest) -> Result<()> {
        let tags = parse_tags_json("Tags", &req.tags)?;
        self.mutate(|st, _| {
            let access = Access::Check(caller, "kms:TagResource");
            let r = self.single_resource(st, access, &req.key_id, &req.secret_name, &req.certificate_id)?;
            r.check_taggable()?;
            Ok((self.tag_changes(Some(&r.tags), r.rt, &r.id, &tags)?, ()))
        })
    }

    pub fn untag_resource(&self, caller: &Caller, req: UntagResourceRequest) -> Result<()> {
        let raw = req.tag_keys.trim();
        let keys: Vec<String> = if raw.starts_with('[') {
            serde_json::from_str(raw)
                .map_err(|e| KmsError::invalid("TagKeys", format_args!("expected [\"key1\",\"key2\"] ({e})")))?
        } else {
            raw.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect()
        };
        if keys.is_empty() {
            return Err(KmsError::missing("TagKeys"));
        }
        for k in &keys {
            refuse_reserved("TagKeys", k)?;
        }
        self.mutate(|st, _| {
            let access = Access::Check(caller, "kms:UntagResource");
            let r = self.single_resource(st, access, &req.key_id, &req.secret_name, &req.certificate_id)?;
            r.check_taggable()?;
            let changes = keys
                .iter()
                .map(|k| Change::DeleteTag { resource_type: r.rt, resource_id: r.id.clone(), key: k.clone() })
                .collect();
            Ok((changes, ()))
        })
    }

    pub fn list_resource_tags(&self, caller: &Caller, key_id: &str) -> Result<ListResourceTagsResponse> {
        let st = self.view()?;
        let k = self.find_key(&st, Access::Check(caller, "kms:ListResourceTags"), "KeyId", key_id)?;
        let tag = self
            .tags_of(&k.tags)
            .tag
            .into_iter()
            .map(|t| KeyTag { key_id: k.key_id.clone(), tag_key: t.tag_key, tag_value: t.tag_value })
            .collect();
        Ok(ListResourceTagsResponse { tags: KeyTagList { tag } })
    }

    fn check_multi(&self, region: &str, resource_type: &str, ids: &[String]) -> Result<ResourceType> {
        if region != self.config.region {
            return Err(KmsError::invalid("RegionId", format_args!("this service is region {}", self.config.region)));
        }
        let rt =
            ResourceType::parse(resource_type).ok_or_else(|| KmsError::invalid("ResourceType", "use key or secret"))?;
        if ids.len() > MAX_RESOURCES_PER_CALL {
            return Err(KmsError::invalid(
                "ResourceId",
                format_args!("at most {MAX_RESOURCES_PER_CALL} resources per call"),
            ));
        }
        Ok(rt)
    }

    pub fn tag_resources(&self, caller: &Caller, req: TagResourcesRequest) -> Result<()> {
        let rt = self.check_multi(&req.region_id, &req.resource_type, &req.resource_id)?;
        if req.resource_id.is_empty() {
            return Err(KmsError::missing("ResourceId.1"));
        }
        if req.tag.is_empty() || req.tag.len() > MAX_TAGS_PER_CALL {
            return Err(KmsError::invalid("Tag", format_args!("give 1 to {MAX_TAGS_PER_CALL} tags")));
        }
        let tags: Vec<(String, String)> =
            req.tag.iter().map(|t| (t.key.clone(), t.value.clone().unwrap_or_default())).collect();
        for (k, v) in &tags {
            validate_tag("Tag", k, v)?;
        }
        self.mutate(|st, _| {
            let mut changes = Vec::new();
            for id in &req.resource_id {
                let r = self.resource(st, Access::Check(caller, "kms:TagResources"), rt, "ResourceId", id)?;
                r.check_taggable()?;
                changes.extend(self.tag_changes(Some(&r.tags), rt, &r.id, &tags)?);
            }
            Ok((changes, ()))
        })
    }

    pub fn untag_resources(&self, caller: &Caller, req: UntagResourcesRequest) -> Result<()> {
        let rt = self.check_multi(&req.region_id, &req.resource_type, &req.resource_id)?;
        if req.resource_id.is_empty() {
            return Err(KmsError::missing("ResourceId.1"));
        }
        let all = req.all.unwrap_or(false);
        if !all && req.tag_key.is_empty() {
            return Err(KmsError::missing("TagKey.1"));
        }
        for k in &req.tag_key {
            refuse_reserved("TagKey", k)?;
        }
        self.mutate(|st, _| {
            let mut changes = Vec::new();
            for id in &req.resource_id {
                let r = self.resource(st, Access::Check(caller, "kms:UntagResources"), rt, "ResourceId", id)?;
                r.check_taggable()?;
                let id = r.id;
                // `All` removes the user's tags, not the service's (a grant stays).
                let keys: Vec<String> = if all {
                    r.tags.keys().filter(|k| !is_reserved(k)).cloned().collect()
                } else {
                    req.tag_key.clone()
                };
                changes.extend(keys.into_iter().map(|k| Change::DeleteTag {
                    resource_type: rt,
                    resource_id: id.clone(),
                    key: k,
                }));
            }
            Ok((changes, ()))
        })
    }

    pub fn list_tag_resources(
        &self,
        caller: &Caller,
        req: ListTagResourcesRequest,
    ) -> Result<ListTagResourcesResponse> {
        let rt = self.check_multi(&req.region_id, &req.resource_type, &req.resource_id)?;
        let start: usize = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => t.parse().map_err(|_| KmsError::invalid("NextToken", "not a token this service issued"))?,
            None => 0,
        };
        let st = self.view()?;
        let access = Access::Check(caller, "kms:ListTagResources");
        let wanted: Option<Vec<String>> = if req.resource_id.is_empty() {
            // Every resource of the kind: a question about the collection.
            let kind = match rt {
                ResourceType::Key => ResourceKind::Key,
                ResourceType::Secret => ResourceKind::Secret,
            };
            self.allow(caller, "kms:ListTagResources", Resource::Container(kind))?;
            None
        } else {
            let mut ids = Vec::new();
            for id in &req.resource_id {
                let id = self.resource(&st, access, rt, "ResourceId", id)?.id;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Some(ids)
        };
        let filters: Vec<(String, Option<String>)> = req.tag.iter().map(|f| (f.key.clone(), f.value.clone())).collect();
        // One row more than a page tells whether another page follows.
        let mut rows = st.tag_rows(rt, wanted, filters, start as u64, LIST_PAGE as u32 + 1)?;
        let next_token = if rows.len() > LIST_PAGE { (start + LIST_PAGE).to_string() } else { String::new() };
        rows.truncate(LIST_PAGE);
        let page = rows
            .into_iter()
            .map(|(resource_id, tag_key, tag_value)| TagResource {
                resource_id,
                resource_type: rt.as_str().into(),
                tag_key,
                tag_value,
            })
            .collect();
        Ok(ListTagResourcesResponse { tag_resources: TagResourceList { tag_resource: page }, next_token })
    }
}
