//! Observability: metrics, access logs, tracing.

pub mod access_log;
pub mod opentelemetry;
pub mod prometheus;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(prometheus::factory())
        .register(access_log::factory())
        .register(opentelemetry::factory());
}
