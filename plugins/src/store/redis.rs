//! The Redis store: counters every gateway node shares, for `store: redis` of `rate-limit`
//! and `limit-conn`.
//!
//! ```text
//! SharedServices ── one RedisPool per server (url or cluster seeds), for the process's life
//!                    │  one multiplexed (pipelined) connection, opened at first use and
//!                    │  re-opened after a failure; its I/O runs on the `gatehouse-redis` thread
//!                    ▼
//! RedisStore (one per plugin instance: key prefix, timeout)
//!                    │  check (fixed window) / check_gcra / acquire / release: each one Lua
//!                    │  script, EVALSHA (loaded on NOSCRIPT)
//!                    └─ with sync_interval: Batcher (one per pool and interval, `batch`):
//!                       counts locally, pushes the counts to Redis every interval
//! ```
//! The pool, its back-off, metrics and log are in `pool`.
//!
//! Keys are the plugin's key (scope, limit, client key) after a configurable prefix (default
//! `gatehouse:`), with nothing node-specific in them, so every node counts against the same
//! key. Rate-limit keys expire when their budget is whole again; concurrency keys are sorted
//! sets of slot leases that expire when the node holding them stops renewing them.
//!
//! When Redis fails (refused, dropped, slower than `timeout`), the operation fails at once with
//! a [`StoreError`], the plugin applies its `on_store_error`, the failure is counted in
//! `gatehouse_redis_errors_total` and logged (at most once per 5 s). After a lost connection
//! (or the third timeout in a row), further operations fail fast without waiting, for a
//! back-off that grows from 100 ms to 1 s, after which the next operation tries again:
//! counting resumes within a second of Redis coming back.

mod batch;
mod pool;

pub use pool::RedisPool;

use crate::factory::ConfigError;
use crate::services::SharedServices;
use crate::store::{Decision, Permit, RateLimitStore, StoreError};
use crate::units;
use ::redis::cluster::ClusterClient;
use ::redis::{Client, Script};
use async_trait::async_trait;
use batch::Batcher;
use pool::{lease_ms, ms, slot_member};
use serde::Deserialize;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Default of `redis.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Default of `redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse:";
/// How long a concurrency slot lives in Redis without being renewed: the slots of a node
/// that died holding them are free again after this.
pub const SLOT_LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One Redis server: `redis://[user:password@]host:port[/db]` (`rediss://` for TLS).
    #[serde(default)]
    pub url: Option<String>,
    /// The seed nodes of a Redis Cluster (URLs as for `url`), instead of `url`.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Longest wait for one store operation (default `200ms`).
    #[serde(default)]
    pub timeout: Option<units::Duration>,
    /// Prepended to every key (default `gatehouse:`).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// With a duration: count locally and exchange counts with Redis every interval
    /// (fewer round trips, approximate across nodes). Default: every request is counted
    /// in Redis (exact).
    #[serde(default)]
    pub sync_interval: Option<units::Duration>,
}

/// Which Redis to talk to: one server or a cluster. Pools are shared per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisTarget {
    /// One server (or a proxy in front of several).
    Single(String),
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// A name for logs: the address(es) without credentials.
    pub fn display_name(&self) -> String {
        match self {
            RedisTarget::Single(url) => redact(url),
            RedisTarget::Cluster(nodes) => format!(
                "cluster {}",
                nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// `url` without the `user:password@` part.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl RedisConfig {
    /// Checks the settings; errors name `path` (the option's key path, e.g. `redis`).
    pub fn target(&self, path: &str) -> Result<RedisTarget, ConfigError> {
        let check = |url: &str, at: String| -> Result<(), ConfigError> {
            Client::open(url).map(drop).map_err(|e| {
                ConfigError::at(at, format!("`{}` is not a Redis URL: {e}", redact(url)))
            })
        };
        let target = match (&self.url, self.cluster.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::at(
                    path,
                    "set either `url` (one server) or `cluster` (Redis Cluster seed nodes), not both",
                ))
            }
            (None, true) => {
                return Err(ConfigError::at(
                    path,
                    "needs `url` (e.g. `redis://127.0.0.1:6379`) or `cluster` (a list of seed node URLs)",
                ))
            }
            (Some(url), true) => {
                check(url, format!("{path}.url"))?;
                RedisTarget::Single(url.clone())
            }
            (None, false) => {
                for (i, url) in self.cluster.iter().enumerate() {
                    check(url, format!("{path}.cluster[{i}]"))?;
                }
                ClusterClient::new(self.cluster.clone())
                    .map_err(|e| ConfigError::at(format!("{path}.cluster"), e.to_string()))?;
                RedisTarget::Cluster(self.cluster.clone())
            }
        };
        if let Some(t) = self.timeout {
            if t.get().is_zero() {
                return Err(ConfigError::at(
                    format!("{path}.timeout"),
                    "must be longer than 0, e.g. `200ms`",
                ));
            }
        }
        if let Some(s) = self.sync_interval {
            if s.get().is_zero() || s.get() > Duration::from_secs(60) {
                return Err(ConfigError::at(
                    format!("{path}.sync_interval"),
                    "must be between 1ms and 60s, e.g. `100ms` (leave it out to count every request in Redis)",
                ));
            }
        }
        Ok(target)
    }

    /// Builds the store these settings describe, on the process's shared pool for the
    /// target (one connection per Redis server, kept across config reloads).
    pub fn build(&self, services: &SharedServices, path: &str) -> Result<RedisStore, ConfigError> {
        let target = self.target(path)?;
        let pool = services.redis_pool(&target);
        let mut store = RedisStore::new(
            pool,
            self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
            self.key_prefix.as_deref().unwrap_or(DEFAULT_KEY_PREFIX),
        );
        if let Some(interval) = self.sync_interval {
            store = store.with_sync_interval(interval.get());
        }
        Ok(store)
    }
}

