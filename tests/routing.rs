//! Routing through a real gateway: hosts, path kinds, methods, header predicates,
//! precedence, path normalisation, 404 and 405.

mod support;

use support::{client, free_port, EchoUpstream, GatewayProcess};

/// Each route answers with a mock body naming itself, so the test sees which one matched.
fn mock_route(id: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n{extra}    plugins:\n      mock: {{ status: 200, body: \"{id}\", headers: {{ x-route: {id} }} }}\n"
    )
}

async fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", host)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

fn routing_config(port: u16) -> String {
    let mut y = format!("listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\nroutes:\n");
    y += &mock_route("exact", "    paths: [/users/me]\n");
    y += &mock_route("param", "    paths: [\"/users/{id}\"]\n");
    y += &mock_route("colon-param", "    paths: [\"/orders/:order/items\"]\n");
    y += &mock_route("prefix", "    paths: [/users/*]\n");
    y += &mock_route("catch-all", "    paths: [\"/*\"]\n");
    y += &mock_route(
        "host-exact",
        "    hosts: [api.example.com]\n    paths: [/users/me]\n",
    );
    y += &mock_route(
        "host-wild",
        "    hosts: [\"*.example.com\"]\n    paths: [/users/me]\n",
    );
    y += &mock_route("get-only", "    paths: [/only-get]\n    methods: [GET]\n");
    y += &mock_route(
        "v2",
        "    paths: [/versioned]\n    headers:\n      - { name: X-Api-Version, equals: \"2\" }\n",
    );
    y += &mock_route(
        "beta",
        "    paths: [/versioned]\n    headers:\n      - { name: X-Beta, present: true }\n",
    );
    y += &mock_route("regex", "    paths: [/versioned]\n    headers:\n      - { name: X-Client, regex: \"^mobile-[0-9]+$\" }\n");
    y += &mock_route("v1", "    paths: [/versioned]\n");
    y += &mock_route("low", "    paths: [/prio]\n    priority: 1\n");
    y += &mock_route("high", "    paths: [/prio]\n    priority: 10\n");
    y += &mock_route("admin", "    paths: [/admin/*]\n    methods: [GET]\n");
    y += &mock_route("secret", "    paths: [/secret]\n    methods: [GET]\n");
    y
}

#[tokio::test(flavor = "multi_thread")]
async fn route_matrix() {
    let port = free_port();
    let _gw = GatewayProcess::start(&routing_config(port), port);
    let cases: &[(&str, &str, u16, &str)] = &[
        ("other.test", "/users/me", 200, "exact"),
        ("other.test", "/users/42", 200, "param"),
        ("other.test", "/orders/7/items", 200, "colon-param"),
        ("other.test", "/users/42/photos", 200, "prefix"),
        ("other.test", "/users", 200, "prefix"),
        ("other.test", "/anything/else", 200, "catch-all"),
        ("api.example.com", "/users/me", 200, "host-exact"),
        ("API.Example.COM:8080", "/users/me", 200, "host-exact"),
        ("eu.example.com", "/users/me", 200, "host-wild"),
        ("deep.eu.example.com", "/users/me", 200, "host-wild"),
        // A host route's tree lacks /users/42: the any-host routes still serve it.
        ("api.example.com", "/users/42", 200, "param"),
        ("other.test", "/prio", 200, "high"),
    ];
    for (host, path, status, body) in cases {
        let (s, b) = get(port, host, path).await;
        assert_eq!((s, b.as_str()), (*status, *body), "{host} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn header_predicates_and_methods() {
    let port = free_port();
    let _gw = GatewayProcess::start(&routing_config(port), port);
    let c = client();
    let url = format!("http://127.0.0.1:{port}/versioned");
    let body = |r: reqwest::Response| async move { r.text().await.unwrap() };
    assert_eq!(
        body(
            c.get(&url)
                .header("x-api-version", "2")
                .send()
                .await
                .unwrap()
        )
        .await,
        "v2"
    );
    assert_eq!(
        body(
            c.get(&url)
                .header("x-api-version", "3")
                .send()
                .await
                .unwrap()
        )
        .await,
        "v1"
    );
    assert_eq!(
        body(c.get(&url).header("x-beta", "").send().await.unwrap()).await,
        "beta"
    );
    assert_eq!(
        body(
            c.get(&url)
                .header("x-client", "mobile-12")
                .send()
                .await
                .unwrap()
        )
        .await,
        "regex"
    );
    assert_eq!(
        body(
            c.get(&url)
                .header("x-client", "mobile-x")
                .send()
                .await
                .unwrap()
        )
        .await,
        "v1"
    );
    assert_eq!(body(c.get(&url).send().await.unwrap()).await, "v1");

    // A method the specific route refuses falls through to a less specific route that takes it.
    let r = c
        .post(format!("http://127.0.0.1:{port}/only-get"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "catch-all");
    // HEAD is allowed where GET is.
    let r = c
        .head(format!("http://127.0.0.1:{port}/only-get"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-route"], "get-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404_and_wrong_method_is_405() {
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\nroutes:\n{}{}",
        mock_route("only", "    paths: [/only]\n    methods: [GET, PUT]\n"),
        mock_route("only-post", "    paths: [/only]\n    methods: [POST]\n    headers: [{ name: x-post, present: true }]\n")
    );
    let _gw = GatewayProcess::start(&y, port);
    let r = client()
        .get(format!("http://127.0.0.1:{port}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": "no route matches the request", "status": 404})
    );
}

/// Raw HTTP/1.1 so that the client sends the path exactly as written.
async fn raw_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn normalisation_defeats_bypass_attempts() {
    let upstream = EchoUpstream::start("u").await;
    let port = free_port();
    // /admin/* is protected (mock 403 stands in for an auth plugin); the rest is proxied.
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - id: u\n    nodes: [{{ address: \"{}\" }}]\n\
         routes:\n\
         \x20 - id: admin\n    paths: [/admin/*]\n    plugins:\n      mock: {{ status: 403, body: blocked }}\n\
         \x20 - id: rest\n    paths: [\"/*\"]\n    upstream: u\n",
        upstream.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    for path in [
        "/admin/x",
        "/public/../admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/%2e%2e/admin/x",
        "/./admin/x",
        "/public/%2E%2E/admin/x",
    ] {
        let (status, body) = raw_get(port, path).await;
        assert_eq!((status, body.as_str()), (403, "blocked"), "{path}");
    }
    // Encoded separators and broken escapes are refused, not guessed.
    for path in ["/admin%2Fx", "/a%5Cb", "/bad%zz"] {
        let (status, _) = raw_get(port, path).await;
        assert_eq!(status, 400, "{path}");
    }
    // The upstream receives the normalised path, with the query kept.
    let (status, body) = raw_get(port, "/public/./a//b/../c?q=1").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["uri"], "/public/a/c?q=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_and_rewrite() {
    let upstream = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - id: u\n    nodes: [{{ address: \"{}\" }}]\n\
         routes:\n\
         \x20 - id: stripped\n    paths: [/api/*]\n    upstream: u\n    strip_prefix: true\n\
         \x20 - id: kept\n    paths: [/keep/*]\n    upstream: u\n\
         \x20 - id: rewritten\n    paths: [\"/users/{{id}}\"]\n    upstream: u\n    plugins:\n      proxy-rewrite: {{ path: \"/v2/accounts/{{id}}\" }}\n\
         \x20 - id: regex\n    paths: [/old/*]\n    upstream: u\n    plugins:\n      proxy-rewrite: {{ regex: \"^/old/(.*)$\", replacement: \"/new/$1\" }}\n",
        upstream.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    for (path, want) in [
        ("/api/orders/1?x=y", "/orders/1?x=y"),
        ("/api", "/"),
        ("/keep/a/b", "/keep/a/b"),
        ("/users/42?full=1", "/v2/accounts/42?full=1"),
        ("/old/a/b", "/new/a/b"),
    ] {
        let v: serde_json::Value = c
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["uri"], want, "{path}");
    }
}
