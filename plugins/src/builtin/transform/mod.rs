//! Transformation: responses rewritten, redirects, request ids.

pub mod redirect;
pub mod request_id;
pub mod response_rewrite;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(request_id::factory())
        .register(response_rewrite::factory())
        .register(redirect::factory());
}
