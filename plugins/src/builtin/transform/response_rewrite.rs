//! `response-rewrite`: change the status, headers and body of responses on their way to the
//! client.
//!
//! Status and header edits apply to every response, including the ones a plugin or the
//! gateway sent. Body edits (`body`, `json`) apply to upstream responses only: the engine
//! writes the body of a response it or a plugin made without passing it through
//! `response_body_filter`.
//!
//! When a body is edited its new length is not known when the headers leave, so
//! `Content-Length` is removed and the response is sent with chunked transfer encoding
//! (HTTP/1.1) or as data frames (HTTP/2).

use super::super::header_ops::{HeaderEdits, HeaderEditsConfig};
use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Phases, Plugin};
use crate::units::ByteSize;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderValue, Method, StatusCode, Version};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Config of `response-rewrite`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRewriteConfig {
    /// The status code to send instead of the upstream's (200-599).
    pub status: Option<u16>,
    /// Header edits on the response: `set`, `add` (maps) and `remove` (a list), applied in
    /// the order remove, set, add.
    #[serde(default)]
    pub headers: HeaderEditsConfig,
    /// A body that replaces the upstream's whole body.
    pub body: Option<String>,
    /// Edits of a JSON body.
    pub json: Option<JsonEditsConfig>,
    /// The largest body that `json` edits buffer (default `1MiB`); a larger response is sent
    /// unchanged.
    pub max_body: Option<ByteSize>,
    /// Rewrite only responses with one of these statuses (default: every response).
    pub statuses: Option<Vec<u16>>,
}

/// Config of `response-rewrite`'s `json` key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonEditsConfig {
    /// Dotted paths (`data.user.name`, `items.0.id`) and the JSON values to put there.
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Dotted paths to delete.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The default of `max_body`.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// One step of a dotted path: an object key, which is also an array index when it is a
/// number.
#[derive(Debug)]
struct Segment {
    key: String,
    index: Option<usize>,
}

type JsonPath = Vec<Segment>;

#[derive(Debug)]
struct JsonEdits {
    remove: Vec<JsonPath>,
    set: Vec<(JsonPath, Value)>,
}

enum BodyEdit {
    None,
    Replace(Bytes),
    Json(JsonEdits),
}

/// The `response-rewrite` plugin.
pub struct ResponseRewrite {
    status: Option<StatusCode>,
    headers: HeaderEdits,
    body: BodyEdit,
    max_body: usize,
    statuses: Option<Box<[u16]>>,
}

/// Priority of `response-rewrite`: with the other transforms, after `headers` on the way
/// down, so its edits have the last word.
pub const PRIORITY: i32 = 899;

/// The factory for `response-rewrite`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "response-rewrite",
        PRIORITY,
        |c: ResponseRewriteConfig, _env| ResponseRewrite::new(c),
    )
}

/// Where a request is, for the body edits.
#[derive(Clone, Debug)]
enum Stage {
    /// The request went upstream; what comes back is the upstream's response.
    Proxied { head: bool },
    /// Dropping the upstream's body; the replacement goes out at its end.
    Replace,
    /// Collecting a JSON body.
    Buffer(BytesMut),
    /// The body goes out as it is.
    Pass,
}

#[derive(Clone, Debug)]
struct State(Stage);

fn parse_path(path: &str, at: &str) -> Result<JsonPath, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::at(at, "the path is empty"));
    }
    path.split('.')
        .map(|s| {
            if s.is_empty() {
                Err(ConfigError::at(
                    at,
                    format!("`{path}` has an empty segment; write keys separated by single dots"),
                ))
            } else {
                Ok(Segment {
                    key: s.to_string(),
                    index: s.parse().ok(),
                })
            }
        })
        .collect()
}

