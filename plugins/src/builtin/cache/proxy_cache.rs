//! `proxy-cache`: store upstream responses and answer later requests from the store, with
//! HTTP caching semantics (RFC 9111) carried out by the engine on pingora-cache.
//!
//! The plugin decides, per request, whether the cache is used, bypassed or purged, and builds
//! the cache key from the configured parts; it leaves a [`CacheRequest`] in the context. The
//! engine does the lookup, revalidation, locking, storing and the `X-Cache-Status` header.

use crate::builtin::security::ip_restriction::IpSet;
use crate::cache_policy::{CacheAction, CachePolicy, CacheRequest, CacheStorage};
use crate::context::RequestContext;
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::{ByteSize, Duration};
use async_trait::async_trait;
use http::header::{HeaderName, CACHE_CONTROL, COOKIE, HOST, PRAGMA};
use http::Method;
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;

/// Config of `proxy-cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyCacheConfig {
    /// `memory` (default) or `disk`; without it, `disk` when a `disk` block is given.
    pub storage: Option<StorageKind>,
    /// Settings of the memory store.
    pub memory: Option<MemoryConfig>,
    /// Settings of the disk store (required with `storage: disk`).
    pub disk: Option<DiskConfig>,
    /// Methods whose responses are cached: `GET` and/or `HEAD` (default both).
    pub methods: Option<Vec<String>>,
    /// Response statuses that may be stored (default 200, 301, 404).
    pub statuses: Option<Vec<u16>>,
    /// The parts the cache key is made of (default `[host, path, query]`).
    pub key: Option<Vec<String>>,
    /// Freshness for storable responses that state none; none by default.
    pub ttl_default: Option<Duration>,
    /// Bodies larger than this are not stored (default 1MiB).
    pub max_body: Option<ByteSize>,
    /// How long a request waits for a concurrent miss on the same key to fill the cache
    /// (default 5s; `0s` turns the lock off).
    pub lock_timeout: Option<Duration>,
    /// `stale-while-revalidate` for responses that carry none (default 0s).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` for responses that carry none (default 0s).
    pub stale_if_error: Option<Duration>,
    /// Accept `PURGE` requests that remove one entry; off when absent.
    pub purge: Option<PurgeConfig>,
}

/// `storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// In process memory.
    Memory,
    /// Files in a directory.
    Disk,
}

/// `memory`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// The byte budget (default 64MiB).
    pub max_size: Option<ByteSize>,
    /// The store's name; instances naming the same zone share one store (default: one store
    /// per place the plugin is configured).
    pub zone: Option<String>,
}

/// `disk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The directory (created if missing; relative paths are resolved against the gateway's
    /// working directory).
    pub path: String,
    /// The byte budget (default 1GiB).
    pub max_size: Option<ByteSize>,
}

/// `purge`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeConfig {
    /// Client addresses or CIDR blocks that may purge.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A secret that `PURGE` requests must carry in `header`.
    pub key: Option<String>,
    /// The header carrying the secret (default `X-Purge-Key`).
    pub header: Option<String>,
}

/// One part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Host,
    Path,
    /// The whole query string, arguments sorted.
    Query,
    /// The values of one query argument.
    QueryArg(String),
    Header(HeaderName),
    Cookie(String),
    Consumer,
}

