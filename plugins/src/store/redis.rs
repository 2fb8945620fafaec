//! The Redis store: counters every gateway node shares, for `store: redis` of `rate-limit`
//! and `limit-conn`.
//!
//! ```text
//! SharedServices ── one RedisPool per server (url or cluster seeds), for the process's life
//!                    │  one multiplexed (pipelined) connection, opened at first use and
//!                    │  re-opened after a failure; its I/O runs on the `gatehouse-redis` thread
//!                    ▼
//! RedisStore (one per plugin instance: key prefix, timeout) ── check / acquire / release
//!                    │  each one Lua script, EVALSHA (EVAL-loaded on NOSCRIPT)
//!                    └─ with sync_interval: Batcher (one per pool and interval): counts locally,
//!                       pushes the counts to Redis every interval
//! ```
//!
//! Keys are the plugin's key (scope, limit, client key) after a configurable prefix (default
//! `gatehouse:`), with nothing node-specific in them, so every node counts against the same
//! key. Rate-limit keys expire with their window (`PEXPIRE`); concurrency keys are sorted sets
//! of slot leases that expire when the node holding them stops renewing them.
//!
//! When Redis fails (refused, dropped, slower than `timeout`), the operation fails at once with
//! a [`StoreError`], the plugin applies its `on_store_error`, the failure is counted in
//! `gatehouse_redis_errors_total` and logged (at most once per 5 s). After a lost connection
//! (or the third timeout in a row), further operations fail fast without waiting, for a
//! back-off that grows from 100 ms to 1 s, after which the next operation tries again:
//! counting resumes within a second of Redis coming back.

use super::{Decision, Permit, RateLimitStore, StoreError, StoreErrorKind};
use crate::factory::ConfigError;
use crate::services::SharedServices;
use crate::units;
use ::redis::aio::MultiplexedConnection;
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, Script};
use async_trait::async_trait;
use dashmap::DashMap;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

/// Default of `redis.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Default of `redis.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "gatehouse:";
/// How long a concurrency slot lives in Redis without being renewed: the slots of a node
/// that died holding them are free again after this.
pub const SLOT_LEASE: Duration = Duration::from_secs(30);
/// How often a node renews the leases of the slots it holds.
const SLOT_RENEW_EVERY: Duration = Duration::from_secs(10);
/// Back-off after a failure: operations fail fast until it has passed.
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 1_000;
/// At most one warning per this interval per Redis server.
const LOG_EVERY_MS: u64 = 5_000;

/// The `redis` option of `rate-limit` and `limit-conn`.
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

/// Adds a node's locally counted cost. KEYS[1] = counter; ARGV = cost, window ms.
/// Returns {used, ms until the window ends}; a cost of 0 only reads.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local add = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if add == 0 then
  if ttl < 0 then
    return {0, window}
  end
  return {tonumber(redis.call('GET', KEYS[1]) or '0'), ttl}
end
if ttl < 0 then
  redis.call('SET', KEYS[1], add, 'PX', window)
  return {add, window}
end
return {redis.call('INCRBY', KEYS[1], add), ttl}
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

/// Renews the leases of slots still held. KEYS[1] = sorted set; ARGV = lease ms, slot ids.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local lease = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
",
    )
});

// ---------------------------------------------------------------------------------------
// Metrics and the rate-limited log.

static ERRORS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_redis_errors_total",
        "Failed Redis store operations by operation (check, sync, acquire, release, renew) \
         and kind (unavailable, timeout, protocol).",
        &["op", "kind"]
    )
    .ok()
});

static OPS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_redis_operations_total",
        "Redis store round trips by operation (check, sync, acquire, release, renew).",
        &["op"]
    )
    .ok()
});

fn kind_label(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::TimedOut => "timeout",
        StoreErrorKind::Protocol => "protocol",
    }
}

// ---------------------------------------------------------------------------------------
// The I/O thread.

/// The runtime that drives every Redis connection of the process, started at first use
/// (never before Pingora has forked into the background).
fn io_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gatehouse-redis")
            .enable_all()
            .build()
            .map_err(|e| log::error!("cannot start the Redis I/O thread: {e}"))
            .ok()
    })
    .as_ref()
}

// ---------------------------------------------------------------------------------------
// The pool: one connection per target, health, back-off.

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

