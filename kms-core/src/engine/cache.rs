//! A bounded cache of unsealed key versions, ready to use. Entries are keyed by version id; the
//! material lives only inside the cipher's key schedule (zeroized on drop) or the OpenSSL key
//! object (cleared on free), released when the last `Arc` drops.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::crypto::asym::PrivateKey;
use crate::crypto::SymCipher;

/// An unsealed key version.
pub(crate) enum Material {
    Sym(SymCipher),
    Asym(PrivateKey),
    /// An AES key inside the PKCS#11 token (ProtectionLevel HSM): only a handle here.
    TokenAes(crate::crypto::token::TokenAesKey),
    /// A key pair whose private key is inside the token.
    TokenAsym(crate::crypto::token_asym::TokenKeyPair),
}

impl Material {
    /// The AEAD for ciphertext blobs, if this is a symmetric key.
    pub fn blob_aead(&self) -> Option<&dyn crate::crypto::aead::BlobAead> {
        match self {
            Material::Sym(c) => Some(c),
            Material::TokenAes(k) => Some(k),
            Material::Asym(_) | Material::TokenAsym(_) => None,
        }
    }
}

pub(crate) struct CipherCache {
    /// Version id → (key id, material).
    map: RwLock<HashMap<String, (String, Arc<Material>)>>,
    capacity: usize,
}

impl CipherCache {
    pub fn new(capacity: usize) -> Self {
        CipherCache { map: RwLock::new(HashMap::new()), capacity: capacity.max(1) }
    }

    pub fn get(&self, version_id: &str) -> Option<Arc<Material>> {
        self.map.read().get(version_id).map(|(_, m)| m.clone())
    }

    /// Inserts, evicting an arbitrary entry when full: a miss costs one unseal, so a simple policy
    /// is enough.
    pub fn insert(&self, key_id: &str, version_id: &str, cipher: Arc<Material>) {
        let mut m = self.map.write();
        if m.len() >= self.capacity && !m.contains_key(version_id) {
            if let Some(victim) = m.keys().next().cloned() {
                m.remove(&victim);
            }
        }
        m.insert(version_id.to_string(), (key_id.to_string(), cipher));
    }

    pub fn remove(&self, version_id: &str) {
        self.map.write().remove(version_id);
    }

    /// Drops every version of a key (it was deleted).
    pub fn remove_key(&self, key_id: &str) {
        self.map.write().retain(|_, (k, _)| k != key_id);
    }

    /// Drops everything (after the cache was emptied).
    pub fn clear(&self) {
        self.map.write().clear();
    }
}
