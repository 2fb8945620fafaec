//! Authentication and authorization: consumers' credentials checked, the consumer put in the request context.

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    let _ = registry;
}
