//! Upstream pools through a real gateway and real upstreams: weighted round robin,
//! consistent hashing, least-conn, active and passive health, retries, 502/503/504.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::{client, free_port, EchoUpstream, GatewayProcess};

fn config(port: u16, upstream: &str) -> String {
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n{upstream}\
         routes:\n  - id: all\n    paths: [\"/*\"]\n    upstream: pool\n"
    )
}

async fn node_of(
    c: &reqwest::Client,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = c.get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let node = r
        .headers()
        .get("x-upstream-node")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, node)
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_round_robin_over_three_nodes() {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let c3 = EchoUpstream::start("c").await;
    let port = free_port();
    let up = format!(
        "  - id: pool\n    balance: round_robin\n    nodes:\n      - {{ address: \"{}\", weight: 1 }}\n      - {{ address: \"{}\", weight: 2 }}\n      - {{ address: \"{}\", weight: 3 }}\n",
        a.addr, b.addr, c3.addr
    );
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..600 {
        let (s, n) = node_of(&c, port, "/", &[]).await;
        assert_eq!(s, 200);
        *counts.entry(n).or_default() += 1;
    }
    // Expected 100/200/300; allow ±5% of the total per node.
    for (node, want) in [("a", 100usize), ("b", 200), ("c", 300)] {
        let got = counts.get(node).copied().unwrap_or(0);
        assert!(
            got.abs_diff(want) <= 30,
            "node {node}: {got} of 600, want ~{want} ({counts:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_is_sticky_per_key() {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let c3 = EchoUpstream::start("c").await;
    let port = free_port();
    let up = format!(
        "  - id: pool\n    balance: consistent_hash\n    hash_on: header:X-User\n    nodes:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n",
        a.addr, b.addr, c3.addr
    );
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    let mut seen_nodes = std::collections::HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let (_, first) = node_of(&c, port, "/", &[("x-user", &user)]).await;
        for _ in 0..5 {
            let (s, n) = node_of(&c, port, "/", &[("x-user", &user)]).await;
            assert_eq!(s, 200);
            assert_eq!(n, first, "{user} moved between nodes");
        }
        seen_nodes.insert(first);
    }
    assert!(
        seen_nodes.len() >= 2,
        "30 users all hashed to one node: {seen_nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn least_conn_prefers_idle_node() {
    let slow = EchoUpstream::start("slow").await;
    let fast = EchoUpstream::start("fast").await;
    let port = free_port();
    let up = format!(
        "  - id: pool\n    balance: least_conn\n    nodes:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n",
        slow.addr, fast.addr
    );
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    // One request held open on some node: every quick request meanwhile goes to the other.
    let held = {
        let c = c.clone();
        tokio::spawn(async move { node_of(&c, port, "/delay/1500", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut quick = std::collections::HashSet::new();
    for _ in 0..10 {
        let (s, n) = node_of(&c, port, "/", &[]).await;
        assert_eq!(s, 200);
        quick.insert(n);
    }
    let (_, busy) = held.await.unwrap();
    assert_eq!(quick.len(), 1, "quick requests spread over {quick:?}");
    assert!(
        !quick.contains(&busy),
        "a quick request went to the busy node {busy}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn active_health_check_ejects_and_restores() {
    let a = EchoUpstream::start("a").await;
    let b = EchoUpstream::start("b").await;
    let b_port = b.addr.port();
    let port = free_port();
    let up = format!(
        "  - id: pool\n    nodes:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n    \
         health_check:\n      active: {{ type: http, path: /healthz, interval: 100ms, timeout: 200ms, healthy: 1, unhealthy: 1, statuses: [200] }}\n",
        a.addr, b.addr
    );
    let gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    // Kill b: within a few intervals, every request goes to a.
    b.stop();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..20 {
        let (s, n) = node_of(&c, port, "/", &[]).await;
        assert_eq!((s, n.as_str()), (200, "a"), "log:\n{}", gw.log());
    }
    // b comes back on the same port: it gets traffic again.
    let b2 = EchoUpstream::start_on("b", b_port).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut nodes = std::collections::HashSet::new();
    for _ in 0..20 {
        nodes.insert(node_of(&c, port, "/", &[]).await.1);
    }
    assert!(nodes.contains("b"), "b never came back: {nodes:?}");
    // A node failing its health endpoint (not dead, just unhealthy) is ejected too.
    b2.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..10 {
        assert_eq!(node_of(&c, port, "/", &[]).await.1, "a");
    }
    // All unhealthy: 503 with the JSON body.
    a.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = c
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": "no healthy upstream node", "status": 503})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_failure_retries_another_node() {
    let good = EchoUpstream::start("good").await;
    let dead_port = free_port();
    let port = free_port();
    let up = format!(
        "  - id: pool\n    retries: 1\n    nodes:\n      - {{ address: \"127.0.0.1:{dead_port}\" }}\n      - {{ address: \"{}\" }}\n",
        good.addr
    );
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    for _ in 0..10 {
        let (s, n) = node_of(&c, port, "/", &[]).await;
        assert_eq!((s, n.as_str()), (200, "good"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_health_ejects_failing_node() {
    let good = EchoUpstream::start("good").await;
    let dead_port = free_port();
    let port = free_port();
    let up = format!(
        "  - id: pool\n    retries: 0\n    nodes:\n      - {{ address: \"127.0.0.1:{dead_port}\" }}\n      - {{ address: \"{}\" }}\n    \
         health_check:\n      passive: {{ failures: 2, eject_for: 30s }}\n",
        good.addr
    );
    let _gw = GatewayProcess::start(&config(port, &up), port);
    let c = client();
    let mut failures = 0;
    for _ in 0..4 {
        let (s, _) = node_of(&c, port, "/", &[]).await;
        if s == 502 {
            failures += 1;
        }
    }
    assert!(
        (1..=2).contains(&failures),
        "{failures} failures before ejection"
    );
    for _ in 0..20 {
        let (s, n) = node_of(&c, port, "/", &[]).await;
        assert_eq!((s, n.as_str()), (200, "good"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_are_502_and_504() {
    let slow = EchoUpstream::start("slow").await;
    let dead_port = free_port();
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n\
         \x20 - id: dead\n    retries: 2\n    nodes: [{{ address: \"127.0.0.1:{dead_port}\" }}]\n\
         \x20 - id: slow\n    nodes: [{{ address: \"{}\" }}]\n    timeouts: {{ connect: 1s, read: 300ms, write: 1s, idle: 10s }}\n\
         routes:\n\
         \x20 - id: dead\n    paths: [/dead]\n    upstream: dead\n\
         \x20 - id: slow\n    paths: [/delay/*]\n    upstream: slow\n",
        slow.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let r = c
        .get(format!("http://127.0.0.1:{port}/dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 502);
    let r = c
        .get(format!("http://127.0.0.1:{port}/delay/2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": "the upstream timed out", "status": 504})
    );
    // A fast answer on the same upstream still works.
    let r = c
        .get(format!("http://127.0.0.1:{port}/delay/10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_and_host_modes() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n\
         \x20 - id: pass\n    nodes: [{{ address: \"{a}\" }}]\n\
         \x20 - id: node\n    nodes: [{{ address: \"{a}\" }}]\n    pass_host: node\n\
         \x20 - id: rewrite\n    nodes: [{{ address: \"{a}\" }}]\n    pass_host: rewrite\n    upstream_host: internal.svc\n\
         routes:\n\
         \x20 - id: pass\n    paths: [/pass]\n    upstream: pass\n\
         \x20 - id: node\n    paths: [/node]\n    upstream: node\n\
         \x20 - id: rewrite\n    paths: [/rewrite]\n    upstream: rewrite\n",
        a = up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let get = |path: &'static str| {
        let c = c.clone();
        async move {
            c.get(format!("http://127.0.0.1:{port}{path}"))
                .header("host", "api.example.com")
                .header("x-forwarded-for", "203.0.113.9")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "trailers")
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let v = get("/pass").await;
    let h = &v["headers"];
    assert_eq!(h["host"], "api.example.com");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    for hop in ["x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            h.get(hop).is_none(),
            "hop-by-hop header {hop} forwarded: {h}"
        );
    }
    // A `Connection` header naming a header the gateway sets is refused, not obeyed.
    let refused = c
        .get(format!("http://127.0.0.1:{port}/pass"))
        .header("connection", "x-forwarded-for")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(get("/node").await["headers"]["host"], up.addr.to_string());
    assert_eq!(get("/rewrite").await["headers"]["host"], "internal.svc");
}
