//! Active health checks: building Pingora's HTTP/TCP checks from config, and the background
//! service that runs the checks (and DNS refreshes) of whatever pools the live config has.

use crate::config::model::{ActiveHealthCheck, ProbeKind, Upstream};
use crate::config::ConfigError;
use crate::state::LiveState;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{
    HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck,
};
use pingora_load_balancing::Backend;
use std::time::Duration;

struct LogHealthChange {
    upstream: String,
}

#[async_trait]
impl HealthObserve for LogHealthChange {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "upstream {}: node {} is healthy again",
                self.upstream,
                target.addr
            );
        } else {
            log::warn!(
                "upstream {}: node {} failed its health checks",
                self.upstream,
                target.addr
            );
        }
    }
}

/// Builds the active check of an upstream; `at` is the key path for errors.
pub fn build_check(
    active: &ActiveHealthCheck,
    upstream: &Upstream,
    default_host: &str,
    ca: Option<std::sync::Arc<pingora_core::protocols::tls::CaType>>,
    at: &str,
) -> Result<Box<dyn HealthCheck + Send + Sync>, ConfigError> {
    if active.healthy == 0 || active.unhealthy == 0 {
        return Err(ConfigError::at(
            at,
            "`healthy` and `unhealthy` must be at least 1",
        ));
    }
    let observer = Box::new(LogHealthChange {
        upstream: upstream.id.clone(),
    });
    let tls = upstream.scheme == crate::config::model::Scheme::Https;
    let timeout = active.timeout.get();
    match active.kind {
        ProbeKind::Tcp => {
            let mut hc = TcpHealthCheck::new();
            hc.consecutive_success = active.healthy as usize;
            hc.consecutive_failure = active.unhealthy as usize;
            hc.peer_template.options.connection_timeout = Some(timeout);
            hc.health_changed_callback = Some(observer);
            Ok(hc)
        }
        ProbeKind::Http => {
            if !active.path.starts_with('/') {
                return Err(ConfigError::at(format!("{at}.path"), "must start with `/`"));
            }
            if active.statuses.iter().any(|s| !(100..=599).contains(s))
                || active.statuses.is_empty()
            {
                return Err(ConfigError::at(
                    format!("{at}.statuses"),
                    "expected a non-empty list of HTTP statuses (100-599)",
                ));
            }
            let host = active
                .host
                .clone()
                .unwrap_or_else(|| default_host.to_string());
            let mut hc = HttpHealthCheck::new(&host, tls);
            let mut req = RequestHeader::build("GET", active.path.as_bytes(), None)
                .map_err(|e| ConfigError::at(format!("{at}.path"), e.to_string()))?;
            req.insert_header("Host", host.as_str())
                .map_err(|e| ConfigError::at(format!("{at}.host"), e.to_string()))?;
            req.insert_header("User-Agent", "gatehouse-health-check")
                .map_err(|e| ConfigError::at(at, e.to_string()))?;
            hc.req = req;
            hc.consecutive_success = active.healthy as usize;
            hc.consecutive_failure = active.unhealthy as usize;
            hc.peer_template.options.connection_timeout = Some(timeout);
            hc.peer_template.options.read_timeout = Some(timeout);
            if let Some(t) = &upstream.tls {
                hc.peer_template.options.verify_cert = t.verify;
                hc.peer_template.options.verify_hostname = t.verify;
                if let Some(sni) = &t.sni {
                    hc.peer_template.sni = sni.clone();
                }
            }
            hc.peer_template.options.ca = ca;
            let statuses = active.statuses.clone();
            hc.validator = Some(Box::new(move |resp| {
                if statuses.contains(&resp.status.as_u16()) {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode(
                            "unexpected health check status",
                            resp.status.as_u16(),
                        ),
                        "during http health check",
                    )
                }
            }));
            hc.health_changed_callback = Some(observer);
            Ok(Box::new(hc))
        }
    }
}

/// Runs due health checks and DNS refreshes of the live config's upstreams.
pub struct HealthService {
    state: LiveState,
}

impl HealthService {
    /// A service over `state`.
    pub fn new(state: LiveState) -> Self {
        HealthService { state }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let snapshot = self.state.load();
                    for pool in snapshot.upstreams.values() {
                        pool.tick();
                    }
                }
            }
        }
    }
}
