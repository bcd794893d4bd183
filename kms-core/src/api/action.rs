//! The action table: every API action, with the permissions the engine checks for it, whether it
//! changes state and whether it is quick enough to run on an async worker. Dispatch, metrics,
//! the audit trail's durability rule, the client and `kmsctl` all read this one table.

use std::fmt;

/// How an action runs and what it may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub action: Action,
    pub name: &'static str,
    /// Changes state: acknowledged only once its audit event is durable, refused while the audit
    /// log cannot be written, its signature nonce recorded with the change.
    pub mutating: bool,
    /// Takes microseconds and never waits on a disk write or a private-key operation: runs inline
    /// on the async worker instead of the blocking pool.
    pub inline: bool,
    /// The RAM permissions the engine checks, each on the resource it resolves (documentation
    /// and `kmsctl` help; the authorisation suite proves a denied call names one of them).
    pub permissions: &'static [&'static str],
}

macro_rules! actions {
    ($($name:ident: $kind:ident, $run:ident, [$($perm:literal),*], $req:ident;)*) => {
        /// An API action of the Alibaba Cloud KMS 2016-01-20 RPC protocol – or one of this
        /// service's own two, GrantServiceKeyUse and RevokeServiceKeyUse (WIRE.md, "Service grants").
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action { $($name),* }

        /// Every action, in the order of the API reference.
        pub const ACTIONS: &[ActionSpec] = &[$(ActionSpec {
            action: Action::$name,
            name: stringify!($name),
            mutating: actions!(@mutating $kind),
            inline: actions!(@inline $run),
            permissions: &[$($perm),*],
        }),*];

        /// Each action's request type, by the action's name: the sidecar decodes an action's
        /// parameters into exactly this type (`request::Encrypt` is `EncryptRequest`), and
        /// [`Action::parameters`] lists the same type's fields, so what `kmsctl <Action> --help`
        /// shows is what the server reads.
        pub mod request {
            $(pub type $name = super::super::$req;)*
        }

        pub(super) fn probe(action: Action) -> super::parameters::Probed {
            match action {
                $(Action::$name => super::parameters::of::<request::$name>(stringify!($name)),)*
            }
        }
    };
    (@mutating write) => { true };
    (@mutating read) => { false };
    (@inline inline) => { true };
    (@inline pool) => { false };
}

