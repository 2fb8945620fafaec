//! Gatehouse: a programmable API gateway on Pingora.
//!
//! The request's path through the engine:
//!
//! ```text
//! listener (TLS by SNI: tls) ──► GatewayProxy (proxy) ── pins the live Snapshot (state)
//!   request_filter:  normalise path (router::path) → Router::lookup (router) → route's Chain
//!                    request hooks (chain) → a plugin may answer
//!   upstream_peer:   plugin hooks → UpstreamPool::select (upstream) → HttpPeer
//!   upstream_request_filter: path/Host/X-Forwarded-*, hop-by-hop (proxy::forward) → hooks
//!   response_filter / response_body_filter: hooks (and passive health)
//!   logging:         hooks, always
//! ```
//!
//! Who owns what:
//!
//! ```text
//! LiveState (ArcSwap) ──► Snapshot (immutable; one per config load)
//!                          ├── Router ── PathTree per host ── Entry → route index
//!                          ├── CompiledRoute[] ── Chain (per-phase plugin lists) ── Arc<dyn Plugin>
//!                          └── UpstreamPool by id ── LoadBalancer (pingora-load-balancing)
//! ```
//! A config is parsed ([`config`]), compiled ([`snapshot`]) and swapped in whole; a bad
//! config never replaces a good one.

/// The allocator: see the `mimalloc` feature in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub mod alloc;
pub mod cache;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod compress;
pub mod config;
pub mod drain;
pub mod idle;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod upstream;

pub use server::{Gateway, GatewayBuilder};
