//! Parsing untrusted JSON within limits: depth, string length, field counts, duplicate keys.
//!
//! `serde_json::from_slice` accepts things the relay must not: a repeated key silently keeps
//! its last value (so a signature or a log may see a different value than a rule), and
//! nothing bounds how deep or wide a document may be. [`check_json`] parses with a custom
//! visitor that builds the same [`Value`] while counting, and stops at the first problem
//! with a JSON pointer to it.
//!
//! Decisions worth knowing:
//!
//! - Integers stay exact when they fit `i64` or `u64`. An integer literal outside that range
//!   is refused with `number_out_of_range`: serde_json would keep it as a rounded `f64`,
//!   quietly changing an order number or an id. Such values belong in strings. Numbers
//!   written with a fraction or an exponent are floats by the sender's own choice and are
//!   kept as `f64`; one beyond `f64`'s range (`1e400`) is refused the same way.
//! - `NaN` and `Infinity` are not JSON and are refused as `bad_json`; so are raw control
//!   characters inside strings and lone surrogate escapes.
//! - `\u0000` (NUL) inside a string is valid JSON and is accepted: it flows as data, is
//!   re-encoded as `\u0000` by structural rendering, and is refused where it would matter,
//!   in header values (see `outbound::check_header_value`).
//! - Keys count against `max_string_bytes` like values do.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// The bounds one JSON document must stay within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLimits {
    /// The deepest nesting of objects and arrays (`{}` is depth 1); at most 128, serde_json's own bound.
    pub max_depth: usize,
    /// The longest string, key or value, in bytes of UTF-8.
    pub max_string_bytes: usize,
    /// The most members one object may have.
    pub max_object_fields: usize,
    /// The most object members in the whole document.
    pub max_total_fields: usize,
    /// The most values of any kind (scalars, objects, arrays) in the whole document.
    pub max_total_values: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        // Sized for a batch of 500 events with generous `data` inside a 1 MiB body.
        Self {
            max_depth: 32,
            max_string_bytes: 64 * 1024,
            max_object_fields: 1_000,
            max_total_fields: 50_000,
            max_total_values: 100_000,
        }
    }
}

/// What kind of limit a document broke; `as_str` gives the API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitCode {
    /// Not UTF-8.
    InvalidUtf8,
    /// Not JSON (syntax, trailing data, NaN, raw control characters, lone surrogates).
    BadJson,
    /// Nested deeper than `max_depth`.
    TooDeep,
    /// A string or key longer than `max_string_bytes`.
    StringTooLong,
    /// An object with more than `max_object_fields` members, or a document with more than
    /// `max_total_fields` members in all.
    TooManyFields,
    /// More than `max_total_values` values.
    TooManyValues,
    /// A key that appears twice in one object.
    DuplicateKey,
    /// A number that cannot be kept exactly (an integer beyond 64 bits, or out of `f64` range).
    NumberOutOfRange,
}

impl LimitCode {
    /// The code as it appears in API errors, e.g. `duplicate_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "invalid_utf8",
            Self::BadJson => "bad_json",
            Self::TooDeep => "too_deep",
            Self::StringTooLong => "string_too_long",
            Self::TooManyFields => "too_many_fields",
            Self::TooManyValues => "too_many_values",
            Self::DuplicateKey => "duplicate_key",
            Self::NumberOutOfRange => "number_out_of_range",
        }
    }
}

impl fmt::Display for LimitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document refused: which limit, where (a JSON pointer), and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} at `{path}`: {message}")]
pub struct LimitError {
    /// Which limit was broken.
    pub code: LimitCode,
    /// JSON pointer (RFC 6901) of the offending place; `""` is the whole document.
    pub path: String,
    /// What is wrong, in words a caller can act on.
    pub message: String,
}

/// Parses `bytes` as one JSON document, refusing anything outside `limits`.
pub fn check_json(bytes: &[u8], limits: &InputLimits) -> Result<Value, LimitError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(LimitError {
            code: LimitCode::InvalidUtf8,
            path: String::new(),
            message: format!(
                "the body is not valid UTF-8 (first bad byte at offset {}); send JSON encoded as UTF-8",
                e.valid_up_to()
            ),
        });
    }
    let mut state = State {
        limits,
        numbers: overflowing_integers(bytes),
        next_number: 0,
        path: Vec::new(),
        depth: 0,
        total_fields: 0,
        total_values: 0,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Seed { st: &mut state }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(state.failure.take().unwrap_or_else(|| {
            let path = state.pointer();
            syntax_error(&e, path)
        })),
    }
}

