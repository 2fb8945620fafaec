//! The gateway's own metrics, registered once in the default Prometheus registry (the one the
//! metrics listener serves).

use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use std::sync::LazyLock;

static CONFIG_RELOADS: LazyLock<Option<IntCounterVec>> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gatehouse_config_reloads_total",
        "Config reloads by result (success, failure).",
        &["result"]
    )
    .ok()
});

static CONFIG_LAST_SUCCESS: LazyLock<Option<IntGauge>> = LazyLock::new(|| {
    register_int_gauge!(
        "gatehouse_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful config reload."
    )
    .ok()
});

/// Counts a reload attempt.
pub fn record_reload(success: bool) {
    if let Some(c) = CONFIG_RELOADS.as_ref() {
        c.with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
    }
    if success {
        if let Some(g) = CONFIG_LAST_SUCCESS.as_ref() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            g.set(now);
        }
    }
}
