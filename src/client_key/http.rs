//! The client address in the headers of an HTTP/1.x request: `X-Forwarded-For` and any header
//! with its syntax, or RFC 7239 `Forwarded`. Bytes that a strict HTTP/1.1 parser might read
//! differently give `Fallback`, as early as that can be seen.

use std::borrow::Cow;
use std::net::IpAddr;

use memchr::{memchr, memmem};

use super::{decimal_port, need_more, pick_client, Peek, TrustedNet};

/// The answer for `buf` when the client address is in the request header `name`.
pub(crate) fn header_key(buf: &[u8], name: &str, trusted: &[TrustedNet], at_limit: bool) -> Peek {
    let (head, complete) = match memmem::find(buf, b"\r\n\r\n") {
        // Keep the CRLF that ends the last header line, so that every line below ends in CRLF.
        Some(end) => (&buf[..end + 2], true),
        None => (buf, false),
    };
    let forwarded = name.eq_ignore_ascii_case("forwarded");
    let mut nodes = Vec::new();
    let mut request_line = true;
    let mut rest = head;
    while let Some(lf) = memchr(b'\n', rest) {
        let line = &rest[..lf];
        rest = &rest[lf + 1..];
        // A bare LF or CR ends a line for some parsers and not for others: do not guess.
        let Some(line) = line.strip_suffix(b"\r") else {
            return Peek::Fallback;
        };
        if memchr(b'\r', line).is_some() {
            return Peek::Fallback;
        }
        if request_line {
            request_line = false;
            if !request_line_ok(line, true) {
                return Peek::Fallback;
            }
            continue;
        }
        let Some((field, value)) = header_field(line) else {
            return Peek::Fallback;
        };
        // Until the end of the headers is here the values cannot be used anyway.
        if complete
            && field.eq_ignore_ascii_case(name.as_bytes())
            && !collect_nodes(value, forwarded, &mut nodes)
        {
            return Peek::Fallback;
        }
    }
    if !complete {
        // `rest` is the line still arriving. A final CR can only be followed by LF, so the line
        // before it must already be whole (or, among the headers, empty: the end of them).
        let (partial, ends) = match rest.strip_suffix(b"\r") {
            Some(partial) => (partial, true),
            None => (rest, false),
        };
        let ok = memchr(b'\r', partial).is_none()
            && if request_line {
                request_line_ok(partial, ends)
            } else if ends {
                partial.is_empty() || header_field(partial).is_some()
            } else {
                header_field_prefix_ok(partial)
            };
        return if ok {
            need_more(at_limit)
        } else {
            Peek::Fallback
        };
    }
    pick_client(&nodes, trusted).map_or(Peek::Fallback, Peek::Key)
}

/// Whether `line` (without CRLF) is an HTTP/1.x request line, or while `complete` is false, the
/// start of one.
fn request_line_ok(line: &[u8], complete: bool) -> bool {
    const VERSION: &[u8] = b"HTTP/1.";
    let method_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    let Some((&sp, after_method)) = line[method_len..].split_first() else {
        // Only (part of) the method so far.
        return !complete;
    };
    if method_len == 0 || sp != b' ' {
        return false;
    }
    let target_len = after_method
        .iter()
        .take_while(|&&b| is_target_byte(b))
        .count();
    let Some((&sp, version)) = after_method[target_len..].split_first() else {
        return !complete;
    };
    if target_len == 0 || sp != b' ' {
        return false;
    }
    if version.len() <= VERSION.len() {
        !complete && VERSION.starts_with(version)
    } else {
        version.len() == VERSION.len() + 1
            && version.starts_with(VERSION)
            && version.last().is_some_and(u8::is_ascii_digit)
    }
}

/// `name: value` of a complete header line (without CRLF), the value without surrounding
/// whitespace; `None` when it is not a well-formed header field.
fn header_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr(b':', line)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // The name is a token: this also rejects obsolete line folding (a line starting with
    // whitespace) and whitespace before the colon, both of which parsers treat differently.
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        return None;
    }
    Some((name, trim_ows(value)))
}

