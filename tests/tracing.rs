//! `opentelemetry` through a real gateway: W3C `traceparent` / `tracestate` propagation to a
//! real upstream, and spans exported over OTLP/HTTP (JSON) to a loopback collector stand-in
//! whose received ids must line up with what the upstream saw. Also: parent-based sampling,
//! the exporter shared across reloads, and export from a daemonized (forked) gateway.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{check_config, client, free_port, EchoUpstream, GatewayProcess};
use tokio::net::TcpListener;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: accepts `POST /v1/traces` with a JSON body and keeps every span
/// with the resource it came with.
struct Collector {
    addr: SocketAddr,
    /// (resource, span) pairs, in arrival order.
    spans: Spans,
    /// Requests that were not a JSON `POST /v1/traces`.
    rejected: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

type Spans = Arc<Mutex<Vec<(Value, Value)>>>;

async fn collect(
    req: Request<Incoming>,
    spans: Spans,
    rejected: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let what = format!(
        "{} {} {:?}",
        req.method(),
        req.uri().path(),
        req.headers().get("content-type")
    );
    let ok = req.method() == "POST"
        && req.uri().path() == "/v1/traces"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/json");
    let body = req.into_body().collect().await?.to_bytes();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let Some(v) = parsed.filter(|_| ok) else {
        rejected.lock().unwrap().push(what);
        return Ok(Response::builder()
            .status(400)
            .body(Full::new(Bytes::new()))
            .unwrap());
    };
    let mut got = spans.lock().unwrap();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                got.push((rs["resource"].clone(), span.clone()));
            }
        }
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap())
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Spans = Arc::default();
        let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, r) = (spans.clone(), rejected.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| collect(req, s.clone(), r.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            rejected,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn find(&self, trace_id: &str) -> Vec<(Value, Value)> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s["traceId"] == trace_id)
            .cloned()
            .collect()
    }

    /// The one span of `trace_id`, waiting for it up to 5 s; returns (resource, span).
    async fn wait_for(&self, trace_id: &str) -> (Value, Value) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.find(trace_id);
            if !found.is_empty() {
                assert_eq!(found.len(), 1, "one span per request: {found:?}");
                assert!(self.rejected.lock().unwrap().is_empty());
                return found.into_iter().next().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no span of trace {trace_id} exported; got {:?}, rejected {:?}",
                self.spans.lock().unwrap(),
                self.rejected.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn str_attr<'a>(span: &'a Value, key: &str) -> &'a str {
    attr(span, key)
        .and_then(|v| v["stringValue"].as_str())
        .unwrap_or_else(|| panic!("no string attribute {key} in {span}"))
}

