//! Key lifecycle: CreateKey, DescribeKey, ListKeys, UpdateKeyDescription, EnableKey, DisableKey,
//! ScheduleKeyDeletion, CancelKeyDeletion, SetDeletionProtection.

use serde::Deserialize;

use super::authz::{Access, Resource, ResourceKind};
use super::{forbid_service_key, state_modify_failed, Caller, Engine, Principal};
use crate::api::{
    CreateKeyRequest, KeyList, KeyListEntry, KeyMetadata, KeyMetadataResponse, ListKeysRequest, ListKeysResponse,
    ScheduleKeyDeletionRequest, SetDeletionProtectionRequest,
};
use crate::clock::{format_iso, Timestamp, DAY};
use crate::error::{ErrorCode, KmsError, Result};
use crate::ids::{key_arn, new_key_id};
use crate::interval::{format_interval, parse_interval};
use crate::model::{KeyRecord, KeySpec, KeyState, KeyUsage, Origin, ProtectionLevel, VersionRecord};
use crate::store::reads::{Count, KeyCond};
use crate::store::Change;

/// Parses an optional enum parameter, naming the parameter and the accepted values on error.
pub(crate) fn parse_enum<T>(
    param: &str,
    value: Option<&str>,
    parse: fn(&str) -> Option<T>,
    choices: fn() -> String,
) -> Result<Option<T>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v)
            .map(Some)
            .ok_or_else(|| KmsError::invalid(param, format_args!("{v:?} is not one of {}", choices()))),
    }
}

/// What a new key is made of, once the request is validated.
#[derive(Clone)]
pub(crate) struct NewKey {
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub origin: Origin,
    pub protection: ProtectionLevel,
    pub description: String,
    pub rotation_interval: Option<i64>,
    pub creator: String,
    pub service: Option<String>,
}

