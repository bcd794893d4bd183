//! Authorisation, decided where a resource is resolved (spec: the user guide's RAM chapter).
//!
//! Every operation resolves the resources it will act on – an alias to its key, a blob header to
//! its key, a secret to its CMK, ReEncrypt's real source – once, into records it holds, then
//! asks [`Engine::allow`] about exactly those records and acts on the same ones (a write decides
//! and checks under the store's write lock). Nothing outside the engine says what a request touches, so no parameter spelling
//! (whitespace, case, ARN or alias, a blob naming another key) can make the checked resource
//! differ from the used one. Each check records the resource's ARN in the caller's trail, for the
//! audit line, allowed or denied.
//!
//! The owner may do everything. A service principal may use its own service key, and the keys
//! granted to its service for envelopes (`grants.rs`). Everyone else needs an Allow for every
//! resource and no Deny.

use std::collections::HashMap;
use std::sync::Arc;

use super::state::{KeyEntry, SecretEntry};
use super::view::View;
use super::{Caller, Engine, Principal};
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::{alias_arn, key_arn, service_of_alias, KeyRef};
use crate::policy::{evaluate, Decision, Policy, RequestContext};

/// The policies attached to each principal.
pub type PolicySet = HashMap<Principal, Vec<Policy>>;

/// What an operation must be allowed on the resource it resolves.
#[derive(Clone, Copy)]
pub(crate) enum Access<'a> {
    /// The caller needs this permission (`kms:Encrypt`) on the resolved resource.
    Check(&'a Caller, &'static str),
    /// The calling operation has already authorised its caller on what this step resolves: the
    /// secrets manager's own envelope under a secret's CMK (checked as the secret and its CMK).
    Authorized,
}

