//! Request parameters: the query string and an `application/x-www-form-urlencoded` body, both
//! form-decoded (`+` is a space) and merged, the body winning on duplicates (`docs/ALIBABA-KMS-API.md` §1).
//!
//! [`Params::decode`] turns them into the typed request structs of `kms_core::api` through serde,
//! so each request has one definition: strings as given, booleans case-insensitively
//! (`True`/`true`), integers from their decimal text, byte fields from base64. A missing required
//! field is `MissingParameter`, a value that does not parse is `InvalidParameter`, both naming the
//! parameter.
//!
//! Normalisation happens in the decoder, once: a value that is empty or only white space is
//! *absent* – a required parameter sent as `" "` is `MissingParameter`, an optional one is as if
//! not sent. No typed request ever holds a blank value, so no two layers can disagree about one.
//! (`get` still returns the raw values: signatures are computed over exactly what was sent.)

use std::collections::BTreeMap;
use std::fmt;

use kms_core::{ErrorCode, KmsError};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// Parameters carry plaintexts and secret values (base64 or text), so they are zeroized on drop
/// and never printed.
///
/// Every decoded name and value sits in one buffer, back to back, with a sorted index of where
/// each is: a request's dozen parameters cost two allocations instead of two per parameter plus
/// a tree's nodes, and one zeroization covers them all – including values a duplicate replaced.
#[derive(Default, Clone)]
pub struct Params {
    text: String,
    /// Sorted by name, one per name (the last one given wins).
    entries: Vec<Entry>,
}

/// A parameter's name is `text[start..name_end]`, its value `text[name_end..end]`.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    name_end: usize,
    end: usize,
}

impl Drop for Params {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.text.zeroize();
    }
}

impl PartialEq for Params {
    fn eq(&self, other: &Params) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Params {}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("names", &self.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Params {
    /// Merges the query and (when it is a form) the body.
    pub fn from_request(query: &str, form_body: Option<&[u8]>) -> Params {
        let body = form_body.unwrap_or_default();
        // Decoding never lengthens valid UTF-8, so this is the one allocation unless a piece is
        // not UTF-8 (then `push` moves, zeroizing what it leaves).
        let mut p = Params { text: String::with_capacity(query.len() + body.len()), entries: Vec::new() };
        // Where escaped names and values are decoded (each is copied into `text` at once).
        let (mut name_scratch, mut value_scratch) = (Vec::new(), Vec::new());
        for input in [query.as_bytes(), body] {
            for piece in input.split(|&b| b == b'&').filter(|piece| !piece.is_empty()) {
                let (name, value) = match piece.iter().position(|&b| b == b'=') {
                    Some(eq) => (&piece[..eq], &piece[eq + 1..]),
                    None => (piece, &b""[..]),
                };
                p.append(&form_decode(name, &mut name_scratch), &form_decode(value, &mut value_scratch));
            }
        }
        use zeroize::Zeroize;
        name_scratch.zeroize();
        value_scratch.zeroize();
        p.index();
        p
    }

    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            p.append(k.as_ref(), v.as_ref());
        }
        p.index();
        p
    }

    /// Adds a parameter at the end of the entries (`index` sorts them).
    fn append(&mut self, name: &str, value: &str) {
        let e = self.write(name, value);
        self.entries.push(e);
    }

    /// Writes a name and its value into the buffer, returning where they are.
    fn write(&mut self, name: &str, value: &str) -> Entry {
        let start = self.text.len();
        self.push(name);
        let name_end = self.text.len();
        self.push(value);
        Entry { start, name_end, end: self.text.len() }
    }

    /// Appends to the buffer; a buffer that must grow is copied and the old one zeroized, so no
    /// freed allocation keeps a secret.
    fn push(&mut self, s: &str) {
        if self.text.len() + s.len() > self.text.capacity() {
            let mut bigger = String::with_capacity((self.text.len() + s.len()).max(2 * self.text.capacity()));
            bigger.push_str(&self.text);
            std::mem::swap(&mut self.text, &mut bigger);
            use zeroize::Zeroize;
            bigger.zeroize();
        }
        self.text.push_str(s);
    }

    fn name(&self, e: &Entry) -> &str {
        &self.text[e.start..e.name_end]
    }

    fn value(&self, e: &Entry) -> &str {
        &self.text[e.name_end..e.end]
    }

