//! What JavaScript and Node do to a value, reproduced for the options: truthiness, `parseInt`,
//! `String(x)`, object key order and `path.resolve`. egg-cluster's options pass through these
//! coercions and the workers see the result, so they are copied exactly, quirks included.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// A value as error messages quote it: JSON, so that a string shows its quotes.
pub(crate) fn json_repr(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| js_to_string(value))
}

/// A path as the string the workers get in the options object.
pub(crate) fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `path.resolve(base, p)`: absolute, with `.` and `..` removed lexically
/// (symlinks are not resolved, as in Node).
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    normalize(&base.join(p))
}

pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                // Popping a root is a no-op, so `/..` stays `/` like in Node.
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// JS truthiness of a JSON value.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `parseInt(String(value), 10)`; NaN when there is no leading integer.
pub(crate) fn js_parse_int(value: &Value) -> f64 {
    let text = js_to_string(value);
    let text = text.trim_start_matches(is_js_whitespace);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 {
        return f64::NAN;
    }
    // Parsing the digit string as a float rounds exactly like JS does for
    // integers beyond 2^53.
    let magnitude = digits[..end].parse::<f64>().unwrap_or(f64::NAN);
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The characters `parseInt` skips: ECMAScript WhiteSpace and
/// LineTerminator (which differ from Rust's `char::is_whitespace`, e.g.
/// for U+0085 and U+FEFF).
pub(crate) fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// `String(value)` for JSON values.
pub(crate) fn js_to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number_to_string(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        // Array.prototype.join renders null/undefined elements as "".
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Null => String::new(),
                other => js_to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// `Number.prototype.toString()`. Both Rust and JS print the shortest
/// round-tripping digits; they only disagree on when to switch to
/// exponent notation and on the `+` of positive exponents.
pub(crate) fn js_number_to_string(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    let abs = n.abs();
    if (1e-6..1e21).contains(&abs) {
        return format!("{n}");
    }
    let exp = format!("{n:e}");
    match exp.split_once('e') {
        Some((mantissa, power)) if !power.starts_with('-') => format!("{mantissa}e+{power}"),
        _ => exp,
    }
}

/// An options object that keeps JS property order: integer-like keys first
/// in ascending order, then the rest in insertion order, with assignment to
/// an existing key keeping its position. Building it ourselves keeps the
/// order right regardless of how `serde_json::Map` is configured.
#[derive(Default)]
pub(crate) struct JsObject {
    entries: Vec<(String, Value)>,
}

impl JsObject {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(crate) fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_owned(), value)),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    pub(crate) fn into_map(self) -> Map<String, Value> {
        let (mut indices, named): (Vec<_>, Vec<_>) = self
            .entries
            .into_iter()
            .partition(|(k, _)| array_index(k).is_some());
        indices.sort_by_key(|(k, _)| array_index(k));
        indices.into_iter().chain(named).collect()
    }
}

/// A canonical array index ("0", "42", not "042" or "4294967295"), which
/// JS enumerates before every other string key.
pub(crate) fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn js_helpers() {
        assert_eq!(js_number_to_string(1e21), "1e+21");
        assert_eq!(js_number_to_string(1.5e-7), "1.5e-7");
        assert_eq!(js_number_to_string(123.5), "123.5");
        assert_eq!(js_number_to_string(-0.0), "0");
        assert_eq!(js_parse_int(&json!("\u{feff}\u{3000}42")), 42.0);
        assert!(js_parse_int(&json!("\u{85}42")).is_nan());
        assert!(js_parse_int(&json!("-")).is_nan());
        assert!(js_parse_int(&json!("0x10")) == 0.0);
        // String([null, 1]) is ",1", which has no leading integer.
        assert!(js_parse_int(&json!([null, 1])).is_nan());
        assert_eq!(normalize(Path::new("/a/./b/../c/")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(array_index("4294967294"), Some(4_294_967_294));
        assert_eq!(array_index("4294967295"), None);
        assert_eq!(array_index("00"), None);
    }
}
