//! PKCS#11 tokens through `cryptoki`: a logged-in session pool, and a root-key [`Protector`] whose
//! AES-256 key is generated inside the token (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`) and used only
//! there with `CKM_AES_GCM`, so the key that seals every stored key version never exists in this
//! process. (Keys with ProtectionLevel HSM that live in the token build on this module.)
//!
//! Sealed record from the token protector: `02` ‖ 12-byte IV ‖ ciphertext ‖ 16-byte tag, AAD as for
//! the software root key (FORMAT.md §2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use rand::RngCore;
use zeroize::Zeroizing;

use super::seal::{Protector, SealError};

const SEALED_TOKEN_V1: u8 = 2;
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
/// Sessions kept open for reuse; more are opened under load and closed when returned past this.
const POOL_MAX: usize = 8;

/// Where the token is and how to log in.
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

/// An initialised module, the slot of the token, and a pool of logged-in sessions.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    label: String,
    pool: Mutex<Vec<Session>>,
}

/// A session borrowed from the pool; returned on drop.
pub struct PooledSession<'t> {
    token: &'t Token,
    session: Option<Session>,
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until drop")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let mut pool = self.token.pool.lock();
            if pool.len() < POOL_MAX {
                pool.push(s);
            }
        }
    }
}

fn unavailable(what: &str) -> impl Fn(cryptoki::error::Error) -> SealError + '_ {
    move |e| SealError::Unavailable(format!("{what}: {e}"))
}

impl Token {
    /// Loads the module, finds the token by label and checks the PIN.
    pub fn open(cfg: &TokenConfig) -> Result<Arc<Token>, String> {
        let ctx = Pkcs11::new(&cfg.module).map_err(|e| format!("PKCS#11 module {}: {e}", cfg.module.display()))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| format!("PKCS#11 initialise: {e}"))?;
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(|e| format!("PKCS#11 slots: {e}"))? {
            let info = ctx.get_token_info(slot).map_err(|e| format!("PKCS#11 token info: {e}"))?;
            if info.label().trim_end() == cfg.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found
            .ok_or_else(|| format!("no PKCS#11 token labelled {:?} in {}", cfg.token_label, cfg.module.display()))?;
        let token = Token {
            ctx,
            slot,
            pin: AuthPin::new(cfg.pin.as_str().into()),
            label: cfg.token_label.clone(),
            pool: Mutex::new(Vec::new()),
        };
        // Log in once now, so a wrong PIN stops the start instead of the first request.
        drop(token.session().map_err(|e| e.to_string())?);
        Ok(Arc::new(token))
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A logged-in read-write session.
    pub fn session(&self) -> Result<PooledSession<'_>, SealError> {
        if let Some(s) = self.pool.lock().pop() {
            return Ok(PooledSession { token: self, session: Some(s) });
        }
        let s = self.ctx.open_rw_session(self.slot).map_err(unavailable("open session"))?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) => {}
            // Login is per application: another session already did it.
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(SealError::Unavailable(format!("login to token {}: {e}", self.label))),
        }
        Ok(PooledSession { token: self, session: Some(s) })
    }

    /// The mechanisms the token offers (what it can do is discovered, not assumed).
    pub fn mechanisms(&self) -> Result<Vec<MechanismType>, String> {
        self.ctx.get_mechanism_list(self.slot).map_err(|e| e.to_string())
    }
}

/// The root key as an unextractable AES-256 object in the token.
pub struct TokenRootKey {
    token: Arc<Token>,
    key: ObjectHandle,
    label: String,
}

impl TokenRootKey {
    /// Finds the AES key labelled `label`, or generates it in the token (sensitive, never
    /// extractable, persistent).
    pub fn load_or_create(token: Arc<Token>, label: &str) -> Result<TokenRootKey, String> {
        let s = token.session().map_err(|e| e.to_string())?;
        let found = s
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| format!("find root key: {e}"))?;
        let key = match found.as_slice() {
            [k] => *k,
            [] => {
                let k = s
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::ValueLen(32.into()),
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(true),
                            Attribute::Label(label.as_bytes().to_vec()),
                        ],
                    )
                    .map_err(|e| format!("generate root key in token {}: {e}", token.label))?;
                tracing::info!(token = %token.label, label, "generated the root key inside the token");
                k
            }
            _ => return Err(format!("token {} has several keys labelled {label:?}", token.label)),
        };
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
        Ok(TokenRootKey { token, key, label: label.to_string() })
    }
}

impl Protector for TokenRootKey {
    fn seal(&self, aad: &[u8], material: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, TAG_BITS.into()).map_err(unavailable("GCM parameters"))?;
        let s = self.token.session()?;
        let ct = s.encrypt(&Mechanism::AesGcm(params), self.key, material).map_err(unavailable("token encrypt"))?;
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
        let mut iv: [u8; IV_LEN] = sealed[1..1 + IV_LEN].try_into().expect("length checked");
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(unavailable("GCM parameters"))?;
        let s = self.token.session()?;
        match s.decrypt(&Mechanism::AesGcm(params), self.key, &sealed[1 + IV_LEN..]) {
            Ok(pt) => Ok(Zeroizing::new(pt)),
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::EncryptedDataInvalid | cryptoki::error::RvError::EncryptedDataLenRange,
                _,
            )) => Err(SealError::Unauthentic),
            Err(e) => Err(SealError::Unavailable(format!("token decrypt: {e}"))),
        }
    }

    fn describe(&self) -> String {
        format!("root key {:?} in PKCS#11 token {:?}", self.label, self.token.label)
    }
}

/// The SoftHSM2 module on Debian, for defaults and tests.
pub fn default_softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.exists())
    .map(Path::to_path_buf)
}
