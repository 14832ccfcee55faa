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
//!   configured name is `forwarded` (parsed in [`http`]);
//! - [`KeySource::ProxyProtocol`]: a PROXY protocol header, v1 (text) or v2 (binary) (parsed in
//!   [`proxy_protocol`]).
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

mod http;
mod proxy_protocol;
#[cfg(test)]
mod testing;
mod trusted_net;

use std::net::IpAddr;
use std::str::FromStr;

pub(crate) use proxy_protocol::proxy_header_len;
pub(crate) use trusted_net::TrustedNet;

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
pub(crate) enum Peek {
    /// Undecided: peek again once more bytes are available (never returned at `max_bytes`).
    NeedMore,
    /// The real client's address.
    Key(IpAddr),
    /// No usable client address: use the TCP peer address.
    Fallback,
    /// A complete, valid PROXY header without a client address (v1 `UNKNOWN`, v2 `LOCAL` or a
    /// family without a TCP client): a balancer's own connection, such as a health check. Use
    /// the TCP peer address, and consume the header as for [`Peek::Key`].
    NoAddress,
}

/// The client key carried in the first bytes of a connection.
///
/// `buf` is everything peeked so far (from offset 0), `trusted` the proxy addresses whose
/// headers are believed: the header/PROXY line is only honoured when `peer`, the TCP peer
/// address, is itself trusted; otherwise the answer is `Fallback` immediately, so a client
/// cannot spoof. `max_bytes` is the most the caller will ever peek: bytes past it are ignored,
/// and at it the answer is never `NeedMore`.
pub(crate) fn client_key(
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
        KeySource::Header { name } => http::header_key(buf, name, trusted, at_limit),
        KeySource::ProxyProtocol => proxy_protocol::proxy_protocol_key(buf, at_limit, max_bytes),
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

/// The right-most address that is not a trusted proxy; if all are trusted, the left-most.
fn pick_client(nodes: &[IpAddr], trusted: &[TrustedNet]) -> Option<IpAddr> {
    nodes
        .iter()
        .rev()
        .find(|&&ip| !is_trusted(trusted, ip))
        .or_else(|| nodes.first())
        .copied()
}

/// A port in plain decimal digits, in a forwarding header entry or a PROXY v1 line
/// (`u16::from_str` would also take a leading '+').
fn decimal_port(port: &[u8]) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    parse_ascii(port)
}

fn parse_ascii<T: FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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
