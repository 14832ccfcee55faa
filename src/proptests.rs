//! Property tests of the parsers that read bytes from outside the master: the IPC framing and
//! JSON validator, the sticky client key (HTTP head peek, PROXY v1/v2), the probe server's
//! request parser. Arbitrary and mutated inputs never panic, never depend on bytes past a cap,
//! and agree with the hand-written cases. `cargo test` runs a bounded number of cases
//! (`PROPTEST_CASES` overrides it; `scripts/fuzz.sh` runs a long one).

use std::net::IpAddr;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::client_key::{client_key, proxy_header_len, KeySource, Peek, TrustedNet};
use crate::ipc::frame::LineBuffer;
use crate::ipc::json;
use crate::ops::http;

/// Cases per property when `PROPTEST_CASES` is not set: the whole file stays well under 20 s
/// in a release build.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

const LB: [u8; 4] = [10, 0, 0, 1];

fn trusted() -> Vec<TrustedNet> {
    vec!["10.0.0.0/8".parse().unwrap()]
}

fn peer() -> IpAddr {
    IpAddr::from(LB)
}

/// Valid headers and requests the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb]);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    vec![
        b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n".to_vec(),
        b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        v2,
        local,
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n\r\n".to_vec(),
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"HEAD /healthz?x=1 HTTP/1.0\n\n".to_vec(),
        br#"{"action":"x","to":"agent","data":{"a":[1,2.5e3,"\u00e9\n"],"b":null}}"#.to_vec(),
    ]
}

/// A seed with a few bytes flipped, inserted or removed, then cut somewhere.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..4),
        prop::option::of(any::<usize>()),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut b = seeds[i].clone();
            for (at, byte, kind) in edits {
                let at = if b.is_empty() { 0 } else { at % (b.len() + 1) };
                match kind {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at, byte),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            if let Some(cut) = cut {
                b.truncate(cut % (b.len() + 1));
            }
            b
        })
}

/// Any byte but LF, drawn without rejection (a filter's rejects add up past proptest's limit
/// of 65,536 in a long run).
fn not_lf() -> impl Strategy<Value = u8> {
    (0u8..=254).prop_map(|b| if b >= b'\n' { b + 1 } else { b })
}

/// Any finite f64 (JSON has no NaN or infinity), drawn without rejection as [`not_lf`].
fn finite_f64() -> impl Strategy<Value = f64> {
    use prop::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..300), mutated()]
}

