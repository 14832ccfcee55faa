//! Reading and editing the top level of one JSON line without decoding the rest.
//!
//! The master must route messages by a few top-level fields (`to`, `from`, `action`,
//! `receiverPid`, `cmd`) and stamp `from`/`to`, while passing everything else through byte for
//! byte. A full parse + re-serialize would cost time on 64 KiB payloads and, worse, would alter
//! or reject what Node legitimately writes: `JSON.stringify` emits lone UTF-16 surrogates as
//! `\udXXX` escapes, which `serde_json` refuses to decode into a `String`. So a line is
//! validated with `serde_json` into `IgnoredAny` (which checks syntax but does not pair
//! surrogates), its top-level members are located by a small scanner, and edits splice bytes.

use std::ops::Range;

use serde::de::IgnoredAny;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("empty line")]
    Empty,
    #[error("not valid JSON: {0}")]
    Syntax(String),
}

/// One top-level member of an object: byte ranges of the key (with quotes) and of the value.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: Range<usize>,
    pub value: Range<usize>,
}

#[derive(Debug)]
pub enum Shape {
    /// An object: its members in order, and where new members go (just after the last
    /// member's value, or after `{` when empty).
    Object {
        members: Vec<Member>,
        insert_at: usize,
    },
    /// A string; the range covers the quoted text.
    String(Range<usize>),
    /// A number, boolean, `null` or array.
    Other,
}

/// A validated line and its top-level shape.
#[derive(Debug)]
pub struct Scanned<'a> {
    pub line: &'a [u8],
    pub shape: Shape,
}

pub fn scan(line: &[u8]) -> Result<Scanned<'_>, JsonError> {
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(JsonError::Empty);
    }
    serde_json::from_slice::<IgnoredAny>(line).map_err(|e| JsonError::Syntax(e.to_string()))?;
    // From here on the text is known to be valid JSON, so the scanner can be simple.
    let mut i = skip_ws(line, 0);
    let shape = match line[i] {
        b'{' => {
            let mut members = Vec::new();
            let open = i;
            i = skip_ws(line, i + 1);
            if line[i] != b'}' {
                loop {
                    let key_end = skip_string(line, i);
                    let key = i..key_end;
                    i = skip_ws(line, key_end);
                    // ':'
                    i = skip_ws(line, i + 1);
                    let value_end = skip_value(line, i);
                    members.push(Member {
                        key,
                        value: i..value_end,
                    });
                    i = skip_ws(line, value_end);
                    if line[i] == b',' {
                        i = skip_ws(line, i + 1);
                    } else {
                        break;
                    }
                }
            }
            let insert_at = members.last().map_or(open + 1, |m| m.value.end);
            Shape::Object { members, insert_at }
        }
        b'"' => Shape::String(i..skip_string(line, i)),
        _ => Shape::Other,
    };
    Ok(Scanned { line, shape })
}

impl Scanned<'_> {
    /// Raw bytes of the last member named `name` (JSON.parse keeps the last duplicate).
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        let Shape::Object { members, .. } = &self.shape else {
            return None;
        };
        members
            .iter()
            .rev()
            .find(|m| key_is(&self.line[m.key.clone()], name))
            .map(|m| &self.line[m.value.clone()])
    }

    /// The member's value if it is a string (lossy on lone surrogates, which never match a
    /// routing keyword anyway).
    pub fn str(&self, name: &str) -> Option<String> {
        self.raw(name).and_then(decode_string)
    }

    pub fn is_object(&self) -> bool {
        matches!(self.shape, Shape::Object { .. })
    }

    /// The line with `sets` applied: existing members get the new value in place (every
    /// duplicate), missing ones are appended in order, as assigning properties on the parsed
    /// object and `JSON.stringify`ing it would do. Values are raw JSON.
    pub fn with_members(&self, sets: &[(&str, &[u8])]) -> Vec<u8> {
        let line = self.line;
        let Shape::Object { members, insert_at } = &self.shape else {
            return line.to_vec();
        };
        let extra: usize = sets.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(line.len() + extra);
        let mut at = 0;
        let mut missing: Vec<&(&str, &[u8])> = Vec::new();
        let mut replacements: Vec<(Range<usize>, &[u8])> = Vec::new();
        for set in sets {
            let mut found = false;
            for m in members {
                if key_is(&line[m.key.clone()], set.0) {
                    replacements.push((m.value.clone(), set.1));
                    found = true;
                }
            }
            if !found {
                missing.push(set);
            }
        }
        replacements.sort_by_key(|(r, _)| r.start);
        for (range, value) in replacements {
            out.extend_from_slice(&line[at..range.start]);
            out.extend_from_slice(value);
            at = range.end;
        }
        out.extend_from_slice(&line[at..*insert_at]);
        let mut first = members.is_empty();
        for (k, v) in missing {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&line[*insert_at..]);
        out
    }
}

