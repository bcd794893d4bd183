//! Keys with ProtectionLevel HSM: which specs the configured token can hold (from its mechanism
//! list), new versions as token objects, and the reference records that stand for them in the
//! store (FORMAT.md §8) – never key bytes.

use std::sync::Arc;

use super::cache::Material;
use super::Engine;
use crate::crypto::asym::AsymAlgorithm;
use crate::crypto::token::{Token, TokenAesKey, TokenObject, AES_GCM_MECHANISMS};
use crate::crypto::token_asym::{mechanisms_for, unwrap_aes256, PairUse, TokenKeyPair};
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{ImportTokenRecord, KeyRecord, KeySpec, KeyUsage, Origin};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::ObjectClass;
use uuid::Uuid;

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
        if origin == Origin::External && spec != KeySpec::Aes256 {
            return Err(unsupported(format!("Only Aliyun_AES_256 material can be imported into the HSM, not {spec}.")));
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
        let mut missing = token.missing_mechanisms(needed)?;
        if origin == Origin::External {
            // The wrapping key pair of GetParametersForImport is generated in the token too.
            missing.extend(
                token.missing_mechanisms(&[(MechanismType::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN")])?,
            );
        }
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
            return Ok(aes_record(&label));
        }
        let spki = token.generate_key_pair(key.spec, PairUse::for_usage(key.usage), &label)?;
        pair_record(&label, &spki)
    }

    /// A BYOK wrapping key pair generated in the token for import token `token_id`: its record,
    /// its public key and its label.
    pub(super) fn hsm_wrapping_key(
        &self,
        token_id: &str,
        spec: KeySpec,
        alg: AsymAlgorithm,
    ) -> Result<(Vec<u8>, Vec<u8>, String)> {
        let token = self.require_token()?;
        if spec != KeySpec::Rsa2048 {
            return Err(unsupported(format!("HSM keys import under an RSA_2048 wrapping key, not {spec}.")));
        }
        let mechanism = match alg {
            AsymAlgorithm::RsaesPkcs1V15 => (MechanismType::RSA_PKCS, "CKM_RSA_PKCS"),
            _ => (MechanismType::RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP"),
        };
        let missing = token.missing_mechanisms(&[mechanism])?;
        if !missing.is_empty() {
            return Err(unsupported(format!("Token {} lacks {} for {alg}.", token.label(), missing.join(", "))));
        }
        let label = format!("kms-import:{token_id}");
        let spki = token.generate_key_pair(spec, PairUse::Unwrap, &label)?;
        Ok((pair_record(&label, &spki)?, spki, label))
    }

    /// Unwraps imported material into a new token object (under a label of its own, so that an
    /// import that loses the race or fails its checks leaves the current object untouched).
    /// Returns the fingerprint of the material – of its check value, computed in the token – and
    /// the new object's label.
    pub(super) fn hsm_unwrap(
        &self,
        key_id: &str,
        version_id: &str,
        import: &ImportTokenRecord,
        alg: AsymAlgorithm,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, String)> {
        let token = self.require_token()?;
        let (wrapping_label, _) = parse_pair(&import.sealed)
            .ok_or_else(|| KmsError::internal(format_args!("import token of {key_id} has no token wrapping key")))?;
        let wrapping =
            TokenObject::find(token.clone(), ObjectClass::PRIVATE_KEY, &wrapping_label)?.ok_or_else(|| {
                KmsError::with_detail(
                    ErrorCode::InvalidImportToken,
                    "Its wrapping key is no longer in the token; get a new one with GetParametersForImport.",
                )
            })?;
        let suffix = Uuid::new_v4().simple().to_string();
        let label = format!("{}#{}", token_label(version_id), &suffix[..12]);
        let (_, check) = unwrap_aes256(&wrapping, alg, wrapped, &label)?;
        Ok((self.fingerprint(key_id, &check), label))
    }

    /// Destroys token objects the store no longer names (crypto-shredding); a failure is logged,
    /// as the store is already committed and an orphan object decrypts nothing anyone holds.
    pub(super) fn destroy_token_objects(&self, owner: &str, labels: &[String]) {
        let Some(token) = &self.token else { return };
        for label in labels {
            if let Err(e) = token.destroy(label) {
                tracing::warn!(owner, label, error = %e, "token object not destroyed");
            }
        }
    }

    /// The token object a reference record names.
    pub(super) fn token_material(&self, key: &KeyRecord, version_id: &str, record: &[u8]) -> Result<Material> {
        let token = self.token.clone().ok_or_else(|| unsupported(format!("{}.", no_token(&key.key_id))))?;
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
            Some((&TOKEN_PAIR_V1, _)) => {
                let (label, spki) = parse_pair(record).ok_or_else(bad)?;
                let key = TokenObject::find(token.clone(), ObjectClass::PRIVATE_KEY, &label)?
                    .ok_or_else(|| missing(&label))?;
                Ok(Material::TokenAsym(TokenKeyPair::new(key, spki)?))
            }
            _ => Err(bad()),
        }
    }
}

/// `11` ‖ u16 label length ‖ label ‖ SubjectPublicKeyInfo.
pub(super) fn pair_record(label: &str, spki: &[u8]) -> Result<Vec<u8>> {
    let len = u16::try_from(label.len()).map_err(KmsError::internal)?;
    Ok([&[TOKEN_PAIR_V1][..], &len.to_be_bytes(), label.as_bytes(), spki].concat())
}

pub(super) fn aes_record(label: &str) -> Vec<u8> {
    [&[TOKEN_AES_V1][..], label.as_bytes()].concat()
}

/// The label and public key of a key-pair record.
pub(super) fn parse_pair(record: &[u8]) -> Option<(String, &[u8])> {
    match record {
        [TOKEN_PAIR_V1, a, b, rest @ ..] => {
            let (label, spki) = rest.split_at_checked(u16::from_be_bytes([*a, *b]) as usize)?;
            Some((std::str::from_utf8(label).ok()?.to_owned(), spki))
        }
        _ => None,
    }
}

/// The token object label a reference record names, if it is one.
pub(super) fn record_label(record: &[u8]) -> Option<String> {
    match record.split_first() {
        Some((&TOKEN_AES_V1, label)) => std::str::from_utf8(label).ok().map(str::to_owned),
        Some((&TOKEN_PAIR_V1, _)) => parse_pair(record).map(|(l, _)| l),
        _ => None,
    }
}

/// Why a key cannot be used (or a store not opened) without the token.
pub(super) fn no_token(key_id: &str) -> String {
    format!("Key {key_id} is HSM-protected and no PKCS#11 token is configured")
}
