//! Access control and protection: IP lists, CORS, size limits, request validation.

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    let _ = registry;
}
