//! Counter stores for rate limits and concurrency limits.
//!
//! A limiting plugin names a key (a consumer, an IP, a header value…) and asks a store to
//! count one request against it. The store is pluggable so that the same plugin counts in
//! this process alone or, for a cluster, in a store every node shares:
//!
//! ```text
//! rate-limit ── check(key, limit, window, cost) ──┐
//!                                                 ├──► dyn RateLimitStore ──┬── LocalStore (this process, exact)
//! limit-conn ── acquire(key, max) / release ──────┘                         └── a shared store (e.g. Redis)
//! ```
//!
//! Every operation is one atomic step in the store: a shared store implements each with one
//! round trip (for Redis, one Lua script per call), so two nodes can never both take the
//! last unit of a budget.
//!
//! # Rate-limit semantics: fixed windows with exact counts
//!
//! A key's window opens with the first request counted against it and lasts `window`; the
//! first `limit` units of cost in it are admitted and later ones are refused until it ends,
//! when the next request opens a new window with the whole budget. Refused requests do not
//! use budget. A store must keep exact counts: the `limit`-th request is admitted and the one
//! after it refused, however many run at once.
//!
//! A shared store can do this with a counter that expires with its window, for example in
//! Redis: `INCRBY key cost`; when the result equals `cost` (a new window) `PEXPIRE key window`;
//! when it exceeds `limit`, `DECRBY key cost` and refuse; `PTTL key` gives the reset time.
//! [`redis::RedisStore`] is that store.

pub mod redis;

use async_trait::async_trait;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The outcome of [`RateLimitStore::check`]: whether the request may pass, and what the
/// `RateLimit-*` and `Retry-After` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (its cost is then counted).
    pub allowed: bool,
    /// The budget per window.
    pub limit: u64,
    /// What is left of the budget in the current window, after this request.
    pub remaining: u64,
    /// Time until the current window ends and the whole budget is available again.
    pub reset_after: Duration,
    /// For a refused request: time until a request of the same cost could be admitted.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// [`Decision::reset_after`] in whole seconds, rounded up (what `RateLimit-Reset` says).
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }

    /// [`Decision::retry_after`] in whole seconds, rounded up and at least 1 (what
    /// `Retry-After` says); `None` for an admitted request.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }
}

/// Whole seconds in `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The outcome of [`RateLimitStore::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Whether a slot was taken. Only an admitted permit is released.
    pub admitted: bool,
    /// Requests holding a slot for the key, this one included when admitted.
    pub in_flight: u64,
    /// Identifies the slot for [`RateLimitStore::release`]. Opaque to callers; a shared
    /// store may use it to expire the slots of a node that died while holding them.
    pub token: u64,
}

/// What went wrong in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store could not be reached or refused the operation.
    Unavailable,
    /// The store did not answer in time.
    TimedOut,
    /// The store answered something that cannot be understood.
    Protocol,
}

/// A failed store operation. Plugins decide what it means for the request (`on_store_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// The kind of failure.
    pub kind: StoreErrorKind,
    /// A description for the log.
    pub message: String,
}

impl StoreError {
    /// An error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Unavailable => "store unavailable",
            StoreErrorKind::TimedOut => "store timed out",
            StoreErrorKind::Protocol => "store protocol error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Where limiting plugins keep their counters.
///
/// Keys are opaque strings built by the caller, which namespaces them; a store never
/// interprets them. Every method is one atomic operation.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Counts `cost` against `key`'s budget of `limit` per `window` if it fits, and reports
    /// the budget's state. See the [module docs](self) for the window semantics.
    ///
    /// A `cost` of 0 only reports the state (and is always admitted).
    async fn check(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError>;

    /// Admits `cost` against `key` with GCRA (the generic cell rate algorithm): `limit` per
    /// `window` as a steady rate of one unit every `window / limit`, with a burst of up to
    /// `limit` units. Exact: with a full budget the `limit`-th unit is admitted and the next
    /// refused; afterwards one unit comes back every `window / limit`. `remaining` is what
    /// could be admitted now, `reset_after` the time until the whole budget is back.
    ///
    /// Stores that do not implement it answer with a [`StoreErrorKind::Protocol`] error;
    /// the plugin checks [`RateLimitStore::supports_gcra`] at config load.
    async fn check_gcra(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        let _ = (key, limit, window, cost);
        Err(StoreError::new(
            StoreErrorKind::Protocol,
            "this store does not implement GCRA",
        ))
    }

    /// Whether [`RateLimitStore::check_gcra`] is implemented.
    fn supports_gcra(&self) -> bool {
        false
    }

    /// Takes one of `max` concurrency slots for `key`, if one is free.
    async fn acquire(&self, key: &str, max: u64) -> Result<Permit, StoreError>;

    /// Gives back the slot that an admitted [`RateLimitStore::acquire`] returned. Call it
    /// exactly once per admitted permit.
    async fn release(&self, key: &str, token: u64) -> Result<(), StoreError>;
}

/// How often (at most) each shard of a [`LocalStore`] drops its expired windows.
const SWEEP_EVERY_MS: u64 = 1_000;
/// Shards of a [`LocalStore`] map: a power of two, enough that requests on different keys
/// rarely wait for each other.
const SHARDS: usize = 64;

struct Window {
    /// When the window ends, in the store's milliseconds.
    ends_ms: u64,
    /// Cost admitted in the window.
    used: u64,
}

struct Shard<V> {
    map: HashMap<Box<str>, V>,
    next_sweep_ms: u64,
}

/// A map split into independently locked shards.
struct Sharded<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        next_sweep_ms: SWEEP_EVERY_MS,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        // The low bits pick the shard; SHARDS is a power of two, so this is in range.
        let i = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        lock(&self.shards[i])
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }
}

