//! EncryptionContext: a JSON object of string → string, bound to ciphertexts as AAD.
//!
//! Two contexts are equal when they are equal as maps, so the bytes bound as AAD are a canonical
//! form: keys sorted, compact JSON, serde_json's escaping. An absent context and `{}` are the same
//! (both bind nothing). A context is never stored in a ciphertext blob.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::error::{KmsError, Result};

/// A parsed, validated EncryptionContext.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// Parses the wire form (a JSON string). `param` names the parameter in errors; `max_chars`
    /// bounds the raw string. Duplicate keys are refused: a context whose meaning depends on
    /// which duplicate a parser keeps is ambiguous.
    pub fn parse(param: &str, raw: Option<&str>, max_chars: usize) -> Result<Self> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(Self::default()),
            Some(r) => r,
        };
        if raw.chars().count() > max_chars {
            return Err(KmsError::invalid(param, format_args!("it is longer than {max_chars} characters")));
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        let map = de.deserialize_map(StrictMap).and_then(|m| de.end().map(|_| m)).map_err(|e| {
            KmsError::invalid(param, format_args!("it must be a JSON object of string keys to string values ({e})"))
        })?;
        Ok(EncryptionContext(map))
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        EncryptionContext(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes bound as AAD: empty for an empty context, else sorted compact JSON.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        if self.0.is_empty() {
            return Vec::new();
        }
        serde_json::to_vec(&self.0).expect("a map of strings always serialises")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

struct StrictMap;

impl<'de> Visitor<'de> for StrictMap {
    type Value = BTreeMap<String, String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((k, v)) = access.next_entry::<String, String>()? {
            if map.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format_args!("duplicate key {k:?}")));
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EncryptionContext> {
        EncryptionContext::parse("EncryptionContext", Some(s), 8192)
    }

    #[test]
    fn order_and_whitespace_do_not_matter() {
        let a = parse(r#"{"purpose": "demo", "env": "dev"}"#).unwrap();
        let b = parse(r#"{"env":"dev","purpose":"demo"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.canonical_bytes(), br#"{"env":"dev","purpose":"demo"}"#);
    }

    #[test]
    fn empty_and_absent_bind_nothing() {
        assert!(parse("{}").unwrap().canonical_bytes().is_empty());
        assert!(EncryptionContext::parse("E", None, 10).unwrap().is_empty());
        assert!(EncryptionContext::parse("E", Some("  "), 10).unwrap().is_empty());
    }

    #[test]
    fn non_string_values_and_non_objects_are_refused() {
        for bad in [
            r#"[{"Key":"Value"}]"#,
            r#"{"Key":12345}"#,
            r#"{"Key":["a","b"]}"#,
            r#"{"Key":null}"#,
            r#""str""#,
            r#"{"a":"b"} trailing"#,
            r#"{"a":"b","a":"c"}"#,
            "{",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidParameter, "{bad}");
            assert!(e.message().contains("EncryptionContext"));
        }
    }

    #[test]
    fn length_is_counted_in_characters() {
        let v = "密".repeat(8180);
        let ok = format!(r#"{{"k":"{v}"}}"#);
        assert_eq!(ok.chars().count(), 8188);
        assert!(parse(&ok).is_ok());
        let long = format!(r#"{{"k":"{v}xxxxx"}}"#);
        assert!(parse(&long).is_err());
    }
}
