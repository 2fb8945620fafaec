//! `referer-restriction`: allow or deny requests by the host in their `Referer` header.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::REFERER;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;

/// Config of `referer-restriction`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefererRestrictionConfig {
    /// Hosts (`example.com`) or wildcards (`*.example.com`); when not empty, the referring
    /// host must match one of them.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Hosts or wildcards refused (deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Let requests without a `Referer` (or with an empty one) through unchecked.
    /// Default false: they are refused.
    #[serde(default)]
    pub bypass_missing: bool,
}

/// Host patterns: exact hosts and `*.suffix` wildcards, lower-cased.
#[derive(Debug, Default)]
struct Hosts {
    exact: Vec<String>,
    /// Suffixes with their leading dot (`.example.com` for `*.example.com`).
    suffixes: Vec<String>,
}

impl Hosts {
    fn parse(list: &[String], key: &str) -> Result<Hosts, ConfigError> {
        let mut hosts = Hosts::default();
        for (i, entry) in list.iter().enumerate() {
            let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            let (suffix, name) = match e.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, e.as_str()),
            };
            let valid_name = |n: &str| {
                !n.is_empty()
                    && n.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
            };
            let ipv6 = name.starts_with('[') && name.ends_with(']') && name.len() > 2;
            if !(valid_name(name) || (!suffix && ipv6)) {
                return Err(ConfigError::at(
                    format!("{key}[{i}]"),
                    format!(
                        "`{entry}` is not a host name; write `example.com` or `*.example.com` (no scheme, port or path)"
                    ),
                ));
            }
            if suffix {
                hosts.suffixes.push(format!(".{name}"));
            } else {
                hosts.exact.push(name.to_string());
            }
        }
        Ok(hosts)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    fn matches(&self, host: &str) -> bool {
        self.exact.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self.suffixes.iter().any(|s| {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            })
    }
}

/// The host of a `Referer` URL (`https://user@Example.com:8443/a?b` → `Example.com`), or
/// `None` when the value is not an absolute URL with a host.
pub fn referer_host(referer: &str) -> Option<&str> {
    let (scheme, rest) = referer.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if hostport.starts_with('[') {
        // An IPv6 literal keeps its brackets, as written in config.
        &hostport[..=hostport.find(']')?]
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The `referer-restriction` plugin.
pub struct RefererRestriction {
    allow: Hosts,
    deny: Hosts,
    bypass_missing: bool,
    forbidden: PluginResponse,
}

/// Priority of `referer-restriction`: access control, after `ua-restriction`.
pub const PRIORITY: i32 = 2990;

/// The factory for `referer-restriction`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "referer-restriction",
        PRIORITY,
        |c: RefererRestrictionConfig, _env| RefererRestriction::new(&c),
    )
}

impl RefererRestriction {
    /// Builds the plugin from its config.
    pub fn new(c: &RefererRestrictionConfig) -> Result<Self, ConfigError> {
        let allow = Hosts::parse(&c.allow, "allow")?;
        let deny = Hosts::parse(&c.deny, "deny")?;
        if allow.is_empty() && deny.is_empty() {
            return Err(ConfigError::whole("set `allow`, `deny` or both"));
        }
        Ok(RefererRestriction {
            allow,
            deny,
            bypass_missing: c.bypass_missing,
            forbidden: PluginResponse::error(403, "forbidden by Referer restriction"),
        })
    }

    /// Whether a request with this `Referer` value (`None`: absent or empty) may pass.
    pub fn permits(&self, referer: Option<&[u8]>) -> bool {
        let Some(referer) = referer else {
            return self.bypass_missing;
        };
        // A value that is not a URL with a host cannot match any list: it passes a deny
        // list but never an allow list.
        let host = std::str::from_utf8(referer).ok().and_then(referer_host);
        if host.is_some_and(|h| self.deny.matches(h)) {
            return false;
        }
        self.allow.is_empty() || host.is_some_and(|h| self.allow.matches(h))
    }
}

