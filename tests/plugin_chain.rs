//! The plugin chain through a real gateway: global → service → route merging, overrides by
//! narrower scopes, and the built-in `mock` and `headers` plugins.

mod support;

use support::{client, free_port, EchoUpstream, GatewayProcess};

#[tokio::test(flavor = "multi_thread")]
async fn scopes_merge_and_narrower_scopes_win() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         global_plugins:\n  headers: {{ request: {{ set: {{ x-scope: global }} }}, response: {{ set: {{ x-global: yes }} }} }}\n\
         services:\n  - id: svc\n    upstream: u\n    plugins:\n      headers: {{ request: {{ set: {{ x-scope: service }}, remove: [x-drop] }} }}\n\
         routes:\n\
         \x20 - {{ id: plain, paths: [/plain], upstream: u }}\n\
         \x20 - {{ id: in-service, paths: [/svc], service: svc }}\n\
         \x20 - id: own\n    paths: [/own]\n    service: svc\n    plugins:\n      headers: {{ request: {{ set: {{ x-scope: route }}, add: {{ x-extra: a }} }}, response: {{ set: {{ x-route: own }} }} }}\n\
         \x20 - id: mocked\n    paths: [/mocked]\n    plugins:\n      mock: {{ status: 202, body: '{{\"mocked\":true}}', headers: {{ x-mock: \"1\" }} }}\n",
        up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let call = |path: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("x-drop", "1")
                .send()
                .await
                .unwrap();
            let headers = r.headers().clone();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, headers, body)
        }
    };
    let (_, h, v) = call("/plain").await;
    assert_eq!(v["headers"]["x-scope"], "global");
    assert_eq!(v["headers"]["x-drop"], "1");
    assert_eq!(h["x-global"], "yes");

    // The service's `headers` replaces the global one (so no x-global on the response).
    let (_, h, v) = call("/svc").await;
    assert_eq!(v["headers"]["x-scope"], "service");
    assert!(v["headers"].get("x-drop").is_none());
    assert!(h.get("x-global").is_none());

    // The route's replaces the service's.
    let (_, h, v) = call("/own").await;
    assert_eq!(v["headers"]["x-scope"], "route");
    assert_eq!(v["headers"]["x-extra"], "a");
    assert_eq!(v["headers"]["x-drop"], "1");
    assert_eq!(h["x-route"], "own");

    // mock answers without the upstream; the global response headers still apply.
    let before = up.hits();
    let (status, h, v) = call("/mocked").await;
    assert_eq!(status, 202);
    assert_eq!(v, serde_json::json!({"mocked": true}));
    assert_eq!(h["x-mock"], "1");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-global"], "yes");
    assert_eq!(up.hits(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn mock_with_delay_and_body_file() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.json");
    std::fs::write(&file, r#"[{"id":1,"name":"ada"}]"#).unwrap();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         routes:\n  - id: users\n    paths: [/users]\n    plugins:\n      mock: {{ body_file: {}, delay: 300ms }}\n",
        file.display()
    );
    let _gw = GatewayProcess::start(&y, port);
    let started = std::time::Instant::now();
    let r = client()
        .get(format!("http://127.0.0.1:{port}/users"))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), r#"[{"id":1,"name":"ada"}]"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_plugins_join_the_chain_after_auth() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         consumers:\n\
         \x20 - id: alice\n    credentials: {{ key-auth: {{ key: alice-key }} }}\n    plugins:\n      rate-limit: {{ count: 2, period: 1m, key: consumer }}\n      headers: {{ request: {{ set: {{ x-tier: free }} }} }}\n\
         \x20 - id: bob\n    credentials: {{ key-auth: {{ key: bob-key }} }}\n\
         routes:\n  - id: r\n    paths: [\"/*\"]\n    upstream: u\n    plugins:\n      key-auth: {{}}\n      rate-limit: {{ count: 4, period: 1m, key: consumer }}\n",
        up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let call = |key: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("http://127.0.0.1:{port}/x"))
                .header("apikey", key)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let limit = r
                .headers()
                .get("ratelimit-limit")
                .map(|v| v.to_str().unwrap().to_string());
            let body = r.text().await.unwrap();
            (status, limit, body)
        }
    };
    // alice's own limit (2) replaces the route's (4); her own headers plugin joins too.
    let (s, limit, body) = call("alice-key").await;
    assert_eq!((s, limit.as_deref()), (200, Some("2")));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-consumer-id"], "alice");
    assert_eq!(v["headers"]["x-tier"], "free");
    assert_eq!(call("alice-key").await.0, 200);
    assert_eq!(call("alice-key").await.0, 429);
    // bob runs under the route's limit.
    for _ in 0..4 {
        let (s, limit, body) = call("bob-key").await;
        assert_eq!((s, limit.as_deref()), (200, Some("4")));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["headers"].get("x-tier").is_none());
    }
    assert_eq!(call("bob-key").await.0, 429);
}
