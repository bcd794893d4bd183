//! How byte fields of records are written in a change list (`kms_changes.payload`, JSON): base64,
//! a third of the size of JSON's array of numbers. The bytes are sealed material or MACs, never
//! plaintext key material.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serializer};

pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

pub mod opt_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A change list as stored in `kms_changes.payload`.
pub fn encode_changes(changes: &[super::Change]) -> String {
    serde_json::to_string(changes).expect("change records serialise")
}

pub fn decode_changes(payload: &str) -> Result<Vec<super::Change>, String> {
    serde_json::from_str(payload).map_err(|e| format!("undecodable change list: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::Change;
    use super::*;
    use crate::model::{SecretVersionRecord, VersionRecord};

    #[test]
    fn change_lists_round_trip() {
        let changes = vec![
            Change::PutVersion(VersionRecord {
                version_id: "v".into(),
                key_id: "key-a".into(),
                created_at: 7,
                sealed: vec![0, 1, 255],
            }),
            Change::PutSecretVersion(SecretVersionRecord {
                secret_name: "s".into(),
                version_id: "v1".into(),
                created_at: 1,
                data_type: "text".into(),
                stages: vec!["ACSCurrent".into()],
                sealed: vec![9; 40],
            }),
            Change::DeleteTag {
                resource_type: crate::model::ResourceType::Secret,
                resource_id: "s".into(),
                key: "k".into(),
            },
        ];
        let text = encode_changes(&changes);
        assert!(text.contains("\"AAH/\""), "bytes are base64: {text}");
        assert_eq!(decode_changes(&text).unwrap(), changes);
        assert!(decode_changes("[{\"Nope\":1}]").is_err());
    }
}
