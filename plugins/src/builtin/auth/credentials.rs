//! What the auth plugins share: reading consumers' credential objects at build time, finding
//! credentials in a request (query parameters, cookies) and removing them before the request
//! goes upstream, and the 401 answer.

use crate::context::{Consumer, RequestContext};
use crate::factory::{parse_config, BuildEnv, ConfigError};
use crate::response::PluginResponse;
use http::header::{HeaderValue, COOKIE, WWW_AUTHENTICATE};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;

/// The realm named in `WWW-Authenticate` challenges unless a plugin lets users choose one.
pub(crate) const REALM: &str = "gatehouse";

/// Marks a request that an auth plugin authenticated without identifying a consumer (a
/// `jwt-auth` token from a JWKS that names no consumer), so that later auth plugins step
/// aside as they do when [`RequestContext::consumer`] is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated;

/// Whether an auth plugin earlier in the chain already authenticated the request.
pub(crate) fn already_authenticated(ctx: &RequestContext) -> bool {
    ctx.consumer.is_some() || ctx.state::<Authenticated>().is_some()
}

/// Every consumer holding a credential for `plugin`, with the credential parsed into `T`.
///
/// A credential that does not parse is a config error naming the consumer, e.g.
/// `consumer "alice": key-auth credential needs `key``.
pub(crate) fn consumer_credentials<T: DeserializeOwned>(
    env: &BuildEnv<'_>,
    plugin: &str,
) -> Result<Vec<(Arc<Consumer>, T)>, ConfigError> {
    let mut out = Vec::new();
    for consumer in env.consumers {
        let Some(value) = consumer.credential(plugin) else {
            continue;
        };
        let parsed =
            parse_config::<T>(value).map_err(|e| credential_error(&consumer.id, plugin, &e))?;
        out.push((consumer.clone(), parsed));
    }
    Ok(out)
}

fn credential_error(consumer: &str, plugin: &str, e: &ConfigError) -> ConfigError {
    let message = match e.message.strip_prefix("missing field ") {
        Some(field) => format!("consumer \"{consumer}\": {plugin} credential needs {field}"),
        // An unknown field's message names it already.
        None if e.path.is_empty() || e.message.starts_with("unknown field") => {
            format!(
                "consumer \"{consumer}\": {plugin} credential: {}",
                e.message
            )
        }
        None => format!(
            "consumer \"{consumer}\": {plugin} credential `{}`: {}",
            e.path, e.message
        ),
    };
    ConfigError::whole(message)
}

/// A config error about one consumer's credential.
pub(crate) fn bad_credential(consumer: &str, plugin: &str, message: &str) -> ConfigError {
    ConfigError::whole(format!(
        "consumer \"{consumer}\": {plugin} credential {message}"
    ))
}

/// A 401 with the gateway's JSON error body and the `WWW-Authenticate` challenge.
pub(crate) fn unauthorized(message: &str, challenge: &HeaderValue) -> PluginResponse {
    PluginResponse::error(401, message).with_header(WWW_AUTHENTICATE, challenge.clone())
}

/// A `WWW-Authenticate` value built from config-controlled text.
pub(crate) fn challenge(value: &str, key: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value)
        .map_err(|_| ConfigError::at(key, "must not contain control characters"))
}

/// The raw (still percent-encoded) value of the first query parameter named `name` in the
/// query string `query` (the part after `?`); parameter names are compared decoded.
pub(crate) fn raw_query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        percent_decode(k).is_some_and(|k| k == name).then_some(v)
    })
}

/// The value of `name` in the query string `query`, percent-decoded (`+` is a space, as in
/// HTML forms). The first occurrence wins; `None` when the parameter is absent or its value
/// is not valid UTF-8 once decoded.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    raw_query_param(query, name).and_then(percent_decode)
}

