//! Asymmetric keys: GetPublicKey, AsymmetricSign / AsymmetricVerify / AsymmetricEncrypt /
//! AsymmetricDecrypt (every call names its KeyVersionId), and data-key export under a caller's
//! public key (ExportDataKey, GenerateAndExportDataKey). Private keys never leave the engine.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::authz::Access;
use super::cache::Material;
use super::{dry_run_error, require_enabled, Caller, Engine};
use crate::api::*;
use crate::crypto::asym::{check_algorithm, encrypt_to_public, max_plaintext, AsymAlgorithm, AsymKey, DIGEST_LEN};
use crate::error::{KmsError, Result};
use crate::model::{KeySpec, KeyUsage};

/// An unsealed version of an asymmetric key, with what the algorithm checks need.
struct AsymVersion {
    key_id: String,
    version_id: String,
    spec: KeySpec,
    usage: KeyUsage,
    material: Arc<Material>,
}

impl AsymVersion {
    fn key(&self) -> &dyn AsymKey {
        match &*self.material {
            Material::Asym(k) => k,
            Material::TokenAsym(k) => k,
            Material::Sym(_) | Material::TokenAes(_) => unreachable!("checked to be asymmetric"),
        }
    }
}

impl Engine {
    fn asym_version(&self, access: Access<'_>, param: &str, key_id: &str, version_id: &str) -> Result<AsymVersion> {
        if version_id.trim().is_empty() {
            return Err(KmsError::missing("KeyVersionId"));
        }
        let now = self.now();
        self.with_key(access, param, key_id, |_, k| {
            if k.spec.is_symmetric() {
                return Err(KmsError::unsupported(format_args!(
                    "key {} is a symmetric {} key; use Encrypt, Decrypt or GenerateDataKey",
                    k.key_id, k.spec
                )));
            }
            require_enabled(k, now)?;
            let v = k.version(version_id).ok_or_else(|| KmsError::version_not_found(&k.key_id, version_id))?;
            Ok(AsymVersion {
                key_id: k.key_id.clone(),
                version_id: v.version_id.clone(),
                spec: k.spec,
                usage: k.usage,
                material: self.material(k, &v.version_id, &v.sealed)?,
            })
        })
    }

    pub fn get_public_key(&self, caller: &Caller, req: KeyVersionRequest) -> Result<GetPublicKeyResponse> {
        let v =
            self.asym_version(Access::Check(caller, "kms:GetPublicKey"), "KeyId", &req.key_id, &req.key_version_id)?;
        Ok(GetPublicKeyResponse { public_key: v.key().public_pem()?, key_id: v.key_id, key_version_id: v.version_id })
    }

    pub fn asymmetric_sign(&self, caller: &Caller, req: AsymmetricSignRequest) -> Result<AsymmetricSignResponse> {
        check_digest(&req.digest)?;
        let v =
            self.asym_version(Access::Check(caller, "kms:AsymmetricSign"), "KeyId", &req.key_id, &req.key_version_id)?;
        let alg = check_algorithm(v.spec, v.usage, &req.algorithm, true)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let value = v.key().sign(alg, &req.digest)?;
        Ok(AsymmetricSignResponse { key_id: v.key_id, key_version_id: v.version_id, value })
    }

    /// A signature that does not verify is `Value: false`, not an error.
    pub fn asymmetric_verify(&self, caller: &Caller, req: AsymmetricVerifyRequest) -> Result<AsymmetricVerifyResponse> {
        check_digest(&req.digest)?;
        if req.value.is_empty() {
            return Err(KmsError::missing("Value"));
        }
        let v = self.asym_version(
            Access::Check(caller, "kms:AsymmetricVerify"),
            "KeyId",
            &req.key_id,
            &req.key_version_id,
        )?;
        let alg = check_algorithm(v.spec, v.usage, &req.algorithm, true)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let value = v.key().verify(alg, &req.digest, &req.value)?;
        Ok(AsymmetricVerifyResponse { key_id: v.key_id, key_version_id: v.version_id, value })
    }

    pub fn asymmetric_encrypt(
        &self,
        caller: &Caller,
        req: AsymmetricEncryptRequest,
    ) -> Result<AsymmetricEncryptResponse> {
        let v = self.asym_version(
            Access::Check(caller, "kms:AsymmetricEncrypt"),
            "KeyId",
            &req.key_id,
            &req.key_version_id,
        )?;
        let alg = check_algorithm(v.spec, v.usage, &req.algorithm, false)?;
        check_plaintext("Plaintext", v.spec, alg, req.plaintext.len())?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let ciphertext_blob = v.key().encrypt(alg, req.plaintext.expose())?;
        Ok(AsymmetricEncryptResponse { key_id: v.key_id, key_version_id: v.version_id, ciphertext_blob })
    }

    pub fn asymmetric_decrypt(
        &self,
        caller: &Caller,
        req: AsymmetricDecryptRequest,
    ) -> Result<AsymmetricDecryptResponse> {
        if req.ciphertext_blob.is_empty() {
            return Err(KmsError::missing("CiphertextBlob"));
        }
        let v = self.asym_version(
            Access::Check(caller, "kms:AsymmetricDecrypt"),
            "KeyId",
            &req.key_id,
            &req.key_version_id,
        )?;
        let alg = check_algorithm(v.spec, v.usage, &req.algorithm, false)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let pt = v.key().decrypt(alg, &req.ciphertext_blob, "CiphertextBlob")?;
        Ok(AsymmetricDecryptResponse {
            key_id: v.key_id,
            key_version_id: v.version_id,
            plaintext: SecretBytes::new(pt.to_vec()),
        })
    }

