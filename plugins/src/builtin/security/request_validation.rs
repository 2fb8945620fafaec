//! `request-validation`: check JSON request bodies against a JSON Schema before the upstream
//! sees them.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::ByteSize;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::Method;
use jsonschema::Validator;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;

/// Config of `request-validation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestValidationConfig {
    /// The JSON Schema (drafts 4, 6, 7, 2019-09 and 2020-12; 2020-12 unless `$schema` says
    /// otherwise) that request bodies must satisfy, written inline.
    pub body_schema: serde_json::Value,
    /// The largest body accepted (it is held in memory to be validated). Default `1MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}

/// The `request-validation` plugin.
pub struct RequestValidation {
    schema: Validator,
    max_body: usize,
    too_large: PluginResponse,
}

/// Priority of `request-validation`. Bodies are checked in the body phase, which comes after
/// every plugin's `request_filter`: unauthenticated or rate-limited requests are refused
/// before their body is read.
pub const PRIORITY: i32 = 2800;

/// The longest schema error message sent to a client.
const MAX_MESSAGE: usize = 200;

/// The factory for `request-validation`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "request-validation",
        PRIORITY,
        |c: RequestValidationConfig, _env| RequestValidation::new(c),
    )
}

/// The body gathered so far for a request being validated.
#[derive(Clone)]
struct Gathered(BytesMut);

impl RequestValidation {
    /// Builds the plugin from its config.
    pub fn new(c: RequestValidationConfig) -> Result<Self, ConfigError> {
        if !(c.body_schema.is_object() || c.body_schema.is_boolean()) {
            return Err(ConfigError::at(
                "body_schema",
                "a JSON Schema is an object (or `true`/`false`)",
            ));
        }
        let schema = jsonschema::validator_for(&c.body_schema).map_err(|e| {
            let at = e.instance_path().as_str();
            let path = if at.is_empty() {
                "body_schema".to_string()
            } else {
                format!("body_schema{}", at.replace('/', "."))
            };
            ConfigError::at(path, format!("not a valid JSON Schema: {e}"))
        })?;
        let max_body = usize::try_from(c.max_body.bytes())
            .map_err(|_| ConfigError::at("max_body", "too large for this machine"))?;
        Ok(RequestValidation {
            schema,
            max_body,
            too_large: super::body_too_large(c.max_body),
        })
    }

    /// Checks a complete body; `Err` is the 400 to answer with.
    pub fn check(&self, body: &[u8]) -> Result<(), PluginResponse> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(PluginResponse::error(400, "request body is required"));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| PluginResponse::error(400, "request body is not valid JSON"))?;
        let Err(e) = self.schema.validate(&value) else {
            return Ok(());
        };
        let mut reason = e.masked().to_string();
        if reason.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let at = e.instance_path().as_str();
        let message = if at.is_empty() {
            format!("request body invalid: {reason}")
        } else {
            format!("request body invalid at {at}: {reason}")
        };
        Err(PluginResponse::error(400, &message))
    }
}

