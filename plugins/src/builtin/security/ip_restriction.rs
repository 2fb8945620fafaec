//! `ip-restriction`: allow or deny clients by IP address or CIDR block, and establish the real
//! client address behind trusted proxies from `X-Forwarded-For`.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::HeaderName;
use ipnet::IpNet;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// Config of `ip-restriction`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// Addresses or CIDR blocks allowed; when not empty, every other address is refused.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Addresses or CIDR blocks refused (checked first: deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// A set of IP addresses, from CIDR blocks merged into sorted, disjoint ranges so that a
/// lookup is a binary search whatever the number of entries. IPv4-mapped IPv6 addresses
/// (`::ffff:10.0.0.1`) are stored and looked up as IPv4.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// Parses `10.0.0.0/8`, `10.0.0.1`, `2001:db8::/32` or `::1` into a network. Host bits set
/// below the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    let net = if t.contains('/') {
        t.parse::<IpNet>().map_err(|_| {
            format!("`{s}` is not an IP address or CIDR block (e.g. `10.0.0.0/8`, `2001:db8::/32`)")
        })?
    } else {
        let ip = t.parse::<IpAddr>().map_err(|_| {
            format!("`{s}` is not an IP address or CIDR block (e.g. `10.0.0.1`, `10.0.0.0/8`)")
        })?;
        IpNet::from(ip)
    };
    Ok(canonical_net(net.trunc()))
}