/// A resolved resource, as a policy sees it.
pub(crate) enum Resource<'s> {
    /// The key, alias or secret collection (CreateKey, ListKeys, ListAliases, ListSecrets…).
    Container(ResourceKind),
    /// No particular resource (GetRandomPassword): only `*` matches.
    Any,
    Key(&'s KeyEntry),
    /// An alias as a resource in its own right (CreateAlias, UpdateAlias, DeleteAlias).
    Alias(&'s str),
    Secret(&'s SecretEntry),
    /// A resource that was named but does not exist, checked by the ARN its name gives: whether
    /// it exists is told only to callers who may use it.
    Missing(String),
}

#[derive(Clone, Copy)]
pub(crate) enum ResourceKind {
    Key,
    Alias,
    Secret,
}

impl Engine {
    /// Replaces the policies (configuration reload).
    pub fn set_policies(&self, set: PolicySet) {
        *self.policies.write() = Arc::new(set);
    }

    /// Decides `action` on a resolved resource for `caller`; records its ARN in the caller's trail
    /// first, so a denied call's audit line names it too.
    pub(crate) fn allow(&self, caller: &Caller, action: &str, res: Resource<'_>) -> Result<()> {
        let (region, account) = (&self.config.region, &self.config.account_id);
        let (arn, tags, own_service_key) = match res {
            Resource::Container(kind) => {
                let kind = match kind {
                    ResourceKind::Key => "key",
                    ResourceKind::Alias => "alias",
                    ResourceKind::Secret => "secret",
                };
                (format!("acs:kms:{region}:{account}:{kind}"), None, false)
            }
            Resource::Any => ("*".to_string(), None, false),
            Resource::Key(k) => (
                key_arn(region, account, &k.key_id),
                Some(&k.tags),
                k.service.is_some() && k.service.as_deref() == caller.service_name(),
            ),
            Resource::Alias(name) => (alias_arn(region, account, name), None, false),
            Resource::Secret(s) => (self.secret_arn(&s.name), Some(&s.tags), false),
            Resource::Missing(arn) => (arn, None, false),
        };
        caller.trail.push(&arn);
        let allowed = match &caller.principal {
            Principal::Owner => true,
            Principal::Service(_) if own_service_key => true,
            p => {
                let policies = self.policies.read().clone();
                let ctx = RequestContext {
                    action,
                    resource: &arn,
                    tags,
                    source_ip: caller.source_ip,
                    secure_transport: caller.secure_transport,
                    now: self.now(),
                };
                match policies.get(p).map(|ps| evaluate(ps, &ctx)).unwrap_or(Decision::NoMatch) {
                    Decision::Allow => true,
                    Decision::Deny => return Err(denied(caller, action, &arn, "an explicit Deny matches")),
                    // A key its owner granted to this service (`grants.rs`), for an envelope.
                    Decision::NoMatch => match (p, tags) {
                        (Principal::Service(svc), Some(tags)) => super::grants::granted(tags, svc, action),
                        _ => false,
                    },
                }
            }
        };
        if allowed {
            return Ok(());
        }
        let why = match (caller.service_name(), arn.rsplit_once(":key/")) {
            // The service's refusal names the one step that fixes it.
            (Some(svc), Some((_, key))) if super::grants::GRANTED_ACTIONS.contains(&action) => format!(
                "no policy allows it and the key is not granted to {svc}; its owner can grant it: \
                 GrantServiceKeyUse (`kmsctl grant-service {svc} --key-id {key}`)"
            ),
            _ => "no policy allows it".to_string(),
        };
        Err(denied(caller, action, &arn, &why))
    }

    /// Checks `access` on a resolved resource (nothing to check when already authorised).
    pub(crate) fn allow_access(&self, access: Access<'_>, res: Resource<'_>) -> Result<()> {
        match access {
            Access::Check(caller, action) => self.allow(caller, action, res),
            Access::Authorized => Ok(()),
        }
    }

    /// The key a `KeyId`-style parameter names, authorised for `access`. A name that resolves to
    /// nothing is checked by its own ARN, so only callers allowed to use it learn it is missing.
    pub(crate) fn find_key(
        &self,
        st: &View<'_>,
        access: Access<'_>,
        param: &str,
        value: &str,
    ) -> Result<Arc<KeyEntry>> {
        let r = self.key_ref(param, value)?;
        match st.lookup(&r) {
            Ok(k) => {
                self.allow_access(access, Resource::Key(&k))?;
                Ok(k)
            }
            Err(e) if e.code() == ErrorCode::ServiceUnavailableTemporary => Err(e),
            Err(e) => {
                let arn = match &r {
                    KeyRef::Id(id) => key_arn(&self.config.region, &self.config.account_id, id),
                    // A service's own key that does not exist yet: its first use creates it
                    // (`with_key`), and it is then checked as that key.
                    KeyRef::Alias(name) if own_service_alias(access, name) => return Err(e),
                    KeyRef::Alias(name) => alias_arn(&self.config.region, &self.config.account_id, name),
                };
                self.allow_access(access, Resource::Missing(arn))?;
                Err(e)
            }
        }
    }

    /// A secret by name or ARN, authorised for `access`; a missing one is checked by its ARN.
    pub(crate) fn find_secret_for(&self, st: &View<'_>, access: Access<'_>, name: &str) -> Result<Arc<SecretEntry>> {
        match self.find_secret(st, name) {
            Ok(s) => {
                self.allow_access(access, Resource::Secret(&s))?;
                Ok(s)
            }
            Err(e) if matches!(e.code(), ErrorCode::MissingParameter | ErrorCode::ServiceUnavailableTemporary) => {
                Err(e)
            }
            Err(e) => {
                let arn = self.secret_arn(self.secret_short_name(name));
                self.allow_access(access, Resource::Missing(arn))?;
                Err(e)
            }
        }
    }

    /// Checks `action` on the CMK protecting `secret`; the secrets manager's own service key is
    /// governed by the secret's permissions alone.
    pub(crate) fn allow_secret_key(
        &self,
        st: &View<'_>,
        caller: &Caller,
        action: &str,
        secret: &SecretEntry,
    ) -> Result<()> {
        match st.key(&secret.encryption_key_id)? {
            Some(k) if k.service.as_deref() == Some(super::secrets::SECRETS_SERVICE) => Ok(()),
            Some(k) => self.allow(caller, action, Resource::Key(&k)),
            // A secret whose CMK was deleted: nothing can open it; the operation says so.
            None => Ok(()),
        }
    }
}

fn own_service_alias(access: Access<'_>, alias: &str) -> bool {
    match access {
        Access::Check(caller, _) => caller.service_name().is_some() && service_of_alias(alias) == caller.service_name(),
        Access::Authorized => false,
    }
}

fn denied(caller: &Caller, action: &str, arn: &str, why: &str) -> KmsError {
    KmsError::with_detail(ErrorCode::NoPermission, format_args!("{} may not {action} on {arn}: {why}.", caller.label()))
}
