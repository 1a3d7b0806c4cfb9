//! Where `http.request` may connect: the egress policy. By default it refuses every address
//! that is not plainly on the public internet (loopback, private, link-local and cloud
//! metadata, carrier-grade NAT, unique-local, unspecified, multicast, reserved, and those
//! written as IPv4-mapped, NAT64 or 6to4 IPv6), so a job cannot reach the service's own
//! network. Operators open what they need with `--allow-egress CIDR` or `HOST[:PORT]`.
//!
//! Checked three times: at Submit on the URL (an IP literal or `localhost` that is plainly
//! refused is INVALID_ARGUMENT), before the request and every redirect on the URL, and at
//! connect time on every address a name resolves to ([`PolicyResolver`]), so DNS cannot
//! hand back a refused address after the check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// One `--allow-egress` rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Allow {
    /// Addresses in a network, on any port (`10.0.0.0/8`, `127.0.0.1`, `::1`), or on one
    /// port (`127.0.0.1:8080`, `[::1]:8080`).
    Net {
        addr: IpAddr,
        prefix: u8,
        port: Option<u16>,
    },
    /// A host name, whatever it resolves to, on any port or on one.
    Host { name: String, port: Option<u16> },
}

impl std::str::FromStr for Allow {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not CIDR, IP[:PORT] or HOST[:PORT]");
        if let Some((addr, prefix)) = text.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?;
            return Ok(Allow::Net {
                addr,
                prefix,
                port: None,
            });
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Allow::Net {
                addr,
                prefix,
                port: None,
            });
        }
        if let Ok(socket) = text.parse::<SocketAddr>() {
            let (addr, port) = (socket.ip(), Some(socket.port()));
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Allow::Net { addr, prefix, port });
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if name.is_empty() || !name.chars().all(valid) {
            return Err(bad());
        }
        Ok(Allow::Host {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Allow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allow::Net {
                addr,
                prefix,
                port: None,
            } => write!(f, "{addr}/{prefix}"),
            Allow::Net {
                addr,
                port: Some(port),
                ..
            } => write!(f, "{}", SocketAddr::new(*addr, *port)),
            Allow::Host { name, port: None } => write!(f, "{name}"),
            Allow::Host {
                name,
                port: Some(port),
            } => write!(f, "{name}:{port}"),
        }
    }
}

/// The egress policy: what is refused, and the operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allow: Vec<Allow>,
}

/// Why the policy refused a destination. Its text says the policy did it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the egress policy refused {what}: {why}; an operator can allow it with --allow-egress")]
pub struct EgressRefused {
    what: String,
    why: &'static str,
}

impl EgressPolicy {
    pub fn new(allow: Vec<Allow>) -> Self {
        EgressPolicy { allow }
    }

    /// Checks a URL's host and port, before anything is resolved or sent. A name passes
    /// unless it is `localhost` (or under it), or the operator allowed it only on other
    /// ports; its addresses are checked when it is resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), EgressRefused> {
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_addr(IpAddr::V4(ip), Some(port)),
            Some(url::Host::Ipv6(ip)) => self.check_addr(IpAddr::V6(ip), Some(port)),
            Some(url::Host::Domain(name)) => self.check_name(name, port),
            None => Err(refused(url.as_str(), "it has no host")),
        }
    }

    fn check_name(&self, name: &str, port: u16) -> Result<(), EgressRefused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let rules: Vec<Option<u16>> = self
            .allow
            .iter()
            .filter_map(|rule| match rule {
                Allow::Host { name: n, port } if *n == name => Some(*port),
                _ => None,
            })
            .collect();
        let allowed = rules.iter().any(|p| p.is_none_or(|p| p == port));
        if !rules.is_empty() && !allowed {
            return Err(refused(
                &format!("{name}:{port}"),
                "that host is allowed on other ports only",
            ));
        }
        if !allowed && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(refused(&name, "it is loopback"));
        }
        Ok(())
    }

    /// Checks an address; `port` is known for a URL's IP literal, not for a resolved name.
    fn check_addr(&self, ip: IpAddr, port: Option<u16>) -> Result<(), EgressRefused> {
        let Some(why) = special(ip) else {
            return Ok(());
        };
        let allowed = self.allow.iter().any(|rule| match rule {
            Allow::Net {
                addr,
                prefix,
                port: p,
            } => contains(*addr, *prefix, ip) && p.is_none_or(|p| Some(p) == port),
            Allow::Host { .. } => false,
        });
        if allowed {
            Ok(())
        } else {
            Err(refused(&ip.to_string(), why))
        }
    }

    /// Whether the operator allowed this host name, whatever it resolves to.
    fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.allow
            .iter()
            .any(|rule| matches!(rule, Allow::Host { name: n, .. } if *n == name))
    }
}

