//! `ua-restriction`: allow or deny requests by their `User-Agent`, with regexes.

use crate::context::RequestContext;
use crate::factory::{regex_error, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::USER_AGENT;
use pingora_error::Result;
use pingora_http::RequestHeader;
use regex::bytes::RegexSet;
use serde::Deserialize;

/// Config of `ua-restriction`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UaRestrictionConfig {
    /// Regexes; when not empty, a `User-Agent` must match one of them.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Regexes; a `User-Agent` matching any of them is refused (deny wins over allow).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Let requests without a `User-Agent` (or with an empty one) through unchecked.
    /// Default false: they are refused.
    #[serde(default)]
    pub bypass_missing: bool,
}

/// The `ua-restriction` plugin.
pub struct UaRestriction {
    allow: Option<RegexSet>,
    deny: Option<RegexSet>,
    bypass_missing: bool,
    forbidden: PluginResponse,
}

/// Priority of `ua-restriction`: access control, just after `ip-restriction`.
pub const PRIORITY: i32 = 2999;

/// The factory for `ua-restriction`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "ua-restriction",
        PRIORITY,
        |c: UaRestrictionConfig, _env| UaRestriction::new(&c),
    )
}

/// Compiles a list of regexes into one set; errors name the entry as `key[i]`.
fn regex_set(list: &[String], key: &str) -> Result<Option<RegexSet>, ConfigError> {
    if list.is_empty() {
        return Ok(None);
    }
    for (i, re) in list.iter().enumerate() {
        if re.is_empty() {
            return Err(ConfigError::at(
                format!("{key}[{i}]"),
                "an empty regex matches every value",
            ));
        }
        regex::bytes::Regex::new(re)
            .map_err(|e| ConfigError::at(format!("{key}[{i}]"), regex_error(&e)))?;
    }
    RegexSet::new(list)
        .map(Some)
        .map_err(|e| ConfigError::at(key, regex_error(&e)))
}

impl UaRestriction {
    /// Builds the plugin from its config.
    pub fn new(c: &UaRestrictionConfig) -> Result<Self, ConfigError> {
        let allow = regex_set(&c.allow, "allow")?;
        let deny = regex_set(&c.deny, "deny")?;
        if allow.is_none() && deny.is_none() {
            return Err(ConfigError::whole("set `allow`, `deny` or both"));
        }
        Ok(UaRestriction {
            allow,
            deny,
            bypass_missing: c.bypass_missing,
            forbidden: PluginResponse::error(403, "forbidden by User-Agent restriction"),
        })
    }

    /// Whether a request with this `User-Agent` (`None`: absent or empty) may pass.
    pub fn permits(&self, ua: Option<&[u8]>) -> bool {
        let Some(ua) = ua else {
            return self.bypass_missing;
        };
        if self.deny.as_ref().is_some_and(|d| d.is_match(ua)) {
            return false;
        }
        self.allow.as_ref().is_none_or(|a| a.is_match(ua))
    }
}

#[async_trait]
impl Plugin for UaRestriction {
    fn name(&self) -> &str {
        "ua-restriction"
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
        let ua = req
            .headers
            .get(USER_AGENT)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty());
        Ok(if self.permits(ua) {
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

    async fn status(cfg: &serde_json::Value, ua: Option<&str>) -> u16 {
        let mut h = PluginHarness::from_config(&factory(), cfg.clone()).unwrap();
        let mut b = request("GET", "/");
        if let Some(ua) = ua {
            b = b.header("user-agent", ua);
        }
        match h.request(&mut b.build()).await.unwrap() {
            Flow::Continue => 200,
            Flow::Respond(r) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["error"], "forbidden by User-Agent restriction");
                r.status
            }
        }
    }

    #[tokio::test]
    async fn deny_list() {
        let cfg = json!({"deny": ["(?i)bot", "^curl/"]});
        assert_eq!(status(&cfg, Some("Mozilla/5.0")).await, 200);
        assert_eq!(status(&cfg, Some("Googlebot/2.1")).await, 403);
        assert_eq!(status(&cfg, Some("SomeBOT")).await, 403);
        assert_eq!(status(&cfg, Some("curl/8.0")).await, 403);
        assert_eq!(status(&cfg, Some("not curl/8.0")).await, 200);
        assert_eq!(status(&cfg, None).await, 403);
        assert_eq!(status(&cfg, Some("")).await, 403);
        let cfg = json!({"deny": ["bot"], "bypass_missing": true});
        assert_eq!(status(&cfg, None).await, 200);
        assert_eq!(status(&cfg, Some("bot")).await, 403);
    }

    #[tokio::test]
    async fn allow_list_and_deny_wins() {
        let cfg = json!({"allow": ["^MyApp/[0-9]+"], "deny": ["MyApp/0"]});
        assert_eq!(status(&cfg, Some("MyApp/12 (iOS)")).await, 200);
        assert_eq!(status(&cfg, Some("MyApp/0.9")).await, 403);
        assert_eq!(status(&cfg, Some("Mozilla/5.0")).await, 403);
        assert_eq!(status(&cfg, None).await, 403);
        let cfg = json!({"allow": ["^MyApp/"], "bypass_missing": true});
        assert_eq!(status(&cfg, None).await, 200);
    }

    #[test]
    fn bad_configs() {
        for (cfg, path, msg) in [
            (json!({"deny": ["ok", "(open"]}), "deny[1]", "invalid regex"),
            (json!({"allow": [""]}), "allow[0]", "empty regex"),
            (json!({}), "", "set `allow`, `deny` or both"),
            (
                json!({"deny": ["x"], "bypass": true}),
                "bypass",
                "unknown field `bypass`",
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
