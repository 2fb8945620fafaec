//! Traffic control: rate limits, concurrency limits, circuit breaking, traffic splitting.

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    let _ = registry;
}