impl KeyPart {
    fn parse(s: &str) -> std::result::Result<KeyPart, String> {
        let t = s.trim();
        let (kind, arg) = match t.split_once(':') {
            Some((k, a)) => (k, Some(a.trim())),
            None => (t, None),
        };
        fn need_arg<'a>(a: Option<&'a str>, t: &str, kind: &str) -> Result<&'a str, String> {
            match a {
                Some(a) if !a.is_empty() => Ok(a),
                _ => Err(format!(
                    "`{t}` needs a name after the colon, e.g. `{kind}:NAME`"
                )),
            }
        }
        match (kind, arg) {
            ("host", None) => Ok(KeyPart::Host),
            ("path", None) => Ok(KeyPart::Path),
            ("query", None) => Ok(KeyPart::Query),
            ("consumer", None) => Ok(KeyPart::Consumer),
            ("query", a) => Ok(KeyPart::QueryArg(need_arg(a, t, kind)?.to_string())),
            ("cookie", a) => Ok(KeyPart::Cookie(need_arg(a, t, kind)?.to_string())),
            ("header", a) => {
                let name = need_arg(a, t, kind)?;
                HeaderName::from_bytes(name.as_bytes())
                    .map(KeyPart::Header)
                    .map_err(|_| format!("`{name}` is not a valid header name"))
            }
            _ => Err(format!(
                "unknown key part `{t}`; expected host, path, query, query:NAME, header:NAME, \
                 cookie:NAME or consumer"
            )),
        }
    }

    /// A one-byte tag so that parts of different kinds never frame alike.
    fn tag(&self) -> u8 {
        match self {
            KeyPart::Host => b'h',
            KeyPart::Path => b'p',
            KeyPart::Query => b'q',
            KeyPart::QueryArg(_) => b'a',
            KeyPart::Header(_) => b'H',
            KeyPart::Cookie(_) => b'c',
            KeyPart::Consumer => b'u',
        }
    }
}

/// Who may purge.
struct PurgeAccess {
    allow: Option<IpSet>,
    key: Option<Vec<u8>>,
    header: HeaderName,
}

impl PurgeAccess {
    fn permits(&self, req: &RequestHeader, ctx: &RequestContext) -> bool {
        let ip_ok = match &self.allow {
            Some(set) => ctx.client_ip.is_some_and(|ip| set.contains(ip)),
            None => true,
        };
        let key_ok = match &self.key {
            Some(secret) => req
                .headers
                .get(&self.header)
                .is_some_and(|v| bool::from(v.as_bytes().ct_eq(secret))),
            None => true,
        };
        ip_ok && key_ok
    }
}

/// The `proxy-cache` plugin.
pub struct ProxyCache {
    policy: Arc<CachePolicy>,
    get: bool,
    head: bool,
    key: Vec<KeyPart>,
    purge: Option<PurgeAccess>,
}

/// Priority of `proxy-cache`: after auth and traffic control (a cached answer is still
/// authorised and counted), before the transforms.
pub const PRIORITY: i32 = 980;

/// The factory for `proxy-cache`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("proxy-cache", PRIORITY, ProxyCache::new)
}

const DEFAULT_MEMORY_SIZE: u64 = 64 << 20;
const DEFAULT_DISK_SIZE: u64 = 1 << 30;
const DEFAULT_MAX_BODY: u64 = 1 << 20;
const DEFAULT_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest `lock_timeout`: a fill that takes longer lets waiting requests compete again.
pub const MAX_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn storage(c: &ProxyCacheConfig, env: &BuildEnv<'_>) -> Result<CacheStorage, ConfigError> {
    let kind = c.storage.unwrap_or(if c.disk.is_some() {
        StorageKind::Disk
    } else {
        StorageKind::Memory
    });
    match kind {
        StorageKind::Memory => {
            if c.disk.is_some() {
                return Err(ConfigError::at(
                    "disk",
                    "`disk` is set but `storage` is `memory`; remove one of them",
                ));
            }
            let m = c.memory.as_ref();
            let max_size = m
                .and_then(|m| m.max_size)
                .map_or(DEFAULT_MEMORY_SIZE, ByteSize::bytes);
            if max_size == 0 {
                return Err(ConfigError::at("memory.max_size", "must be larger than 0"));
            }
            let zone = match m.and_then(|m| m.zone.as_deref()) {
                Some(z) if z.trim().is_empty() => {
                    return Err(ConfigError::at("memory.zone", "must not be empty"))
                }
                Some(z) => format!("zone:{}", z.trim()),
                None => env.scope.to_string(),
            };
            Ok(CacheStorage::Memory {
                zone: zone.into(),
                max_size,
            })
        }
        StorageKind::Disk => {
            if c.memory.is_some() {
                return Err(ConfigError::at(
                    "memory",
                    "`memory` is set but `storage` is `disk`; remove one of them",
                ));
            }
            let Some(d) = &c.disk else {
                return Err(ConfigError::at(
                    "disk",
                    "`storage: disk` needs `disk: { path: DIR }`",
                ));
            };
            if d.path.trim().is_empty() {
                return Err(ConfigError::at("disk.path", "must not be empty"));
            }
            let max_size = d.max_size.map_or(DEFAULT_DISK_SIZE, ByteSize::bytes);
            if max_size == 0 {
                return Err(ConfigError::at("disk.max_size", "must be larger than 0"));
            }
            let path = env.resolve_path(d.path.trim());
            prepare_dir(&path).map_err(|m| ConfigError::at("disk.path", m))?;
            Ok(CacheStorage::Disk { path, max_size })
        }
    }
}

