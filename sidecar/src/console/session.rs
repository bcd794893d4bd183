//! Console sessions: who signed in, the CSRF token their forms carry, and when they were last
//! seen. Held in memory only – a restart signs everyone out – and bounded: at most
//! `max_sessions`, the least recently used going first. The cookie holds 256 random bits; the
//! table is keyed by their SHA-256, so the table itself holds nothing a cookie could be made from.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kms_core::Principal;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::i18n::Lang;

/// The cookie's name. `__Host-` pins it to this origin, path `/` and (on HTTPS) Secure.
pub const COOKIE_TLS: &str = "__Host-kms_console";
pub const COOKIE_PLAIN: &str = "kms_console";

#[derive(Clone)]
pub struct Session {
    pub principal: Principal,
    pub access_key_id: String,
    /// Every form carries it; a POST without it (or with another session's) is refused.
    pub csrf: String,
    pub lang: Lang,
    /// One message for the next page (after a redirect): whether it reports success, and what.
    pub flash: Option<(bool, String)>,
    /// The last GetParametersForImport answer, per key: served as downloads, then dropped.
    pub import: Option<ImportParameters>,
    last_seen: Instant,
}

#[derive(Clone)]
pub struct ImportParameters {
    pub key_id: String,
    pub public_key: String,
    pub import_token: String,
    pub valid_to: String,
}

pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: usize,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn hash(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    pub fn new(idle: Duration, max: usize) -> Sessions {
        Sessions { by_hash: Mutex::new(HashMap::new()), idle, max: max.max(1) }
    }

    /// Starts a session and returns the cookie value that names it.
    pub fn start(&self, principal: Principal, access_key_id: String, lang: Lang) -> String {
        let cookie = random_hex();
        let now = Instant::now();
        let mut map = self.by_hash.lock();
        map.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        while map.len() >= self.max {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) else { break };
            map.remove(&oldest);
        }
        let session =
            Session { principal, access_key_id, csrf: random_hex(), lang, flash: None, import: None, last_seen: now };
        map.insert(hash(&cookie), session);
        cookie
    }

    /// The session a cookie names, if it has not been idle too long; seeing it counts as use.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.by_hash.lock();
        let key = hash(cookie);
        let expired = map.get(&key).is_some_and(|s| now.duration_since(s.last_seen) >= self.idle);
        if expired {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Changes the session a cookie names (a flash message, the language, import parameters).
    pub fn update(&self, cookie: &str, change: impl FnOnce(&mut Session)) {
        if let Some(s) = self.by_hash.lock().get_mut(&hash(cookie)) {
            change(s);
        }
    }

    /// The flash message, once.
    pub fn take_flash(&self, cookie: &str) -> Option<(bool, String)> {
        self.by_hash.lock().get_mut(&hash(cookie)).and_then(|s| s.flash.take())
    }

    pub fn end(&self, cookie: &str) {
        self.by_hash.lock().remove(&hash(cookie));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.lock().len()
    }
}

impl Session {
    /// Whether a form's token is this session's (constant time: the token is a secret).
    pub fn csrf_ok(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_are_bounded() {
        let s = Sessions::new(Duration::from_millis(50), 2);
        let a = s.start(Principal::Owner, "ak".into(), Lang::En);
        assert!(s.get(&a).is_some());
        assert!(s.get("not-a-session").is_none());
        let b = s.start(Principal::Owner, "ak".into(), Lang::En);
        let c = s.start(Principal::Owner, "ak".into(), Lang::En);
        assert_eq!(s.len(), 2, "the oldest went first");
        assert!(s.get(&a).is_none() && s.get(&b).is_some() && s.get(&c).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&b).is_none(), "idle too long");
        let d = s.start(Principal::Owner, "ak".into(), Lang::En);
        let sess = s.get(&d).unwrap();
        assert!(sess.csrf_ok(Some(&sess.csrf.clone())));
        assert!(!sess.csrf_ok(Some("x")) && !sess.csrf_ok(None));
        s.end(&d);
        assert!(s.get(&d).is_none());
    }
}
