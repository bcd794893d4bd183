//! Asymmetric keys on OpenSSL 3 (the `openssl` crate): RSA-2048/3072, P-256, secp256k1 and SM2.
//!
//! Why OpenSSL: it is the only library at hand that does all five specs (ring and aws-lc-rs lack
//! secp256k1 and SM2), its RSA private operations are constant time (the pure-Rust `rsa` crate's
//! are not: RUSTSEC-2023-0071) and about as fast as `openssl speed` by construction, and it is the
//! implementation the user documents' interop commands use. Private keys live in OpenSSL objects
//! (their bignums are cleared on free) and leave them only as sealed PKCS#8.

use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::RsaPssSaltlen;
use zeroize::Zeroizing;

use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{wire_enum, KeySpec, KeyUsage};

wire_enum!(
    /// Asymmetric algorithms by their API names (API.md §4).
    AsymAlgorithm {
        RsaPssSha256 => "RSA_PSS_SHA_256",
        RsaPkcs1Sha256 => "RSA_PKCS1_SHA_256",
        EcdsaSha256 => "ECDSA_SHA_256",
        Sm2Dsa => "SM2DSA",
        RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
        RsaesPkcs1V15 => "RSAES_PKCS1_V1_5",
        Sm2Pke => "SM2PKE",
    }
);

impl AsymAlgorithm {
    pub fn is_signature(self) -> bool {
        matches!(self, Self::RsaPssSha256 | Self::RsaPkcs1Sha256 | Self::EcdsaSha256 | Self::Sm2Dsa)
    }
}

/// Algorithms a key of `spec` and `usage` performs through the API.
pub fn algorithms_for(spec: KeySpec, usage: KeyUsage) -> &'static [AsymAlgorithm] {
    use AsymAlgorithm::*;
    match (spec, usage) {
        (KeySpec::Rsa2048 | KeySpec::Rsa3072, KeyUsage::SignVerify) => &[RsaPssSha256, RsaPkcs1Sha256],
        (KeySpec::Rsa2048 | KeySpec::Rsa3072, KeyUsage::EncryptDecrypt) => &[RsaesOaepSha256, RsaesOaepSha1],
        (KeySpec::EcP256 | KeySpec::EcP256K, KeyUsage::SignVerify) => &[EcdsaSha256],
        (KeySpec::EcSm2, KeyUsage::SignVerify) => &[Sm2Dsa],
        (KeySpec::EcSm2, KeyUsage::EncryptDecrypt) => &[Sm2Pke],
        _ => &[],
    }
}

/// The largest plaintext an encryption algorithm takes under a key of `spec` (API.md §4).
pub fn max_plaintext(spec: KeySpec, alg: AsymAlgorithm) -> usize {
    let modulus: usize = match spec {
        KeySpec::Rsa2048 => 256,
        KeySpec::Rsa3072 => 384,
        _ => 0,
    };
    match alg {
        AsymAlgorithm::RsaesOaepSha256 => modulus.saturating_sub(2 * 32 + 2),
        AsymAlgorithm::RsaesOaepSha1 => modulus.saturating_sub(2 * 20 + 2),
        AsymAlgorithm::RsaesPkcs1V15 => modulus.saturating_sub(11),
        AsymAlgorithm::Sm2Pke => 6047,
        _ => 0,
    }
}

/// DER of the SM2 curve OID 1.2.156.10197.1.301.
const SM2_OID: &[u8] = &[0x06, 0x08, 0x2A, 0x81, 0x1C, 0xCF, 0x55, 0x01, 0x82, 0x2D];

/// The digest length every signature algorithm here expects (SHA-256 or SM3).
pub const DIGEST_LEN: usize = 32;

pub(crate) fn ossl(what: &str) -> impl Fn(openssl::error::ErrorStack) -> KmsError + '_ {
    move |e| KmsError::internal(format_args!("openssl {what}: {e}"))
}

/// A private key of one of the asymmetric specs.
pub struct PrivateKey {
    pkey: PKey<Private>,
    spec: KeySpec,
}

