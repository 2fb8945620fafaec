//! Caching and compression: `proxy-cache` (responses stored and served per RFC 9111) and
//! `compression` (gzip, brotli, zstd). Both decide per request and leave their decision in the
//! context as the types of [`crate::cache_policy`]; the engine carries it out.

pub mod compression;
pub mod proxy_cache;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(proxy_cache::factory())
        .register(compression::factory());
}
