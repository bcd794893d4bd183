//! The wrapped-data-key record: what the KMS needs to give the volume key back, stored in the
//! volume's luksmeta slot typed [`RECORD_UUID`] as JSON (FORMAT.md §3).

use serde::{Deserialize, Serialize};

use crate::xts::Algorithm;

/// The luksmeta slot type of our record (a fixed random UUID: 7b6c2f1e-8a4d-4c55-9d3a-b10c4c7e5a01).
pub const RECORD_UUID: [u8; 16] =
    [0x7b, 0x6c, 0x2f, 0x1e, 0x8a, 0x4d, 0x4c, 0x55, 0x9d, 0x3a, 0xb1, 0x0c, 0x4c, 0x7e, 0x5a, 0x01];
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    /// The disk the data key was generated for; named in the encryption context.
    pub disk_id: String,
    /// `aes-xts-plain64` or `sm4-xts-plain64` on disk, as the LUKS header says.
    #[serde(with = "cipher_spec_text")]
    pub cipher: Algorithm,
    pub key_id: String,
    pub key_version_id: String,
    /// The KMS CiphertextBlob of the data key (base64 on disk).
    #[serde(with = "base64_text")]
    pub ciphertext_blob: Vec<u8>,
    /// The EncryptionContext the blob is bound to, exactly as sent to the KMS.
    pub encryption_context: String,
    pub created: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("the wrapped-key record is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("record version {0} is not supported")]
    Version(u32),
}

/// The data key length an algorithm needs: AES-256-XTS takes two 256-bit keys, SM4-XTS two 128-bit.
pub fn data_key_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::Aes => 64,
        Algorithm::Sm4 => 32,
    }
}

/// The EncryptionContext that binds a data key to its disk.
pub fn disk_context(disk_id: &str) -> String {
    serde_json::json!({ "blockcrypt:disk-id": disk_id }).to_string()
}

impl Record {
    pub fn parse(bytes: &[u8]) -> Result<Record, RecordError> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| RecordError::Shape(e.to_string()))?;
        if r.version != RECORD_VERSION {
            return Err(RecordError::Version(r.version));
        }
        Ok(r)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("record serialises")
    }

    pub fn set_wrapped(&mut self, w: &crate::kms::WrappedKey) {
        self.key_id = w.key_id.clone();
        self.key_version_id = w.key_version_id.clone();
        self.ciphertext_blob = w.blob.clone();
    }
}

/// The record's `cipher` field: the LUKS cipher spec of the algorithm.
mod cipher_spec_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Algorithm;

    pub fn serialize<S: Serializer>(alg: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(alg.spec())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        let tag = String::deserialize(d)?;
        Algorithm::ALL.into_iter().find(|a| a.spec() == tag).ok_or_else(|| {
            serde::de::Error::custom(format!("cipher {tag:?} is not aes-xts-plain64 or sm4-xts-plain64"))
        })
    }
}

/// The record's `ciphertext_blob` field: standard base64.
mod base64_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

    pub fn serialize<S: Serializer>(blob: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(blob))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(&text).map_err(|_| serde::de::Error::custom("the CiphertextBlob is not base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_refusals() {
        let r = Record {
            version: 1,
            disk_id: "d-1".into(),
            cipher: Algorithm::Aes,
            key_id: "k".into(),
            key_version_id: "v".into(),
            ciphertext_blob: b"blob".to_vec(),
            encryption_context: disk_context("d-1"),
            created: "now".into(),
        };
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(
            text.contains(r#""cipher":"aes-xts-plain64""#) && text.contains(r#""ciphertext_blob":"YmxvYg==""#),
            "{text}"
        );
        assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
        assert!(matches!(Record::parse(b"{}"), Err(RecordError::Shape(_))));
        for (from, to, why) in
            [("YmxvYg==", "%%%", "not base64"), ("aes-xts-plain64", "aes-cbc-essiv", "aes-cbc-essiv")]
        {
            let err = Record::parse(text.replace(from, to).as_bytes()).unwrap_err();
            assert!(matches!(&err, RecordError::Shape(m) if m.contains(why)), "{err}");
        }
        let mut bad = r;
        bad.version = 9;
        assert_eq!(Record::parse(&bad.to_bytes()), Err(RecordError::Version(9)));
    }
}