impl PrivateKey {
    /// A fresh key pair and its PKCS#8 DER (to be sealed).
    pub fn generate(spec: KeySpec) -> Result<(PrivateKey, Zeroizing<Vec<u8>>)> {
        let pkey = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                let bits = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
                PKey::from_rsa(Rsa::generate(bits).map_err(ossl("RSA keygen"))?).map_err(ossl("RSA key"))?
            }
            KeySpec::EcP256 | KeySpec::EcP256K => {
                let nid = if spec == KeySpec::EcP256 { Nid::X9_62_PRIME256V1 } else { Nid::SECP256K1 };
                let group = EcGroup::from_curve_name(nid).map_err(ossl("EC group"))?;
                PKey::from_ec_key(EcKey::generate(&group).map_err(ossl("EC keygen"))?).map_err(ossl("EC key"))?
            }
            KeySpec::EcSm2 => {
                let mut ctx = PkeyCtx::new_id(Id::SM2).map_err(ossl("SM2 context"))?;
                ctx.keygen_init().map_err(ossl("SM2 keygen"))?;
                ctx.keygen().map_err(ossl("SM2 keygen"))?
            }
            _ => return Err(KmsError::internal(format_args!("{spec} is not an asymmetric spec"))),
        };
        let der = Zeroizing::new(pkey.private_key_to_pkcs8().map_err(ossl("PKCS#8"))?);
        // Reload from PKCS#8 so a fresh key and a stored one are the same kind of object (an SM2
        // curve key loads as an SM2 key in OpenSSL 3).
        let key = PrivateKey::from_pkcs8(spec, &der)?;
        Ok((key, der))
    }

    pub fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<PrivateKey> {
        let pkey = PKey::private_key_from_pkcs8(der).map_err(ossl("PKCS#8 parse"))?;
        Ok(PrivateKey { pkey, spec })
    }

    pub fn spec(&self) -> KeySpec {
        self.spec
    }
}

