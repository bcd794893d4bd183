//! Secrets Manager: secrets whose versions are envelope-encrypted under a CMK, stage labels with
//! the pointer rule (a stage labels one version at a time; moving ACSCurrent makes the old current
//! version ACSPrevious), recovery windows, and recycling of deprecated versions.
//!
//! Each version's value is sealed with its own 256-bit data key under AES-256-GCM; the data key is
//! a CMK ciphertext blob (FORMAT.md §7). So the CMK's state governs the secret: a Disabled or
//! PendingDeletion CMK makes reads and writes fail with the key-state error.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::authz::{Access, Resource, ResourceKind};
use super::state::SecretEntry;
use super::tags::parse_tags_json;
use super::view::View;
use super::{dry_run_error, Caller, Engine};
use crate::api::*;
use crate::clock::{format_iso, DAY};
use crate::context::EncryptionContext;
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{KeyUsage, ResourceType, SecretRecord, SecretVersionRecord};
use crate::store::reads::{Count, SecretCond};
use crate::store::Change;
use std::sync::Arc;

pub const ACS_CURRENT: &str = "ACSCurrent";
pub const ACS_PREVIOUS: &str = "ACSPrevious";
/// The service whose key protects secrets that name no CMK.
pub const SECRETS_SERVICE: &str = "secretsmanager";
const SEALED_SECRET_V1: u8 = 1;
const BATCH_MAX: usize = 10;

fn not_found(what: impl std::fmt::Display) -> KmsError {
    KmsError::with_detail(ErrorCode::ResourceNotFound, what)
}

fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 {
        return Err(KmsError::missing("SecretName"));
    }
    if n > 192 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_/+=.@-".contains(c)) {
        return Err(KmsError::invalid("SecretName", "use 1 to 192 of A-Z a-z 0-9 _ / + = . @ -"));
    }
    if name.starts_with("acs/") {
        return Err(KmsError::invalid("SecretName", "the prefix acs/ is reserved for cloud services"));
    }
    Ok(())
}

fn check_label(param: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(KmsError::missing(param));
    }
    if v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(KmsError::invalid(param, "use 1 to 64 of A-Z a-z 0-9 _ . -"));
    }
    Ok(())
}

fn check_data(data: &str, data_type: Option<&str>, max: usize) -> Result<String> {
    let t = data_type.map(str::trim).filter(|t| !t.is_empty()).unwrap_or("text");
    if t != "text" && t != "binary" {
        return Err(KmsError::invalid("SecretDataType", "use text or binary"));
    }
    if data.is_empty() {
        return Err(KmsError::missing("SecretData"));
    }
    if data.len() > max {
        return Err(KmsError::invalid("SecretData", format_args!("it is {} bytes; at most {max}", data.len())));
    }
    if t == "binary" {
        decode_base64("SecretData", data)?;
    }
    Ok(t.to_string())
}

fn check_extended_config(raw: Option<&str>) -> Result<String> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(String::new()),
        Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Object(_)) => Ok(s.to_string()),
            _ => Err(KmsError::invalid("ExtendedConfig", "it must be a JSON object")),
        },
    }
}

/// The context the data key of a secret version is bound to.
fn value_context(name: &str, version_id: &str) -> EncryptionContext {
    EncryptionContext::from_pairs([("SecretName", name), ("VersionId", version_id)])
}

fn value_aad(name: &str, version_id: &str, data_type: &str) -> Vec<u8> {
    let mut a = b"kms-core secret value v1\0".to_vec();
    for part in [name, version_id, data_type] {
        a.extend_from_slice(part.as_bytes());
        a.push(0);
    }
    a
}

/// Moves `stage` onto `to` (removing it from whichever version had it); moving ACSCurrent makes the
/// previous holder ACSPrevious.
fn move_stage(versions: &mut [SecretVersionRecord], stage: &str, to: &str) {
    let from =
        versions.iter().position(|v| v.stages.iter().any(|s| s == stage)).map(|i| versions[i].version_id.clone());
    if from.as_deref() == Some(to) {
        return;
    }
    for v in versions.iter_mut() {
        v.stages.retain(|s| s != stage);
    }
    if let Some(v) = versions.iter_mut().find(|v| v.version_id == to) {
        v.stages.push(stage.to_string());
    }
    if stage == ACS_CURRENT {
        if let Some(old) = from {
            move_stage(versions, ACS_PREVIOUS, &old);
        }
    }
}

