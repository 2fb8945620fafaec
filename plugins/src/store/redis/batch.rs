//! Local batching (`sync_interval`): rate limits counted in this process and exchanged with
//! Redis every interval, for fewer round trips at a bounded error (docs/cluster.md).

use super::pool::{io_runtime, ms, RedisPool};
use super::{decision, ttl_duration, RedisStore};
use crate::store::{Decision, StoreError};
use ::redis::Script;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

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
pub(super) struct Batcher {
    pool: Arc<RedisPool>,
    pub(super) interval: Duration,
    entries: DashMap<Box<str>, Entry>,
    started: AtomicBool,
}

impl Batcher {
    pub(super) async fn check(
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

impl RedisPool {
    /// The batcher for `interval` (shared by every store with that interval).
    pub(super) fn batcher(self: &Arc<Self>, interval: Duration) -> Arc<Batcher> {
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
}