/// Encodes `s` as a JSON string literal.
pub fn quote(s: &str) -> Vec<u8> {
    // Serializing a &str cannot fail.
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// Decodes a raw JSON string literal, `None` if it is not a string or holds a lone surrogate.
pub fn decode_string(raw: &[u8]) -> Option<String> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(str::to_owned);
    }
    serde_json::from_slice::<String>(raw).ok()
}

fn key_is(raw_key: &[u8], name: &str) -> bool {
    let inner = &raw_key[1..raw_key.len() - 1];
    if inner.contains(&b'\\') {
        decode_string(raw_key).as_deref() == Some(name)
    } else {
        inner == name.as_bytes()
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is an opening quote; returns the offset just past the closing quote.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Offset just past the (valid) value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            // Nesting is counted, not recursed, so depth cannot overflow the stack.
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            j
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn lone_surrogates_pass_validation_and_survive_edits() {
        let line = br#"{"action":"x","data":"\ud800a\udfff","to":"app"}"#;
        let sc = scan(line).unwrap();
        assert_eq!(sc.str("action").as_deref(), Some("x"));
        assert_eq!(sc.str("data"), None);
        let out = sc.with_members(&[("from", b"\"agent\"")]);
        assert_eq!(
            s(out),
            r#"{"action":"x","data":"\ud800a\udfff","to":"app","from":"agent"}"#
        );
    }

    #[test]
    fn replaces_in_place_and_appends_in_order() {
        let line =
            br#"{ "from" : "evil", "action":"a", "data":{"to":"nested","k":[1,{"x":"}"}]} }"#;
        let sc = scan(line).unwrap();
        assert_eq!(sc.str("to"), None, "nested keys are not top-level");
        let out = sc.with_members(&[("from", b"\"app\""), ("to", b"\"agent\"")]);
        assert_eq!(
            s(out),
            r#"{ "from" : "app", "action":"a", "data":{"to":"nested","k":[1,{"x":"}"}]},"to":"agent" }"#
        );
    }

    #[test]
    fn empty_object_gets_members_without_leading_comma() {
        let sc = scan(b"{}").unwrap();
        assert_eq!(
            s(sc.with_members(&[("from", b"\"app\"")])),
            r#"{"from":"app"}"#
        );
    }

    #[test]
    fn escaped_keys_are_matched_by_value() {
        let sc = scan(br#"{"\u0074o":"master"}"#).unwrap();
        assert_eq!(sc.str("to").as_deref(), Some("master"));
    }

    #[test]
    fn rejects_what_json_parse_rejects() {
        assert_eq!(scan(b"").unwrap_err(), JsonError::Empty);
        assert_eq!(scan(b"  \r").unwrap_err(), JsonError::Empty);
        assert!(scan(b"{\"a\":").is_err());
        assert!(scan(b"not json").is_err());
        assert!(scan(b"{\"a\":1}}").is_err());
        assert!(scan(b"\xff\xfe").is_err());
    }

    #[test]
    fn shapes() {
        assert!(matches!(scan(b"\"str\"").unwrap().shape, Shape::String(_)));
        assert!(matches!(scan(b"[1,2]").unwrap().shape, Shape::Other));
        assert!(matches!(scan(b"null").unwrap().shape, Shape::Other));
        assert!(matches!(scan(b"12\r").unwrap().shape, Shape::Other));
    }

    #[test]
    fn duplicate_keys_read_last_and_edit_all() {
        let sc = scan(br#"{"to":"app","to":"agent"}"#).unwrap();
        assert_eq!(sc.str("to").as_deref(), Some("agent"));
        assert_eq!(
            s(sc.with_members(&[("to", b"\"master\"")])),
            r#"{"to":"master","to":"master"}"#
        );
    }
}
