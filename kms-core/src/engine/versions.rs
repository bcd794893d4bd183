//! Key versions and rotation: CreateKeyVersion, DescribeKeyVersion, ListKeyVersions,
//! UpdateRotationPolicy, and the rotation step the maintenance task runs.

use super::authz::Access;
use super::{forbid_service_key, require_enabled, state_error, Caller, Engine};
use crate::api::{
    KeyVersion, KeyVersionList, KeyVersionResponse, ListKeyVersionsResponse, PageRequest, UpdateRotationPolicyRequest,
};
use crate::clock::{format_iso, Timestamp};
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{KeyRecord, KeyState, Origin, VersionRecord};
use crate::store::Change;

impl Engine {
    pub fn create_key_version(&self, caller: &Caller, key_id: &str) -> Result<KeyVersionResponse> {
        let min_gap = self.config.limits.min_manual_version_interval_secs;
        let v = self.mutate(|st, now| {
            let k = self.find_key(st, Access::Check(caller, "kms:CreateKeyVersion"), "KeyId", key_id)?;
            let k = &k.key;
            forbid_service_key(k, "CreateKeyVersion")?;
            if k.origin == Origin::External {
                return Err(external_no_versions(k));
            }
            require_enabled(k, now)?;
            if now < k.last_rotation + min_gap {
                return Err(KmsError::unsupported(format_args!(
                    "key {} got a new version less than {}s ago; wait until {} (the interval is the \
                     setting [engine.limits] min_manual_version_interval_secs)",
                    k.key_id,
                    min_gap,
                    format_iso(k.last_rotation + min_gap)
                )));
            }
            self.rotation_changes(k, now)
        })?;
        tracing::info!(key_id = %v.key_id, version = %v.version_id, "key version created");
        Ok(KeyVersionResponse { key_version: version_view(&v) })
    }

    /// The changes that make a new version of `k` (the primary one for a symmetric key).
    pub(crate) fn rotation_changes(&self, k: &KeyRecord, now: Timestamp) -> Result<(Vec<Change>, VersionRecord)> {
        let v = self.new_version(k, now)?;
        let mut k = k.clone();
        if k.spec.is_symmetric() {
            k.primary_version = Some(v.version_id.clone());
        }
        k.last_rotation = now;
        Ok((vec![Change::PutVersion(v.clone()), Change::PutKey(k)], v))
    }

    pub fn describe_key_version(&self, caller: &Caller, key_id: &str, version_id: &str) -> Result<KeyVersionResponse> {
        if version_id.trim().is_empty() {
            return Err(KmsError::missing("KeyVersionId"));
        }
        let st = self.view()?;
        let k = self.find_key(&st, Access::Check(caller, "kms:DescribeKeyVersion"), "KeyId", key_id)?;
        let v = k.version(version_id).ok_or_else(|| KmsError::version_not_found(&k.key_id, version_id))?;
        Ok(KeyVersionResponse { key_version: version_view(v) })
    }

    pub fn list_key_versions(
        &self,
        caller: &Caller,
        key_id: &str,
        page: PageRequest,
    ) -> Result<ListKeyVersionsResponse> {
        let page = page.validate()?;
        let st = self.view()?;
        let k = self.find_key(&st, Access::Check(caller, "kms:ListKeyVersions"), "KeyId", key_id)?;
        let key_version = page.slice(&k.versions).iter().map(version_view).collect();
        Ok(ListKeyVersionsResponse {
            key_versions: KeyVersionList { key_version },
            page_number: page.number,
            page_size: page.size,
            total_count: k.versions.len() as u32,
        })
    }

    pub fn update_rotation_policy(&self, caller: &Caller, req: UpdateRotationPolicyRequest) -> Result<()> {
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, "kms:UpdateRotationPolicy"), "KeyId", &req.key_id)?;
            let k = &k.key;
            forbid_service_key(k, "UpdateRotationPolicy")?;
            if req.enable_automatic_rotation || k.origin == Origin::External {
                check_rotatable(k)?;
            }
            if k.state == KeyState::PendingDeletion {
                return Err(state_error(k));
            }
            let interval = self.rotation_request(
                req.enable_automatic_rotation,
                req.rotation_interval.as_deref(),
                k.rotation_interval,
            )?;
            let mut k = k.clone();
            k.rotation_enabled = interval.is_some();
            if interval.is_some() {
                k.rotation_interval = interval;
            }
            Ok((vec![Change::PutKey(k)], ()))
        })
    }
}

fn external_no_versions(k: &KeyRecord) -> KmsError {
    KmsError::with_detail(
        ErrorCode::UnsupportedOrigin,
        format_args!("Key {} has imported material (Origin EXTERNAL): it has no versions and cannot rotate.", k.key_id),
    )
}

/// Only symmetric keys whose material the service generates rotate automatically.
fn check_rotatable(k: &KeyRecord) -> Result<()> {
    if k.origin == Origin::External {
        return Err(external_no_versions(k));
    }
    if !k.spec.is_symmetric() {
        return Err(KmsError::unsupported(format_args!(
            "asymmetric key {} does not rotate automatically; make new versions with CreateKeyVersion",
            k.key_id
        )));
    }
    Ok(())
}

fn version_view(v: &VersionRecord) -> KeyVersion {
    KeyVersion {
        key_id: v.key_id.clone(),
        key_version_id: v.version_id.clone(),
        creation_date: format_iso(v.created_at),
    }
}