/// Locks `m`; a panic elsewhere while holding the lock leaves counts that are still valid
/// numbers, so the poison is ignored rather than spread to every later request.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A [`RateLimitStore`] in this process's memory: exact counts, for one node.
///
/// Keys live in a map split into 64 locked shards, so requests on different keys rarely
/// contend. Memory stays bounded by the keys seen within one window: each shard drops
/// windows that have ended at most once a second, when a request touches it, and a
/// concurrency key disappears as soon as its last slot is released.
pub struct LocalStore {
    epoch: Instant,
    windows: Sharded<Window>,
    gcra: Sharded<u64>,
    slots: Sharded<u64>,
    next_token: AtomicU64,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("windows", &self.windows.len())
            .field("slot_keys", &self.slots.len())
            .finish()
    }
}

impl LocalStore {
    /// An empty store.
    pub fn new() -> Self {
        LocalStore {
            epoch: Instant::now(),
            windows: Sharded::new(),
            gcra: Sharded::new(),
            slots: Sharded::new(),
            next_token: AtomicU64::new(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts `cost` against `key` (the synchronous form of [`RateLimitStore::check`]).
    pub fn check_now(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision {
        let now = self.now_ms();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut shard = self.windows.shard(key);
        if now >= shard.next_sweep_ms {
            shard.map.retain(|_, w| w.ends_ms > now);
            shard.next_sweep_ms = now.saturating_add(SWEEP_EVERY_MS);
        }
        let fresh = || Window {
            ends_ms: now.saturating_add(window_ms),
            used: 0,
        };
        let w = match shard.map.get_mut(key) {
            Some(w) => {
                if w.ends_ms <= now {
                    *w = fresh();
                }
                w
            }
            None => shard.map.entry(key.into()).or_insert_with(fresh),
        };
        let reset_after = Duration::from_millis(w.ends_ms - now);
        let allowed = w.used.saturating_add(cost) <= limit;
        if allowed {
            w.used += cost;
        }
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(w.used),
            reset_after,
            retry_after: (!allowed).then_some(reset_after),
        }
    }

    /// GCRA admission (the synchronous form of [`RateLimitStore::check_gcra`]). The state per
    /// key is one "theoretical arrival time"; entries whose time has passed (a full budget)
    /// are swept like expired windows.
    pub fn check_gcra_now(&self, key: &str, limit: u64, window: Duration, cost: u64) -> Decision {
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let now_ms = now_ns / 1_000_000;
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1);
        let limit = limit.max(1);
        let emission = (window_ns / limit).max(1);
        let mut shard = self.gcra.shard(key);
        if now_ms >= shard.next_sweep_ms {
            shard.map.retain(|_, tat| *tat > now_ns);
            shard.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        // One lookup (a keyed hash of the key) serves the read and, for a known key, the update.
        let stored = shard.map.get_mut(key);
        let tat = stored.as_deref().copied().unwrap_or(0).max(now_ns);
        let new_tat = tat.saturating_add(cost.saturating_mul(emission));
        let allowed = new_tat - now_ns <= limit.saturating_mul(emission);
        let effective = if allowed {
            if cost > 0 {
                match stored {
                    Some(t) => *t = new_tat,
                    None => {
                        shard.map.insert(key.into(), new_tat);
                    }
                }
            }
            new_tat
        } else {
            tat
        };
        let used_ns = effective - now_ns;
        let capacity = limit.saturating_mul(emission);
        Decision {
            allowed,
            limit,
            remaining: capacity.saturating_sub(used_ns) / emission,
            reset_after: Duration::from_nanos(used_ns),
            retry_after: (!allowed).then(|| {
                Duration::from_nanos(new_tat.saturating_sub(now_ns).saturating_sub(capacity))
            }),
        }
    }

    /// Takes a slot (the synchronous form of [`RateLimitStore::acquire`]).
    pub fn acquire_now(&self, key: &str, max: u64) -> Permit {
        let mut shard = self.slots.shard(key);
        let held = shard.map.get(key).copied().unwrap_or(0);
        if held >= max {
            return Permit {
                admitted: false,
                in_flight: held,
                token: 0,
            };
        }
        match shard.map.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                shard.map.insert(key.into(), 1);
            }
        }
        Permit {
            admitted: true,
            in_flight: held + 1,
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Gives a slot back (the synchronous form of [`RateLimitStore::release`]).
    pub fn release_now(&self, key: &str) {
        let mut shard = self.slots.shard(key);
        if let Some(n) = shard.map.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.map.remove(key);
            }
        }
    }

    /// Drops every window that has ended, in all shards at once (normally this happens a
    /// shard at a time as requests arrive).
    pub fn purge_expired(&self) {
        let now = self.now_ms();
        for s in self.windows.shards.iter() {
            let mut shard = lock(s);
            shard.map.retain(|_, w| w.ends_ms > now);
            shard.next_sweep_ms = now.saturating_add(SWEEP_EVERY_MS);
        }
    }

    /// Keys with a rate-limit window in memory (ended windows included until swept).
    pub fn window_keys(&self) -> usize {
        self.windows.len()
    }

    /// Keys holding at least one concurrency slot.
    pub fn slot_keys(&self) -> usize {
        self.slots.len()
    }
}

#[async_trait]
impl RateLimitStore for LocalStore {
    async fn check(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        Ok(self.check_now(key, limit, window, cost))
    }

