//! A response that a plugin sends instead of proxying the request.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};

/// A complete response written by the engine when a plugin answers a request itself
/// (401, 403, 429, a mock, a redirect, a CORS preflight…).
///
/// The engine adds `Content-Length` and runs the chain's `response_filter` hooks on it, so
/// plugins such as `cors` or `request-id` decorate these responses too.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginResponse {
    /// The status code.
    pub status: u16,
    /// Headers, in order; a name may repeat.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (may be empty).
    pub body: Bytes,
}

impl PluginResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        PluginResponse {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The gateway's standard error response: `{"error": message, "status": status}` as
    /// `application/json`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message, "status": status });
        PluginResponse::new(status)
            .with_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .with_body(body.to_string())
    }

    /// Adds a header. Values that are not valid header values are skipped with a warning in
    /// the log, never a panic: use [`PluginResponse::try_with_header`] to handle that case.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a header from strings, failing if either is not valid in HTTP.
    pub fn try_with_header(mut self, name: &str, value: &str) -> Result<Self, String> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header `{name}`"))?;
        self.headers.push((n, v));
        Ok(self)
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}
