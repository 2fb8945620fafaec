//! `request-id`: give every request an id, for logs and for tracing a request through the
//! upstreams. The id is put in [`RequestContext::request_id`], in a request header sent
//! upstream and in the same header on the response, including responses a plugin or the
//! gateway itself sent.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;

/// How new ids are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// A random UUID (version 4).
    UuidV4,
    /// A time-ordered UUID (version 7): ids sort by creation time, which log stores and
    /// database indexes handle better than random ones.
    #[default]
    UuidV7,
}

/// Config of `request-id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The header that carries the id, on the request and on the response.
    #[serde(default = "default_header")]
    pub header: String,
    /// Always make a new id, even when the client sent a valid one.
    #[serde(default)]
    pub overwrite: bool,
    /// How new ids are made: `uuid_v7` (default) or `uuid_v4`.
    #[serde(default)]
    pub algorithm: Algorithm,
}

fn default_header() -> String {
    "X-Request-Id".to_string()
}

/// The longest client-sent id that is kept; a longer one is replaced.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The `request-id` plugin.
pub struct RequestId {
    header: HeaderName,
    overwrite: bool,
    algorithm: Algorithm,
}

/// Priority of `request-id`: first of all, so that every later plugin, every answer a plugin
/// sends and every log line sees the id.
pub const PRIORITY: i32 = 12000;

/// The factory for `request-id`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("request-id", PRIORITY, |c: RequestIdConfig, _env| {
        RequestId::new(&c)
    })
}

/// Headers that frame or route the message: carrying an id in one of them would break it.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

impl RequestId {
    /// Builds the plugin from its config.
    pub fn new(c: &RequestIdConfig) -> Result<Self, ConfigError> {
        let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
            ConfigError::at(
                "header",
                format!("`{}` is not a valid header name", c.header),
            )
        })?;
        if RESERVED.contains(&header.as_str()) {
            return Err(ConfigError::at(
                "header",
                format!(
                    "`{}` is managed by the gateway and cannot carry the request id",
                    c.header
                ),
            ));
        }
        Ok(RequestId {
            header,
            overwrite: c.overwrite,
            algorithm: c.algorithm,
        })
    }

    fn generate(&self) -> String {
        let id = match self.algorithm {
            Algorithm::UuidV4 => uuid::Uuid::new_v4(),
            Algorithm::UuidV7 => uuid::Uuid::now_v7(),
        };
        id.hyphenated().to_string()
    }

    /// The client's id, if one was sent exactly once and is acceptable.
    fn client_id<'r>(&self, req: &'r RequestHeader) -> Option<&'r str> {
        let mut values = req.headers.get_all(&self.header).iter();
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let bytes = first.as_bytes();
        let acceptable = !bytes.is_empty()
            && bytes.len() <= MAX_CLIENT_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic());
        if acceptable {
            // Visible ASCII is always UTF-8.
            std::str::from_utf8(bytes).ok()
        } else {
            None
        }
    }
}

fn header_value(id: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(id).or_err(ErrorType::InternalError, "request id as a header value")
}

#[async_trait]
impl Plugin for RequestId {
    fn name(&self) -> &str {
        "request-id"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::RESPONSE
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let kept = if self.overwrite {
            None
        } else {
            self.client_id(req).map(str::to_string)
        };
        let id = match kept {
            Some(id) => id,
            None => {
                let id = self.generate();
                // The request headers are what the upstream receives: replace whatever the
                // client sent (an invalid id, or several).
                req.insert_header(self.header.clone(), header_value(&id)?)?;
                id
            }
        };
        ctx.request_id = Some(id);
        Ok(Flow::Continue)
    }

