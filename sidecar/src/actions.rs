//! Maps an `Action` onto the engine: decode the parameters into the action's request type, call,
//! serialise the response. Every action the engine implements is listed here.

use kms_core::api::*;
use kms_core::engine::ResourceRef;
use kms_core::{Caller, Engine, ErrorCode, KmsError};
use serde::Serialize;
use serde_json::Value;

use crate::wire::params::Params;
use crate::wire::response::to_json;

/// Every served action, in the order of the API reference.
pub const ACTIONS: &[&str] = &[
    "AsymmetricDecrypt",
    "AsymmetricEncrypt",
    "AsymmetricSign",
    "AsymmetricVerify",
    "BatchGetSecretValue",
    "CancelKeyDeletion",
    "CreateAlias",
    "CreateKey",
    "CreateKeyVersion",
    "CreateSecret",
    "Decrypt",
    "DeleteAlias",
    "DeleteKeyMaterial",
    "DeleteSecret",
    "DescribeKey",
    "DescribeKeyVersion",
    "DescribeRegions",
    "DescribeSecret",
    "DisableKey",
    "EnableKey",
    "Encrypt",
    "ExportDataKey",
    "GenerateAndExportDataKey",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GetParametersForImport",
    "GetPublicKey",
    "GetRandomPassword",
    "GetSecretValue",
    "ImportKeyMaterial",
    "ListAliases",
    "ListAliasesByKeyId",
    "ListKeyVersions",
    "ListKeys",
    "ListResourceTags",
    "ListSecretVersionIds",
    "ListSecrets",
    "ListTagResources",
    "PutSecretValue",
    "ReEncrypt",
    "RestoreSecret",
    "ScheduleKeyDeletion",
    "SetDeletionProtection",
    "TagResource",
    "TagResources",
    "UntagResource",
    "UntagResources",
    "UpdateAlias",
    "UpdateKeyDescription",
    "UpdateRotationPolicy",
    "UpdateSecret",
    "UpdateSecretVersionStage",
];

/// Actions that take microseconds and never wait on a disk write: they run inline on the async
/// worker. The others (store commits, private-key operations of a millisecond or more) run on the
/// blocking pool so they never stall other connections.
pub fn runs_inline(action: &str) -> bool {
    matches!(
        action,
        "Decrypt"
            | "DescribeKey"
            | "DescribeKeyVersion"
            | "DescribeRegions"
            | "Encrypt"
            | "GenerateDataKey"
            | "GenerateDataKeyWithoutPlaintext"
            | "ListAliases"
            | "ListAliasesByKeyId"
            | "ListKeyVersions"
            | "ListKeys"
            | "ReEncrypt"
            | "GetSecretValue"
            | "BatchGetSecretValue"
            | "DescribeSecret"
            | "ListSecrets"
            | "ListSecretVersionIds"
            | "GetRandomPassword"
            | "ListResourceTags"
            | "ListTagResources"
    )
}

/// Actions that change state: acknowledged only after their audit event is on disk, and refused
/// while the audit log cannot be written.
pub fn is_mutating(action: &str) -> bool {
    [
        "Create", "Update", "Delete", "Enable", "Disable", "Schedule", "Cancel", "Set", "Import", "Put", "Restore",
        "Tag", "Untag",
    ]
    .iter()
    .any(|p| action.starts_with(p))
        || action == "GetParametersForImport"
}

fn json<T: Serialize>(v: T) -> Result<Vec<u8>, KmsError> {
    Ok(to_json(&v))
}

fn empty(r: Result<(), KmsError>) -> Result<Vec<u8>, KmsError> {
    r.map(|_| b"{}".to_vec())
}

