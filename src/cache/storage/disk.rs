//! A disk cache store: one metadata file and one body file per entry under a directory, with
//! a byte budget and least-recently-used eviction. Entries survive restarts.
//!
//! ```text
//! DIR/tmp/GEN.body                 fills in progress (removed when a fill fails)
//! DIR/ab/ab12…ef.meta              "GHC1", generation (u64), two lengths (u32), then the
//!                                  serialized CacheMeta (internal metadata, response header)
//! DIR/ab/ab12…ef-GEN.body          the body of that generation
//! ```
//!
//! A fill writes its body to `tmp/`, renames it into place under a new generation number,
//! then replaces the metadata file by renaming a complete new one over it: a reader sees the
//! old entry or the new one, never a mix. A reader that opened an old body keeps reading it
//! after it is unlinked. Revalidation rewrites only the metadata file.
//!
//! The LRU index lives in memory; it is rebuilt in the background when the store opens, so a
//! restart neither loses entries nor blocks requests while the directory is scanned.

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
use pingora_error::{Error, ErrorType, OrErr, Result};
use std::any::Any;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAGIC: &[u8; 4] = b"GHC1";
const META_HEAD: usize = 4 + 8 + 4 + 4;
const READ_CHUNK: usize = 64 * 1024;

/// What the index knows of an entry.
#[derive(Clone, Copy)]
struct Indexed {
    size: u64,
    generation: u64,
}

struct Index {
    entries: LruCache<HashBinary, Indexed>,
    used: u64,
}

/// The disk store. Create it with [`DiskStore::open`] and leak it; [`super::resolve`] keeps one
/// per directory.
pub struct DiskStore {
    root: PathBuf,
    budget: AtomicU64,
    index: Mutex<Index>,
    next_generation: AtomicU64,
    /// The first generation number of this process: files with lower ones are an earlier
    /// process's.
    first_generation: u64,
}

