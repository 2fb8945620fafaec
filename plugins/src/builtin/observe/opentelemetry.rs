//! `opentelemetry`: distributed tracing. The gateway joins the caller's trace (W3C Trace
//! Context `traceparent` / `tracestate`) or starts one, records one SERVER span per request,
//! tells the upstream that span is its parent, and exports sampled spans to an OpenTelemetry
//! collector over OTLP/HTTP (JSON) when an `endpoint` is configured.
//!
//! ```text
//! client ── traceparent: 00-T-P-01 ──► gateway span S (parent P) ── traceparent: 00-T-S-01 ──► upstream
//!                                          │ logging: span ended
//!                                          ▼
//!                             queue ─► exporter thread ─► POST {endpoint}
//! ```
//!
//! Other plugins read the request's ids from the context: `ctx.state::<TraceIds>()`.

pub mod otlp;
pub mod trace_context;

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::units::Duration;
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use otlp::{Exporter, ExporterSettings, SpanRecord};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trace_context::{format_traceparent, parse_traceparent, to_hex, TRACEPARENT, TRACESTATE};

/// Config of `opentelemetry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    /// The OTLP/HTTP traces URL (`http://collector:4318/v1/traces`). A URL without a path
    /// gets `/v1/traces`. Absent: ids are propagated, nothing is exported.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Fraction of new traces that are sampled, 0.0–1.0. A request that carries a valid
    /// `traceparent` follows the caller's `sampled` flag instead.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Timeout of one export request.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// The most spans in one export request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The longest a finished span waits before it is sent.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: Duration,
    /// Spans that may wait for the exporter; more are dropped and counted.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Extra headers on export requests (e.g. an API key for a hosted collector).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Resource attributes of the exported spans (`deployment.environment: prod`); values
    /// are strings, numbers or booleans.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, serde_json::Value>,
}

fn default_service_name() -> String {
    "gatehouse".into()
}
fn default_sample_ratio() -> f64 {
    1.0
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_batch_size() -> usize {
    512
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_queue_size() -> usize {
    2048
}

/// The trace ids of the current request, in its [`RequestContext`] state from
/// `request_filter` on: `ctx.state::<TraceIds>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// The trace the request belongs to (the caller's, or a new one).
    pub trace_id: [u8; 16],
    /// The gateway's span for this request; the upstream sees it as its parent.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
}

impl TraceIds {
    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The gateway's span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The `traceparent` value sent upstream.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&format_traceparent(
            &self.trace_id,
            &self.span_id,
            self.sampled,
        ))
        .into_owned()
    }
}

/// Decides whether a new trace is sampled from its trace id, so that every gateway with
/// the same ratio decides the same for the same trace.
#[derive(Debug, Clone, Copy)]
struct Sampler {
    /// Sampled when the id's low 64 bits are below this; `u64::MAX` with `always`.
    threshold: u64,
    always: bool,
}

impl Sampler {
    fn new(ratio: f64) -> Self {
        Sampler {
            // `as` saturates: 1.0 would give u64::MAX, which is not "every id".
            threshold: (ratio * 2f64.powi(64)) as u64,
            always: ratio >= 1.0,
        }
    }

    fn sample(&self, trace_id: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        self.always || u64::from_be_bytes(low) < self.threshold
    }
}

/// The `opentelemetry` plugin.
pub struct OpenTelemetry {
    sampler: Sampler,
    exporter: Option<Arc<Exporter>>,
}

/// Priority of `opentelemetry`: before every other plugin, so that the span covers the
/// whole chain and every plugin (and every answer a plugin sends) sees the trace ids.
pub const PRIORITY: i32 = 12500;

/// The factory for `opentelemetry`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("opentelemetry", PRIORITY, |c: OpenTelemetryConfig, _env| {
        OpenTelemetry::new(c)
    })
}

/// The export URL: an http(s) URL with a host; an empty path becomes `/v1/traces`.
fn endpoint_url(endpoint: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        ConfigError::at(
            "endpoint",
            format!(
                "`{endpoint}` {why}; expected an OTLP/HTTP traces URL such as \
                 http://127.0.0.1:4318/v1/traces"
            ),
        )
    };
    let mut url = reqwest::Url::parse(endpoint).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/v1/traces");
    }
    Ok(url.to_string())
}