/// What the API does with an asymmetric key version, wherever its private half lives: in this
/// process ([`PrivateKey`]) or in a PKCS#11 token (`TokenKeyPair`).
pub trait AsymKey: Send + Sync {
    /// SubjectPublicKeyInfo, DER.
    fn public_der(&self) -> Result<Vec<u8>>;
    /// Signs a caller-computed digest.
    fn sign(&self, alg: AsymAlgorithm, digest: &[u8]) -> Result<Vec<u8>>;
    /// `false` for a signature that does not verify (a tampered or foreign one), never an error.
    fn verify(&self, alg: AsymAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool>;
    fn encrypt(&self, alg: AsymAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts; a ciphertext that does not decrypt is `InvalidParameter` on `param`.
    fn decrypt(&self, alg: AsymAlgorithm, ciphertext: &[u8], param: &str) -> Result<Zeroizing<Vec<u8>>>;

    /// SubjectPublicKeyInfo, PEM.
    fn public_pem(&self) -> Result<String> {
        let der = self.public_der()?;
        let pem = PKey::public_key_from_der(&der).and_then(|k| k.public_key_to_pem()).map_err(ossl("public key"))?;
        String::from_utf8(pem).map_err(KmsError::internal)
    }
}

impl AsymKey for PrivateKey {
    fn public_der(&self) -> Result<Vec<u8>> {
        self.pkey.public_key_to_der().map_err(ossl("public key"))
    }

    fn sign(&self, alg: AsymAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let mut ctx = PkeyCtx::new(&self.pkey).map_err(ossl("sign"))?;
        ctx.sign_init().map_err(ossl("sign"))?;
        configure_signature(&mut ctx, alg, true)?;
        let mut sig = Vec::new();
        ctx.sign_to_vec(digest, &mut sig).map_err(ossl("sign"))?;
        Ok(sig)
    }

    fn verify(&self, alg: AsymAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool> {
        verify_with(&self.pkey, alg, digest, signature)
    }

    fn encrypt(&self, alg: AsymAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        encrypt_with(&self.pkey, alg, plaintext)
    }

    fn decrypt(&self, alg: AsymAlgorithm, ciphertext: &[u8], param: &str) -> Result<Zeroizing<Vec<u8>>> {
        let fail = |_| KmsError::invalid(param, "it does not decrypt under this key version with this algorithm");
        let mut ctx = PkeyCtx::new(&self.pkey).map_err(ossl("decrypt"))?;
        ctx.decrypt_init().map_err(ossl("decrypt"))?;
        configure_encryption(&mut ctx, alg)?;
        let mut out = Zeroizing::new(Vec::new());
        ctx.decrypt_to_vec(ciphertext, &mut out).map_err(fail)?;
        Ok(out)
    }
}

/// Verifies with the public half of any key.
pub fn verify_with<T: openssl::pkey::HasPublic>(
    pkey: &PKey<T>,
    alg: AsymAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<bool> {
    let mut ctx = PkeyCtx::new(pkey).map_err(ossl("verify"))?;
    ctx.verify_init().map_err(ossl("verify"))?;
    configure_signature(&mut ctx, alg, false)?;
    Ok(ctx.verify(digest, signature).unwrap_or(false))
}

/// Encrypts to a caller-supplied public key (ExportDataKey): `der` is SubjectPublicKeyInfo DER
/// and must be of `spec`.
pub fn encrypt_to_public(spec: KeySpec, der: &[u8], alg: AsymAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
    let bad = || KmsError::invalid("PublicKeyBlob", format_args!("it is not a base64 DER {spec} public key"));
    let pkey = PKey::public_key_from_der(der).map_err(|_| bad())?;
    let ok = match spec {
        KeySpec::Rsa2048 => pkey.rsa().map(|r| r.size() == 256).unwrap_or(false),
        // OpenSSL 3 loads SM2 keys as their own type without an EC_KEY view: recognise the
        // SubjectPublicKeyInfo by its curve, the SM2 OID 1.2.156.10197.1.301.
        KeySpec::EcSm2 => pkey.rsa().is_err() && pkey.bits() == 256 && der.windows(SM2_OID.len()).any(|w| w == SM2_OID),
        _ => false,
    };
    if !ok {
        return Err(bad());
    }
    encrypt_with(&pkey, alg, plaintext)
}

pub fn encrypt_with<T: openssl::pkey::HasPublic>(
    pkey: &PKey<T>,
    alg: AsymAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut ctx = PkeyCtx::new(pkey).map_err(ossl("encrypt"))?;
    ctx.encrypt_init().map_err(ossl("encrypt"))?;
    configure_encryption(&mut ctx, alg)?;
    let mut out = Vec::new();
    ctx.encrypt_to_vec(plaintext, &mut out).map_err(ossl("encrypt"))?;
    Ok(out)
}

fn configure_signature<T>(ctx: &mut PkeyCtx<T>, alg: AsymAlgorithm, signing: bool) -> Result<()> {
    let e = ossl("signature parameters");
    match alg {
        AsymAlgorithm::RsaPssSha256 => {
            ctx.set_rsa_padding(Padding::PKCS1_PSS).map_err(&e)?;
            ctx.set_signature_md(openssl::md::Md::sha256()).map_err(&e)?;
            ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).map_err(&e)?;
            // Sign with salt = digest length (what `-pkeyopt rsa_pss_saltlen:-1` verifies); accept
            // any salt length when verifying, as signatures made elsewhere may use the maximum.
            let salt = if signing { RsaPssSaltlen::DIGEST_LENGTH } else { RsaPssSaltlen::custom(-2) };
            ctx.set_rsa_pss_saltlen(salt).map_err(&e)?;
        }
        AsymAlgorithm::RsaPkcs1Sha256 => {
            ctx.set_rsa_padding(Padding::PKCS1).map_err(&e)?;
            ctx.set_signature_md(openssl::md::Md::sha256()).map_err(&e)?;
        }
        AsymAlgorithm::EcdsaSha256 => ctx.set_signature_md(openssl::md::Md::sha256()).map_err(&e)?,
        AsymAlgorithm::Sm2Dsa => {} // the digest given is e = SM3(Z_A ‖ M), signed as is
        _ => return Err(KmsError::internal("not a signature algorithm")),
    }
    Ok(())
}

fn configure_encryption<T>(ctx: &mut PkeyCtx<T>, alg: AsymAlgorithm) -> Result<()> {
    let e = ossl("encryption parameters");
    match alg {
        AsymAlgorithm::RsaesOaepSha256 | AsymAlgorithm::RsaesOaepSha1 => {
            let md =
                if alg == AsymAlgorithm::RsaesOaepSha256 { openssl::md::Md::sha256() } else { openssl::md::Md::sha1() };
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).map_err(&e)?;
            ctx.set_rsa_oaep_md(md).map_err(&e)?;
            ctx.set_rsa_mgf1_md(md).map_err(&e)?;
        }
        AsymAlgorithm::RsaesPkcs1V15 => ctx.set_rsa_padding(Padding::PKCS1).map_err(&e)?,
        AsymAlgorithm::Sm2Pke => {}
        _ => return Err(KmsError::internal("not an encryption algorithm")),
    }
    Ok(())
}

/// Checks that `alg` names an algorithm a key of `spec`/`usage` performs, for the operation kind.
pub fn check_algorithm(spec: KeySpec, usage: KeyUsage, alg: &str, signature: bool) -> Result<AsymAlgorithm> {
    let allowed = algorithms_for(spec, usage);
    let a = AsymAlgorithm::parse(alg.trim()).filter(|a| a.is_signature() == signature);
    match a {
        Some(a) if allowed.contains(&a) => Ok(a),
        _ if allowed.iter().all(|a| a.is_signature() != signature) => Err(KmsError::with_detail(
            ErrorCode::UnsupportedOperation,
            format_args!(
                "a {spec} key with usage {usage} cannot {}",
                if signature { "sign or verify" } else { "encrypt or decrypt" }
            ),
        )),
        _ => Err(KmsError::invalid(
            "Algorithm",
            format_args!(
                "{alg:?} is not an algorithm of a {spec} {usage} key; use {}",
                allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" or ")
            ),
        )),
    }
}

/// SHA-256, for tools and tests that hash a message before asking for a signature.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    openssl::hash::hash(MessageDigest::sha256(), data).map(|d| d.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_signs_and_verifies_or_encrypts_and_decrypts() {
        let digest = sha256(b"message");
        for spec in [KeySpec::Rsa2048, KeySpec::EcP256, KeySpec::EcP256K, KeySpec::EcSm2] {
            let (k, der) = PrivateKey::generate(spec).unwrap();
            let k2 = PrivateKey::from_pkcs8(spec, &der).unwrap();
            for alg in algorithms_for(spec, KeyUsage::SignVerify) {
                let sig = k.sign(*alg, &digest).unwrap();
                assert!(k2.verify(*alg, &digest, &sig).unwrap(), "{spec} {alg}");
                let mut bad = sig.clone();
                let n = bad.len();
                bad[n / 2] ^= 1;
                assert!(!k2.verify(*alg, &digest, &bad).unwrap(), "{spec} {alg} tampered");
                assert!(!k2.verify(*alg, &sha256(b"other"), &sig).unwrap());
            }
            for alg in algorithms_for(spec, KeyUsage::EncryptDecrypt) {
                let max = max_plaintext(spec, *alg);
                let pt = vec![9u8; max.min(300)];
                let ct = k.encrypt(*alg, &pt).unwrap();
                assert_eq!(&k2.decrypt(*alg, &ct, "CiphertextBlob").unwrap()[..], &pt[..], "{spec} {alg}");
            }
        }
    }

    #[test]
    fn algorithm_checks_name_what_is_wrong() {
        assert_eq!(
            check_algorithm(KeySpec::EcP256, KeyUsage::SignVerify, "ECDSA_SHA_256", true).unwrap(),
            AsymAlgorithm::EcdsaSha256
        );
        let e = check_algorithm(KeySpec::EcP256, KeyUsage::SignVerify, "RSA_PSS_SHA_256", true).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidParameter);
        let e = check_algorithm(KeySpec::EcP256, KeyUsage::SignVerify, "RSAES_OAEP_SHA_256", false).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedOperation);
        assert_eq!(max_plaintext(KeySpec::Rsa2048, AsymAlgorithm::RsaesOaepSha256), 190);
        assert_eq!(max_plaintext(KeySpec::Rsa2048, AsymAlgorithm::RsaesOaepSha1), 214);
        assert_eq!(max_plaintext(KeySpec::Rsa3072, AsymAlgorithm::RsaesOaepSha256), 318);
        assert_eq!(max_plaintext(KeySpec::Rsa3072, AsymAlgorithm::RsaesOaepSha1), 342);
    }
}
