//! The security plugins through a real gateway and a real upstream: `ip-restriction` (IPv4,
//! IPv6, `X-Forwarded-For` behind trusted proxies), `cors` (preflights answered at the edge,
//! regex origins, credentials, CORS headers on refusals), `request-size-limit` (declared and
//! chunked bodies), `ua-restriction`, `referer-restriction` and `request-validation`.

mod support;

use std::time::Duration;
use support::{client, free_port, EchoUpstream, GatewayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway on 127.0.0.1 (and on [::1] when `v6` is set) in front of one echo upstream
/// `u`; `routes` is the YAML list under `routes:`, where `UP` stands for the upstream id.
struct Setup {
    gw: GatewayProcess,
    up: EchoUpstream,
    port: u16,
    port6: u16,
}

fn free_port6() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free IPv6 port")
}

async fn setup(routes: &str, v6: bool) -> Setup {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let port6 = if v6 { free_port6() } else { 0 };
    let mut y = format!("listeners:\n  - {{ name: main, address: \"127.0.0.1:{port}\" }}\n");
    if v6 {
        y += &format!("  - {{ name: v6, address: \"[::1]:{port6}\" }}\n");
    }
    y += &format!(
        "upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\nroutes:\n{routes}",
        up.addr
    );
    let gw = GatewayProcess::start(&y, port);
    Setup {
        gw,
        up,
        port,
        port6,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The answer to a request: status, headers, and the body parsed as JSON.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// What the upstream received as header `name` (from the echo body).
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.json["headers"][name].as_str()
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        json,
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

fn assert_refusal(a: &Answer, status: u16, message: &str) {
    assert_eq!(a.status, status, "{}", a.json);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.json["error"], message);
    assert_eq!(a.json["status"], status);
}

// ---------------------------------------------------------------------------------------
// ip-restriction

const IP_ROUTES: &str = r#"  - id: deny-loopback
    paths: [/deny-loopback]
    upstream: u
    plugins:
      ip-restriction: { deny: [127.0.0.0/8] }
  - id: allow-private
    paths: [/allow-private]
    upstream: u
    plugins:
      ip-restriction: { allow: [10.0.0.0/8] }
  - id: allow-loopback
    paths: [/allow-loopback]
    upstream: u
    plugins:
      ip-restriction: { allow: ["127.0.0.1", "::1"], deny: [127.0.0.2] }
  - id: v6-only
    paths: [/v6-only]
    upstream: u
    plugins:
      ip-restriction: { allow: ["::1/128"] }
  - id: mapped
    paths: [/mapped]
    upstream: u
    plugins:
      ip-restriction: { deny: ["::ffff:127.0.0.0/104"] }
  - id: behind-proxy
    paths: [/behind-proxy]
    upstream: u
    plugins:
      ip-restriction:
        trusted_proxies: [127.0.0.1]
        allow: [198.51.100.0/24, "2001:db8::/32", 127.0.0.0/8]
        deny: [203.0.113.0/24]
  - id: untrusted
    paths: [/untrusted]
    upstream: u
    plugins:
      ip-restriction: { trusted_proxies: [10.0.0.0/8], allow: [198.51.100.0/24] }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn ip_allow_and_deny_lists_on_v4_and_v6() {
    let s = setup(IP_ROUTES, true).await;
    let forbidden = "forbidden by IP restriction";

    let a = get(&s.url("/deny-loopback"), &[]).await;
    assert_refusal(&a, 403, forbidden);
    let a = get(&s.url("/allow-private"), &[]).await;
    assert_refusal(&a, 403, forbidden);
    // IPv4-mapped IPv6 rules apply to IPv4 clients.
    let a = get(&s.url("/mapped"), &[]).await;
    assert_refusal(&a, 403, forbidden);
    assert_eq!(s.up.hits(), 0, "refused requests never reach the upstream");

    let a = get(&s.url("/allow-loopback"), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("127.0.0.1"));
    let a = get(&s.url("/v6-only"), &[]).await;
    assert_refusal(&a, 403, forbidden);

    // The same routes over IPv6 loopback.
    let v6 = |path: &str| format!("http://[::1]:{}{path}", s.port6);
    let a = get(&v6("/v6-only"), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("::1"));
    let a = get(&v6("/allow-loopback"), &[]).await;
    assert_eq!(a.status, 200);
    let a = get(&v6("/allow-private"), &[]).await;
    assert_refusal(&a, 403, forbidden);
    let a = get(&v6("/deny-loopback"), &[]).await;
    assert_eq!(a.status, 200, "127.0.0.0/8 does not cover ::1");
    let a = get(&v6("/mapped"), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(s.up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_decides_only_behind_trusted_proxies() {
    let s = setup(IP_ROUTES, false).await;
    let url = s.url("/behind-proxy");
    let forbidden = "forbidden by IP restriction";
    let xff = |v: &'static str| [("x-forwarded-for", v)];

    // The peer (127.0.0.1) is trusted: the rightmost untrusted X-Forwarded-For hop is the
    // client, and the upstream sees it as X-Real-IP.
    let a = get(&url, &xff("198.51.100.7")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("198.51.100.7"));
    let a = get(&url, &xff("2001:db8::7")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("2001:db8::7"));
    let a = get(&url, &xff("203.0.113.5")).await;
    assert_refusal(&a, 403, forbidden);
    let a = get(&url, &xff("10.1.1.1")).await;
    assert_refusal(&a, 403, forbidden);

    // A spoofed hop left of the real client is never believed, in either direction.
    let a = get(&url, &xff("203.0.113.5, 198.51.100.7")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("198.51.100.7"));
    let a = get(&url, &xff("198.51.100.7, 203.0.113.5")).await;
    assert_refusal(&a, 403, forbidden);
    // Trusted hops are skipped from the right.
    let a = get(&url, &xff("203.0.113.5, 127.0.0.1")).await;
    assert_refusal(&a, 403, forbidden);

    // Garbage stops the walk at the last trusted hop (the peer itself here).
    let a = get(&url, &xff("198.51.100.7, not-an-ip")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream_header("x-real-ip"), Some("127.0.0.1"));
    // No header: the peer.
    let a = get(&url, &[]).await;
    assert_eq!(a.upstream_header("x-real-ip"), Some("127.0.0.1"));

    // From a peer that is not a trusted proxy, X-Forwarded-For is ignored.
    let a = get(&s.url("/untrusted"), &xff("198.51.100.7")).await;
    assert_refusal(&a, 403, forbidden);
    assert_eq!(s.up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ip_entries_stop_the_gateway_with_the_key_path() {
    let (ok, out) = support::check_config(
        "listeners:\n  - { name: main, address: \"127.0.0.1:1\" }\n\
         routes:\n  - id: r\n    paths: [/]\n    plugins:\n      mock: {}\n      \
         ip-restriction: { allow: [10.0.0.0/8, 10.0.0.0/40] }\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("routes[0].plugins.ip-restriction.allow[1]"),
        "{out}"
    );
    assert!(out.contains("not an IP address or CIDR block"), "{out}");
}

// ---------------------------------------------------------------------------------------
// cors

const CORS_ROUTES: &str = r#"  - id: strict
    paths: [/strict]
    upstream: u
    plugins:
      cors:
        allow_origins: ["https://app.example.com", "~https://[a-z0-9-]+\\.example\\.org"]
        allow_methods: [GET, POST, PUT]
        allow_headers: [Authorization, Content-Type]
        expose_headers: [X-Upstream-Node]
        allow_credentials: true
        max_age: 10m
  - id: open
    paths: [/open]
    upstream: u
    plugins:
      cors: {}
  - id: refused
    paths: [/refused]
    upstream: u
    plugins:
      cors: { allow_origins: ["https://app.example.com"] }
      ip-restriction: { deny: [127.0.0.0/8] }
  - id: unauthorized
    paths: [/unauthorized]
    plugins:
      cors: { allow_origins: ["https://app.example.com"] }
      mock: { status: 401, body: '{"error":"unauthorized","status":401}' }
"#;

async fn preflight(url: &str, origin: &str) -> Answer {
    send(
        client()
            .request(reqwest::Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "authorization, x-trace"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflights_are_answered_without_the_upstream() {
    let s = setup(CORS_ROUTES, false).await;
    for origin in ["https://app.example.com", "https://eu-1.example.org"] {
        let a = preflight(&s.url("/strict"), origin).await;
        assert_eq!(a.status, 204, "{origin}");
        assert_eq!(a.header("access-control-allow-origin"), Some(origin));
        assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(
            a.header("access-control-allow-methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            a.header("access-control-allow-headers"),
            Some("Authorization, Content-Type")
        );
        assert_eq!(a.header("access-control-max-age"), Some("600"));
        assert_eq!(a.header("vary"), Some("Origin"));
    }
    // Origins outside the list, including ones a loose regex would let through.
    for origin in [
        "https://evil.test",
        "https://app.example.com.evil.test",
        "https://eu-1.example.org.evil.test",
        "http://app.example.com",
    ] {
        let a = preflight(&s.url("/strict"), origin).await;
        assert_refusal(&a, 403, "origin not allowed by CORS policy");
        assert!(
            a.header("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert_eq!(a.header("vary"), Some("Origin"));
    }
    // Any origin, no credentials: `*`, and whatever headers the browser asked for.
    let a = preflight(&s.url("/open"), "https://anywhere.test").await;
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("authorization, x-trace")
    );
    assert!(a.header("access-control-allow-credentials").is_none());
    assert_eq!(s.up.hits(), 0, "preflights never reach the upstream");

    // OPTIONS without Access-Control-Request-Method is an ordinary request.
    let a = send(
        client()
            .request(reqwest::Method::OPTIONS, s.url("/strict"))
            .header("origin", "https://app.example.com"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["method"], "OPTIONS");
    assert_eq!(s.up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_headers_on_actual_requests() {
    let s = setup(CORS_ROUTES, false).await;
    let a = get(&s.url("/strict"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        a.header("access-control-expose-headers"),
        Some("X-Upstream-Node")
    );
    assert_eq!(a.header("vary"), Some("Origin"));
    assert_eq!(a.upstream_header("origin"), Some("https://app.example.com"));

    // A disallowed origin is still proxied (the browser enforces), but gets no CORS headers.
    let a = get(&s.url("/strict"), &[("origin", "https://evil.test")]).await;
    assert_eq!(a.status, 200);
    assert!(a.header("access-control-allow-origin").is_none());
    assert!(a.header("access-control-allow-credentials").is_none());
    assert!(a.header("access-control-expose-headers").is_none());
    assert_eq!(a.header("vary"), Some("Origin"));
    // Without Origin the answer still varies by it, for caches.
    let a = get(&s.url("/strict"), &[]).await;
    assert!(a.header("access-control-allow-origin").is_none());
    assert_eq!(a.header("vary"), Some("Origin"));

    let a = get(&s.url("/open"), &[("origin", "https://anywhere.test")]).await;
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert!(a.header("vary").is_none());
    assert_eq!(s.up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_headers_on_responses_other_plugins_send() {
    let s = setup(CORS_ROUTES, false).await;
    let origin = [("origin", "https://app.example.com")];
    let a = get(&s.url("/refused"), &origin).await;
    assert_refusal(&a, 403, "forbidden by IP restriction");
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(a.header("vary"), Some("Origin"));
    let a = get(&s.url("/unauthorized"), &origin).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // A preflight on a route that refuses everyone is still answered: it precedes the check.
    let a = preflight(&s.url("/refused"), "https://app.example.com").await;
    assert_eq!(a.status, 204);
    assert_eq!(s.up.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// request-size-limit and request-validation

const BODY_ROUTES: &str = r#"  - id: limited
    paths: [/limited]
    upstream: u
    plugins:
      request-size-limit: { max_body: 1KiB }
  - id: headers-limited
    paths: [/headers-limited]
    upstream: u
    plugins:
      request-size-limit: { max_body: 1MiB, max_header_bytes: 1KiB }
  - id: validated
    paths: [/orders]
    upstream: u
    plugins:
      request-validation:
        max_body: 1KiB
        body_schema:
          type: object
          required: [sku, qty]
          properties:
            sku: { type: string, pattern: "^[A-Z]{3}-[0-9]+$" }
            qty: { type: integer, minimum: 1 }
"#;

/// Sends a chunked request over a raw connection, one chunk at a time with a pause between
/// (so that the gateway reads each before the next is sent); the terminating chunk is sent
/// only when `finish` is set. Returns the status and the response text.
async fn chunked(port: u16, path: &str, chunks: &[&[u8]], finish: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for c in chunks {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
        frame.extend_from_slice(c);
        frame.extend_from_slice(b"\r\n");
        // The gateway may already have answered and closed: later writes may fail.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    if finish {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within 5s");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// The JSON body of a raw response.
fn raw_json(text: &str) -> serde_json::Value {
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn request_size_limit_with_declared_and_chunked_bodies() {
    let s = setup(BODY_ROUTES, false).await;
    let c = client();
    let a = send(c.post(s.url("/limited")).body(vec![b'a'; 1024])).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["body"].as_str().unwrap().len(), 1024);
    let hits = s.up.hits();

    // A declared length over the limit: refused before the body is read or proxied.
    let a = send(c.post(s.url("/limited")).body(vec![b'a'; 1500])).await;
    assert_refusal(&a, 413, "request body larger than 1KiB");
    assert_eq!(s.up.hits(), hits);

    // Chunked within the limit: forwarded whole.
    let (status, text) = chunked(s.port, "/limited", &[&[b'b'; 500], &[b'c'; 500]], true).await;
    assert_eq!(status, 200, "{text}");
    let body = raw_json(&text)["body"].as_str().unwrap().to_string();
    assert_eq!(body.len(), 1000);
    // Chunked over the limit: 413 as soon as the running total passes it.
    let (status, text) = chunked(s.port, "/limited", &[&[b'd'; 600], &[b'e'; 600]], false).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(raw_json(&text)["error"], "request body larger than 1KiB");

    // The header section limit.
    let a = get(&s.url("/headers-limited"), &[("x-small", "1")]).await;
    assert_eq!(a.status, 200);
    let big = "v".repeat(1100);
    let a = get(&s.url("/headers-limited"), &[("x-big", &big)]).await;
    assert_refusal(&a, 431, "request headers too large");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_validation_against_a_json_schema() {
    let s = setup(BODY_ROUTES, false).await;
    let c = client();
    let url = s.url("/orders");
    let good = r#"{"sku":"ABC-12","qty":2}"#;
    let a = send(c.post(&url).body(good)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["body"], good);

    let bad: &[(&str, &str)] = &[
        (
            r#"{"sku":"ABC-12","qty":0}"#,
            "request body invalid at /qty: value is less than the minimum of 1",
        ),
        (
            r#"{"sku":"abc","qty":1}"#,
            "request body invalid at /sku: value does not match \"^[A-Z]{3}-[0-9]+$\"",
        ),
        (
            r#"{"sku":"ABC-1"}"#,
            "request body invalid: \"qty\" is a required property",
        ),
        ("[1,2", "request body is not valid JSON"),
        ("", "request body is required"),
    ];
    for (body, message) in bad {
        // A fresh connection each time: the gateway closes the connection after answering
        // from the body phase.
        let a = send(client().post(&url).body(*body)).await;
        assert_eq!(a.status, 400, "{body}: {}", a.json);
        assert_eq!(a.error(), *message, "{body}");
    }
    let a = send(
        c.put(&url)
            .body(format!("{{\"sku\":\"{}\"}}", "A".repeat(1100))),
    )
    .await;
    assert_refusal(&a, 413, "request body larger than 1KiB");

    // Chunked bodies are gathered, validated, then forwarded whole.
    let (status, text) = chunked(
        s.port,
        "/orders",
        &[b"{\"sku\":\"ABC-1\",", b"\"qty\":3}"],
        true,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(raw_json(&text)["body"], "{\"sku\":\"ABC-1\",\"qty\":3}");
    let (status, text) = chunked(
        s.port,
        "/orders",
        &[b"{\"sku\":\"ABC-1\",", b"\"qty\":-3}"],
        true,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        raw_json(&text)["error"],
        "request body invalid at /qty: value is less than the minimum of 1"
    );

    // GET carries no body to validate.
    let a = get(&url, &[]).await;
    assert_eq!(a.status, 200);
}

// ---------------------------------------------------------------------------------------
// ua-restriction and referer-restriction

const HEADER_ROUTES: &str = r#"  - id: ua
    paths: [/ua]
    upstream: u
    plugins:
      ua-restriction: { allow: ["^Mozilla/", "^MyApp/[0-9]+"], deny: ["(?i)bot"] }
  - id: ua-bypass
    paths: [/ua-bypass]
    upstream: u
    plugins:
      ua-restriction: { deny: ["^curl/"], bypass_missing: true }
  - id: referer
    paths: [/referer]
    upstream: u
    plugins:
      referer-restriction: { allow: [example.com, "*.example.com"], deny: [ads.example.com] }
  - id: referer-bypass
    paths: [/referer-bypass]
    upstream: u
    plugins:
      referer-restriction: { deny: ["*.spam.test"], bypass_missing: true }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn user_agent_and_referer_lists() {
    let s = setup(HEADER_ROUTES, false).await;
    let ua = "forbidden by User-Agent restriction";
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("/ua", Some("Mozilla/5.0 (X11)"), 200),
        ("/ua", Some("MyApp/7"), 200),
        ("/ua", Some("Mozilla/5.0 (compatible; Googlebot/2.1)"), 403),
        ("/ua", Some("curl/8.5"), 403),
        ("/ua", None, 403),
        ("/ua-bypass", None, 200),
        ("/ua-bypass", Some("curl/8.5"), 403),
        ("/ua-bypass", Some("Mozilla/5.0"), 200),
    ];
    for (path, agent, status) in cases {
        let headers: Vec<(&str, &str)> = agent.iter().map(|a| ("user-agent", *a)).collect();
        let a = get(&s.url(path), &headers).await;
        if *status == 200 {
            assert_eq!(a.status, 200, "{path} {agent:?}");
            assert_eq!(a.upstream_header("user-agent"), *agent);
        } else {
            assert_refusal(&a, *status, ua);
        }
    }

    let referer = "forbidden by Referer restriction";
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("/referer", Some("https://example.com/page"), 200),
        ("/referer", Some("https://www.example.com:8443/a?b=c"), 200),
        ("/referer", Some("https://ads.example.com/"), 403),
        ("/referer", Some("https://example.com.evil.test/"), 403),
        ("/referer", Some("https://evil.test/?r=example.com"), 403),
        ("/referer", Some("garbage"), 403),
        ("/referer", None, 403),
        ("/referer-bypass", None, 200),
        ("/referer-bypass", Some("https://x.spam.test/"), 403),
        ("/referer-bypass", Some("https://fine.test/"), 200),
    ];
    for (path, value, status) in cases {
        let headers: Vec<(&str, &str)> = value.iter().map(|v| ("referer", *v)).collect();
        let a = get(&s.url(path), &headers).await;
        if *status == 200 {
            assert_eq!(a.status, 200, "{path} {value:?}");
        } else {
            assert_refusal(&a, *status, referer);
        }
    }
    assert_eq!(s.up.hits(), 8);
    drop(s.gw);
}