// ---------------------------------------------------------------------------------------
// Scripts. Each is one atomic step; they use only the key they are given (cluster-safe).

/// Fixed window. KEYS[1] = counter; ARGV = limit, window ms, cost.
/// Returns {admitted (0/1), used after this request, ms until the window ends}.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  used = 0
  ttl = window
end
if used + cost > limit then
  return {0, used, ttl}
end
if cost > 0 then
  if used == 0 then
    redis.call('SET', KEYS[1], cost, 'PX', ttl)
  else
    redis.call('INCRBY', KEYS[1], cost)
  end
  used = used + cost
end
return {1, used, ttl}
",
    )
});

/// GCRA. KEYS[1] = theoretical arrival time (µs of Redis' clock); ARGV = limit, window µs,
/// cost. Returns {admitted (0/1), remaining, µs until the whole budget is back, µs until the
/// request would fit (refused only)}. The same arithmetic as the local store's.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local limit = math.max(tonumber(ARGV[1]), 1)
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local emission = math.max(math.floor(window / limit), 1)
local capacity = limit * emission
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + cost * emission
local effective = tat
local admitted = 0
local retry = 0
if new_tat - now <= capacity then
  admitted = 1
  effective = new_tat
  if cost > 0 then
    local ttl = math.max(math.ceil((new_tat - now) / 1000), 1)
    redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
  end
else
  retry = new_tat - now - capacity
end
local used = effective - now
return {admitted, math.floor(math.max(capacity - used, 0) / emission), used, retry}
",
    )
});

/// Takes a concurrency slot. KEYS[1] = sorted set of slot → lease end (server ms);
/// ARGV = max, lease ms, slot id. Returns {admitted (0/1), slots held}.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local max = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= max then
  return {0, held}
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return {1, held + 1}
",
    )
});

/// Gives a slot back. KEYS[1] = sorted set; ARGV[1] = slot id.
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new("return redis.call('ZREM', KEYS[1], ARGV[1])"));

// ---------------------------------------------------------------------------------------
// The store.

/// A [`RateLimitStore`] in Redis, shared by every gateway node that uses the same server and
/// key prefix. Cheap: one per plugin instance, all on the process's shared [`RedisPool`].
pub struct RedisStore {
    pool: Arc<RedisPool>,
    timeout: Duration,
    prefix: String,
    batcher: Option<Arc<Batcher>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("pool", &self.pool)
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("sync_interval", &self.batcher.as_ref().map(|b| b.interval))
            .finish()
    }
}

impl RedisStore {
    /// A store on `pool`: operations wait at most `timeout`, keys start with `prefix`.
    pub fn new(pool: Arc<RedisPool>, timeout: Duration, prefix: &str) -> Self {
        RedisStore {
            pool,
            timeout,
            prefix: prefix.to_string(),
            batcher: None,
        }
    }

    /// Counts rate limits locally and exchanges counts with Redis every `interval`
    /// (see docs/cluster.md for the error bound). Concurrency slots stay exact.
    pub fn with_sync_interval(mut self, interval: Duration) -> Self {
        self.batcher = Some(self.pool.batcher(interval));
        self
    }

    fn full_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    async fn check_exact(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let (admitted, used, ttl): (u64, u64, i64) = self
            .pool
            .run(
                "check",
                &CHECK,
                key,
                &[limit, ms(window).max(1), cost],
                None,
                self.timeout,
            )
            .await?;
        Ok(decision(
            admitted == 1,
            limit,
            used,
            ttl_duration(ttl, window),
        ))
    }
}

pub(super) fn ttl_duration(ttl: i64, window: Duration) -> Duration {
    u64::try_from(ttl).map_or(window, Duration::from_millis)
}

