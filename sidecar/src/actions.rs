//! Maps an `Action` onto the engine: decode the parameters into the action's request type, call,
//! serialise the response. Every action the engine implements is listed here.

use kms_core::api::*;
use kms_core::{Caller, Engine, ErrorCode, KmsError};
use serde::Serialize;
use serde_json::Value;

use crate::wire::params::Params;

/// Every served action, in the order of the API reference.
pub const ACTIONS: &[&str] = &[
    "AsymmetricDecrypt",
    "AsymmetricEncrypt",
    "AsymmetricSign",
    "AsymmetricVerify",
    "CancelKeyDeletion",
    "CreateAlias",
    "CreateKey",
    "CreateKeyVersion",
    "Decrypt",
    "DeleteAlias",
    "DeleteKeyMaterial",
    "DescribeKey",
    "DescribeKeyVersion",
    "DescribeRegions",
    "DisableKey",
    "EnableKey",
    "Encrypt",
    "ExportDataKey",
    "GenerateAndExportDataKey",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GetParametersForImport",
    "GetPublicKey",
    "ImportKeyMaterial",
    "ListAliases",
    "ListAliasesByKeyId",
    "ListKeyVersions",
    "ListKeys",
    "ReEncrypt",
    "ScheduleKeyDeletion",
    "SetDeletionProtection",
    "UpdateAlias",
    "UpdateKeyDescription",
    "UpdateRotationPolicy",
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
    )
}

fn json<T: Serialize>(v: T) -> Result<Value, KmsError> {
    serde_json::to_value(v).map_err(|e| KmsError::internal(format_args!("serialise response: {e}")))
}

fn empty(r: Result<(), KmsError>) -> Result<Value, KmsError> {
    r.map(|_| Value::Null)
}

/// Runs `action`. Unknown actions are `InvalidAction.NotFound`.
pub fn dispatch(engine: &Engine, caller: &Caller, action: &str, p: &Params) -> Result<Value, KmsError> {
    let e = engine;
    let c = caller;
    match action {
        "CreateKey" => json(e.create_key(c, p.decode()?)?),
        "DescribeKey" => json(e.describe_key(c, &p.decode::<KeyIdRequest>()?.key_id)?),
        "ListKeys" => json(e.list_keys(c, p.decode()?)?),
        "UpdateKeyDescription" => {
            let r: UpdateKeyDescriptionRequest = p.decode()?;
            empty(e.update_key_description(c, &r.key_id, &r.description))
        }
        "EnableKey" => empty(e.enable_key(c, &p.decode::<KeyIdRequest>()?.key_id)),
        "DisableKey" => empty(e.disable_key(c, &p.decode::<KeyIdRequest>()?.key_id)),
        "ScheduleKeyDeletion" => empty(e.schedule_key_deletion(c, p.decode()?)),
        "CancelKeyDeletion" => empty(e.cancel_key_deletion(c, &p.decode::<KeyIdRequest>()?.key_id)),
        "SetDeletionProtection" => empty(e.set_deletion_protection(c, p.decode()?)),
        "UpdateRotationPolicy" => empty(e.update_rotation_policy(c, p.decode()?)),
        "CreateKeyVersion" => json(e.create_key_version(c, &p.decode::<KeyIdRequest>()?.key_id)?),
        "DescribeKeyVersion" => {
            let r: DescribeKeyVersionRequest = p.decode()?;
            json(e.describe_key_version(c, &r.key_id, &r.key_version_id)?)
        }
        "ListKeyVersions" => {
            let r: KeyPageRequest = p.decode()?;
            json(e.list_key_versions(c, &r.key_id, r.page())?)
        }
        "CreateAlias" => {
            let r: AliasRequest = p.decode()?;
            empty(e.create_alias(c, &r.alias_name, &r.key_id))
        }
        "UpdateAlias" => {
            let r: AliasRequest = p.decode()?;
            empty(e.update_alias(c, &r.alias_name, &r.key_id))
        }
        "DeleteAlias" => empty(e.delete_alias(c, &p.decode::<DeleteAliasRequest>()?.alias_name)),
        "ListAliases" => json(e.list_aliases(c, p.decode()?)?),
        "ListAliasesByKeyId" => {
            let r: KeyPageRequest = p.decode()?;
            json(e.list_aliases_by_key_id(c, &r.key_id, r.page())?)
        }
        "Encrypt" => json(e.encrypt(c, p.decode()?)?),
        "Decrypt" => json(e.decrypt(c, p.decode()?)?),
        "ReEncrypt" => json(e.re_encrypt(c, p.decode()?)?),
        "GenerateDataKey" => json(e.generate_data_key(c, p.decode()?)?),
        "GenerateDataKeyWithoutPlaintext" => json(e.generate_data_key_without_plaintext(c, p.decode()?)?),
        "DescribeRegions" => json(e.describe_regions(c)),
        "GetPublicKey" => json(e.get_public_key(c, p.decode()?)?),
        "AsymmetricSign" => json(e.asymmetric_sign(c, p.decode()?)?),
        "AsymmetricVerify" => json(e.asymmetric_verify(c, p.decode()?)?),
        "AsymmetricEncrypt" => json(e.asymmetric_encrypt(c, p.decode()?)?),
        "AsymmetricDecrypt" => json(e.asymmetric_decrypt(c, p.decode()?)?),
        "ExportDataKey" => json(e.export_data_key(c, p.decode()?)?),
        "GenerateAndExportDataKey" => json(e.generate_and_export_data_key(c, p.decode()?)?),
        "GetParametersForImport" => json(e.get_parameters_for_import(c, p.decode()?)?),
        "ImportKeyMaterial" => empty(e.import_key_material(c, p.decode()?)),
        "DeleteKeyMaterial" => empty(e.delete_key_material(c, &p.decode::<KeyIdRequest>()?.key_id)),
        _ => Err(KmsError::with_detail(ErrorCode::InvalidActionNotFound, format_args!("Action: {action}"))),
    }
}
