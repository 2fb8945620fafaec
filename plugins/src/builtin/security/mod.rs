//! Access control and protection: IP lists, CORS, size limits, `User-Agent` and `Referer`
//! lists, request validation.

pub mod cors;
pub mod ip_restriction;
pub mod referer_restriction;
pub mod request_size_limit;
pub mod request_validation;
pub mod ua_restriction;

use crate::factory::PluginRegistry;
use crate::response::PluginResponse;
use crate::units::ByteSize;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(ip_restriction::factory())
        .register(cors::factory())
        .register(request_size_limit::factory())
        .register(ua_restriction::factory())
        .register(referer_restriction::factory())
        .register(request_validation::factory());
}

/// The 413 sent for a body over `max`: `request body larger than 1KiB` (or `… 1500 bytes`).
pub(crate) fn body_too_large(max: ByteSize) -> PluginResponse {
    let size = max.to_string();
    let message = if size.ends_with(|c: char| c.is_ascii_digit()) {
        format!("request body larger than {size} bytes")
    } else {
        format!("request body larger than {size}")
    };
    PluginResponse::error(413, &message)
}
