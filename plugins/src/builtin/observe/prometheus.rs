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
use std::sync::{LazyLock, OnceLock};

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

/// Method labels, in the order [`method_index`] numbers them.
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// Status class labels, in the order [`status_index`] numbers them.
const STATUS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "0"];

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// The method as a label: the standard methods, anything else as `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(m)]
}

/// The status class as a label: `2xx`…`5xx`, `0` when no response was sent.
pub fn status_label(status: u16) -> &'static str {
    STATUS_LABELS[status_index(status)]
}

/// The per-route series, resolved once per route (not per request): a label lookup hashes
/// its values and takes a lock, which is what a request should not pay five times.
struct RouteHandles {
    in_flight: prometheus::IntGauge,
    duration: prometheus::Histogram,
    upstream_duration: prometheus::Histogram,
    bytes_in: prometheus::IntCounter,
    bytes_out: prometheus::IntCounter,
    /// The route's service, the `service` label of its request counts.
    service: Box<str>,
    /// The request counts by method and status class, each resolved on first use: a route
    /// sees only a few of the combinations.
    requests: [[OnceLock<prometheus::IntCounter>; STATUS_LABELS.len()]; METHOD_LABELS.len()],
}

impl RouteHandles {
    fn new(m: &RequestMetrics, route: &str, service: &str) -> Self {
        RouteHandles {
            in_flight: m.in_flight.with_label_values(&[route]),
            duration: m.duration.with_label_values(&[route]),
            upstream_duration: m.upstream_duration.with_label_values(&[route]),
            bytes_in: m.bytes_in.with_label_values(&[route]),
            bytes_out: m.bytes_out.with_label_values(&[route]),
            service: service.into(),
            requests: Default::default(),
        }
    }

    /// Counts a finished request of this route.
    fn count_request(&self, m: &RequestMetrics, route: &str, method: usize, status: usize) {
        let labels = |service| [route, service, METHOD_LABELS[method], STATUS_LABELS[status]];
        self.requests[method][status]
            .get_or_init(|| m.requests.with_label_values(&labels(&self.service)))
            .inc();
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

impl Prometheus {
    /// The series of the request's route, made on the route's first request.
    fn handles(&self, m: &RequestMetrics, ctx: &RequestContext) -> std::sync::Arc<RouteHandles> {
        let route: std::sync::Arc<str> = ctx
            .route_id
            .clone()
            .unwrap_or_else(|| std::sync::Arc::from(NO_ROUTE));
        if let Some(h) = self.routes.get(&route) {
            return h.clone();
        }
        let service = ctx.service_id.as_deref().unwrap_or("");
        self.routes
            .entry(route.clone())
            .or_insert_with(|| std::sync::Arc::new(RouteHandles::new(m, &route, service)))
            .clone()
    }
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
            let handles = self.handles(m, ctx);
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
            // before it): the route's series, as the request hook would have found them.
            None => self.handles(m, ctx),
        };
        let (method, status_class) = (method_index(&req.method), status_index(status));
        let route = route_label(ctx);
        let service = ctx.service_id.as_deref().unwrap_or("");
        if *handles.service == *service {
            handles.count_request(m, route, method, status_class);
        } else {
            // A route id's service is fixed within one config; never a guess across configs.
            let labels = [
                route,
                service,
                METHOD_LABELS[method],
                STATUS_LABELS[status_class],
            ];
            m.requests.with_label_values(&labels).inc();
        }
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

    #[tokio::test]
    async fn requests_are_counted_by_route_service_method_and_status() {
        let m = METRICS.as_ref().unwrap();
        let plugin = Prometheus {
            routes: dashmap::DashMap::new(),
        };
        let count = |method: &str, status: &str, service: &str| {
            m.requests
                .with_label_values(&["prom-unit", service, method, status])
                .get()
        };
        let serve = |method: &'static str, status: u16, service: &'static str| {
            let plugin = &plugin;
            async move {
                let mut req = crate::testkit::request(method, "/").build();
                let mut ctx = RequestContext::new();
                ctx.route_id = Some(std::sync::Arc::from("prom-unit"));
                ctx.service_id = Some(service.into());
                plugin.request_filter(&mut req, &mut ctx).await.unwrap();
                plugin.logging(&req, status, &mut ctx).await;
            }
        };
        serve("GET", 200, "svc").await;
        serve("GET", 204, "svc").await;
        serve("POST", 503, "svc").await;
        serve("BREW", 200, "svc").await;
        assert_eq!(count("GET", "2xx", "svc"), 2);
        assert_eq!(count("POST", "5xx", "svc"), 1);
        assert_eq!(count("OTHER", "2xx", "svc"), 1);
        assert_eq!(count("POST", "2xx", "svc"), 0);
        // The same route id under another service (as a later config could have it).
        serve("GET", 200, "other").await;
        assert_eq!(count("GET", "2xx", "other"), 1);
        assert_eq!(count("GET", "2xx", "svc"), 2);
        let in_flight = m.in_flight.with_label_values(&["prom-unit"]).get();
        assert_eq!(in_flight, 0);
        // A request whose request hook did not run is still counted, on the route's series.
        let req = crate::testkit::request("GET", "/").build();
        let mut ctx = RequestContext::new();
        ctx.route_id = Some(std::sync::Arc::from("prom-unit"));
        ctx.service_id = Some("svc".into());
        plugin.logging(&req, 200, &mut ctx).await;
        assert_eq!(count("GET", "2xx", "svc"), 3);
        assert_eq!(m.in_flight.with_label_values(&["prom-unit"]).get(), 0);
    }
}
