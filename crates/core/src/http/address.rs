//! Which addresses a sync may connect to. A source names a host; what that
//! host resolves to is checked when the connection is made, not only the
//! URL's text, so a name that resolves (or later re-resolves: DNS
//! rebinding) to an internal address cannot reach the database server's
//! own network, its cloud metadata endpoint (169.254.169.254) or its
//! loopback services.
//!
//! Allowed: public addresses; addresses in `crm_sync.allowed_networks` (a
//! superuser setting); and loopback for plain `http://`, which is allowed
//! only to loopback in the first place (`check_url_allowed`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (like 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
        };
        Ok(Network { addr, prefix })
    }
}

/// A comma-separated list of networks (the `crm_sync.allowed_networks`
/// setting); empty for none.
pub fn parse_networks(s: &str) -> Result<Vec<Network>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, NAT64) as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            let o = v6.octets();
            let v4 = || IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            // 64:ff9b::/96 (well-known NAT64), 64:ff9b:1::/48 (local-use
            // NAT64), ::ffff:0:a.b.c.d (SIIT), ::a.b.c.d (IPv4-compatible,
            // deprecated; :: and ::1 themselves excepted).
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || s[..3] == [0x64, 0xff9b, 1]
                || s[..6] == [0, 0, 0, 0, 0xffff, 0]
                || (s[..6] == [0, 0, 0, 0, 0, 0] && u128::from(v6) > 1)
            {
                return v4();
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether `ip` is not on the public internet: loopback, private,
/// link-local (cloud metadata), shared (CGNAT), unspecified, multicast,
/// broadcast, documentation, benchmarking and reserved ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o0 == 0
                || (o0 == 100 && (64..128).contains(&o1))
                || (o0 == 192 && o1 == 0 && o2 == 0)
                || (o0 == 198 && (18..20).contains(&o1))
                || o0 >= 240
        }
        IpAddr::V6(a) => {
            let s0 = a.segments()[0];
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s0 & 0xfe00) == 0xfc00 // unique local
                || (s0 & 0xffc0) == 0xfe80 // link-local
                || (s0 & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s0 == 0x2001 && a.segments()[1] == 0x0db8) // documentation
                || a == Ipv6Addr::UNSPECIFIED
        }
    }
}

/// Whether `ip` is loopback, IPv4 written as IPv6 included.
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Whether a connection to `ip` is allowed; `loopback_ok` for a plain
/// `http://` request (which only loopback may get).
pub fn allowed(ip: IpAddr, allowed_networks: &[Network], loopback_ok: bool) -> bool {
    if allowed_networks.iter().any(|n| n.contains(ip)) {
        return true;
    }
    if loopback_ok && canonical(ip).is_loopback() {
        return true;
    }
    !is_internal(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:a00:1",
            "::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(is_internal(ip(bad)), "{bad}");
            assert!(!allowed(ip(bad), &[], false), "{bad}");
        }
        for good in [
            "8.8.8.8",
            "104.16.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(good)), "{good}");
            assert!(allowed(ip(good), &[], false), "{good}");
        }
    }

    #[test]
    fn loopback_only_for_plain_http_and_networks_by_setting() {
        assert!(allowed(ip("127.0.0.1"), &[], true));
        assert!(allowed(ip("::1"), &[], true));
        assert!(!allowed(ip("10.0.0.1"), &[], true), "http is loopback only");
        let nets = parse_networks("10.0.0.0/8, 192.168.7.7, fd00::/8").unwrap();
        assert!(allowed(ip("10.200.0.1"), &nets, false));
        assert!(allowed(ip("::ffff:10.0.0.1"), &nets, false));
        assert!(allowed(ip("192.168.7.7"), &nets, false));
        assert!(!allowed(ip("192.168.7.8"), &nets, false));
        assert!(allowed(ip("fd00::5"), &nets, false));
        assert!(!allowed(ip("169.254.169.254"), &nets, false));
    }

    #[test]
    fn bad_networks_say_why() {
        assert!(parse_networks("").unwrap().is_empty());
        assert!(parse_networks("10.0.0.0/33")
            .unwrap_err()
            .contains("0 to 32"));
        assert!(parse_networks("intranet")
            .unwrap_err()
            .contains("not an IP network"));
        assert!(parse_networks("0.0.0.0/0").unwrap()[0].contains(ip("1.2.3.4")));
    }
}
