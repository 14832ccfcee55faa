//! The trusted proxies of `stickyTrustedProxies`: single addresses and CIDR blocks, matched the
//! same way whether a client shows up as IPv4 or as IPv4-mapped IPv6.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_key::testing::ip;

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

    /// For every `(block, address, want)`: whether the block contains the address.
    #[track_caller]
    fn assert_contains(cases: &[(&str, &str, bool)]) {
        for &(net, addr, want) in cases {
            let parsed: TrustedNet = net.parse().unwrap();
            assert_eq!(parsed.contains(ip(addr)), want, "{net} contains {addr}");
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
        assert_contains(&cases);
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
        assert_contains(&cases);
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
}
