//! Domain enums with their exact wire spellings (`docs/ALIBABA-KMS-API.md` §4), and the key record the engine keeps.

use crate::clock::Timestamp;

/// Declares an enum whose variants map one-to-one onto case-sensitive wire strings.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Exact, case-sensitive parse of the wire spelling.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn choices() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| serde::de::Error::custom(
                    format!("unknown {} {:?}", stringify!($name), s)))
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(
    /// Key specifications: symmetric (AES-256-GCM, SM4-GCM) and asymmetric (RSA, EC, SM2).
    KeySpec {
        Aes256 => "Aliyun_AES_256",
        Sm4 => "Aliyun_SM4",
        Rsa2048 => "RSA_2048",
        Rsa3072 => "RSA_3072",
        EcP256 => "EC_P256",
        EcP256K => "EC_P256K",
        EcSm2 => "EC_SM2",
    }
);

impl KeySpec {
    pub fn is_symmetric(self) -> bool {
        matches!(self, KeySpec::Aes256 | KeySpec::Sm4)
    }

    /// Bytes of key material for a symmetric spec.
    pub fn material_len(self) -> Option<usize> {
        match self {
            KeySpec::Aes256 => Some(32),
            KeySpec::Sm4 => Some(16),
            _ => None,
        }
    }

    /// The usage a key gets when CreateKey names none: SIGN/VERIFY where the spec can sign
    /// (`docs/ALIBABA-KMS-API.md` §4).
    pub fn default_usage(self) -> KeyUsage {
        if self.is_symmetric() {
            KeyUsage::EncryptDecrypt
        } else {
            KeyUsage::SignVerify
        }
    }

    pub fn allows_usage(self, usage: KeyUsage) -> bool {
        match self {
            KeySpec::Aes256 | KeySpec::Sm4 => usage == KeyUsage::EncryptDecrypt,
            KeySpec::EcP256 | KeySpec::EcP256K => usage == KeyUsage::SignVerify,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::EcSm2 => true,
        }
    }
}

wire_enum!(KeyUsage {
    EncryptDecrypt => "ENCRYPT/DECRYPT",
    SignVerify => "SIGN/VERIFY",
});

wire_enum!(KeyState {
    Enabled => "Enabled",
    Disabled => "Disabled",
    PendingDeletion => "PendingDeletion",
    PendingImport => "PendingImport",
});

wire_enum!(Origin {
    AliyunKms => "Aliyun_KMS",
    External => "EXTERNAL",
});

wire_enum!(ProtectionLevel {
    Software => "SOFTWARE",
    Hsm => "HSM",
});

wire_enum!(AutomaticRotation {
    Enabled => "Enabled",
    Disabled => "Disabled",
    Suspended => "Suspended",
});

wire_enum!(DataKeySpec {
    Aes256 => "AES_256",
    Aes128 => "AES_128",
});

impl DataKeySpec {
    pub fn byte_len(self) -> usize {
        match self {
            DataKeySpec::Aes256 => 32,
            DataKeySpec::Aes128 => 16,
        }
    }
}

/// Everything the engine knows about a CMK, as persisted. The API view is
/// [`crate::api::KeyMetadata`], derived from this and the clock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    pub key_id: String,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub origin: Origin,
    pub protection: ProtectionLevel,
    pub creator: String,
    pub description: String,
    pub state: KeyState,
    /// The state to return to when a scheduled deletion is cancelled.
    pub state_before_deletion: Option<KeyState>,
    pub created_at: Timestamp,
    /// Empty until the key has material (external keys before import).
    pub primary_version: Option<String>,
    /// Creation time of the primary version: the last rotation.
    pub last_rotation: Timestamp,
    pub rotation_enabled: bool,
    /// Seconds; present whenever rotation has ever been configured.
    pub rotation_interval: Option<i64>,
    pub delete_date: Option<Timestamp>,
    pub deletion_protection: bool,
    pub deletion_protection_description: String,
    pub material_expire: Option<Timestamp>,
    /// Set for service keys (`acs/<service>`): the lower-case service name.
    pub service: Option<String>,
    /// For imported material: a keyed fingerprint (HMAC) of it, so that only the same material
    /// can be imported again. Never the material itself.
    #[serde(with = "crate::store::codec::opt_bytes")]
    pub material_fingerprint: Option<Vec<u8>>,
}