fn syntax_error(e: &serde_json::Error, path: String) -> LimitError {
    let text = e.to_string();
    let (code, what) = if text.contains("number out of range") {
        (
            LimitCode::NumberOutOfRange,
            "a number is too large to represent; send it as a string",
        )
    } else if text.contains("recursion limit exceeded") {
        (LimitCode::TooDeep, "the document is nested too deeply")
    } else {
        (LimitCode::BadJson, "the body is not valid JSON")
    };
    LimitError {
        code,
        path,
        message: format!("{what} (line {}, column {}: {text})", e.line(), e.column()),
    }
}

/// One step of a JSON pointer.
enum Segment {
    /// A member's key, unescaped; it goes into the object once its value is parsed.
    Key(String),
    /// An array element's index.
    Index(usize),
}

struct State<'l> {
    limits: &'l InputLimits,
    /// Where the value being parsed sits; escaped only when a pointer is shown, since
    /// escaping every key cost a tenth of parsing an event (BENCHMARKS.md, issue 16).
    path: Vec<Segment>,
    depth: usize,
    total_fields: usize,
    total_values: usize,
    /// The limit error behind a serde error, since serde's errors carry only text.
    failure: Option<LimitError>,
    /// For each number literal in document order: is it an integer beyond 64 bits?
    numbers: Vec<bool>,
    /// How many number literals the visitor has seen.
    next_number: usize,
}

/// Classifies every number literal of `bytes`, in document order: `true` for an integer
/// literal that fits neither `i64` nor `u64`.
///
/// serde_json hands such a literal to the visitor as an already rounded `f64`, the same call
/// as for `1.8e19`, so the literal's text is the only place the difference shows. Each
/// literal causes exactly one `visit_i64`/`visit_u64`/`visit_f64` call, so the visitor can
/// find its entry by counting. On malformed input the list may be off, but serde_json then
/// fails the parse anyway.
fn overflowing_integers(bytes: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                out.push(integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err());
            }
            _ => i += 1,
        }
    }
    out
}

impl State<'_> {
    fn pointer(&self) -> String {
        self.path
            .iter()
            .map(|s| match s {
                Segment::Key(k) => format!("/{}", crate::domain::event::escape_pointer(k)),
                Segment::Index(i) => format!("/{i}"),
            })
            .collect()
    }

    fn fail<E: de::Error>(&mut self, code: LimitCode, message: String) -> E {
        let err = LimitError {
            code,
            path: self.pointer(),
            message,
        };
        let text = err.to_string();
        self.failure = Some(err);
        E::custom(text)
    }

    /// Whether the number literal being visited is an integer beyond 64 bits.
    fn next_number_overflows(&mut self) -> bool {
        let flag = self.numbers.get(self.next_number).copied().unwrap_or(false);
        self.next_number += 1;
        flag
    }

    fn count_value<E: de::Error>(&mut self) -> Result<(), E> {
        self.total_values += 1;
        if self.total_values > self.limits.max_total_values {
            let max = self.limits.max_total_values;
            return Err(self.fail(
                LimitCode::TooManyValues,
                format!("the document holds more than {max} values; send fewer or smaller events"),
            ));
        }
        Ok(())
    }

    fn check_string<E: de::Error>(&mut self, s: &str, what: &str) -> Result<(), E> {
        match self.too_long(s, what) {
            Some((code, message)) => Err(self.fail(code, message)),
            None => Ok(()),
        }
    }

    /// The problem with a string or key longer than the limit.
    fn too_long(&self, s: &str, what: &str) -> Option<(LimitCode, String)> {
        let max = self.limits.max_string_bytes;
        (s.len() > max).then(|| {
            let message = format!(
                "this {what} is {} bytes long; at most {max} are taken",
                s.len()
            );
            (LimitCode::StringTooLong, message)
        })
    }

    /// What is wrong with one more member `key` in `out`, counting it; in the order the
    /// checks have always run, so the first problem is the one reported.
    fn member_problem(
        &mut self,
        key: &str,
        out: &Map<String, Value>,
    ) -> Option<(LimitCode, String)> {
        if let Some(problem) = self.too_long(key, "key") {
            return Some(problem);
        }
        if out.contains_key(key) {
            let message = "this key appears twice in the same object; send each key once";
            return Some((LimitCode::DuplicateKey, message.into()));
        }
        self.total_fields += 1;
        if out.len() >= self.limits.max_object_fields {
            let max = self.limits.max_object_fields;
            let message = format!("this object has more than {max} members; send fewer fields");
            return Some((LimitCode::TooManyFields, message));
        }
        if self.total_fields > self.limits.max_total_fields {
            let max = self.limits.max_total_fields;
            let message = format!(
                "the document has more than {max} object members in all; send fewer fields"
            );
            return Some((LimitCode::TooManyFields, message));
        }
        None
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        let max = self.limits.max_depth;
        if self.depth > max {
            return Err(self.fail(
                LimitCode::TooDeep,
                format!("objects and arrays nest deeper than {max} levels here; flatten the data"),
            ));
        }
        Ok(())
    }
}

