//! PKCS#11 tokens through `cryptoki`: finding the module and slot, a logged-in session pool that
//! survives lost sessions and token resets (this file); objects used by label (`object.rs`); the
//! root-key [`Protector`] inside the token (`root_key.rs`). Keys with ProtectionLevel HSM build on
//! these.

mod object;
mod root_key;

pub use object::{TokenAesKey, TokenObject, TokenOpError, AES_GCM_MECHANISMS};
pub use root_key::TokenRootKey;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::seal::SealError;

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
    /// Pick the token by slot id instead (its label must then match `token_label` if one is set).
    pub slot: Option<u64>,
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be opened, by what an operator does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenOpenError {
    /// The PKCS#11 module cannot be loaded, or no slot holds the token.
    #[error("{0}")]
    Unavailable(String),
    /// The token refused the PIN (wrong, locked or expired).
    #[error("{0}")]
    Login(String),
}

/// An initialised module, the slot of the token, and a pool of logged-in sessions.
pub struct Token {
    ctx: Pkcs11,
    slot: Mutex<Slot>,
    slot_id: Option<u64>,
    pin: AuthPin,
    label: String,
    pool: Mutex<Vec<Session>>,
    last_reset: Mutex<Option<std::time::Instant>>,
    mechanisms: Mutex<Option<Arc<Vec<MechanismType>>>>,
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

impl PooledSession<'_> {
    /// Closes the session instead of returning it to the pool (it failed in a way that may have
    /// left it unusable).
    fn discard(mut self) {
        self.session.take();
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

/// One initialised context per module for the whole process: `C_Initialize` may be called only
/// once per library, and every engine opened in this process (tests open several) shares it.
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut modules = MODULES.lock();
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(path).map_err(|e| format!("PKCS#11 module {}: {e}", path.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("PKCS#11 initialise: {e}")),
    }
    modules.push((path.to_path_buf(), ctx.clone()));
    Ok(ctx)
}

/// The slot of the token: by id when one is configured (checking the label if one is set),
/// else by label.
fn find_slot(ctx: &Pkcs11, label: &str, slot_id: Option<u64>) -> Result<Option<Slot>, String> {
    for slot in ctx.get_slots_with_token().map_err(|e| format!("PKCS#11 slots: {e}"))? {
        if slot_id.is_some_and(|id| slot.id() != id) {
            continue;
        }
        let info = ctx.get_token_info(slot).map_err(|e| format!("PKCS#11 token info: {e}"))?;
        let found = info.label().trim_end();
        if slot_id.is_some() && !label.is_empty() && found != label {
            return Err(format!("slot {} holds token {found:?}, not {label:?}", slot.id()));
        }
        if slot_id.is_some() || found == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// The shortest time between two module resets (a key that is really gone must not make every
/// request reset the module).
const RESET_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Token {
    /// Finalises and re-initialises the module and finds the token's slot again: what a token
    /// that went away and came back needs before the module shows its objects again (SoftHSM2
    /// forgets the objects of a token whose store vanished; hardware tokens may change slot).
    /// Every session is gone afterwards; they are reopened and logged in on demand.
    pub fn reset(&self) -> Result<(), SealError> {
        let mut last = self.last_reset.lock();
        if last.is_some_and(|t| t.elapsed() < RESET_INTERVAL) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        tracing::warn!(token = %self.label, "re-initialising the PKCS#11 module");
        self.pool.lock().clear();
        self.mechanisms.lock().take();
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(token = %self.label, error = %e, "C_Finalize");
        }
        match self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(SealError::Unavailable(format!("PKCS#11 re-initialise: {e}"))),
        }
        match find_slot(&self.ctx, &self.label, self.slot_id).map_err(SealError::Unavailable)? {
            Some(slot) => *self.slot.lock() = slot,
            None => return Err(SealError::Unavailable(format!("token {:?} is not present", self.label))),
        }
        Ok(())
    }

    /// Loads the module, finds the token by label and checks the PIN.
    pub fn open(cfg: &TokenConfig) -> Result<Arc<Token>, TokenOpenError> {
        let ctx = module(&cfg.module).map_err(TokenOpenError::Unavailable)?;
        let slot =
            find_slot(&ctx, &cfg.token_label, cfg.slot).map_err(TokenOpenError::Unavailable)?.ok_or_else(|| {
                TokenOpenError::Unavailable(match cfg.slot {
                    Some(id) => format!("no PKCS#11 token in slot {id} of {}", cfg.module.display()),
                    None => format!("no PKCS#11 token labelled {:?} in {}", cfg.token_label, cfg.module.display()),
                })
            })?;
        let token = Token {
            ctx,
            slot: Mutex::new(slot),
            slot_id: cfg.slot,
            pin: AuthPin::new(cfg.pin.as_str().into()),
            label: cfg.token_label.clone(),
            pool: Mutex::new(Vec::new()),
            last_reset: Mutex::new(None),
            mechanisms: Mutex::new(None),
        };
        // Log in once now, so a wrong PIN stops the start instead of the first request.
        drop(token.session_raw().map_err(|e| TokenOpenError::Login(format!("login to token {}: {e}", token.label)))?);
        Ok(Arc::new(token))
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The slot the token is in now.
    pub fn slot_id(&self) -> u64 {
        self.slot.lock().id()
    }

    /// A logged-in read-write session.
    pub fn session(&self) -> Result<PooledSession<'_>, SealError> {
        self.session_raw().map_err(|e| SealError::Unavailable(format!("session with token {}: {e}", self.label)))
    }

    fn session_raw(&self) -> Result<PooledSession<'_>, cryptoki::error::Error> {
        if let Some(s) = self.pool.lock().pop() {
            return Ok(PooledSession { token: self, session: Some(s) });
        }
        let s = self.ctx.open_rw_session(*self.slot.lock())?;
        match s.login(UserType::User, Some(&self.pin)) {
            // Login is per application: another session already did it.
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(e),
        }
        Ok(PooledSession { token: self, session: Some(s) })
    }