impl Engine {
    pub fn create_key(&self, caller: &Caller, req: CreateKeyRequest) -> Result<KeyMetadataResponse> {
        let limits = &self.config.limits;
        let spec = parse_enum("KeySpec", req.key_spec.as_deref(), KeySpec::parse, KeySpec::choices)?
            .unwrap_or(KeySpec::Aes256);
        let usage = parse_enum("KeyUsage", req.key_usage.as_deref(), KeyUsage::parse, KeyUsage::choices)?
            .unwrap_or_else(|| spec.default_usage());
        if !spec.allows_usage(usage) {
            return Err(KmsError::invalid("KeyUsage", format_args!("{usage} is not a usage of KeySpec {spec}")));
        }
        let origin =
            parse_enum("Origin", req.origin.as_deref(), Origin::parse, Origin::choices)?.unwrap_or(Origin::AliyunKms);
        let protection = parse_enum(
            "ProtectionLevel",
            req.protection_level.as_deref(),
            ProtectionLevel::parse,
            ProtectionLevel::choices,
        )?
        .unwrap_or(ProtectionLevel::Software);
        if protection == ProtectionLevel::Hsm {
            self.check_hsm_spec(spec, usage, origin)?;
        }
        if req.dkms_instance_id.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            return Err(KmsError::invalid("DKMSInstanceId", "this service has no dedicated KMS instances"));
        }
        let description = req.description.unwrap_or_default();
        if description.chars().count() > limits.max_description_chars {
            return Err(KmsError::invalid(
                "Description",
                format_args!("it is longer than {} characters", limits.max_description_chars),
            ));
        }
        let rotation_interval = self.rotation_request(
            req.enable_automatic_rotation.unwrap_or(false),
            req.rotation_interval.as_deref(),
            None,
        )?;
        if rotation_interval.is_some() && origin == Origin::External {
            return Err(KmsError::with_detail(
                ErrorCode::UnsupportedOrigin,
                "Keys with Origin EXTERNAL cannot rotate automatically.",
            ));
        }
        if rotation_interval.is_some() && !spec.is_symmetric() {
            return Err(KmsError::unsupported(format_args!(
                "asymmetric keys ({spec}) do not rotate automatically; make new versions with CreateKeyVersion"
            )));
        }
        if origin == Origin::External && !spec.is_symmetric() {
            return Err(KmsError::with_detail(
                ErrorCode::UnsupportedOrigin,
                format_args!("Only symmetric keys take imported material, not {spec}."),
            ));
        }
        let tags = match req.tags.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(t) => super::tags::parse_tags_json("Tags", t)?,
            None => Vec::new(),
        };
        let new = NewKey {
            spec,
            usage,
            origin,
            protection,
            description,
            rotation_interval,
            creator: self.creator_name(caller),
            service: None,
        };
        let key = self.mutate(|st, now| {
            self.allow(caller, "kms:CreateKey", Resource::Container(ResourceKind::Key))?;
            if !st.within_limit(Count::UserKeys, limits.max_keys)? {
                return Err(KmsError::with_detail(
                    ErrorCode::LimitExceeded,
                    format_args!("At most {} keys may exist in a region.", limits.max_keys),
                ));
            }
            let (key, version) = self.build_key(new.clone(), now)?;
            let mut changes = vec![Change::PutKey(key.clone())];
            changes.extend(version.map(Change::PutVersion));
            changes.extend(self.tag_changes(None, crate::model::ResourceType::Key, &key.key_id, &tags)?);
            Ok((changes, key))
        })?;
        tracing::info!(key_id = %key.key_id, spec = %key.spec, origin = %key.origin, "key created");
        Ok(KeyMetadataResponse { key_metadata: self.metadata(&key, false) })
    }

    /// Validates a rotation request: `Some(interval)` when rotation is to be on.
    pub(crate) fn rotation_request(
        &self,
        enable: bool,
        interval: Option<&str>,
        current: Option<i64>,
    ) -> Result<Option<i64>> {
        let l = &self.config.limits;
        let parsed = match interval.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => {
                Some(parse_interval("RotationInterval", s, l.min_rotation_interval_secs, l.max_rotation_interval_secs)?)
            }
            None => None,
        };
        Ok(enable.then(|| parsed.or(current).unwrap_or(l.default_rotation_interval_secs)))
    }

    pub(crate) fn creator_name(&self, caller: &Caller) -> String {
        match &caller.principal {
            Principal::Service(s) => s.to_uppercase(),
            Principal::Owner | Principal::User(_) => self.config.account_id.clone(),
        }
    }

    /// A new key record and, unless its material comes from outside, its first version.
    pub(crate) fn build_key(&self, new: NewKey, now: Timestamp) -> Result<(KeyRecord, Option<VersionRecord>)> {
        let mut key = KeyRecord {
            key_id: new_key_id(),
            spec: new.spec,
            usage: new.usage,
            origin: new.origin,
            protection: new.protection,
            creator: new.creator,
            description: new.description,
            state: KeyState::Enabled,
            state_before_deletion: None,
            created_at: now,
            primary_version: None,
            last_rotation: now,
            rotation_enabled: new.rotation_interval.is_some(),
            rotation_interval: new.rotation_interval,
            delete_date: None,
            deletion_protection: false,
            deletion_protection_description: String::new(),
            material_expire: None,
            service: new.service,
            material_fingerprint: None,
        };
        if new.origin == Origin::External {
            key.state = KeyState::PendingImport;
            return Ok((key, None));
        }
        let version = self.new_version(&key, now)?;
        // Asymmetric keys have versions but no primary one: every call names its version.
        if key.spec.is_symmetric() {
            key.primary_version = Some(version.version_id.clone());
        }
        Ok((key, Some(version)))
    }

    /// The API view of a key. `describe` adds the deletion-protection fields DescribeKey carries.
    pub(crate) fn metadata(&self, k: &KeyRecord, describe: bool) -> KeyMetadata {
        let iso = |t: Option<Timestamp>| t.map(format_iso).unwrap_or_default();
        KeyMetadata {
            key_id: k.key_id.clone(),
            arn: key_arn(&self.config.region, &self.config.account_id, &k.key_id),
            key_spec: k.spec.to_string(),
            key_usage: k.usage.to_string(),
            key_state: k.state.to_string(),
            origin: k.origin.to_string(),
            protection_level: k.protection.to_string(),
            creator: k.creator.clone(),
            creation_date: format_iso(k.created_at),
            description: k.description.clone(),
            primary_key_version: k.primary_version.clone().unwrap_or_default(),
            automatic_rotation: k.automatic_rotation().to_string(),
            rotation_interval: k
                .rotation_interval
                .filter(|_| k.rotation_enabled)
                .map(format_interval)
                .unwrap_or_default(),
            last_rotation_date: iso(k
                .primary_version
                .as_ref()
                .map(|_| k.last_rotation)
                .filter(|_| k.origin == Origin::AliyunKms)),
            next_rotation_date: iso(k.next_rotation()),
            delete_date: iso(k.delete_date.filter(|_| k.state == KeyState::PendingDeletion)),
            material_expire_time: iso(k.material_expire),
            dkms_instance_id: String::new(),
            deletion_protection: describe
                .then(|| if k.deletion_protection { "Enabled" } else { "Disabled" }.to_string()),
            deletion_protection_description: describe.then(|| k.deletion_protection_description.clone()),
        }
    }

    pub fn describe_key(&self, caller: &Caller, key_id: &str) -> Result<KeyMetadataResponse> {
        let st = self.view()?;
        let k = self.find_key(&st, Access::Check(caller, "kms:DescribeKey"), "KeyId", key_id)?;
        Ok(KeyMetadataResponse { key_metadata: self.metadata(&k, true) })
    }

    pub fn list_keys(&self, caller: &Caller, req: ListKeysRequest) -> Result<ListKeysResponse> {
        let page = req.page().validate()?;
        let filters = KeyFilter::parse(req.filters.as_deref())?;
        let st = self.view()?;
        self.allow(caller, "kms:ListKeys", Resource::Container(ResourceKind::Key))?;
        let found = st.key_ids(filters.iter().map(KeyFilter::condition).collect(), page.offset(), page.size)?;
        let key = found
            .items
            .into_iter()
            .map(|key_id| KeyListEntry {
                key_arn: key_arn(&self.config.region, &self.config.account_id, &key_id),
                key_id,
            })
            .collect();
        Ok(ListKeysResponse {
            keys: KeyList { key },
            page_number: page.number,
            page_size: page.size,
            total_count: found.total.min(u32::MAX as u64) as u32,
        })
    }

    pub fn update_key_description(&self, caller: &Caller, key_id: &str, description: &str) -> Result<()> {
        let max = self.config.limits.max_description_chars;
        if description.chars().count() > max {
            return Err(KmsError::invalid("Description", format_args!("it is longer than {max} characters")));
        }
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, "kms:UpdateKeyDescription"), "KeyId", key_id)?;
            let k = &k.key;
            forbid_service_key(k, "UpdateKeyDescription")?;
            let mut k = k.clone();
            k.description = description.to_string();
            Ok((vec![Change::PutKey(k)], ()))
        })
    }

    pub fn enable_key(&self, caller: &Caller, key_id: &str) -> Result<()> {
        self.set_enabled(caller, key_id, true)
    }

    pub fn disable_key(&self, caller: &Caller, key_id: &str) -> Result<()> {
        self.set_enabled(caller, key_id, false)
    }

    fn set_enabled(&self, caller: &Caller, key_id: &str, enable: bool) -> Result<()> {
        let (action, permission) =
            if enable { ("EnableKey", "kms:EnableKey") } else { ("DisableKey", "kms:DisableKey") };
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, permission), "KeyId", key_id)?;
            let k = &k.key;
            forbid_service_key(k, action)?;
            if !matches!(k.state, KeyState::Enabled | KeyState::Disabled) {
                return Err(state_modify_failed(k, "only Enabled and Disabled keys can be enabled or disabled"));
            }
            let mut k = k.clone();
            k.state = if enable { KeyState::Enabled } else { KeyState::Disabled };
            Ok((vec![Change::PutKey(k)], ()))
        })
    }

    pub fn schedule_key_deletion(&self, caller: &Caller, req: ScheduleKeyDeletionRequest) -> Result<()> {
        let l = &self.config.limits;
        let days = req.pending_window_in_days.ok_or_else(|| KmsError::missing("PendingWindowInDays"))?;
        if !(l.min_deletion_window_days..=l.max_deletion_window_days).contains(&days) {
            return Err(KmsError::invalid(
                "PendingWindowInDays",
                format_args!(
                    "it must lie between {} and {} days",
                    l.min_deletion_window_days, l.max_deletion_window_days
                ),
            ));
        }
        self.mutate(|st, now| {
            let k = self.find_key(st, Access::Check(caller, "kms:ScheduleKeyDeletion"), "KeyId", &req.key_id)?;
            let k = &k.key;
            forbid_service_key(k, "ScheduleKeyDeletion")?;
            if k.state == KeyState::PendingDeletion {
                return Err(state_modify_failed(k, "its deletion is already scheduled"));
            }
            if k.deletion_protection {
                return Err(state_modify_failed(
                    k,
                    "deletion protection is enabled; turn it off with SetDeletionProtection first",
                ));
            }
            let mut k = k.clone();
            k.state_before_deletion = Some(k.state);
            k.state = KeyState::PendingDeletion;
            k.delete_date = Some(now + days * DAY);
            Ok((vec![Change::PutKey(k)], ()))
        })
    }

    pub fn cancel_key_deletion(&self, caller: &Caller, key_id: &str) -> Result<()> {
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, "kms:CancelKeyDeletion"), "KeyId", key_id)?;
            let k = &k.key;
            if k.state != KeyState::PendingDeletion {
                return Err(state_modify_failed(k, "only a key pending deletion can have its deletion cancelled"));
            }
            let mut k = k.clone();
            // Back to where it was: a key disabled before scheduling stays disabled.
            k.state = k.state_before_deletion.take().unwrap_or(KeyState::Enabled);
            k.delete_date = None;
            Ok((vec![Change::PutKey(k)], ()))
        })
    }

    pub fn set_deletion_protection(&self, caller: &Caller, req: SetDeletionProtectionRequest) -> Result<()> {
        let target = req
            .protected_resource_arn
            .as_deref()
            .or(req.key_id.as_deref())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| KmsError::missing("ProtectedResourceArn"))?;
        let param = if req.protected_resource_arn.is_some() { "ProtectedResourceArn" } else { "KeyId" };
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, "kms:SetDeletionProtection"), param, target)?;
            let k = &k.key;
            // A service key's attributes belong to its service: nobody, its owner included, may
            // lift the protection (or set it) by hand.
            forbid_service_key(k, "SetDeletionProtection")?;
            let mut k = k.clone();
            k.deletion_protection = req.enable_deletion_protection;
            k.deletion_protection_description = if req.enable_deletion_protection {
                req.deletion_protection_description.clone().unwrap_or_default()
            } else {
                String::new()
            };
            Ok((vec![Change::PutKey(k)], ()))
        })
    }
}

