//! A small OTLP/HTTP trace exporter (JSON encoding), one per distinct export setting in the
//! process.
//!
//! ```text
//! request path                         exporter thread (started on the first span)
//! ────────────                         ──────────────────────────────────────────
//! logging ─► SpanRecord ─► try_send ─► bounded queue ─► batch (batch_size | flush_interval)
//!                 │ queue full:                               │ POST application/json
//!                 ▼ dropped + counted                          ▼
//!                                                     collector (…/v1/traces)
//! ```
//!
//! The request path never waits: it hands a finished span to a bounded queue and goes on.
//! The thread owns its own single-threaded tokio runtime and HTTP client, and is started
//! lazily by the first span, not when the config is loaded, so that it is born in the
//! process that serves requests (the gateway may fork into the background after loading
//! its config, and threads do not survive a fork).
//!
//! Exporters are shared through a process-wide registry keyed by their settings: plugin
//! instances built by a config reload get the exporter the previous config used, and an
//! exporter whose last plugin instance is gone closes its queue, sends what it holds and
//! lets its thread end.

use super::trace_context::to_hex;
use crate::context::Consumer;
use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex, Once, Weak};
use std::time::{Duration, Instant};

/// What makes two exporters the same: every setting that changes what is sent or how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExporterSettings {
    /// The OTLP/HTTP traces URL.
    pub endpoint: String,
    /// Extra request headers (authentication for hosted collectors), sorted by name.
    pub headers: Vec<(String, String)>,
    /// Timeout of one export request.
    pub timeout: Duration,
    /// The most spans in one export request.
    pub batch_size: usize,
    /// The longest a span waits in a partial batch.
    pub flush_interval: Duration,
    /// The queue's capacity; spans beyond it are dropped.
    pub max_queue_size: usize,
    /// The OTLP `resource` object (service name and resource attributes), as JSON.
    pub resource_json: String,
}

/// One finished server span, as the request path hands it over. Names and attributes are
/// rendered on the exporter thread.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// This span's id.
    pub span_id: [u8; 8],
    /// The caller's span id, when the request carried a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The request method.
    pub method: http::Method,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The request path (normalised, without the query).
    pub path: String,
    /// The status sent to the client; 0 when none could be sent.
    pub status: u16,
    /// The matched route's id.
    pub route: Option<Arc<str>>,
    /// The matched route's service id.
    pub service: Option<Arc<str>>,
    /// The host the client asked for, without port.
    pub server_address: Option<String>,
    /// The client's IP.
    pub client_address: Option<IpAddr>,
    /// The upstream id the request went to.
    pub upstream: Option<Arc<str>>,
    /// The consumer an auth plugin identified.
    pub consumer: Option<Arc<Consumer>>,
    /// The request id, when `request-id` set one.
    pub request_id: Option<String>,
}

struct Metrics {
    exported: IntCounter,
    dropped: IntCounterVec,
}

/// Process-wide counters in the default Prometheus registry, served on the metrics listener.
static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| {
    Some(Metrics {
        exported: register_int_counter!(
            "gatehouse_tracing_spans_exported_total",
            "Spans accepted by the OTLP collector."
        )
        .ok()?,
        dropped: register_int_counter_vec!(
            "gatehouse_tracing_spans_dropped_total",
            "Spans not exported, by reason: queue_full (the exporter fell behind) or \
             export_failed (the collector could not be reached or refused them).",
            &["reason"]
        )
        .ok()?,
    })
});

/// Counters of one exporter.
#[derive(Debug, Default)]
pub struct ExporterStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans lost in failed export requests.
    pub dropped_export_failed: AtomicU64,
}

/// An exporter: the sending half of its queue, and its thread, started on first use.
pub struct Exporter {
    settings: Arc<ExporterSettings>,
    tx: SyncSender<SpanRecord>,
    rx: Mutex<Option<Receiver<SpanRecord>>>,
    started: Once,
    stats: Arc<ExporterStats>,
}

