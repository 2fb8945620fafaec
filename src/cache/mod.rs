//! HTTP caching on pingora-cache: what the `ProxyHttp` cache hooks of
//! [`GatewayProxy`](crate::proxy::GatewayProxy) do with the [`CacheRequest`] that the
//! `proxy-cache` plugin left in the request context.
//!
//! ```text
//! request_filter (plugins) ── proxy-cache: CacheRequest { policy, action }
//! request_cache_filter ────── enable pingora-cache: the policy's store, the lock, max_body
//! cache_key_callback ──────── CacheKey from the plugin's key bytes
//! is_purge ────────────────── PURGE: pingora removes the entry, answers 200 / 404
//! cache_hit_filter ────────── request `no-cache`: revalidate a fresh entry
//! cache_vary_filter ───────── variance from the stored `Vary` and the request's headers
//! response_cache_filter ───── RFC 9111 storability and freshness (response_cacheable)
//! should_serve_stale ──────── stale-while-revalidate, stale-if-error on upstream failures
//! response_filter ─────────── X-Cache-Status, ctx.cache_status
//! logging ─────────────────── gatehouse_cache_requests_total{route,status}
//! ```
//!
//! Stores live in [`storage`]: a memory store with a byte budget and LRU eviction, and a disk
//! store.

pub mod storage;

use gatehouse_plugins::cache_policy::{CacheAction, CachePolicy, CacheRequest};
use gatehouse_plugins::RequestContext;
use http::header::{
    HeaderName, AGE, AUTHORIZATION, CONNECTION, DATE, SET_COOKIE, TE, TRAILER, UPGRADE, VARY,
};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::key::HashBinary;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CacheOptionOverrides, CachePhase, ForcedFreshness,
    NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use prometheus::IntCounterVec;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

/// The response header that tells the client what the cache did.
pub const CACHE_STATUS_HEADER: &str = "x-cache-status";

/// How long one request may hold the fill lock of a key before waiting requests compete for
/// it again; `lock_timeout` (how long they wait) is at most this.
const LOCK_AGE_LIMIT: Duration = Duration::from_secs(60);

static CACHE_LOCK: LazyLock<CacheLock> = LazyLock::new(|| CacheLock::new(LOCK_AGE_LIMIT));

static CACHE_REQUESTS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "gatehouse_cache_requests_total",
        "Requests on routes with proxy-cache, by route and cache status (HIT, MISS, EXPIRED, \
         STALE, REVALIDATED, BYPASS).",
        &["route", "status"]
    )
    .ok()
});

fn request_state(ctx: &RequestContext) -> Option<&CacheRequest> {
    ctx.state::<CacheRequest>()
}

/// `request_cache_filter`: turns pingora-cache on for requests the plugin left a lookup or a
/// purge for.
pub fn request_cache_filter(session: &mut Session, ctx: &mut RequestContext) {
    let Some(state) = request_state(ctx) else {
        return;
    };
    let policy = &state.policy;
    let purge = match state.action {
        CacheAction::Bypass => {
            ctx.cache_status = Some("BYPASS");
            return;
        }
        CacheAction::Use { .. } => false,
        CacheAction::Purge { .. } => true,
    };
    let storage = match storage::resolve(policy) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cache store unavailable, request not cached: {e}");
            ctx.cache_status = Some("BYPASS");
            return;
        }
    };
    let (lock, overrides) = match policy.lock_timeout {
        Some(wait) => {
            let lock: &'static CacheKeyLockImpl = &*CACHE_LOCK;
            let mut o = CacheOptionOverrides::default();
            o.wait_timeout = Some(wait);
            (Some(lock), Some(o))
        }
        None => (None, None),
    };
    session.cache.enable(storage, None, None, lock, overrides);
    session
        .cache
        .set_max_file_size_bytes(usize::try_from(policy.max_body).unwrap_or(usize::MAX));
    if !purge {
        ctx.cache_status = Some("MISS");
    }
}

/// `cache_key_callback`: the key the plugin built.
pub fn cache_key(ctx: &mut RequestContext) -> Result<CacheKey> {
    let key = ctx
        .state_mut::<CacheRequest>()
        .and_then(|s| match &mut s.action {
            CacheAction::Use { key, .. } | CacheAction::Purge { key } => Some(std::mem::take(key)),
            CacheAction::Bypass => None,
        });
    match key {
        Some(k) if !k.is_empty() => Ok(CacheKey::new(k, "")),
        _ => Error::e_explain(ErrorType::InternalError, "no cache key for this request"),
    }
}

/// `is_purge`: an authorised `PURGE`.
pub fn is_purge(ctx: &RequestContext) -> bool {
    request_state(ctx).is_some_and(|s| matches!(s.action, CacheAction::Purge { .. }))
}

