//! The real client address of a sticky connection that arrives through a load balancer.
//!
//! In sticky mode the master picks a worker by the client's address. Behind a load balancer every
//! connection comes from the balancer's address, so every client would land on the same worker.
//! When the option is on, the master peeks at the first bytes of each connection (`recv` with
//! `MSG_PEEK`, so nothing is consumed and the worker still reads every byte) and asks
//! [`client_key`] for the client address carried in them:
//!
//! - [`KeySource::Header`]: a request header of HTTP/1.x, `X-Forwarded-For` or any header with
//!   the same comma-separated syntax, or RFC 7239 `Forwarded` (its `for=` parameter) when the
//!   configured name is `forwarded`;
//! - [`KeySource::ProxyProtocol`]: a PROXY protocol header, v1 (text) or v2 (binary).
//!
//! The master calls [`client_key`] again each time more bytes have arrived, with everything
//! peeked so far, until the answer is [`Peek::Key`] or [`Peek::Fallback`] (use the TCP peer's
//! address); its deadline covers clients that send nothing. Once `buf` holds `max_bytes` bytes
//! the answer is never [`Peek::NeedMore`], so the peek loop always ends.
//!
//! # Trust
//!
//! The bytes come from the network and are attacker-controlled. They are believed only when the
//! TCP peer is one of the trusted proxies: from any other peer the answer is `Fallback` at once,
//! even for an empty `buf` (so the master may ask before peeking at all), because a client that
//! connects directly could write any header it likes. In an `X-Forwarded-For` list only the
//! entries appended by trusted proxies are reliable, so the client is the right-most entry that
//! is not itself a trusted proxy. `unknown`, obfuscated identifiers and unparsable entries are
//! skipped rather than ending the walk: the key only chooses a worker, it authorises nothing, so
//! a client that forges entries can at most choose its own worker.
//!
//! # Conservative parsing
//!
//! The worker's HTTP parser, not this one, decides what the request means. Whenever the bytes
//! might be read differently by a strict HTTP/1.1 parser (bare CR or LF, obsolete line folding,
//! whitespace before a colon, control bytes, ...) or are not HTTP/1.x at all (TLS, HTTP/2,
//! binary), the answer is `Fallback`, as early as that can be seen, rather than a guess. The same
//! holds for malformed PROXY headers.
//!
//! # What the worker sees
//!
//! This module only reads. The caller ([`crate::sticky::peek_key`]) leaves HTTP headers in place
//! and consumes a complete PROXY header once it has the key, so the worker's HTTP server gets the
//! stream as the client sent it.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use memchr::{memchr, memmem};

/// Where the real client address is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `X-Forwarded-For` (or another header name, case-insensitive) of an HTTP/1.x request: the
    /// client is the right-most address in the list that is not a trusted proxy (walk from the
    /// right, skipping trusted addresses; if all are trusted, the left-most). The name
    /// `forwarded` selects RFC 7239 `Forwarded` syntax, reading its `for=` parameters.
    Header { name: String },
    /// PROXY protocol v1 (text) or v2 (binary), auto-detected by signature.
    ProxyProtocol,
}

/// The answer for the bytes peeked so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Undecided: peek again once more bytes are available (never returned at `max_bytes`).
    NeedMore,
    /// The real client's address.
    Key(IpAddr),
    /// No usable client address: use the TCP peer address.
    Fallback,
}

/// The client key carried in the first bytes of a connection.
///
/// `buf` is everything peeked so far (from offset 0), `trusted` the proxy addresses whose
/// headers are believed: the header/PROXY line is only honoured when `peer`, the TCP peer
/// address, is itself trusted; otherwise the answer is `Fallback` immediately, so a client
/// cannot spoof. `max_bytes` is the most the caller will ever peek: bytes past it are ignored,
/// and at it the answer is never `NeedMore`.
pub fn client_key(
    source: &KeySource,
    buf: &[u8],
    peer: IpAddr,
    trusted: &[TrustedNet],
    max_bytes: usize,
) -> Peek {
    if !is_trusted(trusted, peer) {
        return Peek::Fallback;
    }
    // The caller should never pass more, but if it does the answer must not depend on bytes
    // beyond the bound it promised to respect.
    let buf = &buf[..buf.len().min(max_bytes)];
    let at_limit = buf.len() >= max_bytes;
    match source {
        KeySource::Header { name } => header_key(buf, name, trusted, at_limit),
        KeySource::ProxyProtocol => proxy_protocol_key(buf, at_limit, max_bytes),
    }
}

/// `NeedMore`, unless the caller will never peek more bytes.
fn need_more(at_limit: bool) -> Peek {
    if at_limit {
        Peek::Fallback
    } else {
        Peek::NeedMore
    }
}

