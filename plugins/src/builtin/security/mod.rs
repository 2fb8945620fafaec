//! Access control and protection: IP lists, CORS, size limits, `User-Agent` and `Referer`
//! lists, request validation.

pub mod cors;
pub mod ip_restriction;
pub mod referer_restriction;
pub mod request_size_limit;
pub mod ua_restriction;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(ip_restriction::factory())
        .register(cors::factory())
        .register(request_size_limit::factory())
        .register(ua_restriction::factory())
        .register(referer_restriction::factory());
}
