//! The connections to one Redis target, shared by every store on it: one per worker thread,
//! connected at first use, re-connected after a failure, with a back-off during which
//! operations fail fast, the metrics and the rate-limited log.
//!
//! Each worker thread has its own connection, driven by a task on that thread's runtime: a
//! request's round trip to Redis then never wakes another thread (a connection shared by all
//! threads needs two cross-thread wake-ups per round trip, which cost more than the round trip
//! itself on a busy core). Background work (lease renewal, batched syncs) runs on the
//! `gatehouse-redis` I/O thread, which has connections of its own the same way.

use super::batch::Batcher;
use super::{RedisTarget, SLOT_LEASE};
use crate::store::{StoreError, StoreErrorKind};
use ::redis::aio::MultiplexedConnection;
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, Client, RedisError, Script};
use dashmap::DashMap;
use prometheus::{register_int_counter_vec, IntCounterVec};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often a node renews the leases of the slots it holds.
const SLOT_RENEW_EVERY: Duration = Duration::from_secs(10);
/// Back-off after a failure: operations fail fast until it has passed.
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 1_000;
/// At most one warning per this interval per Redis server.
const LOG_EVERY_MS: u64 = 5_000;

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

/// Every operation `run` is called with.
const OP_NAMES: [&str; 5] = ["check", "sync", "acquire", "release", "renew"];

/// `gatehouse_redis_operations_total` for each of [`OP_NAMES`], resolved once: the count is
/// taken on every round trip, so no label hashing there.
static OP_COUNTERS: LazyLock<Vec<(&'static str, prometheus::IntCounter)>> = LazyLock::new(|| {
    OPS.as_ref().map_or_else(Vec::new, |ops| {
        OP_NAMES
            .iter()
            .map(|op| (*op, ops.with_label_values(&[op])))
            .collect()
    })
});

fn count_op(op: &str) {
    match OP_COUNTERS.iter().find(|(name, _)| *name == op) {
        Some((_, c)) => c.inc(),
        None => {
            if let Some(ops) = OPS.as_ref() {
                ops.with_label_values(&[op]).inc();
            }
        }
    }
}

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
pub(super) fn io_runtime() -> Option<&'static tokio::runtime::Runtime> {
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
// Per-thread connections.

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// One thread's connection to one pool's target.
struct ThreadConn {
    pool: u64,
    generation: u64,
    conn: Conn,
}

/// A thread's connections, valid while the runtime that drives them runs.
#[derive(Default)]
struct ThreadConns {
    /// False once the runtime the connections were made on has shut down (its tasks, the
    /// connections' drivers among them, are gone).
    runtime_alive: Option<Arc<AtomicBool>>,
    conns: Vec<ThreadConn>,
}

thread_local! {
    static THREAD_CONNS: RefCell<ThreadConns> = RefCell::new(ThreadConns::default());
}

/// Clears its flag when dropped: held by a task that never ends, so it is dropped when the
/// runtime shuts down.
struct RuntimeAlive(Arc<AtomicBool>);

impl Drop for RuntimeAlive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl ThreadConns {
    /// Forgets connections made on a runtime that has shut down, and watches the current one.
    fn check_runtime(&mut self) {
        if self
            .runtime_alive
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Acquire))
        {
            return;
        }
        self.conns.clear();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not on a runtime: nothing to watch, and nothing kept for next time.
            self.runtime_alive = None;
            return;
        };
        let alive = Arc::new(AtomicBool::new(true));
        let guard = RuntimeAlive(alive.clone());
        runtime.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        self.runtime_alive = Some(alive);
    }
}

// ---------------------------------------------------------------------------------------
// The pool: a target's connections, health, back-off.

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

enum Backend {
    Single(Box<Client>),
    Cluster(Box<ClusterClient>),
}

/// The shared connection to one Redis target. Get one from
/// [`SharedServices::redis_pool`]; it lives as long as the process.
pub struct RedisPool {
    name: String,
    backend: Result<Backend, String>,
    epoch: Instant,
    /// Identifies the pool in the per-thread connection tables.
    id: u64,
    /// Bumped when a connection is lost: every thread then connects afresh.
    generation: AtomicU64,
    /// The last generation whose first connection was logged, plus one.
    announced: AtomicU64,
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
    pub(super) node_id: u64,
    pub(super) next_slot: AtomicU64,
    /// Slots this node holds: id → key, renewed every few seconds.
    pub(super) held: DashMap<u64, Arc<str>>,
    renewing: AtomicBool,
    pub(super) batchers: Mutex<HashMap<u64, Weak<Batcher>>>,
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.name)
            .field("generation", &self.generation.load(Ordering::Relaxed))
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
            RedisTarget::Single(url) => {
                Client::open(url.as_str()).map(|c| Backend::Single(Box::new(c)))
            }
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
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            announced: AtomicU64::new(0),
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

    /// This thread's connection, unless it was lost (or its runtime has shut down).
    fn current(&self) -> Option<Conn> {
        let generation = self.generation.load(Ordering::Acquire);
        THREAD_CONNS.with_borrow_mut(|t| {
            t.check_runtime();
            let at = t.conns.iter().position(|c| c.pool == self.id)?;
            if t.conns[at].generation == generation {
                return Some(t.conns[at].conn.clone());
            }
            t.conns.swap_remove(at);
            None
        })
    }

    /// Keeps `conn` as this thread's connection.
    fn keep(&self, conn: Conn, generation: u64) {
        THREAD_CONNS.with_borrow_mut(|t| {
            t.check_runtime();
            t.conns.retain(|c| c.pool != self.id);
            t.conns.push(ThreadConn {
                pool: self.id,
                generation,
                conn,
            });
        })
    }

    /// Drops every thread's connection: each connects again at its next operation.
    fn drop_conns(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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

    /// A connection: this thread's, or a new one.
    async fn conn(self: &Arc<Self>, timeout: Duration) -> Result<Conn, StoreError> {
        let now = self.now_ms();
        let until = self.down_until_ms.load(Ordering::Acquire);
        if now < until {
            return Err(self.down_error(now, until));
        }
        if let Some(c) = self.current() {
            return Ok(c);
        }
        self.connect(timeout).await
    }

    /// Connects this thread unless another of its tasks did meanwhile. One connect at a time
    /// per target, so that a burst of first requests makes one connection per thread.
    async fn connect(&self, timeout: Duration) -> Result<Conn, StoreError> {
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
        let generation = self.generation.load(Ordering::Acquire);
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
                if self.announced.swap(generation + 1, Ordering::AcqRel) != generation + 1 {
                    log::info!("redis {}: connected", self.name);
                }
                self.keep(c.clone(), generation);
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
            self.drop_conns();
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
    pub(super) async fn run<T: ::redis::FromRedisValue>(
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
            count_op(op);
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

    /// Starts renewing the leases of held slots (once per pool).
    pub(super) fn start_renewing(self: &Arc<Self>) {
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

pub(super) fn lease_ms() -> u64 {
    SLOT_LEASE.as_millis() as u64
}

pub(super) fn slot_member(id: u64) -> String {
    format!("{id:016x}")
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_runtime_connections_are_not_kept_and_nothing_panics() {
        let mut conns = ThreadConns::default();
        conns.check_runtime();
        assert!(conns.runtime_alive.is_none());
    }

    #[test]
    fn connections_are_forgotten_once_their_runtime_shuts_down() {
        let mut conns = ThreadConns::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async { conns.check_runtime() });
        let alive = conns.runtime_alive.clone().unwrap();
        assert!(alive.load(Ordering::Acquire));
        drop(runtime);
        assert!(!alive.load(Ordering::Acquire));
    }
}