/// Headers that frame the message: the gateway sets them, a config may not.
fn check_framing(c: &HeaderEditsConfig) -> Result<(), ConfigError> {
    let framing = |n: &str| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    };
    let named = c
        .set
        .keys()
        .map(|n| ("set", n))
        .chain(c.add.keys().map(|n| ("add", n)))
        .chain(c.remove.iter().map(|n| ("remove", n)));
    for (key, n) in named {
        if framing(n) {
            return Err(ConfigError::at(
                format!("headers.{key}"),
                format!("`{n}` frames the response and is managed by the gateway"),
            ));
        }
    }
    Ok(())
}

impl ResponseRewrite {
    /// Builds the plugin from its config.
    pub fn new(c: ResponseRewriteConfig) -> Result<Self, ConfigError> {
        let status = c
            .status
            .map(|s| {
                if (200..=599).contains(&s) {
                    StatusCode::from_u16(s).map_err(|_| ConfigError::at("status", "invalid"))
                } else {
                    Err(ConfigError::at(
                        "status",
                        format!("{s} is not a final HTTP status code (200-599)"),
                    ))
                }
            })
            .transpose()?;
        check_framing(&c.headers)?;
        let headers = HeaderEdits::compile(&c.headers, "headers")?;
        let body = match (c.body, c.json) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::whole("set either `body` or `json`, not both"))
            }
            (Some(b), None) => BodyEdit::Replace(Bytes::from(b)),
            (None, Some(j)) => {
                if j.set.is_empty() && j.remove.is_empty() {
                    return Err(ConfigError::at("json", "needs `set` or `remove`"));
                }
                let remove = j
                    .remove
                    .iter()
                    .enumerate()
                    .map(|(i, p)| parse_path(p, &format!("json.remove[{i}]")))
                    .collect::<Result<_, _>>()?;
                let set = j
                    .set
                    .into_iter()
                    .map(|(p, v)| Ok((parse_path(&p, &format!("json.set.{p}"))?, v)))
                    .collect::<Result<_, ConfigError>>()?;
                BodyEdit::Json(JsonEdits { remove, set })
            }
            (None, None) => BodyEdit::None,
        };
        if matches!(status.map(|s| s.as_u16()), Some(204 | 304)) && !matches!(body, BodyEdit::None)
        {
            return Err(ConfigError::at(
                "status",
                "a 204 or 304 response has no body: drop `body`/`json` or pick another status",
            ));
        }
        let max_body = match (c.max_body, &body) {
            (Some(_), BodyEdit::None | BodyEdit::Replace(_)) => {
                return Err(ConfigError::at("max_body", "only applies to `json` edits"))
            }
            (Some(ByteSize(0)), _) => {
                return Err(ConfigError::at("max_body", "must be greater than 0"))
            }
            (Some(ByteSize(n)), _) => n,
            (None, _) => DEFAULT_MAX_BODY,
        };
        let statuses = match c.statuses {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(ConfigError::at(
                    "statuses",
                    "is empty; omit it to rewrite every response",
                ))
            }
            Some(list) => {
                if let Some((i, s)) = list
                    .iter()
                    .enumerate()
                    .find(|(_, s)| !(100..=599).contains(*s))
                {
                    return Err(ConfigError::at(
                        format!("statuses[{i}]"),
                        format!("{s} is not an HTTP status code (100-599)"),
                    ));
                }
                Some(list.into_boxed_slice())
            }
        };
        if status.is_none()
            && matches!(body, BodyEdit::None)
            && c.headers.set.is_empty()
            && c.headers.add.is_empty()
            && c.headers.remove.is_empty()
        {
            return Err(ConfigError::whole(
                "nothing to rewrite: set `status`, `headers`, `body` or `json`",
            ));
        }
        Ok(ResponseRewrite {
            status,
            headers,
            body,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            statuses,
        })
    }

    fn edits_body(&self) -> bool {
        !matches!(self.body, BodyEdit::None)
    }

    /// Whether the response's body can be edited, and how; `None` leaves it alone.
    fn body_stage(&self, resp: &ResponseHeader, head: bool) -> Option<Stage> {
        let status = resp.status.as_u16();
        if head || status < 200 || status == 204 || status == 304 {
            return None;
        }
        let length = match resp.headers.get(CONTENT_LENGTH) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                // Nothing comes after an empty body's headers: there is no body to edit.
                Some(0) => return None,
                Some(n) => Some(n),
                None => return None,
            },
        };
        if let Some(te) = resp.headers.get(TRANSFER_ENCODING) {
            if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
                log::debug!("response-rewrite: body left alone: transfer-encoding {te:?}");
                return None;
            }
        }
        match &self.body {
            BodyEdit::None => None,
            BodyEdit::Replace(_) => Some(Stage::Replace),
            BodyEdit::Json(_) => {
                if !is_json(resp) {
                    log::debug!("response-rewrite: body left alone: not JSON");
                    return None;
                }
                if let Some(enc) = resp.headers.get(CONTENT_ENCODING) {
                    if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
                        log::debug!("response-rewrite: body left alone: encoded as {enc:?}");
                        return None;
                    }
                }
                let cap = match length {
                    Some(n) if n > self.max_body as u64 => {
                        log::debug!(
                            "response-rewrite: body left alone: {n} bytes exceed max_body ({})",
                            self.max_body
                        );
                        return None;
                    }
                    Some(n) => n as usize,
                    None => 8 * 1024,
                };
                Some(Stage::Buffer(BytesMut::with_capacity(
                    cap.min(self.max_body),
                )))
            }
        }
    }

    fn edit_json(&self, edits: &JsonEdits, data: Bytes) -> Bytes {
        let mut doc: Value = match serde_json::from_slice(&data) {
            Ok(v) => v,
            Err(e) => {
                log::debug!("response-rewrite: body left alone: not valid JSON ({e})");
                return data;
            }
        };
        for path in &edits.remove {
            remove_at(&mut doc, path);
        }
        for (path, value) in &edits.set {
            if !set_at(&mut doc, path, value) {
                log::debug!("response-rewrite: cannot set a JSON path: a parent is not an object");
            }
        }
        match serde_json::to_vec(&doc) {
            Ok(out) => Bytes::from(out),
            Err(e) => {
                log::debug!("response-rewrite: body left alone: {e}");
                data
            }
        }
    }
}