actions! {
    AsymmetricDecrypt: read, pool, ["kms:AsymmetricDecrypt"], AsymmetricDecryptRequest;
    AsymmetricEncrypt: read, pool, ["kms:AsymmetricEncrypt"], AsymmetricEncryptRequest;
    AsymmetricSign: read, pool, ["kms:AsymmetricSign"], AsymmetricSignRequest;
    AsymmetricVerify: read, pool, ["kms:AsymmetricVerify"], AsymmetricVerifyRequest;
    BatchGetSecretValue: read, inline, ["kms:BatchGetSecretValue", "kms:Decrypt"], BatchGetSecretValueRequest;
    CancelKeyDeletion: write, pool, ["kms:CancelKeyDeletion"], KeyIdRequest;
    CreateAlias: write, pool, ["kms:CreateAlias"], AliasRequest;
    CreateKey: write, pool, ["kms:CreateKey"], CreateKeyRequest;
    CreateKeyVersion: write, pool, ["kms:CreateKeyVersion"], KeyIdRequest;
    CreateSecret: write, pool, ["kms:CreateSecret", "kms:GenerateDataKey"], CreateSecretRequest;
    Decrypt: read, inline, ["kms:Decrypt"], DecryptRequest;
    DeleteAlias: write, pool, ["kms:DeleteAlias"], DeleteAliasRequest;
    DeleteKeyMaterial: write, pool, ["kms:DeleteKeyMaterial"], KeyIdRequest;
    DeleteSecret: write, pool, ["kms:DeleteSecret"], DeleteSecretRequest;
    DescribeKey: read, inline, ["kms:DescribeKey"], KeyIdRequest;
    DescribeKeyVersion: read, inline, ["kms:DescribeKeyVersion"], DescribeKeyVersionRequest;
    DescribeRegions: read, inline, [], NoParameters;
    DescribeSecret: read, inline, ["kms:DescribeSecret"], DescribeSecretRequest;
    DisableKey: write, pool, ["kms:DisableKey"], KeyIdRequest;
    EnableKey: write, pool, ["kms:EnableKey"], KeyIdRequest;
    Encrypt: read, inline, ["kms:Encrypt"], EncryptRequest;
    ExportDataKey: read, pool, ["kms:ExportDataKey"], ExportDataKeyRequest;
    GenerateAndExportDataKey: read, pool, ["kms:GenerateAndExportDataKey"], GenerateAndExportDataKeyRequest;
    GenerateDataKey: read, inline, ["kms:GenerateDataKey"], GenerateDataKeyRequest;
    GenerateDataKeyWithoutPlaintext: read, inline, ["kms:GenerateDataKeyWithoutPlaintext"], GenerateDataKeyRequest;
    GetParametersForImport: write, pool, ["kms:GetParametersForImport"], GetParametersForImportRequest;
    GetPublicKey: read, pool, ["kms:GetPublicKey"], KeyVersionRequest;
    GetRandomPassword: read, inline, ["kms:GetRandomPassword"], GetRandomPasswordRequest;
    GrantServiceKeyUse: write, pool, ["kms:GrantServiceKeyUse"], ServiceKeyUseRequest;
    GetSecretValue: read, inline, ["kms:GetSecretValue", "kms:Decrypt"], GetSecretValueRequest;
    ImportKeyMaterial: write, pool, ["kms:ImportKeyMaterial"], ImportKeyMaterialRequest;
    ListAliases: read, inline, ["kms:ListAliases"], PageRequest;
    ListAliasesByKeyId: read, inline, ["kms:ListAliasesByKeyId"], KeyPageRequest;
    ListKeyVersions: read, inline, ["kms:ListKeyVersions"], KeyPageRequest;
    ListKeys: read, inline, ["kms:ListKeys"], ListKeysRequest;
    ListResourceTags: read, inline, ["kms:ListResourceTags"], KeyIdRequest;
    ListSecretVersionIds: read, inline, ["kms:ListSecretVersionIds"], ListSecretVersionIdsRequest;
    ListSecrets: read, inline, ["kms:ListSecrets"], ListSecretsRequest;
    ListTagResources: read, inline, ["kms:ListTagResources"], ListTagResourcesRequest;
    PutSecretValue: write, pool, ["kms:PutSecretValue", "kms:GenerateDataKey"], PutSecretValueRequest;
    ReEncrypt: read, inline, ["kms:ReEncryptFrom", "kms:ReEncryptTo"], ReEncryptRequest;
    RestoreSecret: write, pool, ["kms:RestoreSecret"], SecretNameRequest;
    RevokeServiceKeyUse: write, pool, ["kms:RevokeServiceKeyUse"], ServiceKeyUseRequest;
    ScheduleKeyDeletion: write, pool, ["kms:ScheduleKeyDeletion"], ScheduleKeyDeletionRequest;
    SetDeletionProtection: write, pool, ["kms:SetDeletionProtection"], SetDeletionProtectionRequest;
    TagResource: write, pool, ["kms:TagResource"], TagResourceRequest;
    TagResources: write, pool, ["kms:TagResources"], TagResourcesRequest;
    UntagResource: write, pool, ["kms:UntagResource"], UntagResourceRequest;
    UntagResources: write, pool, ["kms:UntagResources"], UntagResourcesRequest;
    UpdateAlias: write, pool, ["kms:UpdateAlias"], AliasRequest;
    UpdateKeyDescription: write, pool, ["kms:UpdateKeyDescription"], UpdateKeyDescriptionRequest;
    UpdateRotationPolicy: write, pool, ["kms:UpdateRotationPolicy"], UpdateRotationPolicyRequest;
    UpdateSecret: write, pool, ["kms:UpdateSecret"], UpdateSecretRequest;
    UpdateSecretVersionStage: write, pool, ["kms:UpdateSecretVersionStage"], UpdateSecretVersionStageRequest;
}

impl Action {
    /// The action an `Action` parameter names, exactly (the gateway is case-sensitive).
    pub fn parse(name: &str) -> Option<Action> {
        ACTIONS.iter().find(|s| s.name == name).map(|s| s.action)
    }

    pub fn spec(self) -> &'static ActionSpec {
        // The table is generated in enum order, so the discriminant is the index.
        &ACTIONS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn is_mutating(self) -> bool {
        self.spec().mutating
    }

    pub fn runs_inline(self) -> bool {
        self.spec().inline
    }

    /// The parameters the action reads, in the order of its request type, each with whether it
    /// is required and what it means.
    pub fn parameters(self) -> Vec<super::Parameter> {
        probe(self).parameters
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_the_enum_and_names_round_trip() {
        for (i, s) in ACTIONS.iter().enumerate() {
            assert_eq!(s.action as usize, i);
            assert_eq!(Action::parse(s.name), Some(s.action));
            assert_eq!(s.action.name(), s.name);
            assert!(s.permissions.iter().all(|p| p.starts_with("kms:")), "{}", s.name);
        }
        assert_eq!(Action::parse("encrypt"), None, "names are case-sensitive");
        assert_eq!(Action::parse(" Encrypt"), None);
    }
}
