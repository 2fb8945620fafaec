//! Traffic control: rate limits, concurrency limits, circuit breaking, traffic splitting.
//!
//! In a chain they run in this order (priority, high first): `limit-conn` (1003),
//! `circuit-breaker` (1002), `rate-limit` (1001), then `traffic-split` (966) with the
//! transforms. Counters of `rate-limit` and `limit-conn` live in a
//! [`RateLimitStore`](crate::store::RateLimitStore).

pub mod circuit_breaker;
pub mod limit_conn;
pub mod limit_key;
pub mod rate_limit;
pub mod traffic_split;

use crate::factory::PluginRegistry;

/// Registers this group's plugins.
pub fn register(registry: &mut PluginRegistry) {
    registry
        .register(rate_limit::factory())
        .register(limit_conn::factory())
        .register(circuit_breaker::factory())
        .register(traffic_split::factory());
}
