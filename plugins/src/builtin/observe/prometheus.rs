//! `prometheus`: request metrics per route, served by the gateway's metrics listener.
//!
//! Series are labelled by route id, service id, method and status class — never by raw path
//! or host — so a scan of random URLs cannot grow the number of series.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Phases, Plugin};
use async_trait::async_trait;
use pingora_http::RequestHeader;
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGaugeVec,
};
use serde::Deserialize;
use std::sync::LazyLock;

/// Config of `prometheus`: nothing to set; `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {}

/// Label value for requests that matched no route.
pub const NO_ROUTE: &str = "_none";

/// The process-wide request metrics (registered once in the default registry).
pub struct RequestMetrics {
    /// `gatehouse_http_requests_total{route,service,method,status}`.
    pub requests: IntCounterVec,
    /// `gatehouse_http_request_duration_seconds{route}`.
    pub duration: HistogramVec,
    /// `gatehouse_upstream_response_duration_seconds{route}`.
    pub upstream_duration: HistogramVec,
    /// `gatehouse_http_request_body_bytes_total{route}`.
    pub bytes_in: IntCounterVec,
    /// `gatehouse_http_response_body_bytes_total{route}`.
    pub bytes_out: IntCounterVec,
    /// `gatehouse_http_requests_in_flight{route}`.
    pub in_flight: IntGaugeVec,
}

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The metrics, or `None` if registration failed (a name clash with a plugin of the
/// embedding binary); the plugin then records nothing rather than failing requests.
pub static METRICS: LazyLock<Option<RequestMetrics>> = LazyLock::new(|| {
    Some(RequestMetrics {
        requests: register_int_counter_vec!(
            "gatehouse_http_requests_total",
            "Requests by route, service, method and status class.",
            &["route", "service", "method", "status"]
        )
        .ok()?,
        duration: register_histogram_vec!(
            "gatehouse_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route.",
            &["route"],
            BUCKETS.to_vec()
        )
        .ok()?,
        upstream_duration: register_histogram_vec!(
            "gatehouse_upstream_response_duration_seconds",
            "Time from sending the request upstream to the upstream's response headers, by route.",
            &["route"],
            BUCKETS.to_vec()
        )
        .ok()?,
        bytes_in: register_int_counter_vec!(
            "gatehouse_http_request_body_bytes_total",
            "Request body bytes received from clients, by route.",
            &["route"]
        )
        .ok()?,
        bytes_out: register_int_counter_vec!(
            "gatehouse_http_response_body_bytes_total",
            "Response body bytes sent to clients, by route.",
            &["route"]
        )
        .ok()?,
        in_flight: register_int_gauge_vec!(
            "gatehouse_http_requests_in_flight",
            "Requests being handled, by route.",
            &["route"]
        )
        .ok()?,
    })
});

/// The method as a label: the standard methods, anything else as `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The status class as a label: `2xx`…`5xx`, `0` when no response was sent.
pub fn status_label(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "0",
    }
}

/// The per-route series, resolved once per route (not per request): a label lookup hashes
/// its values and takes a lock, which is what a request should not pay five times.
struct RouteHandles {
    in_flight: prometheus::IntGauge,
    duration: prometheus::Histogram,
    upstream_duration: prometheus::Histogram,
    bytes_in: prometheus::IntCounter,
    bytes_out: prometheus::IntCounter,
}

impl RouteHandles {
    fn new(m: &RequestMetrics, route: &str) -> Self {
        RouteHandles {
            in_flight: m.in_flight.with_label_values(&[route]),
            duration: m.duration.with_label_values(&[route]),
            upstream_duration: m.upstream_duration.with_label_values(&[route]),
            bytes_in: m.bytes_in.with_label_values(&[route]),
            bytes_out: m.bytes_out.with_label_values(&[route]),
        }
    }
}

/// This request's route handles, with its in-flight count taken.
#[derive(Clone)]
struct Tracked(std::sync::Arc<RouteHandles>);

/// The `prometheus` plugin.
pub struct Prometheus {
    /// Route id → its series. Route ids are bounded by the config, and the map is rebuilt
    /// with the plugin at every config load.
    routes: dashmap::DashMap<std::sync::Arc<str>, std::sync::Arc<RouteHandles>>,
}

/// Priority of `prometheus`: first in, so that in-flight counts cover the whole chain.
pub const PRIORITY: i32 = 13000;

/// The factory for `prometheus`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("prometheus", PRIORITY, |_c: PrometheusConfig, _env| {
        if METRICS.is_none() {
            return Err(ConfigError::whole(
                "the request metrics could not be registered (a metric with the same name exists)",
            ));
        }
        Ok(Prometheus {
            routes: dashmap::DashMap::new(),
        })
    })
}

fn route_label(ctx: &RequestContext) -> &str {
    ctx.route_id.as_deref().unwrap_or(NO_ROUTE)
}

#[async_trait]
impl Plugin for Prometheus {
    fn name(&self) -> &str {
        "prometheus"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::LOGGING
    }

    async fn request_filter(
        &self,
        _req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> crate::Result<crate::Flow> {
        if let Some(m) = METRICS.as_ref() {
            let route: std::sync::Arc<str> = ctx
                .route_id
                .clone()
                .unwrap_or_else(|| std::sync::Arc::from(NO_ROUTE));
            let handles = match self.routes.get(&route) {
                Some(h) => h.clone(),
                None => self
                    .routes
                    .entry(route.clone())
                    .or_insert_with(|| std::sync::Arc::new(RouteHandles::new(m, &route)))
                    .clone(),
            };
            handles.in_flight.inc();
            ctx.set_state(Tracked(handles));
        }
        Ok(crate::Flow::Continue)
    }

    async fn logging(&self, req: &RequestHeader, status: u16, ctx: &mut RequestContext) {
        let Some(m) = METRICS.as_ref() else {
            return;
        };
        let handles = match ctx.take_state::<Tracked>() {
            Some(Tracked(h)) => {
                h.in_flight.dec();
                h
            }
            // The request hook did not run (a plugin earlier in a narrower chain answered
            // before it): resolve the handles now.
            None => std::sync::Arc::new(RouteHandles::new(m, route_label(ctx))),
        };
        let route = route_label(ctx);
        let service = ctx.service_id.as_deref().unwrap_or("");
        m.requests
            .with_label_values(&[
                route,
                service,
                method_label(&req.method),
                status_label(status),
            ])
            .inc();
        handles
            .duration
            .observe(ctx.started.elapsed().as_secs_f64());
        if let Some(t) = ctx.upstream_response_time {
            handles.upstream_duration.observe(t.as_secs_f64());
        }
        if ctx.request_body_bytes > 0 {
            handles.bytes_in.inc_by(ctx.request_body_bytes);
        }
        if ctx.response_body_bytes > 0 {
            handles.bytes_out.inc_by(ctx.response_body_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
        assert_eq!(status_label(204), "2xx");
        assert_eq!(status_label(0), "0");
        assert_eq!(status_label(999), "0");
    }
}
