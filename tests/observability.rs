//! Metrics and access logs through a real gateway: Prometheus text that a real parser
//! accepts, bounded label sets, node health and reload counters, JSON access log lines and
//! reopening on SIGUSR1.

mod support;

use std::time::Duration;
use support::{client, free_port, EchoUpstream, GatewayProcess};

async fn scrape(port: u16) -> (String, prometheus_parse::Scrape) {
    let text = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    (text, scrape)
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_are_bounded_and_parse() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let mport = free_port();
    let dead = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         metrics: {{ address: 127.0.0.1:{mport} }}\n\
         upstreams:\n  - id: u\n    nodes: [{{ address: \"{}\" }}, {{ address: \"127.0.0.1:{dead}\" }}]\n    \
         health_check: {{ active: {{ type: tcp, interval: 100ms, healthy: 1, unhealthy: 1 }} }}\n\
         global_plugins:\n  prometheus: {{}}\n\
         services:\n  - {{ id: svc, upstream: u }}\n\
         routes:\n  - {{ id: api, paths: [/api/*], service: svc }}\n",
        up.addr
    );
    let gw = GatewayProcess::start_with_args(&y, port, &["--no-watch"]);
    support::gateway::wait_for_tcp(mport).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = client();
    for i in 0..10 {
        let r = c
            .post(format!("http://127.0.0.1:{port}/api/{i}"))
            .body("12345")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A scan of random URLs: all 404s under one series.
    for i in 0..50 {
        let r = c
            .get(format!("http://127.0.0.1:{port}/random-{i}/{}", i * 7919))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let (text, s) = scrape(mport).await;
    assert_eq!(
        value(
            &s,
            "gatehouse_http_requests_total",
            &[
                ("route", "api"),
                ("service", "svc"),
                ("method", "POST"),
                ("status", "2xx")
            ]
        ),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        value(
            &s,
            "gatehouse_http_requests_total",
            &[("route", "_none"), ("method", "GET"), ("status", "4xx")]
        ),
        Some(50.0)
    );
    let series = s
        .samples
        .iter()
        .filter(|x| x.metric == "gatehouse_http_requests_total")
        .count();
    assert_eq!(series, 2, "label sets must not grow with URLs:\n{text}");
    assert!(!text.contains("random-"), "raw paths leaked into labels");
    assert_eq!(
        value(
            &s,
            "gatehouse_http_request_body_bytes_total",
            &[("route", "api")]
        ),
        Some(50.0)
    );
    assert!(
        value(
            &s,
            "gatehouse_http_response_body_bytes_total",
            &[("route", "api")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        value(
            &s,
            "gatehouse_http_request_duration_seconds_count",
            &[("route", "api")]
        )
        .or_else(|| value(
            &s,
            "gatehouse_http_request_duration_seconds",
            &[("route", "api")]
        )),
        Some(10.0)
    );
    assert!(
        text.contains("gatehouse_upstream_response_duration_seconds_bucket{route=\"api\""),
        "{text}"
    );
    assert_eq!(
        value(
            &s,
            "gatehouse_upstream_node_healthy",
            &[("upstream", "u"), ("node", &up.addr.to_string())]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "gatehouse_upstream_node_healthy",
            &[("upstream", "u"), ("node", &format!("127.0.0.1:{dead}"))]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "gatehouse_http_requests_in_flight", &[("route", "api")]),
        Some(0.0)
    );
    // Client connections: the scrape client's pooled connection may still be open.
    assert!(value(&s, "gatehouse_downstream_connections_total", &[]).unwrap() >= 1.0);
    assert!(value(&s, "gatehouse_downstream_connections", &[]).is_some());

    // Rate-limit refusals are counted per route.
    gw.write_config(&y.replace(
        "routes:\n  - { id: api, paths: [/api/*], service: svc }\n",
        "routes:\n  - { id: api, paths: [/api/*], service: svc, plugins: { rate-limit: { count: 1, period: 1m } } }\n",
    ));
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/api/a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/api/b"))
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    let (_, s) = scrape(mport).await;
    assert_eq!(
        value(
            &s,
            "gatehouse_rate_limit_rejections_total",
            &[("route", "api")]
        ),
        Some(1.0)
    );

    // A refused reload is counted.
    gw.write_config("listeners: [oops\n");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, s) = scrape(mport).await;
    assert_eq!(
        value(
            &s,
            "gatehouse_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_and_reopen() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         consumers:\n  - {{ id: alice, credentials: {{ key-auth: {{ key: k1 }} }} }}\n\
         global_plugins:\n  access-log: {{ path: {} }}\n  request-id: {{}}\n\
         routes:\n  - {{ id: api, paths: [/api/*], upstream: u, plugins: {{ key-auth: {{}} }} }}\n",
        up.addr,
        log.display()
    );
    let gw = GatewayProcess::start(&y, port);
    let c = client();
    let r = c
        .get(format!("http://127.0.0.1:{port}/api/x?y=1"))
        .header("apikey", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        c.get(format!("http://127.0.0.1:{port}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let a = &lines[0];
    assert_eq!(a["uri"], "/api/x?y=1");
    assert_eq!(a["method"], "GET");
    assert_eq!(a["status"], 200);
    assert_eq!(a["route"], "api");
    assert_eq!(a["consumer"], "alice");
    assert_eq!(a["request_id"], rid.as_str());
    assert_eq!(a["upstream"], up.addr.to_string());
    assert_eq!(a["client"], "127.0.0.1");
    assert!(a["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(a["upstream_ms"].as_f64().is_some());
    assert!(a["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(lines[1]["status"], 404);
    assert!(lines[1]["route"].is_null());

    // logrotate: move the file away, SIGUSR1, and new lines go to a new file.
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    gw.signal("USR1");
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.get(format!("http://127.0.0.1:{port}/api/y"))
        .header("apikey", "k1")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fresh.lines().count(), 1, "{fresh}");
    assert!(fresh.contains("/api/y"));
}