    /// Decrypts a raw asymmetric ciphertext (the source side of ReEncrypt), authorised for
    /// `access` on the key that decrypts it.
    pub(crate) fn asym_decrypt_raw(
        &self,
        access: Access<'_>,
        key_id: &str,
        version_id: &str,
        alg: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let v = self.asym_version(access, "SourceKeyId", key_id, version_id)?;
        let alg =
            check_algorithm(v.spec, v.usage, alg, false).map_err(|e| rename_param(e, "SourceEncryptionAlgorithm"))?;
        v.key().decrypt(alg, ciphertext, "CiphertextBlob")
    }

    pub fn export_data_key(&self, caller: &Caller, req: ExportDataKeyRequest) -> Result<ExportDataKeyResponse> {
        let (spec, alg) = wrapping(&req.wrapping_key_spec, &req.wrapping_algorithm)?;
        if req.public_key_blob.is_empty() {
            return Err(KmsError::missing("PublicKeyBlob"));
        }
        let ctx = self.context("EncryptionContext", req.encryption_context.as_deref())?;
        let (key_id, version, data_key) =
            self.open_blob(Access::Check(caller, "kms:ExportDataKey"), &req.ciphertext_blob, &ctx)?;
        check_plaintext("CiphertextBlob", spec, alg, data_key.len())?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let exported_data_key = encrypt_to_public(spec, &req.public_key_blob, alg, &data_key)?;
        Ok(ExportDataKeyResponse { key_id, key_version_id: version.to_string(), exported_data_key })
    }

    pub fn generate_and_export_data_key(
        &self,
        caller: &Caller,
        req: GenerateAndExportDataKeyRequest,
    ) -> Result<GenerateAndExportDataKeyResponse> {
        let (spec, alg) = wrapping(&req.wrapping_key_spec, &req.wrapping_algorithm)?;
        if req.public_key_blob.is_empty() {
            return Err(KmsError::missing("PublicKeyBlob"));
        }
        // Refuse a bad public key before a data key exists.
        encrypt_to_public(spec, &req.public_key_blob, alg, b"probe")?;
        let (data_key, r) = self.new_data_key(
            Access::Check(caller, "kms:GenerateAndExportDataKey"),
            GenerateDataKeyRequest {
                key_id: req.key_id,
                key_spec: req.key_spec,
                number_of_bytes: req.number_of_bytes,
                encryption_context: req.encryption_context,
                dry_run: req.dry_run,
            },
        )?;
        check_plaintext("NumberOfBytes", spec, alg, data_key.len())?;
        let exported_data_key = encrypt_to_public(spec, &req.public_key_blob, alg, &data_key)?;
        Ok(GenerateAndExportDataKeyResponse {
            key_id: r.key_id,
            key_version_id: r.key_version_id,
            ciphertext_blob: r.ciphertext_blob,
            exported_data_key,
        })
    }
}

fn check_digest(digest: &[u8]) -> Result<()> {
    match digest.len() {
        0 => Err(KmsError::missing("Digest")),
        DIGEST_LEN => Ok(()),
        n => Err(KmsError::invalid(
            "Digest",
            format_args!("it is {n} bytes; SHA-256 and SM3 digests are {DIGEST_LEN} bytes (base64 of the raw digest)"),
        )),
    }
}

fn check_plaintext(param: &str, spec: KeySpec, alg: AsymAlgorithm, len: usize) -> Result<()> {
    let max = max_plaintext(spec, alg);
    if len == 0 {
        return Err(KmsError::missing(param));
    }
    if len > max {
        return Err(KmsError::invalid(param, format_args!("{alg} under {spec} takes at most {max} bytes, not {len}")));
    }
    Ok(())
}

/// The public-key wrapping a caller may ask for: RSA_2048 with OAEP, or EC_SM2 with SM2PKE.
fn wrapping(spec: &str, alg: &str) -> Result<(KeySpec, AsymAlgorithm)> {
    let s = KeySpec::parse(spec.trim())
        .filter(|s| matches!(s, KeySpec::Rsa2048 | KeySpec::EcSm2))
        .ok_or_else(|| KmsError::invalid("WrappingKeySpec", "use RSA_2048 or EC_SM2"))?;
    let a = AsymAlgorithm::parse(alg.trim());
    match (s, a) {
        (KeySpec::Rsa2048, Some(a @ (AsymAlgorithm::RsaesOaepSha256 | AsymAlgorithm::RsaesOaepSha1))) => Ok((s, a)),
        (KeySpec::EcSm2, Some(AsymAlgorithm::Sm2Pke)) => Ok((s, AsymAlgorithm::Sm2Pke)),
        _ => Err(KmsError::invalid(
            "WrappingAlgorithm",
            format_args!("{alg:?} does not go with {s}; use RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1 for RSA_2048, SM2PKE for EC_SM2"),
        )),
    }
}

fn rename_param(e: KmsError, param: &str) -> KmsError {
    if e.code() == crate::ErrorCode::InvalidParameter {
        KmsError::invalid(param, e.message().split_once(": ").map(|x| x.1).unwrap_or(e.message()))
    } else {
        e
    }
}