fn is_trusted(trusted: &[TrustedNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

// ---------------------------------------------------------------------------------------------
// Trusted proxies
// ---------------------------------------------------------------------------------------------

/// A trusted proxy: one address or a CIDR block, such as `10.0.0.1`, `10.0.0.0/8`, `::1` or
/// `fd00::/8`.
///
/// Host bits after the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`), and an IPv4-mapped
/// IPv6 block with a prefix of at least 96 (`::ffff:10.0.0.0/104`) is stored as its IPv4 form,
/// so that it matches the way dual-stack sockets report IPv4 clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedNet {
    /// Already masked to `prefix` bits.
    network: IpAddr,
    prefix: u8,
}

/// A trusted-proxy string that is neither an IP address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedNetError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("invalid trusted proxy {0:?}: expected an IP address or CIDR block such as 10.0.0.0/8 or fd00::/8")]
    Address(String),
    /// The prefix length is not a decimal number within the address family's width.
    #[error("invalid prefix length in trusted proxy {value:?}: expected a number from 0 to {max}")]
    Prefix { value: String, max: u8 },
}

impl TrustedNet {
    fn new(addr: IpAddr, prefix: u8) -> Self {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (addr, prefix),
            },
            IpAddr::V4(_) => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
        };
        Self { network, prefix }
    }

    /// Whether `ip` is in this block. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the same
    /// client as its IPv4 form, whichever of the two forms the block or the address uses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            // A block wider than ::ffff:0:0/96 (such as ::/0) also covers IPv4 clients.
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                u128::from(ip.to_ipv6_mapped()) & mask_v6(self.prefix) == u128::from(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
}

impl FromStr for TrustedNet {
    type Err = TrustedNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        // Accept "[::1]" too, the way IPv6 addresses are often written in configuration.
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| TrustedNetError::Address(s.to_owned()))?;
        let max = Self::max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                // `u8::from_str` accepts a leading '+'; a prefix length is plain digits.
                .filter(|&n| p.bytes().all(|b| b.is_ascii_digit()) && n <= max)
                .ok_or_else(|| TrustedNetError::Prefix {
                    value: s.to_owned(),
                    max,
                })?,
        };
        Ok(Self::new(addr, prefix))
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == Self::max_prefix(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        // Not `to_ipv4`, which would also turn ::1 into 0.0.0.1.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    // A shift by the full width overflows: prefix 0 is the empty mask.
    u32::MAX
        .checked_shl(32u32.saturating_sub(prefix.into()))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(prefix.into()))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.x request headers
// ---------------------------------------------------------------------------------------------

fn header_key(buf: &[u8], name: &str, trusted: &[TrustedNet], at_limit: bool) -> Peek {
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

/// A port in plain decimal digits (`u16::from_str` would also take a leading '+').
fn decimal_port(port: &[u8]) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    parse_ascii(port)
}

fn parse_ascii<T: FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The right-most address that is not a trusted proxy; if all are trusted, the left-most.
fn pick_client(nodes: &[IpAddr], trusted: &[TrustedNet]) -> Option<IpAddr> {
    nodes
        .iter()
        .rev()
        .find(|&&ip| !is_trusted(trusted, ip))
        .or_else(|| nodes.first())
        .copied()
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt)
// ---------------------------------------------------------------------------------------------

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (section 2.1).
const V1_MAX_LINE: usize = 107;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, and the 2-byte length.
const V2_FIXED_LEN: usize = 16;

fn proxy_protocol_key(buf: &[u8], at_limit: bool, max_bytes: usize) -> Peek {
    match buf.first() {
        None => need_more(at_limit),
        Some(b'P') => proxy_v1_key(buf, at_limit),
        Some(b'\r') => proxy_v2_key(buf, at_limit, max_bytes),
        Some(_) => Peek::Fallback,
    }
}

fn proxy_v1_key(buf: &[u8], at_limit: bool) -> Peek {
    let window = &buf[..buf.len().min(V1_MAX_LINE)];
    if let Some(end) = memmem::find(window, b"\r\n") {
        return parse_v1_line(&window[..end]).map_or(Peek::Fallback, Peek::Key);
    }
    if window.len() >= V1_MAX_LINE || !v1_prefix_ok(window) {
        return Peek::Fallback;
    }
    need_more(at_limit)
}

/// The source address of a complete v1 line (without CRLF); `None` for `UNKNOWN` and anything
/// malformed.
fn parse_v1_line(line: &[u8]) -> Option<IpAddr> {
    let mut fields = line.strip_prefix(V1_PREFIX)?.split(|&b| b == b' ');
    let (proto, src, dst, sport, dport) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() || decimal_port(sport).is_none() || decimal_port(dport).is_none() {
        return None;
    }
    match proto {
        b"TCP4" => {
            parse_ascii::<Ipv4Addr>(dst)?;
            parse_ascii::<Ipv4Addr>(src).map(IpAddr::V4)
        }
        b"TCP6" => {
            parse_ascii::<Ipv6Addr>(dst)?;
            parse_ascii::<Ipv6Addr>(src).map(IpAddr::V6)
        }
        _ => None,
    }
}

