//! `limit-conn`: at most `max` requests in flight at once for each key; the others are
//! refused at once (503 by default) rather than queued.

use super::limit_key::{KeyConfig, LimitKey};
use super::rate_limit::{build_store, OnStoreError, RedisConfig, StoreKind};
use crate::context::RequestContext;
use crate::factory::{BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::store::RateLimitStore;
use async_trait::async_trait;
use http::header::{HeaderValue, RETRY_AFTER};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Config of `limit-conn`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConnConfig {
    /// Requests in flight at once per key.
    pub max: u64,
    /// Which requests share the limit (default `ip`).
    #[serde(default)]
    pub key: KeyConfig,
    /// Status of a refusal: 503 (default) or 429.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Where slots are held: `local` (this process; the default) or `redis` (shared by every
    /// node, so `max` holds for the whole fleet).
    #[serde(default)]
    pub store: StoreKind,
    /// The Redis store's settings, with `store: redis` (as for `rate-limit`; `sync_interval`
    /// does not apply: slots are always taken in Redis).
    pub redis: Option<RedisConfig>,
    /// What to do with a request when the store fails: `allow` (default) or `deny` (503).
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

fn default_status() -> u16 {
    503
}

/// The `limit-conn` plugin.
pub struct LimitConn {
    max: u64,
    key: LimitKey,
    status: u16,
    store: Arc<dyn RateLimitStore>,
    on_store_error: OnStoreError,
}

/// Priority of `limit-conn`: the first of the traffic controls, so a refused request costs
/// no rate-limit budget.
pub const PRIORITY: i32 = 1003;

/// The factory for `limit-conn`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("limit-conn", PRIORITY, |c: LimitConnConfig, env| {
        LimitConn::new(c, env)
    })
}

impl LimitConn {
    /// Builds the plugin from its config; slots are held in the gateway's shared local
    /// store, so requests in flight across a config reload still release theirs.
    pub fn new(c: LimitConnConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.max == 0 {
            return Err(ConfigError::at("max", "must be at least 1"));
        }
        if c.status != 429 && c.status != 503 {
            return Err(ConfigError::at(
                "status",
                format!("{} is not allowed; expected 429 or 503", c.status),
            ));
        }
        let key = LimitKey::compile(&c.key, "key")?
            .with_prefix(format!("limit-conn\n{}\n{}\n", env.scope, c.max));
        if c.redis.as_ref().is_some_and(|r| r.sync_interval.is_some()) {
            return Err(ConfigError::at(
                "redis.sync_interval",
                "does not apply to limit-conn (slots are always taken in Redis); remove it",
            ));
        }
        let store = build_store(c.store, c.redis.as_ref(), env)?;
        Ok(Self::with_store(c.max, key, c.status, store).on_store_error(c.on_store_error))
    }

    /// A limiter of `max` in-flight requests per key, holding its slots in `store`.
    pub fn with_store(
        max: u64,
        key: LimitKey,
        status: u16,
        store: Arc<dyn RateLimitStore>,
    ) -> Self {
        LimitConn {
            max,
            key,
            status,
            store,
            on_store_error: OnStoreError::Allow,
        }
    }

    /// What to do when the store fails (default: let the request through).
    pub fn on_store_error(mut self, action: OnStoreError) -> Self {
        self.on_store_error = action;
        self
    }
}

/// A slot this request holds. Given back in `logging`; if the request ends without
/// `logging` (its task was dropped), the slot is given back when the context is dropped.
struct Slot {
    store: Arc<dyn RateLimitStore>,
    key: String,
    token: u64,
    released: AtomicBool,
}

impl Slot {
    /// Claims the right to release; true exactly once.
    fn claim(&self) -> bool {
        !self.released.swap(true, Ordering::AcqRel)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.claim() {
            let store = self.store.clone();
            let key = std::mem::take(&mut self.key);
            let token = self.token;
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        if let Err(e) = store.release(&key, token).await {
                            log::warn!("limit-conn: could not release a slot: {e}");
                        }
                    });
                }
                Err(_) => log::warn!("limit-conn: a slot was dropped outside a runtime"),
            }
        }
    }
}

/// The per-request state: shared so that the context's `Clone` bound holds; the slot is
/// released once, whichever copy goes last.
#[derive(Clone)]
struct HeldSlot(Arc<Slot>);

#[async_trait]
impl Plugin for LimitConn {
    fn name(&self) -> &str {
        "limit-conn"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::LOGGING
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let key = self.key.key(req, ctx);
        let permit = match self.store.acquire(&key, self.max).await {
            Ok(p) => p,
            Err(e) => {
                // The store reports its own failures (log line, metric).
                log::debug!("limit-conn: {e}");
                return Ok(match self.on_store_error {
                    OnStoreError::Allow => Flow::Continue,
                    OnStoreError::Deny => Flow::Respond(
                        PluginResponse::error(503, "concurrency limit unavailable")
                            .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
                    ),
                });
            }
        };
        if !permit.admitted {
            return Ok(Flow::Respond(
                PluginResponse::error(self.status, "too many concurrent requests")
                    .with_header(RETRY_AFTER, HeaderValue::from_static("1")),
            ));
        }
        ctx.set_state(HeldSlot(Arc::new(Slot {
            store: self.store.clone(),
            key,
            token: permit.token,
            released: AtomicBool::new(false),
        })));
        Ok(Flow::Continue)
    }

