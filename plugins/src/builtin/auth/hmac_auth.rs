//! `hmac-auth`: authenticate a consumer by an HMAC signature over parts of the request, with
//! the date checked against a clock skew and, optionally, the body checked against a signed
//! digest.
//!
//! The request carries
//! `Authorization: Signature keyId="...",algorithm="hmac-sha256",headers="@request-target date",signature="<base64>"`.
//! The signature is the HMAC, under the consumer's secret, of the signing string: one line
//! per name in `headers`, in that order, joined by `\n` (no trailing newline):
//!
//! ```text
//! @request-target: get /orders?id=7      ← the method in lower case, a space, path and query as sent
//! date: Tue, 07 Jun 2022 20:51:35 GMT    ← a header: its name in lower case, `: `, its values joined by `, `
//! ```

use super::credentials::{
    already_authenticated, bad_credential, challenge, consumer_credentials, strip_scheme,
    unauthorized, REALM,
};
use crate::context::{Consumer, RequestContext};
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::{ByteSize, Duration};
use async_trait::async_trait;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use http::header::{HeaderName, AUTHORIZATION, CONTENT_LENGTH};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// The HMAC algorithms a signature may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HmacAlgorithm {
    /// `hmac-sha1`.
    HmacSha1,
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha384`.
    HmacSha384,
    /// `hmac-sha512`.
    HmacSha512,
}

impl HmacAlgorithm {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "hmac-sha1" => HmacAlgorithm::HmacSha1,
            "hmac-sha256" => HmacAlgorithm::HmacSha256,
            "hmac-sha384" => HmacAlgorithm::HmacSha384,
            "hmac-sha512" => HmacAlgorithm::HmacSha512,
            _ => return None,
        })
    }

    /// Whether `signature` is the HMAC of `message` under `secret` (compared in constant time).
    fn verify(self, secret: &[u8], message: &[u8], signature: &[u8]) -> bool {
        fn check<M: Mac + hmac::digest::KeyInit>(
            secret: &[u8],
            message: &[u8],
            sig: &[u8],
        ) -> bool {
            let Ok(mut mac) = <M as Mac>::new_from_slice(secret) else {
                return false;
            };
            mac.update(message);
            mac.verify_slice(sig).is_ok()
        }
        match self {
            HmacAlgorithm::HmacSha1 => check::<Hmac<sha1::Sha1>>(secret, message, signature),
            HmacAlgorithm::HmacSha256 => check::<Hmac<sha2::Sha256>>(secret, message, signature),
            HmacAlgorithm::HmacSha384 => check::<Hmac<sha2::Sha384>>(secret, message, signature),
            HmacAlgorithm::HmacSha512 => check::<Hmac<sha2::Sha512>>(secret, message, signature),
        }
    }
}

/// Config of `hmac-auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthConfig {
    /// Algorithms a signature may use (default `[hmac-sha256, hmac-sha512]`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<HmacAlgorithm>,
    /// How far the signed `Date` (or `X-Date`) may be from the gateway's clock (default `300s`).
    #[serde(default = "default_clock_skew")]
    pub clock_skew: Duration,
    /// Names the signature must cover (default `["@request-target", "date"]`).
    #[serde(default = "default_enforce_headers")]
    pub enforce_headers: Vec<String>,
    /// Check the body against a signed `Content-Digest` or `Digest` header (default false).
    /// The body is held back until it has been checked.
    #[serde(default)]
    pub validate_request_body: bool,
    /// The largest body held back for `validate_request_body` (default `1MiB`); larger
    /// bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Remove the `Authorization` header from the request sent upstream (default true).
    #[serde(default = "default_true")]
    pub hide_credentials: bool,
    /// When the request carries no signature, continue without a consumer instead of
    /// answering 401. A wrong signature is still refused.
    #[serde(default)]
    pub optional: bool,
}

