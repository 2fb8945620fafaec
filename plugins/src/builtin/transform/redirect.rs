//! `redirect`: answer with a redirect to a URL built from the request, or send plain-HTTP
//! requests to the same URL on HTTPS.

use crate::context::RequestContext;
use crate::factory::{regex_error, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use async_trait::async_trait;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;
use regex::Regex;
use serde::Deserialize;

/// Config of `redirect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Where to send the client: a template with `{name}` (a path parameter of the route, or
    /// one of the variables `{path}`, `{query}`, `{uri}`, `{host}`, `{scheme}`) and, with
    /// `regex`, `$1`… for its capture groups.
    pub to: Option<String>,
    /// A regex matched against the request path; `to` may use its groups. A request whose
    /// path does not match is not redirected.
    pub regex: Option<String>,
    /// 301, 302, 307 or 308 (default 302 with `to`, 301 with `https`).
    pub status: Option<u16>,
    /// Redirect plain-HTTP requests to the same host, path and query on HTTPS; requests that
    /// arrived over TLS pass through.
    #[serde(default)]
    pub https: bool,
    /// The port in the HTTPS URL (default: none, that is 443).
    pub https_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Path,
    Query,
    Uri,
    Host,
    Scheme,
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "path" => Var::Path,
            "query" => Var::Query,
            "uri" => Var::Uri,
            "host" => Var::Host,
            "scheme" => Var::Scheme,
            _ => return None,
        })
    }
}

#[derive(Debug)]
enum Piece {
    Literal(String),
    /// `{name}`: the route's path parameter `name`, else the variable of that name.
    Name(String, Option<Var>),
    /// `$n`: the regex's capture group `n`.
    Capture(usize),
}

enum Target {
    To {
        template: Vec<Piece>,
        regex: Option<Regex>,
        needs_host: bool,
    },
    Https {
        port: Option<u16>,
    },
}

/// The `redirect` plugin.
pub struct Redirect {
    target: Target,
    status: u16,
}

/// Priority of `redirect`: before authentication (2000-2600), so that a client on plain HTTP
/// is moved to HTTPS before it is asked for credentials and a moved API answers with its new
/// place whoever asks; after access control (3000+), so that a denied client gets its 403.
pub const PRIORITY: i32 = 2900;

/// The factory for `redirect`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("redirect", PRIORITY, |c: RedirectConfig, _env| {
        Redirect::new(c)
    })
}

fn literal(out: &mut Vec<Piece>, text: &str) -> Result<(), ConfigError> {
    if text.is_empty() {
        return Ok(());
    }
    if HeaderValue::from_str(text).is_err() {
        return Err(ConfigError::at(
            "to",
            "contains characters not allowed in a URL (control characters)",
        ));
    }
    match out.last_mut() {
        Some(Piece::Literal(prev)) => prev.push_str(text),
        _ => out.push(Piece::Literal(text.to_string())),
    }
    Ok(())
}

/// Parses `to`; `groups` is the number of capture groups of `regex` (None without one).
fn parse_template(t: &str, groups: Option<usize>) -> Result<Vec<Piece>, ConfigError> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(at) = rest.find(['{', '$']) {
        literal(&mut pieces, &rest[..at])?;
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix('{') {
            let close = after
                .find('}')
                .ok_or_else(|| ConfigError::at("to", format!("unclosed `{{` in `{t}`")))?;
            let name = &after[..close];
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ConfigError::at(
                    "to",
                    format!("`{{{name}}}` in `{t}` is not a name (letters, digits, `_` and `-`)"),
                ));
            }
            pieces.push(Piece::Name(name.to_string(), Var::from_name(name)));
            rest = &after[close + 1..];
        } else {
            let after = &tail[1..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                literal(&mut pieces, "$")?;
                rest = after;
                continue;
            }
            let n: usize = after[..digits]
                .parse()
                .map_err(|_| ConfigError::at("to", format!("bad group number in `{t}`")))?;
            match groups {
                None => {
                    return Err(ConfigError::at(
                        "to",
                        format!("`${n}` refers to a regex group, but no `regex` is set"),
                    ))
                }
                Some(g) if n > g => {
                    return Err(ConfigError::at(
                        "to",
                        format!("`${n}` refers to group {n}, but `regex` has {g} group(s)"),
                    ))
                }
                Some(_) => pieces.push(Piece::Capture(n)),
            }
            rest = &after[digits..];
        }
    }
    literal(&mut pieces, rest)?;
    Ok(pieces)
}

