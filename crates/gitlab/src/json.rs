//! Decoding hook bodies without building a DOM.
//!
//! Bodies can be 25 MB, almost all of it `commits`. The wire structs name only the fields
//! fluxgate reads; serde skips everything else without allocating. Scalar fields are
//! read as [`Scalar`], which accepts any JSON value, so that a wrong type becomes a
//! precise message from the field validators rather than a generic serde error. Nested
//! objects are read through [`Obj`], which accepts only a JSON object (serde's derived
//! structs would also accept an array, field by position).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use super::error::ParseError;

/// How many characters of a string value an error message quotes.
const QUOTE_CHARS: usize = 80;

/// One JSON value where fluxgate expects a scalar: kept if it is a scalar, reduced to
/// its type if it is an array or an object.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Scalar {
    /// The field is not in the object.
    #[default]
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX`.
    BigUint(u64),
    Float(f64),
    Str(String),
    Array,
    Object,
}

impl Scalar {
    /// The value as an error message shows it: `null`, `-1`, `"xyz"`, `an array`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Scalar::Absent => "nothing".to_owned(),
            Scalar::Null => "null".to_owned(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::BigUint(n) => n.to_string(),
            Scalar::Float(x) => format!("{x:?}"),
            Scalar::Str(s) => quote(s),
            Scalar::Array => "an array".to_owned(),
            Scalar::Object => "an object".to_owned(),
        }
    }
}

/// A string for an error message: quoted, escaped, and cut after [`QUOTE_CHARS`].
pub(crate) fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        Scalar::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::BigUint(v), Scalar::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Scalar::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Scalar::Object)
    }
}

/// A `T` that must be written as a JSON object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
    }
}

/// Decodes a whole body, which must be one JSON object, into the wire struct `T`.
pub(crate) fn decode<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, ParseError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let Obj(value) = serde_path_to_error::deserialize::<_, Obj<T>>(&mut deserializer)
        .map_err(|error| describe_error(body, error))?;
    deserializer
        .end()
        .map_err(|error| ParseError::not_json(&error))?;
    Ok(value)
}

fn describe_error(body: &[u8], error: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        Category::Data if !starts_with_object(body) => ParseError::not_an_object(&inner),
        // A data error on the top-level object itself, such as a duplicate key.
        Category::Data if path == "." => ParseError::new(format!("body is invalid: {inner}")),
        Category::Data => ParseError::shape(path, inner),
        Category::Syntax | Category::Eof | Category::Io => ParseError::not_json(&inner),
    }
}

/// True if the first non-whitespace byte opens an object.
fn starts_with_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}