fn hex(bin: &HashBinary) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bin.len() * 2);
    for b in bin {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn io_err(context: &'static str, e: std::io::Error) -> Box<Error> {
    Error::because(ErrorType::InternalError, context, e)
}

/// Parses a metadata file: (generation, internal metadata, header).
fn parse_meta(data: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    if data.len() < META_HEAD || &data[..4] != MAGIC {
        return None;
    }
    let generation = u64::from_be_bytes(data[4..12].try_into().ok()?);
    let a = u32::from_be_bytes(data[12..16].try_into().ok()?) as usize;
    let b = u32::from_be_bytes(data[16..20].try_into().ok()?) as usize;
    let rest = &data[META_HEAD..];
    if rest.len() != a.checked_add(b)? {
        return None;
    }
    Some((generation, &rest[..a], &rest[a..]))
}

fn encode_meta(generation: u64, meta: &(Vec<u8>, Vec<u8>)) -> Result<Vec<u8>> {
    let a = u32::try_from(meta.0.len()).or_err(ErrorType::InternalError, "meta too large")?;
    let b = u32::try_from(meta.1.len()).or_err(ErrorType::InternalError, "header too large")?;
    let mut out = Vec::with_capacity(META_HEAD + meta.0.len() + meta.1.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(&meta.0);
    out.extend_from_slice(&meta.1);
    Ok(out)
}

impl DiskStore {
    /// Opens (creating if needed) a store in `root` holding at most `budget` bytes, and starts
    /// indexing what an earlier process left there.
    pub fn open(root: &Path, budget: u64) -> std::io::Result<&'static DiskStore> {
        std::fs::create_dir_all(root.join("tmp"))?;
        // Interrupted fills of an earlier process, removed before this one starts filling:
        // the scan runs beside new fills and must not touch their files.
        for f in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(f.path());
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let store: &'static DiskStore = Box::leak(Box::new(DiskStore {
            root: root.to_path_buf(),
            budget: AtomicU64::new(budget),
            index: Mutex::new(Index {
                entries: LruCache::unbounded(),
                used: 0,
            }),
            next_generation: AtomicU64::new(seed),
            first_generation: seed,
        }));
        std::thread::Builder::new()
            .name("gatehouse-cache-scan".into())
            .spawn(move || store.scan())?;
        Ok(store)
    }

    /// Changes the budget (after a config reload); entries over it are evicted.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        let evicted = {
            let mut index = lock(&self.index);
            Self::over_budget(&mut index, budget)
        };
        for (key, e) in evicted {
            self.remove_files_blocking(&key, e.generation);
        }
    }

    /// Bytes held now, as far as the index knows.
    pub fn used(&self) -> u64 {
        lock(&self.index).used
    }

    fn meta_path(&self, key: &HashBinary) -> PathBuf {
        let h = hex(key);
        self.root.join(&h[..2]).join(format!("{h}.meta"))
    }

    fn body_path(&self, key: &HashBinary, generation: u64) -> PathBuf {
        let h = hex(key);
        self.root
            .join(&h[..2])
            .join(format!("{h}-{generation}.body"))
    }

    fn tmp_path(&self, generation: u64, what: &str) -> PathBuf {
        self.root.join("tmp").join(format!("{generation}.{what}"))
    }

    fn over_budget(index: &mut Index, budget: u64) -> Vec<(HashBinary, Indexed)> {
        let mut out = Vec::new();
        while index.used > budget {
            match index.entries.pop_lru() {
                Some((k, e)) => {
                    index.used -= e.size;
                    out.push((k, e));
                }
                None => break,
            }
        }
        out
    }

    /// Records an entry; returns the entries whose files are to go: those evicted, and the
    /// generation it replaced.
    fn index_insert(&self, key: HashBinary, entry: Indexed) -> Vec<(HashBinary, Indexed)> {
        let budget = self.budget.load(Ordering::Relaxed);
        let mut index = lock(&self.index);
        let mut out = Vec::new();
        if let Some(old) = index.entries.put(key, entry) {
            index.used -= old.size;
            if old.generation != entry.generation {
                out.push((key, old));
            }
        }
        index.used += entry.size;
        out.extend(Self::over_budget(&mut index, budget));
        out
    }

    fn index_remove(&self, key: &HashBinary) -> Option<Indexed> {
        let mut index = lock(&self.index);
        let old = index.entries.pop(key)?;
        index.used -= old.size;
        Some(old)
    }

    /// Removes the files of one generation of `key`. The metadata file goes only if it still
    /// names that generation: a newer fill may have replaced it.
    async fn remove_files(&self, key: &HashBinary, generation: u64) {
        if let Ok(data) = tokio::fs::read(self.meta_path(key)).await {
            if parse_meta(&data).is_some_and(|(g, _, _)| g == generation) {
                let _ = tokio::fs::remove_file(self.meta_path(key)).await;
            }
        }
        let _ = tokio::fs::remove_file(self.body_path(key, generation)).await;
    }

    fn remove_files_blocking(&self, key: &HashBinary, generation: u64) {
        if let Ok(data) = std::fs::read(self.meta_path(key)) {
            if parse_meta(&data).is_some_and(|(g, _, _)| g == generation) {
                let _ = std::fs::remove_file(self.meta_path(key));
            }
        }
        let _ = std::fs::remove_file(self.body_path(key, generation));
    }

    /// Reads the metadata file of `key`: (generation, file contents).
    async fn read_meta(&self, key: &HashBinary) -> Result<Option<(u64, Vec<u8>)>> {
        match tokio::fs::read(self.meta_path(key)).await {
            Ok(data) => Ok(parse_meta(&data).map(|(g, _, _)| g).map(|g| (g, data))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading cache metadata", e)),
        }
    }

    /// Writes `contents` as the metadata file of `key`, atomically.
    async fn write_meta(&self, key: &HashBinary, generation: u64, contents: &[u8]) -> Result<()> {
        let tmp = self.tmp_path(generation, "meta");
        tokio::fs::write(&tmp, contents)
            .await
            .map_err(|e| io_err("writing cache metadata", e))?;
        tokio::fs::rename(&tmp, self.meta_path(key))
            .await
            .map_err(|e| io_err("placing cache metadata", e))
    }

    /// Indexes the entries already on disk, oldest first as least recently used, removes
    /// leftovers (interrupted fills, bodies no metadata names), and evicts over the budget.
    fn scan(&self) {
        let mut found: Vec<(std::time::SystemTime, HashBinary, Indexed)> = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !dir.path().is_dir() {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            let mut metas = Vec::new();
            let mut bodies = Vec::new();
            for f in files.flatten() {
                let file_name = f.file_name().to_string_lossy().into_owned();
                if file_name.ends_with(".meta") {
                    metas.push(f);
                } else if file_name.ends_with(".body") {
                    bodies.push(file_name);
                }
            }
            let mut live = std::collections::HashSet::new();
            for m in metas {
                let path = m.path();
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let Some(key) = pingora_cache::key::str2hex(stem) else {
                    continue;
                };
                let Ok(data) = std::fs::read(&path) else {
                    continue;
                };
                let Some((generation, _, _)) = parse_meta(&data) else {
                    let _ = std::fs::remove_file(&path);
                    continue;
                };
                let body = self.body_path(&key, generation);
                let Ok(body_meta) = std::fs::metadata(&body) else {
                    let _ = std::fs::remove_file(&path);
                    continue;
                };
                let mtime = m
                    .metadata()
                    .and_then(|md| md.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                live.insert(format!("{stem}-{generation}.body"));
                let size = data.len() as u64 + body_meta.len() + ENTRY_OVERHEAD;
                found.push((mtime, key, Indexed { size, generation }));
            }
            for b in bodies {
                // Bodies of this process's fills are placed before their metadata: a body
                // without metadata is only a leftover if an earlier process wrote it.
                let ours = b
                    .strip_suffix(".body")
                    .and_then(|s| s.rsplit_once('-'))
                    .and_then(|(_, g)| g.parse::<u64>().ok())
                    .is_some_and(|g| g >= self.first_generation);
                if !ours && !live.contains(&b) {
                    let _ = std::fs::remove_file(dir.path().join(&b));
                }
            }
        }
        // Newest first, each pushed to the cold end: the oldest ends up evicted first, and
        // entries that requests touched meanwhile stay hot.
        found.sort_by_key(|e| std::cmp::Reverse(e.0));
        let budget = self.budget.load(Ordering::Relaxed);
        let evicted = {
            let mut index = lock(&self.index);
            for (_, key, e) in found {
                if index.entries.contains(&key) {
                    continue;
                }
                index.entries.put(key, e);
                index.entries.demote(&key);
                index.used += e.size;
            }
            Self::over_budget(&mut index, budget)
        };
        for (key, e) in evicted {
            self.remove_files_blocking(&key, e.generation);
        }
    }
}

/// A hit: the body file, read in chunks.
struct DiskHit {
    file: tokio::fs::File,
    len: u64,
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let n = self
            .file
            .read_buf(&mut buf)
            .await
            .map_err(|e| io_err("reading cached body", e))?;
        Ok((n > 0).then(|| buf.freeze()))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        usize::try_from(self.len).unwrap_or(usize::MAX)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress: the body streams into a temporary file.
struct DiskMiss {
    store: &'static DiskStore,
    key: HashBinary,
    generation: u64,
    meta: Vec<u8>,
    file: Option<tokio::fs::File>,
    size: u64,
    done: bool,
}

#[async_trait]
impl HandleMiss for DiskMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.size += data.len() as u64;
        if self.size > self.store.budget.load(Ordering::Relaxed) {
            return Error::e_explain(
                ErrorType::InternalError,
                "cache body is over the store's budget",
            );
        }
        if data.is_empty() {
            return Ok(());
        }
        let tmp = self.store.tmp_path(self.generation, "body");
        if self.file.is_none() {
            let f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io_err("creating cache file", e))?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&data)
                .await
                .map_err(|e| io_err("writing cache file", e))?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let store = self.store;
        let tmp = store.tmp_path(self.generation, "body");
        match self.file.take() {
            Some(mut f) => {
                f.flush()
                    .await
                    .map_err(|e| io_err("writing cache file", e))?;
            }
            None => {
                tokio::fs::write(&tmp, b"")
                    .await
                    .map_err(|e| io_err("creating cache file", e))?;
            }
        }
        tokio::fs::create_dir_all(store.meta_path(&self.key).parent().unwrap_or(&store.root))
            .await
            .map_err(|e| io_err("creating cache directory", e))?;
        tokio::fs::rename(&tmp, store.body_path(&self.key, self.generation))
            .await
            .map_err(|e| io_err("placing cache file", e))?;
        let previous = store
            .read_meta(&self.key)
            .await
            .ok()
            .flatten()
            .map(|(g, _)| g);
        if let Err(e) = store
            .write_meta(&self.key, self.generation, &self.meta)
            .await
        {
            let _ = tokio::fs::remove_file(store.body_path(&self.key, self.generation)).await;
            return Err(e);
        }
        self.done = true;
        let size = self.meta.len() as u64 + self.size + ENTRY_OVERHEAD;
        let mut stale = store.index_insert(
            self.key,
            Indexed {
                size,
                generation: self.generation,
            },
        );
        if let Some(g) = previous.filter(|g| *g != self.generation) {
            stale.push((
                self.key,
                Indexed {
                    size: 0,
                    generation: g,
                },
            ));
        }
        for (key, e) in stale {
            store.remove_files(&key, e.generation).await;
        }
        Ok(MissFinishType::Created(
            usize::try_from(size).unwrap_or(usize::MAX),
        ))
    }
}

