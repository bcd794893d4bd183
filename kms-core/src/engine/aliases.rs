//! Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases, ListAliasesByKeyId.

use super::authz::{Access, Resource, ResourceKind};
use super::{forbid_service_key, state_error, state_modify_failed, Caller, Engine};
use crate::api::{Alias, AliasList, ListAliasesResponse, PageRequest};
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::{alias_arn, service_of_alias, validate_alias_name, SERVICE_ALIAS_PREFIX};
use crate::model::{AliasRecord, KeyState};
use crate::store::reads::{Count, Page};
use crate::store::Change;

/// `alias/acs/…` in any letter case: reserved for service keys, so that no user alias can be
/// mistaken for one by a reader who does not compare case.
fn is_reserved_alias(name: &str) -> bool {
    name.get(..SERVICE_ALIAS_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(SERVICE_ALIAS_PREFIX))
}

fn forbid_service_alias(name: &str, action: &str) -> Result<()> {
    match service_of_alias(name) {
        Some(svc) => Err(KmsError::unsupported(format_args!(
            "{name} is the alias of the {} service key; {action} is not allowed on it",
            svc.to_uppercase()
        ))),
        None if is_reserved_alias(name) => {
            Err(KmsError::invalid("AliasName", "the prefix alias/acs/ is reserved for cloud service keys"))
        }
        None => Ok(()),
    }
}

impl Engine {
    pub fn create_alias(&self, caller: &Caller, alias_name: &str, key_id: &str) -> Result<()> {
        validate_alias_name(alias_name)?;
        if is_reserved_alias(alias_name) {
            return Err(KmsError::invalid("AliasName", "the prefix alias/acs/ is reserved for cloud service keys"));
        }
        let max = self.config.limits.max_aliases;
        self.mutate(|st, now| {
            self.allow(caller, "kms:CreateAlias", Resource::Alias(alias_name))?;
            let k = self.find_key(st, Access::Check(caller, "kms:CreateAlias"), "KeyId", key_id)?;
            forbid_service_key(&k, "CreateAlias")?;
            if k.state == KeyState::PendingDeletion {
                return Err(state_modify_failed(&k, "aliases cannot be added to a key pending deletion"));
            }
            if st.alias(alias_name)?.is_some() {
                return Err(KmsError::with_detail(
                    ErrorCode::AliasAlreadyExists,
                    format_args!("AliasName: {alias_name}"),
                ));
            }
            if !st.within_limit(Count::Aliases, max)? {
                return Err(KmsError::with_detail(
                    ErrorCode::LimitExceeded,
                    format_args!("At most {max} aliases may exist in a region."),
                ));
            }
            let a = AliasRecord { name: alias_name.to_string(), key_id: k.key_id.clone(), created_at: now };
            Ok((vec![Change::PutAlias(a)], ()))
        })
    }

    pub fn update_alias(&self, caller: &Caller, alias_name: &str, key_id: &str) -> Result<()> {
        validate_alias_name(alias_name)?;
        self.mutate(|st, _| {
            // The alias, the key it names now and the key it is to name: all three in this snapshot.
            self.allow(caller, "kms:UpdateAlias", Resource::Alias(alias_name))?;
            let current = st.alias_record(alias_name)?.ok_or_else(|| KmsError::alias_not_found(alias_name))?;
            let old = st.key(&current.key_id)?;
            if let Some(old) = &old {
                self.allow(caller, "kms:UpdateAlias", Resource::Key(old))?;
            }
            forbid_service_alias(alias_name, "UpdateAlias")?;
            let target = self.find_key(st, Access::Check(caller, "kms:UpdateAlias"), "KeyId", key_id)?;
            forbid_service_key(&target, "UpdateAlias")?;
            if target.state == KeyState::PendingDeletion {
                return Err(state_error(&target));
            }
            // Ciphertexts and callers that use the alias expect one kind of key behind it.
            if let Some(old) = &old {
                if old.usage != target.usage || old.spec.is_symmetric() != target.spec.is_symmetric() {
                    return Err(KmsError::invalid(
                        "KeyId",
                        format_args!(
                            "{} ({}, {}) is not the same kind of key as {} ({}, {})",
                            target.key_id, target.spec, target.usage, old.key_id, old.spec, old.usage
                        ),
                    ));
                }
            }
            let mut a = current;
            a.key_id = target.key_id.clone();
            Ok((vec![Change::PutAlias(a)], ()))
        })
    }

    pub fn delete_alias(&self, caller: &Caller, alias_name: &str) -> Result<()> {
        if alias_name.trim().is_empty() {
            return Err(KmsError::missing("AliasName"));
        }
        self.mutate(|st, _| {
            self.allow(caller, "kms:DeleteAlias", Resource::Alias(alias_name))?;
            let current = st.alias(alias_name)?.ok_or_else(|| KmsError::alias_not_found(alias_name))?;
            if let Some(k) = st.key(&current)? {
                self.allow(caller, "kms:DeleteAlias", Resource::Key(&k))?;
            }
            forbid_service_alias(alias_name, "DeleteAlias")?;
            Ok((vec![Change::DeleteAlias(alias_name.to_string())], ()))
        })
    }

    pub fn list_aliases(&self, caller: &Caller, page: PageRequest) -> Result<ListAliasesResponse> {
        let page = page.validate()?;
        let st = self.view()?;
        self.allow(caller, "kms:ListAliases", Resource::Container(ResourceKind::Alias))?;
        let found = st.aliases(None, page.offset(), page.size)?;
        Ok(self.alias_page(found, page))
    }

    pub fn list_aliases_by_key_id(
        &self,
        caller: &Caller,
        key_id: &str,
        page: PageRequest,
    ) -> Result<ListAliasesResponse> {
        let page = page.validate()?;
        let st = self.view()?;
        let k = self.find_key(&st, Access::Check(caller, "kms:ListAliasesByKeyId"), "KeyId", key_id)?;
        let found = st.aliases(Some(k.key_id.clone()), page.offset(), page.size)?;
        Ok(self.alias_page(found, page))
    }

    fn alias_page(&self, found: Page<AliasRecord>, page: crate::api::Page) -> ListAliasesResponse {
        let alias = found
            .items
            .iter()
            .map(|a| Alias {
                alias_name: a.name.clone(),
                alias_arn: alias_arn(&self.config.region, &self.config.account_id, &a.name),
                key_id: a.key_id.clone(),
            })
            .collect();
        ListAliasesResponse {
            aliases: AliasList { alias },
            page_number: page.number,
            page_size: page.size,
            total_count: found.total.min(u32::MAX as u64) as u32,
        }
    }
}
