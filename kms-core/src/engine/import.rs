//! BYOK: GetParametersForImport, ImportKeyMaterial, DeleteKeyMaterial, and the expiry of
//! imported material.
//!
//! A token binds a fresh wrapping key pair (RSA_2048 or EC_SM2) to one key for 24 hours and may be
//! used any number of times in that window. Imported material must have the key's length; once a
//! key has had material, only the same material is accepted again (checked by a keyed fingerprint,
//! so the store never holds the material unsealed). Deleting or expiring the material keeps the
//! version id, so re-importing the same material revives every ciphertext made under it.

use rand::RngCore;
use uuid::Uuid;

use super::authz::Access;
use super::state::KeyEntry;
use super::view::View;
use super::{Caller, Engine};
use crate::api::*;
use crate::clock::{format_iso, Timestamp, DAY};
use crate::crypto::asym::{AsymAlgorithm, AsymKey, PrivateKey};
use crate::crypto::seal::material_aad;
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{ImportTokenRecord, KeyRecord, KeySpec, KeyState, Origin, ProtectionLevel, VersionRecord};
use crate::store::Change;
use zeroize::Zeroizing;

pub const IMPORT_TOKEN_LIFETIME: i64 = DAY;

fn token_aad(token_id: &str, key_id: &str) -> Vec<u8> {
    let mut a = b"kms-core import wrapping key v1\0".to_vec();
    a.extend_from_slice(token_id.as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn require_external(k: &KeyRecord) -> Result<()> {
    if k.origin == Origin::External {
        Ok(())
    } else {
        Err(KmsError::with_detail(
            ErrorCode::UnsupportedOrigin,
            format_args!(
                "Key {} was made with Origin {}; only EXTERNAL keys take imported material.",
                k.key_id, k.origin
            ),
        ))
    }
}

fn wrapping_for_import(spec: &str, alg: &str) -> Result<(KeySpec, AsymAlgorithm)> {
    let s = KeySpec::parse(spec.trim())
        .filter(|s| matches!(s, KeySpec::Rsa2048 | KeySpec::EcSm2))
        .ok_or_else(|| KmsError::invalid("WrappingKeySpec", "use RSA_2048 or EC_SM2"))?;
    use AsymAlgorithm::*;
    match (s, AsymAlgorithm::parse(alg.trim())) {
        (KeySpec::Rsa2048, Some(a @ (RsaesOaepSha256 | RsaesOaepSha1 | RsaesPkcs1V15))) => Ok((s, a)),
        (KeySpec::EcSm2, Some(Sm2Pke)) => Ok((s, Sm2Pke)),
        _ => Err(KmsError::invalid(
            "WrappingAlgorithm",
            format_args!("{alg:?} does not go with {s}; RSA_2048 takes RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 or RSAES_PKCS1_V1_5, EC_SM2 takes SM2PKE"),
        )),
    }
}

impl Engine {
    pub fn get_parameters_for_import(
        &self,
        caller: &Caller,
        req: GetParametersForImportRequest,
    ) -> Result<GetParametersForImportResponse> {
        let (spec, alg) = wrapping_for_import(&req.wrapping_key_spec, &req.wrapping_algorithm)?;
        let (key_id, hsm) = {
            let st = self.view()?;
            let k = self.find_key(&st, Access::Check(caller, "kms:GetParametersForImport"), "KeyId", &req.key_id)?;
            require_external(&k)?;
            (k.key_id.clone(), k.protection == ProtectionLevel::Hsm)
        };
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let token_id = hex_encode(&id);
        // Key generation (tens of milliseconds for RSA) happens outside the writer lock.
        let (public_key, sealed, token_object) = if hsm {
            // The wrapping key of an HSM key lives in the token, so the material is unwrapped there.
            let (record, spki, label) = self.hsm_wrapping_key(&token_id, spec, alg)?;
            (spki, record, Some(label))
        } else {
            let (wrapping_key, der) = PrivateKey::generate(spec)?;
            (wrapping_key.public_der()?, self.protector.seal(&token_aad(&token_id, &key_id), &der)?, None)
        };
        let r = self.mutate(|st, now| {
            let k = self.find_key(st, Access::Check(caller, "kms:GetParametersForImport"), "KeyId", &req.key_id)?;
            require_external(&k)?;
            if k.key_id != key_id {
                return Err(KmsError::internal("the alias moved during GetParametersForImport; try again"));
            }
            let expires_at = now + IMPORT_TOKEN_LIFETIME;
            let token = ImportTokenRecord {
                token_id: token_id.clone(),
                key_id: k.key_id.clone(),
                wrapping_spec: spec,
                wrapping_algorithm: alg.as_str().to_string(),
                expires_at,
                sealed: sealed.clone(),
            };
            let resp = GetParametersForImportResponse {
                key_id: k.key_id.clone(),
                import_token: token_id.clone(),
                public_key: public_key.clone(),
                token_expire_time: format_iso(expires_at),
            };
            Ok((vec![Change::PutImportToken(token)], resp))
        });
        if let (Err(_), Some(label)) = (&r, &token_object) {
            self.destroy_token_objects(&key_id, std::slice::from_ref(label));
        }
        r
    }

    pub fn import_key_material(&self, caller: &Caller, req: ImportKeyMaterialRequest) -> Result<()> {
        if req.import_token.trim().is_empty() {
            return Err(KmsError::missing("ImportToken"));
        }
        if req.encrypted_key_material.is_empty() {
            return Err(KmsError::missing("EncryptedKeyMaterial"));
        }
        let now = self.now();
        let expire = match req.key_material_expire_unix.unwrap_or(0) {
            0 => None,
            t if t < 0 => {
                return Err(KmsError::invalid("KeyMaterialExpireUnix", "it must be 0 (never) or a Unix time"))
            }
            t if t <= now => return Err(KmsError::invalid("KeyMaterialExpireUnix", "it lies in the past")),
            t => Some(t),
        };
        // Unwrap outside the writer lock; everything is checked again under it.
        let (key_id, spec, token, hsm, version_id) = {
            let st = self.view()?;
            let k = self.find_key(&st, Access::Check(caller, "kms:ImportKeyMaterial"), "KeyId", &req.key_id)?;
            let token = check_token(&st, &k, &req.import_token, now)?;
            // An imported key has one version for life: its id survives deletion and re-import.
            let version_id =
                k.versions.first().map(|v| v.version_id.clone()).unwrap_or_else(|| Uuid::new_v4().to_string());
            (k.key_id.clone(), k.spec, token, k.protection == ProtectionLevel::Hsm, version_id)
        };
        let alg = AsymAlgorithm::parse(&token.wrapping_algorithm)
            .ok_or_else(|| KmsError::internal("import token with an unknown algorithm"))?;
        let (fingerprint, material) = if hsm {
            let (fingerprint, pending) =
                self.hsm_unwrap(&key_id, &version_id, &token, alg, &req.encrypted_key_material)?;
            (fingerprint, Imported::Token(pending))
        } else {
            let material = self.software_unwrap(&key_id, spec, &token, alg, &req.encrypted_key_material)?;
            (self.fingerprint(&key_id, &material), Imported::Plain(material))
        };
        let mut replaced = Vec::new();
        let r = self.mutate(|st, now| {
            // The key resolved before unwrapping, not the parameter again: an alias moved meanwhile
            // must not redirect the material.
            let k = self.find_key(st, Access::Check(caller, "kms:ImportKeyMaterial"), "KeyId", &key_id)?;
            check_token(st, &k, &req.import_token, now)?;
            if k.material_fingerprint.as_ref().is_some_and(|f| f != &fingerprint) {
                return Err(KmsError::with_detail(
                    ErrorCode::InvalidKeyMaterial,
                    format_args!(
                        "Key {} had other material before; only that material can be imported again.",
                        k.key_id
                    ),
                ));
            }
            if k.versions.first().is_some_and(|v| v.version_id != version_id) {
                return Err(KmsError::internal("the key changed during ImportKeyMaterial; try again"));
            }
            let created_at = k.version(&version_id).map_or(now, |v| v.created_at);
            let sealed = match &material {
                Imported::Plain(m) => self.protector.seal(&material_aad(&k.key_id, &version_id), m)?,
                Imported::Token(label) => {
                    replaced =
                        k.version(&version_id).and_then(|v| super::hsm::record_label(&v.sealed)).into_iter().collect();
                    super::hsm::aes_record(label)
                }
            };
            let mut k = k.key.clone();
            k.primary_version = Some(version_id.clone());
            k.last_rotation = created_at;
            k.material_expire = expire;
            k.material_fingerprint = Some(fingerprint.clone());
            match k.state {
                KeyState::PendingImport => k.state = KeyState::Enabled,
                KeyState::PendingDeletion if k.state_before_deletion == Some(KeyState::PendingImport) => {
                    k.state_before_deletion = Some(KeyState::Enabled)
                }
                _ => {}
            }
            let v = VersionRecord { version_id: version_id.clone(), key_id: k.key_id.clone(), created_at, sealed };
            tracing::info!(key_id = %k.key_id, "key material imported");
            Ok((vec![Change::PutVersion(v), Change::PutKey(k)], ()))
        });
        if let Imported::Token(label) = &material {
            // The store names exactly one object per version: drop the loser of the two.
            let gone = if r.is_ok() { replaced } else { vec![label.clone()] };
            self.destroy_token_objects(&key_id, &gone);
        }
        r
    }

    /// Unwraps with a software wrapping key (sealed in the import token) and checks the length.
    fn software_unwrap(
        &self,
        key_id: &str,
        spec: KeySpec,
        token: &ImportTokenRecord,
        alg: AsymAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let wrapping = self
            .protector
            .unseal(&token_aad(&token.token_id, key_id), &token.sealed)
            .map_err(|e| KmsError::internal(format_args!("import token of {key_id}: {e}")))?;
        let wrapping = PrivateKey::from_pkcs8(token.wrapping_spec, &wrapping)?;
        let material = wrapping.decrypt(alg, wrapped, "EncryptedKeyMaterial").map_err(|_| {
            KmsError::with_detail(
                ErrorCode::InvalidKeyMaterial,
                format_args!(
                    "EncryptedKeyMaterial does not unwrap with this token's {} key and {alg}.",
                    token.wrapping_spec
                ),
            )
        })?;
        let want = spec.material_len().unwrap_or(0);
        if material.len() != want {
            return Err(KmsError::with_detail(
                ErrorCode::InvalidKeyMaterial,
                format_args!("{spec} material is {want} bytes, not {}.", material.len()),
            ));
        }
        Ok(material)
    }

    pub fn delete_key_material(&self, caller: &Caller, key_id: &str) -> Result<()> {
        let mut shredded = (String::new(), Vec::new());
        self.mutate(|st, _| {
            let k = self.find_key(st, Access::Check(caller, "kms:DeleteKeyMaterial"), "KeyId", key_id)?;
            require_external(&k)?;
            shredded = (k.key_id.clone(), material_labels(&k));
            Ok((material_deletion(&k), ()))
        })?;
        self.destroy_token_objects(&shredded.0, &shredded.1);
        Ok(())
    }

    /// Deletes expired imported material of the `due` keys and forgets the `due_tokens` that
    /// expired.
    pub(crate) fn expire_imports(&self, due: Vec<String>, due_tokens: Vec<String>) -> (Vec<String>, usize) {
        let mut expired = Vec::new();
        for id in due {
            let mut labels = Vec::new();
            let r = self.mutate(|st, now| match st.key(&id)?.filter(|k| material_expired(k, now)) {
                Some(k) => {
                    labels = material_labels(&k);
                    Ok((material_deletion(&k), true))
                }
                None => Ok((Vec::new(), false)),
            });
            if let Ok(true) = r {
                self.destroy_token_objects(&id, &labels);
                tracing::info!(key_id = %id, "imported key material expired and was deleted");
                expired.push(id);
            }
        }
        let mut wrapping_keys = Vec::new();
        let purged = self
            .mutate(|st, now| {
                let mut old: Vec<ImportTokenRecord> = Vec::new();
                for id in &due_tokens {
                    old.extend(st.import_token(id)?.filter(|t| t.expires_at <= now));
                }
                wrapping_keys = old.iter().filter_map(|t| super::hsm::parse_pair(&t.sealed).map(|(l, _)| l)).collect();
                let n = old.len();
                Ok((old.into_iter().map(|t| Change::DeleteImportToken(t.token_id.clone())).collect(), n))
            })
            .unwrap_or(0);
        self.destroy_token_objects("expired import tokens", &wrapping_keys);
        (expired, purged)
    }
}

/// Imported material as it goes into the store: bytes to seal, or the label of the token object
/// it was unwrapped into.
enum Imported {
    Plain(Zeroizing<Vec<u8>>),
    Token(String),
}

/// The token objects holding a key's imported material (none for a software key).
fn material_labels(k: &KeyEntry) -> Vec<String> {
    if k.protection != ProtectionLevel::Hsm {
        return Vec::new();
    }
    k.versions.iter().filter_map(|v| super::hsm::record_label(&v.sealed)).collect()
}

fn material_expired(k: &KeyRecord, now: Timestamp) -> bool {
    k.origin == Origin::External && k.material_expire.is_some_and(|t| now >= t)
}

/// The changes that delete a key's imported material: every version keeps its id but loses its
/// sealed bytes; the key goes back to PendingImport (or will, if its deletion is cancelled).
fn material_deletion(k: &KeyEntry) -> Vec<Change> {
    let mut changes: Vec<Change> = k
        .versions
        .iter()
        .filter(|v| v.has_material())
        .map(|v| Change::PutVersion(VersionRecord { sealed: Vec::new(), ..v.clone() }))
        .collect();
    let mut k = k.key.clone();
    k.material_expire = None;
    if k.state == KeyState::PendingDeletion {
        k.state_before_deletion = Some(KeyState::PendingImport);
    } else {
        k.state = KeyState::PendingImport;
    }
    changes.push(Change::PutKey(k));
    changes
}

fn check_token(st: &View<'_>, k: &KeyRecord, token: &str, now: Timestamp) -> Result<ImportTokenRecord> {
    require_external(k)?;
    if k.state == KeyState::PendingDeletion {
        return Err(super::state_modify_failed(k, "material cannot be imported into a key pending deletion"));
    }
    let t = st.import_token(token.trim())?.ok_or_else(|| {
        KmsError::with_detail(ErrorCode::InvalidImportToken, "Get a token with GetParametersForImport.")
    })?;
    if t.key_id != k.key_id {
        return Err(KmsError::with_detail(
            ErrorCode::InvalidImportToken,
            format_args!("The token was issued for another key, not {}.", k.key_id),
        ));
    }
    if now >= t.expires_at {
        return Err(KmsError::with_detail(
            ErrorCode::ExpiredImportToken,
            format_args!("It expired at {}; get a new one with GetParametersForImport.", format_iso(t.expires_at)),
        ));
    }
    Ok(t)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