#[async_trait]
impl Plugin for RefererRestriction {
    fn name(&self) -> &str {
        "referer-restriction"
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
        _ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let referer = req
            .headers
            .get(REFERER)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty());
        Ok(if self.permits(referer) {
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

    async fn status(cfg: &serde_json::Value, referer: Option<&str>) -> u16 {
        let mut h = PluginHarness::from_config(&factory(), cfg.clone()).unwrap();
        let mut b = request("GET", "/");
        if let Some(r) = referer {
            b = b.header("referer", r);
        }
        match h.request(&mut b.build()).await.unwrap() {
            Flow::Continue => 200,
            Flow::Respond(r) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["error"], "forbidden by Referer restriction");
                r.status
            }
        }
    }

    #[test]
    fn hosts_from_referers() {
        for (r, h) in [
            ("https://example.com/a/b?c#d", Some("example.com")),
            ("http://user:pw@Example.COM:8080/", Some("Example.COM")),
            ("https://example.com.", Some("example.com")),
            ("https://[2001:db8::1]:443/x", Some("[2001:db8::1]")),
            ("android-app://com.example.app/", Some("com.example.app")),
            ("https://a.test?x=https://b.test", Some("a.test")),
            ("example.com/path", None),
            ("https:///path", None),
            ("://example.com", None),
            ("javascript:alert(1)", None),
        ] {
            assert_eq!(referer_host(r), h, "{r}");
        }
    }

    #[tokio::test]
    async fn allow_list_with_wildcards() {
        let cfg = json!({"allow": ["example.com", "*.example.org"]});
        assert_eq!(status(&cfg, Some("https://example.com/page")).await, 200);
        assert_eq!(status(&cfg, Some("https://EXAMPLE.com:8443/")).await, 200);
        assert_eq!(status(&cfg, Some("https://www.example.org/")).await, 200);
        assert_eq!(status(&cfg, Some("https://a.b.example.org/")).await, 200);
        // A wildcard is for subdomains only; lookalikes do not match.
        assert_eq!(status(&cfg, Some("https://example.org/")).await, 403);
        assert_eq!(status(&cfg, Some("https://badexample.org/")).await, 403);
        assert_eq!(status(&cfg, Some("https://www.example.com/")).await, 403);
        assert_eq!(
            status(&cfg, Some("https://example.com.evil.test/")).await,
            403
        );
        assert_eq!(
            status(&cfg, Some("https://evil.test/?example.com")).await,
            403
        );
        // Garbage never passes an allow list; a missing referer is refused by default.
        assert_eq!(status(&cfg, Some("not a url")).await, 403);
        assert_eq!(status(&cfg, None).await, 403);
        assert_eq!(status(&cfg, Some("")).await, 403);
        let cfg = json!({"allow": ["example.com"], "bypass_missing": true});
        assert_eq!(status(&cfg, None).await, 200);
        assert_eq!(status(&cfg, Some("https://other.test/")).await, 403);
    }

    #[tokio::test]
    async fn deny_list_wins() {
        let cfg = json!({"allow": ["*.example.com"], "deny": ["spam.example.com"]});
        assert_eq!(status(&cfg, Some("https://www.example.com/")).await, 200);
        assert_eq!(status(&cfg, Some("https://spam.example.com/")).await, 403);
        let cfg = json!({"deny": ["*.spam.test"], "bypass_missing": true});
        assert_eq!(status(&cfg, Some("https://x.spam.test/")).await, 403);
        assert_eq!(status(&cfg, Some("https://good.test/")).await, 200);
        assert_eq!(status(&cfg, Some("garbage")).await, 200);
        assert_eq!(status(&cfg, None).await, 200);
    }

    #[test]
    fn bad_configs() {
        for (cfg, path, msg) in [
            (
                json!({"allow": ["ok.test", "https://example.com"]}),
                "allow[1]",
                "not a host name",
            ),
            (json!({"deny": ["*"]}), "deny[0]", "not a host name"),
            (json!({"deny": ["a.*.test"]}), "deny[0]", "not a host name"),
            (
                json!({"allow": ["example.com:80"]}),
                "allow[0]",
                "not a host name",
            ),
            (json!({}), "", "set `allow`, `deny` or both"),
            (
                json!({"whitelist": ["a.test"]}),
                "whitelist",
                "unknown field `whitelist`",
            ),
        ] {
            let e = PluginHarness::from_config(&factory(), cfg.clone())
                .err()
                .unwrap();
            assert_eq!(e.path, path, "{cfg}");
            assert!(e.message.contains(msg), "{cfg}: {e}");
        }
    }
}
