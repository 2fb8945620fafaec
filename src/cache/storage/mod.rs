//! Cache stores and the process-wide registry that hands each policy its store.
//!
//! Stores outlive config loads: a reload that keeps a memory zone or a disk directory keeps
//! its entries (a changed `max_size` applies from the first request that uses the new
//! config). pingora-cache wants `&'static` storage, so each store is created once per zone or
//! directory and never freed; their number is bounded by the zones and directories ever
//! configured.

pub mod disk;
pub mod memory;

use gatehouse_plugins::cache_policy::{CachePolicy, CacheStorage};
use pingora_cache::Storage;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

/// Bytes counted per entry on top of its metadata and body (index node, key, allocation
/// headers), so that a budget also bounds many tiny entries.
pub const ENTRY_OVERHEAD: u64 = 128;

/// Locks `m`, going on with the data if a holder panicked (the data stays consistent: every
/// critical section here finishes its bookkeeping before it can fail).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy)]
enum Store {
    Memory(&'static memory::MemoryStore),
    Disk(&'static disk::DiskStore),
}

impl Store {
    fn storage(self) -> &'static (dyn Storage + Sync) {
        match self {
            Store::Memory(m) => m,
            Store::Disk(d) => d,
        }
    }
}

#[derive(Default)]
struct Registry {
    memory: HashMap<Arc<str>, &'static memory::MemoryStore>,
    disk: HashMap<PathBuf, &'static disk::DiskStore>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

/// What a policy resolved to, memoized in [`CachePolicy::resolved`].
struct Resolved(Store);

fn open(spec: &CacheStorage) -> std::io::Result<Store> {
    let mut registry = lock(&REGISTRY);
    match spec {
        CacheStorage::Memory { zone, max_size } => {
            if let Some(m) = registry.memory.get(zone) {
                m.set_budget(*max_size);
                return Ok(Store::Memory(m));
            }
            let m: &'static memory::MemoryStore =
                Box::leak(Box::new(memory::MemoryStore::new(*max_size)));
            registry.memory.insert(zone.clone(), m);
            Ok(Store::Memory(m))
        }
        CacheStorage::Disk { path, max_size } => {
            let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            if let Some(d) = registry.disk.get(&key) {
                d.set_budget(*max_size);
                return Ok(Store::Disk(d));
            }
            let d = disk::DiskStore::open(&key, *max_size)?;
            registry.disk.insert(key, d);
            Ok(Store::Disk(d))
        }
    }
}

/// The store `policy` uses: found (or created) on the policy's first request, then
/// remembered in the policy.
pub fn resolve(policy: &CachePolicy) -> std::io::Result<&'static (dyn Storage + Sync)> {
    if let Some(r) = policy
        .resolved
        .get()
        .and_then(|r| r.downcast_ref::<Resolved>())
    {
        return Ok(r.0.storage());
    }
    let store = open(&policy.storage)?;
    let _ = policy.resolved.set(Arc::new(Resolved(store)));
    Ok(store.storage())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::time::Duration;

    fn policy(storage: CacheStorage) -> CachePolicy {
        CachePolicy {
            storage,
            statuses: vec![200],
            ttl_default: None,
            max_body: 1024,
            lock_timeout: Some(Duration::from_secs(1)),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            resolved: OnceLock::new(),
        }
    }

    #[test]
    fn one_store_per_zone_and_directory() {
        let mem = |zone: &str| {
            policy(CacheStorage::Memory {
                zone: zone.into(),
                max_size: 1 << 20,
            })
        };
        let a = resolve(&mem("test:a")).unwrap();
        let a2 = resolve(&mem("test:a")).unwrap();
        let b = resolve(&mem("test:b")).unwrap();
        let addr = |s: &'static (dyn Storage + Sync)| s as *const _ as *const u8;
        assert_eq!(addr(a), addr(a2));
        assert_ne!(addr(a), addr(b));

        let dir = tempfile::tempdir().unwrap();
        let disk = || {
            policy(CacheStorage::Disk {
                path: dir.path().to_path_buf(),
                max_size: 1 << 20,
            })
        };
        let p = disk();
        let d1 = resolve(&p).unwrap();
        assert_eq!(
            addr(resolve(&p).unwrap()),
            addr(d1),
            "memoized in the policy"
        );
        assert_eq!(addr(resolve(&disk()).unwrap()), addr(d1));
        assert!(dir.path().join("tmp").is_dir());
    }
}