impl Drop for DiskMiss {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(self.store.tmp_path(self.generation, "body"));
        }
    }
}

#[async_trait]
impl Storage for DiskStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let Some((generation, data)) = self.read_meta(&hash).await? else {
            return Ok(None);
        };
        let Some((_, internal, header)) = parse_meta(&data) else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(internal, header)?;
        let file = match tokio::fs::File::open(self.body_path(&hash, generation)).await {
            Ok(f) => f,
            // Replaced or evicted between the two reads: a miss.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening cached body", e)),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| io_err("reading cached body", e))?
            .len();
        let known = lock(&self.index).entries.get(&hash).is_some();
        if !known {
            // Written by an earlier process and not indexed yet.
            let size = data.len() as u64 + len + ENTRY_OVERHEAD;
            for (k, e) in self.index_insert(hash, Indexed { size, generation }) {
                self.remove_files(&k, e.generation).await;
            }
        }
        Ok(Some((meta, Box::new(DiskHit { file, len }))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let meta = encode_meta(generation, &meta.serialize()?)?;
        Ok(Box::new(DiskMiss {
            store: self,
            key: key.combined_bin(),
            generation,
            meta,
            file: None,
            size: 0,
            done: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        let indexed = self.index_remove(&hash).map(|e| e.generation);
        let on_disk = self.read_meta(&hash).await?.map(|(g, _)| g);
        let mut found = false;
        for generation in [indexed, on_disk].into_iter().flatten() {
            found = true;
            self.remove_files(&hash, generation).await;
        }
        Ok(if found {
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
        let Some((generation, old)) = self.read_meta(&hash).await? else {
            return Ok(false);
        };
        let contents = encode_meta(generation, &meta.serialize()?)?;
        // A fresh temporary name: the generation's own is in use only during its fill.
        let tmp_generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp_path(tmp_generation, "meta");
        tokio::fs::write(&tmp, &contents)
            .await
            .map_err(|e| io_err("writing cache metadata", e))?;
        tokio::fs::rename(&tmp, self.meta_path(&hash))
            .await
            .map_err(|e| io_err("placing cache metadata", e))?;
        let mut guard = lock(&self.index);
        let index = &mut *guard;
        if let Some(e) = index.entries.get_mut(&hash) {
            let new_size = (e.size + contents.len() as u64).saturating_sub(old.len() as u64);
            let old_size = std::mem::replace(&mut e.size, new_size);
            index.used = (index.used + new_size).saturating_sub(old_size);
        }
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

    fn meta(tag: &str) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.insert_header("x-tag", tag).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    async fn fill(store: &'static DiskStore, key: &str, tag: &str, body: &[u8]) {
        let span = Span::inactive().handle();
        let key = CacheKey::new(key, "");
        let mut miss = store
            .get_miss_handler(&key, &meta(tag), &span)
            .await
            .unwrap();
        for chunk in body.chunks(1000) {
            miss.write_body(Bytes::copy_from_slice(chunk), false)
                .await
                .unwrap();
        }
        miss.finish().await.unwrap();
    }

    async fn read(store: &'static DiskStore, key: &str) -> Option<(String, Vec<u8>)> {
        let span = Span::inactive().handle();
        let (meta, mut hit) = store
            .lookup(&CacheKey::new(key, ""), &span)
            .await
            .unwrap()?;
        let tag = meta
            .headers()
            .get("x-tag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut out = Vec::new();
        while let Some(b) = hit.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        Some((tag, out))
    }

    fn wait_indexed(store: &DiskStore, at_least: u64) {
        for _ in 0..200 {
            if store.used() >= at_least {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn stores_replaces_purges_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
        let body: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        fill(store, "a", "v1", &body).await;
        assert_eq!(
            read(store, "a").await.unwrap(),
            ("v1".to_string(), body.clone())
        );
        fill(store, "a", "v2", b"second").await;
        assert_eq!(
            read(store, "a").await.unwrap(),
            ("v2".to_string(), b"second".to_vec())
        );
        let span = Span::inactive().handle();
        assert!(store
            .update_meta(&CacheKey::new("a", ""), &meta("v3"), &span)
            .await
            .unwrap());
        assert_eq!(read(store, "a").await.unwrap().0, "v3");
        fill(store, "b", "b", b"bee").await;
        let compact = CacheKey::new("b", "").to_compact();
        let out = store
            .purge(
                PurgeTarget::Active(&compact),
                PurgeType::Invalidation,
                &span,
            )
            .await
            .unwrap();
        assert_eq!(out, PurgeOutcome::Purged(None));
        assert!(read(store, "b").await.is_none());
        // Exactly one body file is left: the second generation of `a`.
        let bodies: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.ends_with(".body"))
            .collect();
        assert_eq!(bodies.len(), 1, "{bodies:?}");

        let used = store.used();
        let reopened = DiskStore::open(dir.path(), 1 << 30).unwrap();
        wait_indexed(reopened, used);
        assert_eq!(reopened.used(), used);
        assert_eq!(
            read(reopened, "a").await.unwrap(),
            ("v3".to_string(), b"second".to_vec())
        );
    }

    #[tokio::test]
    async fn evicts_least_recently_used_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
        fill(store, "probe", "p", &[1u8; 1000]).await;
        let one = store.used();
        store.set_budget(one * 3 + one / 2);
        fill(store, "a", "a", &[1u8; 1000]).await;
        fill(store, "b", "b", &[1u8; 1000]).await;
        fill(store, "c", "c", &[1u8; 1000]).await;
        assert!(read(store, "probe").await.is_none(), "probe was the oldest");
        assert!(read(store, "a").await.is_some());
        fill(store, "d", "d", &[1u8; 1000]).await;
        assert!(read(store, "b").await.is_none());
        for k in ["a", "c", "d"] {
            assert!(read(store, k).await.is_some(), "{k}");
        }
        let files = walk(dir.path()).len();
        assert_eq!(files, 6, "three entries, two files each");
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }

    #[test]
    fn meta_files_round_trip_and_reject_garbage() {
        let encoded = encode_meta(7, &(b"abc".to_vec(), b"de".to_vec())).unwrap();
        let (g, a, b) = parse_meta(&encoded).unwrap();
        assert_eq!((g, a, b), (7, &b"abc"[..], &b"de"[..]));
        assert!(parse_meta(b"GHC1").is_none());
        assert!(parse_meta(&encoded[..encoded.len() - 1]).is_none());
        assert_eq!(hex(&[0xab; 16]).len(), 32);
    }
}