/// Headers the exporter sets itself or that frame the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// Checks every export option (also without `endpoint`, so that a mistake shows before
/// export is switched on); the exporter's settings when an endpoint is configured.
fn export_settings(c: &OpenTelemetryConfig) -> Result<Option<ExporterSettings>, ConfigError> {
    let endpoint = c.endpoint.as_deref().map(endpoint_url).transpose()?;
    if c.service_name.trim().is_empty() {
        return Err(ConfigError::at("service_name", "must not be empty"));
    }
    let timeout = c.timeout.get();
    if timeout.is_zero() {
        return Err(ConfigError::at(
            "timeout",
            "must be longer than 0, e.g. `2s`",
        ));
    }
    if c.batch_size == 0 {
        return Err(ConfigError::at("batch_size", "must be at least 1"));
    }
    if c.max_queue_size < c.batch_size {
        return Err(ConfigError::at(
            "max_queue_size",
            format!(
                "must be at least `batch_size` ({}), or batches could never fill",
                c.batch_size
            ),
        ));
    }
    let flush_interval = c.flush_interval.get();
    if flush_interval < std::time::Duration::from_millis(10) {
        return Err(ConfigError::at(
            "flush_interval",
            "must be at least 10ms, e.g. `1s`",
        ));
    }
    let mut headers = Vec::with_capacity(c.headers.len());
    for (name, value) in &c.headers {
        let path = format!("headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::at(&path, format!("`{name}` is not a valid header name")))?;
        if RESERVED_HEADERS.contains(&n.as_str()) {
            return Err(ConfigError::at(
                &path,
                format!("`{name}` is set by the exporter and cannot be configured"),
            ));
        }
        HeaderValue::from_str(value).map_err(|_| {
            ConfigError::at(
                &path,
                "is not a valid header value (visible ASCII expected)",
            )
        })?;
        headers.push((n.as_str().to_string(), value.clone()));
    }
    let mut attributes = Vec::with_capacity(c.resource_attributes.len());
    for (key, value) in &c.resource_attributes {
        let path = format!("resource_attributes.{key}");
        if key.is_empty() {
            return Err(ConfigError::at(&path, "attribute names must not be empty"));
        }
        if key == "service.name" {
            return Err(ConfigError::at(
                &path,
                "set the service name with `service_name`",
            ));
        }
        let v = otlp::any_value(value)
            .ok_or_else(|| ConfigError::at(&path, "expected a string, a number or a boolean"))?;
        attributes.push((key.clone(), v));
    }
    Ok(endpoint.map(|endpoint| ExporterSettings {
        endpoint,
        headers,
        timeout,
        batch_size: c.batch_size,
        flush_interval,
        max_queue_size: c.max_queue_size,
        resource_json: otlp::resource_json(&c.service_name, &attributes),
    }))
}

impl OpenTelemetry {
    /// Builds the plugin from its config; with an `endpoint`, gets the exporter for its
    /// settings (shared with earlier configs that used the same ones).
    pub fn new(c: OpenTelemetryConfig) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&c.sample_ratio) {
            return Err(ConfigError::at(
                "sample_ratio",
                format!(
                    "{} is not a fraction between 0.0 and 1.0 (e.g. 0.1 samples 10% of new traces)",
                    c.sample_ratio
                ),
            ));
        }
        let exporter = export_settings(&c)?.map(Exporter::shared);
        Ok(OpenTelemetry {
            sampler: Sampler::new(c.sample_ratio),
            exporter,
        })
    }

    /// The trace ids for a request: the caller's trace when it sent one valid
    /// `traceparent`, else a new trace; a new span id either way.
    fn begin(&self, req: &RequestHeader) -> TraceIds {
        let mut values = req.headers.get_all(TRACEPARENT).iter();
        let incoming = match (values.next(), values.next()) {
            (Some(v), None) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        let span_id = random_id::<8>();
        match incoming {
            Some(tp) => TraceIds {
                trace_id: tp.trace_id,
                span_id,
                parent_span_id: Some(tp.parent_id),
                sampled: tp.sampled(),
            },
            None => {
                let trace_id = random_id::<16>();
                TraceIds {
                    trace_id,
                    span_id,
                    parent_span_id: None,
                    sampled: self.sampler.sample(&trace_id),
                }
            }
        }
    }
}

/// A random id that is not all zero (all zero means "invalid" in Trace Context).
fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The host the client asked for, without the port (and without brackets for IPv6).
fn server_address(req: &RequestHeader) -> Option<&str> {
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(http::header::HOST)?.to_str().ok())?;
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    (!host.is_empty()).then_some(host)
}

#[async_trait]
impl Plugin for OpenTelemetry {
    fn name(&self) -> &str {
        "opentelemetry"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        let propagate = Phases::REQUEST | Phases::UPSTREAM_REQUEST;
        if self.exporter.is_some() {
            propagate | Phases::LOGGING
        } else {
            propagate
        }
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let ids = self.begin(req);
        ctx.set_state(ids);
        Ok(Flow::Continue)
    }