impl KeyRecord {
    pub fn automatic_rotation(&self) -> AutomaticRotation {
        match (self.rotation_enabled, self.state) {
            (false, _) => AutomaticRotation::Disabled,
            (true, KeyState::Enabled) => AutomaticRotation::Enabled,
            (true, _) => AutomaticRotation::Suspended,
        }
    }

    /// When the next automatic rotation is due, if rotation is on.
    pub fn next_rotation(&self) -> Option<Timestamp> {
        match (self.rotation_enabled, self.rotation_interval) {
            (true, Some(i)) => Some(self.last_rotation + i),
            _ => None,
        }
    }
}

/// A token from GetParametersForImport: a wrapping key pair bound to one key until it expires.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportTokenRecord {
    pub token_id: String,
    pub key_id: String,
    pub wrapping_spec: KeySpec,
    pub wrapping_algorithm: String,
    pub expires_at: Timestamp,
    /// The wrapping private key (PKCS#8), sealed under the root key.
    #[serde(with = "crate::store::codec::bytes")]
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for ImportTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportTokenRecord")
            .field("key_id", &self.key_id)
            .field("wrapping_spec", &self.wrapping_spec)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// One version of a key's material, sealed under the root key. An empty `sealed` means the
/// material was deleted (DeleteKeyMaterial or expiry of imported material); the version id stays
/// so that re-importing the same material revives its ciphertexts.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionRecord {
    pub version_id: String,
    pub key_id: String,
    pub created_at: Timestamp,
    #[serde(with = "crate::store::codec::bytes")]
    pub sealed: Vec<u8>,
}

impl VersionRecord {
    pub fn has_material(&self) -> bool {
        !self.sealed.is_empty()
    }
}

impl std::fmt::Debug for VersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRecord")
            .field("version_id", &self.version_id)
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AliasRecord {
    /// With the `alias/` prefix.
    pub name: String,
    pub key_id: String,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spellings_round_trip_and_are_case_sensitive() {
        for s in KeySpec::ALL {
            assert_eq!(KeySpec::parse(s.as_str()), Some(*s));
        }
        assert_eq!(KeyUsage::parse("ENCRYPT/DECRYPT"), Some(KeyUsage::EncryptDecrypt));
        assert_eq!(KeyUsage::parse("encrypt/decrypt"), None);
        assert_eq!(Origin::parse("Aliyun_KMS"), Some(Origin::AliyunKms));
        assert_eq!(Origin::parse("aliyun_kms"), None);
        assert_eq!(serde_json::to_string(&KeyState::PendingDeletion).unwrap(), "\"PendingDeletion\"");
    }

    #[test]
    fn default_usage_follows_the_spec() {
        assert_eq!(KeySpec::Aes256.default_usage(), KeyUsage::EncryptDecrypt);
        assert_eq!(KeySpec::EcP256.default_usage(), KeyUsage::SignVerify);
        assert!(!KeySpec::Sm4.allows_usage(KeyUsage::SignVerify));
    }
}

/// A secret (Secrets Manager): its metadata; values live in [`SecretVersionRecord`]s.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretRecord {
    pub name: String,
    pub secret_type: String,
    pub description: String,
    /// The CMK that protects the values (the account's secrets service key when none was named).
    pub encryption_key_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Set while the secret waits in its recovery window.
    pub planned_delete: Option<Timestamp>,
    /// JSON text, or empty.
    pub extended_config: String,
}

/// One version of a secret's value, envelope-encrypted (FORMAT.md §7).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecretVersionRecord {
    pub secret_name: String,
    pub version_id: String,
    pub created_at: Timestamp,
    /// `text` or `binary`.
    pub data_type: String,
    /// Version stages (`ACSCurrent`, `ACSPrevious`, custom); none means deprecated.
    pub stages: Vec<String>,
    #[serde(with = "crate::store::codec::bytes")]
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SecretVersionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersionRecord")
            .field("secret_name", &self.secret_name)
            .field("version_id", &self.version_id)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

/// What a tag is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    Key,
    Secret,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Key => "key",
            ResourceType::Secret => "secret",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "key" => Some(ResourceType::Key),
            "secret" => Some(ResourceType::Secret),
            _ => None,
        }
    }
}
