//! Console users: a person signs in with a name and a password set for them in the config
//! (`[[console.users]]`), as an alternative to an access key pair. Only an Argon2id hash is kept
//! (`kms-sidecar hash-password` makes one); each user acts as the principal the entry names.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// `[[console.users]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    /// What the person types as the user name.
    pub name: String,
    /// Whom they act as (`user:alice`, `owner`).
    pub principal: String,
    /// `$argon2id$…` from `kms-sidecar hash-password`.
    pub password_hash: String,
}

/// A hash of `password` to put in the config.
pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < 12 {
        return Err("a console password has at least 12 characters".into());
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Checks the configured users once, at start: names unique and not access key ids, hashes
/// parseable Argon2, principals valid.
pub fn check(users: &[ConsoleUser], access_key_ids: &[String]) -> Result<(), String> {
    for (i, u) in users.iter().enumerate() {
        let at = format!("console.users[{i}] ({})", u.name);
        if u.name.trim().is_empty() || u.name.trim() != u.name {
            return Err(format!("{at}: a name without leading or trailing space"));
        }
        if users[..i].iter().any(|o| o.name == u.name) || access_key_ids.contains(&u.name) {
            return Err(format!("{at}: the name is also another user's or an access key id"));
        }
        let h = PasswordHash::new(&u.password_hash).map_err(|e| format!("{at}: password_hash: {e}"))?;
        if h.algorithm.as_str() != "argon2id" {
            return Err(format!("{at}: password_hash must be argon2id (kms-sidecar hash-password)"));
        }
        crate::config::parse_principal(&u.principal).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(())
}

/// Whether `password` is the user's.
pub fn verify(user: &ConsoleUser, password: &str) -> bool {
    PasswordHash::new(&user.password_hash)
        .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_bad_entries_are_refused_at_start() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let u = ConsoleUser { name: "alice".into(), principal: "user:alice".into(), password_hash: h };
        assert!(verify(&u, "correct horse battery"));
        assert!(!verify(&u, "correct horse batterY"));
        assert!(hash("short").is_err());
        assert!(check(std::slice::from_ref(&u), &[]).is_ok());
        assert!(check(&[u.clone(), u.clone()], &[]).is_err(), "two alices");
        assert!(check(std::slice::from_ref(&u), &["alice".into()]).is_err(), "an access key id");
        let plain = ConsoleUser { password_hash: "hunter2".into(), ..u.clone() };
        assert!(check(&[plain], &[]).is_err(), "a password, not a hash");
    }
}
