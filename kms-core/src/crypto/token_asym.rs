//! Asymmetric keys with ProtectionLevel HSM: the key pair is generated inside the PKCS#11 token,
//! the private key stays there (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`) and signs and decrypts
//! there; the public key is read out once at generation and kept in the store, so GetPublicKey,
//! AsymmetricVerify and AsymmetricEncrypt (public operations) need no token round trip.
//!
//! Outputs match software keys byte for byte in format: PSS with salt = digest length, PKCS#1 v1.5
//! over a SHA-256 DigestInfo, ECDSA as DER `SEQUENCE { r, s }` (the token returns `r ‖ s`).

use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use zeroize::Zeroizing;

use super::asym::{encrypt_with, ossl, verify_with, AsymAlgorithm, AsymKey};
use super::seal::SealError;
use super::token::{aes_key_template, Token, TokenObject, TokenOpError};
use crate::error::{ErrorCode, KmsError, Result};
use crate::model::{KeySpec, KeyUsage};

/// DER of `DigestInfo { sha256, NULL }` without the digest (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
/// `CKA_EC_PARAMS`: the named curve's OID, DER.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP256K1_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// The mechanisms a spec and usage need from the token, by name for the error message.
pub fn mechanisms_for(spec: KeySpec, usage: KeyUsage) -> Option<&'static [(MechanismType, &'static str)]> {
    const RSA_GEN: (MechanismType, &str) = (MechanismType::RSA_PKCS_KEY_PAIR_GEN, "CKM_RSA_PKCS_KEY_PAIR_GEN");
    const EC_GEN: (MechanismType, &str) = (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN");
    Some(match (spec, usage) {
        (KeySpec::Rsa2048 | KeySpec::Rsa3072, KeyUsage::SignVerify) => {
            &[RSA_GEN, (MechanismType::RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"), (MechanismType::RSA_PKCS, "CKM_RSA_PKCS")]
        }
        (KeySpec::Rsa2048 | KeySpec::Rsa3072, KeyUsage::EncryptDecrypt) => {
            &[RSA_GEN, (MechanismType::RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP")]
        }
        (KeySpec::EcP256 | KeySpec::EcP256K, KeyUsage::SignVerify) => &[EC_GEN, (MechanismType::ECDSA, "CKM_ECDSA")],
        _ => return None,
    })
}

fn unavailable(what: &'static str) -> impl Fn(P11Error) -> KmsError {
    move |e| KmsError::from(SealError::Unavailable(format!("{what}: {e}")))
}

/// What the private key of a token key pair may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairUse {
    Sign,
    Decrypt,
    /// Unwrap imported key material into the token (BYOK wrapping keys).
    Unwrap,
}

impl PairUse {
    pub fn for_usage(usage: KeyUsage) -> PairUse {
        if usage == KeyUsage::SignVerify {
            PairUse::Sign
        } else {
            PairUse::Decrypt
        }
    }
}

impl Token {
    /// Generates a key pair for `spec` in the token: the private key persistent under `label`,
    /// the public key a session object read out and destroyed. Returns the SubjectPublicKeyInfo.
    pub fn generate_key_pair(&self, spec: KeySpec, use_: PairUse, label: &str) -> Result<Vec<u8>> {
        let sign = use_ == PairUse::Sign;
        let unwrap = use_ == PairUse::Unwrap;
        let (mechanism, mut public_tpl) = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(if spec == KeySpec::Rsa2048 { 2048u64 } else { 3072 }.into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
            ),
            KeySpec::EcP256 => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(P256_OID.to_vec())]),
            KeySpec::EcP256K => (Mechanism::EccKeyPairGen, vec![Attribute::EcParams(SECP256K1_OID.to_vec())]),
            _ => return Err(KmsError::internal(format_args!("{spec} is not a token key-pair spec"))),
        };
        public_tpl.extend([
            Attribute::Token(false),
            Attribute::Verify(sign),
            Attribute::Encrypt(use_ == PairUse::Decrypt),
            Attribute::Wrap(unwrap),
        ]);
        let private_tpl = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(sign),
            Attribute::Decrypt(use_ == PairUse::Decrypt),
            Attribute::Unwrap(unwrap),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let s = self.session()?;
        let (public, _private) = s.generate_key_pair(&mechanism, &public_tpl, &private_tpl).map_err(|e| match e {
            // The curve is the one thing the mechanism list cannot tell in advance.
            P11Error::Pkcs11(RvError::CurveNotSupported | RvError::DomainParamsInvalid, _) => KmsError::with_detail(
                ErrorCode::UnsupportedProtectionLevel,
                format_args!("Token {} does not support the curve of {spec}.", self.label()),
            ),
            e => unavailable("generate key pair in token")(e),
        })?;
        let spki = self.public_key_der(&s, spec, public);
        // The public object was only a vehicle: remove it whatever happened.
        let _ = s.destroy_object(public);
        spki
    }

    fn public_key_der(&self, s: &cryptoki::session::Session, spec: KeySpec, public: ObjectHandle) -> Result<Vec<u8>> {
        let pkey = match spec {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
                let attrs = s
                    .get_attributes(public, &[AttributeType::Modulus, AttributeType::PublicExponent])
                    .map_err(unavailable("read public key"))?;
                let (mut n, mut e) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                let (Some(n), Some(e)) = (n, e) else {
                    return Err(KmsError::internal("token RSA key without modulus"));
                };
                let bn = |v: &[u8]| BigNum::from_slice(v).map_err(ossl("bignum"));
                PKey::from_rsa(Rsa::from_public_components(bn(&n)?, bn(&e)?).map_err(ossl("RSA public key"))?)
                    .map_err(ossl("RSA public key"))?
            }
            _ => {
                let attrs =
                    s.get_attributes(public, &[AttributeType::EcPoint]).map_err(unavailable("read public key"))?;
                let Some(Attribute::EcPoint(der)) = attrs.into_iter().next() else {
                    return Err(KmsError::internal("token EC key without CKA_EC_POINT"));
                };
                // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (65 bytes here,
                // so a one-byte length).
                let point = match der.as_slice() {
                    [0x04, len, rest @ ..] if *len as usize == rest.len() => rest,
                    raw => raw,
                };
                let group = ec_group(spec)?;
                let mut ctx = BigNumContext::new().map_err(ossl("bignum"))?;
                let p = EcPoint::from_bytes(&group, point, &mut ctx).map_err(ossl("EC point"))?;
                PKey::from_ec_key(EcKey::from_public_key(&group, &p).map_err(ossl("EC key"))?)
                    .map_err(ossl("EC key"))?
            }
        };
        pkey.public_key_to_der().map_err(ossl("public key"))
    }
}

