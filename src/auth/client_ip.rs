//! The client's address for sign-in throttling and sign-in log lines: the TCP peer, or,
//! when the peer is a trusted reverse proxy (`TRUSTED_PROXIES`), the rightmost address
//! in `X-Forwarded-For` that is not itself a trusted proxy. Hops left of that are
//! written by the client and never believed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;

/// One trusted address or network (`10.0.0.7`, `10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip.to_canonical() {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), 32),
            IpAddr::V6(v6) => (v6.to_bits(), 128),
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        if width != addr_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix_len);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        net & mask == addr & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0–{max}"))?,
        };
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Parses `TRUSTED_PROXIES`: addresses or CIDRs separated by commas or spaces.
pub fn parse_trusted_proxies(list: &str) -> Result<Vec<Cidr>, String> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The address sign-in limits and log lines are kept per (see the module doc).
pub fn client_address(req: &HttpRequest, trusted: &[Cidr]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let forwarded = req
        .headers()
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .filter_map(|v| v.to_str().ok());
    walk_forwarded(peer, forwarded, trusted)
}

/// Walks the hops right to left from the peer, skipping trusted proxies; the first
/// untrusted hop is the client. A hop that is not an address ends the walk at the
/// proxy that reported it.
fn walk_forwarded<'a>(
    peer: IpAddr,
    headers: impl Iterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Several header lines count as one list, in order.
    let hops: Vec<&str> = headers.flat_map(|h| h.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, and the `1.2.3.4:5678` / `[2001:db8::1]:5678` forms some
/// proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list(s: &str) -> Vec<Cidr> {
        parse_trusted_proxies(s).unwrap()
    }

    #[test]
    fn addresses_and_cidrs_are_parsed_and_bad_ones_refused() {
        assert_eq!(list(""), vec![]);
        assert_eq!(list("10.0.0.1, 192.168.0.0/16 fd00::/8").len(), 3);
        for bad in [
            "10.0.0.300",
            "10.0.0.0/33",
            "fd00::/129",
            "proxy.local",
            "10.0.0.0/",
        ] {
            assert!(parse_trusted_proxies(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cidr_contains_exactly_its_network() {
        let net: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains(ip("192.168.4.2")));
        assert!(net.contains(ip("::ffff:192.168.4.2")), "IPv4-mapped peer");
        assert!(!net.contains(ip("192.169.0.1")));
        assert!(!net.contains(ip("fd00::1")));
        let one: Cidr = "10.0.0.1".parse().unwrap();
        assert!(one.contains(ip("10.0.0.1")) && !one.contains(ip("10.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let peer = ip("198.51.100.1");
        let got = walk_forwarded(peer, ["203.0.113.9"].into_iter(), &list("10.0.0.0/8"));
        assert_eq!(got, peer);
        assert_eq!(walk_forwarded(peer, ["203.0.113.9"].into_iter(), &[]), peer);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = list("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        // The client wrote a fake first hop; the proxies appended the real ones.
        let headers = ["6.6.6.6, 203.0.113.9", "10.0.0.2"];
        assert_eq!(
            walk_forwarded(peer, headers.into_iter(), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            walk_forwarded(peer, ["[2001:db8::7]:443"].into_iter(), &trusted),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn without_an_untrusted_hop_the_farthest_trusted_one_is_used() {
        let trusted = list("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        assert_eq!(walk_forwarded(peer, std::iter::empty(), &trusted), peer);
        assert_eq!(
            walk_forwarded(peer, ["10.0.0.3, 10.0.0.2"].into_iter(), &trusted),
            ip("10.0.0.3")
        );
        // Garbage stops the walk at the proxy that reported it.
        assert_eq!(
            walk_forwarded(peer, ["203.0.113.9, junk, 10.0.0.2"].into_iter(), &trusted),
            ip("10.0.0.2")
        );
    }
}