    /// Sorts the entries by name, keeping of each name the last one given (the stable sort
    /// leaves a name's duplicates in arrival order).
    fn index(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| self.name(a).cmp(self.name(b)));
        let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if self.name(last) == self.name(&e) => *last = e,
                _ => kept.push(e),
            }
        }
        self.entries = kept;
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.name(e).cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.value(&self.entries[i]))
    }

    /// The parameters sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|e| (self.name(e), self.value(e)))
    }

    /// Adds or replaces a parameter (a replaced value stays in the buffer until it is zeroized).
    pub fn set(&mut self, name: &str, mut value: String) {
        let e = self.write(name, &value);
        match self.find(name) {
            Ok(i) => self.entries[i] = e,
            Err(i) => self.entries.insert(i, e),
        }
        use zeroize::Zeroize;
        value.zeroize();
    }

    /// Removes and returns the parameters whose names start with `prefix`.
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let (taken, kept): (Vec<Entry>, Vec<Entry>) =
            self.entries.iter().partition(|e| self.name(e).starts_with(prefix));
        self.entries = kept;
        taken.iter().map(|e| (self.name(e).to_string(), self.value(e).to_string())).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Decodes the parameters into a request type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, KmsError> {
        T::deserialize(ParamsDeserializer { params: self }).map_err(ParamError::into_kms)
    }
}

/// One name or value of a query string or form body, decoded exactly as the `form_urlencoded`
/// crate (and the WHATWG URL standard) does – `+` is a space, `%XX` a byte, a `%` not followed by
/// two hex digits stays, invalid UTF-8 becomes U+FFFD – borrowing the input when it has nothing
/// to decode. (`&` separates pieces, empty pieces are skipped and the first `=` splits, in
/// [`Params::from_request`].) `scratch` holds the decoded bytes.
fn form_decode<'a>(s: &'a [u8], scratch: &'a mut Vec<u8>) -> std::borrow::Cow<'a, str> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        return utf8_lossy(s);
    }
    fn hex(b: Option<&u8>) -> Option<u8> {
        (*b? as char).to_digit(16).map(|d| d as u8)
    }
    scratch.clear();
    if scratch.capacity() < s.len() {
        // Room for the whole piece up front (decoding never lengthens it): growing by pushes
        // would free copies of a decoded secret without zeroizing them.
        use zeroize::Zeroize;
        scratch.zeroize();
        *scratch = Vec::with_capacity(s.len());
    }
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => scratch.push(b' '),
            b'%' => match (hex(s.get(i + 1)), hex(s.get(i + 2))) {
                (Some(h), Some(l)) => {
                    scratch.push(h << 4 | l);
                    i += 2;
                }
                _ => scratch.push(b'%'),
            },
            b => scratch.push(b),
        }
        i += 1;
    }
    utf8_lossy(scratch)
}

/// `String::from_utf8_lossy`, with the standard library's faster check first: nearly every
/// name and value is valid (mostly ASCII), and the lossy walk costs more on those.
fn utf8_lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
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

/// The parameters as a tree: `Tag.1.Key=a` becomes `Tag → [ {Key: a} ]` and `ResourceId.2=x`
/// becomes `ResourceId → [_, x]`, the way the SDKs flatten lists (API.md §1).
#[derive(Debug)]
enum Node<'a> {
    Leaf(&'a str),
    List(BTreeMap<usize, Node<'a>>),
    Map(BTreeMap<&'a str, Node<'a>>),
}

impl<'a> Node<'a> {
    fn build(params: &'a Params) -> Node<'a> {
        let mut root = Node::Map(BTreeMap::new());
        for (k, v) in params.iter() {
            // Blank is absent (module docs): the one place that rule lives.
            if v.trim().is_empty() {
                continue;
            }
            // A plain parameter wins over a dotted one of the same stem. Most names have no dot:
            // no path is collected for them.
            if k.contains('.') {
                root.insert(&k.split('.').collect::<Vec<_>>(), v);
            } else {
                root.insert(&[k], v);
            }
        }
        root
    }

    fn insert(&mut self, path: &[&'a str], value: &'a str) {
        let (head, rest) = match path.split_first() {
            Some(x) => x,
            None => return,
        };
        let index = head.parse::<usize>().ok().filter(|n| *n >= 1 && !head.starts_with('0'));
        if rest.is_empty() {
            match (self, index) {
                (Node::Map(m), _) => {
                    m.insert(head, Node::Leaf(value));
                }
                (Node::List(l), Some(i)) => {
                    l.insert(i, Node::Leaf(value));
                }
                _ => {}
            }
            return;
        }
        let next_is_index = rest[0].parse::<usize>().is_ok();
        let fresh = || if next_is_index { Node::List(BTreeMap::new()) } else { Node::Map(BTreeMap::new()) };
        let child = match (self, index) {
            (Node::Map(m), _) => m.entry(head).or_insert_with(fresh),
            (Node::List(l), Some(i)) => l.entry(i).or_insert_with(fresh),
            _ => return,
        };
        if !matches!(child, Node::Leaf(_)) {
            child.insert(rest, value);
        }
    }
}

impl Node<'_> {
    /// The subtree as JSON: leaves are strings, flattened objects objects, lists arrays.
    fn to_json(&self) -> serde_json::Value {
        match self {
            Node::Leaf(v) => serde_json::Value::String(v.to_string()),
            Node::List(l) => serde_json::Value::Array(l.values().map(Node::to_json).collect()),
            Node::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect()),
        }
    }
}

struct ParamsDeserializer<'a> {
    params: &'a Params,
}