fn ec_group(spec: KeySpec) -> Result<EcGroup> {
    let nid = if spec == KeySpec::EcP256 { Nid::X9_62_PRIME256V1 } else { Nid::SECP256K1 };
    EcGroup::from_curve_name(nid).map_err(ossl("EC group"))
}

/// A key pair whose private half is a token object.
pub struct TokenKeyPair {
    private: TokenObject,
    public: PKey<Public>,
    public_der: Vec<u8>,
}

impl TokenKeyPair {
    pub fn new(private: TokenObject, public_der: &[u8]) -> Result<Self> {
        let public = PKey::public_key_from_der(public_der).map_err(ossl("stored public key"))?;
        Ok(TokenKeyPair { private, public, public_der: public_der.to_vec() })
    }
}

impl AsymKey for TokenKeyPair {
    fn public_der(&self) -> Result<Vec<u8>> {
        Ok(self.public_der.clone())
    }

    fn sign(&self, alg: AsymAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let sign = |m: &Mechanism, data: &[u8]| {
            self.private.run("token sign", |s, h| s.sign(m, h, data)).map_err(|e| KmsError::from(e.unavailable()))
        };
        match alg {
            AsymAlgorithm::RsaPssSha256 => {
                let params = PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: (digest.len() as u64).into(),
                };
                sign(&Mechanism::RsaPkcsPss(params), digest)
            }
            AsymAlgorithm::RsaPkcs1Sha256 => sign(&Mechanism::RsaPkcs, &[&SHA256_DIGEST_INFO[..], digest].concat()),
            AsymAlgorithm::EcdsaSha256 => {
                let rs = sign(&Mechanism::Ecdsa, digest)?;
                let (r, s) = rs.split_at(rs.len() / 2);
                let bn = |v: &[u8]| BigNum::from_slice(v).map_err(ossl("bignum"));
                openssl::ecdsa::EcdsaSig::from_private_components(bn(r)?, bn(s)?)
                    .and_then(|sig| sig.to_der())
                    .map_err(ossl("ECDSA signature"))
            }
            _ => Err(KmsError::internal(format_args!("{alg} is not a token signature algorithm"))),
        }
    }

    fn verify(&self, alg: AsymAlgorithm, digest: &[u8], signature: &[u8]) -> Result<bool> {
        verify_with(&self.public, alg, digest, signature)
    }

    fn encrypt(&self, alg: AsymAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        encrypt_with(&self.public, alg, plaintext)
    }

    fn decrypt(&self, alg: AsymAlgorithm, ciphertext: &[u8], param: &str) -> Result<Zeroizing<Vec<u8>>> {
        let (hash, mgf) = match alg {
            AsymAlgorithm::RsaesOaepSha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            AsymAlgorithm::RsaesOaepSha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            _ => return Err(KmsError::internal(format_args!("{alg} is not a token decryption algorithm"))),
        };
        let m = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
        match self.private.run("token decrypt", |s, h| s.decrypt(&m, h, ciphertext)) {
            Ok(pt) => Ok(Zeroizing::new(pt)),
            // Bad padding or length; SoftHSM2 reports some of these with the generic codes.
            Err(TokenOpError::Rejected(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            )) => Err(KmsError::invalid(param, "it does not decrypt under this key version with this algorithm")),
            // The mechanism is listed but not with these parameters (SoftHSM2 2.6 does OAEP with
            // SHA-1 only): the token cannot run this algorithm.
            Err(TokenOpError::Rejected(RvError::ArgumentsBad | RvError::MechanismParamInvalid)) => {
                Err(KmsError::with_detail(
                    ErrorCode::UnsupportedProtectionLevel,
                    format_args!(
                        "Token {} cannot run {alg} (CKM_RSA_PKCS_OAEP with these hash parameters) for this HSM key.",
                        self.private.token().label()
                    ),
                ))
            }
            Err(e) => Err(KmsError::from(e.unavailable())),
        }
    }
}