/// Live exporters by settings. Entries are weak: an exporter lives as long as a plugin
/// instance holds it.
static REGISTRY: LazyLock<Mutex<HashMap<ExporterSettings, Weak<Exporter>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl Exporter {
    /// The exporter for `settings`: the live one if any plugin instance holds one, else a
    /// new one.
    pub fn shared(settings: ExporterSettings) -> Arc<Exporter> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        registry.retain(|_, e| e.strong_count() > 0);
        if let Some(live) = registry.get(&settings).and_then(Weak::upgrade) {
            return live;
        }
        let exporter = Arc::new(Exporter::new(settings.clone()));
        registry.insert(settings, Arc::downgrade(&exporter));
        exporter
    }

    /// A new exporter, not shared; its thread starts with the first span.
    pub fn new(settings: ExporterSettings) -> Exporter {
        let (tx, rx) = sync_channel(settings.max_queue_size);
        Exporter {
            settings: Arc::new(settings),
            tx,
            rx: Mutex::new(Some(rx)),
            started: Once::new(),
            stats: Arc::new(ExporterStats::default()),
        }
    }

    /// This exporter's counters.
    pub fn stats(&self) -> &ExporterStats {
        &self.stats
    }

    /// Queues a finished span for export; never blocks. A span that finds the queue full is
    /// dropped and counted.
    pub fn offer(&self, span: SpanRecord) {
        self.started.call_once(|| self.start());
        self.enqueue(span);
    }

    fn enqueue(&self, span: SpanRecord) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(m) = METRICS.as_ref() {
                    m.dropped.with_label_values(&["queue_full"]).inc();
                }
            }
        }
    }

    fn start(&self) {
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let settings = self.settings.clone();
        let stats = self.stats.clone();
        let spawned = std::thread::Builder::new()
            .name("gatehouse-otlp".into())
            .spawn(move || run(&settings, &stats, rx));
        if let Err(e) = spawned {
            // The receiver went with the failed closure: every later span counts as dropped.
            log::error!("opentelemetry: cannot start the span exporter: {e}");
        }
    }
}

/// Logs export failures at most this often; the counters say the rest.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Sender {
    settings: Arc<ExporterSettings>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    last_warning: Option<Instant>,
    failures_since_warning: u64,
}

impl Sender {
    fn new(settings: &Arc<ExporterSettings>) -> Result<Sender, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        for (name, value) in &settings.headers {
            // Checked when the plugin was built.
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        Ok(Sender {
            settings: settings.clone(),
            runtime,
            client,
            headers,
            last_warning: None,
            failures_since_warning: 0,
        })
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let resp = self
            .client
            .post(&self.settings.endpoint)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the body so that the connection can be reused.
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let text: String = text.chars().take(200).collect();
            Err(format!("the collector answered {status}: {text}"))
        }
    }

    fn export(&mut self, batch: &mut Vec<SpanRecord>, stats: &ExporterStats) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let body = encode(&self.settings.resource_json, batch);
        batch.clear();
        match self.runtime.block_on(self.post(body)) {
            Ok(()) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = METRICS.as_ref() {
                    m.exported.inc_by(n);
                }
            }
            Err(e) => {
                stats.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
                if let Some(m) = METRICS.as_ref() {
                    m.dropped.with_label_values(&["export_failed"]).inc_by(n);
                }
                self.failures_since_warning += 1;
                if self.last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    log::warn!(
                        "opentelemetry: {} export request(s) to {} failed, the last with {n} \
                         spans: {e}",
                        self.failures_since_warning,
                        self.settings.endpoint
                    );
                    self.last_warning = Some(Instant::now());
                    self.failures_since_warning = 0;
                }
            }
        }
    }
}

/// The exporter thread: collects spans into batches and sends each batch when it is full
/// or its oldest span has waited `flush_interval`. Ends when the queue is closed.
fn run(settings: &Arc<ExporterSettings>, stats: &ExporterStats, rx: Receiver<SpanRecord>) {
    let mut sender = match Sender::new(settings) {
        Ok(s) => s,
        Err(e) => {
            log::error!("opentelemetry: span exporter not started: {e}");
            return;
        }
    };
    let mut batch = Vec::with_capacity(settings.batch_size);
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match next {
            Ok(span) => {
                if batch.is_empty() {
                    deadline = Some(Instant::now() + settings.flush_interval);
                }
                batch.push(span);
                if batch.len() >= settings.batch_size {
                    sender.export(&mut batch, stats);
                    deadline = None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                sender.export(&mut batch, stats);
                deadline = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                sender.export(&mut batch, stats);
                return;
            }
        }
    }
}

/// The OTLP `resource` object for `service_name` and extra attributes (already OTLP
/// `AnyValue` JSON objects).
pub fn resource_json(service_name: &str, attributes: &[(String, serde_json::Value)]) -> String {
    let mut attrs = vec![string_attr("service.name", service_name)];
    attrs.extend(
        attributes
            .iter()
            .map(|(k, v)| serde_json::json!({ "key": k, "value": v })),
    );
    serde_json::json!({ "attributes": attrs }).to_string()
}

/// An OTLP `AnyValue` for a config scalar (string, boolean, integer or number).
pub fn any_value(v: &serde_json::Value) -> Option<serde_json::Value> {
    Some(match v {
        serde_json::Value::String(s) => serde_json::json!({ "stringValue": s }),
        serde_json::Value::Bool(b) => serde_json::json!({ "boolValue": b }),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => serde_json::json!({ "intValue": i.to_string() }),
            None => serde_json::json!({ "doubleValue": n.as_f64()? }),
        },
        _ => return None,
    })
}

