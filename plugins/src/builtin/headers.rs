//! `headers`: set, add and remove request headers on the way up and response headers on the
//! way down.

use super::header_ops::{HeaderEdits, HeaderEditsConfig};
use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Phases, Plugin};
use async_trait::async_trait;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

/// Config of `headers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Edits to the request sent upstream.
    #[serde(default)]
    pub request: HeaderEditsConfig,
    /// Edits to the response sent to the client.
    #[serde(default)]
    pub response: HeaderEditsConfig,
}

/// The `headers` plugin.
pub struct Headers {
    request: HeaderEdits,
    response: HeaderEdits,
}

/// Priority of `headers`: after auth and limits, with the other transforms.
pub const PRIORITY: i32 = 950;

/// The factory for `headers`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("headers", PRIORITY, |c: HeadersConfig, _env| {
        Headers::new(&c)
    })
}

impl Headers {
    /// Builds the plugin from its config.
    pub fn new(c: &HeadersConfig) -> Result<Self, ConfigError> {
        Ok(Headers {
            request: HeaderEdits::compile(&c.request, "request")?,
            response: HeaderEdits::compile(&c.response, "response")?,
        })
    }
}

#[async_trait]
impl Plugin for Headers {
    fn name(&self) -> &str {
        "headers"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::UPSTREAM_REQUEST | Phases::RESPONSE
    }

    async fn upstream_request_filter(
        &self,
        upstream_req: &mut RequestHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        self.request.apply_request(upstream_req)
    }

    async fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        self.response.apply_response(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};

    #[tokio::test]
    async fn edits_request_and_response() {
        let mut h = PluginHarness::from_config(
            &factory(),
            serde_json::json!({
                "request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-gone"]},
                "response": {"set": {"x-c": "3"}, "remove": ["server"]}
            }),
        )
        .unwrap();
        let mut req = request("GET", "/").header("x-gone", "bye").build();
        h.upstream_request(&mut req).await.unwrap();
        assert_eq!(req.headers.get("x-a").unwrap(), "1");
        assert_eq!(req.headers.get("x-b").unwrap(), "2");
        assert!(req.headers.get("x-gone").is_none());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("server", "upstream").unwrap();
        h.response(&mut resp).await.unwrap();
        assert_eq!(resp.headers.get("x-c").unwrap(), "3");
        assert!(resp.headers.get("server").is_none());
    }

    #[test]
    fn bad_header_name_names_the_key() {
        let err = PluginHarness::from_config(
            &factory(),
            serde_json::json!({"request": {"set": {"bad name": "1"}}}),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "request.set.bad name");
        assert!(err.message.contains("not a valid header name"));
    }
}