/// `cache_hit_filter`: a client's `Cache-Control: no-cache` sends even a fresh entry to the
/// upstream for validation.
pub fn cache_hit_filter(ctx: &mut RequestContext, is_fresh: bool) -> Option<ForcedFreshness> {
    let revalidate = request_state(ctx).is_some_and(|s| {
        matches!(
            s.action,
            CacheAction::Use {
                revalidate: true,
                ..
            }
        )
    });
    let force = is_fresh && revalidate;
    ctx.cache_status = Some(if is_fresh && !force { "HIT" } else { "EXPIRED" });
    force.then_some(ForcedFreshness::ForceExpired)
}

/// The header names a response's `Vary` lists, lowercase.
fn vary_names(headers: &http::HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// `cache_vary_filter`: the variance of `req` under the stored response's `Vary`; `None` when
/// the response does not vary.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for name in vary_names(meta.headers()) {
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(v.as_bytes().trim_ascii());
        }
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

fn header_secs(resp: &ResponseHeader, name: HeaderName) -> Option<u64> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn header_date(resp: &ResponseHeader, name: HeaderName) -> Option<SystemTime> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// Hop-by-hop headers, and those `Connection` names, are not stored (RFC 9111 §3.1); nor is
/// `Age`, which the cache computes when it serves.
fn strip_unstored(header: &mut ResponseHeader) {
    let named: Vec<String> = header
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for n in named {
        header.remove_header(n.as_str());
    }
    for n in [CONNECTION, TE, TRAILER, UPGRADE, AGE] {
        header.remove_header(&n);
    }
    for n in ["keep-alive", "proxy-connection"] {
        header.remove_header(n);
    }
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// `response_cache_filter`: whether `resp` (the answer to `req`) may be stored under
/// `policy`, and its freshness, per RFC 9111:
///
/// - only the policy's statuses; never with `Set-Cookie` or `Vary: *`;
/// - not with `no-store` or `private`, nor for a request with `Authorization` unless
///   `public`, `s-maxage` or `must-revalidate` allow it;
/// - freshness from `s-maxage`, then `max-age`, then `Expires` − `Date`, then
///   `ttl_default`; `no-cache` stores the response as already stale (revalidated on each
///   use); none of these: not stored;
/// - the upstream's `Age` counts against the freshness, and keeps growing on hits;
/// - `stale-while-revalidate` / `stale-if-error` from the response or the policy's
///   defaults; `must-revalidate`, `proxy-revalidate` and `s-maxage` forbid serving stale.
pub fn response_cacheable(
    req: &RequestHeader,
    resp: &ResponseHeader,
    policy: &CachePolicy,
) -> RespCacheable {
    use RespCacheable::Uncacheable;
    let not_stored = Uncacheable(NoCacheReason::OriginNotCache);
    if !policy.stores_status(resp.status.as_u16()) || resp.headers.contains_key(SET_COOKIE) {
        return not_stored;
    }
    if vary_names(&resp.headers).any(|n| n == "*") {
        return not_stored;
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc
        .as_ref()
        .is_some_and(|c| c.is_cacheable() == Cacheable::No)
    {
        return not_stored;
    }
    if req.headers.contains_key(AUTHORIZATION)
        && !cc
            .as_ref()
            .is_some_and(|c| c.allow_caching_authorized_req())
    {
        return not_stored;
    }
    let now = SystemTime::now();
    let expires_ttl = || {
        pingora_cache::filters::calculate_expires_header_time(resp).map(|expires| {
            let date = header_date(resp, DATE).unwrap_or(now);
            expires.duration_since(date).unwrap_or(Duration::ZERO)
        })
    };
    let ttl = cc
        .as_ref()
        .and_then(|c| c.fresh_duration())
        .or_else(expires_ttl)
        .or(policy.ttl_default);
    let Some(ttl) = ttl else {
        return not_stored;
    };
    let age = Duration::from_secs(header_secs(resp, AGE).unwrap_or(0));
    let epoch = now.checked_sub(age).unwrap_or(now);
    let fresh_until = if ttl.is_zero() {
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        epoch
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86400))
    };
    let defaults = CacheMetaDefaults::new(
        |_| None,
        secs_u32(policy.stale_while_revalidate),
        secs_u32(policy.stale_if_error),
    );
    let (swr, sie) =
        pingora_cache::filters::calculate_serve_stale_durations(cc.as_ref(), &defaults);
    let mut header = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut header);
    }
    strip_unstored(&mut header);
    let mut meta = CacheMeta::new(fresh_until, now, swr, sie, header);
    if !age.is_zero() {
        meta.set_epoch_override(epoch);
    }
    RespCacheable::Cacheable(meta)
}