/// The host the client asked for, without port, if it is a plain host name or IP literal.
fn request_host(req: &RequestHeader) -> Option<&str> {
    let authority = match req.uri.authority() {
        Some(a) => a.as_str(),
        None => req.headers.get(HOST)?.to_str().ok()?,
    };
    let host_port = authority.rsplit('@').next()?;
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        });
    ok.then_some(host)
}

impl Redirect {
    /// Builds the plugin from its config.
    pub fn new(c: RedirectConfig) -> Result<Self, ConfigError> {
        let target = match (c.to, c.https) {
            (Some(_), true) => {
                return Err(ConfigError::whole(
                    "set either `to` or `https: true`, not both",
                ))
            }
            (None, false) => {
                return Err(ConfigError::whole(
                    "set `to` (where to redirect) or `https: true`",
                ))
            }
            (Some(to), false) => {
                if c.https_port.is_some() {
                    return Err(ConfigError::at(
                        "https_port",
                        "only applies with `https: true`",
                    ));
                }
                if to.is_empty() {
                    return Err(ConfigError::at("to", "must not be empty"));
                }
                let regex = c
                    .regex
                    .as_deref()
                    .map(|r| Regex::new(r).map_err(|e| ConfigError::at("regex", regex_error(&e))))
                    .transpose()?;
                let groups = regex.as_ref().map(|r| r.captures_len() - 1);
                let template = parse_template(&to, groups)?;
                let needs_host = template
                    .iter()
                    .any(|p| matches!(p, Piece::Name(_, Some(Var::Host))));
                Target::To {
                    template,
                    regex,
                    needs_host,
                }
            }
            (None, true) => {
                if c.regex.is_some() {
                    return Err(ConfigError::at("regex", "only applies with `to`"));
                }
                if c.https_port == Some(0) {
                    return Err(ConfigError::at("https_port", "must be a port (1-65535)"));
                }
                Target::Https {
                    port: c.https_port.filter(|p| *p != 443),
                }
            }
        };
        let status = match c.status {
            None if matches!(target, Target::Https { .. }) => 301,
            None => 302,
            Some(s @ (301 | 302 | 307 | 308)) => s,
            Some(s) => {
                return Err(ConfigError::at(
                    "status",
                    format!("{s} is not a redirect status; expected 301, 302, 307 or 308"),
                ))
            }
        };
        Ok(Redirect { target, status })
    }

    /// The URL to redirect to; `Ok(None)` when this request is not redirected, `Err` with a
    /// response when it cannot be.
    fn location(
        &self,
        req: &RequestHeader,
        ctx: &RequestContext,
    ) -> Result<Option<String>, PluginResponse> {
        let bad_host = || PluginResponse::error(400, "the request has no valid Host");
        match &self.target {
            Target::Https { port } => {
                if ctx.tls {
                    return Ok(None);
                }
                let host = request_host(req).ok_or_else(bad_host)?;
                let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut out = String::with_capacity(16 + host.len() + target.len());
                out.push_str("https://");
                out.push_str(host);
                if let Some(p) = port {
                    out.push(':');
                    out.push_str(&p.to_string());
                }
                out.push_str(target);
                Ok(Some(out))
            }
            Target::To {
                template,
                regex,
                needs_host,
            } => {
                let path = if ctx.path.is_empty() {
                    req.uri.path()
                } else {
                    ctx.path.as_str()
                };
                let captures = match regex {
                    Some(re) => match re.captures(path) {
                        Some(c) => Some(c),
                        None => return Ok(None),
                    },
                    None => None,
                };
                let host = if *needs_host {
                    request_host(req).ok_or_else(bad_host)?
                } else {
                    ""
                };
                let mut out = String::with_capacity(64);
                for piece in template {
                    match piece {
                        Piece::Literal(l) => out.push_str(l),
                        Piece::Capture(n) => {
                            if let Some(m) = captures.as_ref().and_then(|c| c.get(*n)) {
                                out.push_str(m.as_str());
                            }
                        }
                        Piece::Name(name, var) => {
                            if let Some(v) = ctx.path_param(name) {
                                out.push_str(v);
                                continue;
                            }
                            match var {
                                Some(Var::Path) => out.push_str(path),
                                Some(Var::Query) => out.push_str(req.uri.query().unwrap_or("")),
                                Some(Var::Uri) => out
                                    .push_str(req.uri.path_and_query().map_or("/", |p| p.as_str())),
                                Some(Var::Host) => out.push_str(host),
                                Some(Var::Scheme) => {
                                    out.push_str(if ctx.tls { "https" } else { "http" })
                                }
                                None => {}
                            }
                        }
                    }
                }
                Ok(Some(out))
            }
        }
    }
}