/// `path_and_query` without every `name=...` query parameter; `None` when it had none. The
/// other parameters keep their order and their encoding.
pub(crate) fn without_query_param(path_and_query: &str, name: &str) -> Option<String> {
    let (path, query) = path_and_query.split_once('?')?;
    let mut removed = false;
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if percent_decode(key).is_some_and(|k| k == name) {
            removed = true;
            continue;
        }
        if !kept.is_empty() {
            kept.push('&');
        }
        kept.push_str(pair);
    }
    if !removed {
        return None;
    }
    let mut out = String::with_capacity(path.len() + 1 + kept.len());
    out.push_str(path);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept);
    }
    Some(out)
}

/// Removes the query parameter `name` from what the upstream and later plugins see: the
/// request's own URI and [`RequestContext::upstream_path`] (set to the path without it).
pub(crate) fn hide_query_param(
    req: &mut RequestHeader,
    ctx: &mut RequestContext,
    name: &str,
) -> Result<()> {
    let original = req
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let Some(cleaned) = without_query_param(original, name) else {
        return Ok(());
    };
    let upstream = match ctx.upstream_path.take() {
        Some(p) => without_query_param(&p, name).unwrap_or(p),
        None => cleaned.clone(),
    };
    let uri = cleaned
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InternalError, "query without a credential", e))?;
    req.set_uri(uri);
    ctx.upstream_path = Some(upstream);
    Ok(())
}

/// Percent-decodes `s` (and `+` as a space); `None` when the result is not UTF-8. Borrows
/// when there is nothing to decode.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The value of the cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Removes the cookie `name` from the request's `Cookie` headers (the header goes when no
/// other cookie is left).
pub(crate) fn remove_cookie(req: &mut RequestHeader, name: &str) -> Result<()> {
    if cookie(req, name).is_none() {
        return Ok(());
    }
    let mut kept: Vec<&str> = Vec::new();
    for v in req
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for kv in v.split(';').map(str::trim).filter(|kv| !kv.is_empty()) {
            if kv.split_once('=').map_or(kv, |(k, _)| k) != name {
                kept.push(kv);
            }
        }
    }
    let joined = kept.join("; ");
    req.remove_header(&COOKIE);
    if !joined.is_empty() {
        req.insert_header(COOKIE, joined)?;
    }
    Ok(())
}

/// The credential after an HTTP authentication scheme (`Bearer abc` → `abc` for `Bearer`),
/// the scheme matched without regard to case.
pub(crate) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim_start().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::request;

    #[test]
    fn query_params_decode_and_remove() {
        assert_eq!(
            query_param("a=1&apikey=k%2By+z", "apikey").as_deref(),
            Some("k+y z")
        );
        assert_eq!(query_param("a=1&apikey=", "apikey").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "apikey"), None);
        assert_eq!(query_param("api%6Bey=x", "apikey").as_deref(), Some("x"));
        assert_eq!(
            without_query_param("/p?a=1&apikey=k&b=2&apikey=j", "apikey").as_deref(),
            Some("/p?a=1&b=2")
        );
        assert_eq!(
            without_query_param("/p?apikey=k", "apikey").as_deref(),
            Some("/p")
        );
        assert_eq!(without_query_param("/p?a=1", "apikey"), None);
        assert_eq!(without_query_param("/p", "apikey"), None);
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("%41%4").as_deref(), Some("A%4"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%"), Some(Cow::Owned("%".into())));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn cookies_found_and_removed() {
        let mut req = request("GET", "/")
            .header("cookie", "a=1; token=abc")
            .header("cookie", "b=2")
            .build();
        assert_eq!(cookie(&req, "token"), Some("abc"));
        remove_cookie(&mut req, "token").unwrap();
        assert_eq!(req.headers.get(COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(cookie(&req, "token"), None);
    }

    #[test]
    fn schemes_are_case_insensitive() {
        assert_eq!(strip_scheme("bearer  abc", "Bearer"), Some("abc"));
        assert_eq!(strip_scheme("Basic abc", "Bearer"), None);
        assert_eq!(strip_scheme("Bearer", "Bearer"), None);
    }
}
