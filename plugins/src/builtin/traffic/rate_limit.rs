//! `rate-limit`: at most `count` requests per `period` for each key (client IP, consumer,
//! route, header value, or a combination), counted exactly in fixed windows.

use super::limit_key::{KeyConfig, LimitKey};
use crate::context::RequestContext;
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::store::RateLimitStore;
use crate::units::Duration;
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use std::sync::Arc;

/// Config of `rate-limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests admitted per key per period.
    pub count: u64,
    /// The window length (`1s`, `1m`, `1h`, `1d`).
    pub period: Duration,
    /// Which requests share a budget (default `ip`).
    #[serde(default)]
    pub key: KeyConfig,
    /// Where counters live: `local` (this process; the default) or `redis`.
    #[serde(default)]
    pub store: StoreKind,
    /// The Redis store's settings, with `store: redis`.
    pub redis: Option<RedisConfig>,
    /// What to do with a request when the store fails: `allow` (default) or `deny` (503).
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// `gcra` (default where the store supports it: the local store) or `fixed_window`.
    pub algorithm: Option<Algorithm>,
}

/// `algorithm`: how a budget of `count` per `period` is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Generic cell rate algorithm: a burst of up to `count`, then one request every
    /// `period / count`.
    Gcra,
    /// Windows of `period` that open with their first request; `count` per window.
    FixedWindow,
}

/// `store`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Counters in this process.
    #[default]
    Local,
    /// Counters in Redis, shared by every node.
    Redis,
}

/// `redis`: the Redis store's settings (`url` or `cluster`, `timeout`, `key_prefix`,
/// `sync_interval`), shared with `limit-conn`.
pub use crate::store::redis::RedisConfig;

/// `on_store_error`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Let the request through, without `RateLimit-*` headers.
    #[default]
    Allow,
    /// Answer 503.
    Deny,
}

/// What a counted request's response reports, kept for `response_filter`.
#[derive(Debug, Clone, Copy)]
struct Quota {
    limit: u64,
    remaining: u64,
    reset_secs: u64,
}

/// The `rate-limit` plugin.
pub struct RateLimit {
    count: u64,
    period: std::time::Duration,
    key: LimitKey,
    store: Arc<dyn RateLimitStore>,
    on_store_error: OnStoreError,
    gcra: bool,
}

/// Priority of `rate-limit`: after auth (so `consumer` keys work), after `limit-conn` and
/// `circuit-breaker`.
pub const PRIORITY: i32 = 1001;

/// The `RateLimit-*` headers, in the order of [`quota_values`]: as `HeaderName`s for the 429
/// answer, and as written for an upstream's response (Pingora keeps a `&'static str` name
/// without copying it on insert).
static QUOTA_HEADERS: [(HeaderName, &str); 3] = [
    (
        HeaderName::from_static("ratelimit-limit"),
        "RateLimit-Limit",
    ),
    (
        HeaderName::from_static("ratelimit-remaining"),
        "RateLimit-Remaining",
    ),
    (
        HeaderName::from_static("ratelimit-reset"),
        "RateLimit-Reset",
    ),
];

/// The factory for `rate-limit`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("rate-limit", PRIORITY, |c: RateLimitConfig, env| {
        RateLimit::new(c, env)
    })
}

impl RateLimit {
    /// Builds the plugin from its config. `store: local` counts in the gateway's shared
    /// local store, which outlives config reloads.
    pub fn new(c: RateLimitConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.count == 0 {
            return Err(ConfigError::at(
                "count",
                "must be at least 1 (to refuse every request, use a plugin that answers, e.g. `mock`)",
            ));
        }
        if c.period.get().is_zero() {
            return Err(ConfigError::at(
                "period",
                "must be longer than 0, e.g. `1s`, `1m`, `1h`, `1d`",
            ));
        }
        let key = LimitKey::compile(&c.key, "key")?.with_prefix(format!(
            "rate-limit\n{}\n{}/{}ms\n",
            env.scope,
            c.count,
            c.period.get().as_millis()
        ));
        let store = build_store(c.store, c.redis.as_ref(), env)?;
        let gcra = match c.algorithm {
            Some(Algorithm::Gcra) if !store.supports_gcra() => {
                return Err(ConfigError::at(
                    "algorithm",
                    "this store counts in fixed windows only; use `algorithm: fixed_window`",
                ))
            }
            Some(Algorithm::Gcra) => true,
            Some(Algorithm::FixedWindow) => false,
            None => store.supports_gcra(),
        };
        Ok(Self::with_store(c.count, c.period.get(), key, store, c.on_store_error).with_gcra(gcra))
    }
}

