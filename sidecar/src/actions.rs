//! Maps an [`Action`] onto the engine: decode the parameters into the action's request type, call,
//! serialise the response. Authorisation is the engine's: each engine call resolves what it
//! touches and checks the caller against exactly that (kms-core `engine/authz.rs`), recording the
//! resources in the caller's trail for the audit line. Nothing here decides what a request touches.

use kms_core::api::*;
use kms_core::{Caller, Engine, KmsError};
use serde::Serialize;
use serde_json::Value;

use crate::wire::params::Params;
use crate::wire::response::to_json;

fn json<T: Serialize>(v: T) -> Result<Vec<u8>, KmsError> {
    Ok(to_json(&v))
}

fn empty(r: Result<(), KmsError>) -> Result<Vec<u8>, KmsError> {
    r.map(|_| b"{}".to_vec())
}

/// Runs `action` for `caller`, its parameters decoded into the action table's request type for
/// it (`request::<Action>`: what `kmsctl <Action> --help` lists). The answer is the serialised
/// JSON object (without `RequestId`).
pub fn dispatch(engine: &Engine, caller: &Caller, action: Action, p: &Params) -> Result<Vec<u8>, KmsError> {
    use Action::*;
    let (e, c) = (engine, caller);
    match action {
        CreateKey => json(e.create_key(c, p.decode::<request::CreateKey>()?)?),
        ListKeys => json(e.list_keys(c, p.decode::<request::ListKeys>()?)?),
        DescribeKey => json(e.describe_key(c, &p.decode::<request::DescribeKey>()?.key_id)?),
        EnableKey => empty(e.enable_key(c, &p.decode::<request::EnableKey>()?.key_id)),
        DisableKey => empty(e.disable_key(c, &p.decode::<request::DisableKey>()?.key_id)),
        CancelKeyDeletion => empty(e.cancel_key_deletion(c, &p.decode::<request::CancelKeyDeletion>()?.key_id)),
        CreateKeyVersion => json(e.create_key_version(c, &p.decode::<request::CreateKeyVersion>()?.key_id)?),
        DeleteKeyMaterial => empty(e.delete_key_material(c, &p.decode::<request::DeleteKeyMaterial>()?.key_id)),
        ListResourceTags => json(e.list_resource_tags(c, &p.decode::<request::ListResourceTags>()?.key_id)?),
        UpdateKeyDescription => {
            let r = p.decode::<request::UpdateKeyDescription>()?;
            empty(e.update_key_description(c, &r.key_id, &r.description))
        }
        ScheduleKeyDeletion => empty(e.schedule_key_deletion(c, p.decode::<request::ScheduleKeyDeletion>()?)),
        SetDeletionProtection => empty(e.set_deletion_protection(c, p.decode::<request::SetDeletionProtection>()?)),
        UpdateRotationPolicy => empty(e.update_rotation_policy(c, p.decode::<request::UpdateRotationPolicy>()?)),
        DescribeKeyVersion => {
            let r = p.decode::<request::DescribeKeyVersion>()?;
            json(e.describe_key_version(c, &r.key_id, &r.key_version_id)?)
        }
        ListKeyVersions => {
            let r = p.decode::<request::ListKeyVersions>()?;
            json(e.list_key_versions(c, &r.key_id, r.page())?)
        }
        ListAliasesByKeyId => {
            let r = p.decode::<request::ListAliasesByKeyId>()?;
            json(e.list_aliases_by_key_id(c, &r.key_id, r.page())?)
        }
        CreateAlias => {
            let r = p.decode::<request::CreateAlias>()?;
            empty(e.create_alias(c, &r.alias_name, &r.key_id))
        }
        UpdateAlias => {
            let r = p.decode::<request::UpdateAlias>()?;
            empty(e.update_alias(c, &r.alias_name, &r.key_id))
        }
        DeleteAlias => empty(e.delete_alias(c, &p.decode::<request::DeleteAlias>()?.alias_name)),
        ListAliases => json(e.list_aliases(c, p.decode::<request::ListAliases>()?)?),
        Encrypt => json(e.encrypt(c, p.decode::<request::Encrypt>()?)?),
        Decrypt => json(e.decrypt(c, p.decode::<request::Decrypt>()?)?),
        ReEncrypt => json(e.re_encrypt(c, p.decode::<request::ReEncrypt>()?)?),
        GenerateDataKey => json(e.generate_data_key(c, p.decode::<request::GenerateDataKey>()?)?),
        GenerateDataKeyWithoutPlaintext => {
            json(e.generate_data_key_without_plaintext(c, p.decode::<request::GenerateDataKeyWithoutPlaintext>()?)?)
        }
        DescribeRegions => {
            p.decode::<request::DescribeRegions>()?;
            json(e.describe_regions(c))
        }
        GetPublicKey => json(e.get_public_key(c, p.decode::<request::GetPublicKey>()?)?),
        AsymmetricSign => json(e.asymmetric_sign(c, p.decode::<request::AsymmetricSign>()?)?),
        AsymmetricVerify => json(e.asymmetric_verify(c, p.decode::<request::AsymmetricVerify>()?)?),
        AsymmetricEncrypt => json(e.asymmetric_encrypt(c, p.decode::<request::AsymmetricEncrypt>()?)?),
        AsymmetricDecrypt => json(e.asymmetric_decrypt(c, p.decode::<request::AsymmetricDecrypt>()?)?),
        ExportDataKey => json(e.export_data_key(c, p.decode::<request::ExportDataKey>()?)?),
        GenerateAndExportDataKey => {
            json(e.generate_and_export_data_key(c, p.decode::<request::GenerateAndExportDataKey>()?)?)
        }
        GetParametersForImport => json(e.get_parameters_for_import(c, p.decode::<request::GetParametersForImport>()?)?),
        ImportKeyMaterial => empty(e.import_key_material(c, p.decode::<request::ImportKeyMaterial>()?)),
        CreateSecret => json(e.create_secret(c, p.decode::<request::CreateSecret>()?)?),
        GetSecretValue => json(e.get_secret_value(c, p.decode::<request::GetSecretValue>()?)?),
        BatchGetSecretValue => json(e.batch_get_secret_value(c, p.decode::<request::BatchGetSecretValue>()?)?),
        PutSecretValue => json(e.put_secret_value(c, p.decode::<request::PutSecretValue>()?)?),
        UpdateSecretVersionStage => {
            json(e.update_secret_version_stage(c, p.decode::<request::UpdateSecretVersionStage>()?)?)
        }
        ListSecretVersionIds => json(e.list_secret_version_ids(c, p.decode::<request::ListSecretVersionIds>()?)?),
        DescribeSecret => json(e.describe_secret(c, p.decode::<request::DescribeSecret>()?)?),
        ListSecrets => json(e.list_secrets(c, p.decode::<request::ListSecrets>()?)?),
        UpdateSecret => json(e.update_secret(c, fold_extended_config(p)?.decode::<request::UpdateSecret>()?)?),
        DeleteSecret => json(e.delete_secret(c, p.decode::<request::DeleteSecret>()?)?),
        RestoreSecret => json(e.restore_secret(c, p.decode::<request::RestoreSecret>()?)?),
        GetRandomPassword => json(e.get_random_password(c, p.decode::<request::GetRandomPassword>()?)?),
        GrantServiceKeyUse => empty(e.grant_service_key_use(c, p.decode::<request::GrantServiceKeyUse>()?)),
        RevokeServiceKeyUse => empty(e.revoke_service_key_use(c, p.decode::<request::RevokeServiceKeyUse>()?)),
        TagResource => empty(e.tag_resource(c, p.decode::<request::TagResource>()?)),
        UntagResource => empty(e.untag_resource(c, p.decode::<request::UntagResource>()?)),
        TagResources => empty(e.tag_resources(c, p.decode::<request::TagResources>()?)),
        UntagResources => empty(e.untag_resources(c, p.decode::<request::UntagResources>()?)),
        ListTagResources => json(e.list_tag_resources(c, p.decode::<request::ListTagResources>()?)?),
    }
}

/// UpdateSecret's `ExtendedConfig` arrives as JSON (`ExtendedConfig={…}`), as
/// `ExtendedConfig.CustomData=<json>` (py-core) or flattened as `ExtendedConfig.CustomData.<k>=<v>`
/// (py-tea) (API.md §1): fold every form into one JSON object text.
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
