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
    ($($name:ident: $kind:ident, $run:ident, [$($perm:literal),*];)*) => {
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
    };
    (@mutating write) => { true };
    (@mutating read) => { false };
    (@inline inline) => { true };
    (@inline pool) => { false };
}

actions! {
    AsymmetricDecrypt: read, pool, ["kms:AsymmetricDecrypt"];
    AsymmetricEncrypt: read, pool, ["kms:AsymmetricEncrypt"];
    AsymmetricSign: read, pool, ["kms:AsymmetricSign"];
    AsymmetricVerify: read, pool, ["kms:AsymmetricVerify"];
    BatchGetSecretValue: read, inline, ["kms:BatchGetSecretValue", "kms:Decrypt"];
    CancelKeyDeletion: write, pool, ["kms:CancelKeyDeletion"];
    CreateAlias: write, pool, ["kms:CreateAlias"];
    CreateKey: write, pool, ["kms:CreateKey"];
    CreateKeyVersion: write, pool, ["kms:CreateKeyVersion"];
    CreateSecret: write, pool, ["kms:CreateSecret", "kms:GenerateDataKey"];
    Decrypt: read, inline, ["kms:Decrypt"];
    DeleteAlias: write, pool, ["kms:DeleteAlias"];
    DeleteKeyMaterial: write, pool, ["kms:DeleteKeyMaterial"];
    DeleteSecret: write, pool, ["kms:DeleteSecret"];
    DescribeKey: read, inline, ["kms:DescribeKey"];
    DescribeKeyVersion: read, inline, ["kms:DescribeKeyVersion"];
    DescribeRegions: read, inline, [];
    DescribeSecret: read, inline, ["kms:DescribeSecret"];
    DisableKey: write, pool, ["kms:DisableKey"];
    EnableKey: write, pool, ["kms:EnableKey"];
    Encrypt: read, inline, ["kms:Encrypt"];
    ExportDataKey: read, pool, ["kms:ExportDataKey"];
    GenerateAndExportDataKey: read, pool, ["kms:GenerateAndExportDataKey"];
    GenerateDataKey: read, inline, ["kms:GenerateDataKey"];
    GenerateDataKeyWithoutPlaintext: read, inline, ["kms:GenerateDataKeyWithoutPlaintext"];
    GetParametersForImport: write, pool, ["kms:GetParametersForImport"];
    GetPublicKey: read, pool, ["kms:GetPublicKey"];
    GetRandomPassword: read, inline, ["kms:GetRandomPassword"];
    GrantServiceKeyUse: write, pool, ["kms:GrantServiceKeyUse"];
    GetSecretValue: read, inline, ["kms:GetSecretValue", "kms:Decrypt"];
    ImportKeyMaterial: write, pool, ["kms:ImportKeyMaterial"];
    ListAliases: read, inline, ["kms:ListAliases"];
    ListAliasesByKeyId: read, inline, ["kms:ListAliasesByKeyId"];
    ListKeyVersions: read, inline, ["kms:ListKeyVersions"];
    ListKeys: read, inline, ["kms:ListKeys"];
    ListResourceTags: read, inline, ["kms:ListResourceTags"];
    ListSecretVersionIds: read, inline, ["kms:ListSecretVersionIds"];
    ListSecrets: read, inline, ["kms:ListSecrets"];
    ListTagResources: read, inline, ["kms:ListTagResources"];
    PutSecretValue: write, pool, ["kms:PutSecretValue", "kms:GenerateDataKey"];
    ReEncrypt: read, inline, ["kms:ReEncryptFrom", "kms:ReEncryptTo"];
    RestoreSecret: write, pool, ["kms:RestoreSecret"];
    RevokeServiceKeyUse: write, pool, ["kms:RevokeServiceKeyUse"];
    ScheduleKeyDeletion: write, pool, ["kms:ScheduleKeyDeletion"];
    SetDeletionProtection: write, pool, ["kms:SetDeletionProtection"];
    TagResource: write, pool, ["kms:TagResource"];
    TagResources: write, pool, ["kms:TagResources"];
    UntagResource: write, pool, ["kms:UntagResource"];
    UntagResources: write, pool, ["kms:UntagResources"];
    UpdateAlias: write, pool, ["kms:UpdateAlias"];
    UpdateKeyDescription: write, pool, ["kms:UpdateKeyDescription"];
    UpdateRotationPolicy: write, pool, ["kms:UpdateRotationPolicy"];
    UpdateSecret: write, pool, ["kms:UpdateSecret"];
    UpdateSecretVersionStage: write, pool, ["kms:UpdateSecretVersionStage"];
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