/// An IPv4-mapped IPv6 block (`::ffff:0:0/96` and narrower) as the IPv4 block it stands for.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            if v6.prefix_len() >= 96 {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// Sorts ranges and merges those that overlap or touch (`succ` is the successor function).
fn merge<T: Copy + Ord>(mut ranges: Vec<(T, T)>, succ: fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= succ(last.1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only one that can hold it.
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && ranges[i - 1].1 >= x
}

impl IpSet {
    /// Builds a set from a config list; errors name the entry as `key[i]`.
    pub fn parse(entries: &[String], key: &str) -> Result<IpSet, ConfigError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let net = parse_net(e).map_err(|m| ConfigError::at(format!("{key}[{i}]"), m))?;
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Ok(IpSet {
            v4: merge(v4, |x| x.saturating_add(1)),
            v6: merge(v6, |x| x.saturating_add(1)),
        })
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in the set (an IPv4-mapped IPv6 address is looked up as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

/// The `ip-restriction` plugin.
pub struct IpRestriction {
    allow: IpSet,
    deny: IpSet,
    trusted: IpSet,
    forbidden: PluginResponse,
}

/// Priority of `ip-restriction`: access control, before authentication.
pub const PRIORITY: i32 = 3000;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The factory for `ip-restriction`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "ip-restriction",
        PRIORITY,
        |c: IpRestrictionConfig, _env| IpRestriction::new(&c),
    )
}

/// One `X-Forwarded-For` element as an address: `1.2.3.4`, `2001:db8::1`, or with a port as
/// some proxies write it (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

impl IpRestriction {
    /// Builds the plugin from its config.
    pub fn new(c: &IpRestrictionConfig) -> Result<Self, ConfigError> {
        let allow = IpSet::parse(&c.allow, "allow")?;
        let deny = IpSet::parse(&c.deny, "deny")?;
        let trusted = IpSet::parse(&c.trusted_proxies, "trusted_proxies")?;
        if allow.is_empty() && deny.is_empty() && trusted.is_empty() {
            return Err(ConfigError::whole(
                "set at least one of `allow`, `deny` or `trusted_proxies`",
            ));
        }
        Ok(IpRestriction {
            allow,
            deny,
            trusted,
            forbidden: PluginResponse::error(403, "forbidden by IP restriction"),
        })
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the first address in
    /// `X-Forwarded-For` (read from the right) that is not a trusted proxy. An element that
    /// is not an address stops the walk at the last trusted hop: nothing left of garbage is
    /// believed.
    pub fn client_ip(&self, peer: IpAddr, req: &RequestHeader) -> IpAddr {
        let mut current = peer.to_canonical();
        if !self.trusted.contains(current) {
            return current;
        }
        for line in req.headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return current;
            };
            if line.trim().is_empty() {
                continue;
            }
            for hop in line.rsplit(',') {
                let Some(ip) = parse_hop(hop) else {
                    return current;
                };
                if !self.trusted.contains(ip) {
                    return ip;
                }
                current = ip;
            }
        }
        current
    }

    /// Whether `ip` may pass.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    fn name(&self) -> &str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let peer = ctx.client_ip.or_else(|| ctx.client_addr.map(|a| a.ip()));
        let Some(peer) = peer else {
            // No IP (e.g. a Unix socket): only an allow list can decide, and it cannot match.
            return Ok(if self.allow.is_empty() {
                Flow::Continue
            } else {
                Flow::Respond(self.forbidden.clone())
            });
        };
        let ip = self.client_ip(peer, req);
        ctx.client_ip = Some(ip);
        Ok(if self.permits(ip) {
            Flow::Continue
        } else {
            Flow::Respond(self.forbidden.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn harness(config: serde_json::Value, peer: &str) -> PluginHarness {
        let mut h = PluginHarness::from_config(&factory(), config).unwrap();
        h.ctx.client_ip = Some(ip(peer));
        h
    }

    async fn status(h: &mut PluginHarness, xff: &[&str]) -> u16 {
        let mut b = request("GET", "/");
        for v in xff {
            b = b.header("x-forwarded-for", v);
        }
        match h.request(&mut b.build()).await.unwrap() {
            Flow::Continue => 200,
            Flow::Respond(r) => {
                assert_eq!(r.header("content-type").unwrap(), "application/json");
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["error"], "forbidden by IP restriction");
                assert_eq!(v["status"], 403);
                r.status
            }
        }
    }

    #[test]
    fn sets_merge_and_match_v4_v6_and_mapped() {
        let set = IpSet::parse(
            &[
                "10.0.0.0/8".into(),
                "10.1.0.0/16".into(),
                "192.168.1.7".into(),
                "192.168.1.8".into(),
                "2001:db8::/32".into(),
                "::ffff:172.16.0.0/108".into(),
            ],
            "allow",
        )
        .unwrap();
        assert_eq!(set.v4.len(), 3, "{set:?}");
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.7",
            "192.168.1.8",
            "2001:db8::1",
            "2001:db8:ffff::",
            "::ffff:10.2.3.4",
            "172.16.9.9",
        ] {
            assert!(set.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.168.1.6",
            "192.168.1.9",
            "2001:db9::",
            "::1",
            "::ffff:11.0.0.1",
            "172.32.0.0",
        ] {
            assert!(!set.contains(ip(no)), "{no}");
        }
        let all = IpSet::parse(&["0.0.0.0/0".into(), "::/0".into()], "allow").unwrap();
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("ffff::1")));
    }

    #[test]
    fn bad_entries_name_their_index() {
        for (cfg, path) in [
            (
                json!({"allow": ["10.0.0.1", "10.0.0.0/8", "nope"]}),
                "allow[2]",
            ),
            (json!({"deny": ["10.0.0.0/33"]}), "deny[0]"),
            (
                json!({"trusted_proxies": ["::1", "1.2.3"]}),
                "trusted_proxies[1]",
            ),
        ] {
            let err = PluginHarness::from_config(&factory(), cfg).err().unwrap();
            assert_eq!(err.path, path);
            assert!(
                err.message.contains("not an IP address or CIDR block"),
                "{err}"
            );
        }
        let err = PluginHarness::from_config(&factory(), json!({}))
            .err()
            .unwrap();
        assert!(err.message.contains("at least one of"), "{err}");
        let err = PluginHarness::from_config(&factory(), json!({"allowed": ["1.1.1.1"]}))
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field `allowed`"), "{err}");
    }

    #[tokio::test]
    async fn allow_and_deny() {
        let cfg = json!({"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.9.0.0/16"]});
        for (peer, want) in [
            ("10.1.2.3", 200),
            ("10.9.1.1", 403),
            ("11.0.0.1", 403),
            ("2001:db8::5", 200),
            ("2001:db9::5", 403),
            ("::ffff:10.1.2.3", 200),
            ("::ffff:10.9.0.1", 403),
        ] {
            let mut h = harness(cfg.clone(), peer);
            assert_eq!(status(&mut h, &[]).await, want, "{peer}");
        }
        let mut h = harness(json!({"deny": ["127.0.0.0/8", "::1"]}), "127.0.0.1");
        assert_eq!(status(&mut h, &[]).await, 403);
        let mut h = harness(json!({"deny": ["127.0.0.0/8", "::1"]}), "::1");
        assert_eq!(status(&mut h, &[]).await, 403);
        let mut h = harness(json!({"deny": ["127.0.0.0/8"]}), "192.0.2.1");
        assert_eq!(status(&mut h, &[]).await, 200);
    }

    #[tokio::test]
    async fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let cfg =
            json!({"deny": ["203.0.113.0/24"], "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]});
        let cases: &[(&str, &[&str], &str)] = &[
            // Untrusted peer: its XFF is ignored.
            ("192.0.2.1", &["198.51.100.1"], "192.0.2.1"),
            // Trusted peer: the rightmost untrusted hop.
            ("127.0.0.1", &["203.0.113.9"], "203.0.113.9"),
            (
                "127.0.0.1",
                &["1.1.1.1, 203.0.113.9, 10.0.0.2"],
                "203.0.113.9",
            ),
            // Several header lines read as one list.
            (
                "127.0.0.1",
                &["1.1.1.1, 203.0.113.9", "10.0.0.2"],
                "203.0.113.9",
            ),
            // Only trusted hops: the leftmost one.
            ("127.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
            // Garbage stops the walk at the last trusted hop.
            ("127.0.0.1", &["203.0.113.9, junk, 10.0.0.2"], "10.0.0.2"),
            ("127.0.0.1", &["203.0.113.9, "], "127.0.0.1"),
            // Ports and mapped addresses.
            ("127.0.0.1", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("127.0.0.1", &["198.51.100.4:5000"], "198.51.100.4"),
            ("::ffff:127.0.0.1", &["::ffff:198.51.100.4"], "198.51.100.4"),
            // No header: the peer.
            ("127.0.0.1", &[], "127.0.0.1"),
        ];
        for (peer, xff, want) in cases {
            let mut h = harness(cfg.clone(), peer);
            let s = status(&mut h, xff).await;
            assert_eq!(h.ctx.client_ip, Some(ip(want)), "{peer} {xff:?}");
            let denied = want.starts_with("203.0.113.");
            assert_eq!(s, if denied { 403 } else { 200 }, "{peer} {xff:?}");
        }
    }

    #[tokio::test]
    async fn trusted_proxies_alone_only_resolve_the_client() {
        let mut h = harness(json!({"trusted_proxies": ["127.0.0.0/8"]}), "127.0.0.1");
        assert_eq!(status(&mut h, &["198.51.100.7"]).await, 200);
        assert_eq!(h.ctx.client_ip, Some(ip("198.51.100.7")));
    }
}
