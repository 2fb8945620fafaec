//! `acl`: allow or deny the consumer an auth plugin identified, by consumer id or by group.

use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::HashSet;

/// Config of `acl`. Deny lists win over allow lists; when any allow list is set, a consumer
/// must be in `allow_consumers` or in one of `allow_groups`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Consumer ids let through.
    #[serde(default)]
    pub allow_consumers: Vec<String>,
    /// Consumer ids refused.
    #[serde(default)]
    pub deny_consumers: Vec<String>,
    /// Groups whose members are let through.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Groups whose members are refused.
    #[serde(default)]
    pub deny_groups: Vec<String>,
}

/// The `acl` plugin.
pub struct Acl {
    allow_consumers: HashSet<String>,
    deny_consumers: HashSet<String>,
    allow_groups: HashSet<String>,
    deny_groups: HashSet<String>,
    has_allow: bool,
    unauthenticated: PluginResponse,
    forbidden: PluginResponse,
}

/// Priority of `acl`: after every auth plugin.
pub const PRIORITY: i32 = 2400;

/// The factory for `acl`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("acl", PRIORITY, Acl::new)
}

fn set(
    list: &[String],
    key: &str,
    known: Option<&HashSet<&str>>,
) -> Result<HashSet<String>, ConfigError> {
    let mut out = HashSet::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        if v.is_empty() {
            return Err(ConfigError::at(format!("{key}[{i}]"), "must not be empty"));
        }
        if known.is_some_and(|k| !k.contains(v.as_str())) {
            return Err(ConfigError::at(
                format!("{key}[{i}]"),
                format!("unknown consumer \"{v}\" (expected the id of an entry in `consumers`)"),
            ));
        }
        out.insert(v.clone());
    }
    Ok(out)
}

impl Acl {
    /// Builds the plugin from its config; consumer ids must name consumers of the config.
    pub fn new(c: AclConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        let known: HashSet<&str> = env.consumers.iter().map(|c| c.id.as_str()).collect();
        let acl = Acl {
            allow_consumers: set(&c.allow_consumers, "allow_consumers", Some(&known))?,
            deny_consumers: set(&c.deny_consumers, "deny_consumers", Some(&known))?,
            allow_groups: set(&c.allow_groups, "allow_groups", None)?,
            deny_groups: set(&c.deny_groups, "deny_groups", None)?,
            has_allow: !c.allow_consumers.is_empty() || !c.allow_groups.is_empty(),
            unauthenticated: PluginResponse::error(401, "authentication required").with_header(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse\""),
            ),
            forbidden: PluginResponse::error(403, "forbidden"),
        };
        if !acl.has_allow && acl.deny_consumers.is_empty() && acl.deny_groups.is_empty() {
            return Err(ConfigError::whole(
                "set at least one of `allow_consumers`, `allow_groups`, `deny_consumers`, `deny_groups`",
            ));
        }
        Ok(acl)
    }

    /// Whether `consumer` may pass.
    pub fn allows(&self, consumer: &Consumer) -> bool {
        if self.deny_consumers.contains(&consumer.id)
            || consumer.groups.iter().any(|g| self.deny_groups.contains(g))
        {
            return false;
        }
        !self.has_allow
            || self.allow_consumers.contains(&consumer.id)
            || consumer
                .groups
                .iter()
                .any(|g| self.allow_groups.contains(g))
    }
}

#[async_trait]
impl Plugin for Acl {
    fn name(&self) -> &str {
        "acl"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        _req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        match &ctx.consumer {
            None => Ok(Flow::Respond(self.unauthenticated.clone())),
            Some(c) if self.allows(c) => Ok(Flow::Continue),
            Some(_) => Ok(Flow::Respond(self.forbidden.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use serde_json::json;
    use std::sync::Arc;

    fn consumer(id: &str, groups: &[&str]) -> Arc<Consumer> {
        Arc::new(Consumer {
            id: id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            labels: Default::default(),
            credentials: Default::default(),
        })
    }

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![
                consumer("alice", &["partners"]),
                consumer("bob", &["partners", "suspended"]),
                consumer("carol", &[]),
                consumer("dave", &["staff"]),
            ],
            ..Default::default()
        }
    }

    async fn status(config: serde_json::Value, who: Option<&str>) -> u16 {
        let env = env();
        let mut h = PluginHarness::from_config_with(&factory(), config, &env).unwrap();
        h.ctx.consumer = who.map(|w| env.consumers.iter().find(|c| c.id == w).unwrap().clone());
        match h.request(&mut request("GET", "/").build()).await.unwrap() {
            Flow::Continue => 200,
            Flow::Respond(r) => r.status,
        }
    }

    #[tokio::test]
    async fn allow_and_deny_by_consumer_and_group() {
        let cfg = json!({"allow_groups": ["partners"], "allow_consumers": ["dave"], "deny_groups": ["suspended"]});
        assert_eq!(status(cfg.clone(), Some("alice")).await, 200);
        assert_eq!(status(cfg.clone(), Some("bob")).await, 403);
        assert_eq!(status(cfg.clone(), Some("carol")).await, 403);
        assert_eq!(status(cfg.clone(), Some("dave")).await, 200);
        assert_eq!(status(cfg, None).await, 401);
        let deny_only = json!({"deny_consumers": ["carol"]});
        assert_eq!(status(deny_only.clone(), Some("carol")).await, 403);
        assert_eq!(status(deny_only, Some("dave")).await, 200);
    }

    #[tokio::test]
    async fn responses_carry_the_standard_body() {
        let env = env();
        let mut h = PluginHarness::from_config_with(
            &factory(),
            json!({"allow_consumers": ["alice"]}),
            &env,
        )
        .unwrap();
        let Flow::Respond(r) = h.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").is_some());
        h.ctx.consumer = Some(env.consumers[2].clone());
        let Flow::Respond(r) = h.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!()
        };
        assert_eq!(&r.body[..], br#"{"error":"forbidden","status":403}"#);
    }

    #[test]
    fn config_errors() {
        let err = PluginHarness::from_config_with(&factory(), json!({}), &env())
            .err()
            .unwrap();
        assert!(err.message.contains("at least one"));
        let err = PluginHarness::from_config_with(
            &factory(),
            json!({"allow_consumers": ["alicee"]}),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "allow_consumers[0]");
        assert!(err.message.contains("unknown consumer \"alicee\""));
        let err = PluginHarness::from_config_with(&factory(), json!({"allow": ["x"]}), &env())
            .err()
            .unwrap();
        assert!(err.message.contains("unknown field `allow`"));
    }
}
