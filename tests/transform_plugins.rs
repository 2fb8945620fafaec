//! The transform plugins through a real gateway: `request-id` (generated, kept, replaced,
//! on upstream requests and on every response), `response-rewrite` (status, headers, whole
//! bodies and JSON edits with HTTP/1.1 framing checked on the wire) and `redirect` (templates,
//! regex captures, statuses, HTTP → HTTPS).

mod support;

use reqwest::header::HeaderMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use support::{check_config, client, free_port, EchoUpstream, GatewayProcess};

/// The version digit of a UUID in its canonical lowercase form, or None if `s` is not one.
fn uuid_version(s: &str) -> Option<char> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = s
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let variant = groups.get(3).and_then(|g| g.chars().next());
    if lens != [8, 4, 4, 4, 12] || !hex || !matches!(variant, Some('8' | '9' | 'a' | 'b')) {
        return None;
    }
    groups[2].chars().next()
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .unwrap_or_else(|| panic!("no `{name}` header in {h:?}"))
        .to_str()
        .unwrap()
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let mut rb = c.get(url);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().await.expect("body"))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_generated_kept_replaced_and_everywhere() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         global_plugins:\n  request-id: {{}}\n\
         routes:\n\
         \x20 - {{ id: echo, paths: [\"/echo/*\"], upstream: u }}\n\
         \x20 - id: traced\n    paths: [\"/traced/*\"]\n    upstream: u\n    plugins:\n      request-id: {{ header: X-Trace-Id, overwrite: true, algorithm: uuid_v4 }}\n\
         \x20 - id: mocked\n    paths: [/mocked]\n    plugins:\n      mock: {{ status: 401, body: denied }}\n",
        up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let base = format!("http://127.0.0.1:{port}");

    // Generated: a UUID v7, the same on the upstream request and on the response.
    let (s, h, b) = get(&c, &format!("{base}/echo/a"), &[]).await;
    assert_eq!(s, 200);
    let id = header(&h, "x-request-id").to_string();
    assert_eq!(uuid_version(&id), Some('7'), "{id}");
    assert_eq!(json(&b)["headers"]["x-request-id"], id.as_str());

    // Each request gets its own, in time order.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let (_, h2, _) = get(&c, &format!("{base}/echo/b"), &[]).await;
    let id2 = header(&h2, "x-request-id");
    assert_ne!(id2, id);
    assert!(id2 > id.as_str(), "{id2} does not sort after {id}");

    // A valid client id is kept, upstream and on the response.
    let (_, h, b) = get(
        &c,
        &format!("{base}/echo/c"),
        &[("x-request-id", "client-abc.123_Z")],
    )
    .await;
    assert_eq!(header(&h, "x-request-id"), "client-abc.123_Z");
    assert_eq!(json(&b)["headers"]["x-request-id"], "client-abc.123_Z");

    // Invalid ones are replaced: too long, with spaces.
    let too_long = "a".repeat(129);
    let longest = "b".repeat(128);
    let (_, h, _) = get(&c, &format!("{base}/echo/d"), &[("x-request-id", &longest)]).await;
    assert_eq!(header(&h, "x-request-id"), longest);
    for bad in [too_long.as_str(), "two words"] {
        let (_, h, b) = get(&c, &format!("{base}/echo/e"), &[("x-request-id", bad)]).await;
        let id = header(&h, "x-request-id");
        assert_eq!(uuid_version(id), Some('7'), "{bad} → {id}");
        assert_eq!(json(&b)["headers"]["x-request-id"], id);
    }

    // The route's own config (another header, always new, v4) replaces the global one.
    let (_, h, b) = get(
        &c,
        &format!("{base}/traced/x"),
        &[("x-trace-id", "mine"), ("x-request-id", "other")],
    )
    .await;
    let trace = header(&h, "x-trace-id");
    assert_eq!(uuid_version(trace), Some('4'), "{trace}");
    assert_eq!(json(&b)["headers"]["x-trace-id"], trace);
    assert!(h.get("x-request-id").is_none());
    assert_eq!(json(&b)["headers"]["x-request-id"], "other");

    // Responses a plugin sent carry the id (the client's, as it was valid).
    let (s, h, b) = get(&c, &format!("{base}/mocked"), &[("x-request-id", "mock-1")]).await;
    assert_eq!((s, b.as_str()), (401, "denied"));
    assert_eq!(header(&h, "x-request-id"), "mock-1");
    let (_, h, _) = get(&c, &format!("{base}/mocked"), &[]).await;
    assert_eq!(uuid_version(header(&h, "x-request-id")), Some('7'));

    // So do the gateway's own answers (no route matched).
    let (s, h, b) = get(&c, &format!("{base}/nowhere"), &[]).await;
    assert_eq!(s, 404);
    assert_eq!(json(&b)["status"], 404);
    assert_eq!(uuid_version(header(&h, "x-request-id")), Some('7'));
}

/// One response read off a raw HTTP/1.1 connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response, framed strictly by its headers: chunked, Content-Length, or nothing
/// for HEAD. Panics on anything malformed.
fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> RawResponse {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 "), "status line: {line:?}");
    let status: u16 = line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.ends_with("\r\n"), "header line: {l:?}");
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header");
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if head {
        return resp;
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        assert!(resp.header("content-length").is_none(), "both framings");
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[n..], b"\r\n", "chunk end");
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let n: usize = resp
            .header("content-length")
            .expect("neither chunked nor Content-Length")
            .parse()
            .unwrap();
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body).unwrap();
    }
    resp
}