fn is_json(resp: &ResponseHeader) -> bool {
    let Some(ct) = resp.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    let Some((_, sub)) = mime.split_once('/') else {
        return false;
    };
    sub.eq_ignore_ascii_case("json")
        || (sub.len() > 5
            && sub.is_char_boundary(sub.len() - 5)
            && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// The child of `v` at `seg`, if there is one.
fn child_mut<'v>(v: &'v mut Value, seg: &Segment) -> Option<&'v mut Value> {
    match v {
        Value::Object(m) => m.get_mut(&seg.key),
        Value::Array(a) => seg.index.and_then(|i| a.get_mut(i)),
        _ => None,
    }
}

fn remove_at(doc: &mut Value, path: &[Segment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = doc;
    for seg in parents {
        match child_mut(cur, seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    match cur {
        Value::Object(m) => {
            m.remove(&last.key);
        }
        Value::Array(a) => {
            if let Some(i) = last.index.filter(|i| *i < a.len()) {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Sets `value` at `path`, creating missing objects on the way. False when a step meets a
/// value that is neither an object nor an array holding that index.
fn set_at(doc: &mut Value, path: &[Segment], value: &Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = doc;
    for seg in parents {
        cur = match cur {
            Value::Object(m) => m
                .entry(seg.key.as_str())
                .or_insert_with(|| Value::Object(Default::default())),
            Value::Array(a) => match seg.index.and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.key.clone(), value.clone());
            true
        }
        Value::Array(a) => match last.index.and_then(|i| a.get_mut(i)) {
            Some(slot) => {
                *slot = value.clone();
                true
            }
            None => false,
        },
        _ => false,
    }
}

#[async_trait]
impl Plugin for ResponseRewrite {
    fn name(&self) -> &str {
        "response-rewrite"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        if self.edits_body() {
            Phases::UPSTREAM_REQUEST | Phases::RESPONSE | Phases::RESPONSE_BODY
        } else {
            Phases::RESPONSE
        }
    }

    async fn upstream_request_filter(
        &self,
        upstream_req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        // Only requests that go upstream get here: the response that follows is the
        // upstream's, and its body passes through `response_body_filter`.
        ctx.set_state(State(Stage::Proxied {
            head: upstream_req.method == Method::HEAD,
        }));
        Ok(())
    }

    async fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let proxied = ctx.take_state::<State>();
        if let Some(list) = &self.statuses {
            if !list.contains(&resp.status.as_u16()) {
                return Ok(());
            }
        }
        if let Some(State(Stage::Proxied { head })) = proxied {
            if let Some(stage) = self.body_stage(resp, head) {
                resp.remove_header(&CONTENT_LENGTH);
                if matches!(stage, Stage::Replace) {
                    resp.remove_header(&CONTENT_ENCODING);
                }
                // Chunked needs HTTP/1.1; on HTTP/2 the engine drops this header and frames
                // the body itself.
                resp.set_version(Version::HTTP_11);
                resp.insert_header(TRANSFER_ENCODING, HeaderValue::from_static("chunked"))?;
                ctx.set_state(State(stage));
            }
        }
        if let Some(s) = self.status {
            resp.set_status(s)?;
        }
        self.headers.apply_response(resp)
    }

    fn response_body_filter(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let Some(State(stage)) = ctx.state_mut::<State>() else {
            return Ok(());
        };
        match stage {
            Stage::Replace => {
                *body = match &self.body {
                    BodyEdit::Replace(b) if end_of_stream => Some(b.clone()),
                    _ => None,
                };
            }
            Stage::Buffer(buf) => {
                if let Some(chunk) = body.take() {
                    if buf.len() + chunk.len() > self.max_body {
                        log::debug!(
                            "response-rewrite: body left alone: more than max_body ({}) bytes",
                            self.max_body
                        );
                        let mut all = std::mem::take(buf);
                        all.extend_from_slice(&chunk);
                        *body = Some(all.freeze());
                        *stage = Stage::Pass;
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk);
                }
                if end_of_stream {
                    let data = std::mem::take(buf).freeze();
                    *body = Some(match &self.body {
                        BodyEdit::Json(edits) => self.edit_json(edits, data),
                        _ => data,
                    });
                    *stage = Stage::Pass;
                }
            }
            Stage::Pass | Stage::Proxied { .. } => {}
        }
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

    fn refused(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), config)
            .err()
            .expect("config must be refused")
    }

    fn upstream_resp(status: u16, ct: &str, len: Option<usize>) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        r.insert_header("content-type", ct).unwrap();
        if let Some(n) = len {
            r.insert_header("content-length", n).unwrap();
        }
        r
    }

    /// Runs the upstream phases: request, headers, then `chunks` of body.
    async fn proxied(h: &mut PluginHarness, resp: &mut ResponseHeader, chunks: &[&str]) -> Vec<u8> {
        h.upstream_request(&mut request("GET", "/").build())
            .await
            .unwrap();
        h.response(resp).await.unwrap();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut b = Some(Bytes::copy_from_slice(c.as_bytes()));
            h.response_body(&mut b, i + 1 == chunks.len()).unwrap();
            if let Some(b) = b {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    #[tokio::test]
    async fn status_and_headers() {
        let mut h = harness(serde_json::json!({
            "status": 203,
            "headers": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["server"]}
        }));
        assert_eq!(h.plugin.phases(), Phases::RESPONSE);
        let mut resp = upstream_resp(200, "text/plain", Some(5));
        resp.insert_header("server", "up").unwrap();
        h.response(&mut resp).await.unwrap();
        assert_eq!(resp.status.as_u16(), 203);
        assert_eq!(resp.headers.get("x-a").unwrap(), "1");
        assert_eq!(resp.headers.get("x-b").unwrap(), "2");
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers.get("content-length").unwrap(), "5");
    }

    #[tokio::test]
    async fn statuses_filter() {
        let mut h = harness(serde_json::json!({"status": 200, "statuses": [404, 410]}));
        let mut ok = upstream_resp(500, "text/plain", None);
        h.response(&mut ok).await.unwrap();
        assert_eq!(ok.status.as_u16(), 500);
        let mut gone = upstream_resp(410, "text/plain", None);
        h.response(&mut gone).await.unwrap();
        assert_eq!(gone.status.as_u16(), 200);
    }

    #[tokio::test]
    async fn replaces_the_body_and_reframes() {
        let mut h = harness(serde_json::json!({"body": "new body"}));
        let mut resp = upstream_resp(200, "text/plain", Some(9));
        resp.insert_header("content-encoding", "gzip").unwrap();
        let out = proxied(&mut h, &mut resp, &["old ", "body"]).await;
        assert_eq!(out, b"new body");
        assert!(resp.headers.get("content-length").is_none());
        assert!(resp.headers.get("content-encoding").is_none());
        assert_eq!(resp.headers.get("transfer-encoding").unwrap(), "chunked");
    }

    #[tokio::test]
    async fn body_edits_skip_plugin_responses() {
        // No upstream_request_filter: the response was made by a plugin or the gateway.
        let mut h = harness(serde_json::json!({"body": "new", "headers": {"set": {"x": "1"}}}));
        let mut resp = upstream_resp(401, "application/json", Some(30));
        h.response(&mut resp).await.unwrap();
        assert_eq!(resp.headers.get("content-length").unwrap(), "30");
        assert!(resp.headers.get("transfer-encoding").is_none());
        assert_eq!(resp.headers.get("x").unwrap(), "1");
    }

    #[tokio::test]
    async fn bodiless_responses_keep_their_framing() {
        let mut h = harness(serde_json::json!({"body": "new"}));
        for (status, len) in [(204, None), (304, None), (200, Some(0))] {
            let mut resp = upstream_resp(status, "text/plain", len);
            proxied(&mut h, &mut resp, &[]).await;
            assert!(resp.headers.get("transfer-encoding").is_none(), "{status}");
        }
        let mut head = upstream_resp(200, "text/plain", Some(10));
        h.upstream_request(&mut request("HEAD", "/").build())
            .await
            .unwrap();
        h.response(&mut head).await.unwrap();
        assert_eq!(head.headers.get("content-length").unwrap(), "10");
    }

    #[tokio::test]
    async fn json_set_and_remove() {
        let mut h = harness(serde_json::json!({
            "json": {
                "set": {"a.b": 1, "items.1.id": "x", "new.deep.key": [true], "top": null},
                "remove": ["secret", "items.0", "nested.gone", "missing.path"]
            }
        }));
        let body = r#"{"a":{"b":0,"c":2},"items":[{"id":1},{"id":2},{"id":3}],"secret":"s","nested":{"gone":1,"kept":2}}"#;
        let (first, second) = body.split_at(20);
        let mut resp = upstream_resp(200, "application/json; charset=utf-8", Some(body.len()));
        let out = proxied(&mut h, &mut resp, &[first, second]).await;
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "a": {"b": 1, "c": 2},
                "items": [{"id": 2}, {"id": "x"}],
                "nested": {"kept": 2},
                "new": {"deep": {"key": [true]}},
                "top": null
            })
        );
        assert!(resp.headers.get("content-length").is_none());
        assert_eq!(resp.headers.get("transfer-encoding").unwrap(), "chunked");
    }

    #[tokio::test]
    async fn json_set_through_a_scalar_is_skipped() {
        let mut h = harness(serde_json::json!({"json": {"set": {"a.b": 1, "c": 2}}}));
        let mut resp = upstream_resp(200, "application/problem+json", None);
        let out = proxied(&mut h, &mut resp, &[r#"{"a":"text"}"#]).await;
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"a": "text", "c": 2}));
    }

    #[tokio::test]
    async fn non_json_and_invalid_json_pass_unchanged() {
        let mut h = harness(serde_json::json!({"json": {"set": {"a": 1}}}));
        let mut text = upstream_resp(200, "text/plain", Some(5));
        let out = proxied(&mut h, &mut text, &["hello"]).await;
        assert_eq!(out, b"hello");
        assert_eq!(text.headers.get("content-length").unwrap(), "5");

        let mut gz = upstream_resp(200, "application/json", Some(4));
        gz.insert_header("content-encoding", "gzip").unwrap();
        let out = proxied(&mut h, &mut gz, &["gz.."]).await;
        assert_eq!(out, b"gz..");
        assert_eq!(gz.headers.get("content-length").unwrap(), "4");

        let mut broken = upstream_resp(200, "application/json", None);
        let out = proxied(&mut h, &mut broken, &["{\"a\":", "oops"]).await;
        assert_eq!(out, b"{\"a\":oops");
    }

    #[tokio::test]
    async fn json_over_max_body_passes_unchanged() {
        let mut h = harness(serde_json::json!({"json": {"set": {"a": 1}}, "max_body": 8}));
        // Known length: decided at the headers, Content-Length kept.
        let mut known = upstream_resp(200, "application/json", Some(12));
        let out = proxied(&mut h, &mut known, &[r#"{"b":"long"}"#]).await;
        assert_eq!(out, br#"{"b":"long"}"#);
        assert_eq!(known.headers.get("content-length").unwrap(), "12");
        // Unknown length: what was held back goes out with the chunk that crossed the limit.
        let mut chunked = upstream_resp(200, "application/json", None);
        let out = proxied(&mut h, &mut chunked, &[r#"{"b":"#, r#""long"#, r#""}"#]).await;
        assert_eq!(out, br#"{"b":"long"}"#);
    }

    #[test]
    fn bad_configs_are_refused() {
        let e = refused(serde_json::json!({}));
        assert!(e.message.contains("nothing to rewrite"), "{e}");
        let e = refused(serde_json::json!({"status": 99}));
        assert_eq!(e.path, "status");
        let e = refused(serde_json::json!({"status": 101}));
        assert!(e.message.contains("200-599"), "{e}");
        let e = refused(serde_json::json!({"status": 204, "body": "a"}));
        assert_eq!(e.path, "status");
        assert!(e.message.contains("no body"), "{e}");
        let e = refused(serde_json::json!({"body": "a", "json": {"set": {"a": 1}}}));
        assert!(e.message.contains("not both"), "{e}");
        let e = refused(serde_json::json!({"json": {}}));
        assert_eq!(e.path, "json");
        let e = refused(serde_json::json!({"json": {"remove": ["a..b"]}}));
        assert_eq!(e.path, "json.remove[0]");
        let e = refused(serde_json::json!({"json": {"set": {"": 1}}}));
        assert_eq!(e.path, "json.set.");
        let e = refused(serde_json::json!({"status": 200, "max_body": "1KiB"}));
        assert_eq!(e.path, "max_body");
        let e = refused(serde_json::json!({"json": {"set": {"a": 1}}, "max_body": 0}));
        assert!(e.message.contains("greater than 0"), "{e}");
        let e = refused(serde_json::json!({"status": 200, "statuses": []}));
        assert_eq!(e.path, "statuses");
        let e = refused(serde_json::json!({"status": 200, "statuses": [200, 1000]}));
        assert_eq!(e.path, "statuses[1]");
        let e = refused(serde_json::json!({"headers": {"set": {"Content-Length": "1"}}}));
        assert_eq!(e.path, "headers.set");
        let e = refused(serde_json::json!({"headers": {"remove": ["transfer-encoding"]}}));
        assert_eq!(e.path, "headers.remove");
        let e = refused(serde_json::json!({"headers": {"set": {"x": "a\nb"}}}));
        assert_eq!(e.path, "headers.set.x");
        let e = refused(serde_json::json!({"status": 200, "bodyy": "x"}));
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn json_content_types() {
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/vnd.api+json", true),
            ("text/json", true),
            ("text/plain", false),
            ("application/jsonp", false),
            ("json", false),
        ] {
            let r = upstream_resp(200, ct, None);
            assert_eq!(is_json(&r), json, "{ct}");
        }
    }
}
