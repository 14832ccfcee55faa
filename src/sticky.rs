//! Sticky sessions: the master accepts on the real port and hands each connection to the worker
//! its client address maps to, with the message `'sticky-session:connection'`.
//!
//! Mapping: every app worker owns a *slot* (a replacement takes its predecessor's slot), and a
//! client address hashes to a slot. While a slot's worker is not serving (dead, disconnecting, or
//! not yet listening), its clients are spread over the live slots by the same hash, so the same
//! address keeps reaching the same live worker and a dead worker is never picked.

use std::net::IpAddr;

/// FNV-1a over the address bytes: stable across runs and processes, cheap, well spread.
pub fn hash_ip(ip: IpAddr) -> u64 {
    // An IPv4-mapped IPv6 address is the same client as its IPv4 form (dual-stack listeners
    // report v4 clients as ::ffff:a.b.c.d).
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The worker pid for a client: `slots[i]` is the pid owning slot `i` and whether it serves.
pub fn pick(ip: IpAddr, slots: &[Option<(u32, bool)>]) -> Option<u32> {
    if slots.is_empty() {
        return None;
    }
    let h = hash_ip(ip);
    if let Some((pid, true)) = slots[(h % slots.len() as u64) as usize] {
        return Some(pid);
    }
    let live: Vec<u32> = slots
        .iter()
        .filter_map(|s| match s {
            Some((pid, true)) => Some(*pid),
            _ => None,
        })
        .collect();
    if live.is_empty() {
        return None;
    }
    // Re-hash so the orphaned clients spread instead of all landing on one neighbour.
    let h2 = h.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    Some(live[(h2 % live.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn same_address_same_worker() {
        let slots = [Some((1, true)), Some((2, true)), Some((3, true))];
        for a in ["127.0.0.1", "10.0.0.7", "::1"] {
            let first = pick(ip(a), &slots);
            for _ in 0..5 {
                assert_eq!(pick(ip(a), &slots), first);
            }
        }
        assert_eq!(
            pick(ip("::ffff:10.0.0.7"), &slots),
            pick(ip("10.0.0.7"), &slots)
        );
    }

    #[test]
    fn addresses_spread_over_workers() {
        let slots = [Some((1, true)), Some((2, true))];
        let mut counts = [0; 2];
        for i in 0..=255u8 {
            let p = pick(IpAddr::from([127, 0, 0, i]), &slots).unwrap();
            counts[(p - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 80), "{counts:?}");
    }

    #[test]
    fn a_dead_worker_is_never_picked_and_others_keep_their_clients() {
        let all = [Some((1, true)), Some((2, true)), Some((3, true))];
        let down = [Some((1, true)), Some((2, false)), None];
        for i in 0..=255u8 {
            let a = IpAddr::from([10, 1, 2, i]);
            let before = pick(a, &all).unwrap();
            let after = pick(a, &down).unwrap();
            assert_eq!(after, 1, "only worker 1 serves");
            if before == 1 {
                assert_eq!(after, before);
            }
        }
        assert_eq!(pick(ip("1.2.3.4"), &[None, Some((2, false))]), None);
        assert_eq!(pick(ip("1.2.3.4"), &[]), None);
    }
}