fn string_attr(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({ "key": key, "value": { "stringValue": value } })
}

fn int_attr(key: &str, value: i64) -> serde_json::Value {
    // Protobuf's JSON mapping writes 64-bit integers as strings.
    serde_json::json!({ "key": key, "value": { "intValue": value.to_string() } })
}

/// Methods that keep their name in spans; any other is `_OTHER` (bounded cardinality).
const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `SPAN_KIND_SERVER`.
const KIND_SERVER: u8 = 2;
/// `STATUS_CODE_ERROR`.
const STATUS_ERROR: u8 = 2;

/// The span's name: `METHOD route-id`, `METHOD` when no route matched, `HTTP` for a method
/// outside the standard set.
pub fn span_name(method: &http::Method, route: Option<&str>) -> String {
    let m = method.as_str();
    let m = if KNOWN_METHODS.contains(&m) {
        m
    } else {
        "HTTP"
    };
    match route {
        Some(r) => format!("{m} {r}"),
        None => m.to_string(),
    }
}

fn span_json(s: &SpanRecord) -> serde_json::Value {
    let method = s.method.as_str();
    let mut attrs = Vec::with_capacity(12);
    if KNOWN_METHODS.contains(&method) {
        attrs.push(string_attr("http.request.method", method));
    } else {
        attrs.push(string_attr("http.request.method", "_OTHER"));
        attrs.push(string_attr("http.request.method_original", method));
    }
    attrs.push(string_attr("url.scheme", s.scheme));
    attrs.push(string_attr("url.path", &s.path));
    if s.status != 0 {
        attrs.push(int_attr("http.response.status_code", i64::from(s.status)));
    }
    if let Some(r) = &s.route {
        attrs.push(string_attr("http.route", r));
    }
    if let Some(h) = &s.server_address {
        attrs.push(string_attr("server.address", h));
    }
    if let Some(ip) = s.client_address {
        attrs.push(string_attr("client.address", &ip.to_string()));
    }
    if let Some(u) = &s.upstream {
        attrs.push(string_attr("gatehouse.upstream", u));
    }
    if let Some(svc) = &s.service {
        attrs.push(string_attr("gatehouse.service", svc));
    }
    if let Some(c) = &s.consumer {
        attrs.push(string_attr("gatehouse.consumer", &c.id));
    }
    if let Some(id) = &s.request_id {
        attrs.push(string_attr("gatehouse.request_id", id));
    }
    let mut span = serde_json::json!({
        "traceId": to_hex(&s.trace_id),
        "spanId": to_hex(&s.span_id),
        "name": span_name(&s.method, s.route.as_deref()),
        "kind": KIND_SERVER,
        "startTimeUnixNano": s.start_unix_nanos.to_string(),
        "endTimeUnixNano": s.end_unix_nanos.to_string(),
        "attributes": attrs,
    });
    if let Some(p) = &s.parent_span_id {
        span["parentSpanId"] = to_hex(p).into();
    }
    if s.status >= 500 {
        span["status"] = serde_json::json!({ "code": STATUS_ERROR });
    } else if s.status == 0 {
        span["status"] = serde_json::json!({
            "code": STATUS_ERROR,
            "message": "no response was sent",
        });
    }
    span
}

