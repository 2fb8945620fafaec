//! `mock`: answer with a fixed response, for mocking an API before its backend exists or for
//! endpoints the gateway answers itself.

use crate::context::RequestContext;
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::Duration;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Config of `mock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Status code (default 200).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Response headers. Without a `Content-Type`, a body that parses as JSON is sent as
    /// `application/json`, any other as `text/plain; charset=utf-8`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body, inline.
    pub body: Option<String>,
    /// The body, read from this file at config load (relative to the working directory the
    /// gateway was started in).
    pub body_file: Option<String>,
    /// Wait this long before answering (simulates a slow backend).
    pub delay: Option<Duration>,
}

fn default_status() -> u16 {
    200
}

/// The `mock` plugin.
pub struct Mock {
    response: PluginResponse,
    delay: Option<std::time::Duration>,
}

/// Priority of `mock`: after auth and limits, so a mocked API is protected like a real one.
pub const PRIORITY: i32 = 900;

/// The factory for `mock`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("mock", PRIORITY, Mock::new)
}

impl Mock {
    /// Builds the plugin from its config.
    pub fn new(c: MockConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if !(100..=999).contains(&c.status) {
            return Err(ConfigError::at(
                "status",
                format!("{} is not an HTTP status code (100-999)", c.status),
            ));
        }
        let body: Bytes = match (c.body, c.body_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::whole(
                    "set either `body` or `body_file`, not both",
                ))
            }
            (Some(b), None) => b.into(),
            (None, Some(f)) => {
                let path = env.resolve_path(&f);
                std::fs::read(&path)
                    .map_err(|e| {
                        ConfigError::at("body_file", format!("cannot read {}: {e}", path.display()))
                    })?
                    .into()
            }
            (None, None) => Bytes::new(),
        };
        let mut response = PluginResponse::new(c.status);
        let mut has_type = false;
        for (n, v) in &c.headers {
            let path = format!("headers.{n}");
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ConfigError::at(&path, format!("`{n}` is not a valid header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| ConfigError::at(&path, "not a valid header value"))?;
            has_type |= name == CONTENT_TYPE;
            response.headers.push((name, value));
        }
        if !has_type && !body.is_empty() {
            let ct = if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            response
                .headers
                .push((CONTENT_TYPE, HeaderValue::from_static(ct)));
        }
        response.body = body;
        Ok(Mock {
            response,
            delay: c.delay.map(Duration::get),
        })
    }
}

#[async_trait]
impl Plugin for Mock {
    fn name(&self) -> &str {
        "mock"
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
        _ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        Ok(Flow::Respond(self.response.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};

    #[tokio::test]
    async fn answers_with_configured_response() {
        let mut h = PluginHarness::from_config(
            &factory(),
            serde_json::json!({"status": 201, "body": "{\"ok\":true}", "headers": {"x-mock": "1"}}),
        )
        .unwrap();
        let resp = h.request(&mut request("GET", "/").build()).await.unwrap();
        let Flow::Respond(r) = resp else {
            panic!("mock must answer")
        };
        assert_eq!(r.status, 201);
        assert_eq!(r.header("content-type").unwrap(), "application/json");
        assert_eq!(r.header("x-mock").unwrap(), "1");
        assert_eq!(&r.body[..], b"{\"ok\":true}");
    }

    #[test]
    fn refuses_body_and_body_file_together() {
        let err = PluginHarness::from_config(
            &factory(),
            serde_json::json!({"body": "a", "body_file": "b"}),
        )
        .err()
        .unwrap();
        assert!(err.message.contains("not both"));
    }
}
