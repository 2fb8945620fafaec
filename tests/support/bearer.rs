//! Bearer-token helpers shared by the `jwt-auth` and `openid-connect` tests: JWS encoding,
//! a request with a token, and the refusal the gateway answers with.

use super::client;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The challenge of a refused bearer token.
pub const INVALID: &str = "Bearer realm=\"gatehouse\", error=\"invalid_token\"";

/// Base64url without padding, as JWS uses it.
pub fn b64url(data: &[u8]) -> String {
    openssl::base64::encode_block(data)
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string()
}

/// Seconds since the epoch, for `iat`, `nbf` and `exp`.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `BASE64URL(header).BASE64URL(claims)`: what a JWS signs.
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// What the gateway answered: status, `WWW-Authenticate`, and the JSON body (the echo
/// upstream's report of what it received, or the gateway's error).
pub struct Reply {
    pub status: u16,
    pub challenge: String,
    pub body: Value,
}

impl Reply {
    /// A header as the upstream received it.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name].as_str()
    }
}

/// `GET path` on the gateway at `port` with `headers`.
pub async fn send(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        challenge,
        body,
    }
}

/// `GET path` with `Authorization: Bearer token`.
pub async fn with_bearer(port: u16, path: &str, token: &str) -> Reply {
    send(port, path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Asserts a 401 with the `invalid_token` challenge and `error` in the body.
pub fn assert_refused(r: &Reply, error: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {:?}", r.body);
    assert_eq!(r.body, json!({"error": error, "status": 401}), "{what}");
    assert_eq!(r.challenge, INVALID, "{what}");
}