/// Whether a header line still arriving can become a well-formed header field.
fn header_field_prefix_ok(partial: &[u8]) -> bool {
    if memchr(b':', partial).is_some() {
        header_field(partial).is_some()
    } else {
        partial.iter().all(|&b| is_tchar(b))
    }
}

/// RFC 9110 `tchar`: the bytes of a method or a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a request target: anything visible (non-ASCII is left to the worker to judge).
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Appends the addresses of one header line's value to `out`, in order. Treating each line on
/// its own is the same as joining all lines of that name with "," first, as HTTP specifies.
/// `false` when the value is malformed as a whole (an unterminated quoted string in
/// `Forwarded`, which may have swallowed the entries that follow it).
fn collect_nodes(value: &[u8], forwarded: bool, out: &mut Vec<IpAddr>) -> bool {
    if !forwarded {
        // X-Forwarded-For has no quoting of its own; quotes around an entry are tolerated.
        out.extend(
            value
                .split(|&b| b == b',')
                .filter_map(|element| parse_node(strip_quotes(trim_ows(element)))),
        );
        return true;
    }
    let Some(elements) = split_unquoted(value, b',') else {
        return false;
    };
    for element in elements {
        let Some(pairs) = split_unquoted(element, b';') else {
            return false;
        };
        let mut fors = pairs.into_iter().filter_map(|pair| {
            let eq = memchr(b'=', pair)?;
            trim_ows(&pair[..eq])
                .eq_ignore_ascii_case(b"for")
                .then(|| trim_ows(&pair[eq + 1..]))
        });
        // A parameter may appear once per element (RFC 7239 section 4); with two `for`s it is
        // unclear which one the proxy meant, so neither is used.
        if let (Some(node), None) = (fors.next(), fors.next()) {
            out.extend(unquote(node).and_then(|node| parse_node(&node)));
        }
    }
    true
}

/// Splits at `delim` outside RFC 9110 quoted strings; `None` if a quoted string is unterminated.
fn split_unquoted(s: &[u8], delim: u8) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in s.iter().enumerate() {
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == delim {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// The value of a `token` or `quoted-string`, with quoted pairs unescaped.
fn unquote(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return Some(Cow::Borrowed(value));
    };
    let inner = inner.strip_suffix(b"\"")?;
    if memchr(b'\\', inner).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        out.push(if b == b'\\' { *bytes.next()? } else { b });
    }
    Some(Cow::Owned(out))
}

fn strip_quotes(s: &[u8]) -> &[u8] {
    s.strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(s)
}

/// The address of one list entry: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]`, `[::1]:80`.
/// `unknown`, obfuscated identifiers (`_hidden`, RFC 7239 section 6.3) and anything unparsable
/// give `None`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?.trim_matches([' ', '\t']);
    if node.is_empty() || node.eq_ignore_ascii_case("unknown") || node.starts_with('_') {
        return None;
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    let (ip, port) = match node.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (host.parse().ok()?, port)
        }
        None => {
            // Without brackets only an IPv4 address can carry a port: an IPv6 one is all colons.
            let (host, port) = node.split_once(':')?;
            (IpAddr::V4(host.parse().ok()?), Some(port))
        }
    };
    port.is_none_or(node_port_ok).then_some(ip)
}