/// Creates `dir` if needed and checks that files can be written in it.
fn prepare_dir(dir: &std::path::Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    let probe = dir.join(".gatehouse-write-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| format!("cannot write in directory {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn methods(list: Option<&[String]>) -> Result<(bool, bool), ConfigError> {
    let Some(list) = list else {
        return Ok((true, true));
    };
    if list.is_empty() {
        return Err(ConfigError::at(
            "methods",
            "must name at least one method (GET, HEAD)",
        ));
    }
    let (mut get, mut head) = (false, false);
    for (i, m) in list.iter().enumerate() {
        match m.trim().to_ascii_uppercase().as_str() {
            "GET" => get = true,
            "HEAD" => head = true,
            _ => {
                return Err(ConfigError::at(
                    format!("methods[{i}]"),
                    format!("`{m}` cannot be cached; only GET and HEAD responses are cacheable"),
                ))
            }
        }
    }
    Ok((get, head))
}

fn statuses(list: Option<&[u16]>) -> Result<Vec<u16>, ConfigError> {
    let Some(list) = list else {
        return Ok(vec![200, 301, 404]);
    };
    if list.is_empty() {
        return Err(ConfigError::at("statuses", "must name at least one status"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, &s) in list.iter().enumerate() {
        let why = match s {
            200..=599 if s == 206 => Some("partial responses (206) are not stored"),
            200..=599 if s == 304 => {
                Some("304 is answered from the stored response, it is not stored itself")
            }
            200..=599 => None,
            _ => Some("not a final HTTP status (200-599)"),
        };
        if let Some(why) = why {
            return Err(ConfigError::at(
                format!("statuses[{i}]"),
                format!("{s}: {why}"),
            ));
        }
        out.push(s);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn key_parts(list: Option<&[String]>) -> Result<Vec<KeyPart>, ConfigError> {
    let Some(list) = list else {
        return Ok(vec![KeyPart::Host, KeyPart::Path, KeyPart::Query]);
    };
    if list.is_empty() {
        return Err(ConfigError::at("key", "must name at least one part"));
    }
    let mut parts: Vec<KeyPart> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let part = KeyPart::parse(s).map_err(|m| ConfigError::at(format!("key[{i}]"), m))?;
        if parts.contains(&part) {
            return Err(ConfigError::at(
                format!("key[{i}]"),
                format!("`{s}` is listed twice"),
            ));
        }
        parts.push(part);
    }
    Ok(parts)
}

fn purge_access(c: Option<&PurgeConfig>) -> Result<Option<PurgeAccess>, ConfigError> {
    let Some(c) = c else {
        return Ok(None);
    };
    if c.allow.is_empty() && c.key.is_none() {
        return Err(ConfigError::at(
            "purge",
            "set `allow` (client addresses) and/or `key` (a secret): PURGE is never open to all",
        ));
    }
    let allow = if c.allow.is_empty() {
        None
    } else {
        Some(IpSet::parse(&c.allow, "purge.allow")?)
    };
    let key = match &c.key {
        Some(k) if k.is_empty() => return Err(ConfigError::at("purge.key", "must not be empty")),
        Some(k) => Some(k.as_bytes().to_vec()),
        None => None,
    };
    let header_name = c.header.as_deref().unwrap_or("X-Purge-Key");
    let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ConfigError::at(
            "purge.header",
            format!("`{header_name}` is not a valid header name"),
        )
    })?;
    Ok(Some(PurgeAccess { allow, key, header }))
}

impl ProxyCache {
    /// Builds the plugin from its config.
    pub fn new(c: ProxyCacheConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        let storage = storage(&c, env)?;
        let (get, head) = methods(c.methods.as_deref())?;
        let statuses = statuses(c.statuses.as_deref())?;
        let key = key_parts(c.key.as_deref())?;
        let max_body = c.max_body.map_or(DEFAULT_MAX_BODY, ByteSize::bytes);
        if max_body == 0 {
            return Err(ConfigError::at("max_body", "must be larger than 0"));
        }
        let (budget, budget_key) = match &storage {
            CacheStorage::Memory { max_size, .. } => (*max_size, "memory.max_size"),
            CacheStorage::Disk { max_size, .. } => (*max_size, "disk.max_size"),
        };
        if max_body > budget {
            return Err(ConfigError::at(
                "max_body",
                format!(
                    "{} is larger than {budget_key} ({}): no such body could be stored",
                    ByteSize(max_body),
                    ByteSize(budget)
                ),
            ));
        }
        if let Some(ttl) = c.ttl_default {
            if ttl.get().is_zero() {
                return Err(ConfigError::at(
                    "ttl_default",
                    "must be longer than 0s (leave it out to store only responses that state \
                     their freshness)",
                ));
            }
        }
        let lock_timeout = c.lock_timeout.map_or(DEFAULT_LOCK_TIMEOUT, Duration::get);
        if lock_timeout > MAX_LOCK_TIMEOUT {
            return Err(ConfigError::at(
                "lock_timeout",
                format!("{} is longer than the limit of 1m", Duration(lock_timeout)),
            ));
        }
        let purge = purge_access(c.purge.as_ref())?;
        let policy = CachePolicy {
            storage,
            statuses,
            ttl_default: c.ttl_default.map(Duration::get),
            max_body,
            lock_timeout: (!lock_timeout.is_zero()).then_some(lock_timeout),
            stale_while_revalidate: c
                .stale_while_revalidate
                .map_or(Default::default(), Duration::get),
            stale_if_error: c.stale_if_error.map_or(Default::default(), Duration::get),
            resolved: OnceLock::new(),
        };
        Ok(ProxyCache {
            policy: Arc::new(policy),
            get,
            head,
            key,
            purge,
        })
    }

    /// The primary cache key of `req`: the route, then each configured part as
    /// `tag, present, length (u32, big endian), bytes`.
    fn key(&self, req: &RequestHeader, ctx: &RequestContext) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        push(&mut out, b'r', ctx.route_id.as_deref().map(str::as_bytes));
        for part in &self.key {
            let tag = part.tag();
            match part {
                KeyPart::Host => {
                    let host = request_host(req);
                    push(&mut out, tag, host.as_deref().map(str::as_bytes));
                }
                KeyPart::Path => push(&mut out, tag, Some(ctx.path.as_bytes())),
                KeyPart::Query => {
                    let sorted = req.uri.query().map(sorted_query);
                    push(&mut out, tag, sorted.as_deref().map(str::as_bytes));
                }
                KeyPart::QueryArg(name) => {
                    let values = req.uri.query().and_then(|q| query_values(q, name));
                    push_named(&mut out, tag, name.as_bytes(), values.as_deref());
                }
                KeyPart::Header(name) => {
                    let mut values: Option<Vec<u8>> = None;
                    for v in req.headers.get_all(name) {
                        let buf = values.get_or_insert_with(Vec::new);
                        if !buf.is_empty() {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(v.as_bytes());
                    }
                    push_named(&mut out, tag, name.as_str().as_bytes(), values.as_deref());
                }
                KeyPart::Cookie(name) => {
                    let value = cookie(req, name);
                    push_named(&mut out, tag, name.as_bytes(), value.map(str::as_bytes));
                }
                KeyPart::Consumer => {
                    let id = ctx.consumer.as_ref().map(|c| c.id.as_bytes());
                    push(&mut out, tag, id);
                }
            }
        }
        out
    }
}

fn push(out: &mut Vec<u8>, tag: u8, value: Option<&[u8]>) {
    out.push(tag);
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

fn push_named(out: &mut Vec<u8>, tag: u8, name: &[u8], value: Option<&[u8]>) {
    push(out, tag, Some(name));
    push(out, tag, value);
}

/// The request's host, lowercase, without port or trailing dot.
fn request_host(req: &RequestHeader) -> Option<String> {
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(HOST).and_then(|v| v.to_str().ok()))?;
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |i| &authority[..=i])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The query's arguments in sorted order, empty ones dropped: `b=2&a=1` and `a=1&b=2` are one
/// entry.
fn sorted_query(q: &str) -> String {
    let mut args: Vec<&str> = q.split('&').filter(|a| !a.is_empty()).collect();
    args.sort_unstable();
    args.join("&")
}

/// The values of argument `name` in query `q`, in order, joined by `&`; `None` when absent.
fn query_values(q: &str, name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for arg in q.split('&') {
        let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
        if k == name {
            let buf = out.get_or_insert_with(Vec::new);
            if !buf.is_empty() {
                buf.push(b'&');
            }
            buf.extend_from_slice(v.as_bytes());
        }
    }
    out
}

fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The directives of the request's `Cache-Control` that matter here: (`no-store`, `no-cache`).
fn request_directives(req: &RequestHeader) -> (bool, bool) {
    let mut no_store = false;
    let mut no_cache = false;
    let mut has_cc = false;
    for v in req.headers.get_all(CACHE_CONTROL) {
        has_cc = true;
        for d in v.as_bytes().split(|&b| b == b',') {
            let d = d.trim_ascii();
            let name = d.split(|&b| b == b'=').next().unwrap_or(d).trim_ascii();
            no_store |= name.eq_ignore_ascii_case(b"no-store");
            no_cache |= name.eq_ignore_ascii_case(b"no-cache");
        }
    }
    // RFC 9111 §5.4: `Pragma: no-cache` counts only without a `Cache-Control` header.
    if !has_cc {
        no_cache = req
            .headers
            .get_all(PRAGMA)
            .iter()
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"no-cache"));
    }
    (no_store, no_cache)
}

#[async_trait]
impl Plugin for ProxyCache {
    fn name(&self) -> &str {
        "proxy-cache"
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
        let action = if req.method.as_str() == "PURGE" && self.purge.is_some() {
            let allowed = self.purge.as_ref().is_some_and(|p| p.permits(req, ctx));
            if !allowed {
                return Ok(Flow::Respond(PluginResponse::error(
                    403,
                    "purging the cache is not allowed",
                )));
            }
            CacheAction::Purge {
                key: self.key(req, ctx),
            }
        } else {
            let method_cached = (self.get && req.method == Method::GET)
                || (self.head && req.method == Method::HEAD);
            let (no_store, no_cache) = request_directives(req);
            if !method_cached || no_store {
                CacheAction::Bypass
            } else {
                CacheAction::Use {
                    key: self.key(req, ctx),
                    revalidate: no_cache,
                }
            }
        };
        ctx.set_state(CacheRequest {
            policy: self.policy.clone(),
            action,
        });
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Consumer;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use serde_json::json;

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), config).unwrap()
    }

    fn build_err(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), config)
            .err()
            .expect("the config must be refused")
    }

    async fn action(h: &mut PluginHarness, req: &mut RequestHeader) -> CacheAction {
        h.ctx.path = req.uri.path().to_string();
        let flow = h.request(req).await.unwrap();
        assert!(matches!(flow, Flow::Continue));
        h.ctx.take_state::<CacheRequest>().unwrap().action
    }

    fn key_of(a: CacheAction) -> Vec<u8> {
        match a {
            CacheAction::Use { key, .. } | CacheAction::Purge { key } => key,
            CacheAction::Bypass => panic!("bypassed"),
        }
    }

    #[tokio::test]
    async fn defaults_cache_get_and_head_with_host_path_and_sorted_query() {
        let mut h = harness(json!({}));
        let a = action(
            &mut h,
            &mut request("GET", "/a?b=2&a=1")
                .header("host", "API.example.com:8080")
                .build(),
        )
        .await;
        let b = action(
            &mut h,
            &mut request("HEAD", "/a?a=1&b=2")
                .header("host", "api.example.com")
                .build(),
        )
        .await;
        assert!(matches!(
            a,
            CacheAction::Use {
                revalidate: false,
                ..
            }
        ));
        assert_eq!(
            key_of(a),
            key_of(b),
            "HEAD and GET, query order and port share a key"
        );
        let c = action(
            &mut h,
            &mut request("GET", "/a?a=1")
                .header("host", "api.example.com")
                .build(),
        )
        .await;
        let d = action(
            &mut h,
            &mut request("GET", "/b?a=1")
                .header("host", "api.example.com")
                .build(),
        )
        .await;
        let e = action(
            &mut h,
            &mut request("GET", "/a?a=1")
                .header("host", "other.example.com")
                .build(),
        )
        .await;
        let (c, d, e) = (key_of(c), key_of(d), key_of(e));
        assert_ne!(c, d);
        assert_ne!(c, e);
        let post = action(&mut h, &mut request("POST", "/a").build()).await;
        assert_eq!(post, CacheAction::Bypass);
    }

    #[tokio::test]
    async fn the_policy_carries_the_configured_values() {
        let mut h = harness(json!({
            "statuses": [404, 200, 200], "ttl_default": "30s", "max_body": "2KiB",
            "lock_timeout": "0s", "stale_if_error": "1m", "memory": {"max_size": "1MiB", "zone": "shared"}
        }));
        h.request(&mut request("GET", "/").build()).await.unwrap();
        let state = h.ctx.state::<CacheRequest>().unwrap();
        let p = &state.policy;
        assert_eq!(p.statuses, vec![200, 404]);
        assert!(p.stores_status(404) && !p.stores_status(500));
        assert_eq!(p.ttl_default, Some(std::time::Duration::from_secs(30)));
        assert_eq!(p.max_body, 2048);
        assert_eq!(p.lock_timeout, None);
        assert_eq!(p.stale_if_error, std::time::Duration::from_secs(60));
        assert_eq!(p.stale_while_revalidate, std::time::Duration::ZERO);
        assert_eq!(
            p.storage,
            CacheStorage::Memory {
                zone: "zone:shared".into(),
                max_size: 1 << 20
            }
        );
    }

    #[tokio::test]
    async fn zone_defaults_to_the_scope() {
        let env = HarnessEnv {
            scope: "service:users".into(),
            ..HarnessEnv::default()
        };
        let mut h = PluginHarness::from_config_with(&factory(), json!({}), &env).unwrap();
        h.request(&mut request("GET", "/").build()).await.unwrap();
        let state = h.ctx.state::<CacheRequest>().unwrap();
        assert_eq!(
            state.policy.storage,
            CacheStorage::Memory {
                zone: "service:users".into(),
                max_size: 64 << 20
            }
        );
    }

    async fn k(h: &mut PluginHarness, uri: &str, lang: &str, cookie: &str) -> Vec<u8> {
        let mut req = request("GET", uri)
            .header("accept-language", lang)
            .header("cookie", cookie)
            .build();
        key_of(action(h, &mut req).await)
    }

    #[tokio::test]
    async fn chosen_query_args_headers_cookies_and_consumer() {
        let mut h = harness(json!({
            "key": ["path", "query:page", "header:Accept-Language", "cookie:region", "consumer"]
        }));
        let base = k(&mut h, "/p?page=1&utm=x", "en", "region=eu; other=1").await;
        // Arguments and cookies outside the key do not matter.
        assert_eq!(
            base,
            k(&mut h, "/p?utm=y&page=1", "en", "other=2; region=eu").await
        );
        assert_ne!(base, k(&mut h, "/p?page=2", "en", "region=eu").await);
        assert_ne!(base, k(&mut h, "/p?page=1", "fr", "region=eu").await);
        assert_ne!(base, k(&mut h, "/p?page=1", "en", "region=us").await);
        // Absent and empty are different.
        assert_ne!(
            k(&mut h, "/p", "en", "").await,
            k(&mut h, "/p?page=", "en", "").await
        );
        h.ctx.consumer = Some(Arc::new(Consumer {
            id: "alice".into(),
            groups: vec![],
            labels: Default::default(),
            credentials: Default::default(),
        }));
        assert_ne!(base, k(&mut h, "/p?page=1", "en", "region=eu").await);
    }

    #[tokio::test]
    async fn request_no_store_bypasses_and_no_cache_revalidates() {
        let mut h = harness(json!({}));
        let a = action(
            &mut h,
            &mut request("GET", "/")
                .header("cache-control", "no-store")
                .build(),
        )
        .await;
        assert_eq!(a, CacheAction::Bypass);
        let a = action(
            &mut h,
            &mut request("GET", "/")
                .header("cache-control", "max-age=0, no-cache")
                .build(),
        )
        .await;
        assert!(matches!(
            a,
            CacheAction::Use {
                revalidate: true,
                ..
            }
        ));
        let a = action(
            &mut h,
            &mut request("GET", "/").header("pragma", "no-cache").build(),
        )
        .await;
        assert!(matches!(
            a,
            CacheAction::Use {
                revalidate: true,
                ..
            }
        ));
        let a = action(
            &mut h,
            &mut request("GET", "/")
                .header("pragma", "no-cache")
                .header("cache-control", "max-age=5")
                .build(),
        )
        .await;
        assert!(matches!(
            a,
            CacheAction::Use {
                revalidate: false,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn methods_can_be_narrowed() {
        let mut h = harness(json!({"methods": ["get"]}));
        assert_eq!(
            action(&mut h, &mut request("HEAD", "/").build()).await,
            CacheAction::Bypass
        );
        assert!(matches!(
            action(&mut h, &mut request("GET", "/").build()).await,
            CacheAction::Use { .. }
        ));
    }

    #[tokio::test]
    async fn purge_needs_an_allowed_address_and_the_key() {
        let mut h = harness(json!({"purge": {"allow": ["127.0.0.0/8"], "key": "s3cret"}}));
        let get_key = key_of(action(&mut h, &mut request("GET", "/x").build()).await);

        let mut ok = request("PURGE", "/x")
            .header("x-purge-key", "s3cret")
            .build();
        assert_eq!(
            action(&mut h, &mut ok).await,
            CacheAction::Purge { key: get_key }
        );

        for req in [
            request("PURGE", "/x").build(),
            request("PURGE", "/x")
                .header("x-purge-key", "wrong")
                .build(),
        ] {
            let mut req = req;
            match h.request(&mut req).await.unwrap() {
                Flow::Respond(r) => {
                    assert_eq!(r.status, 403);
                    assert!(String::from_utf8_lossy(&r.body).contains("not allowed"));
                }
                Flow::Continue => panic!("refused purge must be answered"),
            }
        }
        h.ctx.client_ip = Some("10.1.1.1".parse().unwrap());
        let mut outsider = request("PURGE", "/x")
            .header("x-purge-key", "s3cret")
            .build();
        assert!(
            matches!(h.request(&mut outsider).await.unwrap(), Flow::Respond(r) if r.status == 403)
        );
    }

    #[tokio::test]
    async fn purge_off_treats_the_method_as_uncached() {
        let mut h = harness(json!({}));
        assert_eq!(
            action(&mut h, &mut request("PURGE", "/").build()).await,
            CacheAction::Bypass
        );
        let mut h = harness(json!({"purge": {"key": "k", "header": "X-Secret"}}));
        let mut req = request("PURGE", "/").header("x-secret", "k").build();
        assert!(matches!(
            action(&mut h, &mut req).await,
            CacheAction::Purge { .. }
        ));
    }

    #[test]
    fn disk_storage_creates_its_directory() {
        let dir = std::env::temp_dir().join(format!("gatehouse-pc-{}", std::process::id()));
        let path = dir.join("nested");
        let h = harness(json!({"disk": {"path": path.display().to_string(), "max_size": "10MiB"}}));
        drop(h);
        assert!(path.is_dir());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (
                json!({"methods": ["POST"]}),
                "methods[0]",
                "only GET and HEAD",
            ),
            (json!({"methods": []}), "methods", "at least one"),
            (json!({"statuses": [206]}), "statuses[0]", "partial"),
            (json!({"statuses": [99]}), "statuses[0]", "not a final"),
            (json!({"key": ["url"]}), "key[0]", "unknown key part `url`"),
            (json!({"key": ["header:"]}), "key[0]", "needs a name"),
            (
                json!({"key": ["header:bad name"]}),
                "key[0]",
                "not a valid header name",
            ),
            (json!({"key": ["path", "path"]}), "key[1]", "twice"),
            (json!({"key": []}), "key", "at least one"),
            (json!({"storage": "disk"}), "disk", "needs `disk"),
            (
                json!({"storage": "memory", "disk": {"path": "/tmp/x"}}),
                "disk",
                "remove one",
            ),
            (
                json!({"memory": {"max_size": 0}}),
                "memory.max_size",
                "larger than 0",
            ),
            (
                json!({"memory": {"max_size": "1KiB"}}),
                "max_body",
                "larger than memory.max_size",
            ),
            (
                json!({"ttl_default": "0s"}),
                "ttl_default",
                "longer than 0s",
            ),
            (json!({"lock_timeout": "2m"}), "lock_timeout", "limit"),
            (json!({"purge": {}}), "purge", "never open to all"),
            (
                json!({"purge": {"allow": ["nope"]}}),
                "purge.allow[0]",
                "not an IP",
            ),
            (json!({"purge": {"key": ""}}), "purge.key", "empty"),
            (json!({"storage": "tape"}), "storage", "unknown variant"),
            (json!({"colour": "red"}), "colour", "unknown field"),
        ];
        for (config, path, message) in cases {
            let e = build_err(config.clone());
            assert_eq!(e.path, path, "{config}: {e}");
            assert!(e.message.contains(message), "{config}: {e}");
        }
    }

    #[test]
    fn unwritable_disk_path_is_refused() {
        let file = std::env::temp_dir().join(format!("gatehouse-pc-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let e = build_err(json!({"disk": {"path": file.join("sub").display().to_string()}}));
        assert_eq!(e.path, "disk.path");
        assert!(e.message.contains("cannot create directory"), "{e}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn helpers() {
        assert_eq!(sorted_query("b=2&&a=1&c"), "a=1&b=2&c");
        assert_eq!(
            query_values("a=1&b=2&a=3", "a").as_deref(),
            Some(&b"1&3"[..])
        );
        assert_eq!(query_values("a=1", "b"), None);
        assert_eq!(query_values("a", "a").as_deref(), Some(&b""[..]));
    }
}