    fn attempt<T>(
        &self,
        op: &impl Fn(&Session) -> Result<T, cryptoki::error::Error>,
    ) -> Result<T, cryptoki::error::Error> {
        let s = self.session_raw()?;
        let r = op(&s);
        if let Err(cryptoki::error::Error::Pkcs11(rv, _)) = &r {
            if session_lost(*rv) || token_gone(*rv) {
                s.discard();
            }
        }
        r
    }

    /// Runs `op` on a pooled session, riding out two kinds of trouble with one retry: the
    /// session or login lost (someone called `C_CloseAllSessions`, a reconnect) – the pool is
    /// emptied and a fresh session logs in; and the token gone from its slot or the module
    /// uninitialised – the module is [reset](Token::reset). Whatever remains is classified.
    pub fn with_session<T>(
        &self,
        what: &str,
        op: impl Fn(&Session) -> Result<T, cryptoki::error::Error>,
    ) -> Result<T, TokenOpError> {
        match self.attempt(&op) {
            Ok(v) => Ok(v),
            Err(cryptoki::error::Error::Pkcs11(rv, _)) if session_lost(rv) => {
                let stale = std::mem::take(&mut *self.pool.lock());
                tracing::warn!(token = %self.label, error = %rv, dropped = stale.len(), "PKCS#11 session lost; reconnecting");
                drop(stale);
                self.attempt(&op).map_err(|e| TokenOpError::classify(what, e))
            }
            Err(cryptoki::error::Error::Pkcs11(rv, _)) if token_gone(rv) => {
                tracing::warn!(token = %self.label, error = %rv, "PKCS#11 token unavailable");
                self.reset().map_err(TokenOpError::Unavailable)?;
                self.attempt(&op).map_err(|e| TokenOpError::classify(what, e))
            }
            Err(e) => Err(TokenOpError::classify(what, e)),
        }
    }

    /// The mechanisms the token offers (what it can do is discovered, not assumed). Asked once
    /// and kept – a token's mechanisms do not change while it is present – until a reset.
    pub fn mechanisms(&self) -> Result<Arc<Vec<MechanismType>>, String> {
        let mut cached = self.mechanisms.lock();
        if let Some(m) = &*cached {
            return Ok(m.clone());
        }
        let m = Arc::new(self.ctx.get_mechanism_list(*self.slot.lock()).map_err(|e| e.to_string())?);
        *cached = Some(m.clone());
        Ok(m)
    }

    /// The names of the `wanted` mechanisms the token does not offer.
    pub fn missing_mechanisms(&self, wanted: &[(MechanismType, &'static str)]) -> Result<Vec<&'static str>, SealError> {
        let have = self.mechanisms().map_err(SealError::Unavailable)?;
        Ok(wanted.iter().filter(|(m, _)| !have.contains(m)).map(|(_, n)| *n).collect())
    }

    /// A persistent AES-256 key generated in the token: sensitive, never extractable.
    pub fn generate_aes_key(&self, label: &str) -> Result<ObjectHandle, SealError> {
        let mut template = aes_key_template(label);
        template.push(Attribute::ValueLen(32.into()));
        self.with_session("generate key in token", |s| s.generate_key(&Mechanism::AesKeyGen, &template))
            .map_err(TokenOpError::unavailable)
    }

    /// The one secret-key object labelled `label`.
    pub fn find_secret_key(&self, label: &str) -> Result<Option<ObjectHandle>, SealError> {
        self.find_one(ObjectClass::SECRET_KEY, label)
    }

    /// The one object of `class` labelled `label`.
    pub(crate) fn find_one(&self, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>, SealError> {
        let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
        let found =
            self.with_session("find key in token", |s| s.find_objects(&template)).map_err(TokenOpError::unavailable)?;
        match found.as_slice() {
            [] => Ok(None),
            [k] => Ok(Some(*k)),
            _ => Err(SealError::Unavailable(format!("several token objects are labelled {label:?}"))),
        }
    }

    /// Destroys the objects labelled `label` (crypto-shredding a deleted key).
    pub fn destroy(&self, label: &str) -> Result<(), SealError> {
        let template = [Attribute::Label(label.as_bytes().to_vec())];
        self.with_session("destroy key in token", |s| {
            s.find_objects(&template)?.into_iter().try_for_each(|h| s.destroy_object(h))
        })
        .map_err(TokenOpError::unavailable)
    }
}

/// The attributes of every AES key object this service makes (generated or unwrapped): persistent,
/// private, sensitive, never extractable, for encryption and decryption only – not a MAC key, not a
/// wrapping key.
pub(crate) fn aes_key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Return values that mean the session (or the login, which belongs to the sessions) is gone.
pub(super) fn session_lost(rv: cryptoki::error::RvError) -> bool {
    use cryptoki::error::RvError::*;
    matches!(rv, SessionHandleInvalid | SessionClosed | UserNotLoggedIn | SessionCount)
}

/// Return values that mean the token (or the module's view of it) is gone until a reset.
pub(super) fn token_gone(rv: cryptoki::error::RvError) -> bool {
    use cryptoki::error::RvError::*;
    matches!(
        rv,
        DeviceRemoved | TokenNotPresent | TokenNotRecognized | SlotIdInvalid | CryptokiNotInitialized | DeviceError
    )
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