/// Sends GET `path` with `headers` (on `c`'s pooled connection, so that requests are
/// served, and logged, one after the other); the status and the body as JSON (Null if not JSON).
async fn get(c: &reqwest::Client, port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut rb = c.get(format!("http://127.0.0.1:{port}{path}"));
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The (trace id, parent id, flags) of the `traceparent` the upstream received.
fn upstream_traceparent(echo: &Value) -> (String, String, String) {
    let tp = echo["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the upstream got no traceparent: {echo}"));
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert_eq!(parts[1].len(), 32, "{tp}");
    assert_eq!(parts[2].len(), 16, "{tp}");
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(hex(parts[1]) && hex(parts[2]) && hex(parts[3]), "{tp}");
    assert_ne!(parts[1], "0".repeat(32), "{tp}");
    assert_ne!(parts[2], "0".repeat(16), "{tp}");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

fn traceparent(trace: &str, parent: &str, flags: &str) -> String {
    format!("00-{trace}-{parent}-{flags}")
}

fn config(port: u16, upstream: SocketAddr, otel: &str, extra_routes: &str) -> String {
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{upstream}\" }}] }}\n\
         global_plugins:\n  opentelemetry: {otel}\n\
         routes:\n\
         \x20 - {{ id: echo, paths: [\"/echo/*\"], upstream: u }}\n\
         \x20 - {{ id: status, paths: [\"/status/*\"], upstream: u }}\n\
         \x20 - id: quiet\n    paths: [\"/quiet/*\"]\n    upstream: u\n    plugins:\n      opentelemetry: {{}}\n\
         {extra_routes}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_and_collector_see_the_same_ids() {
    let up = EchoUpstream::start("u").await;
    let collector = Collector::start().await;
    let port = free_port();
    let otel = format!(
        "{{ endpoint: \"{}\", flush_interval: 200ms, resource_attributes: {{ deployment.environment: test }} }}",
        collector.endpoint()
    );
    let _gw = GatewayProcess::start(&config(port, up.addr, &otel, ""), port);
    let c = client();

    // The caller's trace: the upstream gets the same trace id, with the gateway's span as
    // parent; `tracestate` goes on unchanged.
    let incoming = traceparent(TRACE, PARENT, "01");
    let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let (s, echo) = get(
        &c,
        port,
        "/echo/a?x=1",
        &[("traceparent", &incoming), ("tracestate", state)],
    )
    .await;
    assert_eq!(s, 200);
    let (t1, s1, f1) = upstream_traceparent(&echo);
    assert_eq!((t1.as_str(), f1.as_str()), (TRACE, "01"));
    assert_ne!(s1, PARENT, "the upstream's parent is the gateway's span");
    assert_eq!(echo["headers"]["tracestate"], state);

    // No traceparent: a new trace.
    let (_, echo) = get(&c, port, "/echo/b", &[("tracestate", "rojo=1")]).await;
    let (t2, s2, f2) = upstream_traceparent(&echo);
    assert_ne!(t2, TRACE);
    assert_eq!(f2, "01", "sample_ratio defaults to 1.0");
    assert!(
        echo["headers"].get("tracestate").is_none(),
        "a new trace carries no tracestate: {echo}"
    );

    // Invalid traceparents are replaced by a new trace, and their tracestate dropped.
    let mut replaced = Vec::new();
    for bad in [
        traceparent(&"0".repeat(32), PARENT, "01"),
        traceparent(&TRACE.to_uppercase(), PARENT, "01"),
        traceparent(TRACE, &"0".repeat(16), "01"),
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("{incoming}-extra"),
    ] {
        let (s, echo) = get(
            &c,
            port,
            "/echo/c",
            &[("traceparent", &bad), ("tracestate", state)],
        )
        .await;
        assert_eq!(s, 200);
        let (t, sp, f) = upstream_traceparent(&echo);
        assert_ne!(t.to_uppercase(), TRACE.to_uppercase(), "{bad} was kept");
        assert_eq!(f, "01");
        assert!(echo["headers"].get("tracestate").is_none(), "{echo}");
        replaced.push((t, sp));
    }

    // A malformed tracestate is dropped; the trace goes on.
    let trace4 = "11111111111111111111111111111111";
    let (_, echo) = get(
        &c,
        port,
        "/echo/d",
        &[
            ("traceparent", &traceparent(trace4, PARENT, "01")),
            ("tracestate", "Bad Key=1"),
        ],
    )
    .await;
    assert_eq!(upstream_traceparent(&echo).0, trace4);
    assert!(echo["headers"].get("tracestate").is_none(), "{echo}");

    // A 5xx from the upstream, and a request no route matched.
    let trace5 = "22222222222222222222222222222222";
    let (s, _) = get(
        &c,
        port,
        "/status/503",
        &[("traceparent", &traceparent(trace5, PARENT, "01"))],
    )
    .await;
    assert_eq!(s, 503);
    let trace6 = "33333333333333333333333333333333";
    let (s, _) = get(
        &c,
        port,
        "/nowhere",
        &[("traceparent", &traceparent(trace6, PARENT, "01"))],
    )
    .await;
    assert_eq!(s, 404);

    // Not sampled by the caller: propagated with flags 00, not exported. And the `quiet`
    // route propagates only (its own `opentelemetry: {}` has no endpoint).
    let unsampled = "44444444444444444444444444444444";
    let (_, echo) = get(
        &c,
        port,
        "/echo/e",
        &[("traceparent", &traceparent(unsampled, PARENT, "00"))],
    )
    .await;
    let (t, sp, f) = upstream_traceparent(&echo);
    assert_eq!((t.as_str(), f.as_str()), (unsampled, "00"));
    assert_ne!(sp, PARENT);
    let quiet = "55555555555555555555555555555555";
    let (_, echo) = get(
        &c,
        port,
        "/quiet/q",
        &[("traceparent", &traceparent(quiet, PARENT, "01"))],
    )
    .await;
    let (t, sp, f) = upstream_traceparent(&echo);
    assert_eq!((t.as_str(), f.as_str()), (quiet, "01"));
    assert_ne!(sp, PARENT);

    // The exported spans.
    let (resource, span) = collector.wait_for(TRACE).await;
    assert_eq!(
        span["spanId"],
        s1.as_str(),
        "span id = the upstream's parent id"
    );
    assert_eq!(span["parentSpanId"], PARENT, "parent = the caller's span");
    assert_eq!(span["name"], "GET echo");
    assert_eq!(span["kind"], 2);
    assert!(span.get("status").is_none(), "{span}");
    let start: u128 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u128 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(
        start <= end && end <= now && now - start < 30_000_000_000,
        "{span}"
    );
    assert_eq!(str_attr(&span, "http.request.method"), "GET");
    assert_eq!(str_attr(&span, "url.path"), "/echo/a");
    assert_eq!(str_attr(&span, "url.scheme"), "http");
    assert_eq!(
        attr(&span, "http.response.status_code").unwrap()["intValue"],
        "200"
    );
    assert_eq!(str_attr(&span, "http.route"), "echo");
    assert_eq!(str_attr(&span, "server.address"), "127.0.0.1");
    assert_eq!(str_attr(&span, "client.address"), "127.0.0.1");
    assert_eq!(str_attr(&span, "gatehouse.upstream"), "u");
    assert!(attr(&span, "gatehouse.consumer").is_none());
    let res: Vec<(String, String)> = resource["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                a["value"]["stringValue"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        res,
        [
            ("service.name".to_string(), "gatehouse".to_string()),
            ("deployment.environment".to_string(), "test".to_string())
        ]
    );

    let (_, span) = collector.wait_for(&t2).await;
    assert_eq!(span["spanId"], s2.as_str());
    assert!(span.get("parentSpanId").is_none(), "a root span: {span}");
    assert_eq!(str_attr(&span, "url.path"), "/echo/b");

    for (t, sp) in &replaced {
        let (_, span) = collector.wait_for(t).await;
        assert_eq!(span["spanId"], sp.as_str());
        assert!(span.get("parentSpanId").is_none(), "{span}");
    }

    let (_, span) = collector.wait_for(trace4).await;
    assert_eq!(span["parentSpanId"], PARENT);

    let (_, span) = collector.wait_for(trace5).await;
    assert_eq!(span["name"], "GET status");
    assert_eq!(span["status"]["code"], 2, "a 5xx is an error: {span}");
    assert_eq!(
        attr(&span, "http.response.status_code").unwrap()["intValue"],
        "503"
    );

    let (_, span) = collector.wait_for(trace6).await;
    assert_eq!(span["name"], "GET", "no route: the method alone");
    assert!(attr(&span, "http.route").is_none());
    assert!(span.get("status").is_none(), "a 404 is not a server error");
    assert_eq!(
        attr(&span, "http.response.status_code").unwrap()["intValue"],
        "404"
    );

    // A last sampled request on the same connection: once its span is in, the spans of the
    // unsampled and propagate-only requests before it would have been too.
    let last = "66666666666666666666666666666666";
    get(
        &c,
        port,
        "/echo/f",
        &[("traceparent", &traceparent(last, PARENT, "01"))],
    )
    .await;
    collector.wait_for(last).await;
    assert!(collector.find(unsampled).is_empty());
    assert!(collector.find(quiet).is_empty());
}

/// The ids of the gateway's span-exporter threads.
fn exporter_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "gatehouse-otlp")
        })
        .count()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_route(c: &reqwest::Client, port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(c, port, path, &[]).await.0 != 200 {
        assert!(Instant::now() < deadline, "{path} never answered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ratio_zero_follows_the_caller_and_reloads_share_the_exporter() {
    let up = EchoUpstream::start("u").await;
    let collector = Collector::start().await;
    let port = free_port();
    let otel = |batch: u32| {
        format!(
            "{{ endpoint: \"{}\", flush_interval: 200ms, sample_ratio: 0, batch_size: {batch} }}",
            collector.endpoint()
        )
    };
    let gw = GatewayProcess::start(&config(port, up.addr, &otel(512), ""), port);
    let c = client();
    // Nothing started until there is something to export.
    assert_eq!(exporter_threads(gw.pid()), 0);

    // No caller decision: ratio 0 samples nothing, and says so upstream.
    let (_, echo) = get(&c, port, "/echo/a", &[]).await;
    let (new_trace, _, flags) = upstream_traceparent(&echo);
    assert_eq!(flags, "00");
    // The caller sampled: the gateway follows.
    let (_, echo) = get(
        &c,
        port,
        "/echo/b",
        &[("traceparent", &traceparent(TRACE, PARENT, "01"))],
    )
    .await;
    let (t, s, f) = upstream_traceparent(&echo);
    assert_eq!((t.as_str(), f.as_str()), (TRACE, "01"));
    let (_, span) = collector.wait_for(TRACE).await;
    assert_eq!(span["spanId"], s.as_str());
    assert!(collector.find(&new_trace).is_empty());
    assert_eq!(exporter_threads(gw.pid()), 1);

    // A reload with the same tracing settings keeps the exporter (and its one thread).
    let r1 = "  - { id: r1, paths: [\"/r1\"], upstream: u }\n";
    gw.write_config(&config(port, up.addr, &otel(512), r1));
    gw.signal("HUP");
    wait_for_route(&c, port, "/r1").await;
    let t1 = "77777777777777777777777777777777";
    get(
        &c,
        port,
        "/echo/c",
        &[("traceparent", &traceparent(t1, PARENT, "01"))],
    )
    .await;
    collector.wait_for(t1).await;
    assert_eq!(exporter_threads(gw.pid()), 1);

    // Changed settings: a new exporter; the old one ends with the config that used it.
    let r2 = "  - { id: r2, paths: [\"/r2\"], upstream: u }\n";
    gw.write_config(&config(port, up.addr, &otel(100), r2));
    gw.signal("HUP");
    wait_for_route(&c, port, "/r2").await;
    let t2 = "88888888888888888888888888888888";
    get(
        &c,
        port,
        "/echo/d",
        &[("traceparent", &traceparent(t2, PARENT, "01"))],
    )
    .await;
    collector.wait_for(t2).await;
    let pid = gw.pid();
    wait_until("one exporter thread is left", || exporter_threads(pid) == 1).await;
}

/// A gateway started with `-d`: it forks after loading its config, so the exporter must be
/// started in the child.
struct Daemon {
    pid_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemonized_gateway_exports() {
    let up = EchoUpstream::start("u").await;
    let collector = Collector::start().await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let yaml = format!(
        "server:\n  threads: 1\n  pid_file: {d}/gatehouse.pid\n  upgrade_sock: {d}/upgrade.sock\n  \
         grace_period_seconds: 1\n  graceful_shutdown_timeout_seconds: 1\n{}",
        config(
            port,
            up.addr,
            &format!("{{ endpoint: \"{}\", flush_interval: 200ms }}", collector.endpoint()),
            ""
        )
    );
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, yaml).unwrap();
    let daemon = Daemon {
        pid_file: dir.path().join("gatehouse.pid"),
        _dir: dir,
    };
    let status = std::process::Command::new(support::gateway::binary())
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    support::gateway::wait_for_tcp(port).await;
    wait_until("the daemon wrote its pid", || daemon.pid().is_some()).await;
    let c = client();

    let (s, echo) = get(
        &c,
        port,
        "/echo/a",
        &[("traceparent", &traceparent(TRACE, PARENT, "01"))],
    )
    .await;
    assert_eq!(s, 200);
    let (_, sp, _) = upstream_traceparent(&echo);
    let (_, span) = collector.wait_for(TRACE).await;
    assert_eq!(span["spanId"], sp.as_str());
}

#[test]
fn bad_config_names_the_key() {
    let (ok, out) = check_config(
        "listeners:\n  - { name: main, address: \"127.0.0.1:1\" }\n\
         global_plugins:\n  opentelemetry: { endpoint: \"http://127.0.0.1:4318/v1/traces\", sample_ratio: 2 }\n\
         routes:\n  - { id: r, paths: [/], plugins: { mock: {} } }\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("global_plugins.opentelemetry.sample_ratio"),
        "{out}"
    );
    assert!(out.contains("between 0.0 and 1.0"), "{out}");
    let (ok, out) = check_config(
        "listeners:\n  - { name: main, address: \"127.0.0.1:1\" }\n\
         global_plugins:\n  opentelemetry: { endpoint: \"localhost:4318\" }\n\
         routes:\n  - { id: r, paths: [/], plugins: { mock: {} } }\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("global_plugins.opentelemetry.endpoint"),
        "{out}"
    );
}