fn refused(what: &str, why: &'static str) -> EgressRefused {
    EgressRefused {
        what: what.to_string(),
        why,
    }
}

/// Whether `ip` lies in `addr/prefix` (an IPv4 network never holds an IPv6 address).
fn contains(addr: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    match (canonical(addr), ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// An IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`) as that address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why an address is not plainly public, or `None` if it is.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (127, _) => "it is loopback",
        (0, _) => "it is unspecified (this host)",
        (10, _) | (192, 168) => "it is private",
        (172, 16..=31) => "it is private",
        (169, 254) => "it is link-local (cloud metadata lives here)",
        (100, 64..=127) => "it is carrier-grade NAT",
        (224..=239, _) => "it is multicast",
        (240..=255, _) => "it is reserved or broadcast",
        (192, 0) if ip.octets()[2] == 0 => "it is reserved for protocol assignments",
        (198, 18..=19) => "it is reserved for benchmarking",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4).map(|_| "it is an IPv4-mapped form of a refused address");
    }
    let segments = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match segments {
        _ if ip.is_loopback() => "it is loopback",
        _ if ip.is_unspecified() => "it is unspecified",
        [0, 0, 0, 0, 0, 0, ..] => "it is an IPv4-compatible form",
        [s, ..] if s & 0xfe00 == 0xfc00 => "it is unique-local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "it is link-local",
        [s, ..] if s & 0xff00 == 0xff00 => "it is multicast",
        [0x64, 0xff9b, _, _, _, _, hi, lo] if special_v4(embedded_v4(hi, lo)).is_some() => {
            "it is a NAT64 form of a refused address"
        }
        [0x2002, hi, lo, ..] if special_v4(embedded_v4(hi, lo)).is_some() => {
            "it is a 6to4 form of a refused address"
        }
        _ => return None,
    })
}

/// The resolver `http.request`'s client uses: the system's, then the policy on every
/// address. A name whose addresses are all refused fails to resolve, with the reason.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<EgressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        PolicyResolver { policy }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.allows_name(&host) {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check_addr(addr.ip(), None) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal = Some(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(e)) => Err(Box::new(EgressRefused {
                    what: format!("{host} ({})", e.what),
                    why: e.why,
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &EgressPolicy, url: &str) -> bool {
        policy
            .check_url(&reqwest::Url::parse(url).unwrap())
            .is_err()
    }

    #[test]
    fn every_loopback_and_private_form_is_refused_by_default() {
        let policy = EgressPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://localhost/",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://[::]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://app.localhost/",
            "http://255.255.255.255/",
        ] {
            assert!(refused(&policy, url), "{url} passed");
        }
        for url in [
            "http://93.184.215.14/",
            "http://[2606:4700::1111]/",
            "https://example.com/",
        ] {
            assert!(!refused(&policy, url), "{url} was refused");
        }
    }

    #[test]
    fn allow_rules_open_what_they_name_and_no_more() {
        let rules = ["127.0.0.1", "10.0.0.0/8", "[::1]:8080", "db.internal:5432"];
        let policy = EgressPolicy::new(rules.iter().map(|r| r.parse().unwrap()).collect());
        assert!(!refused(&policy, "http://127.0.0.1:9/"));
        assert!(!refused(&policy, "http://10.9.8.7/"));
        assert!(!refused(&policy, "http://[::1]:8080/"));
        assert!(refused(&policy, "http://[::1]:8081/"));
        assert!(refused(&policy, "http://127.0.0.2/"));
        assert!(refused(&policy, "http://db.internal:80/"));
        assert!(!refused(&policy, "http://db.internal:5432/"));
        assert!("10.0.0.0/33".parse::<Allow>().is_err());
        assert!("bad host!".parse::<Allow>().is_err());
        assert_eq!(
            "[::1]:8080".parse::<Allow>().unwrap().to_string(),
            "[::1]:8080"
        );
    }
}
