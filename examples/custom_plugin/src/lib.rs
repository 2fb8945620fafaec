//! `tenant-router`: sends each tenant's traffic to its own upstream.
//!
//! The tenant is read from a header (`X-Tenant` by default) or, failing that, from the first
//! label of the host name (`acme.api.example.com` → `acme`). Known tenants go to their
//! upstream; unknown ones get the route's own upstream, or a 403 when `strict` is set.
//!
//! ```yaml
//! routes:
//!   - id: api
//!     paths: ["/*"]
//!     upstream: shared
//!     plugins:
//!       tenant-router:
//!         tenants: { acme: acme-backend, globex: globex-backend }
//!         strict: true
//! ```

use async_trait::async_trait;
use gatehouse_plugins::{
    BuildEnv, ConfigError, Flow, Phases, Plugin, PluginResponse, RequestContext, RequestHeader,
    Result, TypedFactory,
};
use http::HeaderName;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRouterConfig {
    /// Tenant name → upstream id.
    pub tenants: HashMap<String, String>,
    /// The header that names the tenant.
    #[serde(default = "default_header")]
    pub header: String,
    /// Refuse (403) requests whose tenant is unknown instead of using the route's upstream.
    #[serde(default)]
    pub strict: bool,
}

fn default_header() -> String {
    "x-tenant".into()
}

/// A tenant's name, stored in the request context for later plugins and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// The plugin: everything resolved at config load, nothing parsed per request but the header.
pub struct TenantRouter {
    tenants: HashMap<String, Arc<str>>,
    header: HeaderName,
    strict: bool,
}

/// Runs after auth (so the tenant header cannot bypass it) and before `traffic-split`.
pub const PRIORITY: i32 = 970;

/// The factory to register in a gateway: `Gateway::builder().plugin(tenant_router::factory())`.
pub fn factory() -> impl gatehouse_plugins::PluginFactory {
    TypedFactory::new("tenant-router", PRIORITY, TenantRouter::new)
}

impl TenantRouter {
    /// Checks the config: every upstream must exist, the header name must be valid.
    pub fn new(c: TenantRouterConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.tenants.is_empty() {
            return Err(ConfigError::at("tenants", "name at least one tenant"));
        }
        let mut tenants = HashMap::new();
        for (tenant, upstream) in &c.tenants {
            if !env.upstream_ids.contains(upstream) {
                return Err(ConfigError::at(
                    format!("tenants.{tenant}"),
                    format!("unknown upstream \"{upstream}\""),
                ));
            }
            tenants.insert(tenant.to_ascii_lowercase(), Arc::from(upstream.as_str()));
        }
        let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
            ConfigError::at("header", format!("`{}` is not a header name", c.header))
        })?;
        Ok(TenantRouter {
            tenants,
            header,
            strict: c.strict,
        })
    }

    fn tenant_of<'a>(&self, req: &'a RequestHeader) -> Option<&'a str> {
        if let Some(v) = req.headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            return Some(v.trim());
        }
        let host = req.uri.host().or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })?;
        host.split('.').next().filter(|_| host.contains('.'))
    }
}

#[async_trait]
impl Plugin for TenantRouter {
    fn name(&self) -> &str {
        "tenant-router"
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
        let tenant = self.tenant_of(req).map(str::to_ascii_lowercase);
        match tenant.as_deref().and_then(|t| self.tenants.get(t)) {
            Some(upstream) => {
                ctx.upstream_override = Some(upstream.clone());
                if let Some(t) = tenant {
                    ctx.set_state(Tenant(t));
                }
                Ok(Flow::Continue)
            }
            None if self.strict => Ok(Flow::Respond(PluginResponse::error(403, "unknown tenant"))),
            None => Ok(Flow::Continue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugins::testkit::{request, HarnessEnv, PluginHarness};

    fn harness(strict: bool) -> PluginHarness {
        let env = HarnessEnv {
            upstream_ids: ["acme-up".to_string(), "shared".to_string()].into(),
            ..HarnessEnv::default()
        };
        PluginHarness::from_config_with(
            &factory(),
            serde_json::json!({ "tenants": { "acme": "acme-up" }, "strict": strict }),
            &env,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn header_picks_the_upstream() {
        let mut h = harness(false);
        let flow = h
            .request(&mut request("GET", "/").header("x-tenant", "ACME").build())
            .await
            .unwrap();
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(h.ctx.upstream_override.as_deref(), Some("acme-up"));
        assert_eq!(h.ctx.state::<Tenant>(), Some(&Tenant("acme".into())));
    }

    #[tokio::test]
    async fn host_label_is_the_fallback() {
        let mut h = harness(false);
        h.request(&mut request("GET", "/").header("host", "acme.api.test").build())
            .await
            .unwrap();
        assert_eq!(h.ctx.upstream_override.as_deref(), Some("acme-up"));
    }

    #[tokio::test]
    async fn strict_refuses_unknown_tenants() {
        let mut h = harness(true);
        let flow = h
            .request(&mut request("GET", "/").header("x-tenant", "nope").build())
            .await
            .unwrap();
        assert!(matches!(flow, Flow::Respond(r) if r.status == 403));
        let mut lenient = harness(false);
        let flow = lenient
            .request(&mut request("GET", "/").header("x-tenant", "nope").build())
            .await
            .unwrap();
        assert!(matches!(flow, Flow::Continue));
        assert!(lenient.ctx.upstream_override.is_none());
    }

    #[test]
    fn unknown_upstreams_are_config_errors() {
        let err = PluginHarness::from_config(
            &factory(),
            serde_json::json!({ "tenants": { "acme": "missing" } }),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "tenants.acme");
        assert_eq!(err.message, "unknown upstream \"missing\"");
    }
}