enum Backend {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

/// The shared connection to one Redis target. Get one from
/// [`SharedServices::redis_pool`]; it lives as long as the process.
pub struct RedisPool {
    name: String,
    backend: Result<Backend, String>,
    epoch: Instant,
    conn: RwLock<Option<Conn>>,
    connect_lock: tokio::sync::Mutex<()>,
    /// Operations fail fast until this time (ms since `epoch`); 0 = healthy.
    down_until_ms: AtomicU64,
    backoff_ms: AtomicU64,
    /// Failures since the last success.
    consecutive: AtomicU64,
    last_error: Mutex<String>,
    last_log_ms: AtomicU64,
    suppressed: AtomicU64,
    /// Distinguishes this node's slot ids from other nodes'.
    node_id: u64,
    next_slot: AtomicU64,
    /// Slots this node holds: id → key, renewed every few seconds.
    held: DashMap<u64, Arc<str>>,
    renewing: AtomicBool,
    batchers: Mutex<HashMap<u64, Weak<Batcher>>>,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.name)
            .field("connected", &self.current().is_some())
            .finish()
    }
}

fn classify(e: &RedisError) -> (StoreErrorKind, bool) {
    if e.is_timeout() {
        (StoreErrorKind::TimedOut, false)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        (StoreErrorKind::Unavailable, true)
    } else {
        // Server errors (LOADING after a restart, READONLY after a failover, CLUSTERDOWN…)
        // are worth a fresh connection too.
        (StoreErrorKind::Protocol, true)
    }
}

