//! An in-memory cache store with a byte budget and least-recently-used eviction.
//!
//! Pingora's own `MemCache` is meant for tests (no bound, a copy of the body on every hit).
//! This store keeps each entry as its metadata and one shared `Bytes` body, counts every byte
//! it holds against a budget (the metadata at its serialized size), and evicts the least
//! recently used entries when an insert would go over it. Hits hand out slices of the shared
//! body without copying, and rebuild the metadata from its parts: deserializing it would
//! decompress the response header (zstd) on every hit, about a tenth of a hit's CPU time.
//!
//! One mutex guards the LRU list; it is held only to find, insert or unlink an entry, never
//! across I/O or an `.await`.

use super::{lock, ENTRY_OVERHEAD};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One stored response.
struct Entry {
    meta: StoredMeta,
    body: Bytes,
}

impl Entry {
    fn weight(&self) -> u64 {
        self.meta.size + self.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// A stored `CacheMeta`.
struct StoredMeta {
    form: MetaForm,
    /// The serialized size: what the metadata counts against the budget.
    size: u64,
}

enum MetaForm {
    /// Everything `CacheMeta::new` and its public setters can rebuild exactly.
    Parts(Box<MetaParts>),
    /// `CacheMeta::serialize()`, for metadata the parts cannot express (a revalidated entry:
    /// its `updated` time differs from `created`, and no public setter restores it).
    Serialized(Vec<u8>, Vec<u8>),
}

struct MetaParts {
    fresh_until: SystemTime,
    created: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
    header: ResponseHeader,
}

impl StoredMeta {
    fn of(meta: &CacheMeta) -> Result<Self> {
        let (internal, header) = meta.serialize()?;
        let size = (internal.len() + header.len()) as u64;
        let created = meta.created();
        let form = if meta.updated() == created && meta.provenance() == created {
            MetaForm::Parts(Box::new(MetaParts {
                fresh_until: meta.fresh_until(),
                created,
                stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
                stale_if_error_sec: meta.stale_if_error_sec(),
                variance: meta.variance(),
                epoch_override: meta.epoch_override(),
                header: meta.response_header_copy(),
            }))
        } else {
            MetaForm::Serialized(internal, header)
        };
        Ok(StoredMeta { form, size })
    }

    fn to_meta(&self) -> Result<CacheMeta> {
        match &self.form {
            MetaForm::Parts(p) => {
                let mut meta = CacheMeta::new(
                    p.fresh_until,
                    p.created,
                    p.stale_while_revalidate_sec,
                    p.stale_if_error_sec,
                    p.header.clone(),
                );
                if let Some(v) = p.variance {
                    meta.set_variance(v);
                }
                if let Some(e) = p.epoch_override {
                    meta.set_epoch_override(e);
                }
                Ok(meta)
            }
            MetaForm::Serialized(internal, header) => CacheMeta::deserialize(internal, header),
        }
    }
}

struct Inner {
    entries: LruCache<HashBinary, Arc<Entry>>,
    used: u64,
}

/// The memory store. Create it with [`MemoryStore::new`] and leak it (`Storage` wants a
/// `'static` reference); [`super::resolve`] keeps one per zone.
pub struct MemoryStore {
    budget: AtomicU64,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store holding at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        MemoryStore {
            budget: AtomicU64::new(budget),
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    /// Changes the budget (after a config reload); entries over it are evicted now.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        let mut inner = lock(&self.inner);
        Self::evict(&mut inner, budget);
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        lock(&self.inner).used
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict(inner: &mut Inner, budget: u64) {
        while inner.used > budget {
            match inner.entries.pop_lru() {
                Some((_, e)) => inner.used -= e.weight(),
                None => break,
            }
        }
    }

    /// Stores `entry` under `key`, replacing any older one, then evicts down to the budget.
    /// An entry larger than the whole budget is not stored. Returns its weight.
    fn insert(&self, key: HashBinary, entry: Entry) -> Option<u64> {
        let weight = entry.weight();
        let budget = self.budget.load(Ordering::Relaxed);
        let mut inner = lock(&self.inner);
        if weight > budget {
            // Whatever was stored is outdated now; do not keep serving it.
            if let Some(old) = inner.entries.pop(&key) {
                inner.used -= old.weight();
            }
            return None;
        }
        if let Some(old) = inner.entries.put(key, Arc::new(entry)) {
            inner.used -= old.weight();
        }
        inner.used += weight;
        Self::evict(&mut inner, budget);
        Some(weight)
    }

    fn remove(&self, key: &HashBinary) -> bool {
        let mut inner = lock(&self.inner);
        match inner.entries.pop(key) {
            Some(old) => {
                inner.used -= old.weight();
                true
            }
            None => false,
        }
    }
}

/// A hit: a view into the stored body.
struct MemoryHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {}", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress: the body collects here until `finish` stores it.
struct MemoryMiss {
    store: &'static MemoryStore,
    key: HashBinary,
    meta: Option<StoredMeta>,
    chunks: Vec<Bytes>,
    size: usize,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.size += data.len();
        let limit = self.store.budget.load(Ordering::Relaxed);
        if self.size as u64 > limit {
            return Error::e_explain(
                ErrorType::InternalError,
                format!(
                    "cache body of {} bytes is over the store's budget",
                    self.size
                ),
            );
        }
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut buf = BytesMut::with_capacity(self.size);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        };
        let Some(meta) = self.meta.take() else {
            return Error::e_explain(ErrorType::InternalError, "cache fill finished twice");
        };
        let weight = self.store.insert(self.key, Entry { meta, body });
        Ok(MissFinishType::Created(
            weight.map_or(0, |w| usize::try_from(w).unwrap_or(usize::MAX)),
        ))
    }
}

fn target_key(target: PurgeTarget<'_>) -> HashBinary {
    target.key().combined_bin()
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let entry = lock(&self.inner).entries.get(&hash).cloned();
        let Some(entry) = entry else {
            return Ok(None);
        };
        let meta = entry.meta.to_meta()?;
        let hit = MemoryHit {
            body: entry.body.clone(),
            start: 0,
            end: entry.body.len(),
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            store: self,
            key: key.combined_bin(),
            meta: Some(StoredMeta::of(meta)?),
            chunks: Vec::new(),
            size: 0,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.remove(&target_key(target)) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let stored = StoredMeta::of(meta)?;
        let mut inner = lock(&self.inner);
        let Some(old) = inner.entries.peek(&hash).cloned() else {
            return Ok(false);
        };
        let entry = Arc::new(Entry {
            meta: stored,
            body: old.body.clone(),
        });
        inner.used = inner.used - old.weight() + entry.weight();
        inner.entries.put(hash, entry);
        let budget = self.budget.load(Ordering::Relaxed);
        Self::evict(&mut inner, budget);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    fn leak(budget: u64) -> &'static MemoryStore {
        Box::leak(Box::new(MemoryStore::new(budget)))
    }

    async fn fill(store: &'static MemoryStore, key: &str, body: &[u8]) {
        let span = Span::inactive().handle();
        let key = CacheKey::new(key, "");
        let mut miss = store.get_miss_handler(&key, &meta(), &span).await.unwrap();
        let (a, b) = body.split_at(body.len() / 2);
        miss.write_body(Bytes::copy_from_slice(a), false)
            .await
            .unwrap();
        miss.write_body(Bytes::copy_from_slice(b), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    async fn read(store: &'static MemoryStore, key: &str) -> Option<Vec<u8>> {
        let span = Span::inactive().handle();
        let (_, mut hit) = store
            .lookup(&CacheKey::new(key, ""), &span)
            .await
            .unwrap()?;
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        Some(out)
    }

    fn same(a: &CacheMeta, b: &CacheMeta) {
        assert_eq!(a.fresh_until(), b.fresh_until());
        assert_eq!(a.created(), b.created());
        assert_eq!(a.updated(), b.updated());
        assert_eq!(a.epoch(), b.epoch());
        assert_eq!(a.variance(), b.variance());
        assert_eq!(
            a.stale_while_revalidate_sec(),
            b.stale_while_revalidate_sec()
        );
        assert_eq!(a.stale_if_error_sec(), b.stale_if_error_sec());
        let (ha, hb) = (a.response_header(), b.response_header());
        assert_eq!(ha.status, hb.status);
        let names = |h: &ResponseHeader| {
            h.headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(ha), names(hb));
    }

    #[test]
    fn metadata_is_rebuilt_exactly() {
        let mut header = ResponseHeader::build(203, None).unwrap();
        header.append_header("Cache-Control", "max-age=60").unwrap();
        header.append_header("X-Two", "a").unwrap();
        header.append_header("X-Two", "b").unwrap();
        let now = SystemTime::now();
        let mut original = CacheMeta::new(now + Duration::from_secs(60), now, 5, 7, header);
        original.set_variance([9u8; 16]);
        original.set_epoch_override(now - Duration::from_secs(3));
        let stored = StoredMeta::of(&original).unwrap();
        assert!(matches!(stored.form, MetaForm::Parts(_)));
        same(&stored.to_meta().unwrap(), &original);

        // Revalidated: `updated` moves past `created`, which only the serialized form keeps.
        std::thread::sleep(Duration::from_millis(2));
        original.update_freshness(now + Duration::from_secs(120), 1, 2);
        let stored = StoredMeta::of(&original).unwrap();
        assert!(matches!(stored.form, MetaForm::Serialized(..)));
        same(&stored.to_meta().unwrap(), &original);
    }

    #[tokio::test]
    async fn stores_and_serves_the_same_bytes() {
        let store = leak(1 << 20);
        let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        fill(store, "a", &body).await;
        assert_eq!(read(store, "a").await.unwrap(), body);
        assert_eq!(read(store, "b").await, None);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn evicts_least_recently_used_within_the_budget() {
        let body = vec![7u8; 1000];
        // Room for three entries of about 1000 bytes plus metadata, not four.
        let probe = leak(1 << 20);
        fill(probe, "x", &body).await;
        let one = probe.used();
        let store = leak(one * 3 + one / 2);
        fill(store, "a", &body).await;
        fill(store, "b", &body).await;
        fill(store, "c", &body).await;
        assert!(read(store, "a").await.is_some(), "a is now the most recent");
        fill(store, "d", &body).await;
        assert!(
            read(store, "b").await.is_none(),
            "b was the least recently used"
        );
        for k in ["a", "c", "d"] {
            assert!(read(store, k).await.is_some(), "{k} kept");
        }
        assert!(store.used() <= one * 3 + one / 2);
        store.set_budget(one);
        assert_eq!(store.len(), 1);
        assert!(
            read(store, "d").await.is_some(),
            "the most recent survives a smaller budget"
        );
    }

    #[tokio::test]
    async fn an_entry_over_the_budget_is_not_stored() {
        let store = leak(500);
        let span = Span::inactive().handle();
        let key = CacheKey::new("big", "");
        let mut miss = store.get_miss_handler(&key, &meta(), &span).await.unwrap();
        assert!(miss
            .write_body(Bytes::from(vec![0u8; 600]), true)
            .await
            .is_err());
        fill(store, "small", &[1u8; 300]).await;
        assert!(
            read(store, "small").await.is_none(),
            "300 bytes plus metadata is over 500"
        );
        assert_eq!(store.used(), 0);
    }

    #[tokio::test]
    async fn purge_and_update_meta() {
        let store = leak(1 << 20);
        fill(store, "a", b"hello").await;
        let span = Span::inactive().handle();
        let key = CacheKey::new("a", "");
        assert!(store.update_meta(&key, &meta(), &span).await.unwrap());
        assert_eq!(read(store, "a").await.unwrap(), b"hello");
        let compact = key.to_compact();
        let out = store
            .purge(
                PurgeTarget::Active(&compact),
                PurgeType::Invalidation,
                &span,
            )
            .await
            .unwrap();
        assert_eq!(out, PurgeOutcome::Purged(None));
        assert_eq!(read(store, "a").await, None);
        let out = store
            .purge(
                PurgeTarget::Active(&compact),
                PurgeType::Invalidation,
                &span,
            )
            .await
            .unwrap();
        assert_eq!(out, PurgeOutcome::NotFound);
        assert!(!store.update_meta(&key, &meta(), &span).await.unwrap());
        assert_eq!(store.used(), 0);
    }

    #[tokio::test]
    async fn seeks_for_ranges() {
        let store = leak(1 << 20);
        fill(store, "a", b"0123456789").await;
        let span = Span::inactive().handle();
        let (_, mut hit) = store
            .lookup(&CacheKey::new("a", ""), &span)
            .await
            .unwrap()
            .unwrap();
        hit.seek(2, Some(5)).unwrap();
        assert_eq!(&hit.read_body().await.unwrap().unwrap()[..], b"234");
        assert!(hit.read_body().await.unwrap().is_none());
        assert!(hit.seek(10, None).is_err());
    }
}