    async fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        // Without an id here, the gateway answered before the route's plugins ran (no route
        // matched, or the request was malformed): the response still gets one, and so do the
        // logs.
        let id = ctx.request_id.get_or_insert_with(|| self.generate());
        resp.insert_header(self.header.clone(), header_value(id)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), config).unwrap()
    }

    fn uuid_version(id: &str) -> usize {
        uuid::Uuid::parse_str(id).unwrap().get_version_num()
    }

    #[tokio::test]
    async fn generates_a_uuid_v7_by_default_and_sets_it_everywhere() {
        let mut h = harness(serde_json::json!({}));
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let id = h.ctx.request_id.clone().unwrap();
        assert_eq!(uuid_version(&id), 7);
        assert_eq!(req.headers.get("x-request-id").unwrap(), id.as_str());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        h.response(&mut resp).await.unwrap();
        assert_eq!(resp.headers.get("x-request-id").unwrap(), id.as_str());
    }

    #[tokio::test]
    async fn v7_ids_sort_by_time() {
        let mut h = harness(serde_json::json!({}));
        let mut ids = Vec::new();
        for _ in 0..3 {
            h.ctx.request_id = None;
            h.request(&mut request("GET", "/").build()).await.unwrap();
            ids.push(h.ctx.request_id.clone().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[tokio::test]
    async fn uuid_v4_on_request() {
        let mut h = harness(serde_json::json!({"algorithm": "uuid_v4"}));
        h.request(&mut request("GET", "/").build()).await.unwrap();
        assert_eq!(uuid_version(h.ctx.request_id.as_deref().unwrap()), 4);
    }

    #[tokio::test]
    async fn keeps_a_valid_client_id() {
        let mut h = harness(serde_json::json!({"header": "X-Trace"}));
        let mut req = request("GET", "/").header("x-trace", "abc-123_XYZ").build();
        h.request(&mut req).await.unwrap();
        assert_eq!(h.ctx.request_id.as_deref(), Some("abc-123_XYZ"));
        assert_eq!(req.headers.get("x-trace").unwrap(), "abc-123_XYZ");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        h.response(&mut resp).await.unwrap();
        assert_eq!(resp.headers.get("x-trace").unwrap(), "abc-123_XYZ");
        assert!(resp.headers.get("x-request-id").is_none());
    }

    #[tokio::test]
    async fn replaces_invalid_or_repeated_client_ids() {
        let long = "a".repeat(MAX_CLIENT_ID_LEN + 1);
        let exact = "b".repeat(MAX_CLIENT_ID_LEN);
        let mut h = harness(serde_json::json!({}));
        let mut keep = request("GET", "/").header("x-request-id", &exact).build();
        h.request(&mut keep).await.unwrap();
        assert_eq!(h.ctx.request_id.as_deref(), Some(exact.as_str()));

        let bad: Vec<RequestHeader> = vec![
            request("GET", "/").header("x-request-id", &long).build(),
            request("GET", "/")
                .header("x-request-id", "has space")
                .build(),
            request("GET", "/").header("x-request-id", "").build(),
            request("GET", "/")
                .header("x-request-id", "a")
                .header("x-request-id", "b")
                .build(),
        ];
        for mut req in bad {
            h.ctx.request_id = None;
            h.request(&mut req).await.unwrap();
            let id = h.ctx.request_id.clone().unwrap();
            assert_eq!(uuid_version(&id), 7);
            let sent: Vec<_> = req.headers.get_all("x-request-id").iter().collect();
            assert_eq!(sent, vec![id.as_str()]);
        }
    }

    #[tokio::test]
    async fn non_ascii_client_id_is_replaced() {
        let mut h = harness(serde_json::json!({}));
        let mut req = request("GET", "/").build();
        req.insert_header(
            "x-request-id",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .unwrap();
        h.request(&mut req).await.unwrap();
        assert_ne!(h.ctx.request_id.as_deref(), Some("café"));
        assert_eq!(uuid_version(h.ctx.request_id.as_deref().unwrap()), 7);
    }

    #[tokio::test]
    async fn overwrite_ignores_the_client_id() {
        let mut h = harness(serde_json::json!({"overwrite": true}));
        let mut req = request("GET", "/").header("x-request-id", "mine").build();
        h.request(&mut req).await.unwrap();
        let id = h.ctx.request_id.clone().unwrap();
        assert_ne!(id, "mine");
        assert_eq!(req.headers.get("x-request-id").unwrap(), id.as_str());
    }

    #[tokio::test]
    async fn response_without_request_phase_gets_a_new_id() {
        let mut h = harness(serde_json::json!({}));
        let mut resp = ResponseHeader::build(404, None).unwrap();
        h.response(&mut resp).await.unwrap();
        let id = h.ctx.request_id.clone().unwrap();
        assert_eq!(resp.headers.get("x-request-id").unwrap(), id.as_str());
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = |v| PluginHarness::from_config(&factory(), v).err().unwrap();
        let e = err(serde_json::json!({"header": "bad header"}));
        assert_eq!(e.path, "header");
        assert!(e.message.contains("not a valid header name"), "{e}");
        let e = err(serde_json::json!({"header": "Content-Length"}));
        assert_eq!(e.path, "header");
        assert!(e.message.contains("managed by the gateway"), "{e}");
        let e = err(serde_json::json!({"algorithm": "uuid_v1"}));
        assert_eq!(e.path, "algorithm");
        assert!(e.message.contains("uuid_v4"), "{e}");
        let e = err(serde_json::json!({"overwrite": "yes"}));
        assert_eq!(e.path, "overwrite");
        let e = err(serde_json::json!({"headers": "X"}));
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
