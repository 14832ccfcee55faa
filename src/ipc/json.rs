//! Reading and editing the top level of one JSON line without decoding the rest.
//!
//! The master must route messages by a few top-level fields (`to`, `from`, `action`,
//! `receiverPid`, `cmd`) and stamp `from`/`to`, while passing everything else through byte for
//! byte. A full parse + re-serialize would cost time on 64 KiB payloads and, worse, would alter
//! or reject what Node legitimately writes: `JSON.stringify` emits lone UTF-16 surrogates as
//! `\udXXX` escapes, which `serde_json` refuses to decode into a `String`. So a line is
//! validated by [`validate`] (JSON.parse's grammar, without pairing surrogates, skipping string
//! contents with `memchr`), its top-level members are located by a small scanner, and edits
//! splice bytes.

use std::borrow::Cow;
use std::ops::Range;

use smallvec::SmallVec;

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

// Large on purpose: a Shape lives on the stack while one message is routed, and boxing the
// members would bring back the per-message allocation this avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Shape {
    /// An object: its members in order, and where new members go (just after the last
    /// member's value, or after `{` when empty).
    Object {
        /// Inline up to 8: a routed message has a handful, so scanning allocates nothing.
        members: SmallVec<[Member; 8]>,
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
    validate(line)?;
    // From here on the text is known to be valid JSON, so the scanner can be simple.
    let mut i = skip_ws(line, 0);
    let shape = match line[i] {
        b'{' => {
            let mut members: SmallVec<[Member; 8]> = SmallVec::new();
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
    pub fn str(&self, name: &str) -> Option<Cow<'_, str>> {
        self.raw(name).and_then(decode_string)
    }

    /// The line with `sets` applied: existing members get the new value in place (every
    /// duplicate), missing ones are appended in order, as assigning properties on the parsed
    /// object and `JSON.stringify`ing it would do. Values are raw JSON.
    pub fn with_members(&self, sets: &[(&str, &[u8])]) -> Vec<u8> {
        let extra: usize = sets.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(self.line.len() + extra);
        self.write_with_members(sets, &mut out);
        out
    }

    /// [`Self::with_members`], appended to `out` (the relay writes straight into a receiver's
    /// outgoing buffer).
    pub fn write_with_members(&self, sets: &[(&str, &[u8])], out: &mut Vec<u8>) {
        let line = self.line;
        let Shape::Object { members, insert_at } = &self.shape else {
            out.extend_from_slice(line);
            return;
        };
        let mut at = 0;
        let mut missing: SmallVec<[&(&str, &[u8]); 2]> = SmallVec::new();
        let mut replacements: SmallVec<[(Range<usize>, &[u8]); 2]> = SmallVec::new();
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
    }
}

/// Checks that `b` is one JSON text as `JSON.parse` accepts it (RFC 8259 grammar, surrounding
/// whitespace allowed), without decoding anything: a line the receiving Node would reject must
/// never be forwarded, since it would crash that child. Iterative, so nesting depth cannot
/// overflow our stack; string contents are skipped with `memchr`, so a 64 KiB payload costs a
/// few microseconds.
pub fn validate(b: &[u8]) -> Result<(), JsonError> {
    fn err(what: &str, at: usize) -> JsonError {
        JsonError::Syntax(format!("{what} at byte {at}"))
    }
    // Open containers: `{` or `[`.
    let mut stack: Vec<u8> = Vec::new();
    let mut i = skip_ws(b, 0);
    'value: loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(b'{') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    stack.push(b'{');
                    i = object_key(b, i)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    stack.push(b'[');
                    continue 'value;
                }
            }
            Some(b'"') => i = string_end(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            Some(b'-' | b'0'..=b'9') => i = number_end(b, i)?,
            Some(_) => return Err(err("unexpected character", i)),
            None => return Err(err("unexpected end", i)),
        }
        // After a value: close containers or move to the next member.
        loop {
            i = skip_ws(b, i);
            match (stack.last(), b.get(i)) {
                (None, None) => return Ok(()),
                (None, Some(_)) => return Err(err("unexpected data after the value", i)),
                (Some(b'{'), Some(b',')) => {
                    i = object_key(b, skip_ws(b, i + 1))?;
                    continue 'value;
                }
                (Some(b'['), Some(b',')) => {
                    i = skip_ws(b, i + 1);
                    continue 'value;
                }
                (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']')) => {
                    stack.pop();
                    i += 1;
                }
                _ => return Err(err("expected , or a closing bracket", i)),
            }
        }
    }
}

/// `"key" :` at `i`; returns where the member's value starts.
fn object_key(b: &[u8], i: usize) -> Result<usize, JsonError> {
    if b.get(i) != Some(&b'"') {
        return Err(JsonError::Syntax(format!("expected a key at byte {i}")));
    }
    let i = skip_ws(b, string_end(b, i)?);
    if b.get(i) != Some(&b':') {
        return Err(JsonError::Syntax(format!("expected : at byte {i}")));
    }
    Ok(skip_ws(b, i + 1))
}