    async fn logging(&self, _req: &RequestHeader, _status: u16, ctx: &mut RequestContext) {
        if let Some(HeldSlot(slot)) = ctx.take_state::<HeldSlot>() {
            if slot.claim() {
                if let Err(e) = slot.store.release(&slot.key, slot.token).await {
                    log::warn!("limit-conn: could not release a slot: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    use crate::store::LocalStore;

    fn plugin_with_store(max: u64, status: u16) -> (Arc<dyn Plugin>, Arc<LocalStore>) {
        let store = Arc::new(LocalStore::new());
        let key = LimitKey::compile(&KeyConfig::default(), "key").unwrap();
        let p = LimitConn::with_store(max, key, status, store.clone());
        (Arc::new(p), store)
    }

    async fn admitted(h: &mut PluginHarness) -> bool {
        matches!(
            h.request(&mut request("GET", "/").build()).await.unwrap(),
            Flow::Continue
        )
    }

    #[tokio::test]
    async fn refuses_beyond_max_and_frees_in_logging() {
        let (p, store) = plugin_with_store(2, 503);
        let mut a = PluginHarness::new(p.clone());
        let mut b = PluginHarness::new(p.clone());
        let mut c = PluginHarness::new(p.clone());
        assert!(admitted(&mut a).await);
        assert!(admitted(&mut b).await);
        let Flow::Respond(r) = c.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!("the third must be refused");
        };
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").unwrap(), "1");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"error": "too many concurrent requests", "status": 503})
        );
        // The refused request holds nothing: its logging releases nothing.
        c.logging(&request("GET", "/").build(), 503).await;
        assert!(!store.acquire_now("ip=127.0.0.1", 2).admitted);

        a.logging(&request("GET", "/").build(), 200).await;
        // Logging twice (or a later drop) does not give back a second slot.
        a.logging(&request("GET", "/").build(), 200).await;
        drop(a);
        let mut d = PluginHarness::new(p.clone());
        assert!(admitted(&mut d).await);
        let mut e = PluginHarness::new(p);
        assert!(!admitted(&mut e).await, "exactly one slot was freed");
    }

    #[tokio::test]
    async fn a_dropped_request_gives_its_slot_back() {
        let (p, store) = plugin_with_store(1, 429);
        let mut a = PluginHarness::new(p.clone());
        assert!(admitted(&mut a).await);
        drop(a); // no logging: the task was cancelled
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(store.slot_keys(), 0);
        let mut b = PluginHarness::new(p);
        assert!(admitted(&mut b).await);
    }

    #[tokio::test]
    async fn status_429_and_key_isolation() {
        let mut h = PluginHarness::from_config(
            &factory(),
            json!({"max": 1, "key": "header:x-user", "status": 429}),
        )
        .unwrap();
        let mut a = request("GET", "/").header("x-user", "a").build();
        let mut b = request("GET", "/").header("x-user", "b").build();
        assert!(matches!(h.request(&mut a).await.unwrap(), Flow::Continue));
        assert!(matches!(h.request(&mut b).await.unwrap(), Flow::Continue));
        let Flow::Respond(r) = h.request(&mut a).await.unwrap() else {
            panic!("a second `a` must be refused");
        };
        assert_eq!(r.status, 429);
    }

    #[test]
    fn config_errors() {
        let err = |v| {
            PluginHarness::from_config(&factory(), v)
                .err()
                .expect("refused")
        };
        let e = err(json!({"max": 0}));
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("max", "must be at least 1")
        );
        let e = err(json!({"max": 1, "status": 500}));
        assert_eq!(e.path, "status");
        assert_eq!(e.message, "500 is not allowed; expected 429 or 503");
        let e = err(json!({"max": 1, "key": ["ip", "nope"]}));
        assert_eq!(e.path, "key[1]");
        let e = err(json!({}));
        assert_eq!(e.message, "missing field `max`");
        let e = err(json!({"max": 1, "burst": 2}));
        assert!(e.message.contains("unknown field `burst`"));
        let e = err(json!({"max": 1, "store": "redis"}));
        assert_eq!(e.path, "redis");
        let e = err(json!({"max": 1, "redis": {"url": "redis://127.0.0.1:6379"}}));
        assert_eq!(e.path, "redis");
        let e = err(json!({"max": 1, "store": "redis", "redis": {"url": "nope"}}));
        assert_eq!(e.path, "redis.url");
        let e = err(json!({
            "max": 1, "store": "redis",
            "redis": {"url": "redis://127.0.0.1:6379", "sync_interval": "1s"}
        }));
        assert_eq!(e.path, "redis.sync_interval");
        let e = err(json!({"max": 1, "on_store_error": "maybe"}));
        assert_eq!(e.path, "on_store_error");
        // Valid Redis settings build without connecting.
        PluginHarness::from_config(
            &factory(),
            json!({"max": 1, "store": "redis", "redis": {"url": "redis://127.0.0.1:1"}}),
        )
        .unwrap();
    }

    #[tokio::test]
    async fn unreachable_redis_follows_on_store_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let mut h = PluginHarness::from_config(
            &factory(),
            json!({"max": 1, "store": "redis", "redis": {"url": url}}),
        )
        .unwrap();
        assert!(admitted(&mut h).await, "allow is the default");
        let mut h = PluginHarness::from_config(
            &factory(),
            json!({"max": 1, "store": "redis", "redis": {"url": url}, "on_store_error": "deny"}),
        )
        .unwrap();
        let Flow::Respond(r) = h.request(&mut request("GET", "/").build()).await.unwrap() else {
            panic!("deny must answer");
        };
        assert_eq!(r.status, 503);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "concurrency limit unavailable");
    }
}
