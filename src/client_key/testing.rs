//! Builders and checks shared by the client-key tests.

use std::net::{IpAddr, Ipv6Addr};

use super::proxy_protocol::V2_SIGNATURE;
use super::{client_key, KeySource, Peek, TrustedNet};

pub(crate) const MAX: usize = 8192;
/// The load balancer: the TCP peer of every test connection unless a test says otherwise.
pub(crate) const LB: &str = "10.0.0.1";

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn nets(list: &[&str]) -> Vec<TrustedNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

pub(crate) fn default_trusted() -> Vec<TrustedNet> {
    nets(&["10.0.0.0/8", "::1", "fd00::/8"])
}

pub(crate) fn header(name: &str) -> KeySource {
    KeySource::Header {
        name: name.to_owned(),
    }
}

pub(crate) fn xff() -> KeySource {
    header("X-Forwarded-For")
}

/// A GET request with the given header lines (each without CRLF).
pub(crate) fn request(lines: &[&str]) -> Vec<u8> {
    let mut req = String::from("GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n");
    for line in lines {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

pub(crate) fn key(source: &KeySource, buf: &[u8]) -> Peek {
    client_key(source, buf, ip(LB), &default_trusted(), MAX)
}

pub(crate) fn k(s: &str) -> Peek {
    Peek::Key(ip(s))
}

pub(crate) const F: Peek = Peek::Fallback;
pub(crate) const N: Peek = Peek::NeedMore;
pub(crate) const U: Peek = Peek::NoAddress;

/// A PROXY v2 header: `cmd` version/command byte, `fam` family byte, `block` the address
/// block (whose length goes in the header).
pub(crate) fn v2(cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(cmd);
    out.push(fam);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

pub(crate) fn v2_tcp4(src: [u8; 4], dst: [u8; 4], tlvs: &[u8]) -> Vec<u8> {
    let mut block = src.to_vec();
    block.extend_from_slice(&dst);
    block.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
    block.extend_from_slice(tlvs);
    v2(0x21, 0x11, &block)
}

pub(crate) fn v2_tcp6(src: Ipv6Addr, dst: Ipv6Addr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = src.octets().to_vec();
    block.extend_from_slice(&dst.octets());
    block.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
    block.extend_from_slice(tlvs);
    v2(0x21, 0x21, &block)
}

/// Feeds `input` one byte at a time: every proper prefix shorter than `decided_at` must be
/// `NeedMore`, and from there on (through the whole input) the answer must be `want`.
pub(crate) fn assert_byte_by_byte(source: &KeySource, input: &[u8], decided_at: usize, want: Peek) {
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

/// The table test: for every `(input, want)` case the answer to the whole `input` is `want`.
#[track_caller]
pub(crate) fn assert_keys<I: AsRef<[u8]>>(
    source: &KeySource,
    cases: impl IntoIterator<Item = (I, Peek)>,
) {
    for (input, want) in cases {
        let input = input.as_ref();
        assert_eq!(
            key(source, input),
            want,
            "{source:?}: \"{}\"",
            input.escape_ascii()
        );
    }
}

pub(crate) fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