/// PutSecretVersion changes for every version whose stages differ from `before`, plus new ones.
fn stage_changes(before: &[SecretVersionRecord], after: &[SecretVersionRecord]) -> Vec<Change> {
    after
        .iter()
        .filter(|v| before.iter().find(|b| b.version_id == v.version_id).is_none_or(|b| b.stages != v.stages))
        .map(|v| Change::PutSecretVersion(v.clone()))
        .collect()
}

impl Engine {
    pub(crate) fn secret_arn(&self, name: &str) -> String {
        format!("acs:kms:{}:{}:secret/{name}", self.config.region, self.config.account_id)
    }

    /// The name a `SecretName` parameter gives (a name, or this account's secret ARN).
    pub(crate) fn secret_short_name<'n>(&self, name: &'n str) -> &'n str {
        let name = name.trim();
        let prefix = format!("acs:kms:{}:{}:secret/", self.config.region, self.config.account_id);
        name.strip_prefix(&prefix).unwrap_or(name)
    }

    /// A secret by name or ARN, unchecked: operations use [`Engine::find_secret_for`].
    pub(crate) fn find_secret(&self, st: &View<'_>, name: &str) -> Result<Arc<SecretEntry>> {
        if name.trim().is_empty() {
            return Err(KmsError::missing("SecretName"));
        }
        let short = self.secret_short_name(name);
        st.secret(short)?.ok_or_else(|| not_found(format_args!("SecretName: {}", name.trim())))
    }

    /// A secret that is not waiting in its recovery window.
    fn live_secret(&self, st: &View<'_>, access: Access<'_>, name: &str) -> Result<Arc<SecretEntry>> {
        let s = self.find_secret_for(st, access, name)?;
        if let Some(t) = s.planned_delete {
            return Err(KmsError::with_detail(
                ErrorCode::ResourceInDeleteWindow,
                format_args!("Secret {} will be deleted at {}; RestoreSecret brings it back.", s.name, format_iso(t)),
            ));
        }
        Ok(s)
    }

    /// Envelope-encrypts a value: a fresh data key sealed under the CMK, the value under the data key.
    fn seal_value(&self, key_id: &str, name: &str, version_id: &str, data_type: &str, data: &[u8]) -> Result<Vec<u8>> {
        // The caller was authorised on the secret and its CMK by the operation that seals.
        let t = self.target(Access::Authorized, "EncryptionKeyId", key_id)?;
        let mut dk = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut dk[..]);
        let dk_blob = self.seal(&t, &value_context(name, version_id), &dk[..])?.ciphertext_blob;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = Aes256Gcm::new_from_slice(&dk[..])
            .expect("32-byte key")
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: data, aad: &value_aad(name, version_id, data_type) })
            .map_err(|_| KmsError::internal("AES-GCM seal"))?;
        let mut out = Vec::with_capacity(3 + dk_blob.len() + 12 + ct.len());
        out.push(SEALED_SECRET_V1);
        out.extend_from_slice(&(dk_blob.len() as u16).to_be_bytes());
        out.extend_from_slice(&dk_blob);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a version's value; the CMK must be usable.
    fn open_value(&self, v: &SecretVersionRecord) -> Result<Zeroizing<Vec<u8>>> {
        let s = &v.sealed;
        let bad =
            || KmsError::internal(format_args!("secret {} version {}: damaged record", v.secret_name, v.version_id));
        if s.len() < 3 || s[0] != SEALED_SECRET_V1 {
            return Err(bad());
        }
        let n = u16::from_be_bytes([s[1], s[2]]) as usize;
        if s.len() < 3 + n + 12 + 16 {
            return Err(bad());
        }
        let (dk_blob, rest) = s[3..].split_at(n);
        let (nonce, ct) = rest.split_at(12);
        // The caller was authorised on the secret and its CMK by the operation that opens.
        let (_, _, dk) = self.open_blob(Access::Authorized, dk_blob, &value_context(&v.secret_name, &v.version_id))?;
        let pt = Aes256Gcm::new_from_slice(&dk)
            .map_err(|_| bad())?
            .decrypt(
                Nonce::from_slice(nonce),
                Payload { msg: ct, aad: &value_aad(&v.secret_name, &v.version_id, &v.data_type) },
            )
            .map_err(|_| bad())?;
        Ok(Zeroizing::new(pt))
    }

    /// The CMK a new secret uses: the named one (symmetric, ENCRYPT/DECRYPT), or the account's
    /// secrets service key, created on first use.
    fn secret_key(&self, caller: &Caller, requested: Option<&str>) -> Result<String> {
        match requested.map(str::trim).filter(|s| !s.is_empty()) {
            Some(k) => {
                let st = self.view()?;
                let key = self.find_key(&st, Access::Check(caller, "kms:GenerateDataKey"), "EncryptionKeyId", k)?;
                if !key.spec.is_symmetric() || key.usage != KeyUsage::EncryptDecrypt {
                    return Err(KmsError::invalid(
                        "EncryptionKeyId",
                        format_args!(
                            "{} is a {} key; secrets need a symmetric ENCRYPT/DECRYPT key",
                            key.key_id, key.spec
                        ),
                    ));
                }
                Ok(key.key_id.clone())
            }
            None => self.ensure_service_key(SECRETS_SERVICE),
        }
    }

    pub fn create_secret(&self, caller: &Caller, req: CreateSecretRequest) -> Result<CreateSecretResponse> {
        let l = &self.config.limits;
        check_name(&req.secret_name)?;
        check_label("VersionId", &req.version_id)?;
        let data_type = check_data(req.secret_data.expose(), req.secret_data_type.as_deref(), l.max_secret_bytes)?;
        let secret_type = req.secret_type.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or("Generic");
        match secret_type {
            "Generic" => {}
            "Rds" | "Redis" | "RAMCredentials" | "ECS" | "PolarDB" => {
                return Err(KmsError::unsupported(format_args!(
                    "{secret_type} secrets are managed together with that cloud service; this service keeps Generic secrets"
                )))
            }
            other => return Err(KmsError::invalid("SecretType", format_args!("{other:?} is not a secret type"))),
        }
        if req.enable_automatic_rotation.unwrap_or(false) {
            return Err(KmsError::invalid(
                "EnableAutomaticRotation",
                "Generic secrets are rotated with PutSecretValue",
            ));
        }
        if req.dkms_instance_id.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            return Err(KmsError::invalid("DKMSInstanceId", "this service has no dedicated KMS instances"));
        }
        let description = req.description.clone().unwrap_or_default();
        if description.chars().count() > l.max_description_chars {
            return Err(KmsError::invalid(
                "Description",
                format_args!("at most {} characters", l.max_description_chars),
            ));
        }
        let extended_config = check_extended_config(req.extended_config.as_deref())?;
        let tags = match req.tags.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(t) => parse_tags_json("Tags", t)?,
            None => Vec::new(),
        };
        {
            let st = self.view()?;
            self.allow(caller, "kms:CreateSecret", Resource::Container(ResourceKind::Secret))?;
            self.check_new_secret(&st, &req.secret_name)?;
        }
        let key_id = self.secret_key(caller, req.encryption_key_id.as_deref())?;
        let sealed = self.seal_value(
            &key_id,
            &req.secret_name,
            &req.version_id,
            &data_type,
            req.secret_data.expose().as_bytes(),
        )?;
        self.mutate(|st, now| {
            self.allow(caller, "kms:CreateSecret", Resource::Container(ResourceKind::Secret))?;
            self.check_new_secret(st, &req.secret_name)?;
            if !st.within_limit(Count::Secrets, l.max_secrets)? {
                return Err(KmsError::with_detail(
                    ErrorCode::LimitExceeded,
                    format_args!("At most {} secrets.", l.max_secrets),
                ));
            }
            let secret = SecretRecord {
                name: req.secret_name.clone(),
                secret_type: secret_type.to_string(),
                description: description.clone(),
                encryption_key_id: key_id.clone(),
                created_at: now,
                updated_at: now,
                planned_delete: None,
                extended_config: extended_config.clone(),
            };
            let version = SecretVersionRecord {
                secret_name: req.secret_name.clone(),
                version_id: req.version_id.clone(),
                created_at: now,
                data_type: data_type.clone(),
                stages: vec![ACS_CURRENT.to_string()],
                sealed: sealed.clone(),
            };
            let mut changes = vec![Change::PutSecret(secret), Change::PutSecretVersion(version)];
            changes.extend(self.tag_changes(None, ResourceType::Secret, &req.secret_name, &tags)?);
            Ok((changes, ()))
        })?;
        Ok(CreateSecretResponse {
            arn: self.secret_arn(&req.secret_name),
            secret_name: req.secret_name,
            version_id: req.version_id,
            secret_type: secret_type.to_string(),
            automatic_rotation: "Disabled".into(),
            rotation_interval: String::new(),
            next_rotation_date: String::new(),
            extended_config,
            dkms_instance_id: String::new(),
        })
    }

    fn check_new_secret(&self, st: &View<'_>, name: &str) -> Result<()> {
        match st.secret(name)? {
            Some(s) if s.planned_delete.is_some() => Err(KmsError::with_detail(
                ErrorCode::ResourceInDeleteWindow,
                format_args!("Secret {name} is in its recovery window; restore it or wait until it is deleted."),
            )),
            Some(_) => Err(KmsError::with_detail(ErrorCode::ResourceExist, format_args!("SecretName: {name}"))),
            None => Ok(()),
        }
    }

    pub fn get_secret_value(&self, caller: &Caller, req: GetSecretValueRequest) -> Result<GetSecretValueResponse> {
        self.read_secret_value(caller, "kms:GetSecretValue", req)
    }

    /// Checks that `caller` may read `name`'s value now (the secret and its CMK), without opening
    /// it: for a reader that caches values it fetched, before it serves one again.
    pub fn authorize_secret_read(&self, caller: &Caller, name: &str) -> Result<()> {
        let st = self.view()?;
        let s = self.live_secret(&st, Access::Check(caller, "kms:GetSecretValue"), name)?;
        self.allow_secret_key(&st, caller, "kms:Decrypt", &s)
    }

    /// GetSecretValue as `permission` (BatchGetSecretValue checks its own): the secret, and
    /// `kms:Decrypt` on its CMK, in the snapshot the version is chosen from.
    fn read_secret_value(
        &self,
        caller: &Caller,
        permission: &'static str,
        req: GetSecretValueRequest,
    ) -> Result<GetSecretValueResponse> {
        let fetch_extended = req.fetch_extended_config.unwrap_or(false);
        let (secret, version) = {
            let st = self.view()?;
            let s = self.live_secret(&st, Access::Check(caller, permission), &req.secret_name)?;
            self.allow_secret_key(&st, caller, "kms:Decrypt", &s)?;
            let versions = &s.versions;
            let vid = req.version_id.as_deref().map(str::trim).filter(|v| !v.is_empty());
            let stage = req.version_stage.as_deref().map(str::trim).filter(|v| !v.is_empty());
            let v = match (vid, stage) {
                (Some(id), stage) => {
                    let v = versions
                        .iter()
                        .find(|v| v.version_id == id)
                        .ok_or_else(|| not_found(format_args!("VersionId: {id}")))?;
                    if let Some(stage) = stage.filter(|st| !v.stages.iter().any(|s| s == st)) {
                        return Err(not_found(format_args!("Version {id} does not have the stage {stage}")));
                    }
                    v
                }
                (None, stage) => {
                    let stage = stage.unwrap_or(ACS_CURRENT);
                    versions
                        .iter()
                        .find(|v| v.stages.iter().any(|s| s == stage))
                        .ok_or_else(|| not_found(format_args!("VersionStage: {stage}")))?
                }
            };
            // Only what the answer needs: the description and most metadata stay behind.
            let meta = (
                s.name.clone(),
                s.secret_type.clone(),
                if fetch_extended { s.extended_config.clone() } else { String::new() },
            );
            (meta, v.clone())
        };
        let data = self.open_value(&version)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let data = String::from_utf8(data.to_vec()).map_err(|_| KmsError::internal("secret value is not UTF-8"))?;
        let (secret_name, secret_type, extended_config) = secret;
        Ok(GetSecretValueResponse {
            secret_name,
            secret_type,
            version_id: version.version_id,
            create_time: format_iso(version.created_at),
            secret_data: SecretString::new(data),
            secret_data_type: version.data_type,
            version_stages: VersionStageList { version_stage: version.stages },
            automatic_rotation: "Disabled".into(),
            extended_config,
            last_rotation_date: String::new(),
            next_rotation_date: String::new(),
            rotation_interval: String::new(),
        })
    }

    pub fn batch_get_secret_value(
        &self,
        caller: &Caller,
        req: BatchGetSecretValueRequest,
    ) -> Result<BatchGetSecretValueResponse> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Item {
            secret_name: String,
            version_id: Option<String>,
            version_stage: Option<String>,
            fetch_extended_config: Option<serde_json::Value>,
        }
        let items: Vec<Item> = serde_json::from_str(req.secrets_list.trim()).map_err(|e| {
            KmsError::invalid("SecretsList", format_args!("expected [{{\"SecretName\":\"…\"}}, …] ({e})"))
        })?;
        if items.is_empty() || items.len() > BATCH_MAX {
            return Err(KmsError::invalid("SecretsList", format_args!("name 1 to {BATCH_MAX} secrets")));
        }
        let mut out = BatchGetSecretValueResponse { secret_values: Vec::new(), errors: Vec::new() };
        for it in items {
            let fetch = match &it.fetch_extended_config {
                Some(serde_json::Value::Bool(b)) => *b,
                Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
                _ => false,
            };
            let r = self.read_secret_value(
                caller,
                "kms:BatchGetSecretValue",
                GetSecretValueRequest {
                    secret_name: it.secret_name.clone(),
                    version_id: it.version_id,
                    version_stage: it.version_stage,
                    fetch_extended_config: Some(fetch),
                    dry_run: false,
                },
            );
            match r {
                Ok(v) => out.secret_values.push(v),
                Err(e) => out.errors.push(BatchSecretError {
                    secret_name: it.secret_name,
                    code: e.code().code().to_string(),
                    http_status: e.http_status(),
                    message: e.message().to_string(),
                }),
            }
        }
        Ok(out)
    }

    pub fn put_secret_value(&self, caller: &Caller, req: PutSecretValueRequest) -> Result<PutSecretValueResponse> {
        check_label("VersionId", &req.version_id)?;
        let data_type =
            check_data(req.secret_data.expose(), req.secret_data_type.as_deref(), self.config.limits.max_secret_bytes)?;
        let stages: Vec<String> = match req.version_stages.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => vec![ACS_CURRENT.to_string()],
            Some(raw) => {
                let mut v: Vec<String> = serde_json::from_str(raw).map_err(|e| {
                    KmsError::invalid("VersionStages", format_args!("expected [\"ACSCurrent\", …] ({e})"))
                })?;
                v.dedup();
                for s in &v {
                    check_label("VersionStages", s)?;
                }
                if v.len() > 10 {
                    return Err(KmsError::invalid("VersionStages", "at most 10 stages"));
                }
                v
            }
        };
        let (secret, existing) = {
            let st = self.view()?;
            let s = self.live_secret(&st, Access::Check(caller, "kms:PutSecretValue"), &req.secret_name)?;
            self.allow_secret_key(&st, caller, "kms:GenerateDataKey", &s)?;
            let existing = s.versions.iter().find(|v| v.version_id == req.version_id).cloned();
            (s.secret.clone(), existing)
        };
        // A version id is written once: the same value again is a no-op, another value an error.
        if let Some(v) = existing {
            let old = self.open_value(&v)?;
            let same =
                bool::from(old.as_slice().ct_eq(req.secret_data.expose().as_bytes())) && v.data_type == data_type;
            if !same {
                return Err(KmsError::with_detail(
                    ErrorCode::ResourceExist,
                    format_args!("Version {} of secret {} already holds another value.", v.version_id, secret.name),
                ));
            }
            return Ok(PutSecretValueResponse {
                secret_name: secret.name,
                version_id: v.version_id,
                version_stages: VersionStageList { version_stage: v.stages },
            });
        }
        let sealed = self.seal_value(
            &secret.encryption_key_id,
            &secret.name,
            &req.version_id,
            &data_type,
            req.secret_data.expose().as_bytes(),
        )?;
        let max_versions = self.config.limits.max_secret_versions;
        self.mutate(|st, now| {
            let s = self.live_secret(st, Access::Check(caller, "kms:PutSecretValue"), &secret.name)?;
            self.allow_secret_key(st, caller, "kms:GenerateDataKey", &s)?;
            if s.encryption_key_id != secret.encryption_key_id {
                return Err(KmsError::internal("the secret's CMK changed while its value was sealed"));
            }
            let before = s.versions.clone();
            if before.iter().any(|v| v.version_id == req.version_id) {
                return Err(KmsError::with_detail(
                    ErrorCode::ResourceExist,
                    format_args!("Version {} of secret {} was written meanwhile.", req.version_id, s.name),
                ));
            }
            let mut after = before.clone();
            after.push(SecretVersionRecord {
                secret_name: s.name.clone(),
                version_id: req.version_id.clone(),
                created_at: now,
                data_type: data_type.clone(),
                stages: Vec::new(),
                sealed: sealed.clone(),
            });
            for stage in &stages {
                move_stage(&mut after, stage, &req.version_id);
            }
            let mut changes = stage_changes(&before, &after);
            // Recycle: the oldest deprecated versions go while the secret has too many.
            let mut count = after.len();
            for v in &after {
                if count <= max_versions {
                    break;
                }
                if v.stages.is_empty() && v.version_id != req.version_id {
                    changes.push(Change::DeleteSecretVersion {
                        secret_name: s.name.clone(),
                        version_id: v.version_id.clone(),
                    });
                    count -= 1;
                }
            }
            if count > max_versions {
                return Err(KmsError::with_detail(
                    ErrorCode::LimitExceeded,
                    format_args!("Secret {} has {max_versions} versions that all carry stages.", s.name),
                ));
            }
            let mut s2 = s.secret.clone();
            s2.updated_at = now;
            changes.push(Change::PutSecret(s2));
            let new_stages =
                after.iter().find(|v| v.version_id == req.version_id).map(|v| v.stages.clone()).unwrap_or_default();
            Ok((
                changes,
                PutSecretValueResponse {
                    secret_name: s.name.clone(),
                    version_id: req.version_id.clone(),
                    version_stages: VersionStageList { version_stage: new_stages },
                },
            ))
        })
    }

    pub fn update_secret_version_stage(
        &self,
        caller: &Caller,
        req: UpdateSecretVersionStageRequest,
    ) -> Result<SecretNameResponse> {
        check_label("VersionStage", &req.version_stage)?;
        let remove = req.remove_from_version.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let move_to = req.move_to_version.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if remove.is_none() && move_to.is_none() {
            return Err(KmsError::missing("MoveToVersion"));
        }
        let stage = req.version_stage.as_str();
        self.mutate(|st, now| {
            let s = self.live_secret(st, Access::Check(caller, "kms:UpdateSecretVersionStage"), &req.secret_name)?;
            let before = s.versions.clone();
            let exists = |id: &str| before.iter().any(|v| v.version_id == id);
            for id in [remove, move_to].into_iter().flatten() {
                if !exists(id) {
                    return Err(not_found(format_args!("VersionId: {id}")));
                }
            }
            let holder = before.iter().find(|v| v.stages.iter().any(|x| x == stage)).map(|v| v.version_id.as_str());
            // RemoveFromVersion, when given, must name the version that has the stage now.
            if let Some(from) = remove.filter(|from| holder != Some(*from)) {
                return Err(KmsError::invalid(
                    "RemoveFromVersion",
                    format_args!("version {from} does not have stage {stage}"),
                ));
            }
            let mut after = before.clone();
            match move_to {
                // Moved from whichever version has it: a stage is on one version at a time, so
                // naming that version is optional (the user guide's rotation walkthrough moves
                // ACSCurrent with MoveToVersion alone; the old current becomes ACSPrevious).
                Some(to) => move_stage(&mut after, stage, to),
                None => {
                    if stage == ACS_CURRENT {
                        return Err(KmsError::invalid(
                            "VersionStage",
                            "ACSCurrent cannot be removed, only moved to another version (MoveToVersion)",
                        ));
                    }
                    for v in after.iter_mut() {
                        v.stages.retain(|x| x != stage);
                    }
                }
            }
            let mut changes = stage_changes(&before, &after);
            let mut s2 = s.secret.clone();
            s2.updated_at = now;
            changes.push(Change::PutSecret(s2));
            Ok((changes, SecretNameResponse { secret_name: s.name.clone() }))
        })
    }

    pub fn list_secret_version_ids(
        &self,
        caller: &Caller,
        req: ListSecretVersionIdsRequest,
    ) -> Result<ListSecretVersionIdsResponse> {
        let page = PageRequest { page_number: req.page_number, page_size: req.page_size.or(Some(20)) }.validate()?;
        let st = self.view()?;
        let s = self.find_secret_for(&st, Access::Check(caller, "kms:ListSecretVersionIds"), &req.secret_name)?;
        let all: Vec<&SecretVersionRecord> =
            s.versions.iter().filter(|v| req.include_deprecated.unwrap_or(false) || !v.stages.is_empty()).collect();
        let version_id = page
            .slice(&all)
            .iter()
            .map(|v| SecretVersionId {
                version_id: v.version_id.clone(),
                create_time: format_iso(v.created_at),
                version_stages: VersionStageList { version_stage: v.stages.clone() },
            })
            .collect();
        Ok(ListSecretVersionIdsResponse {
            secret_name: s.name.clone(),
            version_ids: SecretVersionIdList { version_id },
            page_number: page.number,
            page_size: page.size,
            total_count: all.len() as u32,
        })
    }

    pub fn describe_secret(&self, caller: &Caller, req: DescribeSecretRequest) -> Result<DescribeSecretResponse> {
        let st = self.view()?;
        let s = self.find_secret_for(&st, Access::Check(caller, "kms:DescribeSecret"), &req.secret_name)?;
        Ok(DescribeSecretResponse {
            arn: self.secret_arn(&s.name),
            secret_name: s.name.clone(),
            secret_type: s.secret_type.clone(),
            description: s.description.clone(),
            encryption_key_id: s.encryption_key_id.clone(),
            create_time: format_iso(s.created_at),
            update_time: format_iso(s.updated_at),
            planned_delete_time: s.planned_delete.map(format_iso).unwrap_or_default(),
            automatic_rotation: "Disabled".into(),
            rotation_interval: String::new(),
            last_rotation_date: String::new(),
            next_rotation_date: String::new(),
            extended_config: s.extended_config.clone(),
            owing_service: String::new(),
            dkms_instance_id: String::new(),
            tags: req.fetch_tags.unwrap_or(false).then(|| self.tags_of(&s.tags)),
        })
    }

    pub fn list_secrets(&self, caller: &Caller, req: ListSecretsRequest) -> Result<ListSecretsResponse> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase", deny_unknown_fields)]
        struct Filter {
            key: String,
            values: Vec<String>,
        }
        let page = req.page_request().validate()?;
        let filters: Vec<Filter> = match req.filters.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw).map_err(|e| {
                KmsError::invalid(
                    "Filters",
                    format_args!("expected [{{\"Key\":\"SecretName\",\"Values\":[\"db\"]}}] ({e})"),
                )
            })?,
        };
        if filters.len() > 10 {
            return Err(KmsError::invalid("Filters", "at most 10 filters"));
        }
        for f in &filters {
            if !matches!(f.key.as_str(), "SecretName" | "Description" | "TagKey" | "TagValue") {
                return Err(KmsError::invalid(
                    "Filters",
                    format_args!("unknown key {:?}; use SecretName, Description, TagKey or TagValue", f.key),
                ));
            }
            if f.values.is_empty() || f.values.len() > 10 {
                return Err(KmsError::invalid("Filters", format_args!("filter {} needs 1 to 10 values", f.key)));
            }
        }
        let st = self.view()?;
        self.allow(caller, "kms:ListSecrets", Resource::Container(ResourceKind::Secret))?;
        let conds = filters
            .iter()
            .map(|f| {
                let v = f.values.clone();
                match f.key.as_str() {
                    "SecretName" => SecretCond::NameContains(v),
                    "Description" => SecretCond::DescriptionContains(v),
                    "TagKey" => SecretCond::TagKey(v),
                    _ => SecretCond::TagValue(v),
                }
            })
            .collect();
        let found = st.secrets(conds, page.offset(), page.size)?;
        let fetch_tags = req.fetch_tags.unwrap_or(false);
        let mut secret = Vec::with_capacity(found.items.len());
        for s in &found.items {
            let tags = match fetch_tags {
                // A secret deleted since the page was read has no tags left to show.
                true => Some(st.secret(&s.name)?.map(|e| self.tags_of(&e.tags)).unwrap_or_default()),
                false => None,
            };
            secret.push(SecretListEntry {
                secret_name: s.name.clone(),
                secret_type: s.secret_type.clone(),
                create_time: format_iso(s.created_at),
                update_time: format_iso(s.updated_at),
                planned_delete_time: s.planned_delete.map(format_iso).unwrap_or_default(),
                owing_service: String::new(),
                tags,
            });
        }
        Ok(ListSecretsResponse {
            secret_list: SecretList { secret },
            page_number: page.number,
            page_size: page.size,
            total_count: found.total.min(u32::MAX as u64) as u32,
        })
    }

    pub fn update_secret(&self, caller: &Caller, req: UpdateSecretRequest) -> Result<SecretNameResponse> {
        let max = self.config.limits.max_description_chars;
        if req.description.as_ref().is_some_and(|d| d.chars().count() > max) {
            return Err(KmsError::invalid("Description", format_args!("at most {max} characters")));
        }
        let extended = match &req.extended_config {
            Some(raw) => Some(check_extended_config(Some(raw))?),
            None => None,
        };
        self.mutate(|st, now| {
            let mut s =
                self.live_secret(st, Access::Check(caller, "kms:UpdateSecret"), &req.secret_name)?.secret.clone();
            if let Some(d) = &req.description {
                s.description = d.clone();
            }
            if let Some(e) = &extended {
                s.extended_config = e.clone();
            }
            s.updated_at = now;
            let name = s.name.clone();
            Ok((vec![Change::PutSecret(s)], SecretNameResponse { secret_name: name }))
        })
    }

    pub fn delete_secret(&self, caller: &Caller, req: DeleteSecretRequest) -> Result<DeleteSecretResponse> {
        let l = &self.config.limits;
        let force = req.force_delete_without_recovery.unwrap_or(false);
        if force && req.recovery_window_in_days.is_some() {
            return Err(KmsError::invalid("RecoveryWindowInDays", "it cannot go with ForceDeleteWithoutRecovery=true"));
        }
        let days = req.recovery_window_in_days.unwrap_or(30);
        if !(l.min_secret_recovery_days..=l.max_secret_recovery_days).contains(&days) {
            return Err(KmsError::invalid(
                "RecoveryWindowInDays",
                format_args!(
                    "it must lie between {} and {} days",
                    l.min_secret_recovery_days, l.max_secret_recovery_days
                ),
            ));
        }
        self.mutate(|st, now| {
            let s = self.find_secret_for(st, Access::Check(caller, "kms:DeleteSecret"), &req.secret_name)?;
            let name = s.name.clone();
            if force {
                return Ok((
                    vec![Change::DeleteSecret(name.clone())],
                    DeleteSecretResponse { secret_name: name, planned_delete_time: format_iso(now) },
                ));
            }
            if s.planned_delete.is_some() {
                return Err(KmsError::with_detail(
                    ErrorCode::ResourceInDeleteWindow,
                    format_args!("Secret {name} is already scheduled for deletion."),
                ));
            }
            let mut s = s.secret.clone();
            let when = now + days * DAY;
            s.planned_delete = Some(when);
            s.updated_at = now;
            Ok((
                vec![Change::PutSecret(s)],
                DeleteSecretResponse { secret_name: name, planned_delete_time: format_iso(when) },
            ))
        })
    }

    /// Brings a secret back from its recovery window (a secret not scheduled for deletion is left
    /// as it is).
    pub fn restore_secret(&self, caller: &Caller, req: SecretNameRequest) -> Result<SecretNameResponse> {
        self.mutate(|st, now| {
            let s = self.find_secret_for(st, Access::Check(caller, "kms:RestoreSecret"), &req.secret_name)?;
            let name = s.name.clone();
            if s.planned_delete.is_none() {
                return Ok((Vec::new(), SecretNameResponse { secret_name: name }));
            }
            let mut s = s.secret.clone();
            s.planned_delete = None;
            s.updated_at = now;
            Ok((vec![Change::PutSecret(s)], SecretNameResponse { secret_name: name }))
        })
    }

    /// Deletes those of the `due` secrets whose recovery window has passed.
    pub(crate) fn purge_secrets(&self, due: Vec<String>) -> Vec<String> {
        let mut purged = Vec::new();
        for name in due {
            let r =
                self.mutate(|st, now| match st.secret(&name)?.filter(|s| s.planned_delete.is_some_and(|t| now >= t)) {
                    Some(_) => Ok((vec![Change::DeleteSecret(name.clone())], true)),
                    None => Ok((Vec::new(), false)),
                });
            if let Ok(true) = r {
                tracing::info!(secret = %name, "secret deleted after its recovery window");
                purged.push(name);
            }
        }
        purged
    }
}

impl ListSecretsRequest {
    fn page_request(&self) -> PageRequest {
        PageRequest { page_number: self.page_number, page_size: self.page_size }
    }
}
