//! The client address in a PROXY protocol header, v1 (text) or v2 (binary), as specified in
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use memchr::memmem;

use super::{decimal_port, need_more, parse_ascii, Peek};

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (section 2.1).
const V1_MAX_LINE: usize = 107;
pub(crate) const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, and the 2-byte length.
const V2_FIXED_LEN: usize = 16;

/// The answer for `buf` when the client address is in a PROXY header, v1 or v2 by signature.
pub(crate) fn proxy_protocol_key(buf: &[u8], at_limit: bool, max_bytes: usize) -> Peek {
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
        let line = &window[..end];
        return match parse_v1_line(line) {
            Some(ip) => Peek::Key(ip),
            None if is_unknown_line(line) => Peek::NoAddress,
            None => Peek::Fallback,
        };
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

/// A complete v1 `UNKNOWN` line (without CRLF): the spec lets anything printable follow, and
/// the receiver ignores it.
fn is_unknown_line(line: &[u8]) -> bool {
    match line.strip_prefix(b"PROXY UNKNOWN") {
        Some(rest) => {
            rest.is_empty() || (rest[0] == b' ' && rest.iter().all(|&b| (0x20..0x7f).contains(&b)))
        }
        None => false,
    }
}

/// Whether a v1 line without its CRLF yet (shorter than the maximum) can still become a valid
/// line: one with a source address, or `UNKNOWN`.
fn v1_prefix_ok(window: &[u8]) -> bool {
    if window.len() < V1_PREFIX.len() {
        return V1_PREFIX.starts_with(window);
    }
    if let Some(line) = window.strip_suffix(b"\r") {
        // Only a CRLF can follow, so the line must already be complete.
        return parse_v1_line(line).is_some() || is_unknown_line(line);
    }
    let Some(rest) = window.strip_prefix(V1_PREFIX) else {
        return false;
    };
    if b"UNKNOWN".starts_with(rest) {
        return true;
    }
    if rest.starts_with(b"UNKNOWN") {
        return is_unknown_line(window);
    }
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
    // Version 2; the PROXY command carries a client, LOCAL (0x20) is the balancer's own
    // connection, such as a health check: its header is consumed all the same.
    let local = match buf.get(12) {
        None => return need_more(at_limit),
        Some(0x21) => false,
        Some(0x20) => true,
        Some(_) => return Peek::Fallback,
    };
    // (v6, length of the addresses and ports the family needs, whether it has a TCP client)
    let (v6, address_len, tcp) = match buf.get(13) {
        None => return need_more(at_limit),
        // LOCAL: the receiver ignores the family and the address block.
        Some(_) if local => (false, 0, false),
        Some(0x11) => (false, 12, true), // TCP over IPv4: source, destination, two ports
        Some(0x21) => (true, 36, true),  // TCP over IPv6
        // UNSPEC, UDP and UNIX sockets: valid, without a TCP client address.
        Some(0x00) => (false, 0, false),
        Some(0x12) => (false, 12, false),
        Some(0x22) => (false, 36, false),
        Some(0x31 | 0x32) => (false, 216, false),
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
    if !tcp {
        return Peek::NoAddress;
    }
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

/// Length of a complete PROXY v1/v2 header at the start of `buf`: what the sticky master
/// consumes once the key is known, so that the worker's HTTP server never sees the header.
pub(crate) fn proxy_header_len(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(V1_PREFIX) {
        return memmem::find(&buf[..buf.len().min(V1_MAX_LINE)], b"\r\n").map(|i| i + 2);
    }
    if buf.starts_with(V2_SIGNATURE) && buf.len() >= V2_FIXED_LEN {
        let len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        return (buf.len() >= len).then_some(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::testing::*;
    use crate::client_key::{client_key, KeySource};

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
            ("PROXY UNKNOWN\r\n", U),
            ("PROXY UNKNOWN 203.0.113.7 10.0.0.1 56324 443\r\n", U),
            ("PROXY UNKNOWN whatever\r\n", U),
            ("PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n", U),
            ("PROXY UNKNOWNX\r\n", F),
            ("PROXY UNKNOWN \x01\r\n", F),
            ("PROXY UNKNOWN \n\r\n", F),
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
        assert_keys(&KeySource::ProxyProtocol, cases);
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
            "PROXY UNKNOWNX",
            "PROXY UNKNOWN \x01",
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
        assert_keys(
            &KeySource::ProxyProtocol,
            cases.map(|input| (input, if input == "PROXY TCP" { N } else { F })),
        );
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
            (v2(0x20, 0x11, &tcp4[16..]), U),
            (v2(0x20, 0x00, &[]), U),
            (v2(0x20, 0x77, &[1, 2, 3]), U),
            // Unknown command or version.
            (v2(0x22, 0x11, &tcp4[16..]), F),
            (v2(0x11, 0x11, &tcp4[16..]), F),
            (v2(0x31, 0x11, &tcp4[16..]), F),
            // Families and protocols without a TCP client.
            (v2(0x21, 0x00, &[]), U),
            (v2(0x21, 0x12, &tcp4[16..]), U), // UDP over IPv4
            (v2(0x21, 0x22, &[&v6_block[..], &[0; 4]].concat()), U), // UDP over IPv6
            (v2(0x21, 0x31, &[0; 216]), U),   // UNIX stream
            (v2(0x21, 0x31, &[0; 215]), F),
            (v2(0x21, 0x10, &tcp4[16..]), F),
            (v2(0x21, 0x41, &tcp4[16..]), F),
            // Address block shorter than the family needs.
            (v2(0x21, 0x11, &[203, 0, 113, 7]), F),
            (v2(0x21, 0x11, &[0; 11]), F),
            (v2(0x21, 0x21, &tcp4[16..]), F),
            (v2(0x21, 0x21, &[0; 35]), F),
        ];
        assert_keys(&KeySource::ProxyProtocol, cases);
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
                // None of these flips turns byte 13 into a valid family; byte 12 ^ 1 is LOCAL,
                // which waits for its length.
                let want = if i == 12 && flip == 0x01 { N } else { F };
                assert_eq!(
                    key(&KeySource::ProxyProtocol, &bad),
                    want,
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
        assert_keys(&KeySource::ProxyProtocol, cases.iter().copied());
    }

    #[test]
    fn proxy_header_lengths() {
        assert_eq!(
            proxy_header_len(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n"),
            Some(32)
        );
        assert_eq!(proxy_header_len(b"PROXY TCP4 1.2.3.4"), None);
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        v2.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        assert_eq!(proxy_header_len(&v2), Some(28));
        assert_eq!(proxy_header_len(&v2[..20]), None);
        assert_eq!(proxy_header_len(b"GET / HTTP/1.1\r\n"), None);
    }
}