/// The store `store`/`redis` name: the gateway's shared local store, or the Redis store on
/// the process's shared connection to that server. Used by `limit-conn` too.
pub(super) fn build_store(
    kind: StoreKind,
    redis: Option<&RedisConfig>,
    env: &BuildEnv<'_>,
) -> Result<Arc<dyn RateLimitStore>, ConfigError> {
    match (kind, redis) {
        (StoreKind::Local, None) => Ok(env.services.local_store.clone()),
        (StoreKind::Local, Some(_)) => Err(ConfigError::at(
            "redis",
            "only used with `store: redis`; remove it or set `store: redis`",
        )),
        (StoreKind::Redis, None) => Err(ConfigError::at(
            "redis",
            "`store: redis` needs `redis: { url: redis://HOST:PORT }` (or `cluster: [...]`)",
        )),
        (StoreKind::Redis, Some(r)) => Ok(Arc::new(r.build(env.services, "redis")?)),
    }
}

impl RateLimit {
    /// A limiter of `count` per `period` counting in `store`.
    pub fn with_store(
        count: u64,
        period: std::time::Duration,
        key: LimitKey,
        store: Arc<dyn RateLimitStore>,
        on_store_error: OnStoreError,
    ) -> Self {
        RateLimit {
            count,
            period,
            key,
            store,
            on_store_error,
            gcra: false,
        }
    }

    /// Counts with GCRA (`true`) or in fixed windows (`false`, the default of
    /// [`RateLimit::with_store`]).
    pub fn with_gcra(mut self, gcra: bool) -> Self {
        self.gcra = gcra;
        self
    }
}

/// `gatehouse_rate_limit_rejections_total{route}`: requests refused with 429.
static REJECTIONS: std::sync::LazyLock<Option<prometheus::IntCounterVec>> =
    std::sync::LazyLock::new(|| {
        prometheus::register_int_counter_vec!(
            "gatehouse_rate_limit_rejections_total",
            "Requests refused by rate-limit (429), by route.",
            &["route"]
        )
        .ok()
    });

fn quota_values(q: &Quota) -> [HeaderValue; 3] {
    [
        HeaderValue::from(q.limit),
        HeaderValue::from(q.remaining),
        HeaderValue::from(q.reset_secs),
    ]
}

#[async_trait]
impl Plugin for RateLimit {
    fn name(&self) -> &str {
        "rate-limit"
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
        let key = self.key.key(req, ctx);
        let checked = if self.gcra {
            self.store
                .check_gcra(&key, self.count, self.period, 1)
                .await
        } else {
            self.store.check(&key, self.count, self.period, 1).await
        };
        let decision = match checked {
            Ok(d) => d,
            Err(e) => {
                // The store reports its own failures (log line, metric).
                log::debug!("rate-limit: {e}");
                return Ok(match self.on_store_error {
                    OnStoreError::Allow => Flow::Continue,
                    OnStoreError::Deny => Flow::Respond(
                        PluginResponse::error(503, "rate limit unavailable")
                            .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
                    ),
                });
            }
        };
        let quota = Quota {
            limit: decision.limit,
            remaining: decision.remaining,
            reset_secs: decision.reset_secs(),
        };
        ctx.set_state(quota);
        match decision.retry_after_secs() {
            None => Ok(Flow::Continue),
            Some(retry) => {
                if let Some(c) = REJECTIONS.as_ref() {
                    c.with_label_values(&[ctx.route_id.as_deref().unwrap_or("_none")])
                        .inc();
                }
                let mut resp = PluginResponse::error(429, "too many requests")
                    .with_header(RETRY_AFTER, HeaderValue::from(retry));
                let names = QUOTA_HEADERS.iter().map(|(name, _)| name.clone());
                resp.headers.extend(names.zip(quota_values(&quota)));
                Ok(Flow::Respond(resp))
            }
        }
    }