fn default_algorithms() -> Vec<HmacAlgorithm> {
    vec![HmacAlgorithm::HmacSha256, HmacAlgorithm::HmacSha512]
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(300)
}

fn default_enforce_headers() -> Vec<String> {
    vec!["@request-target".into(), "date".into()]
}

fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_true() -> bool {
    true
}

/// A consumer's `hmac-auth` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacCredential {
    key_id: String,
    secret: String,
}

/// The body digest algorithms understood in `Content-Digest` / `Digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    fn digest(self, body: &[u8]) -> Vec<u8> {
        match self {
            DigestAlgorithm::Sha256 => sha2::Sha256::digest(body).to_vec(),
            DigestAlgorithm::Sha512 => sha2::Sha512::digest(body).to_vec(),
        }
    }
}

/// The body check a request still owes, carried from `request_filter` to
/// `request_body_filter`.
#[derive(Debug, Clone)]
enum BodyCheck {
    /// No digest was sent: the body must be empty.
    Empty,
    /// The body, held back until complete, must have this digest.
    Digest {
        algorithm: DigestAlgorithm,
        expected: Vec<u8>,
        body: BytesMut,
    },
}

/// The `hmac-auth` plugin.
pub struct HmacAuth {
    algorithms: Vec<HmacAlgorithm>,
    clock_skew: std::time::Duration,
    enforce_headers: Vec<String>,
    validate_request_body: bool,
    max_body: u64,
    hide_credentials: bool,
    optional: bool,
    key_ids: HashMap<String, usize>,
    consumers: Vec<(Arc<Consumer>, Vec<u8>)>,
    missing: PluginResponse,
    invalid: PluginResponse,
    not_allowed: PluginResponse,
    uncovered: PluginResponse,
    bad_date: PluginResponse,
    missing_digest: PluginResponse,
    bad_digest: PluginResponse,
    too_large: PluginResponse,
}

/// Priority of `hmac-auth`.
pub const PRIORITY: i32 = 2530;

/// The factory for `hmac-auth`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("hmac-auth", PRIORITY, HmacAuth::new)
}

fn is_request_target(name: &str) -> bool {
    name.eq_ignore_ascii_case("@request-target") || name.eq_ignore_ascii_case("(request-target)")
}

/// The parameters of a `Signature` authorization.
struct SignatureParams<'a> {
    key_id: &'a str,
    algorithm: &'a str,
    headers: &'a str,
    signature: &'a str,
}

/// Parses `keyId="..",algorithm="..",headers="..",signature=".."` (any order, unknown
/// parameters ignored). `None` when malformed, when a parameter repeats, or when `keyId`,
/// `algorithm` or `signature` is missing; `headers` defaults to `date`.
fn parse_params(s: &str) -> Option<SignatureParams<'_>> {
    let (mut key_id, mut algorithm, mut headers, mut signature) = (None, None, None, None);
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let (value, after) = after.split_once('"')?;
        let slot = match name.trim() {
            "keyId" => &mut key_id,
            "algorithm" => &mut algorithm,
            "headers" => &mut headers,
            "signature" => &mut signature,
            _ => {
                rest = after.trim_start().trim_start_matches(',').trim_start();
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return None;
        }
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(SignatureParams {
        key_id: key_id?,
        algorithm: algorithm?,
        headers: headers.unwrap_or("date"),
        signature: signature?,
    })
}

/// The signing string for the names in `headers`; `None` when a named header is absent.
fn signing_string(req: &RequestHeader, headers: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    for (i, name) in headers.split_ascii_whitespace().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.extend_from_slice(b": ");
        if is_request_target(name) {
            out.extend(req.method.as_str().bytes().map(|b| b.to_ascii_lowercase()));
            out.push(b' ');
            let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            out.extend_from_slice(target.as_bytes());
            continue;
        }
        let mut values = req.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // HTTP/2 carries the host in `:authority`.
            let authority = name
                .eq_ignore_ascii_case("host")
                .then(|| req.uri.authority())
                .flatten()?;
            out.extend_from_slice(authority.as_str().as_bytes());
            continue;
        }
        for (j, v) in values.enumerate() {
            if j > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v.as_bytes().trim_ascii());
        }
    }
    Some(out)
}

