//! Route-level IP allow and deny lists: CIDR parsing and matching.
//!
//! Addresses are compared in their canonical form: an IPv4-mapped IPv6 address
//! (`::ffff:10.1.2.3`, what a dual-stack socket reports for an IPv4 client) is the IPv4 address,
//! so `10.0.0.0/8` matches it and a list cannot be bypassed by the socket family.

use std::net::IpAddr;

/// Most entries in one `allow` or `deny` list: a request scans them, so keep them few.
pub const MAX_CIDRS: usize = 10_000;

/// One network: an address with a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, len: u8 },
    V6 { net: u128, len: u8 },
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`10.1.2.3`, `::1`). Host bits must be
    /// zero: `10.0.0.1/8` is more likely a typo than a wish, so it is refused with the fix.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                match l.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{s:?}: prefix length must be at most {max}")),
                }
            }
            Some(_) => return Err(format!("{s:?}: prefix length must be a number")),
        };
        let cidr = match ip {
            IpAddr::V4(v4) => Cidr::V4 { net: u32::from(v4), len },
            IpAddr::V6(v6) => {
                let net = u128::from(v6);
                // `::ffff:a.b.c.d/len` (len >= 96) names IPv4 clients: store it as IPv4, the form
                // client addresses are compared in.
                if len >= 96 && net >> 32 == 0xffff {
                    Cidr::V4 { net: net as u32, len: len - 96 }
                } else {
                    Cidr::V6 { net, len }
                }
            }
        };
        if cidr.host_bits() != 0 {
            return Err(format!("{s:?} has host bits set (did you mean {}?)", cidr.network()));
        }
        Ok(cidr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (Cidr::V4 { net, len }, IpAddr::V4(a)) => u32::from(a) & mask4(*len) == *net,
            (Cidr::V6 { net, len }, IpAddr::V6(a)) => u128::from(a) & mask6(*len) == *net,
            _ => false,
        }
    }

    fn host_bits(&self) -> u128 {
        match *self {
            Cidr::V4 { net, len } => u128::from(net & !mask4(len)),
            Cidr::V6 { net, len } => net & !mask6(len),
        }
    }

    /// The same prefix with its host bits cleared, written back out.
    fn network(&self) -> String {
        match *self {
            Cidr::V4 { net, len } => format!("{}/{len}", std::net::Ipv4Addr::from(net & mask4(len))),
            Cidr::V6 { net, len } => format!("{}/{len}", std::net::Ipv6Addr::from(net & mask6(len))),
        }
    }
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0)
}

/// A route's `allow` and `deny` lists. `deny` wins; a non-empty `allow` admits only what it lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl IpRules {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// Parse one list, naming each bad entry as `{at}[i]`.
pub fn parse_list(list: &[String], at: &str, problems: &mut Vec<String>) -> Vec<Cidr> {
    if list.is_empty() {
        problems.push(format!("{at}: must list at least one address or CIDR (omit it otherwise)"));
    }
    if list.len() > MAX_CIDRS {
        problems.push(format!("{at}: more than {MAX_CIDRS} entries"));
        return Vec::new();
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| Cidr::parse(s).map_err(|e| problems.push(format!("{at}[{i}]: {e}"))).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("valid cidr")
    }

    #[test]
    fn prefixes_match_their_networks_only() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("10.0.0.0")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("9.255.255.255")));
        assert!(!c.contains(ip("::a00:1")), "an IPv6 address is not in an IPv4 network");
        let c = cidr("2001:db8::/32");
        assert!(c.contains(ip("2001:db8::1")));
        assert!(c.contains(ip("2001:db8:ffff:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
    }

    #[test]
    fn single_addresses_and_extremes() {
        assert_eq!(cidr("127.0.0.1"), Cidr::V4 { net: 0x7f00_0001, len: 32 });
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("203.0.113.9")), "::/0 covers IPv6 clients only");
        assert!(cidr("10.1.2.3/32").contains(ip("10.1.2.3")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        assert!(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn malformed_entries_are_refused_with_a_reason() {
        for (bad, why) in [
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "at most 32"),
            ("2001:db8::/129", "at most 128"),
            ("10.0.0.0/", "must be a number"),
            ("10.0.0.0/+8", "must be a number"),
            ("10.0.0.0/08x", "must be a number"),
            ("10.0.0/8", "not an IP address"),
            ("010.0.0.0/8", "not an IP address"),
            ("example.com", "not an IP address"),
            ("", "not an IP address"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32"),
            ("10.0.0.0/8/8", "must be a number"),
        ] {
            let e = Cidr::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let rules = IpRules { allow: vec![cidr("10.0.0.0/8")], deny: vec![cidr("10.1.0.0/16")] };
        assert!(rules.permits(ip("10.2.3.4")));
        assert!(!rules.permits(ip("10.1.3.4")), "deny beats allow");
        assert!(!rules.permits(ip("192.168.1.1")), "not in allow");
        let deny_only = IpRules { allow: vec![], deny: vec![cidr("127.0.0.0/8")] };
        assert!(!deny_only.permits(ip("127.0.0.1")));
        assert!(deny_only.permits(ip("::1")));
    }

    #[test]
    fn lists_name_each_bad_entry() {
        let mut p = Vec::new();
        let list = ["10.0.0.0/8".to_string(), "nope".to_string(), "1.2.3.4/40".to_string()];
        let parsed = parse_list(&list, "routes[0].allow", &mut p);
        assert_eq!(parsed.len(), 1);
        assert!(p[0].starts_with("routes[0].allow[1]:"), "{p:?}");
        assert!(p[1].starts_with("routes[0].allow[2]:"), "{p:?}");
        let mut p = Vec::new();
        parse_list(&[], "routes[0].deny", &mut p);
        assert_eq!(p.len(), 1);
    }
}
