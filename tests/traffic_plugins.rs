//! Traffic control through a real gateway and real upstreams: `rate-limit` (exact counts,
//! headers, keys), `limit-conn` (concurrent slots), `circuit-breaker` (open, half-open,
//! closed) and `traffic-split` (weights, match rules).

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::{check_config, client, free_port, EchoUpstream, GatewayProcess};

fn listener(port: u16) -> String {
    format!("listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n")
}

fn upstream(id: &str, up: &EchoUpstream) -> String {
    format!(
        "  - {{ id: {id}, nodes: [{{ address: \"{}\" }}] }}\n",
        up.addr
    )
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", self.header(name)))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

async fn get(c: &reqwest::Client, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = c.get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

/// A request on a connection of its own. The gateway closes the connection after its own
/// 502/504, so a pooled connection could be reset under the next request.
async fn get_fresh(port: u16, path: &str) -> Reply {
    get(&client(), port, path, &[]).await
}

fn assert_gateway_error(r: &Reply, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"error": message, "status": status})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_counts_exactly_with_headers() {
    let up = EchoUpstream::start("up").await;
    let port = free_port();
    let yaml = format!(
        "{}upstreams:\n{}routes:\n  - id: limited\n    paths: [\"/rl/*\"]\n    strip_prefix: true\n    upstream: up\n    plugins:\n      rate-limit: {{ count: 3, period: 1m }}\n",
        listener(port),
        upstream("up", &up)
    );
    let _gw = GatewayProcess::start(&yaml, port);
    let c = client();
    for (i, remaining) in [2u64, 1, 0].into_iter().enumerate() {
        // The third request goes to a failing path: counted responses of any status carry
        // the headers, the upstream's errors included.
        let path = if i == 2 {
            "/rl/status/503"
        } else {
            "/rl/hello"
        };
        let r = get(&c, port, path, &[]).await;
        assert_eq!(r.status, if i == 2 { 503 } else { 200 }, "{}", r.body);
        assert_eq!(r.header_u64("ratelimit-limit"), 3);
        assert_eq!(r.header_u64("ratelimit-remaining"), remaining);
        // GCRA (the default): one request comes back every 60 s / 3 = 20 s, so the whole
        // budget is back 20, 40, 60 s after the first, second, third request.
        let reset = r.header_u64("ratelimit-reset");
        let want = 20 * (i as u64 + 1);
        assert!(
            (want - 1..=want).contains(&reset),
            "RateLimit-Reset {reset}"
        );
        assert!(r.header("retry-after").is_none());
    }
    assert_eq!(up.hits(), 3);
    for _ in 0..2 {
        let r = get(&c, port, "/rl/hello", &[]).await;
        assert_gateway_error(&r, 429, "too many requests");
        let retry = r.header_u64("retry-after");
        assert!((19..=20).contains(&retry), "Retry-After {retry}");
        assert_eq!(r.header_u64("ratelimit-limit"), 3);
        assert_eq!(r.header_u64("ratelimit-remaining"), 0);
        assert!(r.header_u64("ratelimit-reset") <= 60);
    }
    assert_eq!(up.hits(), 3, "refused requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_budgets_per_key_and_scope() {
    let up = EchoUpstream::start("up").await;
    let port = free_port();
    let yaml = format!(
        "{}upstreams:\n{}services:\n  \
           - {{ id: shared, upstream: up, plugins: {{ rate-limit: {{ count: 1, period: 1m, key: \"header:X-User\" }} }} }}\n  \
           - {{ id: split, upstream: up, plugins: {{ rate-limit: {{ count: 1, period: 1m, key: [route, \"header:X-User\"] }} }} }}\n\
         routes:\n  \
           - {{ id: by-user, paths: [/user], upstream: up, plugins: {{ rate-limit: {{ count: 2, period: 1m, key: \"header:X-User\" }} }} }}\n  \
           - {{ id: shared-one, paths: [/shared/one], service: shared }}\n  \
           - {{ id: shared-two, paths: [/shared/two], service: shared }}\n  \
           - {{ id: split-one, paths: [/split/one], service: split }}\n  \
           - {{ id: split-two, paths: [/split/two], service: split }}\n",
        listener(port),
        upstream("up", &up)
    );
    let _gw = GatewayProcess::start(&yaml, port);
    let c = client();

    // Two header values, two budgets.
    for remaining in [1, 0] {
        let r = get(&c, port, "/user", &[("x-user", "ann")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header_u64("ratelimit-remaining"), remaining);
    }
    assert_eq!(
        get(&c, port, "/user", &[("x-user", "ann")]).await.status,
        429
    );
    let r = get(&c, port, "/user", &[("x-user", "bob")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_u64("ratelimit-remaining"), 1);
    // Without the header, the client IP has a budget of its own.
    let r = get(&c, port, "/user", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_u64("ratelimit-remaining"), 1);

    // A service's instance is one scope: its routes share a budget per key...
    assert_eq!(
        get(&c, port, "/shared/one", &[("x-user", "ann")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, port, "/shared/two", &[("x-user", "ann")])
            .await
            .status,
        429
    );
    assert_eq!(
        get(&c, port, "/shared/two", &[("x-user", "bob")])
            .await
            .status,
        200
    );
    // ...unless `route` is part of the key.
    assert_eq!(
        get(&c, port, "/split/one", &[("x-user", "ann")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, port, "/split/two", &[("x-user", "ann")])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, port, "/split/two", &[("x-user", "ann")])
            .await
            .status,
        429
    );
    assert_eq!(
        get(&c, port, "/split/one", &[("x-user", "bob")])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_conn_refuses_the_extra_concurrent_request() {
    let up = EchoUpstream::start("up").await;
    let port = free_port();
    let dead = free_port();
    let yaml = format!(
        "{}upstreams:\n{}  - {{ id: dead, nodes: [{{ address: \"127.0.0.1:{dead}\" }}] }}\n\
         routes:\n  \
           - {{ id: slow, paths: [\"/conn/*\"], strip_prefix: true, upstream: up, plugins: {{ limit-conn: {{ max: 2 }} }} }}\n  \
           - {{ id: broken, paths: [/broken], upstream: dead, plugins: {{ limit-conn: {{ max: 1, status: 429 }} }} }}\n",
        listener(port),
        upstream("up", &up)
    );
    let _gw = GatewayProcess::start(&yaml, port);
    let c = client();

    let held: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { get(&c, port, "/conn/delay/900", &[]).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(&c, port, "/conn/hello", &[]).await;
    assert_gateway_error(&r, 503, "too many concurrent requests");
    assert_eq!(r.header("retry-after"), Some("1"));
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    // Both slots are free again once the requests are finished (released right after the
    // response is sent).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { get(&c, port, "/conn/delay/100", &[]).await.status })
        })
        .collect();
    for h in again {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(up.hits(), 4);

    // Requests that fail (the upstream is down) give their slot back too.
    for _ in 0..3 {
        let r = get_fresh(port, "/broken").await;
        assert_gateway_error(&r, 502, "the upstream failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn circuit_breaker_opens_probes_and_closes() {
    let up = EchoUpstream::start("up").await;
    let port = free_port();
    let dead = free_port();
    let yaml = format!(
        "{}upstreams:\n{}  - {{ id: dead, nodes: [{{ address: \"127.0.0.1:{dead}\" }}] }}\n\
         routes:\n  \
           - {{ id: cb, paths: [\"/cb/*\"], strip_prefix: true, upstream: up, plugins: {{ circuit-breaker: {{ failures: 3, open_for: 700ms }} }} }}\n  \
           - {{ id: down, paths: [/down], upstream: dead, plugins: {{ circuit-breaker: {{ failures: 2, open_for: 1m }} }} }}\n",
        listener(port),
        upstream("up", &up)
    );
    let _gw = GatewayProcess::start(&yaml, port);
    let c = client();

    // Client errors and successes do not count; three 500s in a row open the circuit.
    assert_eq!(get(&c, port, "/cb/status/500", &[]).await.status, 500);
    assert_eq!(get(&c, port, "/cb/status/404", &[]).await.status, 404);
    for _ in 0..3 {
        assert_eq!(get(&c, port, "/cb/status/500", &[]).await.status, 500);
    }
    assert_eq!(up.hits(), 5);
    for _ in 0..3 {
        let r = get(&c, port, "/cb/hello", &[]).await;
        assert_gateway_error(&r, 503, "circuit open");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(
        up.hits(),
        5,
        "the upstream is not asked while the circuit is open"
    );

    // Half-open: one probe; it fails, the circuit opens again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(&c, port, "/cb/status/502", &[]).await.status, 502);
    assert_eq!(up.hits(), 6);
    assert_eq!(get(&c, port, "/cb/hello", &[]).await.status, 503);
    assert_eq!(up.hits(), 6);

    // Half-open again: the probe succeeds and the circuit closes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = get(&c, port, "/cb/hello", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/hello");
    for _ in 0..3 {
        assert_eq!(get(&c, port, "/cb/hello", &[]).await.status, 200);
    }
    assert_eq!(up.hits(), 10);

    // An unreachable upstream (the gateway's 502) counts as a failure.
    for _ in 0..2 {
        let r = get_fresh(port, "/down").await;
        assert_gateway_error(&r, 502, "the upstream failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get_fresh(port, "/down").await;
    assert_gateway_error(&r, 503, "circuit open");
    let retry = r.header_u64("retry-after");
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_split_by_weight_and_match() {
    let stable = EchoUpstream::start("stable").await;
    let canary = EchoUpstream::start("canary").await;
    let port = free_port();
    let yaml = format!(
        "{}upstreams:\n{}{}routes:\n  - id: app\n    paths: [\"/*\"]\n    upstream: stable\n    plugins:\n      traffic-split:\n        rules:\n          \
           - match: [{{ header: X-Canary, equals: \"1\" }}]\n            upstreams: [{{ upstream: canary }}]\n          \
           - match: [{{ cookie: beta, regex: \"^(yes|on)$\" }}]\n            upstreams: [{{ upstream: canary }}]\n          \
           - upstreams: [{{ weight: 3 }}, {{ upstream: canary, weight: 1 }}]\n",
        listener(port),
        upstream("stable", &stable),
        upstream("canary", &canary)
    );
    let _gw = GatewayProcess::start(&yaml, port);
    let c = client();

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let r = get(&c, port, "/api", &[]).await;
        assert_eq!(r.status, 200);
        *counts
            .entry(r.json()["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(counts.get("stable"), Some(&75), "{counts:?}");
    assert_eq!(counts.get("canary"), Some(&25), "{counts:?}");

    for _ in 0..5 {
        let r = get(&c, port, "/api", &[("x-canary", "1")]).await;
        assert_eq!(r.json()["node"], "canary");
        let r = get(&c, port, "/api", &[("cookie", "theme=dark; beta=on")]).await;
        assert_eq!(r.json()["node"], "canary");
        assert_eq!(r.json()["uri"], "/api");
    }
    assert_eq!(canary.hits(), 35);
    // A non-matching value falls through to the weighted rule, whose sequence goes on
    // where it stopped (75:25 repeats every 4 requests: stable, stable, canary, stable).
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let r = get(
            &c,
            port,
            "/api",
            &[("x-canary", "0"), ("cookie", "beta=no")],
        )
        .await;
        nodes.push(r.json()["node"].as_str().unwrap().to_string());
    }
    assert_eq!(nodes, ["stable", "stable", "canary", "stable"]);
}

#[test]
fn bad_traffic_configs_are_refused_at_load() {
    let base = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\n\
                upstreams:\n  - { id: stable, nodes: [{ address: \"127.0.0.1:9\" }] }\n";
    let cases = [
        (
            "traffic-split: { rules: [{ upstreams: [{ upstream: canary, weight: 1 }] }] }",
            "routes[0].plugins.traffic-split.rules[0].upstreams[0].upstream: unknown upstream \"canary\" (expected the id of an entry in `upstreams`)",
        ),
        (
            "rate-limit: { count: 10, period: 1s, key: [ip, user] }",
            "routes[0].plugins.rate-limit.key[1]: unknown key `user`; expected `consumer`, `ip`, `route` or `header:NAME`",
        ),
        (
            "limit-conn: { max: 5, status: 500 }",
            "routes[0].plugins.limit-conn.status: 500 is not allowed; expected 429 or 503",
        ),
        (
            "circuit-breaker: { failures: 0 }",
            "routes[0].plugins.circuit-breaker.failures: must be at least 1",
        ),
    ];
    for (plugin, expected) in cases {
        let yaml = format!(
            "{base}routes:\n  - {{ id: a, paths: [/], upstream: stable, plugins: {{ {plugin} }} }}\n"
        );
        let (ok, out) = check_config(&yaml);
        assert!(!ok, "accepted: {plugin}");
        assert_eq!(out, format!("gatehouse: DIR/bad.yaml: {expected}"));
    }
}
