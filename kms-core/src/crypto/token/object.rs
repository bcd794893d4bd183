//! Objects inside the token that the engine uses by label: a failed operation's classification
//! (the token's answer about the input, or the token gone), a persistent object whose handle is
//! re-resolved when the token renumbers it, and an AES key object as a blob AEAD (HSM keys).

use std::sync::Arc;

use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::{session_lost, token_gone, Token, IV_LEN, TAG_BITS};
use crate::crypto::seal::SealError;

/// A failed token operation: the token's answer about the input (`Rejected`, for the caller to
/// interpret: a tag that does not verify, bad padding, unsupported parameters), or the token being
/// unreachable.
#[derive(Debug)]
pub enum TokenOpError {
    Rejected(cryptoki::error::RvError),
    Unavailable(SealError),
}

impl TokenOpError {
    pub(super) fn classify(what: &str, e: cryptoki::error::Error) -> TokenOpError {
        use cryptoki::error::RvError::*;
        match e {
            cryptoki::error::Error::Pkcs11(rv, _)
                if !session_lost(rv) && !token_gone(rv) && !matches!(rv, DeviceMemory | HostMemory) =>
            {
                TokenOpError::Rejected(rv)
            }
            e => TokenOpError::Unavailable(SealError::Unavailable(format!("{what}: {e}"))),
        }
    }

    /// As a [`SealError`], for callers that treat every rejection as a failure of the token.
    pub fn unavailable(self) -> SealError {
        match self {
            TokenOpError::Unavailable(e) => e,
            TokenOpError::Rejected(rv) => SealError::Unavailable(format!("token refused: {rv}")),
        }
    }
}

/// A persistent token object, found by class and label. Its handle is re-resolved when the token
/// says it is no longer valid (after every session was closed, a module reset or a reconnect,
/// handles may be renumbered).
pub struct TokenObject {
    pub(super) token: Arc<Token>,
    pub(super) class: ObjectClass,
    pub(super) label: String,
    pub(super) handle: Mutex<ObjectHandle>,
}

impl TokenObject {
    pub fn find(token: Arc<Token>, class: ObjectClass, label: &str) -> Result<Option<TokenObject>, SealError> {
        Ok(token.find_one(class, label)?.map(|h| TokenObject {
            token,
            class,
            label: label.to_string(),
            handle: Mutex::new(h),
        }))
    }

    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A check value of an AES key, computed in the token: the GCM tag of an empty message under
    /// a fixed IV used for nothing else. Equal keys give equal values; the value reveals nothing
    /// else about the key (used to recognise re-imported material).
    pub fn check_value(&self) -> Result<Vec<u8>, SealError> {
        self.gcm_encrypt(&[0u8; IV_LEN], b"kms-core key check value v1", &[])
    }

    /// Runs `op` with the object's handle (see [`Token::with_session`] for lost sessions).
    pub fn run<T>(
        &self,
        what: &str,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, cryptoki::error::Error>,
    ) -> Result<T, TokenOpError> {
        use cryptoki::error::RvError::{KeyHandleInvalid, ObjectHandleInvalid};
        let h = *self.handle.lock();
        match self.token.with_session(what, |s| op(s, h)) {
            Err(TokenOpError::Rejected(KeyHandleInvalid | ObjectHandleInvalid)) => {
                let find = || self.token.find_one(self.class, &self.label).map_err(TokenOpError::Unavailable);
                let fresh = match find()? {
                    Some(h) => h,
                    // The token may have gone and come back: the module shows its objects again
                    // only after a reset.
                    None => {
                        self.token.reset().map_err(TokenOpError::Unavailable)?;
                        find()?.ok_or_else(|| {
                            TokenOpError::Unavailable(SealError::Unavailable(format!(
                                "object {:?} is not in the token",
                                self.label
                            )))
                        })?
                    }
                };
                *self.handle.lock() = fresh;
                self.token.with_session(what, |s| op(s, fresh))
            }
            r => r,
        }
    }

    pub(super) fn gcm_encrypt(&self, iv: &[u8; IV_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.run("token encrypt", |s, key| {
            let mut iv = *iv;
            s.encrypt(&Mechanism::AesGcm(GcmParams::new(&mut iv, aad, TAG_BITS.into())?), key, plaintext)
        })
        .map_err(TokenOpError::unavailable)
    }

    /// `Ok(None)` when the tag does not verify.
    pub(super) fn gcm_decrypt(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        ct_and_tag: &[u8],
    ) -> Result<Option<Vec<u8>>, SealError> {
        use cryptoki::error::RvError::*;
        let decrypt = |s: &Session, key: ObjectHandle| {
            let mut iv = *iv;
            s.decrypt(&Mechanism::AesGcm(GcmParams::new(&mut iv, aad, TAG_BITS.into())?), key, ct_and_tag)
        };
        match self.run("token decrypt", decrypt) {
            Ok(pt) => Ok(Some(pt)),
            // A tag that does not verify: the standard code, and the generic ones SoftHSM2 uses
            // for it (a token that is gone fails opening the session, or with the device and
            // session codes, which are `Unavailable`).
            Err(TokenOpError::Rejected(
                EncryptedDataInvalid | EncryptedDataLenRange | GeneralError | FunctionFailed,
            )) => Ok(None),
            Err(e) => Err(e.unavailable()),
        }
    }
}

/// The mechanisms an HSM-protected Aliyun_AES_256 key needs.
pub const AES_GCM_MECHANISMS: &[(MechanismType, &str)] =
    &[(MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"), (MechanismType::AES_GCM, "CKM_AES_GCM")];

/// An AES-256 key inside the token, used for ciphertext blobs of ProtectionLevel HSM keys.
pub struct TokenAesKey(pub TokenObject);

impl crate::crypto::aead::BlobAead for TokenAesKey {
    fn algorithm(&self) -> crate::crypto::aead::Algorithm {
        crate::crypto::aead::Algorithm::Aes256Gcm
    }

    fn seal_detached(&self, nonce: &[u8; IV_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.0.gcm_encrypt(nonce, aad, plaintext)
    }

    fn open_checked(
        &self,
        nonce: &[u8; IV_LEN],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, SealError> {
        Ok(self.0.gcm_decrypt(nonce, aad, ct)?.map(Zeroizing::new))
    }
}