/// Sends `requests` (method, path) one after the other on one keep-alive connection.
fn on_one_connection(port: u16, requests: &[(&str, &str)]) -> Vec<RawResponse> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    requests
        .iter()
        .map(|(method, path)| {
            write!(w, "{method} {path} HTTP/1.1\r\nHost: rw.test\r\n\r\n").unwrap();
            read_response(&mut r, *method == "HEAD")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn response_rewrite_status_headers_and_bodies() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let h2_port = free_port();
    let route = |id: &str, path: &str, plugins: &str| {
        format!(
            "  - id: {id}\n    paths: [\"{path}\"]\n    upstream: u\n    strip_prefix: true\n    plugins:\n{plugins}"
        )
    };
    let mut y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         \x20 - {{ name: h2c, address: 127.0.0.1:{h2_port}, http2: true }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{0}\" }}] }}\n\
         \x20 - {{ id: slow, nodes: [{{ address: \"{0}\" }}], timeouts: {{ read: 200ms }}, retries: 0 }}\n\
         routes:\n",
        up.addr
    );
    y += &route(
        "status",
        "/status/*",
        "      response-rewrite: { status: 202, headers: { set: { x-rw: \"yes\" }, add: { x-added: a }, remove: [x-upstream-node] } }\n",
    );
    y += &route(
        "body",
        "/body/*",
        "      response-rewrite: { body: \"replaced body\" }\n",
    );
    y += &route(
        "json",
        "/json/*",
        "      response-rewrite:\n        json:\n          set: { meta.rewritten: true, method: PATCHED, \"headers.x-added\": \"1\" }\n          remove: [node, headers.host]\n",
    );
    y += &route(
        "text",
        "/text/*",
        "      headers: { response: { set: { content-type: text/plain } } }\n      response-rewrite: { json: { set: { a: 1 } } }\n",
    );
    y += &route(
        "big",
        "/big/*",
        "      response-rewrite: { json: { set: { a: 1 } }, max_body: 16 }\n",
    );
    y += &route(
        "only404",
        "/only404/*",
        "      response-rewrite: { statuses: [404], status: 200, body: \"was 404\", headers: { set: { x-was: \"404\" } } }\n",
    );
    y += "  - id: mocked\n    paths: [/mocked]\n    plugins:\n      mock: { status: 200, body: '{\"a\":1}' }\n      response-rewrite: { status: 203, headers: { set: { x-rw: mock } }, json: { set: { b: 2 } } }\n";
    y += "  - id: timeout\n    paths: [\"/timeout/*\"]\n    upstream: slow\n    strip_prefix: true\n    plugins:\n      response-rewrite: { body: never, headers: { set: { x-rw: \"yes\" } } }\n";
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let base = format!("http://127.0.0.1:{port}");

    // Status and headers; the body is untouched and keeps its length.
    let (s, h, b) = get(&c, &format!("{base}/status/x"), &[]).await;
    assert_eq!(s, 202);
    assert_eq!(header(&h, "x-rw"), "yes");
    assert_eq!(header(&h, "x-added"), "a");
    assert!(h.get("x-upstream-node").is_none());
    assert_eq!(header(&h, "content-length"), b.len().to_string());
    assert_eq!(json(&b)["uri"], "/x");

    // A whole new body, sent chunked.
    let (s, h, b) = get(&c, &format!("{base}/body/x"), &[]).await;
    assert_eq!((s, b.as_str()), (200, "replaced body"));
    assert!(h.get("content-length").is_none());
    assert_eq!(header(&h, "transfer-encoding"), "chunked");

    // JSON edits: set (creating objects), replace, remove.
    let (s, h, b) = get(&c, &format!("{base}/json/x"), &[("x-client", "c")]).await;
    assert_eq!(s, 200);
    let v = json(&b);
    assert_eq!(v["meta"]["rewritten"], true);
    assert_eq!(v["method"], "PATCHED");
    assert_eq!(v["uri"], "/x");
    assert!(v.get("node").is_none(), "{v}");
    assert!(v["headers"].get("host").is_none(), "{v}");
    assert_eq!(v["headers"]["x-client"], "c");
    assert_eq!(v["headers"]["x-added"], "1");
    assert_eq!(header(&h, "content-type"), "application/json");
    assert!(h.get("content-length").is_none());

    // Not JSON (as the client sees it) and over max_body: unchanged, original length.
    for path in ["/text/x", "/big/x"] {
        let (s, h, b) = get(&c, &format!("{base}{path}"), &[]).await;
        assert_eq!(s, 200);
        let v = json(&b);
        assert!(v.get("a").is_none(), "{path}: {v}");
        assert_eq!(v["node"], "u");
        assert_eq!(header(&h, "content-length"), b.len().to_string(), "{path}");
    }

    // `statuses`: only a 404 from the upstream is rewritten.
    let (s, h, b) = get(&c, &format!("{base}/only404/status/404"), &[]).await;
    assert_eq!((s, b.as_str()), (200, "was 404"));
    assert_eq!(header(&h, "x-was"), "404");
    let (s, h, b) = get(&c, &format!("{base}/only404/status/500"), &[]).await;
    assert_eq!(s, 500);
    assert!(h.get("x-was").is_none());
    assert_eq!(json(&b)["uri"], "/status/500");

    // A plugin's response: status and headers change, its body cannot.
    let (s, h, b) = get(&c, &format!("{base}/mocked"), &[]).await;
    assert_eq!((s, b.as_str()), (203, "{\"a\":1}"));
    assert_eq!(header(&h, "x-rw"), "mock");
    assert_eq!(header(&h, "content-length"), "7");

    // HTTP/2 frames the edited body itself.
    support::gateway::wait_for_tcp(h2_port).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(format!("http://127.0.0.1:{h2_port}/json/h2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.headers().get("transfer-encoding").is_none());
    let v = json(&r.text().await.unwrap());
    assert_eq!(
        (v["uri"].as_str(), v["method"].as_str()),
        (Some("/h2"), Some("PATCHED"))
    );

    // The wire: every response on one keep-alive connection is framed exactly.
    let raw = tokio::task::spawn_blocking(move || {
        on_one_connection(
            port,
            &[
                ("GET", "/json/one"),
                ("GET", "/body/two"),
                ("HEAD", "/body/three"),
                ("GET", "/status/four"),
                ("GET", "/big/five"),
                ("GET", "/only404/status/404"),
                ("GET", "/json/six"),
                ("GET", "/timeout/delay/1000"),
            ],
        )
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw[0].body).unwrap();
    assert_eq!(
        (v["uri"].as_str(), v["method"].as_str()),
        (Some("/one"), Some("PATCHED"))
    );
    assert_eq!(raw[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(
        (raw[1].status, &raw[1].body[..]),
        (200, &b"replaced body"[..])
    );
    assert_eq!(raw[2].status, 200);
    assert_eq!(raw[3].status, 202);
    assert!(raw[3].header("content-length").is_some());
    assert!(String::from_utf8_lossy(&raw[4].body).contains("/five"));
    assert_eq!(&raw[5].body[..], b"was 404");
    let v: serde_json::Value = serde_json::from_slice(&raw[6].body).unwrap();
    assert_eq!(v["uri"], "/six");
    // The upstream went quiet after the request was sent: the gateway's own 504 keeps its
    // body, framed correctly.
    assert_eq!(raw[7].status, 504);
    assert_eq!(raw[7].header("x-rw"), Some("yes"));
    let v: serde_json::Value = serde_json::from_slice(&raw[7].body).unwrap();
    assert_eq!(v["status"], 504);
}

struct TestCert {
    cert_path: String,
    key_path: String,
    pem: String,
}

fn make_cert(dir: &std::path::Path, host: &str) -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let cert_path = dir.join(format!("{host}.pem"));
    let key_path = dir.join(format!("{host}.key"));
    let pem = ck.cert.pem();
    std::fs::write(&cert_path, &pem).unwrap();
    std::fs::write(&key_path, ck.key_pair.serialize_pem()).unwrap();
    TestCert {
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
        pem,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_https() {
    let up = EchoUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "secure.test");
    let port = free_port();
    let tls_port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         \x20 - name: tls\n    address: 127.0.0.1:{tls_port}\n    protocol: https\n    tls:\n      certificates:\n        - {{ cert: {}, key: {} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         global_plugins:\n  request-id: {{}}\n\
         routes:\n\
         \x20 - id: moved\n    paths: [\"/users/{{id}}/profile\"]\n    plugins:\n      redirect: {{ to: \"/v2/people/{{id}}?from={{path}}\", status: 301 }}\n\
         \x20 - id: legacy\n    paths: [\"/legacy/*\"]\n    upstream: u\n    plugins:\n      redirect: {{ to: \"https://new.example.com/$1?{{query}}\", regex: \"^/legacy/(docs/.*)$\", status: 308 }}\n\
         \x20 - id: go\n    paths: [/go]\n    plugins:\n      redirect: {{ to: \"{{scheme}}://{{host}}/landing{{uri}}\" }}\n\
         \x20 - id: temp\n    paths: [/temp]\n    plugins:\n      redirect: {{ to: /elsewhere, status: 307 }}\n\
         \x20 - id: secure\n    paths: [\"/secure/*\"]\n    upstream: u\n    plugins:\n      redirect: {{ https: true }}\n\
         \x20 - id: secure-port\n    paths: [\"/secure-port/*\"]\n    upstream: u\n    plugins:\n      redirect: {{ https: true, https_port: {tls_port}, status: 308 }}\n",
        cert.cert_path, cert.key_path, up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    support::gateway::wait_for_tcp(tls_port).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("secure.test", ([127, 0, 0, 1], 0).into())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let http = format!("http://secure.test:{port}");

    // A template with a path parameter and a variable; the short text body.
    let (s, h, b) = get(&c, &format!("{http}/users/42/profile"), &[]).await;
    assert_eq!(s, 301);
    assert_eq!(
        header(&h, "location"),
        "/v2/people/42?from=/users/42/profile"
    );
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(b, "Redirecting to /v2/people/42?from=/users/42/profile\n");
    assert_eq!(header(&h, "content-length"), b.len().to_string());
    assert_eq!(uuid_version(header(&h, "x-request-id")), Some('7'));

    // Regex captures; a path the regex does not match goes upstream.
    let (s, h, _) = get(&c, &format!("{http}/legacy/docs/a/b?x=1"), &[]).await;
    assert_eq!(s, 308);
    assert_eq!(
        header(&h, "location"),
        "https://new.example.com/docs/a/b?x=1"
    );
    let (s, _, b) = get(&c, &format!("{http}/legacy/other"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["uri"], "/legacy/other");

    // Default status 302; scheme, host and the request URI as sent.
    let (s, h, _) = get(&c, &format!("{http}/go?q=1"), &[]).await;
    assert_eq!(s, 302);
    assert_eq!(header(&h, "location"), "http://secure.test/landing/go?q=1");
    let (s, h, _) = get(&c, &format!("{http}/temp"), &[]).await;
    assert_eq!((s, header(&h, "location")), (307, "/elsewhere"));

    // HEAD: the same redirect, no body.
    let r = c.head(format!("{http}/temp")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(header(r.headers(), "location"), "/elsewhere");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // HTTP → HTTPS keeps host, path and query (and the method's request is not proxied).
    let before = up.hits();
    let r = c
        .post(format!("{http}/secure/a/b?c=d&e"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 301);
    assert_eq!(
        header(r.headers(), "location"),
        "https://secure.test/secure/a/b?c=d&e"
    );
    assert_eq!(up.hits(), before);

    // Over TLS the same route passes through to the upstream.
    let (s, _, b) = get(
        &c,
        &format!("https://secure.test:{tls_port}/secure/a?c=d"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["uri"], "/secure/a?c=d");

    // With `https_port` and 308; following the Location reaches the upstream over TLS.
    let (s, h, _) = get(&c, &format!("{http}/secure-port/x?y=1"), &[]).await;
    assert_eq!(s, 308);
    let location = header(&h, "location").to_string();
    assert_eq!(
        location,
        format!("https://secure.test:{tls_port}/secure-port/x?y=1")
    );
    let (s, _, b) = get(&c, &location, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(json(&b)["uri"], "/secure-port/x?y=1");
}

#[test]
fn bad_configs_name_the_key() {
    let refused = |plugin: &str, expected: &str| {
        let yaml = format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:8080 }}\n\
             routes:\n  - id: a\n    paths: [/]\n    plugins:\n      {plugin}\n"
        );
        let (ok, out) = check_config(&yaml);
        assert!(!ok, "accepted: {plugin}");
        assert_eq!(
            out,
            format!("gatehouse: DIR/bad.yaml: {expected}"),
            "{plugin}"
        );
    };
    refused(
        "redirect: { to: /x, status: 303 }",
        "routes[0].plugins.redirect.status: 303 is not a redirect status; expected 301, 302, 307 or 308",
    );
    refused(
        "redirect: { to: \"/$1\" }",
        "routes[0].plugins.redirect.to: `$1` refers to a regex group, but no `regex` is set",
    );
    refused(
        "redirect: { to: /x, https: true }",
        "routes[0].plugins.redirect: set either `to` or `https: true`, not both",
    );
    refused(
        "request-id: { algorithm: uuid_v1 }",
        "routes[0].plugins.request-id.algorithm: unknown variant `uuid_v1`, expected `uuid_v4` or `uuid_v7`",
    );
    refused(
        "response-rewrite: { body: x, json: { set: { a: 1 } } }",
        "routes[0].plugins.response-rewrite: set either `body` or `json`, not both",
    );
    refused(
        "response-rewrite: { json: { remove: [\"a..b\"] } }",
        "routes[0].plugins.response-rewrite.json.remove[0]: `a..b` has an empty segment; write keys separated by single dots",
    );
    refused(
        "response-rewrite: { headers: { remove: [Content-Length] } }",
        "routes[0].plugins.response-rewrite.headers.remove: `Content-Length` frames the response and is managed by the gateway",
    );
}
