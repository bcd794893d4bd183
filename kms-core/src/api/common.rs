//! Pieces shared by many actions: secret byte strings, base64 fields, paging, empty responses.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{KmsError, Result};

/// Bytes that must not leak: plaintexts and data keys. Zeroized on drop, redacted in `Debug`,
/// base64 on the wire.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(b: &[u8]) -> Self {
        SecretBytes(b.to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = zeroize::Zeroizing::new(B64.encode(&self.0));
        let out = s.serialize_str(&text);
        text.zeroize();
        out
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        B64.decode(text.as_bytes()).map(SecretBytes).map_err(serde::de::Error::custom)
    }
}

/// A secret value as text (SecretData): zeroized on drop, redacted in `Debug`, a plain string on
/// the wire.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretString({} bytes, redacted)", self.0.len())
    }
}

/// Serde adapter for non-secret byte fields carried as base64 (ciphertext blobs).
pub mod base64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Decodes a base64 parameter, naming it in the error.
pub fn decode_base64(param: &str, value: &str) -> Result<Vec<u8>> {
    B64.decode(value.trim().as_bytes())
        .map_err(|e| KmsError::invalid(param, format_args!("it is not valid base64 ({e})")))
}

pub fn encode_base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// `PageNumber` / `PageSize` as requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PageRequest {
    pub page_number: Option<i64>,
    pub page_size: Option<i64>,
}

/// The validated page: number from 1, size 1–100 (default 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: u32,
    pub size: u32,
}

impl PageRequest {
    pub fn validate(self) -> Result<Page> {
        let number = self.page_number.unwrap_or(1);
        if number < 1 || number > u32::MAX as i64 {
            return Err(KmsError::invalid("PageNumber", "it must be 1 or greater"));
        }
        let size = self.page_size.unwrap_or(10);
        if !(1..=100).contains(&size) {
            return Err(KmsError::invalid("PageSize", "it must be between 1 and 100"));
        }
        Ok(Page { number: number as u32, size: size as u32 })
    }
}

impl Page {
    /// The slice of `items` this page covers.
    /// How many items come before this page.
    pub fn offset(&self) -> u64 {
        (self.number as u64 - 1) * self.size as u64
    }

    pub fn slice<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = usize::try_from(self.offset()).unwrap_or(usize::MAX).min(items.len());
        let end = start.saturating_add(self.size as usize).min(items.len());
        &items[start..end]
    }
}

/// An action that returns nothing but the `RequestId`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_are_base64_and_redacted() {
        let s = SecretBytes::new(b"hello".to_vec());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"aGVsbG8=\"");
        assert_eq!(format!("{s:?}"), "SecretBytes(5 bytes, redacted)");
        let back: SecretBytes = serde_json::from_str("\"aGVsbG8=\"").unwrap();
        assert_eq!(back.expose(), b"hello");
    }

    #[test]
    fn paging_is_validated_and_sliced() {
        let p = PageRequest { page_number: Some(2), page_size: Some(3) }.validate().unwrap();
        assert_eq!(p.slice(&[1, 2, 3, 4, 5, 6, 7]), &[4, 5, 6]);
        let p = PageRequest { page_number: Some(9), page_size: Some(3) }.validate().unwrap();
        assert!(p.slice(&[1, 2]).is_empty());
        assert!(PageRequest { page_number: Some(0), page_size: None }.validate().is_err());
        assert!(PageRequest { page_number: None, page_size: Some(101) }.validate().is_err());
        assert_eq!(PageRequest::default().validate().unwrap(), Page { number: 1, size: 10 });
    }
}

/// The request of an action that takes no parameters (DescribeRegions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoParameters {}
