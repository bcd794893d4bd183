//! Envelope encryption: Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
//! GenerateDataKeyWithoutPlaintext; and DescribeRegions.
//!
//! This is the hot path: a cache hit for the key, a cache hit for the unsealed version, one AEAD
//! call. Nothing here writes to the store.

use std::sync::Arc;

use rand::RngCore;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::authz::{Access, Resource};
use super::cache::Material;
use super::{dry_run_error, require_enabled, state_error, Caller, Engine};
use crate::api::{
    DecryptRequest, DecryptResponse, DescribeRegionsResponse, EncryptRequest, EncryptResponse, GenerateDataKeyRequest,
    GenerateDataKeyResponse, ReEncryptRequest, Region, RegionList, SecretBytes,
};
use crate::context::EncryptionContext;
use crate::crypto::aead::BlobAead;
use crate::crypto::{blob, Algorithm};
use crate::error::{KmsError, Result};
use crate::ids::key_arn;
use crate::model::{DataKeySpec, KeyRecord, KeyUsage};

/// A key's primary version, ready to encrypt.
pub(crate) struct Target {
    key_id: String,
    version: Uuid,
    material: Arc<Material>,
}

impl Target {
    fn cipher(&self) -> &dyn BlobAead {
        self.material.blob_aead().expect("targets are checked to be symmetric")
    }
}

impl Engine {
    pub fn encrypt(&self, caller: &Caller, req: EncryptRequest) -> Result<EncryptResponse> {
        let max = self.config.limits.max_plaintext_bytes;
        if req.plaintext.is_empty() {
            return Err(KmsError::invalid("Plaintext", "it must not be empty"));
        }
        if req.plaintext.len() > max {
            return Err(KmsError::invalid(
                "Plaintext",
                format_args!("it is longer than {max} bytes (after base64 decoding)"),
            ));
        }
        let ctx = self.context("EncryptionContext", req.encryption_context.as_deref())?;
        let t = self.target(Access::Check(caller, "kms:Encrypt"), "KeyId", &req.key_id)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        self.seal(&t, &ctx, req.plaintext.expose())
    }

    pub fn decrypt(&self, caller: &Caller, req: DecryptRequest) -> Result<DecryptResponse> {
        let ctx = self.context("EncryptionContext", req.encryption_context.as_deref())?;
        let (key_id, version, plaintext) =
            self.open_blob(Access::Check(caller, "kms:Decrypt"), &req.ciphertext_blob, &ctx)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        Ok(DecryptResponse {
            key_id,
            key_version_id: version.to_string(),
            plaintext: SecretBytes::new(plaintext.to_vec()),
        })
    }