struct Seed<'a, 'l> {
    st: &'a mut State<'l>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.st.count_value()?;
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.st.count_value()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.st.count_value()?;
        self.st.next_number_overflows();
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.st.count_value()?;
        self.st.next_number_overflows();
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.st.count_value()?;
        let overflows = self.st.next_number_overflows();
        match Number::from_f64(v) {
            Some(n) if !overflows => Ok(Value::Number(n)),
            _ => Err(self.st.fail(
                LimitCode::NumberOutOfRange,
                "this number is outside the 64-bit integer range and would lose digits; send it as a string".into(),
            )),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.st.count_value()?;
        self.st.check_string(v, "string")?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.st.count_value()?;
        self.st.check_string(&v, "string")?;
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let st = self.st;
        st.count_value()?;
        st.enter()?;
        let mut items = Vec::new();
        loop {
            st.path.push(Segment::Index(items.len()));
            let next = seq.next_element_seed(Seed { st: &mut *st })?;
            st.path.pop();
            match next {
                Some(v) => items.push(v),
                None => break,
            }
        }
        st.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let st = self.st;
        st.count_value()?;
        st.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let problem = st.member_problem(&key, &out);
            st.path.push(Segment::Key(key));
            if let Some((code, message)) = problem {
                return Err(st.fail(code, message));
            }
            let value = map.next_value_seed(Seed { st: &mut *st })?;
            // The key pushed above, back from the path: no copy of it is made.
            let Some(Segment::Key(key)) = st.path.pop() else {
                return Err(de::Error::custom("the parser lost its place"));
            };
            out.insert(key, value);
        }
        st.depth -= 1;
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str) -> Result<Value, LimitError> {
        check_json(text.as_bytes(), &InputLimits::default())
    }

    fn refused(text: &str) -> LimitError {
        check(text).expect_err(text)
    }

    #[test]
    fn ordinary_json_parses_to_the_same_value_as_serde_json() {
        let text = r#"{"id":"a","n":-5,"u":18446744073709551615,"f":1.5,"ok":true,"none":null,
                       "list":[1,"two",{"three":[]}],"s":"ž\u0041\n"}"#;
        let ours = check(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_offset() {
        let err = check_json(b"{\"a\": \"\xff\"}", &InputLimits::default()).unwrap_err();
        assert_eq!(err.code, LimitCode::InvalidUtf8);
        assert!(err.message.contains("offset 7"), "{err}");
    }

    #[test]
    fn syntax_errors_are_bad_json() {
        for text in [
            "",
            "{",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "NaN",
            "[Infinity]",
            "{\"a\": -Infinity}",
            "{\"a\":\"raw\u{1}control\"}",
            "\"\\ud800\"",
            "\u{feff}{}",
        ] {
            let err = refused(text);
            assert_eq!(err.code, LimitCode::BadJson, "{text}: {err}");
            assert!(err.message.contains("not valid JSON"), "{err}");
        }
    }

    #[test]
    fn a_syntax_error_points_at_where_it_happened() {
        let err = refused(r#"{"events":[{"id":"a"},{"id": tru}]}"#);
        assert_eq!(err.code, LimitCode::BadJson);
        assert_eq!(err.path, "/events/1/id");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(check(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let err = refused(&deep);
        assert_eq!(err.code, LimitCode::TooDeep);
        assert_eq!(err.path, format!("/{}", vec!["0"; 32].join("/")));
        let err = refused(r#"{"a":{"b":{"c":[]}}}"#.replace("[]", &deep).as_str());
        assert_eq!(err.code, LimitCode::TooDeep);
        assert!(err.path.starts_with("/a/b/c/0/0"), "{}", err.path);
    }

    #[test]
    fn a_very_deep_document_does_not_overflow_the_stack() {
        let deep = "[".repeat(100_000);
        assert_eq!(refused(&deep).code, LimitCode::TooDeep);
    }

    #[test]
    fn long_strings_and_keys_are_refused() {
        let limits = InputLimits {
            max_string_bytes: 8,
            ..InputLimits::default()
        };
        assert!(check_json(br#"{"abcdefgh":"12345678"}"#, &limits).is_ok());
        let err = check_json(br#"{"a":["123456789"]}"#, &limits).unwrap_err();
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::StringTooLong, "/a/0")
        );
        // Bytes, not characters: four two-byte letters plus one is nine bytes.
        let err = check_json("{\"a\":\"ččččx\"}".as_bytes(), &limits).unwrap_err();
        assert_eq!(err.code, LimitCode::StringTooLong);
        let err = check_json(br#"{"abcdefghi":1}"#, &limits).unwrap_err();
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::StringTooLong, "/abcdefghi")
        );
        assert!(err.message.contains("key is 9 bytes"), "{err}");
    }

    #[test]
    fn too_many_members_in_one_object_are_refused() {
        let limits = InputLimits {
            max_object_fields: 3,
            ..InputLimits::default()
        };
        assert!(check_json(br#"{"a":1,"b":2,"c":3}"#, &limits).is_ok());
        let err = check_json(br#"{"x":{"a":1,"b":2,"c":3,"d":4}}"#, &limits).unwrap_err();
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::TooManyFields, "/x/d")
        );
    }

    #[test]
    fn too_many_members_in_all_are_refused() {
        let limits = InputLimits {
            max_total_fields: 4,
            ..InputLimits::default()
        };
        assert!(check_json(br#"[{"a":1,"b":2},{"a":1,"b":2}]"#, &limits).is_ok());
        let err = check_json(br#"[{"a":1,"b":2},{"a":1,"b":2},{"a":1}]"#, &limits).unwrap_err();
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::TooManyFields, "/2/a")
        );
        assert!(err.message.contains("in all"), "{err}");
    }

    #[test]
    fn too_many_values_are_refused() {
        let limits = InputLimits {
            max_total_values: 4,
            ..InputLimits::default()
        };
        assert!(check_json(b"[1,2,3]", &limits).is_ok());
        let err = check_json(b"[1,2,3,4]", &limits).unwrap_err();
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::TooManyValues, "/3")
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let err = refused(r#"{"events":[{"id":"a","type":"t","id":"b"}]}"#);
        assert_eq!(err.code, LimitCode::DuplicateKey);
        assert_eq!(err.path, "/events/0/id");
        // The same key written with an escape is the same key.
        let err = refused(r#"{"id":"a","\u0069d":"b"}"#);
        assert_eq!(
            (err.code, err.path.as_str()),
            (LimitCode::DuplicateKey, "/id")
        );
        // The same key in different objects is fine.
        assert!(check(r#"{"a":{"id":1},"b":{"id":2}}"#).is_ok());
    }

    #[test]
    fn keys_in_paths_are_escaped() {
        let err = refused(r#"{"a/b":{"c~d":1,"c~d":2}}"#);
        assert_eq!(err.path, "/a~1b/c~0d");
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_not_rounded() {
        assert_eq!(check("[9223372036854775807]").unwrap(), json!([i64::MAX]));
        assert_eq!(check("[-9223372036854775808]").unwrap(), json!([i64::MIN]));
        assert_eq!(check("[18446744073709551615]").unwrap(), json!([u64::MAX]));
        for text in [
            r#"{"n":18446744073709551616}"#,
            r#"{"n":-9223372036854775809}"#,
            r#"{"n":123456789012345678901234567890}"#,
            r#"{"a":[1.5,"-1e999 \" 99999999999999999999",-0,2],"n":99999999999999999999}"#,
        ] {
            let err = refused(text);
            assert_eq!(
                (err.code, err.path.as_str()),
                (LimitCode::NumberOutOfRange, "/n"),
                "{text}"
            );
            assert!(err.message.contains("as a string"), "{err}");
        }
        let err = refused(r#"{"n":1e400}"#);
        assert_eq!(err.code, LimitCode::NumberOutOfRange);
    }

    #[test]
    fn ordinary_floats_are_kept() {
        assert_eq!(
            check("[1.5,-0.25,1e-7,12345.0,1e20,-0]").unwrap(),
            json!([1.5, -0.25, 1e-7, 12345.0, 1e20, -0.0])
        );
    }

    #[test]
    fn nul_and_unicode_escapes_are_data() {
        let v = check(r#"{"s":"a\u0000b","e":"\ud83d\ude00","k":"{{ 7*7 }}{% if %}"}"#).unwrap();
        assert_eq!(v["s"], json!("a\u{0}b"));
        assert_eq!(v["e"], json!("😀"));
        assert_eq!(v["k"], json!("{{ 7*7 }}{% if %}"));
    }

    #[test]
    fn codes_are_stable_strings() {
        assert_eq!(LimitCode::DuplicateKey.as_str(), "duplicate_key");
        assert_eq!(LimitCode::TooDeep.to_string(), "too_deep");
    }
}