/// A string starting at the quote `b[i]`; returns the offset after its closing quote.
fn string_end(b: &[u8], i: usize) -> Result<usize, JsonError> {
    let mut j = i + 1;
    loop {
        let Some(k) = memchr::memchr2(b'"', b'\\', &b[j..]).map(|k| j + k) else {
            return Err(JsonError::Syntax(format!(
                "unterminated string at byte {i}"
            )));
        };
        // JSON.parse rejects raw control characters inside strings.
        if has_control_byte(&b[j..k]) {
            return Err(JsonError::Syntax(format!(
                "control character in string at byte {i}"
            )));
        }
        if b[k] == b'"' {
            return Ok(k + 1);
        }
        match b.get(k + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j = k + 2,
            Some(b'u')
                if b.get(k + 2..k + 6)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
            {
                j = k + 6
            }
            _ => return Err(JsonError::Syntax(format!("bad escape at byte {k}"))),
        }
    }
}

/// Whether any byte is below 0x20, eight bytes at a time (the classic "has a byte less than n"
/// bit trick), since string contents are nearly all of a large message.
fn has_control_byte(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        if x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&c| c < 0x20)
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, JsonError> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        Err(JsonError::Syntax(format!(
            "unexpected character at byte {i}"
        )))
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn number_end(b: &[u8], mut i: usize) -> Result<usize, JsonError> {
    let bad = |at: usize| JsonError::Syntax(format!("bad number at byte {at}"));
    let digits = |b: &[u8], from: usize| -> usize {
        from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count()
    };
    let start = i;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i),
        _ => return Err(bad(start)),
    }
    if b.get(i) == Some(&b'.') {
        let j = digits(b, i + 1);
        if j == i + 1 {
            return Err(bad(start));
        }
        i = j;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(b, i);
        if j == i {
            return Err(bad(start));
        }
        i = j;
    }
    Ok(i)
}

/// Encodes `s` as a JSON string literal.
pub fn quote(s: &str) -> Vec<u8> {
    // Serializing a &str cannot fail.
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// Decodes a raw JSON string literal, `None` if it is not a string or holds a lone surrogate.
/// Borrowed when there is nothing to unescape (routing keywords never need it).
pub fn decode_string(raw: &[u8]) -> Option<Cow<'_, str>> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\') {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
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

/// `b[i]` is an opening quote of a valid string; returns the offset just past the closing
/// quote, jumping between quotes and backslashes with `memchr`.
fn skip_string(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while let Some(k) = memchr::memchr2(b'"', b'\\', b.get(j..).unwrap_or_default()) {
        if b[j + k] == b'"' {
            return j + k + 1;
        }
        j += k + 2;
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
    fn validate_agrees_with_serde_json_except_on_surrogates() {
        let good: &[&[u8]] = &[
            b"{}",
            b"[]",
            b"0",
            b"-0.5e+10",
            b"1E3",
            b"true",
            b"null",
            b"\"\"",
            b" { \"a\" : [ 1 , { } , [ ] , \"x\\n\\u00e9\" ] } \r",
            br#"{"a":{"b":{"c":[[[[1]]]]}},"d":"\/\b\f\t"}"#,
            "{\"é\":\"ü€\"}".as_bytes(),
        ];
        for g in good {
            assert_eq!(validate(g), Ok(()), "{}", String::from_utf8_lossy(g));
            assert!(serde_json::from_slice::<serde_json::Value>(g).is_ok());
        }
        let bad: &[&[u8]] = &[
            b"",
            b"{",
            b"}",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b".5",
            b"+1",
            b"tru",
            b"nul",
            b"\"abc",
            b"\"a\tb\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"[1 2]",
            b"{} {}",
            b"[\"a\" \"b\"]",
            b"{\"a\":1 \"b\":2}",
            b"NaN",
            b"[1]]",
        ];
        for x in bad {
            assert!(validate(x).is_err(), "{}", String::from_utf8_lossy(x));
            assert!(serde_json::from_slice::<serde_json::Value>(x).is_err());
        }
        // What Node writes for lone surrogates is valid for JSON.parse.
        assert_eq!(validate(br#"["\ud800","\udfff x"]"#), Ok(()));
    }

    #[test]
    fn control_bytes_are_found_anywhere() {
        for len in 0..40 {
            let mut v = vec![b'a'; len];
            assert!(!has_control_byte(&v));
            for pos in 0..len {
                for c in [0u8, 0x09, 0x1f] {
                    v[pos] = c;
                    assert!(has_control_byte(&v), "{len} {pos} {c}");
                    v[pos] = b'a';
                }
                v[pos] = 0x20;
                assert!(!has_control_byte(&v));
                v[pos] = 0xff;
                assert!(!has_control_byte(&v));
                v[pos] = b'a';
            }
        }
    }

    #[test]
    fn validate_handles_deep_nesting_without_recursion() {
        let mut deep = vec![b'['; 100_000];
        deep.extend(vec![b']'; 100_000]);
        assert_eq!(validate(&deep), Ok(()));
        deep.pop();
        assert!(validate(&deep).is_err());
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