/// `response_cache_filter` for the request in `ctx`.
pub fn response_cache_filter(
    session: &Session,
    resp: &ResponseHeader,
    ctx: &RequestContext,
) -> RespCacheable {
    match request_state(ctx) {
        Some(state) => response_cacheable(session.req_header(), resp, &state.policy),
        None => RespCacheable::Uncacheable(NoCacheReason::Custom("no cache policy")),
    }
}

/// `should_serve_stale`: during revalidation (`error` is `None`) whenever the entry's
/// `stale-while-revalidate` window allows it (pingora checked that already); after an error,
/// when the upstream failed (unreachable, timed out, or answered 5xx) and `stale-if-error`
/// allows it.
pub fn should_serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
}

/// The `X-Cache-Status` value for where pingora-cache ended up.
fn status_of(phase: CachePhase, tentative: Option<&'static str>) -> Option<&'static str> {
    match phase {
        CachePhase::Hit => Some("HIT"),
        CachePhase::Miss => Some("MISS"),
        CachePhase::Expired => Some("EXPIRED"),
        CachePhase::Stale | CachePhase::StaleUpdating => Some("STALE"),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Some("REVALIDATED"),
        CachePhase::Bypass => Some("BYPASS"),
        // Looked up, then not stored (or not lookup-able): what the lookup found stands.
        CachePhase::Disabled(_) | CachePhase::Uninit | CachePhase::CacheKey => tentative,
    }
}

/// `response_filter`: records the cache status in the context and on the response.
pub fn response_filter(session: &mut Session, resp: &mut ResponseHeader, ctx: &mut RequestContext) {
    if request_state(ctx).is_none() {
        return;
    }
    let phase = session.cache.phase();
    if phase == CachePhase::Stale {
        // Stale served because the upstream failed: Pingora does not reuse the client
        // connection after that, so say so rather than let the client send into a closed one.
        session.set_keepalive(None);
    }
    ctx.cache_status = status_of(phase, ctx.cache_status);
    if let Some(status) = ctx.cache_status {
        if let Err(e) = resp.insert_header(CACHE_STATUS_HEADER, status) {
            log::debug!("could not add {CACHE_STATUS_HEADER}: {e}");
        }
    }
}

/// `logging`: counts the request by route and cache status.
pub fn record(ctx: &RequestContext) {
    let (Some(status), Some(counter)) = (ctx.cache_status, CACHE_REQUESTS.as_ref()) else {
        return;
    };
    let route = ctx.route_id.as_deref().unwrap_or("");
    counter.with_label_values(&[route, status]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugins::cache_policy::CacheStorage;
    use std::sync::OnceLock;

    fn policy(ttl_default: Option<u64>) -> CachePolicy {
        CachePolicy {
            storage: CacheStorage::Memory {
                zone: "t".into(),
                max_size: 1 << 20,
            },
            statuses: vec![200, 301, 404],
            ttl_default: ttl_default.map(Duration::from_secs),
            max_body: 1 << 20,
            lock_timeout: None,
            stale_while_revalidate: Duration::from_secs(7),
            stale_if_error: Duration::from_secs(9),
            resolved: OnceLock::new(),
        }
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn get() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    fn meta(r: &ResponseHeader, p: &CachePolicy) -> Option<CacheMeta> {
        match response_cacheable(&get(), r, p) {
            RespCacheable::Cacheable(m) => Some(m),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn freshness_from_the_response() {
        let p = policy(None);
        let m = meta(&resp(200, &[("cache-control", "max-age=60")]), &p).unwrap();
        assert_eq!(m.fresh_sec(), 60);
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (7, 9)
        );
        let m = meta(
            &resp(200, &[("cache-control", "max-age=0, s-maxage=30")]),
            &p,
        )
        .unwrap();
        assert_eq!(m.fresh_sec(), 30);
        assert_eq!(m.stale_if_error_sec(), 0, "s-maxage forbids serving stale");
        let m = meta(
            &resp(
                200,
                &[(
                    "cache-control",
                    "max-age=5, stale-if-error=100, stale-while-revalidate=50",
                )],
            ),
            &p,
        )
        .unwrap();
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (50, 100)
        );
        let m = meta(
            &resp(200, &[("cache-control", "max-age=5, must-revalidate")]),
            &p,
        )
        .unwrap();
        assert_eq!(
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
            (0, 0)
        );
        let m = meta(
            &resp(200, &[("cache-control", "no-cache"), ("etag", "\"x\"")]),
            &p,
        )
        .unwrap();
        assert!(!m.is_fresh(SystemTime::now()), "no-cache: stored stale");
    }

    #[test]
    fn expires_counts_from_date() {
        let p = policy(None);
        let date = SystemTime::now() - Duration::from_secs(100);
        let expires = date + Duration::from_secs(130);
        let r = resp(
            200,
            &[
                ("date", &httpdate::fmt_http_date(date)),
                ("expires", &httpdate::fmt_http_date(expires)),
            ],
        );
        let m = meta(&r, &p).unwrap();
        assert!((129..=130).contains(&m.fresh_sec()), "{}", m.fresh_sec());
        let past = resp(200, &[("expires", "0")]);
        assert!(!meta(&past, &p).unwrap().is_fresh(SystemTime::now()));
    }

    #[test]
    fn age_counts_against_freshness() {
        let p = policy(None);
        let m = meta(
            &resp(200, &[("cache-control", "max-age=100"), ("age", "40")]),
            &p,
        )
        .unwrap();
        assert!(m.age() >= Duration::from_secs(40));
        let left = m.fresh_until().duration_since(SystemTime::now()).unwrap();
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(58),
            "{left:?}"
        );
        assert!(
            m.headers().get("age").is_none(),
            "Age is computed when served, not stored"
        );
        let m = meta(
            &resp(200, &[("cache-control", "max-age=10"), ("age", "20")]),
            &p,
        )
        .unwrap();
        assert!(!m.is_fresh(SystemTime::now()));
    }

    #[test]
    fn not_stored() {
        let p = policy(Some(60));
        for (status, headers) in [
            (200, vec![("cache-control", "no-store, max-age=60")]),
            (200, vec![("cache-control", "private, max-age=60")]),
            (
                200,
                vec![("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            ),
            (
                200,
                vec![("cache-control", "max-age=60"), ("vary", "Accept, *")],
            ),
            (500, vec![("cache-control", "max-age=60")]),
            (206, vec![("cache-control", "max-age=60")]),
        ] {
            assert!(
                meta(&resp(status, &headers), &p).is_none(),
                "{status} {headers:?}"
            );
        }
        // No freshness and no default.
        assert!(meta(&resp(200, &[]), &policy(None)).is_none());
        assert_eq!(meta(&resp(200, &[]), &p).unwrap().fresh_sec(), 60);
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let p = policy(None);
        let mut req = get();
        req.insert_header("authorization", "Bearer x").unwrap();
        let cacheable = |cc: &str| {
            response_cacheable(&req, &resp(200, &[("cache-control", cc)]), &p).is_cacheable()
        };
        assert!(!cacheable("max-age=60"));
        assert!(cacheable("public, max-age=60"));
        assert!(cacheable("s-maxage=60"));
        assert!(cacheable("max-age=60, must-revalidate"));
    }

    #[test]
    fn hop_by_hop_and_private_fields_are_not_stored() {
        let p = policy(None);
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=60, private=\"x-user\""),
                ("connection", "x-conn-only"),
                ("x-conn-only", "1"),
                ("keep-alive", "timeout=5"),
                ("x-user", "alice"),
                ("x-kept", "yes"),
            ],
        );
        let m = meta(&r, &p).unwrap();
        for gone in ["connection", "x-conn-only", "keep-alive", "x-user"] {
            assert!(m.headers().get(gone).is_none(), "{gone}");
        }
        assert_eq!(m.headers().get("x-kept").unwrap(), "yes");
    }

    #[test]
    fn variance_follows_vary() {
        let p = policy(None);
        let m = meta(
            &resp(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("vary", "Accept-Language, X-A"),
                ],
            ),
            &p,
        )
        .unwrap();
        let req = |lang: &str| {
            let mut r = get();
            r.insert_header("accept-language", lang).unwrap();
            r
        };
        let en = variance(&m, &req("en")).unwrap();
        assert_eq!(Some(en), variance(&m, &req(" en ")));
        assert_ne!(Some(en), variance(&m, &req("fr")));
        let plain = meta(&resp(200, &[("cache-control", "max-age=60")]), &p).unwrap();
        assert_eq!(variance(&plain, &req("en")), None);
    }

    #[test]
    fn statuses_by_phase() {
        assert_eq!(status_of(CachePhase::Hit, Some("MISS")), Some("HIT"));
        assert_eq!(status_of(CachePhase::StaleUpdating, None), Some("STALE"));
        assert_eq!(
            status_of(
                CachePhase::Disabled(NoCacheReason::OriginNotCache),
                Some("MISS")
            ),
            Some("MISS")
        );
        assert_eq!(
            status_of(
                CachePhase::RevalidatedNoCache(NoCacheReason::OriginNotCache),
                None
            ),
            Some("REVALIDATED")
        );
    }

    #[test]
    fn stale_is_served_for_upstream_failures_only() {
        assert!(should_serve_stale(None));
        let up = Error::create(
            ErrorType::HTTPStatus(503),
            ErrorSource::Upstream,
            None,
            None,
        );
        assert!(should_serve_stale(Some(&up)));
        let down = Error::create(ErrorType::ReadError, ErrorSource::Downstream, None, None);
        assert!(!should_serve_stale(Some(&down)));
    }
}