/// One ListKeys filter: `{"Key": "...", "Values": [...]}`; filters AND together, values OR.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct KeyFilter {
    key: String,
    values: Vec<String>,
}

impl KeyFilter {
    const KEYS: &'static str = "KeyState, KeySpec, KeyUsage, ProtectionLevel, CreatorType";

    fn parse(raw: Option<&str>) -> Result<Vec<KeyFilter>> {
        let raw = match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => return Ok(Vec::new()),
            Some(r) => r,
        };
        let filters: Vec<KeyFilter> = serde_json::from_str(raw).map_err(|e| {
            KmsError::invalid(
                "Filters",
                format_args!("expected [{{\"Key\":\"KeyState\",\"Values\":[\"Enabled\"]}}] ({e})"),
            )
        })?;
        if filters.len() > 10 {
            return Err(KmsError::invalid("Filters", "at most 10 filters"));
        }
        for f in &filters {
            if f.values.is_empty() || f.values.len() > 10 {
                return Err(KmsError::invalid("Filters", format_args!("filter {} needs 1 to 10 values", f.key)));
            }
            for v in &f.values {
                let known = match f.key.as_str() {
                    "KeyState" => KeyState::parse(v).is_some(),
                    "KeySpec" => KeySpec::parse(v).is_some(),
                    "KeyUsage" => KeyUsage::parse(v).is_some(),
                    "ProtectionLevel" => ProtectionLevel::parse(v).is_some(),
                    "CreatorType" => matches!(v.as_str(), "User" | "Service"),
                    other => {
                        return Err(KmsError::invalid(
                            "Filters",
                            format_args!("unknown filter key {other:?}; use one of {}", Self::KEYS),
                        ))
                    }
                };
                if !known {
                    return Err(KmsError::invalid("Filters", format_args!("{v:?} is not a value of {}", f.key)));
                }
            }
        }
        Ok(filters)
    }

    /// The same filter, for the store to apply.
    fn condition(&self) -> KeyCond {
        let v = self.values.clone();
        match self.key.as_str() {
            "KeyState" => KeyCond::State(v),
            "KeySpec" => KeyCond::Spec(v),
            "KeyUsage" => KeyCond::Usage(v),
            "ProtectionLevel" => KeyCond::Protection(v),
            // `parse` admits nothing else.
            _ => KeyCond::Creator { user: v.iter().any(|x| x == "User"), service: v.iter().any(|x| x == "Service") },
        }
    }
}