    async fn upstream_request_filter(
        &self,
        upstream_req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let ids = match ctx.state::<TraceIds>() {
            Some(ids) => *ids,
            None => {
                let ids = self.begin(upstream_req);
                ctx.set_state(ids);
                ids
            }
        };
        let value = format_traceparent(&ids.trace_id, &ids.span_id, ids.sampled);
        let value = HeaderValue::from_bytes(&value)
            .or_err(ErrorType::InternalError, "traceparent as a header value")?;
        upstream_req.insert_header(TRACEPARENT, value)?;
        // `tracestate` belongs to the caller's trace: it goes on unchanged with it, and is
        // dropped with a new trace or when it is malformed.
        let keep_state = ids.parent_span_id.is_some()
            && trace_context::tracestate_is_valid(
                upstream_req
                    .headers
                    .get_all(TRACESTATE)
                    .iter()
                    .map(HeaderValue::as_bytes),
            );
        if !keep_state {
            upstream_req.remove_header(TRACESTATE);
        }
        Ok(())
    }

    async fn logging(&self, req: &RequestHeader, status: u16, ctx: &mut RequestContext) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        // Without ids, the request was answered before this plugin's request hook ran (a
        // malformed request, or a wider scope's plugin answered): it still gets its span.
        let ids = match ctx.state::<TraceIds>() {
            Some(ids) => *ids,
            None => self.begin(req),
        };
        if !ids.sampled {
            return;
        }
        let end = SystemTime::now();
        let end_unix_nanos = unix_nanos(end);
        let elapsed = u64::try_from(ctx.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let path = if ctx.path.is_empty() {
            req.uri.path().to_string()
        } else {
            ctx.path.clone()
        };
        exporter.offer(SpanRecord {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            parent_span_id: ids.parent_span_id,
            start_unix_nanos: end_unix_nanos.saturating_sub(elapsed),
            end_unix_nanos,
            method: req.method.clone(),
            scheme: if ctx.tls { "https" } else { "http" },
            path,
            status,
            route: ctx.route_id.clone(),
            service: ctx.service_id.clone(),
            server_address: server_address(req).map(str::to_string),
            client_address: ctx.client_ip,
            upstream: ctx.upstream_id.clone(),
            consumer: ctx.consumer.clone(),
            request_id: ctx.request_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config(&factory(), config).unwrap()
    }

    fn err(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config(&factory(), config)
            .err()
            .unwrap()
    }

    fn sent_traceparent(req: &RequestHeader) -> String {
        let v: Vec<_> = req.headers.get_all(TRACEPARENT).iter().collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn joins_the_callers_trace() {
        let mut h = harness(serde_json::json!({}));
        let mut req = request("GET", "/")
            .header("traceparent", INCOMING)
            .header("tracestate", "rojo=00f067aa0ba902b7")
            .header("tracestate", "congo=t61rcWkgMzE")
            .build();
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        let ids = *h.ctx.state::<TraceIds>().unwrap();
        assert_eq!(ids.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(to_hex(&ids.parent_span_id.unwrap()), "00f067aa0ba902b7");
        assert_ne!(ids.span_id_hex(), "00f067aa0ba902b7");
        assert!(ids.sampled);
        // The request as the client sent it is left alone; the upstream request changes.
        assert_eq!(req.headers.get(TRACEPARENT).unwrap(), INCOMING);
        h.upstream_request(&mut req).await.unwrap();
        assert_eq!(
            sent_traceparent(&req),
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                ids.span_id_hex()
            )
        );
        assert_eq!(sent_traceparent(&req), ids.traceparent());
        let states: Vec<_> = req.headers.get_all(TRACESTATE).iter().collect();
        assert_eq!(states, ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]);
    }

    #[tokio::test]
    async fn follows_the_callers_sampling_decision() {
        let mut h = harness(serde_json::json!({ "sample_ratio": 0.0 }));
        let mut req = request("GET", "/").header("traceparent", INCOMING).build();
        h.request(&mut req).await.unwrap();
        assert!(h.ctx.state::<TraceIds>().unwrap().sampled);

        let mut h = harness(serde_json::json!({ "sample_ratio": 1.0 }));
        let unsampled = INCOMING.replace("-01", "-00");
        let mut req = request("GET", "/")
            .header("traceparent", &unsampled)
            .build();
        h.request(&mut req).await.unwrap();
        assert!(!h.ctx.state::<TraceIds>().unwrap().sampled);
        h.upstream_request(&mut req).await.unwrap();
        assert!(sent_traceparent(&req).ends_with("-00"));
    }

    #[tokio::test]
    async fn starts_a_new_trace_without_or_with_an_invalid_traceparent() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let cases: Vec<RequestHeader> = vec![
            request("GET", "/").build(),
            request("GET", "/")
                .header("traceparent", zero_trace)
                .header("tracestate", "rojo=1")
                .build(),
            request("GET", "/")
                .header("traceparent", &INCOMING.to_uppercase())
                .build(),
            request("GET", "/")
                .header("traceparent", INCOMING)
                .header("traceparent", INCOMING)
                .build(),
        ];
        for mut req in cases {
            let mut h = harness(serde_json::json!({}));
            h.request(&mut req).await.unwrap();
            let ids = *h.ctx.state::<TraceIds>().unwrap();
            assert_eq!(ids.parent_span_id, None);
            assert_ne!(ids.trace_id, [0; 16]);
            assert_ne!(ids.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert!(ids.sampled, "ratio 1.0 samples every new trace");
            h.upstream_request(&mut req).await.unwrap();
            assert_eq!(sent_traceparent(&req), ids.traceparent());
            assert!(req.headers.get(TRACESTATE).is_none());
        }
    }

    #[tokio::test]
    async fn malformed_tracestate_is_dropped() {
        let mut h = harness(serde_json::json!({}));
        let mut req = request("GET", "/")
            .header("traceparent", INCOMING)
            .header("tracestate", "Not Valid")
            .build();
        h.request(&mut req).await.unwrap();
        h.upstream_request(&mut req).await.unwrap();
        assert!(req.headers.get(TRACESTATE).is_none());
        assert!(sent_traceparent(&req).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[tokio::test]
    async fn ratio_zero_samples_no_new_trace_and_ids_differ() {
        let mut h = harness(serde_json::json!({ "sample_ratio": 0 }));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut req = request("GET", "/").build();
            h.request(&mut req).await.unwrap();
            let ids = *h.ctx.state::<TraceIds>().unwrap();
            assert!(!ids.sampled);
            assert!(seen.insert(ids.trace_id));
            h.upstream_request(&mut req).await.unwrap();
            assert!(sent_traceparent(&req).ends_with("-00"));
        }
    }

    #[test]
    fn the_sampler_follows_the_ratio() {
        let s = Sampler::new(0.25);
        let n = (0..4000).filter(|_| s.sample(&random_id::<16>())).count();
        assert!((800..1200).contains(&n), "{n} of 4000 sampled at 0.25");
        assert!(Sampler::new(1.0).sample(&[0xff; 16]));
        assert!(!Sampler::new(0.0).sample(&[0; 16]));
    }

    #[tokio::test]
    async fn upstream_phase_alone_still_propagates() {
        // A request whose request hook did not run (answered elsewhere, then retried paths
        // aside) still gets consistent ids.
        let mut h = harness(serde_json::json!({}));
        let mut req = request("GET", "/").header("traceparent", INCOMING).build();
        h.upstream_request(&mut req).await.unwrap();
        let ids = *h.ctx.state::<TraceIds>().unwrap();
        assert_eq!(sent_traceparent(&req), ids.traceparent());
        assert_eq!(ids.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn phases_depend_on_export() {
        let propagate = harness(serde_json::json!({}));
        assert!(!propagate.plugin.phases().contains(Phases::LOGGING));
        assert!(propagate
            .plugin
            .phases()
            .contains(Phases::REQUEST | Phases::UPSTREAM_REQUEST));
        let export = harness(serde_json::json!({ "endpoint": "http://127.0.0.1:1/v1/traces" }));
        assert!(export.plugin.phases().contains(Phases::LOGGING));
    }

    #[test]
    fn endpoints_are_checked_and_completed() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            endpoint_url("https://otel.example.com/custom/traces").unwrap(),
            "https://otel.example.com/custom/traces"
        );
        for bad in [
            "127.0.0.1:4318",
            "ftp://x/v1/traces",
            "http://",
            "not a url",
        ] {
            let e = endpoint_url(bad).unwrap_err();
            assert_eq!(e.path, "endpoint");
            assert!(e.message.contains("OTLP/HTTP traces URL"), "{e}");
        }
    }

    #[test]
    fn server_address_strips_the_port() {
        let h = |v: &str| request("GET", "/").header("host", v).build();
        assert_eq!(server_address(&h("api.test:8080")), Some("api.test"));
        assert_eq!(server_address(&h("api.test")), Some("api.test"));
        assert_eq!(server_address(&h("[::1]:8080")), Some("::1"));
        assert_eq!(server_address(&request("GET", "/").build()), None);
    }

    #[test]
    fn same_settings_share_an_exporter() {
        let config = serde_json::json!({ "endpoint": "http://127.0.0.1:1/share-test" });
        let a = OpenTelemetry::new(parse(&config)).unwrap();
        let b = OpenTelemetry::new(parse(&config)).unwrap();
        assert!(Arc::ptr_eq(
            a.exporter.as_ref().unwrap(),
            b.exporter.as_ref().unwrap()
        ));
        let other = serde_json::json!({
            "endpoint": "http://127.0.0.1:1/share-test",
            "service_name": "other",
        });
        let c = OpenTelemetry::new(parse(&other)).unwrap();
        assert!(!Arc::ptr_eq(
            a.exporter.as_ref().unwrap(),
            c.exporter.as_ref().unwrap()
        ));
    }

    fn parse(v: &serde_json::Value) -> OpenTelemetryConfig {
        crate::factory::parse_config(v).unwrap()
    }

    #[test]
    fn good_configs_build() {
        harness(serde_json::Value::Null);
        harness(serde_json::json!({
            "endpoint": "http://127.0.0.1:4318/v1/traces",
            "service_name": "edge",
            "sample_ratio": 0.5,
            "timeout": "500ms",
            "batch_size": 100,
            "flush_interval": "200ms",
            "max_queue_size": 1000,
            "headers": { "x-api-key": "secret" },
            "resource_attributes": {
                "deployment.environment": "prod",
                "host.cpu_count": 8,
                "canary": false,
                "weight": 0.5,
            },
        }));
    }

    #[test]
    fn bad_configs_are_refused() {
        let e = err(serde_json::json!({ "sample_ratio": 1.5 }));
        assert_eq!(e.path, "sample_ratio");
        assert!(e.message.contains("between 0.0 and 1.0"), "{e}");
        let e = err(serde_json::json!({ "sample_ratio": -0.1 }));
        assert_eq!(e.path, "sample_ratio");
        let e = err(serde_json::json!({ "endpoint": "localhost:4318" }));
        assert_eq!(e.path, "endpoint");
        let ep = "http://127.0.0.1:4318/v1/traces";
        let e = err(serde_json::json!({ "endpoint": ep, "batch_size": 0 }));
        assert_eq!(e.path, "batch_size");
        let e = err(serde_json::json!({ "endpoint": ep, "batch_size": 10, "max_queue_size": 5 }));
        assert_eq!(e.path, "max_queue_size");
        assert!(e.message.contains("batch_size"), "{e}");
        let e = err(serde_json::json!({ "endpoint": ep, "timeout": "0s" }));
        assert_eq!(e.path, "timeout");
        let e = err(serde_json::json!({ "endpoint": ep, "timeout": 2 }));
        assert_eq!(e.path, "timeout");
        assert!(e.message.contains("write a unit"), "{e}");
        let e = err(serde_json::json!({ "endpoint": ep, "flush_interval": "1ms" }));
        assert_eq!(e.path, "flush_interval");
        let e = err(serde_json::json!({ "endpoint": ep, "service_name": " " }));
        assert_eq!(e.path, "service_name");
        let e = err(serde_json::json!({ "endpoint": ep, "headers": { "bad name": "v" } }));
        assert_eq!(e.path, "headers.bad name");
        let e = err(serde_json::json!({ "endpoint": ep, "headers": { "Content-Type": "x" } }));
        assert_eq!(e.path, "headers.Content-Type");
        let e = err(serde_json::json!({ "endpoint": ep, "headers": { "x-key": "a\nb" } }));
        assert_eq!(e.path, "headers.x-key");
        let e = err(serde_json::json!({
            "endpoint": ep, "resource_attributes": { "service.name": "x" }
        }));
        assert_eq!(e.path, "resource_attributes.service.name");
        assert!(e.message.contains("service_name"), "{e}");
        let e = err(serde_json::json!({
            "endpoint": ep, "resource_attributes": { "tags": ["a"] }
        }));
        assert_eq!(e.path, "resource_attributes.tags");
        assert!(e.message.contains("string, a number or a boolean"), "{e}");
        // Checked without an endpoint too.
        let e = err(serde_json::json!({ "batch_size": 0 }));
        assert_eq!(e.path, "batch_size");
        let e = err(serde_json::json!({ "sampling": 1 }));
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