    /// ReEncrypt: the source is a symmetric blob, or (with `SourceEncryptionAlgorithm`) a raw
    /// asymmetric ciphertext under `SourceKeyId`/`SourceKeyVersionId`. `kms:ReEncryptFrom` is
    /// checked on the key that actually decrypts – the one the blob's header names, or the
    /// asymmetric source key – never on a parameter the decryption does not use.
    pub fn re_encrypt(&self, caller: &Caller, req: ReEncryptRequest) -> Result<EncryptResponse> {
        let src_ctx = self.context("SourceEncryptionContext", req.source_encryption_context.as_deref())?;
        let dst_ctx = self.context("DestinationEncryptionContext", req.destination_encryption_context.as_deref())?;
        let from = Access::Check(caller, "kms:ReEncryptFrom");
        let plaintext = match req.source_encryption_algorithm.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(alg) => {
                let key = req.source_key_id.as_deref().ok_or_else(|| KmsError::missing("SourceKeyId"))?;
                let version =
                    req.source_key_version_id.as_deref().ok_or_else(|| KmsError::missing("SourceKeyVersionId"))?;
                if req.ciphertext_blob.is_empty() {
                    return Err(KmsError::missing("CiphertextBlob"));
                }
                self.asym_decrypt_raw(from, key, version, alg, &req.ciphertext_blob)?
            }
            None => self.open_blob(from, &req.ciphertext_blob, &src_ctx)?.2,
        };
        let t = self.target(Access::Check(caller, "kms:ReEncryptTo"), "DestinationKeyId", &req.destination_key_id)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        self.seal(&t, &dst_ctx, &plaintext)
    }

    pub fn generate_data_key(&self, caller: &Caller, req: GenerateDataKeyRequest) -> Result<GenerateDataKeyResponse> {
        let (data_key, r) = self.new_data_key(Access::Check(caller, "kms:GenerateDataKey"), req)?;
        Ok(GenerateDataKeyResponse {
            key_id: r.key_id,
            key_version_id: r.key_version_id,
            ciphertext_blob: r.ciphertext_blob,
            plaintext: SecretBytes::new(data_key.to_vec()),
        })
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
    ) -> Result<EncryptResponse> {
        self.new_data_key(Access::Check(caller, "kms:GenerateDataKeyWithoutPlaintext"), req).map(|(_, r)| r)
    }

    pub fn describe_regions(&self, _caller: &Caller) -> DescribeRegionsResponse {
        let region = self.config.all_regions().into_iter().map(|region_id| Region { region_id }).collect();
        DescribeRegionsResponse { regions: RegionList { region } }
    }

    pub(crate) fn new_data_key(
        &self,
        access: Access<'_>,
        req: GenerateDataKeyRequest,
    ) -> Result<(Zeroizing<Vec<u8>>, EncryptResponse)> {
        let max = self.config.limits.max_data_key_bytes;
        let spec =
            super::keys::parse_enum("KeySpec", req.key_spec.as_deref(), DataKeySpec::parse, DataKeySpec::choices)?;
        let len = match req.number_of_bytes {
            Some(n) if (1..=max).contains(&n) => n as usize,
            Some(_) => return Err(KmsError::invalid("NumberOfBytes", format_args!("it must lie between 1 and {max}"))),
            None => spec.map_or(32, DataKeySpec::byte_len),
        };
        let ctx = self.context("EncryptionContext", req.encryption_context.as_deref())?;
        let t = self.target(access, "KeyId", &req.key_id)?;
        if req.dry_run {
            return Err(dry_run_error());
        }
        let mut data_key = Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut data_key);
        let r = self.seal(&t, &ctx, &data_key)?;
        Ok((data_key, r))
    }

    pub(crate) fn context(&self, param: &str, raw: Option<&str>) -> Result<EncryptionContext> {
        EncryptionContext::parse(param, raw, self.config.limits.max_context_chars)
    }

    /// The primary version of the key a `KeyId` names, authorised for `access` and checked for
    /// symmetric encryption.
    pub(crate) fn target(&self, access: Access<'_>, param: &str, key_id: &str) -> Result<Target> {
        let now = self.now();
        self.with_key(access, param, key_id, |_, k| {
            require_symmetric(k)?;
            require_enabled(k, now)?;
            let vid = k.primary_version.as_deref().ok_or_else(|| state_error(k))?;
            let v = k.version(vid).ok_or_else(|| KmsError::version_not_found(&k.key_id, vid))?;
            let version =
                Uuid::parse_str(vid).map_err(|e| KmsError::internal(format_args!("version id {vid}: {e}")))?;
            Ok(Target { key_id: k.key_id.clone(), version, material: self.cipher(k, vid, &v.sealed)? })
        })
    }

    pub(crate) fn seal(&self, t: &Target, ctx: &EncryptionContext, plaintext: &[u8]) -> Result<EncryptResponse> {
        Ok(EncryptResponse {
            key_id: t.key_id.clone(),
            key_version_id: t.version.to_string(),
            ciphertext_blob: blob::seal_with(t.cipher(), &t.key_id, &t.version, &ctx.canonical_bytes(), plaintext)?,
        })
    }

    /// Decrypts a blob: finds the key and version its header names, authorises `access` on that
    /// key, checks the key may decrypt, opens it.
    pub(crate) fn open_blob(
        &self,
        access: Access<'_>,
        ciphertext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<(String, Uuid, Zeroizing<Vec<u8>>)> {
        if ciphertext.is_empty() {
            return Err(KmsError::missing("CiphertextBlob"));
        }
        let header = blob::parse(ciphertext)?;
        let now = self.now();
        let material = {
            let st = self.view()?;
            let k = match st.key(header.key_id)? {
                Some(k) => k,
                None => {
                    let arn = key_arn(&self.config.region, &self.config.account_id, header.key_id);
                    self.allow_access(access, Resource::Missing(arn))?;
                    return Err(KmsError::key_not_found(header.key_id));
                }
            };
            self.allow_access(access, Resource::Key(&k))?;
            require_enabled(&k, now)?;
            let vid = header.version_id.to_string();
            let v = k.version(&vid).ok_or_else(|| KmsError::version_not_found(&k.key_id, &vid))?;
            if Algorithm::for_spec(k.spec) != Some(header.algorithm) {
                return Err(KmsError::invalid("CiphertextBlob", "its algorithm does not match the key"));
            }
            self.cipher(&k, &vid, &v.sealed)?
        };
        let cipher =
            material.blob_aead().ok_or_else(|| KmsError::internal("a symmetric blob names an asymmetric key"))?;
        let plaintext = blob::open_with(cipher, &header, ciphertext, &ctx.canonical_bytes())?;
        Ok((header.key_id.to_string(), header.version_id, plaintext))
    }
}

fn require_symmetric(k: &KeyRecord) -> Result<()> {
    if k.spec.is_symmetric() && k.usage == KeyUsage::EncryptDecrypt {
        Ok(())
    } else {
        Err(KmsError::unsupported(format_args!(
            "key {} is {} for {}; symmetric operations need a symmetric ENCRYPT/DECRYPT key",
            k.key_id, k.spec, k.usage
        )))
    }
}
