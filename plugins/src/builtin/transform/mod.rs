//! Transformation: responses rewritten, redirects, request ids.

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    let _ = registry;
}