/// Runs `action` after authorising it: each arm names the permissions it needs (the user guide's
/// action → resource table). The ARNs checked are appended to `trail` for the audit log. The answer
/// is the serialised JSON object (without `RequestId`); unknown actions are `InvalidAction.NotFound`.
pub fn dispatch(
    engine: &Engine,
    caller: &Caller,
    action: &str,
    p: &Params,
    trail: &mut Vec<String>,
) -> Result<Vec<u8>, KmsError> {
    use ResourceRef::*;
    let e = engine;
    let c = caller;
    let mut allow = |checks: &[(&str, ResourceRef<'_>)]| -> Result<(), KmsError> {
        trail.extend(e.authorize(c, checks)?);
        Ok(())
    };
    match action {
        "CreateKey" => {
            let r: CreateKeyRequest = p.decode()?;
            allow(&[("kms:CreateKey", KeyContainer)])?;
            json(e.create_key(c, r)?)
        }
        "ListKeys" => {
            let r: ListKeysRequest = p.decode()?;
            allow(&[("kms:ListKeys", KeyContainer)])?;
            json(e.list_keys(c, r)?)
        }
        "DescribeKey" | "EnableKey" | "DisableKey" | "CancelKeyDeletion" | "CreateKeyVersion" | "DeleteKeyMaterial"
        | "ListResourceTags" => {
            let r: KeyIdRequest = p.decode()?;
            allow(&[(&format!("kms:{action}"), Key(&r.key_id))])?;
            match action {
                "DescribeKey" => json(e.describe_key(c, &r.key_id)?),
                "EnableKey" => empty(e.enable_key(c, &r.key_id)),
                "DisableKey" => empty(e.disable_key(c, &r.key_id)),
                "CancelKeyDeletion" => empty(e.cancel_key_deletion(c, &r.key_id)),
                "CreateKeyVersion" => json(e.create_key_version(c, &r.key_id)?),
                "DeleteKeyMaterial" => empty(e.delete_key_material(c, &r.key_id)),
                _ => json(e.list_resource_tags(c, &r.key_id)?),
            }
        }
        "UpdateKeyDescription" => {
            let r: UpdateKeyDescriptionRequest = p.decode()?;
            allow(&[("kms:UpdateKeyDescription", Key(&r.key_id))])?;
            empty(e.update_key_description(c, &r.key_id, &r.description))
        }
        "ScheduleKeyDeletion" => {
            let r: ScheduleKeyDeletionRequest = p.decode()?;
            allow(&[("kms:ScheduleKeyDeletion", Key(&r.key_id))])?;
            empty(e.schedule_key_deletion(c, r))
        }
        "SetDeletionProtection" => {
            let r: SetDeletionProtectionRequest = p.decode()?;
            let target = r.protected_resource_arn.as_deref().or(r.key_id.as_deref()).unwrap_or("");
            allow(&[("kms:SetDeletionProtection", Key(target))])?;
            empty(e.set_deletion_protection(c, r))
        }
        "UpdateRotationPolicy" => {
            let r: UpdateRotationPolicyRequest = p.decode()?;
            allow(&[("kms:UpdateRotationPolicy", Key(&r.key_id))])?;
            empty(e.update_rotation_policy(c, r))
        }
        "DescribeKeyVersion" => {
            let r: DescribeKeyVersionRequest = p.decode()?;
            allow(&[("kms:DescribeKeyVersion", Key(&r.key_id))])?;
            json(e.describe_key_version(c, &r.key_id, &r.key_version_id)?)
        }
        "ListKeyVersions" | "ListAliasesByKeyId" => {
            let r: KeyPageRequest = p.decode()?;
            allow(&[(&format!("kms:{action}"), Key(&r.key_id))])?;
            if action == "ListKeyVersions" {
                json(e.list_key_versions(c, &r.key_id, r.page())?)
            } else {
                json(e.list_aliases_by_key_id(c, &r.key_id, r.page())?)
            }
        }
        "CreateAlias" => {
            let r: AliasRequest = p.decode()?;
            allow(&[("kms:CreateAlias", Alias(&r.alias_name)), ("kms:CreateAlias", Key(&r.key_id))])?;
            empty(e.create_alias(c, &r.alias_name, &r.key_id))
        }
        "UpdateAlias" => {
            let r: AliasRequest = p.decode()?;
            allow(&[
                ("kms:UpdateAlias", Alias(&r.alias_name)),
                ("kms:UpdateAlias", KeyOfAlias(&r.alias_name)),
                ("kms:UpdateAlias", Key(&r.key_id)),
            ])?;
            empty(e.update_alias(c, &r.alias_name, &r.key_id))
        }
        "DeleteAlias" => {
            let r: DeleteAliasRequest = p.decode()?;
            allow(&[("kms:DeleteAlias", Alias(&r.alias_name)), ("kms:DeleteAlias", KeyOfAlias(&r.alias_name))])?;
            empty(e.delete_alias(c, &r.alias_name))
        }
        "ListAliases" => {
            let r: PageRequest = p.decode()?;
            allow(&[("kms:ListAliases", AliasContainer)])?;
            json(e.list_aliases(c, r)?)
        }
        "Encrypt" => {
            let r: EncryptRequest = p.decode()?;
            allow(&[("kms:Encrypt", Key(&r.key_id))])?;
            json(e.encrypt(c, r)?)
        }
        "Decrypt" => {
            let r: DecryptRequest = p.decode()?;
            allow(&[("kms:Decrypt", KeyOfBlob(&r.ciphertext_blob))])?;
            json(e.decrypt(c, r)?)
        }
        "ReEncrypt" => {
            let r: ReEncryptRequest = p.decode()?;
            let source = match r.source_key_id.as_deref() {
                Some(k) if r.source_encryption_algorithm.as_deref().is_some_and(|a| !a.is_empty()) => Key(k),
                _ => KeyOfBlob(&r.ciphertext_blob),
            };
            allow(&[("kms:ReEncryptFrom", source), ("kms:ReEncryptTo", Key(&r.destination_key_id))])?;
            json(e.re_encrypt(c, r)?)
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let r: GenerateDataKeyRequest = p.decode()?;
            allow(&[(&format!("kms:{action}"), Key(&r.key_id))])?;
            if action == "GenerateDataKey" {
                json(e.generate_data_key(c, r)?)
            } else {
                json(e.generate_data_key_without_plaintext(c, r)?)
            }
        }
        "DescribeRegions" => json(e.describe_regions(c)),
        "GetPublicKey" => {
            let r: KeyVersionRequest = p.decode()?;
            allow(&[("kms:GetPublicKey", Key(&r.key_id))])?;
            json(e.get_public_key(c, r)?)
        }
        "AsymmetricSign" => {
            let r: AsymmetricSignRequest = p.decode()?;
            allow(&[("kms:AsymmetricSign", Key(&r.key_id))])?;
            json(e.asymmetric_sign(c, r)?)
        }
        "AsymmetricVerify" => {
            let r: AsymmetricVerifyRequest = p.decode()?;
            allow(&[("kms:AsymmetricVerify", Key(&r.key_id))])?;
            json(e.asymmetric_verify(c, r)?)
        }
        "AsymmetricEncrypt" => {
            let r: AsymmetricEncryptRequest = p.decode()?;
            allow(&[("kms:AsymmetricEncrypt", Key(&r.key_id))])?;
            json(e.asymmetric_encrypt(c, r)?)
        }
        "AsymmetricDecrypt" => {
            let r: AsymmetricDecryptRequest = p.decode()?;
            allow(&[("kms:AsymmetricDecrypt", Key(&r.key_id))])?;
            json(e.asymmetric_decrypt(c, r)?)
        }
        "ExportDataKey" => {
            let r: ExportDataKeyRequest = p.decode()?;
            allow(&[("kms:ExportDataKey", KeyOfBlob(&r.ciphertext_blob))])?;
            json(e.export_data_key(c, r)?)
        }
        "GenerateAndExportDataKey" => {
            let r: GenerateAndExportDataKeyRequest = p.decode()?;
            allow(&[("kms:GenerateAndExportDataKey", Key(&r.key_id))])?;
            json(e.generate_and_export_data_key(c, r)?)
        }
        "GetParametersForImport" => {
            let r: GetParametersForImportRequest = p.decode()?;
            allow(&[("kms:GetParametersForImport", Key(&r.key_id))])?;
            json(e.get_parameters_for_import(c, r)?)
        }
        "ImportKeyMaterial" => {
            let r: ImportKeyMaterialRequest = p.decode()?;
            allow(&[("kms:ImportKeyMaterial", Key(&r.key_id))])?;
            empty(e.import_key_material(c, r))
        }
        "CreateSecret" => {
            let r: CreateSecretRequest = p.decode()?;
            let mut checks = vec![("kms:CreateSecret", SecretContainer)];
            if let Some(k) = r.encryption_key_id.as_deref().filter(|k| !k.is_empty()) {
                checks.push(("kms:GenerateDataKey", Key(k)));
            }
            allow(&checks)?;
            json(e.create_secret(c, r)?)
        }
        "GetSecretValue" => {
            let r: GetSecretValueRequest = p.decode()?;
            allow(&[("kms:GetSecretValue", Secret(&r.secret_name)), ("kms:Decrypt", KeyOfSecret(&r.secret_name))])?;
            json(e.get_secret_value(c, r)?)
        }
        "BatchGetSecretValue" => {
            let r: BatchGetSecretValueRequest = p.decode()?;
            let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&r.secrets_list)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.get("SecretName").and_then(|n| n.as_str()).map(str::to_string))
                .collect();
            let mut checks = Vec::new();
            for n in &names {
                checks.push(("kms:BatchGetSecretValue", Secret(n)));
                checks.push(("kms:Decrypt", KeyOfSecret(n)));
            }
            allow(&checks)?;
            json(e.batch_get_secret_value(c, r)?)
        }
        "PutSecretValue" => {
            let r: PutSecretValueRequest = p.decode()?;
            allow(&[
                ("kms:PutSecretValue", Secret(&r.secret_name)),
                ("kms:GenerateDataKey", KeyOfSecret(&r.secret_name)),
            ])?;
            json(e.put_secret_value(c, r)?)
        }
        "UpdateSecretVersionStage" => {
            let r: UpdateSecretVersionStageRequest = p.decode()?;
            allow(&[("kms:UpdateSecretVersionStage", Secret(&r.secret_name))])?;
            json(e.update_secret_version_stage(c, r)?)
        }
        "ListSecretVersionIds" => {
            let r: ListSecretVersionIdsRequest = p.decode()?;
            allow(&[("kms:ListSecretVersionIds", Secret(&r.secret_name))])?;
            json(e.list_secret_version_ids(c, r)?)
        }
        "DescribeSecret" => {
            let r: DescribeSecretRequest = p.decode()?;
            allow(&[("kms:DescribeSecret", Secret(&r.secret_name))])?;
            json(e.describe_secret(c, r)?)
        }
        "ListSecrets" => {
            let r: ListSecretsRequest = p.decode()?;
            allow(&[("kms:ListSecrets", SecretContainer)])?;
            json(e.list_secrets(c, r)?)
        }
        "UpdateSecret" => {
            let r: UpdateSecretRequest = fold_extended_config(p)?.decode()?;
            allow(&[("kms:UpdateSecret", Secret(&r.secret_name))])?;
            json(e.update_secret(c, r)?)
        }
        "DeleteSecret" => {
            let r: DeleteSecretRequest = p.decode()?;
            allow(&[("kms:DeleteSecret", Secret(&r.secret_name))])?;
            json(e.delete_secret(c, r)?)
        }
        "RestoreSecret" => {
            let r: SecretNameRequest = p.decode()?;
            allow(&[("kms:RestoreSecret", Secret(&r.secret_name))])?;
            json(e.restore_secret(c, r)?)
        }
        "GetRandomPassword" => {
            let r: GetRandomPasswordRequest = p.decode()?;
            allow(&[("kms:GetRandomPassword", Any)])?;
            json(e.get_random_password(c, r)?)
        }
        "TagResource" | "UntagResource" => {
            let (key, secret) = (p.get("KeyId").unwrap_or(""), p.get("SecretName").unwrap_or(""));
            let target = if !key.is_empty() { Key(key) } else { Secret(secret) };
            allow(&[(&format!("kms:{action}"), target)])?;
            if action == "TagResource" {
                empty(e.tag_resource(c, p.decode()?))
            } else {
                empty(e.untag_resource(c, p.decode()?))
            }
        }
        "TagResources" | "UntagResources" | "ListTagResources" => {
            let ids: Vec<String> = p.decode::<ResourceIds>()?.resource_id;
            let is_key = p.get("ResourceType") == Some("key");
            let perm = format!("kms:{action}");
            let mut checks: Vec<(&str, ResourceRef<'_>)> =
                ids.iter().map(|id| (perm.as_str(), if is_key { Key(id) } else { Secret(id) })).collect();
            if checks.is_empty() {
                checks.push((perm.as_str(), if is_key { KeyContainer } else { SecretContainer }));
            }
            allow(&checks)?;
            match action {
                "TagResources" => empty(e.tag_resources(c, p.decode()?)),
                "UntagResources" => empty(e.untag_resources(c, p.decode()?)),
                _ => json(e.list_tag_resources(c, p.decode()?)?),
            }
        }
        _ => Err(KmsError::with_detail(ErrorCode::InvalidActionNotFound, format_args!("Action: {action}"))),
    }
}

