//! The known keys of a config type, read from its serde `Deserialize` impl, so the strict key check
//! ([`super::parse_strict`]) can never disagree with the structs that hold the values.
//!
//! [`known_keys`] runs `T::deserialize` against a `Tracer`: a deserializer that answers every
//! struct with all of its fields (serde hands it their names, renames applied, `skip`ped fields left
//! out), every map with one entry named `*`, every sequence with one element, and every scalar with a
//! small value. What it records is the dotted form [`super::parse_toml`] reads: `"a.b"` a key, `"a."`
//! a section (a struct, a map or an array of structs), `*` any name.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// Every key `T` accepts, dotted, sections ending with `.`; in field order, no repeats.
///
/// # Panics
/// If `T`'s `Deserialize` refuses the values the tracer answers with (zero for a typed scalar, `1` for
/// a self-describing one, e.g. an untagged number-or-string): a bug in the config type that every
/// test parsing it shows.
pub fn known_keys<T: DeserializeOwned>() -> Vec<String> {
    let mut keys = Vec::new();
    if let Err(e) = T::deserialize(Tracer { prefix: String::new(), keys: &mut keys }) {
        panic!("config type {} cannot be traced for its keys: {e}", std::any::type_name::<T>());
    }
    keys
}

/// Why a config type could not be traced.
#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError(msg.to_string())
    }
}

/// A deserializer standing at the dotted `prefix`, recording what it finds there into `keys`.
struct Tracer<'k> {
    prefix: String,
    keys: &'k mut Vec<String>,
}

impl Tracer<'_> {
    fn record(&mut self, key: String) {
        if !key.is_empty() && !key.starts_with('.') && !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Records the prefix as a plain key.
    fn leaf(&mut self) {
        let key = self.prefix.clone();
        self.record(key);
    }

    /// Records the prefix as a section.
    fn section(&mut self) {
        let key = format!("{}.", self.prefix);
        self.record(key);
    }

    fn child(&mut self, name: &str) -> Tracer<'_> {
        let prefix = if self.prefix.is_empty() { name.to_owned() } else { format!("{}.{name}", self.prefix) };
        Tracer { prefix, keys: &mut *self.keys }
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
            self.leaf();
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaf! {
        deserialize_any => visit_u64(1),
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char(' '),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(&[]),
        deserialize_byte_buf => visit_bytes(&[]),
        deserialize_identifier => visit_str(""),
        deserialize_ignored_any => visit_unit(),
        deserialize_unit => visit_unit(),
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        // a map is a section with one entry of any name
        self.deserialize_struct("map", &["*"], visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.section();
        visitor.visit_map(Fields { tracer: self, names: fields.iter(), current: "" })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.leaf();
        let first = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(first.into_deserializer())
    }
}

/// A sequence of one element, traced at the sequence's own prefix (so an array of tables is a section).
struct OneElement<'k>(Option<Tracer<'k>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, TraceError> {
        self.0.take().map(|tracer| seed.deserialize(tracer)).transpose()
    }
}

/// A struct's fields (or a map's one `*` entry), each value traced at `prefix.name`.
struct Fields<'k> {
    tracer: Tracer<'k>,
    names: std::slice::Iter<'static, &'static str>,
    current: &'static str,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        let Some(name) = self.names.next() else { return Ok(None) };
        self.current = name;
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        seed.deserialize(self.tracer.child(self.current))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    #[derive(Default)]
    struct Inner {
        sync_log: bool,
        #[serde(rename = "kv_chan_cap")]
        cap: Option<u32>,
    }

    #[derive(serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Sample {
        addr: String,
        #[serde(skip)]
        flag_only: String,
        storage: Inner,
        list: Vec<Inner>,
        names: Vec<String>,
        params: BTreeMap<String, String>,
        rules: BTreeMap<String, Inner>,
    }

    #[test]
    fn keys_follow_the_fields_renames_skips_and_nesting() {
        assert_eq!(
            known_keys::<Sample>(),
            [
                "addr",
                "storage.",
                "storage.sync-log",
                "storage.kv_chan_cap",
                "list.",
                "list.sync-log",
                "list.kv_chan_cap",
                "names",
                "params.",
                "params.*",
                "rules.",
                "rules.*.",
                "rules.*.sync-log",
                "rules.*.kv_chan_cap",
            ]
        );
    }
}
