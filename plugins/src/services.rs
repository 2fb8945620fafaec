//! Services the gateway shares with plugins: they live as long as the process, across config
//! reloads, so state kept in them (rate-limit counters, in-flight slots, Redis connections)
//! survives a reload.

use crate::store::redis::{RedisPool, RedisTarget};
use crate::store::LocalStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Long-lived services handed to every plugin build through [`crate::BuildEnv::services`].
/// Clones share everything.
#[derive(Clone)]
pub struct SharedServices {
    /// The in-process counter store (`store: local` of the traffic plugins).
    pub local_store: Arc<LocalStore>,
    /// Redis connections, one pool per target (`store: redis`).
    redis: Arc<Mutex<HashMap<RedisTarget, Arc<RedisPool>>>>,
}

impl SharedServices {
    /// Fresh services for one gateway process.
    pub fn new() -> Self {
        SharedServices {
            local_store: Arc::new(LocalStore::new()),
            redis: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The process's connection pool for `target`: created at the first call, then the same
    /// for every plugin instance and every config load, so all of them share one connection
    /// per Redis server. Nothing connects until the first store operation.
    pub fn redis_pool(&self, target: &RedisTarget) -> Arc<RedisPool> {
        let mut pools = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(target) {
            return p.clone();
        }
        let pool = Arc::new(RedisPool::new(target));
        pools.insert(target.clone(), pool.clone());
        pool
    }
}

impl Default for SharedServices {
    fn default() -> Self {
        Self::new()
    }
}
