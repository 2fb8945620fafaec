//! What the `proxy-cache` and `compression` plugins decide for a request, for the engine to
//! carry out.
//!
//! Plugins never see Pingora's session, its cache or its response modules. Instead, a cache
//! or compression plugin builds a policy once per config load ([`CachePolicy`],
//! [`CompressionPolicy`]) and, in `request_filter`, stores what it decided for the request in
//! the [`RequestContext`](crate::RequestContext):
//!
//! ```text
//! proxy-cache  ──► ctx.set_state(CacheRequest { policy, action: Use { key, revalidate } | Purge | Bypass })
//! compression  ──► ctx.set_state(CompressRequest { policy, encoding })
//!                        │
//!                        ▼
//! engine: pingora-cache lookup / fill / revalidation / purge, X-Cache-Status;
//!         a downstream response module that encodes the body
//! ```
//!
//! Everything here is plain data plus the small decisions that depend only on it (which
//! content types are compressible), so that both sides can be tested without sockets.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Where a cache keeps its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStorage {
    /// In process memory, bounded by `max_size` bytes (least recently used entries go first).
    /// Every policy naming the same `zone` shares one store.
    Memory {
        /// The store's name.
        zone: Arc<str>,
        /// The byte budget: bodies, headers and bookkeeping.
        max_size: u64,
    },
    /// Files under `path`, bounded by `max_size` bytes; entries survive restarts.
    Disk {
        /// The directory (absolute).
        path: PathBuf,
        /// The byte budget of the files.
        max_size: u64,
    },
}

/// How one `proxy-cache` instance caches: built once per config load, shared by every request
/// of the scope it is configured at.
pub struct CachePolicy {
    /// Where entries live.
    pub storage: CacheStorage,
    /// Response statuses that may be stored, sorted.
    pub statuses: Vec<u16>,
    /// Freshness given to a storable response that states none (no `max-age`, `s-maxage` or
    /// `Expires`); `None` stores only responses that state their freshness.
    pub ttl_default: Option<Duration>,
    /// Responses with a larger body are not stored.
    pub max_body: u64,
    /// How long a request waits for another one that is already fetching the same entry;
    /// `None` turns the cache lock off (every miss goes to the upstream).
    pub lock_timeout: Option<Duration>,
    /// `stale-while-revalidate` for responses that do not carry one.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` for responses that do not carry one.
    pub stale_if_error: Duration,
    /// Filled by the engine the first time it serves this policy (the store it resolved), so
    /// that later requests skip the lookup. Plugins leave it alone.
    pub resolved: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl fmt::Debug for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachePolicy")
            .field("storage", &self.storage)
            .field("statuses", &self.statuses)
            .field("ttl_default", &self.ttl_default)
            .field("max_body", &self.max_body)
            .field("lock_timeout", &self.lock_timeout)
            .field("stale_while_revalidate", &self.stale_while_revalidate)
            .field("stale_if_error", &self.stale_if_error)
            .finish_non_exhaustive()
    }
}

impl CachePolicy {
    /// Whether a response with `status` may be stored.
    pub fn stores_status(&self, status: u16) -> bool {
        self.statuses.binary_search(&status).is_ok()
    }
}

/// What the cache does with this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheAction {
    /// Look the response up, and store it on a miss.
    Use {
        /// The primary cache key: the configured key parts, each length-prefixed, so that no
        /// two different requests frame to the same bytes.
        key: Vec<u8>,
        /// The client asked for a validated response (`Cache-Control: no-cache`): a stored
        /// one is revalidated with the upstream before it is used.
        revalidate: bool,
    },
    /// Remove the entry stored under `key` (an authorised `PURGE`).
    Purge {
        /// The primary key, built as for [`CacheAction::Use`].
        key: Vec<u8>,
    },
    /// Neither look up nor store (a method that is not cached, `Cache-Control: no-store`).
    Bypass,
}

/// The state `proxy-cache` leaves in the request context.
#[derive(Debug, Clone)]
pub struct CacheRequest {
    /// The policy of the instance that handled the request.
    pub policy: Arc<CachePolicy>,
    /// What to do.
    pub action: CacheAction,
}

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip`.
    Gzip,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

impl Encoding {
    /// Every coding, in the gateway's default order of preference.
    pub const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Zstd];

    /// The token used in `Accept-Encoding` and `Content-Encoding`.
    pub const fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding named by `token` (case-insensitive).
    pub fn from_token(token: &str) -> Option<Encoding> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.token().eq_ignore_ascii_case(token))
    }
}

/// How one `compression` instance compresses: built once per config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPolicy {
    /// Media types compressed exactly (`application/json`), lowercase.
    pub types: Vec<String>,
    /// Media type prefixes compressed (`text/` for `text/*`), lowercase.
    pub type_prefixes: Vec<String>,
    /// Every type is compressed (`types: ["*"]`).
    pub any_type: bool,
    /// Bodies shorter than this (by `Content-Length`) are sent as they are.
    pub min_length: u64,
    /// Compression level per coding.
    pub gzip_level: u32,
    /// Brotli quality.
    pub brotli_level: u32,
    /// Zstandard level.
    pub zstd_level: u32,
}

impl CompressionPolicy {
    /// Whether a response with this `Content-Type` value is compressible under the policy.
    /// Parameters (`; charset=utf-8`) and case are ignored.
    pub fn compresses_type(&self, content_type: &str) -> bool {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media.is_empty() {
            return false;
        }
        self.any_type
            || self.types.contains(&media)
            || self
                .type_prefixes
                .iter()
                .any(|p| media.starts_with(p.as_str()))
    }

    /// The level configured for `encoding`.
    pub fn level(&self, encoding: Encoding) -> u32 {
        match encoding {
            Encoding::Gzip => self.gzip_level,
            Encoding::Brotli => self.brotli_level,
            Encoding::Zstd => self.zstd_level,
        }
    }
}

/// The state `compression` leaves in the request context.
#[derive(Debug, Clone)]
pub struct CompressRequest {
    /// The policy of the instance that handled the request.
    pub policy: Arc<CompressionPolicy>,
    /// The coding the client accepts best among the configured ones; `None` when it accepts
    /// none of them (the response is then sent as it is, still with `Vary: Accept-Encoding`).
    pub encoding: Option<Encoding>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompressionPolicy {
        CompressionPolicy {
            types: vec!["application/json".into()],
            type_prefixes: vec!["text/".into()],
            any_type: false,
            min_length: 10,
            gzip_level: 6,
            brotli_level: 4,
            zstd_level: 3,
        }
    }

    #[test]
    fn types_match_without_parameters_or_case() {
        let p = policy();
        assert!(p.compresses_type("application/json"));
        assert!(p.compresses_type("Application/JSON; charset=utf-8"));
        assert!(p.compresses_type("text/html"));
        assert!(!p.compresses_type("image/png"));
        assert!(!p.compresses_type("application/jsonx"));
        assert!(!p.compresses_type(""));
    }

    #[test]
    fn encoding_tokens_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(Encoding::from_token(e.token()), Some(e));
        }
        assert_eq!(Encoding::from_token("GZIP"), Some(Encoding::Gzip));
        assert_eq!(Encoding::from_token("deflate"), None);
    }
}