impl<'de, 'a> de::Deserializer<'de> for ParamsDeserializer<'a> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        // Most requests have no dotted name: their fields are the parameters themselves, visited
        // in place instead of through a tree built for them.
        if self.params.iter().all(|(k, _)| !k.contains('.')) {
            return visitor.visit_map(FlatMap { iter: self.params.iter(), current: None });
        }
        NodeDe { node: &Node::build(self.params), name: Name::Root }.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// A parameter's path (`Tag.1.Key`), spelled out only for an error message: decoding a request
/// visits every parameter, and most are never named.
#[derive(Clone, Copy)]
enum Name<'p> {
    Root,
    Field(&'p Name<'p>, &'p str),
    Index(&'p Name<'p>, usize),
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (parent, part): (&Name, &dyn fmt::Display) = match self {
            Name::Root => return Ok(()),
            Name::Field(p, k) => (p, k),
            Name::Index(p, i) => (p, i),
        };
        match parent {
            Name::Root => write!(f, "{part}"),
            p => write!(f, "{p}.{part}"),
        }
    }
}

/// Deserialises one node; `name` is the parameter path, for error messages.
struct NodeDe<'n, 'a, 'p> {
    node: &'n Node<'a>,
    name: Name<'p>,
}

impl<'de, 'n, 'a, 'p> de::Deserializer<'de> for NodeDe<'n, 'a, 'p> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => ParamValue(v).deserialize_any(visitor),
            Node::List(l) => visitor.visit_seq(NodeSeq { iter: l.iter(), name: &self.name }),
            // A field missing inside an object is named with the object's path (`Tag.1.Key`).
            Node::Map(m) => {
                visitor.visit_map(NodeMap { iter: m.iter(), current: None, prefix: &self.name }).map_err(|e| match e {
                    ParamError::Missing(f) if !matches!(self.name, Name::Root) && !f.contains('.') => {
                        ParamError::Missing(format!("{}.{f}", self.name))
                    }
                    other => other,
                })
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            // One value given plainly where a list is expected: a list of one.
            Node::Leaf(_) => visitor.visit_seq(OneSeq(Some(self))),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => ParamValue(v).deserialize_newtype_struct(name, visitor),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    /// A JSON-valued parameter (EncryptionContext, ExtendedConfig…) may arrive as a JSON string
    /// or flattened (`EncryptionContext.k=v`, as Node Tea 1.x sends a map): either way the field
    /// gets JSON text.
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => visitor.visit_str(v),
            other => visitor.visit_string(other.to_json().to_string()),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => ParamValue(v).deserialize_bool(visitor),
            _ => Err(ParamError::Other("a list or object where a value was expected".into())),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => ParamValue(v).deserialize_i64(visitor),
            _ => Err(ParamError::Other("a list or object where a number was expected".into())),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.node {
            Node::Leaf(v) => ParamValue(v).deserialize_u32(visitor),
            _ => Err(ParamError::Other("a list or object where a number was expected".into())),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct OneSeq<'n, 'a, 'p>(Option<NodeDe<'n, 'a, 'p>>);

impl<'de, 'n, 'a, 'p> de::SeqAccess<'de> for OneSeq<'n, 'a, 'p> {
    type Error = ParamError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ParamError> {
        match self.0.take() {
            Some(n) => seed.deserialize(n).map(Some),
            None => Ok(None),
        }
    }
}

struct NodeSeq<'n, 'a, 'p> {
    iter: std::collections::btree_map::Iter<'n, usize, Node<'a>>,
    name: &'p Name<'p>,
}

impl<'de, 'n, 'a, 'p> de::SeqAccess<'de> for NodeSeq<'n, 'a, 'p> {
    type Error = ParamError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ParamError> {
        match self.iter.next() {
            Some((i, node)) => seed.deserialize(NodeDe { node, name: Name::Index(self.name, *i) }).map(Some),
            None => Ok(None),
        }
    }
}