/// The resource ids of a multi-resource tag call, for authorisation.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceIds {
    #[serde(default)]
    resource_id: Vec<String>,
}

/// UpdateSecret's `ExtendedConfig` arrives as JSON (`ExtendedConfig={…}`), as
/// `ExtendedConfig.CustomData=<json>` (py-core) or flattened as `ExtendedConfig.CustomData.<k>=<v>`
/// (py-tea) (spec §3): fold every form into one JSON object text.
fn fold_extended_config(p: &Params) -> Result<Params, KmsError> {
    let mut p = p.clone();
    let dotted = p.take_prefixed("ExtendedConfig.");
    if dotted.is_empty() {
        return Ok(p);
    }
    let mut root = serde_json::Map::new();
    for (name, value) in dotted {
        let path: Vec<&str> = name["ExtendedConfig.".len()..].split('.').collect();
        let leaf = serde_json::from_str::<Value>(&value)
            .ok()
            .filter(|v| v.is_object() || v.is_array())
            .unwrap_or(Value::String(value.clone()));
        let mut node = &mut root;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(seg.to_string(), leaf.clone());
            } else {
                let child = node.entry(seg.to_string()).or_insert_with(|| Value::Object(Default::default()));
                node = child.as_object_mut().ok_or_else(|| {
                    KmsError::invalid("ExtendedConfig", format_args!("{name} conflicts with another field"))
                })?;
            }
        }
    }
    p.set("ExtendedConfig", Value::Object(root).to_string());
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_config_forms_fold_into_json() {
        let flat = Params::from_pairs([("ExtendedConfig.CustomData.a", "1"), ("ExtendedConfig.CustomData.b", "x y")]);
        assert_eq!(
            fold_extended_config(&flat).unwrap().get("ExtendedConfig"),
            Some(r#"{"CustomData":{"a":"1","b":"x y"}}"#)
        );
        let nested = Params::from_pairs([("ExtendedConfig.CustomData", r#"{"a":"1"}"#)]);
        assert_eq!(fold_extended_config(&nested).unwrap().get("ExtendedConfig"), Some(r#"{"CustomData":{"a":"1"}}"#));
        let plain = Params::from_pairs([("ExtendedConfig", r#"{"x":"y"}"#)]);
        assert_eq!(fold_extended_config(&plain).unwrap().get("ExtendedConfig"), Some(r#"{"x":"y"}"#));
    }
}