/// The RSA mechanism of a wrapping algorithm.
fn rsa_mechanism(alg: AsymAlgorithm) -> Result<Mechanism<'static>> {
    Ok(match alg {
        AsymAlgorithm::RsaesOaepSha256 => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        )),
        AsymAlgorithm::RsaesOaepSha1 => Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        )),
        AsymAlgorithm::RsaesPkcs1V15 => Mechanism::RsaPkcs,
        _ => return Err(KmsError::internal(format_args!("{alg} is not an RSA wrapping algorithm"))),
    })
}

/// Unwraps imported AES-256 material with a token-resident RSA wrapping key (`C_UnwrapKey`): the
/// material goes from the caller's ciphertext straight into a new token object labelled `label`
/// (sensitive, never extractable) and never exists in this process. Returns the object and its
/// check value ([`TokenObject::check_value`]).
pub fn unwrap_aes256(
    wrapping: &TokenObject,
    alg: AsymAlgorithm,
    wrapped: &[u8],
    label: &str,
) -> Result<(TokenObject, Vec<u8>)> {
    let m = rsa_mechanism(alg)?;
    let template = aes_key_template(label);
    let token = wrapping.token().clone();
    let bad = |rv: RvError| {
        KmsError::with_detail(
            ErrorCode::InvalidKeyMaterial,
            format_args!("EncryptedKeyMaterial does not unwrap to 32 bytes of AES-256 material with this token's RSA_2048 key and {alg} (token: {rv})."),
        )
    };
    let handle = match wrapping.run("token unwrap", |s, h| s.unwrap_key(&m, h, wrapped, &template)) {
        Ok(h) => h,
        Err(TokenOpError::Rejected(RvError::ArgumentsBad | RvError::MechanismParamInvalid)) => {
            return Err(KmsError::with_detail(
                ErrorCode::UnsupportedProtectionLevel,
                format_args!(
                    "Token {} cannot unwrap with {alg}; use RSAES_OAEP_SHA_1 or RSAES_PKCS1_V1_5.",
                    token.label()
                ),
            ))
        }
        Err(TokenOpError::Rejected(rv)) => return Err(bad(rv)),
        Err(TokenOpError::Unavailable(e)) => return Err(e.into()),
    };
    // The length, where the token reports it (SoftHSM2 2.6 leaves CKA_VALUE_LEN of unwrapped keys
    // at 0); and in any case the key must work as an AES key (which refuses lengths AES has not).
    let len = token
        .with_session("read key length", |s| s.get_attributes(handle, &[AttributeType::ValueLen]))
        .map_err(|e| KmsError::from(e.unavailable()))?;
    let len = match len.first() {
        Some(Attribute::ValueLen(n)) => u64::from(*n),
        _ => 0,
    };
    let refuse = |why: String| {
        let _ = token.destroy(label);
        Err(KmsError::with_detail(ErrorCode::InvalidKeyMaterial, why))
    };
    if len != 0 && len != 32 {
        return refuse(format!("Aliyun_AES_256 material is 32 bytes, not {len}."));
    }
    let Some(obj) = TokenObject::find(token.clone(), ObjectClass::SECRET_KEY, label)? else {
        return Err(KmsError::internal(format_args!("unwrapped object {label:?} not found")));
    };
    match obj.check_value() {
        Ok(check) => Ok((obj, check)),
        Err(SealError::Unavailable(e)) if !e.starts_with("token refused") => Err(SealError::Unavailable(e).into()),
        Err(_) => refuse("The unwrapped material is not a usable AES key; Aliyun_AES_256 material is 32 bytes.".into()),
    }
}