fn signs(headers: &str, name: &str) -> bool {
    headers
        .split_ascii_whitespace()
        .any(|h| h.eq_ignore_ascii_case(name) || (is_request_target(h) && is_request_target(name)))
}

/// The expected digest from a `Content-Digest` (`sha-256=:b64:`) or `Digest` (`SHA-256=b64`)
/// value: the first algorithm understood.
fn parse_digest(value: &str) -> Option<(DigestAlgorithm, Vec<u8>)> {
    value.split(',').find_map(|item| {
        let (alg, v) = item.trim().split_once('=')?;
        let algorithm = match alg.trim().to_ascii_lowercase().as_str() {
            "sha-256" => DigestAlgorithm::Sha256,
            "sha-512" => DigestAlgorithm::Sha512,
            _ => return None,
        };
        let v = v.trim().trim_matches(':');
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        Some((algorithm, bytes))
    })
}

const DIGEST_HEADERS: [&str; 2] = ["content-digest", "digest"];

impl HmacAuth {
    /// Builds the plugin from its config and the consumers' `hmac-auth` credentials.
    pub fn new(c: HmacAuthConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.algorithms.is_empty() {
            return Err(ConfigError::at(
                "algorithms",
                "must name at least one algorithm",
            ));
        }
        if c.clock_skew.get().is_zero() {
            return Err(ConfigError::at("clock_skew", "must be more than 0s"));
        }
        if c.max_body.bytes() == 0 {
            return Err(ConfigError::at("max_body", "must be more than 0"));
        }
        let mut enforce_headers = Vec::with_capacity(c.enforce_headers.len());
        for (i, h) in c.enforce_headers.iter().enumerate() {
            if !is_request_target(h) && HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(ConfigError::at(
                    format!("enforce_headers[{i}]"),
                    format!("`{h}` is neither a header name nor `@request-target`"),
                ));
            }
            enforce_headers.push(h.to_ascii_lowercase());
        }
        let mut key_ids = HashMap::new();
        let mut consumers = Vec::new();
        for (consumer, cred) in consumer_credentials::<HmacCredential>(env, "hmac-auth")? {
            if cred.key_id.is_empty() || cred.key_id.contains('"') {
                return Err(bad_credential(
                    &consumer.id,
                    "hmac-auth",
                    "needs a non-empty `key_id` without `\"`",
                ));
            }
            if cred.secret.is_empty() {
                return Err(bad_credential(
                    &consumer.id,
                    "hmac-auth",
                    "needs a non-empty `secret`",
                ));
            }
            if let Some(&other) = key_ids.get(&cred.key_id) {
                let (other, _): &(Arc<Consumer>, _) = &consumers[other];
                return Err(ConfigError::whole(format!(
                    "consumers \"{}\" and \"{}\" have the same hmac-auth key_id \"{}\"; key ids must be unique",
                    other.id, consumer.id, cred.key_id
                )));
            }
            key_ids.insert(cred.key_id, consumers.len());
            consumers.push((consumer, cred.secret.into_bytes()));
        }
        let mut value = format!("Signature realm=\"{REALM}\"");
        if !enforce_headers.is_empty() {
            value.push_str(&format!(",headers=\"{}\"", enforce_headers.join(" ")));
        }
        let challenge = challenge(&value, "enforce_headers")?;
        Ok(HmacAuth {
            algorithms: c.algorithms,
            clock_skew: c.clock_skew.get(),
            enforce_headers,
            validate_request_body: c.validate_request_body,
            max_body: c.max_body.bytes(),
            hide_credentials: c.hide_credentials,
            optional: c.optional,
            key_ids,
            consumers,
            missing: unauthorized("missing signature", &challenge),
            invalid: unauthorized("invalid signature", &challenge),
            not_allowed: unauthorized("signature algorithm not allowed", &challenge),
            uncovered: unauthorized("signature does not cover the required headers", &challenge),
            bad_date: unauthorized("date missing or outside the allowed clock skew", &challenge),
            missing_digest: unauthorized("missing body digest", &challenge),
            bad_digest: unauthorized("body digest does not match", &challenge),
            too_large: PluginResponse::error(413, "request body too large"),
        })
    }

    /// Whether the signed date (`X-Date` if signed, else `Date`) is within the clock skew.
    fn date_ok(&self, req: &RequestHeader, headers: &str) -> bool {
        let name = if signs(headers, "x-date") {
            "x-date"
        } else if signs(headers, "date") {
            "date"
        } else {
            return false;
        };
        let Some(date) = req
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return false;
        };
        let now = SystemTime::now();
        let skew = now
            .duration_since(date)
            .or_else(|_| date.duration_since(now))
            .unwrap_or_default();
        skew <= self.clock_skew
    }

    /// Checks the signature; the consumer, or the response refusing the request.
    fn authenticate(
        &self,
        req: &RequestHeader,
        params: &SignatureParams<'_>,
    ) -> Result<Arc<Consumer>, PluginResponse> {
        let Some(algorithm) = HmacAlgorithm::parse(params.algorithm) else {
            return Err(self.invalid.clone());
        };
        if !self.algorithms.contains(&algorithm) {
            return Err(self.not_allowed.clone());
        }
        if self
            .enforce_headers
            .iter()
            .any(|h| !signs(params.headers, h))
        {
            return Err(self.uncovered.clone());
        }
        let Some((consumer, secret)) = self
            .key_ids
            .get(params.key_id)
            .and_then(|&i| self.consumers.get(i))
        else {
            return Err(self.invalid.clone());
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(params.signature)
            .map_err(|_| self.invalid.clone())?;
        let message = signing_string(req, params.headers).ok_or_else(|| self.invalid.clone())?;
        if !algorithm.verify(secret, &message, &signature) {
            return Err(self.invalid.clone());
        }
        if !self.date_ok(req, params.headers) {
            return Err(self.bad_date.clone());
        }
        Ok(consumer.clone())
    }

    /// What the body must be, from the digest headers; or the response refusing the request.
    fn body_check(&self, req: &RequestHeader, headers: &str) -> Result<BodyCheck, PluginResponse> {
        let declared = req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(self.too_large.clone());
        }
        let Some((name, value)) = DIGEST_HEADERS
            .iter()
            .find_map(|n| req.headers.get(*n).map(|v| (*n, v)))
        else {
            if declared.is_some_and(|n| n > 0) {
                return Err(self.missing_digest.clone());
            }
            return Ok(BodyCheck::Empty);
        };
        if !signs(headers, name) {
            return Err(self.uncovered.clone());
        }
        let (algorithm, expected) = value
            .to_str()
            .ok()
            .and_then(parse_digest)
            .ok_or_else(|| self.bad_digest.clone())?;
        Ok(BodyCheck::Digest {
            algorithm,
            expected,
            body: BytesMut::new(),
        })
    }
}