/// RFC 7239 `node-port`: a decimal port or an obfuscated one (`_abc`).
fn node_port_ok(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
        None => decimal_port(port.as_bytes()).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use crate::client_key::client_key;
    use crate::client_key::testing::*;

    #[test]
    fn x_forwarded_for_values() {
        let cases = [
            ("203.0.113.7", k("203.0.113.7")),
            ("203.0.113.7:5678", k("203.0.113.7")),
            ("2001:db8::7", k("2001:db8::7")),
            ("[2001:db8::7]", k("2001:db8::7")),
            ("[2001:db8::7]:443", k("2001:db8::7")),
            ("[203.0.113.7]:443", k("203.0.113.7")),
            ("\"203.0.113.7\"", k("203.0.113.7")),
            ("\"[2001:db8::7]:443\"", k("2001:db8::7")),
            ("  203.0.113.7  ", k("203.0.113.7")),
            ("\t203.0.113.7\t", k("203.0.113.7")),
            ("198.51.100.1,203.0.113.7", k("203.0.113.7")),
            ("198.51.100.1 ,  203.0.113.7 ", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7, 10.0.0.2", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7, unknown", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7, UNKNOWN", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7, _hidden", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7:_port", k("203.0.113.7")),
            ("198.51.100.1, 203.0.113.7, garbage", k("203.0.113.7")),
            ("198.51.100.1,, 203.0.113.7,", k("203.0.113.7")),
            ("::ffff:203.0.113.7", k("::ffff:203.0.113.7")),
            // Not addresses.
            ("", F),
            ("unknown", F),
            ("_hidden, unknown", F),
            ("example.com", F),
            ("203.0.113", F),
            ("203.0.113.256", F),
            ("203.0.113.7:", F),
            ("203.0.113.7:99999", F),
            ("203.0.113.7:+80", F),
            ("203.0.113.7:_", F),
            ("203.0.113.7:80:80", F),
            ("[2001:db8::7", F),
            ("[2001:db8::7]x", F),
            ("[2001:db8::7]:", F),
            ("2001:db8::7:443x", F),
            ("fe80::1%eth0", F),
            ("\"203.0.113.7", F),
            ("2\u{e9}3.0.113.7", F),
        ];
        assert_keys(
            &xff(),
            cases.map(|(value, want)| (request(&[&format!("X-Forwarded-For: {value}")]), want)),
        );
    }

    #[test]
    fn x_forwarded_for_skips_trusted_proxies_from_the_right() {
        let value = "198.51.100.1, 203.0.113.7, 10.0.0.3, 10.0.0.2";
        let cases = [
            (&["10.0.0.0/8"][..], "203.0.113.7"),
            (&["10.0.0.2"], "10.0.0.3"),
            (&[], "10.0.0.2"),
            (&["10.0.0.0/8", "203.0.113.0/24"], "198.51.100.1"),
            // All trusted: the left-most.
            (&["0.0.0.0/0"], "198.51.100.1"),
            (&["::/0"], "198.51.100.1"),
        ];
        for (extra, want) in cases {
            // The peer itself must be trusted for the header to count at all.
            let mut trusted = nets(extra);
            trusted.push(LB.parse().unwrap());
            let input = request(&[&format!("X-Forwarded-For: {value}")]);
            assert_eq!(
                client_key(&xff(), &input, ip(LB), &trusted, MAX),
                k(want),
                "trusted {extra:?}"
            );
        }

        let mapped = request(&["X-Forwarded-For: 203.0.113.7, ::ffff:10.0.0.9, [fd00::1]:80"]);
        assert_eq!(key(&xff(), &mapped), k("203.0.113.7"));
        let all_trusted = request(&["X-Forwarded-For: unknown, 10.0.0.9, ::1, fd00::2"]);
        assert_eq!(key(&xff(), &all_trusted), k("10.0.0.9"));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let names = [
            "X-Forwarded-For",
            "x-forwarded-for",
            "X-FORWARDED-FOR",
            "x-FoRwArDeD-fOr",
        ];
        for configured in names {
            for sent in names {
                let input = request(&[&format!("{sent}: 203.0.113.7")]);
                assert_eq!(
                    key(&header(configured), &input),
                    k("203.0.113.7"),
                    "configured {configured}, sent {sent}"
                );
            }
        }
    }

    #[test]
    fn only_the_configured_header_counts() {
        let cases = [
            (
                "X-Real-IP",
                &["X-Real-IP: 203.0.113.7"][..],
                k("203.0.113.7"),
            ),
            ("X-Real-IP", &["X-Forwarded-For: 203.0.113.7"], F),
            ("X-Forwarded-For", &["X-Real-IP: 203.0.113.7"], F),
            ("X-Forwarded-For", &["X-Forwarded-For-Not: 203.0.113.7"], F),
            ("X-Forwarded-For", &["X-Forwarded: 203.0.113.7"], F),
            ("X-Forwarded-For", &["Forwarded: for=203.0.113.7"], F),
            ("Forwarded", &["X-Forwarded-For: 203.0.113.7"], F),
            ("X-Forwarded-For", &[], F),
            ("", &["X-Forwarded-For: 203.0.113.7"], F),
            (
                "CF-Connecting-IP",
                &[
                    "X-Forwarded-For: 198.51.100.1",
                    "CF-Connecting-IP: 203.0.113.7",
                ],
                k("203.0.113.7"),
            ),
        ];
        for (name, lines, want) in cases {
            assert_keys(&header(name), [(request(lines), want)]);
        }
    }

    #[test]
    fn repeated_header_lines_are_joined_in_order() {
        let cases = [
            (
                &[
                    "X-Forwarded-For: 198.51.100.1",
                    "X-Forwarded-For: 203.0.113.7",
                ][..],
                "203.0.113.7",
            ),
            (
                &["X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 10.0.0.2"],
                "203.0.113.7",
            ),
            (
                &[
                    "X-Forwarded-For: 198.51.100.1, 203.0.113.7",
                    "x-forwarded-for: 10.0.0.2, 10.0.0.3",
                ],
                "203.0.113.7",
            ),
            (
                &[
                    "X-Forwarded-For: 198.51.100.1",
                    "Accept: */*",
                    "X-Forwarded-For: 203.0.113.7",
                ],
                "203.0.113.7",
            ),
            (
                &[
                    "X-Forwarded-For: 203.0.113.7",
                    "X-Forwarded-For:",
                    "X-Forwarded-For: unknown",
                ],
                "203.0.113.7",
            ),
            (
                &["X-Forwarded-For: 10.0.0.5", "X-Forwarded-For: 10.0.0.6"],
                "10.0.0.5",
            ),
        ];
        assert_keys(&xff(), cases.map(|(lines, want)| (request(lines), k(want))));
    }

    #[test]
    fn forwarded_header_values() {
        let cases = [
            ("for=203.0.113.7", k("203.0.113.7")),
            ("For=203.0.113.7", k("203.0.113.7")),
            ("for=\"203.0.113.7:5678\"", k("203.0.113.7")),
            ("for=\"[2001:db8::7]\"", k("2001:db8::7")),
            ("for=\"[2001:db8::7]:443\"", k("2001:db8::7")),
            ("for=\"[2001:db8::7]:_obf\"", k("2001:db8::7")),
            ("for=\"\\[2001:db8::7\\]\"", k("2001:db8::7")), // quoted pairs
            ("for=203.0.113.7;proto=https;by=10.0.0.2", k("203.0.113.7")),
            (
                "proto=https;for=203.0.113.7;host=example.com",
                k("203.0.113.7"),
            ),
            (
                "proto=https ; for = 203.0.113.7 ; host=example.com",
                k("203.0.113.7"),
            ),
            ("for=198.51.100.1, for=203.0.113.7", k("203.0.113.7")),
            (
                "for=198.51.100.1, for=203.0.113.7, for=10.0.0.2",
                k("203.0.113.7"),
            ),
            ("for=203.0.113.7, for=unknown", k("203.0.113.7")),
            ("for=203.0.113.7, for=_hidden", k("203.0.113.7")),
            ("for=203.0.113.7, proto=http", k("203.0.113.7")),
            // Delimiters inside quoted strings do not split.
            (
                "for=203.0.113.7;host=\"a,for=198.51.100.1;b\"",
                k("203.0.113.7"),
            ),
            (
                "for=198.51.100.1, for=203.0.113.7;ext=\"x,y\", for=10.0.0.2",
                k("203.0.113.7"),
            ),
            // Two `for`s in one element: ambiguous, the element is ignored.
            (
                "for=198.51.100.1, for=203.0.113.7;for=198.51.100.9",
                k("198.51.100.1"),
            ),
            ("for=203.0.113.7;for=198.51.100.9", F),
            // An unterminated quote may have swallowed the proxies' entries.
            ("for=\"203.0.113.7, for=198.51.100.1", F),
            ("for=198.51.100.1;ext=\"x, for=203.0.113.7", F),
            ("for=\"203.0.113.7\\\"", F),
            ("for=unknown", F),
            ("for=", F),
            ("for", F),
            ("203.0.113.7", F),
            ("by=203.0.113.7", F),
            ("proto=https", F),
            ("for=\"[2001:db8::7]:x\"", F),
        ];
        let cases = cases.map(|(value, want)| (request(&[&format!("Forwarded: {value}")]), want));
        assert_keys(&header("forwarded"), cases.clone());
        assert_keys(&header("FORWARDED"), cases);
    }

    #[test]
    fn forwarded_skips_trusted_proxies_and_joins_lines() {
        let input = request(&[
            "Forwarded: for=198.51.100.1",
            "Forwarded: for=203.0.113.7;proto=https, for=\"[fd00::3]\"",
            "forwarded: for=10.0.0.2",
        ]);
        assert_eq!(key(&header("Forwarded"), &input), k("203.0.113.7"));
        let untrusted_bad_line = request(&["Forwarded: for=\"x", "Forwarded: for=203.0.113.7"]);
        assert_eq!(key(&header("Forwarded"), &untrusted_bad_line), F);
    }

    #[test]
    fn http_request_lines() {
        let cases = [
            ("GET / HTTP/1.1", true),
            ("GET / HTTP/1.0", true),
            ("POST /upload HTTP/1.1", true),
            ("OPTIONS * HTTP/1.1", true),
            ("CONNECT example.com:443 HTTP/1.1", true),
            ("M-SEARCH * HTTP/1.1", true),
            ("GET http://example.com/a?b=c#d HTTP/1.1", true),
            ("GET /caf\u{e9} HTTP/1.1", true),
            ("PRI * HTTP/2.0", false),
            ("GET / HTTP/2", false),
            ("GET / HTTP/1.1 ", false),
            ("GET / HTTP/1.x", false),
            ("GET / HTTP/1.10", false),
            ("GET / http/1.1", false),
            ("GET / HTTP/1.", false),
            ("GET /", false), // HTTP/0.9
            ("GET", false),
            ("", false),
            ("GET  / HTTP/1.1", false),
            (" GET / HTTP/1.1", false),
            ("GET / HTTP/1.1\t", false),
            ("GET\t/ HTTP/1.1", false),
            ("G(T / HTTP/1.1", false),
            ("GET /a\x7fb HTTP/1.1", false),
            ("GET /a\x00b HTTP/1.1", false),
            ("SSH-2.0-OpenSSH_9.6", false),
        ];
        assert_keys(
            &xff(),
            cases.map(|(line, ok)| {
                let input = format!("{line}\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
                (input, if ok { k("203.0.113.7") } else { F })
            }),
        );
    }

    #[test]
    fn malformed_header_lines_fall_back() {
        let good = "X-Forwarded-For: 203.0.113.7";
        let cases = [
            "X-Forwarded-For : 203.0.113.7", // whitespace before the colon
            " X-Forwarded-For: 203.0.113.7", // obs-fold / leading whitespace
            "X-Forwarded-For: 198.51.100.1,\r\n 203.0.113.7", // obs-fold continuation
            "X-Forwarded-For 203.0.113.7",   // no colon
            ": 203.0.113.7",                 // empty name
            "X-Forwarded(For): 203.0.113.7", // not a token
            "X-Forwarded-For: 203.0.113.7\x00", // NUL
            "X-Forwarded-For: 203.0.113.7\x1b", // other control byte
            "X-Forwarded-For: 203.0.113.7\x7f", // DEL
            "X-Forwarded-For: 203.0.113.7\rX: y", // bare CR
            "X-Forwarded-For: 203.0.113.7\nX: y", // bare LF
            "Host\x00: x",
        ];
        assert_keys(
            &xff(),
            cases
                .iter()
                .flat_map(|line| [(request(&[line, good]), F), (request(&[good, line]), F)]),
        );
        // Tabs, non-ASCII and odd but valid bytes in other headers are fine.
        let input = request(&["User-Agent: caf\u{e9}\tbrowser", "X-Empty:", good]);
        assert_eq!(key(&xff(), &input), k("203.0.113.7"));
        // Bare LF line endings throughout (some parsers accept them): not guessed at.
        assert_eq!(
            key(&xff(), b"GET / HTTP/1.1\nX-Forwarded-For: 203.0.113.7\n\n"),
            F
        );
    }

    #[test]
    fn not_http_falls_back_early() {
        let cases: &[&[u8]] = &[
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // TLS ClientHello
            b"\x16",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", // HTTP/2 prior knowledge
            b"PRI * HTTP/2",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"\x00\x00\x00\x00",
            b"\r\nGET / HTTP/1.1\r\n",
            b"\r\n\r\n\0\r\nQUIT\n",
            b"\n",
            b" GET",
            b"GET\t",
            b"GET  ",
            b"GET / X",
            b"GET / HTTP/2",
            b"GET / HTTP/1.1x",
            b"GET / HTTP/1.1\n",
            b"GET / HTTP/1.1\r\r",
            b"GET /\r",
            b"GET / HTTP/1.\r",
            b"GET / HTTP/1.1\r\nX-A\r",
            b"GET / HTTP/1.1\r\nX-A\r\n",
            b"GET / HTTP/1.1\r\n\r\r",
            b"GET / HTTP/1.1\r\nX-Forwarded-For : 1",
            b"GET / HTTP/1.1\r\n X",
            b"GET / HTTP/1.1\r\nX-A: \x00",
            b"GET / HTTP/1.1\r\nX-A: b\rc",
            b"GET / HTTP/1.1\r\nX(A",
            b"hello world how are you\r\n",
        ];
        assert_keys(&xff(), cases.iter().map(|input| (input, F)));
    }

    #[test]
    fn prefixes_of_requests_need_more() {
        let cases: &[&[u8]] = &[
            b"G",
            b"GET",
            b"GET ",
            b"GET /",
            b"GET /x ",
            b"GET / H",
            b"GET / HTTP/1.",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r",
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nX",
            b"GET / HTTP/1.1\r\nX-Forwarded-For",
            b"GET / HTTP/1.1\r\nX-Forwarded-For:",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n",
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\r",
        ];
        assert_keys(&xff(), cases.iter().map(|input| (input, N)));
    }

    #[test]
    fn http_byte_by_byte() {
        let cases = [
            (
                xff(),
                request(&["X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.0.0.2"]),
                "203.0.113.7",
            ),
            (
                xff(),
                request(&["X-Forwarded-For: [2001:db8::7]:443", "Accept: */*"]),
                "2001:db8::7",
            ),
            (
                header("forwarded"),
                request(&["Forwarded: for=\"[2001:db8::7]:443\";proto=https"]),
                "2001:db8::7",
            ),
            (
                xff(),
                b"POST /a HTTP/1.0\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n".to_vec(),
                "203.0.113.7",
            ),
        ];
        for (source, input, want) in cases {
            assert_eq!(&input[input.len() - 4..], b"\r\n\r\n");
            assert_byte_by_byte(&source, &input, input.len(), k(want));
        }
    }

    #[test]
    fn bytes_after_the_headers_are_ignored() {
        let mut input = request(&["X-Forwarded-For: 203.0.113.7"]);
        let end = input.len();
        input.extend_from_slice(b"X-Forwarded-For: 198.51.100.66\r\n\r\n\x00\xff\x16 binary body");
        assert_byte_by_byte(&xff(), &input, end, k("203.0.113.7"));
        // A second pipelined request does not count either.
        let mut pipelined = request(&[]);
        pipelined.extend_from_slice(&request(&["X-Forwarded-For: 203.0.113.7"]));
        assert_eq!(key(&xff(), &pipelined), F);
    }

    #[test]
    fn oversized_headers_fall_back_at_the_limit() {
        let input = request(&[
            &format!("Cookie: {}", "a".repeat(300)),
            "X-Forwarded-For: 203.0.113.7",
        ]);
        let len = input.len();
        let at =
            |max: usize, n: usize| client_key(&xff(), &input[..n], ip(LB), &default_trusted(), max);
        // The end of the headers exactly at the bound still counts.
        assert_eq!(at(len, len), k("203.0.113.7"));
        assert_eq!(at(len + 1, len), k("203.0.113.7"));
        // One byte short of the bound: it will never arrive.
        assert_eq!(at(len - 1, len - 1), F);
        assert_eq!(at(len - 1, len - 2), N);
        assert_eq!(at(100, 100), F);
        assert_eq!(at(100, 99), N);
        // A caller passing more than its bound gets the answer for the bound.
        assert_eq!(at(100, len), F);
        assert_eq!(at(0, 0), F);
        assert_eq!(at(0, len), F);
    }
}
