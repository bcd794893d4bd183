//! Request parameters: the query string and an `application/x-www-form-urlencoded` body, both
//! form-decoded (`+` is a space) and merged, the body winning on duplicates (spec §3, §8).
//!
//! [`Params::decode`] turns them into the typed request structs of `kms_core::api` through serde,
//! so each request has one definition: strings as given, booleans case-insensitively
//! (`True`/`true`), integers from their decimal text, byte fields from base64. A missing required
//! field is `MissingParameter`, a value that does not parse is `InvalidParameter`, both naming the
//! parameter.

use std::collections::BTreeMap;
use std::fmt;

use kms_core::{ErrorCode, KmsError};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Merges the query and (when it is a form) the body.
    pub fn from_request(query: &str, form_body: Option<&[u8]>) -> Params {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            map.insert(k.into_owned(), v.into_owned());
        }
        if let Some(body) = form_body {
            for (k, v) in form_urlencoded::parse(body) {
                map.insert(k.into_owned(), v.into_owned());
            }
        }
        Params { map }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Params {
        Params { map: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Decodes the parameters into a request type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, KmsError> {
        T::deserialize(ParamsDeserializer { params: self }).map_err(ParamError::into_kms)
    }
}

/// Why decoding failed, with the parameter it concerns.
#[derive(Debug)]
pub enum ParamError {
    Missing(String),
    Invalid(String, String),
    Other(String),
}

impl ParamError {
    fn into_kms(self) -> KmsError {
        match self {
            ParamError::Missing(p) => KmsError::missing(&p),
            ParamError::Invalid(p, why) => KmsError::invalid(&p, why),
            ParamError::Other(why) => KmsError::with_detail(ErrorCode::InvalidParameter, why),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Missing(p) => write!(f, "missing {p}"),
            ParamError::Invalid(p, why) => write!(f, "{p}: {why}"),
            ParamError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamError::Other(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        ParamError::Missing(field.to_string())
    }
}

struct ParamsDeserializer<'a> {
    params: &'a Params,
}

impl<'de, 'a> de::Deserializer<'de> for ParamsDeserializer<'a> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_map(ParamsMap { iter: self.params.map.iter(), current: None })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct ParamsMap<'a> {
    iter: std::collections::btree_map::Iter<'a, String, String>,
    current: Option<(&'a String, &'a String)>,
}

impl<'de, 'a> MapAccess<'de> for ParamsMap<'a> {
    type Error = ParamError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ParamError> {
        match self.iter.next() {
            Some(kv) => {
                self.current = Some(kv);
                seed.deserialize(kv.0.as_str().into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ParamError> {
        let (k, v) = self.current.take().expect("value after key");
        seed.deserialize(ParamValue(v)).map_err(|e| match e {
            ParamError::Other(why) | ParamError::Invalid(_, why) => ParamError::Invalid(k.clone(), why),
            m => m,
        })
    }
}

/// One parameter's text, deserialised as whatever the target field asks for.
struct ParamValue<'a>(&'a str);

impl<'a> ParamValue<'a> {
    fn invalid(&self, what: &str) -> ParamError {
        ParamError::Other(format!("{:?} is not {what}", self.0))
    }
}

macro_rules! parse_number {
    ($($method:ident => $visit:ident : $t:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
            let n: $t = self.0.trim().parse().map_err(|_| self.invalid("an integer"))?;
            visitor.$visit(n)
        }
    )*};
}

impl<'de, 'a> de::Deserializer<'de> for ParamValue<'a> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(self.invalid("true or false")),
        }
    }

    parse_number! {
        deserialize_i8 => visit_i8: i8, deserialize_i16 => visit_i16: i16, deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64, deserialize_u8 => visit_u8: u8, deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32, deserialize_u64 => visit_u64: u64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_core::api::*;

    #[test]
    fn query_and_form_body_merge_with_plus_as_space() {
        let p = Params::from_request("A=1&B=x+y&C=%2B", Some(b"C=body&D=p%40ss+w%2Brd"));
        assert_eq!(p.get("B"), Some("x y"));
        assert_eq!(p.get("C"), Some("body"), "the body wins");
        assert_eq!(p.get("D"), Some("p@ss w+rd"));
    }

    #[test]
    fn typed_requests_decode_with_wire_conventions() {
        let p = Params::from_pairs([
            ("KeyId", "alias/x"),
            ("Plaintext", "SGVsbG8gS01TIQ=="),
            ("EncryptionContext", r#"{"a": "b"}"#),
            ("DryRun", "False"),
            ("Action", "Encrypt"),
        ]);
        let r: EncryptRequest = p.decode().unwrap();
        assert_eq!((r.key_id.as_str(), r.plaintext.expose(), r.dry_run), ("alias/x", &b"Hello KMS!"[..], false));
        assert_eq!(r.encryption_context.as_deref(), Some(r#"{"a": "b"}"#));
        let r: CreateKeyRequest = Params::from_pairs([("EnableAutomaticRotation", "True")]).decode().unwrap();
        assert_eq!(r.enable_automatic_rotation, Some(true));
        let r: ListKeysRequest = Params::from_pairs([("PageSize", "20")]).decode().unwrap();
        assert_eq!(r.page_size, Some(20));
    }

    #[test]
    fn errors_name_the_parameter() {
        let e = Params::from_pairs([("Plaintext", "aGk=")]).decode::<EncryptRequest>().unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (ErrorCode::MissingParameter, "The parameter \"KeyId\" is needed but not provided.")
        );
        let e = Params::from_pairs([("KeyId", "k"), ("Plaintext", "***")]).decode::<EncryptRequest>().unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidParameter);
        assert!(e.message().contains("\"Plaintext\""), "{}", e.message());
        let e = Params::from_pairs([("PageSize", "ten")]).decode::<ListKeysRequest>().unwrap_err();
        assert!(e.message().contains("\"PageSize\""), "{}", e.message());
        let e = Params::from_pairs([("EnableAutomaticRotation", "yes")]).decode::<CreateKeyRequest>().unwrap_err();
        assert!(e.message().contains("EnableAutomaticRotation"), "{}", e.message());
    }
}
