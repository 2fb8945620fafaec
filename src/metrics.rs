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

static CONFIG_RELOAD_SECONDS: LazyLock<Option<prometheus::Histogram>> = LazyLock::new(|| {
    prometheus::register_histogram!(
        "gatehouse_config_reload_duration_seconds",
        "Time from reading a new config to serving it (parse, check, compile, swap).",
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .ok()
});

/// Records how long a successful reload took.
pub fn record_reload_duration(took: std::time::Duration) {
    if let Some(h) = CONFIG_RELOAD_SECONDS.as_ref() {
        h.observe(took.as_secs_f64());
    }
}

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

static CONNECTIONS: LazyLock<Option<(IntGauge, prometheus::IntCounter)>> = LazyLock::new(|| {
    Some((
        register_int_gauge!(
            "gatehouse_downstream_connections",
            "Client connections open now."
        )
        .ok()?,
        prometheus::register_int_counter!(
            "gatehouse_downstream_connections_total",
            "Client connections accepted."
        )
        .ok()?,
    ))
});

/// Counts one open client connection until dropped.
pub struct ConnectionGuard(());

impl ConnectionGuard {
    /// A connection was accepted.
    pub fn new() -> Self {
        if let Some((open, total)) = CONNECTIONS.as_ref() {
            open.inc();
            total.inc();
        }
        ConnectionGuard(())
    }
}

impl Default for ConnectionGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some((open, _)) = CONNECTIONS.as_ref() {
            open.dec();
        }
    }
}

static NODE_HEALTHY: LazyLock<Option<prometheus::IntGaugeVec>> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "gatehouse_upstream_node_healthy",
        "1 when an upstream node takes traffic (healthy and not ejected), else 0.",
        &["upstream", "node"]
    )
    .ok()
});

/// Serves `GET /metrics` (Prometheus text format) from the default registry, with the
/// upstream node health of the live config computed at scrape time.
pub struct MetricsApi {
    state: crate::state::LiveState,
}

impl MetricsApi {
    /// A metrics endpoint over `state`.
    pub fn new(state: crate::state::LiveState) -> Self {
        MetricsApi { state }
    }

    fn refresh_health(&self) {
        let Some(gauge) = NODE_HEALTHY.as_ref() else {
            return;
        };
        // Reset so that removed upstreams and nodes disappear from the output.
        gauge.reset();
        let snapshot = self.state.load();
        for pool in snapshot.upstreams.values() {
            for backend in pool.backends().iter() {
                let ejected = backend
                    .ext
                    .get::<std::sync::Arc<crate::upstream::node::NodeState>>()
                    .is_some_and(|n| n.is_ejected());
                let up = pool.is_healthy(backend) && !ejected;
                gauge
                    .with_label_values(&[pool.id.as_ref(), backend.addr.to_string().as_str()])
                    .set(i64::from(up));
            }
        }
    }
}

#[async_trait::async_trait]
impl pingora_core::apps::http_app::ServeHttp for MetricsApi {
    async fn response(
        &self,
        session: &mut pingora_core::protocols::http::ServerSession,
    ) -> http::Response<Vec<u8>> {
        use prometheus::Encoder;
        let path = session.req_header().uri.path();
        let (status, content_type, body) = if path == "/metrics" {
            self.refresh_health();
            let encoder = prometheus::TextEncoder::new();
            let mut buf = Vec::new();
            match encoder.encode(&prometheus::gather(), &mut buf) {
                Ok(()) => (200, encoder.format_type().to_string(), buf),
                Err(e) => (500, "text/plain".to_string(), e.to_string().into_bytes()),
            }
        } else {
            (404, "text/plain".to_string(), b"see /metrics\n".to_vec())
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_else(|_| http::Response::new(Vec::new()))
    }
}
