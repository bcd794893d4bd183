//! The audit trail's key and anchor, kept by the engine because both must be as hard to forge as
//! the keys themselves.
//!
//! - The **chain key** MACs every audit line. It is 32 random bytes sealed under the root key
//!   (inside the token when the root key is there) in the store's `meta` table, so only a process
//!   that can open the store can extend or verify the chain; a writer of the log file alone cannot.
//! - The **anchor** is the chain's head (seq and MAC of the last line made durable), stored in the
//!   same table. Cutting lines off the end, deleting files or replacing the log with a recomputed
//!   chain leaves the file behind the anchor, which `kmsctl audit verify` reports.
//!
//! The line format itself belongs to the audit writer (the sidecar); this module only knows bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Engine, OpenError};
use crate::crypto::seal::Protector;
use crate::error::{KmsError, Result};
use crate::store::{Store, StoreLocation};

pub(super) const CHAIN_KEY_NAME: &str = "audit_chain_key";
pub(super) const CHAIN_KEY_AAD: &[u8] = b"kms-core audit chain key v1";
/// The anchor's name in `meta`. On a shared store each node keeps its own log and so its own
/// chain; its anchor is `audit_anchor/<node id>`.
const ANCHOR_NAME: &str = "audit_anchor";

fn anchor_name(location: &StoreLocation, node_id: &str) -> String {
    if location.is_shared() {
        format!("{ANCHOR_NAME}/{node_id}")
    } else {
        ANCHOR_NAME.to_string()
    }
}
/// Domain separation: a chain MAC is never valid as any other HMAC under the same key.
const LINE_LABEL: &[u8] = b"kms audit line v1\0";

/// The key that MACs audit lines. Its bytes never leave this type.
#[derive(Clone)]
pub struct ChainKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    pub(super) fn from_secret(secret: &[u8]) -> std::result::Result<ChainKey, String> {
        let k: [u8; 32] = secret.try_into().map_err(|_| "audit chain key has the wrong length".to_string())?;
        Ok(ChainKey(Zeroizing::new(k)))
    }

    /// A fresh random key (for logs that live apart from a store: tests, tools).
    pub fn generate() -> ChainKey {
        use rand::RngCore;
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut k[..]);
        ChainKey(k)
    }

    /// HMAC-SHA256 of one line's bytes (as the writer defines them).
    pub fn mac(&self, line: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0[..]).expect("any key length");
        m.update(LINE_LABEL);
        m.update(line);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `line`, compared in constant time.
    pub fn verifies(&self, line: &[u8], tag: &[u8]) -> bool {
        bool::from(self.mac(line).as_slice().ct_eq(tag))
    }
}

/// The head of the audit chain as last recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub mac: [u8; 32],
}

impl Anchor {
    fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..].copy_from_slice(&self.mac);
        b
    }

    fn decode(b: &[u8]) -> Option<Anchor> {
        if b.len() != 40 {
            return None;
        }
        Some(Anchor { seq: u64::from_be_bytes(b[..8].try_into().ok()?), mac: b[8..].try_into().ok()? })
    }
}

impl Engine {
    /// The key the audit writer MACs lines with.
    pub fn audit_chain_key(&self) -> ChainKey {
        self.chain_key.clone()
    }

    /// The audit chain's head as last anchored, if ever.
    pub fn audit_anchor(&self) -> Result<Option<Anchor>> {
        let mut store = self.store();
        read_anchor(&mut store, &anchor_name(&self.location, &self.node_id))
            .map_err(|e| KmsError::internal(format_args!("audit anchor: {e}")))
    }

    /// Records `anchor` as the chain's head, durably. An anchor never moves backwards: a lower
    /// seq is ignored (by the statement itself: the encoding starts with the big-endian seq), so
    /// a late writer cannot hide lines already anchored.
    pub fn anchor_audit(&self, anchor: Anchor) -> Result<()> {
        let name = anchor_name(&self.location, &self.node_id);
        self.ordered_store().advance_meta(&name, &anchor.encode()).map_err(|e| self.store_failure(e))
    }
}

fn read_anchor(store: &mut Store, name: &str) -> std::result::Result<Option<Anchor>, String> {
    match store.get_meta(name).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(b) => Anchor::decode(&b).map(Some).ok_or_else(|| "the stored audit anchor is damaged".to_string()),
    }
}

/// What a verifier needs, read from a store other processes may hold open: the chain key
/// (unsealed with `protector`) and the anchor of `node_id`'s log. A SQLite file is opened
/// read-only without its lock, so this works beside a running sidecar.
pub fn open_for_verification(
    store: &StoreLocation,
    node_id: &str,
    protector: &dyn Protector,
) -> std::result::Result<(ChainKey, Option<Anchor>), OpenError> {
    let anchor = anchor_name(store, node_id);
    let meta = Store::read_meta(store, &[CHAIN_KEY_NAME, &anchor]).map_err(|e| OpenError::Failed(e.to_string()))?;
    let sealed = meta[0].as_ref().ok_or_else(|| {
        OpenError::Failed(format!("{store} has no audit chain key: it was never opened by this version"))
    })?;
    let secret = protector.unseal(CHAIN_KEY_AAD, sealed).map_err(|e| {
        OpenError::WrongRootKey(format!("audit chain key does not unseal under {}: {e}", protector.describe()))
    })?;
    let key = ChainKey::from_secret(&secret).map_err(OpenError::Failed)?;
    let anchor = match &meta[1] {
        None => None,
        Some(b) => {
            Some(Anchor::decode(b).ok_or_else(|| OpenError::Failed("the stored audit anchor is damaged".into()))?)
        }
    };
    Ok((key, anchor))
}
