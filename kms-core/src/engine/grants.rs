//! Service grants: the owner of a CMK lets a cloud service's principal (`service:oss`,
//! `service:ecs`, …) use it for envelopes – what a RAM service role does in Alibaba Cloud for OSS
//! or ECS encryption with your own key. Without one, a volume or disk under your own CMK needs a
//! hand-written policy, and a sidecar restarted without that configuration can no longer open it.
//!
//! A grant is kept with the key, in the store, as the reserved tag `acs:service-grant:<service>`:
//! every node sees it and it survives restarts; ListResourceTags shows it; `kms:tag/…` policy
//! conditions can name it. Users cannot set or remove reserved tags through the tag actions –
//! only GrantServiceKeyUse and RevokeServiceKeyUse (each its own permission) change a grant.
//!
//! What a grant allows is decided in `authz.rs`, on the resolved key: the envelope actions
//! [`GRANTED_ACTIONS`] for that service only, unless a policy of the service's denies them.

use std::collections::BTreeMap;

use super::authz::Access;
use super::Engine;
use crate::api::ServiceKeyUseRequest;
use crate::error::{KmsError, Result};
use crate::model::ResourceType;
use crate::store::Change;

/// The reserved tag a grant to a service is kept as (followed by the service's name).
pub const GRANT_TAG_PREFIX: &str = "acs:service-grant:";
const GRANT_TAG_VALUE: &str = "granted";

/// What a grant lets the service do with the key: an envelope's whole life – a new data key, its
/// unwrapping, and its rewrapping to a new version or another key (kmsfs init/mount/rewrap,
/// blockcrypt create/open/rewrap).
pub const GRANTED_ACTIONS: &[&str] = &["kms:GenerateDataKey", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"];

/// Whether a key with `tags` is granted to `service` for `action`.
pub(crate) fn granted(tags: &BTreeMap<String, String>, service: &str, action: &str) -> bool {
    GRANTED_ACTIONS.contains(&action) && tags.get(&grant_tag(service)).is_some_and(|v| v == GRANT_TAG_VALUE)
}

fn grant_tag(service: &str) -> String {
    format!("{GRANT_TAG_PREFIX}{service}")
}

/// A service name as principals spell it: lowercase letters, digits and `-`, 1–32 characters.
fn parse_service(raw: &str) -> Result<String> {
    let s = raw.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Err(KmsError::missing("Service"));
    }
    if s.len() > 32 || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(KmsError::invalid(
            "Service",
            format_args!("{raw:?}: a service is named by 1 to 32 letters, digits or '-' (oss, ecs, …)"),
        ));
    }
    Ok(s)
}

impl Engine {
    /// GrantServiceKeyUse: lets `service` use the key for envelopes (see the module).
    pub fn grant_service_key_use(&self, caller: &super::Caller, req: ServiceKeyUseRequest) -> Result<()> {
        self.set_grant(caller, req, true)
    }

    /// RevokeServiceKeyUse: ends a grant; what the service wrapped stays wrapped, but it can no
    /// longer unwrap it (a volume or disk under the key stops opening).
    pub fn revoke_service_key_use(&self, caller: &super::Caller, req: ServiceKeyUseRequest) -> Result<()> {
        self.set_grant(caller, req, false)
    }

    fn set_grant(&self, caller: &super::Caller, req: ServiceKeyUseRequest, on: bool) -> Result<()> {
        let service = parse_service(&req.service)?;
        let action = if on { "kms:GrantServiceKeyUse" } else { "kms:RevokeServiceKeyUse" };
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, action), "KeyId", &req.key_id)?;
            // A service key is its service's already, and nobody's to hand to another service.
            super::forbid_service_key(&k, "granting")?;
            let tag = grant_tag(&service);
            let changes = if on {
                self.tag_changes(Some(&k.tags), ResourceType::Key, &k.key_id, &[(tag, GRANT_TAG_VALUE.into())])?
            } else {
                vec![Change::DeleteTag { resource_type: ResourceType::Key, resource_id: k.key_id.clone(), key: tag }]
            };
            Ok((changes, ()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_and_what_a_grant_covers() {
        assert_eq!(parse_service(" OSS ").unwrap(), "oss");
        assert_eq!(parse_service("my-svc2").unwrap(), "my-svc2");
        for bad in ["", "a b", "oss:x", "../x", &"x".repeat(33)] {
            assert!(parse_service(bad).is_err(), "{bad:?}");
        }
        let tags: BTreeMap<String, String> = [(grant_tag("oss"), GRANT_TAG_VALUE.to_string())].into();
        assert!(granted(&tags, "oss", "kms:Decrypt"));
        assert!(!granted(&tags, "ecs", "kms:Decrypt"), "another service");
        assert!(!granted(&tags, "oss", "kms:Encrypt"), "not an envelope action");
        assert!(!granted(&tags, "oss", "kms:ScheduleKeyDeletion"));
        let other: BTreeMap<String, String> = [(grant_tag("oss"), "yes".to_string())].into();
        assert!(!granted(&other, "oss", "kms:Decrypt"), "only the value a grant writes");
    }
}