    async fn response_filter(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let Some(q) = ctx.state::<Quota>() {
            for ((_, name), value) in QUOTA_HEADERS.iter().zip(quota_values(q)) {
                resp.insert_header(*name, value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Consumer;
    use crate::store::{Decision, Permit, StoreError, StoreErrorKind};
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), config).unwrap()
    }

    fn build_err(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), config)
            .err()
            .expect("config must be refused")
    }

    fn header(resp: &ResponseHeader, name: &str) -> Option<String> {
        resp.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn gcra_counts_down_then_refuses_with_headers() {
        let mut h = harness(json!({"count": 3, "period": "1m"}));
        for (remaining, reset) in [("2", "20"), ("1", "40"), ("0", "60")] {
            let mut req = request("GET", "/").build();
            assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
            let mut resp = ResponseHeader::build(200, None).unwrap();
            h.response(&mut resp).await.unwrap();
            assert_eq!(
                header(&resp, "ratelimit-remaining").as_deref(),
                Some(remaining)
            );
            assert_eq!(header(&resp, "ratelimit-reset").as_deref(), Some(reset));
        }
        let Flow::Respond(r) = h.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!("the 4th request must be refused");
        };
        assert_eq!(r.status, 429);
        // One request comes back every period / count = 20 s.
        assert_eq!(r.header("retry-after").unwrap(), "20");
        assert_eq!(r.header("ratelimit-remaining").unwrap(), "0");
        assert_eq!(r.header("ratelimit-reset").unwrap(), "60");
    }

    #[tokio::test]
    async fn counts_down_then_refuses_with_headers() {
        let mut h = harness(json!({"count": 3, "period": "1m", "algorithm": "fixed_window"}));
        for remaining in ["2", "1", "0"] {
            let mut req = request("GET", "/").build();
            assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
            let mut resp = ResponseHeader::build(200, None).unwrap();
            h.response(&mut resp).await.unwrap();
            assert_eq!(header(&resp, "ratelimit-limit").as_deref(), Some("3"));
            assert_eq!(
                header(&resp, "ratelimit-remaining").as_deref(),
                Some(remaining)
            );
            assert_eq!(header(&resp, "ratelimit-reset").as_deref(), Some("60"));
        }
        let Flow::Respond(r) = h.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!("the 4th request must be refused");
        };
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after").unwrap(), "60");
        assert_eq!(r.header("ratelimit-limit").unwrap(), "3");
        assert_eq!(r.header("ratelimit-remaining").unwrap(), "0");
        assert_eq!(r.header("ratelimit-reset").unwrap(), "60");
        assert_eq!(r.header("content-type").unwrap(), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"error": "too many requests", "status": 429}));
    }

    #[tokio::test]
    async fn response_filter_replaces_upstream_values_once() {
        let mut h = harness(json!({"count": 5, "period": "10s"}));
        h.request(&mut request("GET", "/").build()).await.unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("RateLimit-Remaining", "999").unwrap();
        h.response(&mut resp).await.unwrap();
        let all: Vec<_> = resp.headers.get_all("ratelimit-remaining").iter().collect();
        assert_eq!(all, vec!["4"]);
    }

    #[tokio::test]
    async fn no_headers_when_the_request_was_not_counted() {
        let mut h = harness(json!({"count": 5, "period": "10s"}));
        let mut resp = ResponseHeader::build(401, None).unwrap();
        h.response(&mut resp).await.unwrap();
        assert!(resp.headers.get("ratelimit-limit").is_none());
    }

    #[tokio::test]
    async fn keys_have_separate_budgets() {
        let mut h = harness(json!({"count": 1, "period": "1m", "key": "header:X-User"}));
        let mut a = request("GET", "/").header("x-user", "a").build();
        let mut b = request("GET", "/").header("x-user", "b").build();
        assert!(matches!(h.request(&mut a).await.unwrap(), Flow::Continue));
        assert!(matches!(h.request(&mut b).await.unwrap(), Flow::Continue));
        assert!(matches!(h.request(&mut a).await.unwrap(), Flow::Respond(_)));
    }

    #[tokio::test]
    async fn consumer_key_without_consumer_uses_the_ip() {
        let mut h = harness(json!({"count": 1, "period": "1m", "key": "consumer"}));
        h.ctx.consumer = Some(Arc::new(Consumer {
            id: "alice".into(),
            groups: vec![],
            labels: Default::default(),
            credentials: Default::default(),
        }));
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        h.ctx.consumer = None;
        assert!(
            matches!(h.request(&mut req).await.unwrap(), Flow::Continue),
            "the IP has its own budget"
        );
        assert!(matches!(
            h.request(&mut req).await.unwrap(),
            Flow::Respond(_)
        ));
    }

    struct BrokenStore;

    #[async_trait]
    impl RateLimitStore for BrokenStore {
        async fn check(
            &self,
            _: &str,
            _: u64,
            _: std::time::Duration,
            _: u64,
        ) -> Result<Decision, StoreError> {
            Err(StoreError::new(StoreErrorKind::Unavailable, "down"))
        }
        async fn acquire(&self, _: &str, _: u64) -> Result<Permit, StoreError> {
            Err(StoreError::new(StoreErrorKind::Unavailable, "down"))
        }
        async fn release(&self, _: &str, _: u64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn broken(on_error: OnStoreError) -> PluginHarness {
        let key = LimitKey::compile(&KeyConfig::default(), "key").unwrap();
        PluginHarness::new(Arc::new(RateLimit::with_store(
            1,
            std::time::Duration::from_secs(1),
            key,
            Arc::new(BrokenStore),
            on_error,
        )))
    }

    #[tokio::test]
    async fn store_errors_allow_or_deny() {
        let mut h = broken(OnStoreError::Allow);
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        h.response(&mut resp).await.unwrap();
        assert!(resp.headers.get("ratelimit-limit").is_none());

        let mut h = broken(OnStoreError::Deny);
        let Flow::Respond(r) = h.request(&mut req).await.unwrap() else {
            panic!("deny must answer");
        };
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").unwrap(), "1");
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = build_err(json!({"count": 0, "period": "1s"}));
        assert_eq!(e.path, "count");
        let e = build_err(json!({"count": 1, "period": "0s"}));
        assert_eq!(e.path, "period");
        let e = build_err(json!({"count": 1, "period": 60}));
        assert_eq!(e.path, "period");
        assert!(e.message.contains("write a unit"), "{}", e.message);
        let e = build_err(json!({"period": "1s"}));
        assert_eq!(e.message, "missing field `count`");
        let e = build_err(json!({"count": 1, "period": "1s", "key": "user"}));
        assert_eq!(e.path, "key");
        let e = build_err(json!({"count": 1, "period": "1s", "store": "memcached"}));
        assert_eq!(e.path, "store");
        let e = build_err(json!({"count": 1, "period": "1s", "on_store_error": "maybe"}));
        assert_eq!(e.path, "on_store_error");
        let e = build_err(json!({"count": 1, "period": "1s", "burst": 3}));
        assert!(e.message.contains("unknown field `burst`"), "{}", e.message);
    }

    #[test]
    fn redis_store_settings_are_checked_at_build() {
        // Valid settings build without connecting (the first request connects).
        harness(json!({
            "count": 1, "period": "1s", "store": "redis",
            "redis": {"url": "redis://127.0.0.1:1", "timeout": "200ms", "key_prefix": "gh:"}
        }));
        harness(json!({
            "count": 1, "period": "1s", "store": "redis",
            "redis": {"url": "redis://127.0.0.1:1", "sync_interval": "100ms"}
        }));
        let e = build_err(json!({"count": 1, "period": "1s", "store": "redis"}));
        assert_eq!(e.path, "redis");
        assert!(e.message.contains("needs `redis:"), "{}", e.message);
        let e = build_err(json!({
            "count": 1, "period": "1s", "store": "redis", "redis": {"url": "localhost:6379"}
        }));
        assert_eq!(e.path, "redis.url");
        let e = build_err(json!({
            "count": 1, "period": "1s", "redis": {"url": "redis://127.0.0.1:6379"}
        }));
        assert_eq!(e.path, "redis");
        assert_eq!(
            e.message,
            "only used with `store: redis`; remove it or set `store: redis`"
        );
        let e = build_err(json!({
            "count": 1, "period": "1s", "store": "redis", "redis": {"uri": "x"}
        }));
        assert_eq!(e.path, "redis.uri");
    }

    #[tokio::test]
    async fn unreachable_redis_follows_on_store_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let mut h = harness(json!({
            "count": 1, "period": "1s", "store": "redis", "redis": {"url": url}
        }));
        let mut req = request("GET", "/").build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let mut h = harness(json!({
            "count": 1, "period": "1s", "store": "redis", "redis": {"url": url},
            "on_store_error": "deny"
        }));
        let Flow::Respond(r) = h.request(&mut req).await.unwrap() else {
            panic!("deny must answer");
        };
        assert_eq!(r.status, 503);
    }
}