#[async_trait]
impl Plugin for HmacAuth {
    fn name(&self) -> &str {
        "hmac-auth"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        if self.validate_request_body {
            Phases::REQUEST | Phases::REQUEST_BODY
        } else {
            Phases::REQUEST
        }
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if already_authenticated(ctx) {
            return Ok(Flow::Continue);
        }
        let params = req
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| strip_scheme(v, "Signature"));
        let Some(params) = params else {
            if self.optional {
                return Ok(Flow::Continue);
            }
            return Ok(Flow::Respond(self.missing.clone()));
        };
        let Some(params) = parse_params(params) else {
            return Ok(Flow::Respond(self.invalid.clone()));
        };
        let consumer = match self.authenticate(req, &params) {
            Ok(c) => c,
            Err(resp) => return Ok(Flow::Respond(resp)),
        };
        if self.validate_request_body {
            match self.body_check(req, params.headers) {
                Ok(check) => ctx.set_state(check),
                Err(resp) => return Ok(Flow::Respond(resp)),
            }
        }
        ctx.consumer = Some(consumer);
        if self.hide_credentials {
            req.remove_header(&AUTHORIZATION);
        }
        Ok(Flow::Continue)
    }

    async fn request_body_filter(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let Some(check) = ctx.state_mut::<BodyCheck>() else {
            return Ok(Flow::Continue);
        };
        match check {
            BodyCheck::Empty => {
                if body.as_ref().is_some_and(|b| !b.is_empty()) {
                    ctx.take_state::<BodyCheck>();
                    return Ok(Flow::Respond(self.missing_digest.clone()));
                }
            }
            BodyCheck::Digest {
                algorithm,
                expected,
                body: held,
            } => {
                if let Some(chunk) = body.take() {
                    if held.len() as u64 + chunk.len() as u64 > self.max_body {
                        ctx.take_state::<BodyCheck>();
                        return Ok(Flow::Respond(self.too_large.clone()));
                    }
                    held.extend_from_slice(&chunk);
                }
                if !end_of_stream {
                    // An empty chunk sends nothing upstream and does not end the body.
                    *body = Some(Bytes::new());
                    return Ok(Flow::Continue);
                }
                let actual = algorithm.digest(held);
                if !bool::from(actual.ct_eq(expected.as_slice())) {
                    ctx.take_state::<BodyCheck>();
                    return Ok(Flow::Respond(self.bad_digest.clone()));
                }
                if !held.is_empty() {
                    *body = Some(held.split().freeze());
                }
            }
        }
        if end_of_stream {
            ctx.take_state::<BodyCheck>();
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use serde_json::json;

    const SECRET: &str = "alice-hmac-secret";

    fn env() -> HarnessEnv {
        HarnessEnv {
            consumers: vec![Arc::new(Consumer {
                id: "alice".into(),
                groups: vec![],
                labels: Default::default(),
                credentials: [(
                    "hmac-auth".to_string(),
                    json!({"key_id": "alice-key", "secret": SECRET}),
                )]
                .into_iter()
                .collect(),
            })],
            ..Default::default()
        }
    }

    fn sign(message: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(message.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn now() -> String {
        httpdate::fmt_http_date(SystemTime::now())
    }

    fn auth(headers: &str, signature: &str) -> String {
        format!("Signature keyId=\"alice-key\",algorithm=\"hmac-sha256\",headers=\"{headers}\",signature=\"{signature}\"")
    }

    fn signed_request(date: &str, extra: &[(&str, &str)], headers: &str) -> RequestHeader {
        let mut lines = Vec::new();
        for name in headers.split(' ') {
            match name {
                "@request-target" => lines.push("@request-target: post /orders?id=7".to_string()),
                "date" => lines.push(format!("date: {date}")),
                other => {
                    let v = extra.iter().find(|(n, _)| *n == other).unwrap().1;
                    lines.push(format!("{other}: {v}"));
                }
            }
        }
        let mut b = request("POST", "/orders?id=7")
            .header("date", date)
            .header("authorization", &auth(headers, &sign(&lines.join("\n"))));
        for (n, v) in extra {
            b = b.header(n, v);
        }
        b.build()
    }

    async fn run(
        config: serde_json::Value,
        req: &mut RequestHeader,
    ) -> (PluginHarness, Option<PluginResponse>) {
        let mut h = PluginHarness::from_config_with(&factory(), config, &env()).unwrap();
        let resp = match h.request(req).await.unwrap() {
            Flow::Continue => None,
            Flow::Respond(r) => Some(r),
        };
        (h, resp)
    }

    fn text(r: &PluginResponse) -> String {
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    #[test]
    fn signing_string_is_exact() {
        let req = request("GET", "/a/b?x=1&y=2")
            .header("date", "Tue, 07 Jun 2022 20:51:35 GMT")
            .header("x-multi", " one ")
            .header("x-multi", "two")
            .build();
        let s = signing_string(&req, "(request-target) date X-Multi").unwrap();
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "(request-target): get /a/b?x=1&y=2\ndate: Tue, 07 Jun 2022 20:51:35 GMT\nx-multi: one, two"
        );
        assert!(signing_string(&req, "date x-absent").is_none());
    }

    #[test]
    fn params_parse_strictly() {
        let p = parse_params(
            r#"keyId="k", algorithm="hmac-sha256",headers="date",signature="YQ==",created="1""#,
        )
        .unwrap();
        assert_eq!(
            (p.key_id, p.algorithm, p.headers, p.signature),
            ("k", "hmac-sha256", "date", "YQ==")
        );
        assert!(parse_params(r#"keyId="k",keyId="j",algorithm="a",signature="s""#).is_none());
        assert!(parse_params(r#"keyId="k",algorithm="a""#).is_none());
        assert!(parse_params(r#"keyId=k,algorithm="a",signature="s""#).is_none());
        assert_eq!(
            parse_params(r#"keyId="k",algorithm="a",signature="s""#)
                .unwrap()
                .headers,
            "date"
        );
    }

    #[tokio::test]
    async fn valid_signature_authenticates_and_is_hidden() {
        let mut req = signed_request(
            &now(),
            &[("x-custom", "v")],
            "@request-target date x-custom",
        );
        let (h, resp) = run(json!({}), &mut req).await;
        assert!(resp.is_none(), "{:?}", resp.map(|r| text(&r)));
        assert_eq!(h.ctx.consumer.as_ref().unwrap().id, "alice");
        assert!(req.headers.get("authorization").is_none());
    }

    #[tokio::test]
    async fn refusals() {
        let old = httpdate::fmt_http_date(SystemTime::now() - std::time::Duration::from_secs(600));
        let mut req = signed_request(&old, &[], "@request-target date");
        let (_, resp) = run(json!({}), &mut req).await;
        assert!(text(&resp.unwrap()).contains("clock skew"));
        // Date not signed.
        let mut req = signed_request(&now(), &[], "@request-target");
        let (_, resp) = run(json!({"enforce_headers": []}), &mut req).await;
        assert!(text(&resp.unwrap()).contains("clock skew"));
        // Enforced header not covered.
        let mut req = signed_request(&now(), &[], "date");
        let (_, resp) = run(json!({}), &mut req).await;
        let resp = resp.unwrap();
        assert!(text(&resp).contains("does not cover"));
        assert_eq!(
            resp.header("www-authenticate").unwrap(),
            "Signature realm=\"gatehouse\",headers=\"@request-target date\""
        );
        // Tampered: the date changed after signing.
        let mut req = signed_request(&now(), &[], "@request-target date");
        req.insert_header("date", old.as_str()).unwrap();
        let (h, resp) = run(json!({}), &mut req).await;
        assert!(text(&resp.unwrap()).contains("invalid signature"));
        assert!(h.ctx.consumer.is_none());
        // Algorithm not allowed.
        let mut req = signed_request(&now(), &[], "@request-target date");
        let (_, resp) = run(json!({"algorithms": ["hmac-sha512"]}), &mut req).await;
        assert!(text(&resp.unwrap()).contains("not allowed"));
        // Unknown key id, garbage, missing.
        for a in [
            auth("date", "YQ==").replace("alice-key", "nobody"),
            "Signature nonsense".to_string(),
        ] {
            let mut req = request("GET", "/")
                .header("date", &now())
                .header("authorization", &a)
                .build();
            let (_, resp) = run(json!({"enforce_headers": []}), &mut req).await;
            assert!(text(&resp.unwrap()).contains("invalid signature"), "{a}");
        }
        let (_, resp) = run(json!({}), &mut request("GET", "/").build()).await;
        assert!(text(&resp.unwrap()).contains("missing signature"));
        let (_, resp) = run(json!({"optional": true}), &mut request("GET", "/").build()).await;
        assert!(resp.is_none());
    }

    fn digest_header(body: &[u8]) -> String {
        format!(
            "sha-256=:{}:",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
        )
    }

    #[tokio::test]
    async fn body_digest_is_checked_and_body_held_back() {
        let cfg = json!({"validate_request_body": true, "max_body": "16"});
        let d = digest_header(b"hello world");
        let mut req = signed_request(
            &now(),
            &[("content-digest", &d)],
            "@request-target date content-digest",
        );
        let (mut h, resp) = run(cfg.clone(), &mut req).await;
        assert!(resp.is_none());
        let mut chunk = Some(Bytes::from_static(b"hello "));
        assert!(matches!(
            h.request_body(&mut chunk, false).await.unwrap(),
            Flow::Continue
        ));
        assert_eq!(chunk.as_deref(), Some(&b""[..]));
        let mut chunk = Some(Bytes::from_static(b"world"));
        assert!(matches!(
            h.request_body(&mut chunk, true).await.unwrap(),
            Flow::Continue
        ));
        assert_eq!(chunk.as_deref(), Some(&b"hello world"[..]));

        // A different body.
        let mut req = signed_request(
            &now(),
            &[("content-digest", &d)],
            "@request-target date content-digest",
        );
        let (mut h, _) = run(cfg.clone(), &mut req).await;
        let mut chunk = Some(Bytes::from_static(b"hello moon"));
        let Flow::Respond(r) = h.request_body(&mut chunk, true).await.unwrap() else {
            panic!()
        };
        assert!(text(&r).contains("does not match"));

        // Too large.
        let mut req = signed_request(
            &now(),
            &[("content-digest", &d)],
            "@request-target date content-digest",
        );
        let (mut h, _) = run(cfg.clone(), &mut req).await;
        let mut chunk = Some(Bytes::from_static(b"0123456789abcdefg"));
        let Flow::Respond(r) = h.request_body(&mut chunk, false).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 413);

        // Digest not signed.
        let mut req = signed_request(&now(), &[], "@request-target date");
        req.insert_header("content-digest", d.as_str()).unwrap();
        let (_, resp) = run(cfg.clone(), &mut req).await;
        assert!(text(&resp.unwrap()).contains("does not cover"));

        // No digest: only an empty body passes.
        let mut req = signed_request(&now(), &[], "@request-target date");
        let (mut h, resp) = run(cfg.clone(), &mut req).await;
        assert!(resp.is_none());
        let mut chunk = Some(Bytes::from_static(b"sneaky"));
        let Flow::Respond(r) = h.request_body(&mut chunk, true).await.unwrap() else {
            panic!()
        };
        assert!(text(&r).contains("missing body digest"));
        let mut req = signed_request(&now(), &[("content-length", "20")], "@request-target date");
        let (_, resp) = run(cfg, &mut req).await;
        assert_eq!(resp.unwrap().status, 413);
    }

    #[test]
    fn config_errors() {
        for (cfg, path, expect) in [
            (
                json!({"algorithms": ["hmac-md5"]}),
                "algorithms[0]",
                "unknown variant",
            ),
            (json!({"algorithms": []}), "algorithms", "at least one"),
            (json!({"clock_skew": "0s"}), "clock_skew", "more than 0s"),
            (
                json!({"enforce_headers": ["bad header"]}),
                "enforce_headers[0]",
                "neither",
            ),
        ] {
            let err = PluginHarness::from_config(&factory(), cfg.clone())
                .err()
                .unwrap();
            assert_eq!(err.path, path, "{cfg}: {err}");
            assert!(err.message.contains(expect), "{cfg}: {err}");
        }
    }
}