    async fn check_gcra(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
        cost: u64,
    ) -> Result<Decision, StoreError> {
        Ok(self.check_gcra_now(key, limit, window, cost))
    }

    fn supports_gcra(&self) -> bool {
        true
    }

    async fn acquire(&self, key: &str, max: u64) -> Result<Permit, StoreError> {
        Ok(self.acquire_now(key, max))
    }

    async fn release(&self, key: &str, _token: u64) -> Result<(), StoreError> {
        self.release_now(key);
        Ok(())
    }
}

#[cfg(test)]
mod gcra_tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let s = LocalStore::new();
        let w = Duration::from_secs(60);
        for i in 0..5 {
            let d = s.check_gcra_now("k", 5, w, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = s.check_gcra_now("k", 5, w, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // The next unit comes back after window / limit = 12 s.
        let retry = d.retry_after.unwrap();
        assert!(
            retry <= Duration::from_secs(12) && retry > Duration::from_secs(11),
            "{retry:?}"
        );
        assert!(d.reset_after <= w && d.reset_after > Duration::from_secs(59));
        // Other keys are independent.
        assert!(s.check_gcra_now("other", 5, w, 1).allowed);
    }

    #[test]
    fn budget_comes_back_at_the_rate() {
        let s = LocalStore::new();
        let w = Duration::from_millis(100);
        for _ in 0..10 {
            assert!(s.check_gcra_now("k", 10, w, 1).allowed);
        }
        assert!(!s.check_gcra_now("k", 10, w, 1).allowed);
        std::thread::sleep(Duration::from_millis(25));
        // 25 ms at one unit per 10 ms: two units back.
        assert!(s.check_gcra_now("k", 10, w, 1).allowed);
        assert!(s.check_gcra_now("k", 10, w, 1).allowed);
        assert!(!s.check_gcra_now("k", 10, w, 1).allowed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn admits_exactly_limit_per_window() {
        let s = LocalStore::new();
        for expected_remaining in (0..5).rev() {
            let d = s.check_now("k", 5, MINUTE, 1);
            assert!(d.allowed);
            assert_eq!(d.limit, 5);
            assert_eq!(d.remaining, expected_remaining);
            assert!(d.reset_after <= MINUTE && d.reset_after > Duration::from_secs(59));
            assert_eq!(d.retry_after, None);
            assert_eq!(d.reset_secs(), 60);
        }
        let d = s.check_now("k", 5, MINUTE, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(d.reset_after));
        assert_eq!(d.retry_after_secs(), Some(60));
        // Refused requests use no budget: still refused, still 0 left, not negative.
        assert!(!s.check_now("k", 5, MINUTE, 1).allowed);
    }

    #[test]
    fn keys_are_independent() {
        let s = LocalStore::new();
        assert!(s.check_now("a", 1, MINUTE, 1).allowed);
        assert!(!s.check_now("a", 1, MINUTE, 1).allowed);
        assert!(s.check_now("b", 1, MINUTE, 1).allowed);
    }

    #[test]
    fn cost_counts_and_zero_cost_only_reports() {
        let s = LocalStore::new();
        let d = s.check_now("k", 10, MINUTE, 4);
        assert!(d.allowed);
        assert_eq!(d.remaining, 6);
        let d = s.check_now("k", 10, MINUTE, 7);
        assert!(!d.allowed, "7 does not fit in 6");
        assert_eq!(d.remaining, 6);
        let d = s.check_now("k", 10, MINUTE, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 6);
        assert!(s.check_now("k", 10, MINUTE, 6).allowed);
        assert!(!s.check_now("k", 10, MINUTE, 11).allowed);
    }

    #[test]
    fn window_ends_and_budget_returns() {
        let s = LocalStore::new();
        let w = Duration::from_millis(40);
        assert!(s.check_now("k", 1, w, 1).allowed);
        let refused = s.check_now("k", 1, w, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs(), Some(1), "at least one second");
        std::thread::sleep(Duration::from_millis(50));
        let d = s.check_now("k", 1, w, 1);
        assert!(d.allowed, "a new window opened");
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn ended_windows_are_swept() {
        let s = LocalStore::new();
        for i in 0..200 {
            s.check_now(&format!("k{i}"), 1, Duration::from_millis(10), 1);
        }
        s.check_now("long", 1, MINUTE, 1);
        assert_eq!(s.window_keys(), 201);
        std::thread::sleep(Duration::from_millis(20));
        s.purge_expired();
        assert_eq!(s.window_keys(), 1, "only the live window is kept");
    }

    #[test]
    fn shards_sweep_themselves_as_requests_arrive() {
        let s = LocalStore::new();
        for i in 0..500 {
            s.check_now(&format!("k{i}"), 1, Duration::from_millis(5), 1);
        }
        // Past the first sweep time of every shard, touch each shard with fresh keys.
        std::thread::sleep(Duration::from_millis(SWEEP_EVERY_MS + 20));
        for i in 0..2000 {
            s.check_now(&format!("fresh{i}"), 1, MINUTE, 1);
        }
        assert_eq!(s.window_keys(), 2000, "the 500 ended windows were dropped");
    }

    #[test]
    fn slots_are_counted_and_keys_dropped_when_free() {
        let s = LocalStore::new();
        let a = s.acquire_now("k", 2);
        let b = s.acquire_now("k", 2);
        assert!(a.admitted && b.admitted);
        assert_ne!(a.token, b.token);
        assert_eq!(b.in_flight, 2);
        let c = s.acquire_now("k", 2);
        assert!(!c.admitted);
        assert_eq!(c.in_flight, 2);
        s.release_now("k");
        assert!(s.acquire_now("k", 2).admitted);
        s.release_now("k");
        s.release_now("k");
        assert_eq!(s.slot_keys(), 0);
        // A stray release never goes below zero.
        s.release_now("k");
        assert_eq!(s.slot_keys(), 0);
        assert!(s.acquire_now("k", 1).admitted);
    }

    #[test]
    fn exact_under_contention() {
        let s = Arc::new(LocalStore::new());
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                let admitted = admitted.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if s.check_now("hot", 1000, MINUTE, 1).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
    }

    #[tokio::test]
    async fn trait_object_works() {
        let s: Arc<dyn RateLimitStore> = Arc::new(LocalStore::new());
        let d = s.check("k", 2, MINUTE, 1).await.unwrap();
        assert_eq!(d.remaining, 1);
        let p = s.acquire("c", 1).await.unwrap();
        assert!(p.admitted);
        assert!(!s.acquire("c", 1).await.unwrap().admitted);
        s.release("c", p.token).await.unwrap();
        assert!(s.acquire("c", 1).await.unwrap().admitted);
    }

    #[test]
    fn store_error_displays_kind() {
        let e = StoreError::new(StoreErrorKind::TimedOut, "no answer in 1s");
        assert_eq!(e.to_string(), "store timed out: no answer in 1s");
    }
}