/// Whether a v1 line without its CRLF yet (shorter than the maximum) can still become a line
/// with a source address. `UNKNOWN` cannot, so it falls back without waiting for the rest.
fn v1_prefix_ok(window: &[u8]) -> bool {
    if window.len() < V1_PREFIX.len() {
        return V1_PREFIX.starts_with(window);
    }
    if let Some(line) = window.strip_suffix(b"\r") {
        // Only a CRLF can follow, so the line must already be complete.
        return parse_v1_line(line).is_some();
    }
    let Some(rest) = window.strip_prefix(V1_PREFIX) else {
        return false;
    };
    let fields: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
    let Some((partial, done)) = fields.split_last() else {
        return false;
    };
    let Some((proto, done)) = done.split_first() else {
        return [&b"TCP4"[..], b"TCP6"]
            .iter()
            .any(|p| p.starts_with(partial));
    };
    let v6 = match *proto {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return false,
    };
    // `done` are the complete fields after the protocol: source, destination, source port
    // (the destination port is the last field, so it is never followed by a space).
    let done_ok = done.iter().enumerate().all(|(i, field)| match i {
        0 | 1 if v6 => parse_ascii::<Ipv6Addr>(field).is_some(),
        0 | 1 => parse_ascii::<Ipv4Addr>(field).is_some(),
        2 => decimal_port(field).is_some(),
        _ => false,
    });
    let partial_ok = match done.len() {
        0 | 1 if v6 => {
            // Longest form: six groups then a dotted quad.
            partial.len() <= 45
                && partial
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        0 | 1 => partial.len() <= 15 && partial.iter().all(|&b| b.is_ascii_digit() || b == b'.'),
        2 | 3 => partial.len() <= 5 && partial.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    done_ok && partial_ok
}

fn proxy_v2_key(buf: &[u8], at_limit: bool, max_bytes: usize) -> Peek {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Peek::Fallback;
    }
    // Version 2 with the PROXY command is the only one carrying a client: LOCAL (0x20) is the
    // balancer's own connection, such as a health check.
    if buf.get(12).is_some_and(|&b| b != 0x21) {
        return Peek::Fallback;
    }
    let (v6, address_len) = match buf.get(13) {
        None => return need_more(at_limit),
        Some(0x11) => (false, 12), // TCP over IPv4: source, destination, two ports
        Some(0x21) => (true, 36),  // TCP over IPv6
        // UDP, UNIX sockets and unspecified families have no TCP client address.
        Some(_) => return Peek::Fallback,
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return need_more(at_limit);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    // Too short for its own family, or a header the caller will never peek whole.
    if len < address_len || V2_FIXED_LEN + len > max_bytes {
        return Peek::Fallback;
    }
    let Some(block) = buf.get(V2_FIXED_LEN..V2_FIXED_LEN + len) else {
        return need_more(at_limit);
    };
    // The source address comes first in the address block.
    let source = if v6 {
        block
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(IpAddr::from)
    } else {
        block
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(IpAddr::from)
    };
    source.map_or(Peek::Fallback, Peek::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;
    /// The load balancer: the TCP peer of every test connection unless a test says otherwise.
    const LB: &str = "10.0.0.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<TrustedNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn default_trusted() -> Vec<TrustedNet> {
        nets(&["10.0.0.0/8", "::1", "fd00::/8"])
    }

    fn header(name: &str) -> KeySource {
        KeySource::Header {
            name: name.to_owned(),
        }
    }

    fn xff() -> KeySource {
        header("X-Forwarded-For")
    }

    /// A GET request with the given header lines (each without CRLF).
    fn request(lines: &[&str]) -> Vec<u8> {
        let mut req = String::from("GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n");
        for line in lines {
            req.push_str(line);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.into_bytes()
    }

    fn key(source: &KeySource, buf: &[u8]) -> Peek {
        client_key(source, buf, ip(LB), &default_trusted(), MAX)
    }

    fn k(s: &str) -> Peek {
        Peek::Key(ip(s))
    }

    const F: Peek = Peek::Fallback;
    const N: Peek = Peek::NeedMore;

    /// A PROXY v2 header: `cmd` version/command byte, `fam` family byte, `block` the address
    /// block (whose length goes in the header).
    fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(cmd);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn v2_tcp4(src: [u8; 4], dst: [u8; 4], tlvs: &[u8]) -> Vec<u8> {
        let mut block = src.to_vec();
        block.extend_from_slice(&dst);
        block.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
        block.extend_from_slice(tlvs);
        v2(0x21, 0x11, &block)
    }

    fn v2_tcp6(src: Ipv6Addr, dst: Ipv6Addr, tlvs: &[u8]) -> Vec<u8> {
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
        block.extend_from_slice(tlvs);
        v2(0x21, 0x21, &block)
    }

    /// Feeds `input` one byte at a time: every proper prefix shorter than `decided_at` must be
    /// `NeedMore`, and from there on (through the whole input) the answer must be `want`.
    fn assert_byte_by_byte(source: &KeySource, input: &[u8], decided_at: usize, want: Peek) {
        for n in 0..=input.len() {
            let got = key(source, &input[..n]);
            let expect = if n < decided_at { N } else { want };
            assert_eq!(
                got,
                expect,
                "prefix of {n}/{} bytes: {:?}",
                input.len(),
                String::from_utf8_lossy(&input[..n])
            );
        }
    }

    /// xorshift64*: deterministic pseudo-random bytes for the robustness tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    fn all_sources() -> Vec<KeySource> {
        vec![
            xff(),
            header("forwarded"),
            header("X-Real-IP"),
            KeySource::ProxyProtocol,
        ]
    }

    fn valid_samples() -> Vec<Vec<u8>> {
        vec![
            request(&["X-Forwarded-For: 203.0.113.7, 10.0.0.2"]),
            request(&["Forwarded: for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.2"]),
            request(&["X-Real-IP: 198.51.100.1"]),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n".to_vec(),
            v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], &[0x04, 0x00, 0x01, 0x00]),
            v2_tcp6(ip6("2001:db8::7"), ip6("2001:db8::1"), &[]),
        ]
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    // -----------------------------------------------------------------------------------------
    // TrustedNet
    // -----------------------------------------------------------------------------------------

    #[test]
    fn trusted_net_parses_addresses_and_cidr_blocks() {
        let cases = [
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"), // host bits dropped
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7/32", "192.168.1.7"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("fd00::/8", "fd00::/8"),
            ("fd12:3456::1/8", "fd00::/8"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("  172.16.0.0/12 ", "172.16.0.0/12"),
            ("10.0.0.0/008", "10.0.0.0/8"),
            // IPv4-mapped blocks become their IPv4 form.
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:0:0/95", "::fffe:0:0/95"),
        ];
        for (input, display) in cases {
            let net: TrustedNet = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(net.to_string(), display, "{input:?}");
        }
    }

    #[test]
    fn trusted_net_rejects_bad_values_naming_them() {
        // (input, whether the prefix is what is wrong)
        let cases = [
            ("", false),
            ("localhost", false),
            ("10.0.0", false),
            ("10.0.0.256", false),
            ("010.0.0.1", false),
            ("10.0.0.1:80", false),
            ("fe80::1%eth0", false),
            ("/8", false),
            ("10.0.0.0/8/8", true),
            ("10.0.0.0/", true),
            ("10.0.0.0/33", true),
            ("10.0.0.0/+8", true),
            ("10.0.0.0/-1", true),
            ("10.0.0.0/ 8", true),
            ("10.0.0.0/256", true),
            ("::/129", true),
            ("fd00::/x", true),
        ];
        for (input, bad_prefix) in cases {
            let err = input.parse::<TrustedNet>().unwrap_err();
            match (&err, bad_prefix) {
                (TrustedNetError::Address(value), false) => assert_eq!(value, input),
                (TrustedNetError::Prefix { value, max }, true) => {
                    assert_eq!(value, input);
                    assert_eq!(*max, if input.contains(':') { 128 } else { 32 });
                }
                _ => panic!("{input:?}: {err:?}"),
            }
            assert!(
                err.to_string().contains(&format!("{input:?}")),
                "{input:?} not named in {err}"
            );
        }
    }

    #[test]
    fn trusted_net_cidr_matching() {
        let cases = [
            ("10.0.0.0/8", "10.0.0.0", true),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "9.255.255.255", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("192.168.1.0/24", "192.168.1.200", true),
            ("192.168.1.0/24", "192.168.2.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("192.168.1.6/31", "192.168.1.7", true),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "::1", false), // IPv4 blocks never hold IPv6 clients
            ("::1", "::1", true),
            ("::1", "::2", false),
            ("::1", "127.0.0.1", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe00::1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("2001:db8::/127", "2001:db8::1", true),
            ("2001:db8::/128", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "203.0.113.9", true), // covers the mapped form of every IPv4 address
            ("fd00::/8", "10.0.0.1", false),
        ];
        for (net, addr, want) in cases {
            let parsed: TrustedNet = net.parse().unwrap();
            assert_eq!(parsed.contains(ip(addr)), want, "{net} contains {addr}");
        }
    }

    #[test]
    fn trusted_net_ipv4_mapped_addresses_match_their_ipv4_form() {
        let cases = [
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::ffff:11.1.2.3", false),
            ("10.0.0.1", "::ffff:10.0.0.1", true),
            ("::ffff:10.0.0.1", "10.0.0.1", true),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1", true),
            ("::ffff:10.0.0.0/104", "10.9.9.9", true),
            ("::ffff:10.0.0.0/104", "11.9.9.9", false),
            ("::ffff:0:0/96", "1.2.3.4", true),
            // Only ::ffff:0:0/96 is the mapped range: IPv4-compatible and NAT64 forms are not.
            ("10.0.0.1", "::10.0.0.1", false),
            ("10.0.0.1", "64:ff9b::10.0.0.1", false),
            ("0.0.0.1", "::1", false),
        ];
        for (net, addr, want) in cases {
            let parsed: TrustedNet = net.parse().unwrap();
            assert_eq!(parsed.contains(ip(addr)), want, "{net} contains {addr}");
        }
    }

    #[test]
    fn mask_edges() {
        assert_eq!(mask_v4(0), 0);
        assert_eq!(mask_v4(1), 0x8000_0000);
        assert_eq!(mask_v4(32), u32::MAX);
        assert_eq!(mask_v4(200), u32::MAX);
        assert_eq!(mask_v6(0), 0);
        assert_eq!(mask_v6(128), u128::MAX);
        assert_eq!(mask_v6(255), u128::MAX);
    }

    // -----------------------------------------------------------------------------------------
    // Trust in the peer
    // -----------------------------------------------------------------------------------------

    #[test]
    fn untrusted_peer_cannot_spoof_with_any_source() {
        let inputs = valid_samples();
        let peers = [
            "203.0.113.50",
            "11.0.0.1",
            "::2",
            "fe80::1",
            "::ffff:11.0.0.1",
        ];
        for source in all_sources() {
            for input in &inputs {
                for peer in peers {
                    for n in 0..=input.len() {
                        assert_eq!(
                            client_key(&source, &input[..n], ip(peer), &default_trusted(), MAX),
                            F,
                            "{source:?} from {peer} with {n} bytes"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn untrusted_peer_answers_before_any_byte_is_peeked() {
        for source in all_sources() {
            assert_eq!(
                client_key(&source, b"", ip("203.0.113.50"), &default_trusted(), MAX),
                F
            );
            assert_eq!(client_key(&source, b"", ip(LB), &default_trusted(), MAX), N);
            assert_eq!(
                client_key(&source, b"", ip(LB), &[], MAX),
                F,
                "nothing trusted"
            );
        }
    }

    #[test]
    fn trusted_peer_matches_in_every_form() {
        let input = request(&["X-Forwarded-For: 203.0.113.7"]);
        let cases = [
            (&["10.0.0.0/8"][..], "10.200.0.1", true),
            (&["10.0.0.0/8"], "::ffff:10.200.0.1", true), // dual-stack listener
            (&["::ffff:10.0.0.1"], "10.0.0.1", true),
            (&["::1"], "::1", true),
            (&["::1"], "127.0.0.1", false),
            (&["127.0.0.0/8", "::1"], "127.0.0.1", true),
            (&["192.168.0.0/16"], "10.0.0.1", false),
            (&[], "10.0.0.1", false),
        ];
        for (trusted, peer, honoured) in cases {
            let got = client_key(&xff(), &input, ip(peer), &nets(trusted), MAX);
            let want = if honoured { k("203.0.113.7") } else { F };
            assert_eq!(got, want, "peer {peer}, trusted {trusted:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // HTTP headers
    // -----------------------------------------------------------------------------------------

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
        for (value, want) in cases {
            let input = request(&[&format!("X-Forwarded-For: {value}")]);
            assert_eq!(key(&xff(), &input), want, "X-Forwarded-For: {value:?}");
        }
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
            assert_eq!(
                key(&header(name), &request(lines)),
                want,
                "{name}: {lines:?}"
            );
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
        for (lines, want) in cases {
            assert_eq!(key(&xff(), &request(lines)), k(want), "{lines:?}");
        }
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
        for (value, want) in cases {
            let input = request(&[&format!("Forwarded: {value}")]);
            assert_eq!(
                key(&header("forwarded"), &input),
                want,
                "Forwarded: {value}"
            );
            assert_eq!(
                key(&header("FORWARDED"), &input),
                want,
                "Forwarded: {value}"
            );
        }
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
        for (line, ok) in cases {
            let input = format!("{line}\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
            let want = if ok { k("203.0.113.7") } else { F };
            assert_eq!(key(&xff(), input.as_bytes()), want, "{line:?}");
        }
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
        for line in cases {
            let input = request(&[line, good]);
            assert_eq!(key(&xff(), &input), F, "{line:?}");
            let input = request(&[good, line]);
            assert_eq!(key(&xff(), &input), F, "{line:?}");
        }
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
        for input in cases {
            assert_eq!(
                key(&xff(), input),
                F,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
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
        for input in cases {
            assert_eq!(
                key(&xff(), input),
                N,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
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

    // -----------------------------------------------------------------------------------------
    // PROXY protocol v1
    // -----------------------------------------------------------------------------------------

    #[test]
    fn proxy_v1_lines() {
        let cases = [
            (
                "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n",
                k("203.0.113.7"),
            ),
            (
                "PROXY TCP4 203.0.113.7 10.0.0.1 0 65535\r\n",
                k("203.0.113.7"),
            ),
            (
                "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n",
                k("203.0.113.7"),
            ),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n",
                k("2001:db8::7"),
            ),
            (
                "PROXY TCP6 ::ffff:203.0.113.7 ::1 56324 443\r\n",
                k("::ffff:203.0.113.7"),
            ),
            ("PROXY UNKNOWN\r\n", F),
            ("PROXY UNKNOWN 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("PROXY UNKNOWN whatever\r\n", F),
            ("PROXY TCP4 2001:db8::7 10.0.0.1 56324 443\r\n", F),
            ("PROXY TCP6 203.0.113.7 2001:db8::1 56324 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 2001:db8::1 56324 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 56324 443 x\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 56324 443 \r\n", F),
            ("PROXY TCP4 203.0.113.7  10.0.0.1 56324 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 +80 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 -1 443\r\n", F),
            ("PROXY TCP4 203.0.113.256 10.0.0.1 56324 443\r\n", F),
            ("PROXY TCP4 localhost 10.0.0.1 56324 443\r\n", F),
            ("PROXY TCP5 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("PROXY tcp4 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("proxy TCP4 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("PROXY  TCP4 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("PROXYTCP4 203.0.113.7 10.0.0.1 56324 443\r\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\n", F),
            ("PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\r\n", F),
            ("PROXY\r\n", F),
            ("PROXY \r\n", F),
            ("POST / HTTP/1.1\r\n", F),
        ];
        for (line, want) in cases {
            assert_eq!(
                key(&KeySource::ProxyProtocol, line.as_bytes()),
                want,
                "{line:?}"
            );
        }
    }

    #[test]
    fn proxy_v1_byte_by_byte() {
        let cases = [
            (
                "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n",
                "203.0.113.7",
            ),
            ("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "1.2.3.4"),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n",
                "2001:db8::7",
            ),
            (
                "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ::1 65535 65535\r\n",
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            ),
        ];
        for (line, want) in cases {
            let mut input = line.as_bytes().to_vec();
            let end = input.len();
            input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_byte_by_byte(&KeySource::ProxyProtocol, &input, end, k(want));
        }
    }

    #[test]
    fn proxy_v1_falls_back_as_soon_as_the_prefix_is_wrong() {
        let cases = [
            "PROXY X",
            "PROXY U", // UNKNOWN can only fall back
            "PROXY UNKNOWN",
            "PROXY TCP", // still a prefix of TCP4/TCP6: see below
            "PROXY TCP4x",
            "PROXY TCP4 203.0.113.7 x",
            "PROXY TCP4 203.0.113.7x",
            "PROXY TCP4 ::1",
            "PROXY TCP4 2030.113.7.1000000000",
            "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443 ",
            "PROXY TCP4 203.0.113.7 10.0.0.1 563240",
            "PROXY TCP4 203.0.113.7 10.0.0.1 5632a",
            "PROXY TCP4 203.0.113.7 10.0.0.1 99999 ",
            "PROXY TCP4 203.0.113.7\r", // CR before the line is complete
            "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\r",
            "PROXY TCP6 2001:db8::g",
            "PROXY TCP6 2001:db8::7 2001:db8::1 56324 443 ",
            "PROXY TCP6 1.2.3.4 ",
            "PROXY\t",
            "PROXY\r",
            "PROXYX",
            "PX",
            "Q",
        ];
        for input in cases {
            let want = if input == "PROXY TCP" { N } else { F };
            assert_eq!(
                key(&KeySource::ProxyProtocol, input.as_bytes()),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn proxy_v1_line_length_limit() {
        // 107 bytes including CRLF is the most the spec allows.
        let src = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        let exact =
            format!("PROXY TCP6 {src} ffff:ffff:ffff:ffff:ffff:fff:1.2.3.4 65535 65535\r\n");
        assert_eq!(exact.len(), 107);
        assert_eq!(key(&KeySource::ProxyProtocol, exact.as_bytes()), k(src));
        // One byte longer (still syntactically valid): no CRLF within 107 bytes.
        let long =
            format!("PROXY TCP6 {src} ffff:ffff:ffff:ffff:ffff:ffff:1.2.3.4 65535 65535\r\n");
        assert_eq!(long.len(), 108);
        assert_eq!(key(&KeySource::ProxyProtocol, long.as_bytes()), F);
        assert_eq!(key(&KeySource::ProxyProtocol, &long.as_bytes()[..106]), N);
        assert_eq!(key(&KeySource::ProxyProtocol, &long.as_bytes()[..107]), F);
        // An endless UNKNOWN-like line of valid characters is cut off too.
        let endless = format!("PROXY TCP6 {}", "1".repeat(300));
        assert_eq!(key(&KeySource::ProxyProtocol, endless.as_bytes()), F);
        // A bound below the line length: fall back once it is reached.
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n";
        let at = |max: usize, n: usize| {
            client_key(
                &KeySource::ProxyProtocol,
                &line[..n],
                ip(LB),
                &default_trusted(),
                max,
            )
        };
        assert_eq!(at(20, 19), N);
        assert_eq!(at(20, 20), F);
        assert_eq!(at(line.len(), line.len()), k("203.0.113.7"));
    }

    // -----------------------------------------------------------------------------------------
    // PROXY protocol v2
    // -----------------------------------------------------------------------------------------

    #[test]
    fn proxy_v2_headers() {
        let tcp4 = v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], &[]);
        let v6_block = [ip6("2001:db8::7").octets(), ip6("2001:db8::1").octets()].concat();
        let cases = [
            (tcp4.clone(), k("203.0.113.7")),
            (
                v2_tcp4(
                    [203, 0, 113, 7],
                    [10, 0, 0, 1],
                    &[0x01, 0x00, 0x02, b'h', b'2'],
                ),
                k("203.0.113.7"),
            ),
            (
                v2_tcp6(ip6("2001:db8::7"), ip6("2001:db8::1"), &[]),
                k("2001:db8::7"),
            ),
            (
                v2_tcp6(ip6("::ffff:203.0.113.7"), ip6("::1"), &[0x04, 0x00, 0x00]),
                k("::ffff:203.0.113.7"),
            ),
            // LOCAL: the balancer's own connection.
            (v2(0x20, 0x11, &tcp4[16..]), F),
            (v2(0x20, 0x00, &[]), F),
            // Unknown command or version.
            (v2(0x22, 0x11, &tcp4[16..]), F),
            (v2(0x11, 0x11, &tcp4[16..]), F),
            (v2(0x31, 0x11, &tcp4[16..]), F),
            // Families and protocols without a TCP client.
            (v2(0x21, 0x00, &[]), F),
            (v2(0x21, 0x12, &tcp4[16..]), F), // UDP over IPv4
            (v2(0x21, 0x22, &[&v6_block[..], &[0; 4]].concat()), F), // UDP over IPv6
            (v2(0x21, 0x31, &[0; 216]), F),   // UNIX stream
            (v2(0x21, 0x10, &tcp4[16..]), F),
            (v2(0x21, 0x41, &tcp4[16..]), F),
            // Address block shorter than the family needs.
            (v2(0x21, 0x11, &[203, 0, 113, 7]), F),
            (v2(0x21, 0x11, &[0; 11]), F),
            (v2(0x21, 0x21, &tcp4[16..]), F),
            (v2(0x21, 0x21, &[0; 35]), F),
        ];
        for (input, want) in cases {
            assert_eq!(key(&KeySource::ProxyProtocol, &input), want, "{input:02x?}");
        }
    }

    #[test]
    fn proxy_v2_byte_by_byte() {
        let tlvs = [
            0x02, 0x00, 0x0b, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'c', b'o', b'm',
        ];
        let cases = [
            (v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], &[]), "203.0.113.7"),
            (
                v2_tcp4([198, 51, 100, 1], [10, 0, 0, 1], &tlvs),
                "198.51.100.1",
            ),
            (
                v2_tcp6(ip6("2001:db8::7"), ip6("2001:db8::1"), &[]),
                "2001:db8::7",
            ),
            (
                v2_tcp6(ip6("2001:db8::9"), ip6("2001:db8::1"), &tlvs),
                "2001:db8::9",
            ),
        ];
        for (header, want) in cases {
            let mut input = header.clone();
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n\x00\xff");
            // Even with the address there, the whole header (TLVs too) is waited for.
            assert_byte_by_byte(&KeySource::ProxyProtocol, &input, header.len(), k(want));
        }
    }

    #[test]
    fn proxy_v2_falls_back_at_the_first_wrong_byte() {
        let good = v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], &[]);
        // Any change in the signature, version/command or family byte is seen at once.
        for i in 0..14 {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good[..=i].to_vec();
                bad[i] ^= flip;
                // None of these flips turns byte 12 into 0x21 or byte 13 into 0x11 or 0x21.
                assert_eq!(
                    key(&KeySource::ProxyProtocol, &bad),
                    F,
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
    }

    #[test]
    fn proxy_v2_length_bound() {
        let tlvs = vec![0u8; 500];
        let header = v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], &tlvs);
        let len = header.len();
        let at = |max: usize, n: usize| {
            client_key(
                &KeySource::ProxyProtocol,
                &header[..n],
                ip(LB),
                &default_trusted(),
                max,
            )
        };
        assert_eq!(at(len, len), k("203.0.113.7"));
        assert_eq!(at(len, 16), N);
        // Larger than the caller will ever peek: no need to wait for it.
        assert_eq!(at(len - 1, 16), F);
        assert_eq!(at(len - 1, 15), N);
        assert_eq!(at(15, 15), F);
        // The largest length field, far over any bound.
        let huge = v2(0x21, 0x11, &[0; 12]);
        let mut huge = huge[..16].to_vec();
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(key(&KeySource::ProxyProtocol, &huge), F);
        assert_eq!(
            client_key(
                &KeySource::ProxyProtocol,
                &huge,
                ip(LB),
                &default_trusted(),
                usize::MAX
            ),
            N
        );
    }

    #[test]
    fn proxy_mode_needs_a_signature() {
        let cases: &[(&[u8], Peek)] = &[
            (b"", N),
            (b"P", N),
            (b"PROXY", N),
            (b"\r", N),
            (b"\r\n\r\n\0\r\nQUI", N),
            (b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n", F),
            (b"\x16\x03\x01", F),
            (b"\x00", F),
            (b"\r\n\r\n\0\r\nQUIT\r", F),
            (b"\r\n\r\n\n", F),
            (b"\rX", F),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", F),
        ];
        for (input, want) in cases {
            assert_eq!(key(&KeySource::ProxyProtocol, input), *want, "{input:02x?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Robustness: attacker-controlled input of every shape
    // -----------------------------------------------------------------------------------------

    /// Inputs made of random bytes, random bytes from the parsers' own alphabet, random
    /// truncations and mutations of valid inputs.
    fn corpus() -> Vec<Vec<u8>> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let all: Vec<u8> = (0..=255).collect();
        let alphabet =
            b"PROXY TCP46UNKOWGEThtp/1.:\r\n\0QUIT\x21\x11\"[]_,;=forwardedunknown0123456789abcdef";
        let mut corpus = valid_samples();
        for len in [
            0usize, 1, 2, 5, 11, 12, 13, 15, 16, 17, 40, 107, 108, 300, 2000,
        ] {
            for _ in 0..40 {
                corpus.push(rng.bytes(len, &all));
                corpus.push(rng.bytes(len, alphabet));
            }
        }
        for sample in valid_samples() {
            for _ in 0..200 {
                let mut m = sample.clone();
                for _ in 0..=rng.below(4) {
                    let i = rng.below(m.len());
                    match rng.below(3) {
                        0 => m[i] = all[rng.below(256)],
                        1 => m[i] = alphabet[rng.below(alphabet.len())],
                        _ => m.truncate(i),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                corpus.push(m);
            }
        }
        corpus
    }

    #[test]
    fn garbage_never_panics_and_never_waits_past_the_bound() {
        let trusted = default_trusted();
        for input in corpus() {
            for source in all_sources() {
                for max in [0, 1, 16, 107, input.len(), MAX] {
                    for n in [input.len(), input.len() / 2] {
                        let got = client_key(&source, &input[..n], ip(LB), &trusted, max);
                        if n >= max {
                            assert_ne!(got, N, "{source:?} max {max}: {:02x?}", &input[..n]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_answer_never_changes_when_more_bytes_arrive() {
        // Once Key or Fallback is given the master stops peeking, so a later, longer buffer must
        // not have given a different answer: each decision is final.
        let trusted = default_trusted();
        for input in corpus().iter().chain(valid_samples().iter()) {
            for source in all_sources() {
                let mut decided = None;
                // Quadratic: the longest random inputs only add time, not cases.
                for n in 0..=input.len().min(400) {
                    let got = client_key(&source, &input[..n], ip(LB), &trusted, MAX);
                    match decided {
                        None if got != N => decided = Some(got),
                        None => {}
                        Some(first) => assert_eq!(
                            got,
                            first,
                            "{source:?}: {:?}",
                            String::from_utf8_lossy(&input[..n])
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn every_sample_gives_its_key_with_trailing_garbage() {
        let wants = [
            k("203.0.113.7"),
            k("2001:db8::7"),
            F, // X-Real-IP sample under X-Forwarded-For: header absent
            k("203.0.113.7"),
            k("2001:db8::7"),
            k("203.0.113.7"),
            k("2001:db8::7"),
        ];
        for (i, (sample, want)) in valid_samples().into_iter().zip(wants).enumerate() {
            let source = match i {
                0 | 2 => xff(),
                1 => header("forwarded"),
                _ => KeySource::ProxyProtocol,
            };
            let mut input = sample;
            input.extend_from_slice(b"\x16\x03\x01\x00\xff\r\n\r\n");
            assert_eq!(key(&source, &input), want, "sample {i}");
        }
    }
}