/// An OTLP/HTTP JSON export request body: one resource, one scope, `spans`.
pub fn encode(resource_json: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let mut out = String::with_capacity(256 + spans.len() * 700);
    out.push_str("{\"resourceSpans\":[{\"resource\":");
    out.push_str(resource_json);
    let _ = write!(
        out,
        ",\"scopeSpans\":[{{\"scope\":{{\"name\":\"gatehouse\",\"version\":\"{}\"}},\"spans\":[",
        env!("CARGO_PKG_VERSION")
    );
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&span_json(s).to_string());
    }
    out.push_str("]}]}]}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings(endpoint: &str) -> ExporterSettings {
        ExporterSettings {
            endpoint: endpoint.to_string(),
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            batch_size: 4,
            flush_interval: Duration::from_millis(50),
            max_queue_size: 2,
            resource_json: resource_json("svc", &[]),
        }
    }

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_001_000_000,
            method: http::Method::GET,
            scheme: "http",
            path: "/users/7".into(),
            status: 503,
            route: Some(Arc::from("users")),
            service: None,
            server_address: Some("api.test".into()),
            client_address: Some([10, 0, 0, 1].into()),
            upstream: Some(Arc::from("users-backend")),
            consumer: None,
            request_id: Some("rid".into()),
        }
    }

    fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
        span["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| &a["value"])
    }

    #[test]
    fn encodes_otlp_json() {
        let body = encode(
            &resource_json(
                "gw",
                &[("env".into(), serde_json::json!({"stringValue": "prod"}))],
            ),
            &[record()],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rs = &v["resourceSpans"][0];
        let res = &rs["resource"]["attributes"];
        assert_eq!(res[0]["key"], "service.name");
        assert_eq!(res[0]["value"]["stringValue"], "gw");
        assert_eq!(res[1]["key"], "env");
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "gatehouse");
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "01".repeat(16));
        assert_eq!(span["spanId"], "02".repeat(8));
        assert_eq!(span["parentSpanId"], "03".repeat(8));
        assert_eq!(span["name"], "GET users");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000001000000");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(
            attr(span, "http.request.method").unwrap()["stringValue"],
            "GET"
        );
        assert_eq!(attr(span, "url.path").unwrap()["stringValue"], "/users/7");
        assert_eq!(
            attr(span, "http.response.status_code").unwrap()["intValue"],
            "503"
        );
        assert_eq!(attr(span, "http.route").unwrap()["stringValue"], "users");
        assert_eq!(
            attr(span, "server.address").unwrap()["stringValue"],
            "api.test"
        );
        assert_eq!(
            attr(span, "client.address").unwrap()["stringValue"],
            "10.0.0.1"
        );
        assert_eq!(
            attr(span, "gatehouse.upstream").unwrap()["stringValue"],
            "users-backend"
        );
        assert!(attr(span, "gatehouse.consumer").is_none());
    }

    #[test]
    fn names_and_statuses() {
        let mut r = record();
        r.status = 404;
        r.parent_span_id = None;
        r.route = None;
        r.method = http::Method::from_bytes(b"PURGE").unwrap();
        let span = span_json(&r);
        assert_eq!(span["name"], "HTTP");
        assert!(span.get("status").is_none());
        assert!(span.get("parentSpanId").is_none());
        assert_eq!(
            attr(&span, "http.request.method").unwrap()["stringValue"],
            "_OTHER"
        );
        assert_eq!(
            attr(&span, "http.request.method_original").unwrap()["stringValue"],
            "PURGE"
        );
        r.status = 0;
        let span = span_json(&r);
        assert_eq!(span["status"]["code"], 2);
        assert!(attr(&span, "http.response.status_code").is_none());
        assert_eq!(span_name(&http::Method::POST, Some("r")), "POST r");
    }

    #[test]
    fn config_scalars_become_any_values() {
        assert_eq!(
            any_value(&serde_json::json!("x")).unwrap(),
            serde_json::json!({"stringValue": "x"})
        );
        assert_eq!(
            any_value(&serde_json::json!(3)).unwrap(),
            serde_json::json!({"intValue": "3"})
        );
        assert_eq!(
            any_value(&serde_json::json!(0.5)).unwrap(),
            serde_json::json!({"doubleValue": 0.5})
        );
        assert_eq!(
            any_value(&serde_json::json!(true)).unwrap(),
            serde_json::json!({"boolValue": true})
        );
        assert!(any_value(&serde_json::json!([1])).is_none());
        assert!(any_value(&serde_json::Value::Null).is_none());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        // Not started: nothing drains the queue of two.
        let e = Exporter::new(settings("http://127.0.0.1:1/v1/traces"));
        for _ in 0..5 {
            e.enqueue(record());
        }
        assert_eq!(e.stats().dropped_queue_full.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn exporters_are_shared_by_settings_while_alive() {
        let a = Exporter::shared(settings("http://127.0.0.1:1/shared-a"));
        let b = Exporter::shared(settings("http://127.0.0.1:1/shared-a"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = Exporter::shared(settings("http://127.0.0.1:1/shared-c"));
        assert!(!Arc::ptr_eq(&a, &c));
        let mut other = settings("http://127.0.0.1:1/shared-a");
        other.batch_size = 8;
        assert!(!Arc::ptr_eq(&a, &Exporter::shared(other)));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            weak.upgrade().is_none(),
            "the registry keeps no exporter alive"
        );
        let d = Exporter::shared(settings("http://127.0.0.1:1/shared-a"));
        assert_eq!(Arc::strong_count(&d), 1);
    }

    #[test]
    fn failed_exports_are_counted_and_the_thread_ends_with_its_queue() {
        // Port 1 on loopback refuses connections.
        let e = Exporter::new(settings("http://127.0.0.1:1/v1/traces"));
        e.offer(record());
        let deadline = Instant::now() + Duration::from_secs(5);
        while e.stats().dropped_export_failed.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "export was not attempted");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(e.stats().exported.load(Ordering::Relaxed), 0);
    }
}
