//! `request-size-limit`: refuse request bodies (and, optionally, header sections) over a size.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::ByteSize;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Version;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;

/// Config of `request-size-limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimitConfig {
    /// The largest request body allowed.
    pub max_body: ByteSize,
    /// The largest header section allowed: the sum of every header's name and value lengths.
    pub max_header_bytes: Option<ByteSize>,
}

/// The `request-size-limit` plugin.
pub struct RequestSizeLimit {
    max_body: u64,
    max_header_bytes: Option<u64>,
    too_large: PluginResponse,
    headers_too_large: PluginResponse,
}

/// Priority of `request-size-limit`: early, before authentication, so that oversized
/// requests cost as little as possible.
pub const PRIORITY: i32 = 9000;

/// The factory for `request-size-limit`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "request-size-limit",
        PRIORITY,
        |c: RequestSizeLimitConfig, _env| RequestSizeLimit::new(&c),
    )
}

/// Bytes of body seen so far, for a body of unknown length.
#[derive(Clone, Copy)]
struct Counted(u64);

/// The declared `Content-Length`: `Some(n)`, or `None` when absent. A value that is not one
/// number (or several differing values) is `Err`: Pingora refuses such requests itself, and
/// this plugin counts the body whatever it is.
fn content_length(req: &RequestHeader) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in req.headers.get_all(CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or(())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

impl RequestSizeLimit {
    /// Builds the plugin from its config.
    pub fn new(c: &RequestSizeLimitConfig) -> Result<Self, ConfigError> {
        if c.max_header_bytes.is_some_and(|m| m.bytes() == 0) {
            return Err(ConfigError::at(
                "max_header_bytes",
                "must be more than 0 (every request has headers)",
            ));
        }
        let max_body = c.max_body.bytes();
        Ok(RequestSizeLimit {
            max_body,
            max_header_bytes: c.max_header_bytes.map(ByteSize::bytes),
            too_large: super::body_too_large(c.max_body),
            headers_too_large: PluginResponse::error(431, "request headers too large"),
        })
    }

    fn header_bytes(req: &RequestHeader) -> u64 {
        req.headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
            .sum()
    }
}

#[async_trait]
impl Plugin for RequestSizeLimit {
    fn name(&self) -> &str {
        "request-size-limit"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::REQUEST_BODY
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if let Some(max) = self.max_header_bytes {
            if Self::header_bytes(req) > max {
                return Ok(Flow::Respond(self.headers_too_large.clone()));
            }
        }
        let declared = content_length(req);
        if let Ok(Some(n)) = declared {
            if n > self.max_body {
                return Ok(Flow::Respond(self.too_large.clone()));
            }
        }
        // An HTTP/1 body with a declared length within the limit is read to exactly that
        // length; every other body (chunked, no length, HTTP/2 frames) is counted.
        let exact = matches!(declared, Ok(Some(_)))
            && !req.headers.contains_key(TRANSFER_ENCODING)
            && req.version < Version::HTTP_2;
        if !exact {
            ctx.set_state(Counted(0));
        }
        Ok(Flow::Continue)
    }

    async fn request_body_filter(
        &self,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let Some(Counted(seen)) = ctx.state_mut::<Counted>() else {
            return Ok(Flow::Continue);
        };
        *seen = seen.saturating_add(body.as_ref().map_or(0, |b| b.len() as u64));
        if *seen > self.max_body {
            return Ok(Flow::Respond(self.too_large.clone()));
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn status(flow: Flow) -> u16 {
        match flow {
            Flow::Continue => 0,
            Flow::Respond(r) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["status"], r.status);
                r.status
            }
        }
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_before_the_body() {
        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": "1KiB"})).unwrap();
        let mut req = request("POST", "/")
            .header("content-length", "1025")
            .build();
        let Flow::Respond(r) = h.request(&mut req).await.unwrap() else {
            panic!("expected 413")
        };
        assert_eq!(r.status, 413);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "request body larger than 1KiB");

        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": "1KiB"})).unwrap();
        let mut req = request("POST", "/")
            .header("content-length", "1024")
            .build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        // Within a declared length the body is not counted.
        let mut chunk = Some(Bytes::from(vec![b'a'; 1024]));
        assert_eq!(status(h.request_body(&mut chunk, true).await.unwrap()), 0);

        // With Transfer-Encoding as well, the length is not believed: the body is counted.
        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": "1KiB"})).unwrap();
        let mut req = request("POST", "/")
            .header("content-length", "10")
            .header("transfer-encoding", "chunked")
            .build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        let mut chunk = Some(Bytes::from(vec![b'a'; 1025]));
        assert_eq!(
            status(h.request_body(&mut chunk, false).await.unwrap()),
            413
        );
    }

    #[tokio::test]
    async fn bodies_of_unknown_length_are_counted() {
        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": 10})).unwrap();
        let mut req = request("POST", "/")
            .header("transfer-encoding", "chunked")
            .build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        let mut chunk = Some(Bytes::from_static(b"12345"));
        assert_eq!(status(h.request_body(&mut chunk, false).await.unwrap()), 0);
        let mut chunk = Some(Bytes::from_static(b"67890"));
        assert_eq!(status(h.request_body(&mut chunk, false).await.unwrap()), 0);
        let mut chunk = Some(Bytes::from_static(b"x"));
        assert_eq!(
            status(h.request_body(&mut chunk, false).await.unwrap()),
            413
        );

        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": 10})).unwrap();
        let mut req = request("POST", "/").build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        let mut chunk = Some(Bytes::from_static(b"1234567890"));
        assert_eq!(status(h.request_body(&mut chunk, false).await.unwrap()), 0);
        let mut end = None;
        assert_eq!(status(h.request_body(&mut end, true).await.unwrap()), 0);
    }

    #[tokio::test]
    async fn zero_means_no_body_at_all() {
        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": 0})).unwrap();
        let mut req = request("POST", "/").header("content-length", "1").build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 413);
        let mut h = PluginHarness::from_config(&factory(), json!({"max_body": 0})).unwrap();
        let mut req = request("GET", "/").build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        let mut end = None;
        assert_eq!(status(h.request_body(&mut end, true).await.unwrap()), 0);
    }

    #[tokio::test]
    async fn header_section_limit() {
        let cfg = json!({"max_body": "1MiB", "max_header_bytes": 64});
        let mut h = PluginHarness::from_config(&factory(), cfg.clone()).unwrap();
        let mut req = request("GET", "/").header("x-a", "short").build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 0);
        let mut h = PluginHarness::from_config(&factory(), cfg).unwrap();
        let mut req = request("GET", "/").header("x-a", &"v".repeat(80)).build();
        assert_eq!(status(h.request(&mut req).await.unwrap()), 431);
    }

    #[test]
    fn bad_configs() {
        let e = PluginHarness::from_config(&factory(), json!({}))
            .err()
            .unwrap();
        assert!(e.message.contains("missing field `max_body`"), "{e}");
        let e = PluginHarness::from_config(&factory(), json!({"max_body": "1 parsec"}))
            .err()
            .unwrap();
        assert_eq!(e.path, "max_body");
        let e = PluginHarness::from_config(
            &factory(),
            json!({"max_body": "1MiB", "max_header_bytes": 0}),
        )
        .err()
        .unwrap();
        assert_eq!(e.path, "max_header_bytes");
        let e = PluginHarness::from_config(&factory(), json!({"max_body": -1}))
            .err()
            .unwrap();
        assert!(e.message.contains("negative"), "{e}");
    }
}
