//! The plugins compiled into every Gatehouse binary. Each is one file with its config type
//! beside it, written against the public SDK only.

pub mod auth;
pub mod cache;
pub mod headers;
pub mod mock;
pub mod observe;
pub mod proxy_rewrite;
pub mod security;
pub mod traffic;
pub mod transform;

pub mod header_ops;

use crate::factory::PluginRegistry;

/// Registers every built-in plugin in `registry`.
pub fn register_all(registry: &mut PluginRegistry) {
    registry
        .register(mock::factory())
        .register(headers::factory())
        .register(proxy_rewrite::factory());
    auth::register(registry);
    cache::register(registry);
    observe::register(registry);
    security::register(registry);
    traffic::register(registry);
    transform::register(registry);
}