pub(super) fn decision(allowed: bool, limit: u64, used: u64, reset_after: Duration) -> Decision {
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(used),
        reset_after,
        retry_after: (!allowed).then_some(reset_after),
    }
}

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn check(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let key = self.full_key(key);
        match &self.batcher {
            None => self.check_exact(&key, limit, window, cost).await,
            Some(b) => b.check(self, key, limit, window, cost).await,
        }
    }

    async fn check_gcra(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        // Its own key: a switch of algorithm never reads a count as a time or back.
        let mut full = String::with_capacity(self.prefix.len() + 5 + key.len());
        full.push_str(&self.prefix);
        full.push_str("gcra:");
        full.push_str(key);
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let (admitted, remaining, used_us, retry_us): (u64, u64, u64, u64) = self
            .pool
            .run(
                "check",
                &GCRA,
                &full,
                &[limit, window_us, cost],
                None,
                self.timeout,
            )
            .await?;
        Ok(Decision {
            allowed: admitted == 1,
            limit: limit.max(1),
            remaining,
            reset_after: Duration::from_micros(used_us),
            retry_after: (admitted != 1).then(|| Duration::from_micros(retry_us)),
        })
    }

    /// GCRA is one exact round trip per request; with `sync_interval` (local batching) only
    /// fixed windows are available.
    fn supports_gcra(&self) -> bool {
        self.batcher.is_none()
    }

    async fn acquire(&self, key: &str, max: u64) -> Result<Permit, StoreError> {
        let key = self.full_key(key);
        let id =
            self.pool.node_id | (self.pool.next_slot.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        let member = [slot_member(id)];
        let (admitted, held): (u64, u64) = self
            .pool
            .run(
                "acquire",
                &ACQUIRE,
                &key,
                &[max, lease_ms()],
                Some(&member),
                self.timeout,
            )
            .await?;
        if admitted == 1 {
            self.pool.held.insert(id, Arc::from(key.as_str()));
            self.pool.start_renewing();
        }
        Ok(Permit {
            admitted: admitted == 1,
            in_flight: held,
            token: id,
        })
    }

    async fn release(&self, key: &str, token: u64) -> Result<(), StoreError> {
        let key = self.full_key(key);
        // Forget the slot first: if Redis cannot be told now, its lease runs out.
        self.pool.held.remove(&token);
        let member = [slot_member(token)];
        self.pool
            .run::<i64>("release", &RELEASE, &key, &[], Some(&member), self.timeout)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreErrorKind;
    use std::time::Instant;

    fn cfg(v: serde_json::Value) -> Result<RedisTarget, ConfigError> {
        let c: RedisConfig = crate::factory::parse_config(&v)?;
        c.target("redis")
    }

    #[test]
    fn settings_are_checked_with_their_path() {
        assert!(cfg(serde_json::json!({"url": "rediss://cache.internal:6380"})).is_ok());
        assert_eq!(
            cfg(serde_json::json!({"url": "redis://127.0.0.1:6379/2"})).unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379/2".into())
        );
        assert!(matches!(
            cfg(serde_json::json!({"cluster": ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]})),
            Ok(RedisTarget::Cluster(n)) if n.len() == 2
        ));
        let e = cfg(serde_json::json!({})).unwrap_err();
        assert_eq!(e.path, "redis");
        assert!(e.message.contains("needs `url`"), "{}", e.message);
        let e =
            cfg(serde_json::json!({"url": "redis://a:1", "cluster": ["redis://b:1"]})).unwrap_err();
        assert_eq!(e.path, "redis");
        let e = cfg(serde_json::json!({"url": "http://x"})).unwrap_err();
        assert_eq!(e.path, "redis.url");
        assert!(e.message.contains("is not a Redis URL"), "{}", e.message);
        let e = cfg(serde_json::json!({"cluster": ["redis://a:1", "nope://"]})).unwrap_err();
        assert_eq!(e.path, "redis.cluster[1]");
        let e = cfg(serde_json::json!({"url": "redis://a:1", "timeout": "0s"})).unwrap_err();
        assert_eq!(e.path, "redis.timeout");
        let e = cfg(serde_json::json!({"url": "redis://a:1", "sync_interval": "0ms"})).unwrap_err();
        assert_eq!(e.path, "redis.sync_interval");
        let e = cfg(serde_json::json!({"url": "redis://a:1", "pool": 3})).unwrap_err();
        assert!(e.message.contains("unknown field `pool`"), "{}", e.message);
    }

    #[test]
    fn names_never_show_passwords() {
        assert_eq!(
            redact("redis://user:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        let e = cfg(serde_json::json!({"url": "http://:s3cret@x"})).unwrap_err();
        assert!(!e.message.contains("s3cret"), "{}", e.message);
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast_and_is_counted() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = Arc::new(RedisPool::new(&RedisTarget::Single(format!(
            "redis://127.0.0.1:{port}"
        ))));
        let store = RedisStore::new(pool, Duration::from_millis(300), "t:");
        let e = store
            .check("k", 1, Duration::from_secs(1), 1)
            .await
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
        // During the back-off: no wait at all.
        let started = Instant::now();
        let e = store
            .check("k", 1, Duration::from_secs(1), 1)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(e.message.contains("next try in"), "{e}");
        assert!(store.acquire("c", 1).await.is_err());
    }
}
