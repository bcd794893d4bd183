//! Identifiers: key ids, version ids, alias names and ARNs, and the forms a `KeyId` parameter takes.

use rand::Rng;

use crate::error::{KmsError, Result};

const KEY_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const KEY_ID_RANDOM_LEN: usize = 21;
pub const ALIAS_PREFIX: &str = "alias/";
/// Aliases under this prefix belong to cloud-service keys and are created only by the engine.
pub const SERVICE_ALIAS_PREFIX: &str = "alias/acs/";
const ALIAS_MAX_LEN: usize = 255;

/// A new key id in the shape the real service uses: `key-` and 21 lower-case alphanumerics.
pub fn new_key_id() -> String {
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(4 + KEY_ID_RANDOM_LEN);
    id.push_str("key-");
    for _ in 0..KEY_ID_RANDOM_LEN {
        id.push(KEY_ID_ALPHABET[rng.gen_range(0..KEY_ID_ALPHABET.len())] as char);
    }
    id
}

/// A new key version id: a random UUID, as the service's GUID version ids.
pub fn new_version_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

pub fn key_arn(region: &str, account: &str, key_id: &str) -> String {
    format!("acs:kms:{region}:{account}:key/{key_id}")
}

/// The ARN of an alias; `name` carries the `alias/` prefix, as the resource path does.
pub fn alias_arn(region: &str, account: &str, name: &str) -> String {
    format!("acs:kms:{region}:{account}:{name}")
}

/// What a `KeyId` parameter names once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Id(String),
    /// With the `alias/` prefix.
    Alias(String),
}

impl KeyRef {
    /// Parses a `KeyId`: a key id, `alias/<name>`, or the ARN of either. An ARN of another
    /// region or account cannot name a key of this service, so it is reported as not found.
    pub fn parse(param: &str, value: &str, region: &str, account: &str) -> Result<KeyRef> {
        let value = value.trim();
        if value.is_empty() {
            return Err(KmsError::missing(param));
        }
        if let Some(rest) = value.strip_prefix("acs:kms:") {
            let mut parts = rest.splitn(3, ':');
            let (r, a, resource) = match (parts.next(), parts.next(), parts.next()) {
                (Some(r), Some(a), Some(res)) => (r, a, res),
                _ => return Err(KmsError::invalid(param, "malformed ARN")),
            };
            if let Some(id) = resource.strip_prefix("key/") {
                if r != region || a != account {
                    return Err(KmsError::key_not_found(value));
                }
                return Ok(KeyRef::Id(id.to_string()));
            }
            if resource.starts_with(ALIAS_PREFIX) {
                if r != region || a != account {
                    return Err(KmsError::alias_not_found(value));
                }
                return Ok(KeyRef::Alias(resource.to_string()));
            }
            return Err(KmsError::invalid(param, "an ARN must name key/<id> or alias/<name>"));
        }
        if value.starts_with(ALIAS_PREFIX) {
            return Ok(KeyRef::Alias(value.to_string()));
        }
        Ok(KeyRef::Id(value.to_string()))
    }
}

/// Checks an alias name as given to CreateAlias/UpdateAlias/DeleteAlias.
pub fn validate_alias_name(name: &str) -> Result<()> {
    let rest = name
        .strip_prefix(ALIAS_PREFIX)
        .ok_or_else(|| KmsError::invalid("AliasName", "an alias must start with \"alias/\""))?;
    if rest.is_empty() || rest.len() > ALIAS_MAX_LEN {
        return Err(KmsError::invalid(
            "AliasName",
            format_args!("the part after \"alias/\" must be 1 to {ALIAS_MAX_LEN} characters"),
        ));
    }
    if let Some(c) = rest.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/'))) {
        return Err(KmsError::invalid(
            "AliasName",
            format_args!("character {c:?} is not allowed; use letters, digits, '_', '-' and '/'"),
        ));
    }
    if rest.starts_with('/') || rest.ends_with('/') || rest.contains("//") {
        return Err(KmsError::invalid("AliasName", "empty path segment"));
    }
    Ok(())
}

/// The service (lower case) a reserved alias `alias/acs/<service>` belongs to.
pub fn service_of_alias(name: &str) -> Option<&str> {
    name.strip_prefix(SERVICE_ALIAS_PREFIX).filter(|s| !s.is_empty() && !s.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_have_the_service_shape() {
        let id = new_key_id();
        assert_eq!(id.len(), 25);
        assert!(id.starts_with("key-"));
        assert!(id[4..].bytes().all(|b| KEY_ID_ALPHABET.contains(&b)));
        assert_ne!(new_key_id(), id);
    }

    #[test]
    fn key_refs_parse_all_forms() {
        let p = |v| KeyRef::parse("KeyId", v, "cn-hangzhou", "123");
        assert_eq!(p("key-abc").unwrap(), KeyRef::Id("key-abc".into()));
        assert_eq!(p("alias/x").unwrap(), KeyRef::Alias("alias/x".into()));
        assert_eq!(p("acs:kms:cn-hangzhou:123:key/key-abc").unwrap(), KeyRef::Id("key-abc".into()));
        assert_eq!(p("acs:kms:cn-hangzhou:123:alias/x").unwrap(), KeyRef::Alias("alias/x".into()));
        assert_eq!(p("acs:kms:cn-beijing:123:key/key-abc").unwrap_err().code(), crate::ErrorCode::KeyNotFound);
        assert_eq!(p("acs:kms:x").unwrap_err().code(), crate::ErrorCode::InvalidParameter);
        assert_eq!(p("").unwrap_err().code(), crate::ErrorCode::MissingParameter);
    }

    #[test]
    fn alias_names_are_checked() {
        assert!(validate_alias_name("alias/app-key_1/prod").is_ok());
        for bad in ["app", "alias/", "alias/a b", "alias//x", "alias/x/", "alias/é"] {
            assert!(validate_alias_name(bad).is_err(), "{bad}");
        }
        assert!(validate_alias_name(&format!("alias/{}", "a".repeat(256))).is_err());
        assert_eq!(service_of_alias("alias/acs/oss"), Some("oss"));
        assert_eq!(service_of_alias("alias/acs/oss/x"), None);
        assert_eq!(service_of_alias("alias/app"), None);
    }
}