struct NodeMap<'n, 'a, 'p> {
    iter: std::collections::btree_map::Iter<'n, &'a str, Node<'a>>,
    current: Option<(&'n &'a str, &'n Node<'a>)>,
    prefix: &'p Name<'p>,
}

impl<'de, 'n, 'a, 'p> MapAccess<'de> for NodeMap<'n, 'a, 'p> {
    type Error = ParamError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ParamError> {
        match self.iter.next() {
            Some(kv) => {
                self.current = Some(kv);
                seed.deserialize((*kv.0).into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ParamError> {
        let (k, node) = self.current.take().expect("value after key");
        field(seed, node, Name::Field(self.prefix, k))
    }
}

/// An object's field: a value that does not parse is named by its path.
fn field<'de, V: DeserializeSeed<'de>>(seed: V, node: &Node<'_>, name: Name<'_>) -> Result<V::Value, ParamError> {
    seed.deserialize(NodeDe { node, name }).map_err(|e| match e {
        ParamError::Other(why) => ParamError::Invalid(name.to_string(), why),
        other => other,
    })
}

/// The parameters of a request without dotted names, as the root object: what [`Node::build`]
/// would make of them (blank is absent there and here), without making it.
struct FlatMap<'a, I> {
    iter: I,
    current: Option<(&'a str, &'a str)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a str, &'a str)>> MapAccess<'de> for FlatMap<'a, I> {
    type Error = ParamError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ParamError> {
        match self.iter.by_ref().find(|(_, v)| !v.trim().is_empty()) {
            Some(kv) => {
                self.current = Some(kv);
                seed.deserialize(kv.0.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ParamError> {
        let (k, v) = self.current.take().expect("value after key");
        field(seed, &Node::Leaf(v), Name::Field(&Name::Root, k))
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

    /// The hand-written form decoder gives what the `form_urlencoded` crate gives (the last of
    /// a name's duplicates kept), on inputs made of the bytes that matter (separators, escapes,
    /// hex digits, bytes that are not UTF-8), whether they come as the query or the body.
    #[test]
    fn form_pairs_decode_as_form_urlencoded_does() {
        use rand::{Rng, SeedableRng};
        fn theirs(input: &[u8]) -> Vec<(String, String)> {
            form_urlencoded::parse(input).into_owned().collect::<BTreeMap<_, _>>().into_iter().collect()
        }
        fn ours(p: &Params) -> Vec<(String, String)> {
            p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        }
        let alphabet = b"a=&%+2BfFz0\xff\xc3\xa9 ";
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in 0..2000 {
            let input: Vec<u8> = (0..len % 24).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect();
            let shown = String::from_utf8_lossy(&input);
            assert_eq!(ours(&Params::from_request("", Some(&input))), theirs(&input), "{shown:?}");
            if let Ok(query) = std::str::from_utf8(&input) {
                assert_eq!(ours(&Params::from_request(query, None)), theirs(&input), "{shown:?}");
            }
        }
        for fixed in [&b"%"[..], b"%4", b"%4g", b"%41%42", b"=", b"==", b"&&a", b"%C3%A9=%E5%AF%86", b"%ff=%FF"] {
            assert_eq!(ours(&Params::from_request("", Some(fixed))), theirs(fixed));
        }
    }

    /// Duplicates: the body's value wins over the query's, a later one over an earlier one, and
    /// `set` replaces; lookups and the sorted order hold after each.
    #[test]
    fn later_duplicates_replace_earlier_ones() {
        let mut p = Params::from_request("B=1&A=q&B=2", Some(b"C=3&B=body&A=x%20y"));
        assert_eq!(p.iter().collect::<Vec<_>>(), [("A", "x y"), ("B", "body"), ("C", "3")]);
        p.set("B", "set".into());
        p.set("AA", "new".into());
        assert_eq!(p.iter().collect::<Vec<_>>(), [("A", "x y"), ("AA", "new"), ("B", "set"), ("C", "3")]);
        assert_eq!((p.get("B"), p.get("AA"), p.get("D")), (Some("set"), Some("new"), None));
        assert_eq!(p.take_prefixed("A"), [("A".to_string(), "x y".to_string()), ("AA".into(), "new".into())]);
        assert_eq!(p.iter().collect::<Vec<_>>(), [("B", "set"), ("C", "3")]);
        // Invalid UTF-8 grows the text past its first allocation (U+FFFD is three bytes).
        let p = Params::from_request("", Some(b"K=\xff\xff\xff\xff&L=%ff%ff"));
        assert_eq!((p.get("K"), p.get("L")), (Some("\u{fffd}\u{fffd}\u{fffd}\u{fffd}"), Some("\u{fffd}\u{fffd}")));
    }

    #[test]
    fn blank_values_are_absent() {
        for blank in ["", " ", "\t", "\n", " \r\n "] {
            let p = Params::from_pairs([("KeyId", blank), ("Plaintext", "aGk=")]);
            assert_eq!(p.get("KeyId"), Some(blank), "raw values stay for the signature");
            let e = p.decode::<EncryptRequest>().unwrap_err();
            assert_eq!(e.code(), ErrorCode::MissingParameter, "{blank:?}");
            let r: ReEncryptRequest = Params::from_pairs([
                ("CiphertextBlob", "aGk="),
                ("DestinationKeyId", "k"),
                ("SourceEncryptionAlgorithm", blank),
            ])
            .decode()
            .unwrap();
            assert_eq!(r.source_encryption_algorithm, None, "{blank:?}");
        }
        let p = Params::from_request("KeyId=key-a", Some(b"KeyId=+&Plaintext=aGk="));
        assert_eq!(p.decode::<EncryptRequest>().unwrap_err().code(), ErrorCode::MissingParameter, "the body wins");
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

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Kv {
        key: String,
        value: Option<String>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "PascalCase")]
    struct Lists {
        resource_id: Vec<String>,
        tag: Option<Vec<Kv>>,
        all: Option<bool>,
    }

    #[test]
    fn repeat_lists_decode_in_index_order() {
        let p = Params::from_pairs([
            ("ResourceId.2", "key-b"),
            ("ResourceId.10", "key-c"),
            ("ResourceId.1", "key-a"),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "dev"),
            ("Tag.2.Key", "team"),
            ("All", "True"),
        ]);
        let l: Lists = p.decode().unwrap();
        assert_eq!(l.resource_id, ["key-a", "key-b", "key-c"]);
        let tags = l.tag.unwrap();
        assert_eq!(tags[0], Kv { key: "env".into(), value: Some("dev".into()) });
        assert_eq!(tags[1], Kv { key: "team".into(), value: None });
        assert_eq!(l.all, Some(true));
        let one: Lists = Params::from_pairs([("ResourceId", "key-x")]).decode().unwrap();
        assert_eq!(one.resource_id, ["key-x"]);
        let e = Params::from_pairs([("ResourceId.1", "k"), ("Tag.1.Value", "v")]).decode::<Lists>().unwrap_err();
        assert_eq!(e.code(), ErrorCode::MissingParameter);
        assert!(e.message().contains("Tag.1.Key"), "{}", e.message());
    }

    #[test]
    fn flattened_maps_become_json_text() {
        let p = Params::from_pairs([
            ("KeyId", "k"),
            ("Plaintext", "aGk="),
            ("EncryptionContext.env", "dev"),
            ("EncryptionContext.purpose", "a b"),
        ]);
        let r: EncryptRequest = p.decode().unwrap();
        let ctx: serde_json::Value = serde_json::from_str(r.encryption_context.as_deref().unwrap()).unwrap();
        assert_eq!(ctx, serde_json::json!({"env": "dev", "purpose": "a b"}));
    }

    /// Requests without dotted names skip the tree: the same parameters with one dotted name
    /// added (which no request type has) go through it, and decode the same, errors included.
    #[test]
    fn flat_requests_decode_as_through_the_tree() {
        let cases: [&[(&str, &str)]; 6] = [
            &[("KeyId", "k"), ("Plaintext", "aGk="), ("EncryptionContext", r#"{"a":"b"}"#), ("DryRun", "TRUE")],
            &[("KeyId", " "), ("Plaintext", "aGk=")],
            &[("Plaintext", "aGk=")],
            &[("KeyId", "k"), ("Plaintext", "***")],
            &[("KeyId", "k"), ("Plaintext", "aGk="), ("DryRun", "maybe")],
            &[("KeyId", "k"), ("Plaintext", "aGk="), ("Signature", "x"), ("Version", "2016-01-20")],
        ];
        let show = |r: Result<EncryptRequest, KmsError>| match r {
            Ok(r) => format!("{:?} {:?} {:?} {}", r.key_id, r.plaintext.expose(), r.encryption_context, r.dry_run),
            Err(e) => format!("{:?} {}", e.code(), e.message()),
        };
        for pairs in cases {
            let flat = Params::from_pairs(pairs.iter().copied());
            let tree = Params::from_pairs(pairs.iter().copied().chain([("Unused.1", "x")]));
            assert_eq!(show(flat.decode()), show(tree.decode()), "{pairs:?}");
        }
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
