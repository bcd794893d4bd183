//! Where the store lives, parsed once from `--store` / `[store] url`: a path means the embedded
//! SQLite file, a `postgres://` or `postgresql://` URL a shared PostgreSQL database.

use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A libpq-style URL: several `host:port` pairs and `target_session_attrs=read-write` give
    /// failover to whichever host accepts writes.
    Postgres(String),
}

impl StoreLocation {
    pub fn parse(s: &str) -> Result<StoreLocation, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("the store location is empty".into());
        }
        let lower = t.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            super::postgres::config(t).map_err(|e| e.0)?;
            return Ok(StoreLocation::Postgres(t.to_string()));
        }
        if lower.contains("://") {
            return Err(format!("store {}: only a file path or a postgres:// URL is understood", redact(t)));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(t)))
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme_end + 3], &rest[at..])
        }
        None => url.to_string(),
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            StoreLocation::parse("/var/lib/kms/kms.db").unwrap(),
            StoreLocation::Sqlite("/var/lib/kms/kms.db".into())
        );
        let u = "postgresql://kms:s3cret@db1:5432,db2:5432/kms?target_session_attrs=read-write";
        let l = StoreLocation::parse(u).unwrap();
        assert!(l.is_shared());
        assert_eq!(l.to_string(), "postgresql://kms:***@db1:5432,db2:5432/kms?target_session_attrs=read-write");
        assert!(!format!("{l:?}").contains("s3cret"));
        assert!(StoreLocation::parse("mysql://x/y").is_err());
        assert!(StoreLocation::parse("  ").is_err());
        assert!(StoreLocation::parse("postgres://h/db?sslmode=bogus").is_err());
    }
}