fn sources() -> [KeySource; 3] {
    [
        KeySource::ProxyProtocol,
        KeySource::Header {
            name: "X-Forwarded-For".into(),
        },
        KeySource::Header {
            name: "forwarded".into(),
        },
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Lines fed in any chunks come out the same as fed whole; over-long ones are errors.
    #[test]
    fn framing_does_not_depend_on_chunks(
        lines in prop::collection::vec(prop::collection::vec(not_lf(), 0..40), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        max in 1usize..48,
    ) {
        let mut stream = Vec::new();
        for l in &lines {
            stream.extend_from_slice(l);
            stream.push(b'\n');
        }
        let collect = |chunks: Vec<&[u8]>| {
            let mut b = LineBuffer::new(max);
            let mut out = Vec::new();
            for c in chunks {
                b.extend(c);
                while let Some(l) = b.next_line() {
                    out.push(l.map(<[u8]>::to_vec).map_err(|e| e.limit));
                }
                // never more buffered than a line may take (plus the chunk just read)
                prop_assert!(b.pending() <= max + c.len());
            }
            Ok(out)
        };
        let whole = collect(vec![&stream])?;
        let want: Vec<Result<Vec<u8>, usize>> = lines
            .iter()
            .map(|l| if l.len() > max { Err(max) } else { Ok(l.clone()) })
            .collect();
        prop_assert_eq!(&whole, &want);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&stream[from..p]);
            from = p;
        }
        chunks.push(&stream[from..]);
        prop_assert_eq!(collect(chunks)?, want);
    }

    /// The validator agrees with serde_json on what it accepts, except where Node takes more
    /// than serde_json: lone surrogates, numbers out of f64's range, deep nesting, and bytes
    /// that are not UTF-8 (Node's channel decodes them to U+FFFD before JSON.parse).
    #[test]
    fn json_validator_agrees_with_serde(input in inputs()) {
        let ours = json::validate(&input).is_ok();
        match serde_json::from_slice::<serde_json::Value>(&input) {
            Ok(_) => prop_assert!(ours, "{}", String::from_utf8_lossy(&input)),
            Err(e) if ours => {
                let e = e.to_string();
                prop_assert!(
                    memchr::memmem::find(&input, b"\\u").is_some()
                        || std::str::from_utf8(&input).is_err()
                        || e.contains("number out of range")
                        || e.contains("recursion limit"),
                    "{}: {}", String::from_utf8_lossy(&input), e
                );
            }
            Err(_) => {}
        }
        let _ = json::scan(&input);
    }

    /// Anything serde_json writes is valid, and its top-level members are found.
    #[test]
    fn json_scan_finds_serde_members(
        map in prop::collection::btree_map("[a-z\u{e9}\"\\\\]{0,6}", prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            finite_f64().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
        ], 0..6),
    ) {
        let value = serde_json::Value::Object(map.clone().into_iter().collect());
        let line = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(json::validate(&line), Ok(()));
        let scanned = json::scan(&line).unwrap();
        for (k, v) in &map {
            let raw = scanned.raw(k).expect("member found");
            prop_assert_eq!(raw, &serde_json::to_vec(v).unwrap()[..]);
        }
    }

    /// The client key never panics, is never undecided at the cap, never depends on bytes past
    /// it, and once decided stays decided whatever arrives next.
    #[test]
    fn client_key_is_bounded_and_stable(input in inputs(), max in 1usize..400, more in prop::collection::vec(any::<u8>(), 0..40)) {
        for source in sources() {
            let at = |b: &[u8]| client_key(&source, b, peer(), &trusted(), max);
            let answer = at(&input);
            let capped = &input[..input.len().min(max)];
            prop_assert_eq!(answer, at(capped));
            if input.len() >= max {
                prop_assert!(answer != Peek::NeedMore);
            }
            if answer != Peek::NeedMore {
                let mut longer = input.clone();
                longer.extend_from_slice(&more);
                prop_assert_eq!(at(&longer), answer, "{:?} + {:?}", String::from_utf8_lossy(&input), more);
            }
            // An untrusted peer is never believed.
            prop_assert_eq!(client_key(&source, &input, IpAddr::from([192, 0, 2, 1]), &trusted(), max), Peek::Fallback);
        }
    }

    /// A complete PROXY header split at every point: undecided until its last byte, then the
    /// same answer as whole; the length consumed is the header's.
    #[test]
    fn proxy_header_split_anywhere(i in 0usize..5) {
        let seeds = seeds();
        let input = &seeds[i];
        let len = proxy_header_len(input).expect("a seed with a complete header");
        let whole = client_key(&KeySource::ProxyProtocol, input, peer(), &trusted(), 8192);
        prop_assert!(matches!(whole, Peek::Key(_) | Peek::NoAddress));
        for n in 0..len {
            prop_assert_eq!(client_key(&KeySource::ProxyProtocol, &input[..n], peer(), &trusted(), 8192), Peek::NeedMore, "{}", n);
        }
        prop_assert_eq!(client_key(&KeySource::ProxyProtocol, &input[..len], peer(), &trusted(), 8192), whole);
    }

    /// The length consumed is within the bytes seen and the spec's bounds.
    #[test]
    fn proxy_header_len_is_bounded(input in inputs()) {
        if let Some(len) = proxy_header_len(&input) {
            prop_assert!(len <= input.len());
            if input.starts_with(b"PROXY ") {
                prop_assert!(len <= 107);
            } else {
                prop_assert!(len <= 16 + usize::from(u16::MAX));
            }
        }
    }

    /// The probe server's parser never panics, rejects at the head cap, and once it has a
    /// complete head ignores what follows it.
    #[test]
    fn probe_parser_is_bounded_and_stable(input in inputs(), more in prop::collection::vec(any::<u8>(), 0..40)) {
        let answer = http::parse(&input);
        if input.len() >= http::MAX_HEAD {
            prop_assert!(answer != http::Parsed::Incomplete);
        }
        if answer != http::Parsed::Incomplete {
            let mut longer = input.clone();
            longer.extend_from_slice(&more);
            prop_assert_eq!(http::parse(&longer), answer);
        }
    }

    /// A head of any size: incomplete below the cap, 431 from it on.
    #[test]
    fn probe_parser_caps_the_head(fill in 0usize..(2 * http::MAX_HEAD)) {
        let mut head = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        head.resize(head.len() + fill, b'a');
        let answer = http::parse(&head);
        if head.len() >= http::MAX_HEAD {
            prop_assert_eq!(answer, http::Parsed::Reject(431));
        } else {
            prop_assert_eq!(answer, http::Parsed::Incomplete);
        }
    }
}