#[async_trait]
impl Plugin for Redirect {
    fn name(&self) -> &str {
        "redirect"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let location = match self.location(req, ctx) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Flow::Continue),
            Err(resp) => return Ok(Flow::Respond(resp)),
        };
        let value = HeaderValue::from_str(&location).or_err(
            ErrorType::InternalError,
            "redirect location as a header value",
        )?;
        let body = format!("Redirecting to {location}\n");
        Ok(Flow::Respond(
            PluginResponse::new(self.status)
                .with_header(LOCATION, value)
                .with_header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )
                .with_body(body),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use std::sync::Arc;

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), config).unwrap()
    }

    fn refused(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), config)
            .err()
            .expect("config must be refused")
    }

    /// Runs the request; returns (status, Location, body) or None when it passed through.
    async fn run(h: &mut PluginHarness, req: RequestHeader) -> Option<(u16, String, String)> {
        let mut req = req;
        h.ctx.path.clear();
        match h.request(&mut req).await.unwrap() {
            Flow::Continue => None,
            Flow::Respond(r) => Some((
                r.status,
                r.header("location")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default(),
                String::from_utf8(r.body.to_vec()).unwrap(),
            )),
        }
    }

    #[tokio::test]
    async fn template_with_params_and_variables() {
        let mut h = harness(serde_json::json!({
            "to": "{scheme}://{host}/v2/users/{id}?from={path}&q={query}&u={uri}&x={nope}"
        }));
        h.ctx.path_params = vec![(Arc::from("id"), "42".to_string())];
        let req = request("GET", "/users/42?a=1")
            .header("host", "api.test:8080")
            .build();
        let (status, loc, body) = run(&mut h, req).await.unwrap();
        assert_eq!(status, 302);
        assert_eq!(
            loc,
            "http://api.test/v2/users/42?from=/users/42&q=a=1&u=/users/42?a=1&x="
        );
        assert_eq!(body, format!("Redirecting to {loc}\n"));
    }

    #[tokio::test]
    async fn path_parameter_wins_over_a_variable_of_the_same_name() {
        let mut h = harness(serde_json::json!({"to": "/files/{path}", "status": 307}));
        h.ctx.path_params = vec![(Arc::from("path"), "a.txt".to_string())];
        let (status, loc, _) = run(&mut h, request("GET", "/old/a.txt").build())
            .await
            .unwrap();
        assert_eq!((status, loc.as_str()), (307, "/files/a.txt"));
    }

    #[tokio::test]
    async fn regex_captures_and_no_match_passes() {
        let mut h = harness(serde_json::json!({
            "to": "/new/$2/$1$$", "regex": "^/old/([a-z]+)/([0-9]+)$", "status": 301
        }));
        let (status, loc, _) = run(&mut h, request("GET", "/old/abc/12").build())
            .await
            .unwrap();
        assert_eq!((status, loc.as_str()), (301, "/new/12/abc$$"));
        assert!(run(&mut h, request("GET", "/old/ABC/12").build())
            .await
            .is_none());
    }

    #[tokio::test]
    async fn https_redirect_keeps_host_path_and_query() {
        let mut h = harness(serde_json::json!({"https": true}));
        let req = request("POST", "/a/b?c=d")
            .header("host", "shop.test:8080")
            .build();
        let (status, loc, _) = run(&mut h, req).await.unwrap();
        assert_eq!((status, loc.as_str()), (301, "https://shop.test/a/b?c=d"));

        h.ctx.tls = true;
        assert!(run(
            &mut h,
            request("GET", "/").header("host", "shop.test").build()
        )
        .await
        .is_none());
    }

    #[tokio::test]
    async fn https_port_and_status() {
        let mut h = harness(serde_json::json!({"https": true, "https_port": 8443, "status": 308}));
        let req = request("GET", "/x").header("host", "[::1]:8080").build();
        let (status, loc, _) = run(&mut h, req).await.unwrap();
        assert_eq!((status, loc.as_str()), (308, "https://[::1]:8443/x"));
        let mut h = harness(serde_json::json!({"https": true, "https_port": 443}));
        let req = request("GET", "/x").header("host", "a.test").build();
        assert_eq!(run(&mut h, req).await.unwrap().1, "https://a.test/x");
    }

    #[tokio::test]
    async fn bad_or_missing_host_is_a_400() {
        let mut h = harness(serde_json::json!({"https": true}));
        let (status, _, body) = run(&mut h, request("GET", "/").build()).await.unwrap();
        assert_eq!(status, 400);
        assert!(body.contains("no valid Host"), "{body}");
        let req = request("GET", "/").header("host", "a.test/evil").build();
        assert_eq!(run(&mut h, req).await.unwrap().0, 400);
        // A template without {host} does not need one.
        let mut h = harness(serde_json::json!({"to": "/elsewhere"}));
        assert_eq!(
            run(&mut h, request("GET", "/").build()).await.unwrap().1,
            "/elsewhere"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let e = refused(serde_json::json!({}));
        assert!(e.message.contains("set `to`"), "{e}");
        let e = refused(serde_json::json!({"to": "/a", "https": true}));
        assert!(e.message.contains("not both"), "{e}");
        let e = refused(serde_json::json!({"to": "/a", "status": 303}));
        assert_eq!(e.path, "status");
        assert_eq!(
            e.message,
            "303 is not a redirect status; expected 301, 302, 307 or 308"
        );
        let e = refused(serde_json::json!({"https": true, "status": 200}));
        assert_eq!(e.path, "status");
        let e = refused(serde_json::json!({"to": "/$1"}));
        assert_eq!(e.path, "to");
        assert!(e.message.contains("no `regex`"), "{e}");
        let e = refused(serde_json::json!({"to": "/$2", "regex": "^/(a)$"}));
        assert!(e.message.contains("has 1 group"), "{e}");
        let e = refused(serde_json::json!({"to": "/x", "regex": "("}));
        assert_eq!(e.path, "regex");
        assert!(e.message.starts_with("invalid regex"), "{e}");
        let e = refused(serde_json::json!({"to": "/{id"}));
        assert!(e.message.contains("unclosed"), "{e}");
        let e = refused(serde_json::json!({"to": "/{ id }"}));
        assert!(e.message.contains("not a name"), "{e}");
        let e = refused(serde_json::json!({"to": "/a\nb"}));
        assert_eq!(e.path, "to");
        let e = refused(serde_json::json!({"to": ""}));
        assert_eq!(e.path, "to");
        let e = refused(serde_json::json!({"to": "/a", "https_port": 8443}));
        assert_eq!(e.path, "https_port");
        let e = refused(serde_json::json!({"https": true, "regex": "x"}));
        assert_eq!(e.path, "regex");
        let e = refused(serde_json::json!({"https": true, "https_port": 0}));
        assert_eq!(e.path, "https_port");
        let e = refused(serde_json::json!({"to": "/a", "code": 301}));
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