#[async_trait]
impl Plugin for RequestValidation {
    fn name(&self) -> &str {
        "request-validation"
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
        if matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(Flow::Continue);
        }
        let declared = req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Ok(Flow::Respond(self.too_large.clone()));
        }
        let capacity = declared.map_or(0, |n| n as usize);
        ctx.set_state(Gathered(BytesMut::with_capacity(capacity)));
        Ok(Flow::Continue)
    }

    async fn request_body_filter(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let Some(Gathered(buf)) = ctx.state_mut::<Gathered>() else {
            return Ok(Flow::Continue);
        };
        if let Some(chunk) = body.as_ref() {
            if buf.len() + chunk.len() > self.max_body {
                return Ok(Flow::Respond(self.too_large.clone()));
            }
            buf.extend_from_slice(chunk);
        }
        if !end_of_stream {
            // Hold the chunk back. An empty chunk is skipped by the proxy; `None` would tell
            // the upstream that the body has ended.
            *body = Some(Bytes::new());
            return Ok(Flow::Continue);
        }
        let Some(Gathered(buf)) = ctx.take_state::<Gathered>() else {
            return Ok(Flow::Continue);
        };
        if let Err(resp) = self.check(&buf) {
            return Ok(Flow::Respond(resp));
        }
        *body = Some(buf.freeze());
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({
            "body_schema": {
                "type": "object",
                "required": ["name", "items"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "items": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer", "minimum": 1}}}}
                }
            },
            "max_body": 64
        })
    }

    fn error_of(flow: Flow) -> (u16, String) {
        match flow {
            Flow::Respond(r) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                (r.status, v["error"].as_str().unwrap().to_string())
            }
            Flow::Continue => (0, String::new()),
        }
    }

    /// Sends `chunks` through a fresh instance; the final call has `end_of_stream`.
    async fn run(chunks: &[&[u8]]) -> (u16, String, Option<Bytes>) {
        let mut h = PluginHarness::from_config(&factory(), schema()).unwrap();
        let mut req = request("POST", "/orders").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        for c in chunks {
            let mut b = Some(Bytes::copy_from_slice(c));
            let (s, m) = error_of(h.request_body(&mut b, false).await.unwrap());
            if s != 0 {
                return (s, m, None);
            }
            assert_eq!(b.as_deref(), Some(&b""[..]), "chunks are held back");
        }
        let mut end = None;
        let (s, m) = error_of(h.request_body(&mut end, true).await.unwrap());
        (s, m, end)
    }

    #[tokio::test]
    async fn valid_bodies_are_forwarded_whole() {
        let (s, _, body) = run(&[b"{\"name\":\"a\",", b"\"items\":[{\"qty\":2}]}"]).await;
        assert_eq!(s, 0);
        assert_eq!(
            body.unwrap(),
            &b"{\"name\":\"a\",\"items\":[{\"qty\":2}]}"[..]
        );
    }

    #[tokio::test]
    async fn invalid_bodies_name_the_failing_path() {
        let (s, m, _) = run(&[b"{\"name\":\"a\",\"items\":[{\"qty\":0}]}"]).await;
        assert_eq!(s, 400);
        assert!(
            m.starts_with("request body invalid at /items/0/qty: "),
            "{m}"
        );
        let (s, m, _) = run(&[b"{\"name\":\"a\"}"]).await;
        assert_eq!(
            (s, m.as_str()),
            (
                400,
                "request body invalid: \"items\" is a required property"
            )
        );
        let (s, m, _) = run(&[b"{\"name\":5,\"items\":[]}"]).await;
        assert_eq!(s, 400);
        // The client's value is not echoed.
        assert_eq!(
            m,
            "request body invalid at /name: value is not of type \"string\""
        );
        let (s, m, _) = run(&[b"{nope"]).await;
        assert_eq!((s, m.as_str()), (400, "request body is not valid JSON"));
        let (s, m, _) = run(&[]).await;
        assert_eq!((s, m.as_str()), (400, "request body is required"));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let big = format!("{{\"name\":\"{}\",\"items\":[]}}", "x".repeat(60));
        let (s, m, _) = run(&[&big.as_bytes()[..40], &big.as_bytes()[40..]]).await;
        assert_eq!((s, m.as_str()), (413, "request body larger than 64 bytes"));

        let mut h = PluginHarness::from_config(&factory(), schema()).unwrap();
        let mut req = request("PUT", "/").header("content-length", "65").build();
        assert_eq!(error_of(h.request(&mut req).await.unwrap()).0, 413);
    }

    #[tokio::test]
    async fn safe_methods_are_not_validated() {
        let mut h = PluginHarness::from_config(&factory(), schema()).unwrap();
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut end = None;
        assert!(matches!(
            h.request_body(&mut end, true).await.unwrap(),
            Flow::Continue
        ));
        assert!(end.is_none());
    }

    #[test]
    fn bad_configs() {
        for (cfg, path, msg) in [
            (json!({}), "", "missing field `body_schema`"),
            (
                json!({"body_schema": "object"}),
                "body_schema",
                "is an object",
            ),
            (
                json!({"body_schema": {"type": "nonsense"}}),
                "body_schema.type",
                "not a valid JSON Schema",
            ),
            (
                json!({"body_schema": {"properties": {"a": {"minimum": "x"}}}}),
                "body_schema.properties.a.minimum",
                "not a valid JSON Schema",
            ),
            (
                json!({"body_schema": {}, "max_body": "big"}),
                "max_body",
                "invalid size",
            ),
        ] {
            let e = PluginHarness::from_config(&factory(), cfg.clone())
                .err()
                .unwrap();
            assert_eq!(e.path, path, "{cfg}: {e}");
            assert!(e.message.contains(msg), "{cfg}: {e}");
        }
    }
}
