//! `proxy-rewrite`: change the path, host, method and headers of the request sent upstream.

use super::header_ops::{HeaderEdits, HeaderEditsConfig};
use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use async_trait::async_trait;
use http::header::{HeaderValue, HOST};
use http::Method;
use pingora_error::Result;
use pingora_http::RequestHeader;
use regex::Regex;
use serde::Deserialize;

/// Config of `proxy-rewrite`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRewriteConfig {
    /// The new path, a template: `{name}` is the route's path parameter `name`; with `regex`,
    /// `$1`… are its capture groups.
    pub path: Option<String>,
    /// A regex matched against the (normalised) request path; with `replacement`.
    pub regex: Option<String>,
    /// The replacement for `regex` (`$1`, `${name}` refer to its groups).
    pub replacement: Option<String>,
    /// The `Host` header to send upstream.
    pub host: Option<String>,
    /// The method to send upstream.
    pub method: Option<String>,
    /// Header edits on the upstream request.
    #[serde(default)]
    pub headers: HeaderEditsConfig,
}

enum PathRewrite {
    None,
    Template(Vec<Piece>),
    Regex(Regex, String),
}

enum Piece {
    Literal(String),
    Param(String),
}

/// The `proxy-rewrite` plugin.
pub struct ProxyRewrite {
    path: PathRewrite,
    host: Option<HeaderValue>,
    method: Option<Method>,
    headers: HeaderEdits,
}

/// Priority of `proxy-rewrite`.
pub const PRIORITY: i32 = 1008;

/// The factory for `proxy-rewrite`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("proxy-rewrite", PRIORITY, |c: ProxyRewriteConfig, _env| {
        ProxyRewrite::new(c)
    })
}

fn parse_template(t: &str) -> Result<Vec<Piece>, ConfigError> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| ConfigError::at("path", format!("unclosed `{{` in `{t}`")))?;
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_string()));
        }
        let name = &rest[open + 1..open + close];
        if name.is_empty() {
            return Err(ConfigError::at("path", format!("empty `{{}}` in `{t}`")));
        }
        pieces.push(Piece::Param(name.to_string()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_string()));
    }
    Ok(pieces)
}

impl ProxyRewrite {
    /// Builds the plugin from its config.
    pub fn new(c: ProxyRewriteConfig) -> Result<Self, ConfigError> {
        let path = match (&c.path, &c.regex, &c.replacement) {
            (None, None, None) => PathRewrite::None,
            (Some(p), None, None) => {
                if !p.starts_with('/') {
                    return Err(ConfigError::at("path", "must start with `/`"));
                }
                PathRewrite::Template(parse_template(p)?)
            }
            (None, Some(r), Some(rep)) => PathRewrite::Regex(
                Regex::new(r)
                    .map_err(|e| ConfigError::at("regex", crate::factory::regex_error(&e)))?,
                rep.clone(),
            ),
            (None, Some(_), None) => {
                return Err(ConfigError::at("replacement", "required with `regex`"))
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::at("regex", "required with `replacement`"))
            }
            (Some(_), _, _) => {
                return Err(ConfigError::whole(
                    "set either `path` or `regex` + `replacement`, not both",
                ))
            }
        };
        let host = c
            .host
            .as_deref()
            .map(|h| {
                HeaderValue::from_str(h).map_err(|_| ConfigError::at("host", "not a valid host"))
            })
            .transpose()?;
        let method = c
            .method
            .as_deref()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| ConfigError::at("method", format!("`{m}` is not a method")))
            })
            .transpose()?;
        Ok(ProxyRewrite {
            path,
            host,
            method,
            headers: HeaderEdits::compile(&c.headers, "headers")?,
        })
    }

    fn rewritten_path(&self, ctx: &RequestContext) -> Option<String> {
        match &self.path {
            PathRewrite::None => None,
            PathRewrite::Template(pieces) => {
                let mut out = String::with_capacity(ctx.path.len() + 16);
                for p in pieces {
                    match p {
                        Piece::Literal(l) => out.push_str(l),
                        Piece::Param(name) => out.push_str(ctx.path_param(name).unwrap_or("")),
                    }
                }
                Some(out)
            }
            PathRewrite::Regex(re, rep) => {
                if re.is_match(&ctx.path) {
                    Some(re.replace(&ctx.path, rep.as_str()).into_owned())
                } else {
                    None
                }
            }
        }
    }
}

#[async_trait]
impl Plugin for ProxyRewrite {
    fn name(&self) -> &str {
        "proxy-rewrite"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::UPSTREAM_REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if let Some(mut p) = self.rewritten_path(ctx) {
            if let Some(q) = req.uri.query() {
                p.push('?');
                p.push_str(q);
            }
            ctx.upstream_path = Some(p);
        }
        Ok(Flow::Continue)
    }

    async fn upstream_request_filter(
        &self,
        upstream_req: &mut RequestHeader,
        _ctx: &mut RequestContext,
    ) -> Result<()> {
        if let Some(h) = &self.host {
            upstream_req.insert_header(HOST, h.clone())?;
        }
        if let Some(m) = &self.method {
            upstream_req.set_method(m.clone());
        }
        self.headers.apply_request(upstream_req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use std::sync::Arc;

    #[tokio::test]
    async fn template_uses_path_params_and_keeps_query() {
        let mut h =
            PluginHarness::from_config(&factory(), serde_json::json!({"path": "/v2/users/{id}"}))
                .unwrap();
        h.ctx.path = "/users/42".into();
        h.ctx.path_params = vec![(Arc::from("id"), "42".to_string())];
        h.request(&mut request("GET", "/users/42?x=1").build())
            .await
            .unwrap();
        assert_eq!(h.ctx.upstream_path.as_deref(), Some("/v2/users/42?x=1"));
    }

    #[tokio::test]
    async fn regex_replacement() {
        let mut h = PluginHarness::from_config(
            &factory(),
            serde_json::json!({"regex": "^/api/(.*)$", "replacement": "/$1", "method": "post"}),
        )
        .unwrap();
        h.ctx.path = "/api/a/b".into();
        let mut req = request("GET", "/api/a/b").build();
        h.request(&mut req).await.unwrap();
        assert_eq!(h.ctx.upstream_path.as_deref(), Some("/a/b"));
        h.upstream_request(&mut req).await.unwrap();
        assert_eq!(req.method, Method::POST);
    }

    #[test]
    fn bad_regex_is_reported() {
        let err = PluginHarness::from_config(
            &factory(),
            serde_json::json!({"regex": "(", "replacement": "/"}),
        )
        .err()
        .unwrap();
        assert_eq!(err.path, "regex");
    }
}
