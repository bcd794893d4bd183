//! Keys with ProtectionLevel HSM: which specs the configured token can hold (from its mechanism
//! list), new versions as token objects, and the reference records that stand for them in the
//! store (FORMAT.md §8) – never key bytes.

use std::sync::Arc;

use super::cache::Material;
use super::Engine;
use crate::crypto::token::{Token, TokenAesKey, TokenObject, AES_GCM_MECHANISMS};
use crate::crypto::token_asym::{mechanisms_for, TokenKeyPair};
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{KeyRecord, KeySpec, KeyUsage, Origin};
use cryptoki::object::ObjectClass;

/// `10` ‖ label: an AES key object.
const TOKEN_AES_V1: u8 = 0x10;
/// `11` ‖ u16 label length ‖ label ‖ SubjectPublicKeyInfo DER: a private-key object.
const TOKEN_PAIR_V1: u8 = 0x11;

/// The CKA_LABEL of the token object of a key version.
pub(super) fn token_label(version_id: &str) -> String {
    format!("kms-key-version:{version_id}")
}

fn unsupported(why: String) -> KmsError {
    KmsError::with_detail(ErrorCode::UnsupportedProtectionLevel, why)
}

impl Engine {
    fn require_token(&self) -> Result<&Arc<Token>> {
        self.token
            .as_ref()
            .ok_or_else(|| unsupported("ProtectionLevel HSM needs a PKCS#11 token; none is configured.".into()))
    }

    /// Refuses, naming what is missing, a key the token cannot hold.
    pub(super) fn check_hsm_spec(&self, spec: KeySpec, usage: KeyUsage, origin: Origin) -> Result<()> {
        let token = self.require_token()?;
        if origin == Origin::External {
            return Err(unsupported("Importing material into the HSM is not available; use Origin Aliyun_KMS.".into()));
        }
        let needed = match spec {
            KeySpec::Aes256 => AES_GCM_MECHANISMS,
            // PKCS#11 defines no SM2/SM4 mechanisms; only vendor extensions could offer them.
            KeySpec::Sm4 | KeySpec::EcSm2 => {
                return Err(unsupported(format!(
                    "Token {} lists no {} mechanisms (PKCS#11 defines none) for {spec}.",
                    token.label(),
                    if spec == KeySpec::Sm4 { "SM4" } else { "SM2" }
                )))
            }
            _ => mechanisms_for(spec, usage)
                .ok_or_else(|| unsupported(format!("{spec} {usage} is not offered in the HSM.")))?,
        };
        let missing = token.missing_mechanisms(needed)?;
        if !missing.is_empty() {
            return Err(unsupported(format!("Token {} lacks {} for {spec}.", token.label(), missing.join(", "))));
        }
        Ok(())
    }

    /// A new token object for a version of `key`, and the record that names it.
    pub(super) fn new_token_version(&self, key: &KeyRecord, version_id: &str) -> Result<Vec<u8>> {
        let token = self.require_token()?;
        let label = token_label(version_id);
        if key.spec.is_symmetric() {
            token.generate_aes_key(&label)?;
            return Ok([&[TOKEN_AES_V1][..], label.as_bytes()].concat());
        }
        let spki = token.generate_key_pair(key.spec, key.usage, &label)?;
        let len = u16::try_from(label.len()).map_err(KmsError::internal)?;
        Ok([&[TOKEN_PAIR_V1][..], &len.to_be_bytes(), label.as_bytes(), &spki].concat())
    }

    /// The token object a reference record names.
    pub(super) fn token_material(&self, key: &KeyRecord, version_id: &str, record: &[u8]) -> Result<Material> {
        let token = self.token.clone().ok_or_else(|| {
            unsupported(format!("Key {} is HSM-protected and no PKCS#11 token is configured.", key.key_id))
        })?;
        let bad = || KmsError::internal(format_args!("key {} version {version_id}: not a token reference", key.key_id));
        let missing = |label: &str| {
            KmsError::internal(format_args!(
                "key {} version {version_id}: object {label:?} is not in token {}",
                key.key_id,
                token.label()
            ))
        };
        let utf8 = |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| bad());
        match record.split_first() {
            Some((&TOKEN_AES_V1, label)) => {
                let label = utf8(label)?;
                let key = TokenObject::find(token.clone(), ObjectClass::SECRET_KEY, &label)?
                    .ok_or_else(|| missing(&label))?;
                Ok(Material::TokenAes(TokenAesKey(key)))
            }
            Some((&TOKEN_PAIR_V1, rest)) if rest.len() >= 2 => {
                let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let (label, spki) = rest[2..].split_at_checked(n).ok_or_else(bad)?;
                let label = utf8(label)?;
                let key = TokenObject::find(token.clone(), ObjectClass::PRIVATE_KEY, &label)?
                    .ok_or_else(|| missing(&label))?;
                Ok(Material::TokenAsym(TokenKeyPair::new(key, spki)?))
            }
            _ => Err(bad()),
        }
    }
}
