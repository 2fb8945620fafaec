//! `cors`: Cross-Origin Resource Sharing. Answers preflight requests itself and adds the
//! `Access-Control-*` headers to responses for allowed origins.

use crate::context::RequestContext;
use crate::factory::{regex_error, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::Duration;
use async_trait::async_trait;
use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::Method;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use regex::RegexSet;
use serde::{de, Deserialize, Deserializer};
use std::fmt;

/// A list of strings that may also be written as one string (`allow_origins: "*"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Config of `cors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed: exact origins (`https://app.example.com`), `*` for any, or `~regex`
    /// matched against the whole origin. Default `*`.
    #[serde(default = "any")]
    pub allow_origins: StringList,
    /// Methods allowed in preflights, or `*` for whatever the browser asks.
    /// Default `GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`.
    #[serde(default = "default_methods")]
    pub allow_methods: StringList,
    /// Request headers allowed in preflights, or `*` (the default) for whatever the browser
    /// asks.
    #[serde(default = "any")]
    pub allow_headers: StringList,
    /// Response headers the browser may show to scripts (`Access-Control-Expose-Headers`).
    #[serde(default)]
    pub expose_headers: StringList,
    /// Whether cookies and credentials are allowed (`Access-Control-Allow-Credentials: true`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`, in whole
    /// seconds). Not sent by default.
    pub max_age: Option<Duration>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allow_origins: any(),
            allow_methods: default_methods(),
            allow_headers: any(),
            expose_headers: StringList::default(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

fn any() -> StringList {
    StringList(vec!["*".to_string()])
}

fn default_methods() -> StringList {
    StringList(
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
            .map(String::from)
            .to_vec(),
    )
}

/// Which origins are allowed.
struct Origins {
    any: bool,
    /// Lower-cased exact origins.
    exact: Vec<String>,
    patterns: Option<RegexSet>,
}

impl Origins {
    fn allows(&self, origin: &str) -> bool {
        self.any
            || self.exact.iter().any(|o| o.eq_ignore_ascii_case(origin))
            || self.patterns.as_ref().is_some_and(|p| p.is_match(origin))
    }
}

/// A preflight list: either what the browser asked for, or a fixed value.
enum Echo {
    Requested,
    Fixed(HeaderValue),
}

/// What `request_filter` decided, for `response_filter`.
#[derive(Clone)]
enum Decision {
    /// A preflight that this plugin answered completely.
    Preflight,
    /// An allowed cross-origin request: echo this origin.
    Allowed(HeaderValue),
}

/// The `cors` plugin.
pub struct Cors {
    origins: Origins,
    /// `*` is answered (any origin, no credentials): the answer is the same for everyone.
    wildcard: bool,
    credentials: bool,
    methods: Echo,
    headers: Echo,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    refused: PluginResponse,
}

/// Priority of `cors`: first among access control, so that preflights are answered before
/// authentication and refusals from later plugins carry CORS headers.
pub const PRIORITY: i32 = 4000;

static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// The factory for `cors`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("cors", PRIORITY, |c: CorsConfig, _env| Cors::new(c))
}

fn has_star(list: &StringList, key: &str) -> Result<bool, ConfigError> {
    let star = list.0.iter().any(|s| s.trim() == "*");
    if star && list.0.len() > 1 {
        return Err(ConfigError::at(
            key,
            "`*` allows everything; it cannot be combined with other entries",
        ));
    }
    Ok(star)
}

fn joined(list: &[String], key: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(&list.join(", "))
        .map_err(|_| ConfigError::at(key, "contains characters not allowed in a header"))
}

fn header_names(list: &StringList, key: &str) -> Result<Vec<String>, ConfigError> {
    list.0
        .iter()
        .enumerate()
        .map(|(i, h)| {
            HeaderName::from_bytes(h.trim().as_bytes())
                .map(|_| h.trim().to_string())
                .map_err(|_| {
                    ConfigError::at(format!("{key}[{i}]"), format!("`{h}` is not a header name"))
                })
        })
        .collect()
}

/// Checks an exact origin entry: `null`, or `scheme://host[:port]` without a path.
fn check_origin(o: &str) -> Result<(), String> {
    if o == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(format!(
            "`{o}` is not an origin; write `scheme://host[:port]` (e.g. `https://app.example.com`), `*` or `~regex`"
        ));
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return Err(format!(
            "`{o}` is not an origin; write `scheme://host[:port]`"
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "`{o}` is not an origin: an origin has no path, not even a trailing `/`"
        ));
    }
    if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{o}` is not an origin: it contains whitespace (write several origins as a list)"
        ));
    }
    Ok(())
}

impl Cors {
    /// Builds the plugin from its config.
    pub fn new(c: CorsConfig) -> Result<Self, ConfigError> {
        // Origins.
        if c.allow_origins.0.is_empty() {
            return Err(ConfigError::at(
                "allow_origins",
                "must not be empty; list origins, `*` or `~regex`",
            ));
        }
        let any = has_star(&c.allow_origins, "allow_origins")?;
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for (i, o) in c.allow_origins.0.iter().enumerate() {
            let path = format!("allow_origins[{i}]");
            let o = o.trim();
            if o == "*" {
                continue;
            }
            if let Some(re) = o.strip_prefix('~') {
                let anchored = format!("^(?:{re})$");
                regex::Regex::new(&anchored)
                    .map_err(|e| ConfigError::at(&path, regex_error(&e)))?;
                patterns.push(anchored);
            } else {
                check_origin(o).map_err(|m| ConfigError::at(&path, m))?;
                exact.push(o.to_ascii_lowercase());
            }
        }
        let patterns = if patterns.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(&patterns)
                    .map_err(|e| ConfigError::at("allow_origins", regex_error(&e)))?,
            )
        };

        // Methods.
        if c.allow_methods.0.is_empty() {
            return Err(ConfigError::at("allow_methods", "must not be empty"));
        }
        let methods = if has_star(&c.allow_methods, "allow_methods")? {
            Echo::Requested
        } else {
            let mut list = Vec::new();
            for (i, m) in c.allow_methods.0.iter().enumerate() {
                let m = m.trim().to_ascii_uppercase();
                Method::from_bytes(m.as_bytes()).map_err(|_| {
                    ConfigError::at(
                        format!("allow_methods[{i}]"),
                        format!("`{m}` is not an HTTP method"),
                    )
                })?;
                list.push(m);
            }
            Echo::Fixed(joined(&list, "allow_methods")?)
        };

        // Headers.
        let headers = if has_star(&c.allow_headers, "allow_headers")? {
            Echo::Requested
        } else {
            Echo::Fixed(joined(
                &header_names(&c.allow_headers, "allow_headers")?,
                "allow_headers",
            )?)
        };
        let expose = if has_star(&c.expose_headers, "expose_headers")? {
            if c.allow_credentials {
                return Err(ConfigError::at(
                    "expose_headers",
                    "`*` is not honoured by browsers with `allow_credentials: true`; list the headers",
                ));
            }
            Some(STAR.clone())
        } else if c.expose_headers.0.is_empty() {
            None
        } else {
            Some(joined(
                &header_names(&c.expose_headers, "expose_headers")?,
                "expose_headers",
            )?)
        };

        let max_age = match c.max_age {
            None => None,
            Some(d) => {
                let d = d.get();
                if d.subsec_nanos() != 0 {
                    return Err(ConfigError::at(
                        "max_age",
                        format!(
                            "must be whole seconds (e.g. `10m`, `1h`), not {}",
                            Duration(d)
                        ),
                    ));
                }
                Some(HeaderValue::from(d.as_secs()))
            }
        };

        let origins = Origins {
            any,
            exact,
            patterns,
        };
        Ok(Cors {
            wildcard: origins.any && !c.allow_credentials,
            origins,
            credentials: c.allow_credentials,
            methods,
            headers,
            expose,
            max_age,
            refused: PluginResponse::error(403, "origin not allowed by CORS policy"),
        })
    }

    /// The `Access-Control-Allow-Origin` value for this request's origin, if allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.wildcard {
            return Some(STAR.clone());
        }
        let o = origin.to_str().ok()?;
        self.origins.allows(o).then(|| origin.clone())
    }

    fn preflight(&self, req: &RequestHeader, origin: &HeaderValue) -> PluginResponse {
        let vary = if self.wildcard {
            None
        } else {
            Some(VARY_ORIGIN.clone())
        };
        let Some(allow) = self.allow_origin(origin) else {
            let mut r = self.refused.clone();
            r.headers.extend(vary.map(|v| (VARY, v)));
            return r;
        };
        let mut r = PluginResponse::new(204);
        r.headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, allow));
        if self.credentials {
            r.headers
                .push((ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
        }
        let mut vary_on: Vec<&str> = Vec::with_capacity(3);
        if vary.is_some() {
            vary_on.push("Origin");
        }
        match &self.methods {
            Echo::Fixed(v) => r.headers.push((ACCESS_CONTROL_ALLOW_METHODS, v.clone())),
            Echo::Requested => {
                vary_on.push("Access-Control-Request-Method");
                if let Some(m) = req.headers.get(ACCESS_CONTROL_REQUEST_METHOD) {
                    r.headers.push((ACCESS_CONTROL_ALLOW_METHODS, m.clone()));
                }
            }
        }
        match &self.headers {
            Echo::Fixed(v) => r.headers.push((ACCESS_CONTROL_ALLOW_HEADERS, v.clone())),
            Echo::Requested => {
                vary_on.push("Access-Control-Request-Headers");
                if let Some(h) = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    r.headers.push((ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
                }
            }
        }
        if let Some(m) = &self.max_age {
            r.headers.push((ACCESS_CONTROL_MAX_AGE, m.clone()));
        }
        if !vary_on.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&vary_on.join(", ")) {
                r.headers.push((VARY, v));
            }
        }
        r
    }
}

/// Whether a `Vary` header already names `Origin` (or is `*`).
fn varies_on_origin(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin"))
        })
    })
}

#[async_trait]
impl Plugin for Cors {
    fn name(&self) -> &str {
        "cors"
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
        let Some(origin) = req.headers.get(ORIGIN) else {
            return Ok(Flow::Continue);
        };
        if req.method == Method::OPTIONS && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            let resp = self.preflight(req, origin);
            ctx.set_state(Decision::Preflight);
            return Ok(Flow::Respond(resp));
        }
        if !self.wildcard {
            if let Some(allow) = self.allow_origin(origin) {
                ctx.set_state(Decision::Allowed(allow));
            }
        }
        Ok(Flow::Continue)
    }

    async fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if self.wildcard {
            // The same answer for every origin: no `Vary` needed.
            if matches!(ctx.state::<Decision>(), Some(Decision::Preflight)) {
                return Ok(());
            }
            resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, STAR.clone())?;
        } else {
            match ctx.state::<Decision>() {
                Some(Decision::Preflight) => return Ok(()),
                Some(Decision::Allowed(origin)) => {
                    resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())?;
                    if self.credentials {
                        resp.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone())?;
                    }
                }
                None => {
                    // Not allowed, or not a CORS request: whatever the upstream said about
                    // CORS must not leak through.
                    resp.remove_header(&ACCESS_CONTROL_ALLOW_ORIGIN);
                    resp.remove_header(&ACCESS_CONTROL_ALLOW_CREDENTIALS);
                }
            }
            if !varies_on_origin(resp) {
                resp.append_header(VARY, VARY_ORIGIN.clone())?;
            }
        }
        if let Some(e) = &self.expose {
            if ctx.state::<Decision>().is_some() || self.wildcard {
                resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn build(cfg: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), cfg).unwrap()
    }

    fn err(cfg: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), cfg).err().unwrap()
    }

    fn preflight(origin: &str) -> RequestHeader {
        request("OPTIONS", "/api")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-token, content-type")
            .build()
    }

    async fn respond(h: &mut PluginHarness, req: &mut RequestHeader) -> PluginResponse {
        match h.request(req).await.unwrap() {
            Flow::Respond(r) => r,
            Flow::Continue => panic!("expected an answer"),
        }
    }

    async fn actual(h: &mut PluginHarness, origin: Option<&str>) -> ResponseHeader {
        let mut b = request("GET", "/api");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        assert!(matches!(
            h.request(&mut b.build()).await.unwrap(),
            Flow::Continue
        ));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        h.response(&mut resp).await.unwrap();
        resp
    }

    fn get<'a>(r: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        r.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn default_config_allows_any_origin_with_star() {
        let mut h = build(json!(null));
        let r = respond(&mut h, &mut preflight("https://a.test")).await;
        assert_eq!(r.status, 204);
        assert_eq!(r.header("access-control-allow-origin").unwrap(), "*");
        assert_eq!(
            r.header("access-control-allow-methods").unwrap(),
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
        );
        assert_eq!(
            r.header("access-control-allow-headers").unwrap(),
            "x-token, content-type"
        );
        assert!(r.header("access-control-allow-credentials").is_none());
        assert!(r.header("access-control-max-age").is_none());

        let mut h = build(json!(null));
        let resp = actual(&mut h, Some("https://a.test")).await;
        assert_eq!(get(&resp, "access-control-allow-origin"), Some("*"));
        assert!(get(&resp, "vary").is_none());
    }

    #[tokio::test]
    async fn exact_and_regex_origins() {
        let cfg = json!({
            "allow_origins": ["https://app.example.com", "~https://[a-z0-9-]+\\.example\\.org"],
            "allow_methods": ["get", "POST"],
            "allow_headers": ["X-Token"],
            "expose_headers": ["X-Request-Id", "X-Total"],
            "max_age": "1h"
        });
        for origin in [
            "https://app.example.com",
            "HTTPS://APP.EXAMPLE.COM",
            "https://eu-1.example.org",
        ] {
            let mut h = build(cfg.clone());
            let r = respond(&mut h, &mut preflight(origin)).await;
            assert_eq!(r.status, 204, "{origin}");
            assert_eq!(r.header("access-control-allow-origin").unwrap(), origin);
            assert_eq!(
                r.header("access-control-allow-methods").unwrap(),
                "GET, POST"
            );
            assert_eq!(r.header("access-control-allow-headers").unwrap(), "X-Token");
            assert_eq!(r.header("access-control-max-age").unwrap(), "3600");
            assert_eq!(r.header("vary").unwrap(), "Origin");

            let mut h = build(cfg.clone());
            let resp = actual(&mut h, Some(origin)).await;
            assert_eq!(get(&resp, "access-control-allow-origin"), Some(origin));
            assert_eq!(
                get(&resp, "access-control-expose-headers"),
                Some("X-Request-Id, X-Total")
            );
            assert_eq!(get(&resp, "vary"), Some("Origin"));
        }
        // The regex must match the whole origin.
        for origin in [
            "https://evil.test",
            "https://app.example.com.evil.test",
            "https://eu-1.example.org.evil.test",
            "http://eu-1.example.org",
            "null",
        ] {
            let mut h = build(cfg.clone());
            let r = respond(&mut h, &mut preflight(origin)).await;
            assert_eq!(r.status, 403, "{origin}");
            assert!(r.header("access-control-allow-origin").is_none());
            assert_eq!(r.header("vary").unwrap(), "Origin");
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"], "origin not allowed by CORS policy");

            let mut h = build(cfg.clone());
            let resp = actual(&mut h, Some(origin)).await;
            assert!(get(&resp, "access-control-allow-origin").is_none());
            assert!(get(&resp, "access-control-expose-headers").is_none());
            assert_eq!(get(&resp, "vary"), Some("Origin"));
        }
    }

    #[tokio::test]
    async fn credentials_echo_the_origin_never_star() {
        let cfg = json!({"allow_credentials": true, "allow_methods": "*"});
        let mut h = build(cfg.clone());
        let r = respond(&mut h, &mut preflight("https://a.test")).await;
        assert_eq!(
            r.header("access-control-allow-origin").unwrap(),
            "https://a.test"
        );
        assert_eq!(
            r.header("access-control-allow-credentials").unwrap(),
            "true"
        );
        assert_eq!(r.header("access-control-allow-methods").unwrap(), "PUT");
        assert_eq!(
            r.header("vary").unwrap(),
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        );

        let mut h = build(cfg);
        let resp = actual(&mut h, Some("https://b.test")).await;
        assert_eq!(
            get(&resp, "access-control-allow-origin"),
            Some("https://b.test")
        );
        assert_eq!(get(&resp, "access-control-allow-credentials"), Some("true"));
        assert_eq!(get(&resp, "vary"), Some("Origin"));
    }

    #[tokio::test]
    async fn response_headers_are_not_duplicated_and_upstream_cors_is_replaced() {
        let mut h = build(json!({"allow_origins": ["https://a.test"]}));
        let mut req = request("GET", "/")
            .header("origin", "https://a.test")
            .build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("access-control-allow-origin", "*")
            .unwrap();
        resp.append_header("vary", "accept-encoding, origin")
            .unwrap();
        h.response(&mut resp).await.unwrap();
        let acao: Vec<_> = resp
            .headers
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(acao, ["https://a.test"]);
        assert_eq!(resp.headers.get_all("vary").iter().count(), 1);

        // A request without Origin: upstream CORS headers are removed, Vary added.
        let mut h = build(json!({"allow_origins": ["https://a.test"]}));
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("access-control-allow-origin", "*")
            .unwrap();
        h.response(&mut resp).await.unwrap();
        assert!(get(&resp, "access-control-allow-origin").is_none());
        assert_eq!(get(&resp, "vary"), Some("Origin"));
    }

    #[tokio::test]
    async fn plain_options_is_not_a_preflight() {
        let mut h = build(json!({"allow_origins": ["https://a.test"]}));
        let mut req = request("OPTIONS", "/")
            .header("origin", "https://a.test")
            .build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut req = request("OPTIONS", "/")
            .header("access-control-request-method", "GET")
            .build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
    }

    #[tokio::test]
    async fn preflight_response_is_not_decorated_twice() {
        let mut h = build(json!({"allow_origins": ["https://a.test"], "allow_credentials": true}));
        let r = respond(&mut h, &mut preflight("https://a.test")).await;
        let mut resp = ResponseHeader::build(r.status, None).unwrap();
        for (n, v) in r.headers {
            resp.append_header(n, v).unwrap();
        }
        h.response(&mut resp).await.unwrap();
        assert_eq!(
            resp.headers
                .get_all("access-control-allow-origin")
                .iter()
                .count(),
            1
        );
        assert_eq!(resp.headers.get_all("vary").iter().count(), 1);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (
                json!({"allow_origins": ["https://a.test/"]}),
                "allow_origins[0]",
                "no path",
            ),
            (
                json!({"allow_origins": ["https://a.test", "a.test"]}),
                "allow_origins[1]",
                "not an origin",
            ),
            (
                json!({"allow_origins": ["~(unclosed"]}),
                "allow_origins[0]",
                "invalid regex",
            ),
            (
                json!({"allow_origins": ["*", "https://a.test"]}),
                "allow_origins",
                "cannot be combined",
            ),
            (
                json!({"allow_origins": []}),
                "allow_origins",
                "must not be empty",
            ),
            (
                json!({"allow_methods": ["GET", "BAD METHOD"]}),
                "allow_methods[1]",
                "not an HTTP method",
            ),
            (
                json!({"allow_headers": ["ok", "bad header"]}),
                "allow_headers[1]",
                "not a header name",
            ),
            (
                json!({"expose_headers": "*", "allow_credentials": true}),
                "expose_headers",
                "list the headers",
            ),
            (json!({"max_age": "1500ms"}), "max_age", "whole seconds"),
            (json!({"max_age": 60}), "max_age", "ambiguous"),
            (
                json!({"allow_origins": 5}),
                "allow_origins",
                "a string or a list",
            ),
            (
                json!({"origins": ["*"]}),
                "origins",
                "unknown field `origins`",
            ),
        ];
        for (cfg, path, msg) in cases {
            let e = err(cfg.clone());
            assert_eq!(e.path, path, "{cfg}: {e}");
            assert!(e.message.contains(msg), "{cfg}: {e}");
        }
    }
}
