//! What each action's request type reads, found by asking the type itself: its serde
//! `Deserialize` impl names its fields, asks for a value of some kind for each, and reports the
//! first required one that is missing. Reading the names off the type that decodes the request
//! means the list cannot drift from what the server accepts; only the one-line descriptions
//! (`parameter_docs.rs`) are written by hand, and a test fails when one is missing.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::parameter_docs;

/// One request parameter of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// As sent on the wire: `KeyId`, `EncryptionContext`, …
    pub name: &'static str,
    /// A request without it is refused with `MissingParameter`.
    pub required: bool,
    pub kind: ParameterKind,
    /// What it means, in one line.
    pub about: &'static str,
}

/// What a parameter's value is read as (every value travels as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterKind {
    Text,
    Integer,
    Boolean,
    /// Sent indexed: `Name.1`, `Name.2`, … (and `Name.1.Field` for lists of objects).
    List,
}

impl ParameterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterKind::Text => "string",
            ParameterKind::Integer => "integer",
            ParameterKind::Boolean => "boolean",
            ParameterKind::List => "list",
        }
    }
}

/// What probing a request type found.
pub(super) struct Probed {
    pub parameters: Vec<Parameter>,
    /// The type decoded from its required fields alone: the required list is whole. Read by
    /// the test that proves it for every action, so a new request type the probe cannot
    /// satisfy fails there rather than showing a short list in `--help`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub complete: bool,
}

/// The parameters of request type `T`, in declaration order.
pub(super) fn of<T: DeserializeOwned>(action: &'static str) -> Probed {
    let names = field_names::<T>();
    let (required, complete) = required_fields::<T>(names);
    let parameters = names
        .iter()
        .map(|&name| Parameter {
            name,
            required: required.contains(&name),
            kind: kind_of::<T>(name),
            about: parameter_docs::about(action, name),
        })
        .collect();
    Probed { parameters, complete }
}

/// The struct's field names, as serde spells them (after `rename_all`).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(ProbeError::Fields(f)) => f,
        // A request type that is not a struct has no named parameters.
        _ => &[],
    }
}

/// Deserialises `T` from maps holding ever more fields: each attempt names the first required
/// field still missing, until the type is satisfied (`true`) or fails for another reason.
fn required_fields<T: DeserializeOwned>(names: &'static [&'static str]) -> (Vec<&'static str>, bool) {
    let mut present: Vec<&'static str> = Vec::new();
    for _ in 0..=names.len() {
        let kinds = RefCell::new(Vec::new());
        match T::deserialize(Entries { names: &present, next: 0, kinds: &kinds }) {
            Ok(_) => return (present, true),
            Err(ProbeError::Missing(f)) if !present.contains(&f) => present.push(f),
            Err(_) => break,
        }
    }
    (present, false)
}

/// The kind of value `T` asks for under `name`.
fn kind_of<T: DeserializeOwned>(name: &'static str) -> ParameterKind {
    let kinds = RefCell::new(Vec::new());
    let only = [name];
    let _ = T::deserialize(Entries { names: &only, next: 0, kinds: &kinds });
    let first = kinds.borrow().first().copied();
    first.unwrap_or(ParameterKind::Text)
}

#[derive(Debug)]
enum ProbeError {
    Fields(&'static [&'static str]),
    Missing(&'static str),
    Other,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ProbeError::Other
    }

    fn missing_field(field: &'static str) -> Self {
        ProbeError::Missing(field)
    }
}

/// Answers `deserialize_struct` with the field list and nothing else.
struct FieldNames;

impl<'de> Deserializer<'de> for FieldNames {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Other)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ProbeError> {
        Err(ProbeError::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A struct's parameters as a map holding `names`, each with a harmless value of whatever kind
/// the field asks for (recorded in `kinds`).
struct Entries<'a> {
    names: &'a [&'static str],
    next: usize,
    kinds: &'a RefCell<Vec<ParameterKind>>,
}

impl<'de> Deserializer<'de> for Entries<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ProbeError> {
        let Some(name) = self.names.get(self.next) else { return Ok(None) };
        self.next += 1;
        seed.deserialize((*name).into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ProbeError> {
        let asked = Cell::new(None);
        let value = seed.deserialize(Sample { asked: &asked });
        if let Some(kind) = asked.get() {
            self.kinds.borrow_mut().push(kind);
        }
        value
    }
}

/// A value that takes whatever shape it is asked for: `AAAA` as text (valid base64, a valid
/// name), 1 as a number, false as a boolean, empty as a list or map.
struct Sample<'a> {
    asked: &'a Cell<Option<ParameterKind>>,
}

impl Sample<'_> {
    fn asked(&self, kind: ParameterKind) {
        if self.asked.get().is_none() {
            self.asked.set(Some(kind));
        }
    }
}

impl<'de> Deserializer<'de> for Sample<'_> {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.asked(ParameterKind::Text);
        visitor.visit_str("AAAA")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.asked(ParameterKind::Boolean);
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.asked(ParameterKind::Integer);
        visitor.visit_i64(1)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.asked(ParameterKind::Integer);
        visitor.visit_u64(1)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.asked(ParameterKind::List);
        visitor.visit_seq(Nothing)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char str string bytes byte_buf
        unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// An empty list.
struct Nothing;

impl<'de> SeqAccess<'de> for Nothing {
    type Error = ProbeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, _: T) -> Result<Option<T::Value>, ProbeError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    #[test]
    fn encrypt_reads_what_its_request_type_declares() {
        let p = Action::Encrypt.parameters();
        let shown: Vec<(&str, bool, ParameterKind)> = p.iter().map(|p| (p.name, p.required, p.kind)).collect();
        assert_eq!(
            shown,
            [
                ("KeyId", true, ParameterKind::Text),
                ("Plaintext", true, ParameterKind::Text),
                ("EncryptionContext", false, ParameterKind::Text),
                ("DryRun", false, ParameterKind::Boolean),
            ]
        );
        let gdk = GenerateDataKeyRequest::default();
        assert_eq!(gdk.number_of_bytes, None);
        assert!(Action::GenerateDataKey
            .parameters()
            .iter()
            .any(|p| p.name == "NumberOfBytes" && !p.required && p.kind == ParameterKind::Integer));
        assert!(Action::DescribeRegions.parameters().is_empty());
        let tag = Action::TagResources.parameters();
        assert!(tag.iter().any(|p| p.name == "ResourceId" && p.required && p.kind == ParameterKind::List));
    }

    #[test]
    fn every_action_probes_cleanly_and_every_parameter_is_described() {
        for spec in ACTIONS {
            let probed = super::super::action::probe(spec.action);
            assert!(probed.complete, "{}: its request type did not decode from its required fields", spec.name);
            for p in &probed.parameters {
                assert!(!p.about.is_empty(), "{}: {} has no description in parameter_docs.rs", spec.name, p.name);
            }
        }
        assert!(
            Action::UpdateSecretVersionStage.parameters().iter().any(|p| p.name == "VersionStage" && p.required),
            "a required parameter is reported as such"
        );
    }
}
