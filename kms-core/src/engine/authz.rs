//! Authorisation: which resources a request touches and whether the caller's policies allow the
//! action on each (spec: the user guide's RAM chapter).
//!
//! The owner may do everything. A service principal may use its own service key. Everyone else
//! needs an Allow for every resource and no Deny. The guide's special rules are expressed by the
//! resources each action names: a key used through an alias is checked as the key; UpdateAlias
//! needs the alias, the key it points to and the new key; a secret with a chosen CMK also needs
//! the key permission on that CMK.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::secrets::SECRETS_SERVICE;
use super::state::State;
use super::{Caller, Engine, Principal};
use crate::crypto::blob;
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::{alias_arn, key_arn, service_of_alias, KeyRef};
use crate::model::ResourceType;
use crate::policy::{evaluate, Decision, Policy, RequestContext};

/// The policies attached to each principal.
pub type PolicySet = HashMap<Principal, Vec<Policy>>;

/// A resource a request names, before resolution.
#[derive(Debug, Clone, Copy)]
pub enum ResourceRef<'a> {
    KeyContainer,
    AliasContainer,
    SecretContainer,
    /// No particular resource (GetRandomPassword): only `*` matches.
    Any,
    /// A `KeyId`-style parameter: id, alias or ARN; checked as the key.
    Key(&'a str),
    /// The key a symmetric ciphertext blob names.
    KeyOfBlob(&'a [u8]),
    /// An alias as a resource in its own right (CreateAlias, UpdateAlias, DeleteAlias).
    Alias(&'a str),
    /// The key an alias points to now.
    KeyOfAlias(&'a str),
    Secret(&'a str),
    /// The CMK protecting a secret; nothing to check when it is the secrets service key.
    KeyOfSecret(&'a str),
}

/// A resolved resource: its ARN, tags, and whether it is the caller's own service key.
struct Resolved<'s> {
    arn: String,
    tags: Option<&'s BTreeMap<String, String>>,
    own_service_key: bool,
}

impl Engine {
    /// Replaces the policies (configuration reload).
    pub fn set_policies(&self, set: PolicySet) {
        *self.policies.write() = Arc::new(set);
    }

    /// Checks each `(action, resource)`; returns the ARNs involved (for the audit trail) or
    /// `Forbidden.NoPermission` naming the first action and resource denied.
    pub fn authorize(&self, caller: &Caller, checks: &[(&str, ResourceRef<'_>)]) -> Result<Vec<String>> {
        let policies = self.policies.read().clone();
        let st = self.state.read();
        let now = self.now();
        let mut arns = Vec::with_capacity(checks.len());
        for (action, r) in checks {
            let Some(res) = self.resolve_ref(&st, caller, *r) else { continue };
            let allowed = match &caller.principal {
                Principal::Owner => true,
                Principal::Service(_) if res.own_service_key => true,
                p => {
                    let ctx = RequestContext {
                        action,
                        resource: &res.arn,
                        tags: res.tags,
                        source_ip: caller.source_ip,
                        secure_transport: caller.secure_transport,
                        now,
                    };
                    match policies.get(p).map(|ps| evaluate(ps, &ctx)).unwrap_or(Decision::NoMatch) {
                        Decision::Allow => true,
                        Decision::Deny => return Err(denied(caller, action, &res.arn, "an explicit Deny matches")),
                        Decision::NoMatch => false,
                    }
                }
            };
            if !allowed {
                return Err(denied(caller, action, &res.arn, "no policy allows it"));
            }
            if !arns.contains(&res.arn) {
                arns.push(res.arn);
            }
        }
        Ok(arns)
    }

    fn resolve_ref<'s>(&self, st: &'s State, caller: &Caller, r: ResourceRef<'_>) -> Option<Resolved<'s>> {
        let (region, account) = (&self.config.region, &self.config.account_id);
        let plain = |arn: String| Resolved { arn, tags: None, own_service_key: false };
        let key = |id: &str| {
            let k = st.keys.get(id);
            Resolved {
                arn: key_arn(region, account, id),
                tags: st.tags.get(&(ResourceType::Key, id.to_string())),
                own_service_key: k
                    .is_some_and(|k| k.service.is_some() && k.service.as_deref() == caller.service_name()),
            }
        };
        Some(match r {
            ResourceRef::KeyContainer => plain(format!("acs:kms:{region}:{account}:key")),
            ResourceRef::AliasContainer => plain(format!("acs:kms:{region}:{account}:alias")),
            ResourceRef::SecretContainer => plain(format!("acs:kms:{region}:{account}:secret")),
            ResourceRef::Any => plain("*".into()),
            ResourceRef::Key(v) => match self.key_ref("KeyId", v) {
                Ok(KeyRef::Id(id)) => key(&id),
                Ok(KeyRef::Alias(name)) => match st.aliases.get(&name) {
                    Some(a) => key(&a.key_id),
                    // A service's first use of its own alias creates its key: that is its key.
                    None if service_of_alias(&name).is_some() && service_of_alias(&name) == caller.service_name() => {
                        Resolved { arn: alias_arn(region, account, &name), tags: None, own_service_key: true }
                    }
                    None => plain(alias_arn(region, account, &name)),
                },
                Err(_) => plain(key_arn(region, account, v)),
            },
            ResourceRef::KeyOfBlob(b) => match blob::parse(b) {
                Ok(h) => key(h.key_id),
                Err(_) => return None, // the operation itself reports the malformed blob
            },
            ResourceRef::Alias(name) => plain(alias_arn(region, account, name)),
            ResourceRef::KeyOfAlias(name) => key(&st.aliases.get(name)?.key_id),
            ResourceRef::Secret(name) => {
                let s = self.find_secret(st, name).ok();
                let n = s.map(|s| s.name.as_str()).unwrap_or(name);
                Resolved {
                    arn: format!("acs:kms:{region}:{account}:secret/{n}"),
                    tags: st.tags.get(&(ResourceType::Secret, n.to_string())),
                    own_service_key: false,
                }
            }
            ResourceRef::KeyOfSecret(name) => {
                let s = self.find_secret(st, name).ok()?;
                let k = st.keys.get(&s.encryption_key_id)?;
                if k.service.as_deref() == Some(SECRETS_SERVICE) {
                    return None;
                }
                key(&k.key_id)
            }
        })
    }
}

fn denied(caller: &Caller, action: &str, arn: &str, why: &str) -> KmsError {
    KmsError::with_detail(ErrorCode::NoPermission, format_args!("{} may not {action} on {arn}: {why}.", caller.label()))
}
