//! The root key as an AES-256 object generated inside the token (`CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`) and used only there with `CKM_AES_GCM`: the key that seals every stored key
//! version never exists in this process.
//!
//! Sealed record: `02` ‖ 12-byte IV ‖ ciphertext ‖ 16-byte tag, AAD as for the software root key
//! (FORMAT.md §2).

use std::sync::Arc;

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use parking_lot::Mutex;
use rand::RngCore;
use zeroize::Zeroizing;

use super::object::TokenObject;
use super::{Token, IV_LEN};
use crate::crypto::seal::{Protector, SealError};

const SEALED_TOKEN_V1: u8 = 2;

/// The root key as an unextractable AES-256 object in the token.
pub struct TokenRootKey {
    token: Arc<Token>,
    key: TokenObject,
    label: String,
}

impl TokenRootKey {
    /// Finds the AES key labelled `label`, or generates it in the token (sensitive, never
    /// extractable, persistent).
    pub fn load_or_create(token: Arc<Token>, label: &str) -> Result<TokenRootKey, String> {
        let found = token.find_one(ObjectClass::SECRET_KEY, label).map_err(|e| format!("find root key: {e}"))?;
        let key = match found {
            Some(k) => k,
            None => {
                let k = token.generate_aes_key(label).map_err(|e| format!("root key in token {}: {e}", token.label))?;
                tracing::info!(token = %token.label, label, "generated the root key inside the token");
                k
            }
        };
        let s = token.session().map_err(|e| e.to_string())?;
        // Refuse a key that could ever leave the token.
        let attrs = s
            .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
            .map_err(|e| format!("root key attributes: {e}"))?;
        for a in attrs {
            match a {
                Attribute::Extractable(true) => return Err(format!("root key {label:?} is extractable; refusing it")),
                Attribute::Sensitive(false) => return Err(format!("root key {label:?} is not sensitive; refusing it")),
                _ => {}
            }
        }
        drop(s);
        let key = TokenObject {
            token: token.clone(),
            class: ObjectClass::SECRET_KEY,
            label: label.to_string(),
            handle: Mutex::new(key),
        };
        Ok(TokenRootKey { token, key, label: label.to_string() })
    }
}

impl Protector for TokenRootKey {
    fn seal(&self, aad: &[u8], material: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let ct = self.key.gcm_encrypt(&iv, aad, material)?;
        let mut out = Vec::with_capacity(1 + IV_LEN + ct.len());
        out.push(SEALED_TOKEN_V1);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + IV_LEN + 16 || sealed[0] != SEALED_TOKEN_V1 {
            return Err(SealError::Malformed);
        }
        let iv: [u8; IV_LEN] = sealed[1..1 + IV_LEN].try_into().expect("length checked");
        match self.key.gcm_decrypt(&iv, aad, &sealed[1 + IV_LEN..])? {
            Some(pt) => Ok(Zeroizing::new(pt)),
            None => Err(SealError::Unauthentic),
        }
    }

    fn describe(&self) -> String {
        format!("root key {:?} in PKCS#11 token {:?}", self.label, self.token.label)
    }
}