impl RedisPool {
    /// A pool for `target`; nothing is connected until the first operation. A target that
    /// [`RedisConfig::target`] accepted always gives a working pool; any other error shows in
    /// every operation.
    pub fn new(target: &RedisTarget) -> Self {
        let backend = match target {
            RedisTarget::Single(url) => Client::open(url.as_str()).map(Backend::Single),
            RedisTarget::Cluster(nodes) => ClusterClient::builder(nodes.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()
                .map(|c| Backend::Cluster(Box::new(c))),
        }
        .map_err(|e| e.to_string());
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        RedisPool {
            name: target.display_name(),
            backend,
            epoch: Instant::now(),
            conn: RwLock::new(None),
            connect_lock: tokio::sync::Mutex::new(()),
            down_until_ms: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            last_log_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            node_id: seed & 0xffff_ffff_0000_0000,
            next_slot: AtomicU64::new(1),
            held: DashMap::new(),
            renewing: AtomicBool::new(false),
            batchers: Mutex::new(HashMap::new()),
        }
    }

    /// The target's name, without credentials.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn current(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_conn(&self, c: Option<Conn>) {
        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// The error for an operation refused during the back-off (logged, rate-limited).
    fn down_error(&self, now: u64, until: u64) -> StoreError {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let err = StoreError::new(
            StoreErrorKind::Unavailable,
            format!(
                "redis {} is unavailable ({last}); next try in {}ms",
                self.name,
                until.saturating_sub(now)
            ),
        );
        self.log_failure(&err);
        err
    }

    /// A connection: the current one, or a new one (connected on the I/O thread).
    async fn conn(self: &Arc<Self>, timeout: Duration) -> Result<Conn, StoreError> {
        let now = self.now_ms();
        let until = self.down_until_ms.load(Ordering::Acquire);
        if now < until {
            return Err(self.down_error(now, until));
        }
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let Some(rt) = io_runtime() else {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "the Redis I/O thread is not running",
            ));
        };
        let pool = self.clone();
        let task = rt.spawn(async move { pool.connect(timeout).await });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(StoreError::new(StoreErrorKind::Unavailable, e.to_string())),
        }
    }

    /// Connects unless another task did meanwhile. Runs on the I/O thread.
    async fn connect(self: Arc<Self>, timeout: Duration) -> Result<Conn, StoreError> {
        let _one_at_a_time = self.connect_lock.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let now = self.now_ms();
        let until = self.down_until_ms.load(Ordering::Acquire);
        if now < until {
            return Err(self.down_error(now, until));
        }
        // Connecting may take longer than one operation may wait; give it a little more, so
        // that a slow start still ends with a connection for the next request.
        let connect_timeout = timeout.max(Duration::from_millis(500));
        let result = match &self.backend {
            Err(e) => {
                return Err(StoreError::new(StoreErrorKind::Protocol, e.clone()));
            }
            Ok(Backend::Single(client)) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Single)
            }
            Ok(Backend::Cluster(client)) => client.get_async_connection().await.map(Conn::Cluster),
        };
        match result {
            Ok(c) => {
                log::info!("redis {}: connected", self.name);
                self.set_conn(Some(c.clone()));
                Ok(c)
            }
            Err(e) => {
                let (kind, _) = classify(&e);
                let err =
                    StoreError::new(kind, format!("cannot connect to redis {}: {e}", self.name));
                self.failed(&err, true);
                Err(err)
            }
        }
    }

    /// Records a failure: a lost connection starts the back-off at once, timeouts and server
    /// errors from the third in a row (one slow answer does not turn Redis off); logged at
    /// most every 5 s (the metric is the caller's).
    fn failed(&self, err: &StoreError, drop_conn: bool) {
        if drop_conn {
            self.set_conn(None);
        }
        let in_a_row = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if drop_conn || in_a_row >= 3 {
            let backoff =
                (self.backoff_ms.load(Ordering::Acquire) * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
            self.backoff_ms.store(backoff, Ordering::Release);
            self.down_until_ms
                .store(self.now_ms() + backoff, Ordering::Release);
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = err.message.clone();
        self.log_failure(err);
    }

    fn log_failure(&self, err: &StoreError) {
        let now = self.now_ms();
        let last = self.last_log_ms.load(Ordering::Acquire);
        if (last == 0 || now >= last + LOG_EVERY_MS)
            && self
                .last_log_ms
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let more = self.suppressed.swap(0, Ordering::AcqRel);
            if more > 0 {
                log::warn!(
                    "redis {}: {err} ({more} more failures since the last report)",
                    self.name
                );
            } else {
                log::warn!("redis {}: {err}", self.name);
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn succeeded(&self) {
        self.consecutive.store(0, Ordering::Release);
        if self.backoff_ms.load(Ordering::Acquire) != 0
            && self.backoff_ms.swap(0, Ordering::AcqRel) != 0
        {
            self.down_until_ms.store(0, Ordering::Release);
            log::info!("redis {}: reachable again; counting resumes", self.name);
        }
    }

    /// Runs `script` with one key and `args`, within `timeout`, recording the outcome.
    async fn run<T: ::redis::FromRedisValue>(
        self: &Arc<Self>,
        op: &'static str,
        script: &Script,
        key: &str,
        args: &[u64],
        extra: Option<&[String]>,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let result = tokio::time::timeout(timeout, async {
            let mut conn = self.conn(timeout).await?;
            if let Some(ops) = OPS.as_ref() {
                ops.with_label_values(&[op]).inc();
            }
            let mut inv = script.key(key);
            for a in args {
                inv.arg(*a);
            }
            if let Some(extra) = extra {
                for a in extra {
                    inv.arg(a.as_str());
                }
            }
            let r = match &mut conn {
                Conn::Single(c) => inv.invoke_async::<T>(c).await,
                Conn::Cluster(c) => inv.invoke_async::<T>(c).await,
            };
            r.map_err(|e| {
                let (kind, drop_conn) = classify(&e);
                (
                    StoreError::new(kind, format!("redis {}: {e}", self.name)),
                    drop_conn,
                )
            })
            .map_err(|(err, drop_conn)| {
                self.failed(&err, drop_conn);
                err
            })
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                let err = StoreError::new(
                    StoreErrorKind::TimedOut,
                    format!("redis {} did not answer within {timeout:?}", self.name),
                );
                self.failed(&err, false);
                Err(err)
            }
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => {
                if let Some(errors) = ERRORS.as_ref() {
                    errors.with_label_values(&[op, kind_label(e.kind)]).inc();
                }
            }
        }
        result
    }

    /// The batcher for `interval` (shared by every store with that interval).
    fn batcher(self: &Arc<Self>, interval: Duration) -> Arc<Batcher> {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut map = self.batchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(&ms).and_then(Weak::upgrade) {
            return b;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let b = Arc::new(Batcher {
            pool: self.clone(),
            interval: Duration::from_millis(ms),
            entries: DashMap::new(),
            started: AtomicBool::new(false),
        });
        map.insert(ms, Arc::downgrade(&b));
        b
    }

    /// Starts renewing the leases of held slots (once per pool).
    fn start_renewing(self: &Arc<Self>) {
        if self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(rt) = io_runtime() else { return };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SLOT_RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                let mut by_key: HashMap<Arc<str>, Vec<String>> = HashMap::new();
                for e in pool.held.iter() {
                    by_key
                        .entry(e.value().clone())
                        .or_default()
                        .push(slot_member(*e.key()));
                }
                for (key, ids) in by_key {
                    let _ = pool
                        .run::<i64>(
                            "renew",
                            &RENEW,
                            &key,
                            &[lease_ms()],
                            Some(&ids),
                            Duration::from_secs(2),
                        )
                        .await;
                }
            }
        });
    }
}

fn lease_ms() -> u64 {
    SLOT_LEASE.as_millis() as u64
}

fn slot_member(id: u64) -> String {
    format!("{id:016x}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

fn ttl_duration(ttl: i64, window: Duration) -> Duration {
    u64::try_from(ttl).map_or(window, Duration::from_millis)
}

fn decision(allowed: bool, limit: u64, used: u64, reset_after: Duration) -> Decision {
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

// ---------------------------------------------------------------------------------------
// Local batching (`sync_interval`).

/// One key's state on this node.
struct Entry {
    limit: u64,
    window: Duration,
    /// The fleet's count in Redis at the last sync (this node's pushed counts included).
    seen: u64,
    /// Admitted here, not yet pushed.
    pending: u64,
    /// Being pushed right now.
    pushing: u64,
    /// End of the window, as of the last sync.
    ends_at: Instant,
    synced_at: Instant,
    used_since_sync: bool,
}

/// Counts rate limits locally and exchanges them with Redis every `interval`.
///
/// A key unknown here, or not synced for two intervals, is counted in Redis directly (one
/// round trip, exact); after that, requests are decided against `seen + pending`, and every
/// interval the pending counts are added in Redis and `seen` refreshed. A node therefore misses
/// at most what the other nodes admitted in the last three intervals.
struct Batcher {
    pool: Arc<RedisPool>,
    interval: Duration,
    entries: DashMap<Box<str>, Entry>,
    started: AtomicBool,
}

impl Batcher {
    async fn check(
        self: &Arc<Self>,
        store: &RedisStore,
        key: String,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        self.start();
        let now = Instant::now();
        if let Some(mut e) = self.entries.get_mut(key.as_str()) {
            let fresh = now < e.ends_at && now.duration_since(e.synced_at) <= self.interval * 2;
            if fresh && e.limit == limit && e.window == window {
                let used = e.seen + e.pushing + e.pending;
                let allowed = used.saturating_add(cost) <= limit;
                if allowed {
                    e.pending += cost;
                }
                e.used_since_sync = true;
                let used = e.seen + e.pushing + e.pending;
                return Ok(decision(
                    allowed,
                    limit,
                    used,
                    e.ends_at.saturating_duration_since(now),
                ));
            }
        }
        // Unknown or stale here: count in Redis, and remember what it said.
        let d = store.check_exact(&key, limit, window, cost).await?;
        let used = limit - d.remaining;
        let now = Instant::now();
        match self.entries.get_mut(key.as_str()) {
            Some(mut e) => {
                e.limit = limit;
                e.window = window;
                e.seen = used;
                e.pending = 0;
                e.ends_at = now + d.reset_after;
                e.synced_at = now;
            }
            None => {
                self.entries.insert(
                    key.into_boxed_str(),
                    Entry {
                        limit,
                        window,
                        seen: used,
                        pending: 0,
                        pushing: 0,
                        ends_at: now + d.reset_after,
                        synced_at: now,
                        used_since_sync: false,
                    },
                );
            }
        }
        Ok(d)
    }

    fn start(self: &Arc<Self>) {
        if self.started.load(Ordering::Acquire) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(rt) = io_runtime() else { return };
        let weak = Arc::downgrade(self);
        let interval = self.interval;
        rt.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { return };
                b.sync_all().await;
            }
        });
    }

    /// Pushes pending counts and refreshes every key used since the last sync; forgets keys
    /// that went stale.
    async fn sync_all(self: &Arc<Self>) {
        let now = Instant::now();
        let stale_after = self.interval * 2;
        self.entries.retain(|_, e| {
            e.pending > 0
                || e.pushing > 0
                || e.used_since_sync
                || now.duration_since(e.synced_at) <= stale_after
        });
        let mut work = Vec::new();
        for mut e in self.entries.iter_mut() {
            if e.pending == 0 && !e.used_since_sync {
                continue;
            }
            if e.pushing > 0 {
                continue; // the previous push has not finished
            }
            let add = if now < e.ends_at { e.pending } else { 0 };
            e.pushing = add;
            e.pending = 0;
            e.used_since_sync = false;
            work.push((e.key().to_string(), add, e.window));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (key, add, window) in work {
            let b = self.clone();
            tasks.spawn(async move {
                let r: Result<(u64, i64), StoreError> = b
                    .pool
                    .run(
                        "sync",
                        &SYNC,
                        &key,
                        &[add, ms(window).max(1)],
                        None,
                        Duration::from_secs(1).max(b.interval),
                    )
                    .await;
                let done = Instant::now();
                if let Some(mut e) = b.entries.get_mut(key.as_str()) {
                    match r {
                        Ok((used, ttl)) => {
                            e.seen = used;
                            e.pushing = 0;
                            e.ends_at = done + ttl_duration(ttl, window);
                            e.synced_at = done;
                        }
                        Err(_) => {
                            // Keep the count for the next try.
                            e.pending += e.pushing;
                            e.pushing = 0;
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
