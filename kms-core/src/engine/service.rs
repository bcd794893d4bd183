//! Service keys: `alias/acs/<service>` is created the first time that service's principal uses
//! it (Creator = the service name in capitals). Nobody may disable, delete, rotate by hand, import
//! into or re-alias it; it rotates itself yearly.

use super::authz::Access;
use super::keys::NewKey;
use super::state::KeyEntry;
use super::view::View;
use super::Engine;
use crate::error::{ErrorCode, Result};
use crate::ids::{service_of_alias, KeyRef};
use crate::model::{AliasRecord, KeySpec, KeyUsage, Origin};
use crate::store::Change;

impl Engine {
    /// Runs `f` on the key a `KeyId` names. When the caller is a service principal naming its own
    /// not-yet-existing `alias/acs/<service>`, the key is created first.
    ///
    /// `f` gets the very record that was authorised for `access`, so an alias moved concurrently
    /// can never make `f` act on a key that was not checked.
    pub(crate) fn with_key<T>(
        &self,
        access: Access<'_>,
        param: &str,
        value: &str,
        f: impl Fn(&View<'_>, &KeyEntry) -> Result<T>,
    ) -> Result<T> {
        let r = self.key_ref(param, value)?;
        let first = {
            let st = self.view()?;
            match self.find_key(&st, access, param, value) {
                Ok(k) => return f(&st, &k),
                Err(e) => e,
            }
        };
        let caller = match access {
            Access::Check(caller, _) => caller,
            Access::Authorized => return Err(first),
        };
        let service = match (&r, caller.service_name()) {
            (KeyRef::Alias(name), Some(svc))
                if first.code() == ErrorCode::AliasNotFound && service_of_alias(name) == Some(svc) =>
            {
                svc
            }
            _ => return Err(first),
        };
        self.ensure_service_key(service)?;
        let st = self.view()?;
        let k = self.find_key(&st, access, param, value)?;
        f(&st, &k)
    }

    /// Creates the service key of `service` unless it exists; returns its id.
    pub fn ensure_service_key(&self, service: &str) -> Result<String> {
        let service = service.to_ascii_lowercase();
        let alias = format!("alias/acs/{service}");
        self.mutate(|st, now| {
            if let Some(key_id) = st.alias(&alias)? {
                return Ok((Vec::new(), key_id));
            }
            let new = NewKey {
                spec: KeySpec::Aes256,
                usage: KeyUsage::EncryptDecrypt,
                origin: Origin::AliyunKms,
                protection: crate::model::ProtectionLevel::Software,
                description: format!(
                    "Default key that protects my {} data when no other key is defined",
                    service.to_uppercase()
                ),
                rotation_interval: Some(365 * crate::clock::DAY),
                creator: service.to_uppercase(),
                service: Some(service.clone()),
            };
            let (key, version) = self.build_key(new, now)?;
            tracing::info!(key_id = %key.key_id, service = %service, "service key created on first use");
            let id = key.key_id.clone();
            let mut changes = vec![Change::PutKey(key)];
            changes.extend(version.map(Change::PutVersion));
            changes.push(Change::PutAlias(AliasRecord { name: alias.clone(), key_id: id.clone(), created_at: now }));
            Ok((changes, id))
        })
    }
}
