//! Protocols through a real gateway: TLS with certificates picked by SNI, HTTP/2 (ALPN and
//! h2c), WebSocket upgrade, and a gRPC unary call (tonic's health service) over h2 end to end.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use support::{client, free_port, EchoUpstream, GatewayProcess};

struct TestCert {
    cert_path: String,
    key_path: String,
    pem: String,
}

fn make_cert(dir: &Path, host: &str) -> TestCert {
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

/// Connects with `sni` and returns the DNS names of the certificate the gateway presented,
/// and the body of a GET / over that connection.
fn tls_probe(port: u16, sni: &str) -> (Vec<String>, String) {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use std::io::{Read, Write};
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let connector = b.build();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect(sni, tcp)
        .unwrap();
    let names = tls
        .ssl()
        .peer_certificate()
        .and_then(|c| c.subject_alt_names())
        .map(|s| {
            s.iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    write!(
        tls,
        "GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (names, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificates_by_sni_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a.test");
    let b = make_cert(dir.path(), "b.test");
    let port = free_port();
    let y = format!(
        "listeners:\n  - name: tls\n    address: 127.0.0.1:{port}\n    protocol: https\n    http2: true\n    tls:\n      certificates:\n        - {{ cert: {}, key: {} }}\n        - {{ cert: {}, key: {} }}\n\
         routes:\n  - {{ id: hello, paths: [/], plugins: {{ mock: {{ body: secure }} }} }}\n",
        a.cert_path, a.key_path, b.cert_path, b.key_path
    );
    let _gw = GatewayProcess::start(&y, port);
    let probes = tokio::task::spawn_blocking(move || {
        [
            tls_probe(port, "a.test"),
            tls_probe(port, "b.test"),
            tls_probe(port, "unknown.test"),
        ]
    })
    .await
    .unwrap();
    assert_eq!(probes[0].0, vec!["a.test"]);
    assert_eq!(probes[1].0, vec!["b.test"]);
    // An unknown name gets the first (default) certificate.
    assert_eq!(probes[2].0, vec!["a.test"]);
    assert_eq!(probes[0].1, "secure");

    // A verifying client negotiates h2 over ALPN.
    for (host, cert) in [("a.test", &a), ("b.test", &b)] {
        let c = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
            .resolve(host, ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        let r = c
            .get(format!("https://{host}:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "secure");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_listener_proxies_to_http1_upstream() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: h2c, address: 127.0.0.1:{port}, http2: true }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: all, paths: [\"/*\"], upstream: u }}\n",
        up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .post(format!("http://127.0.0.1:{port}/echo?x=1"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["uri"], "/echo?x=1");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["method"], "POST");
    // HTTP/1.1 clients still work on the same listener.
    let r = client()
        .get(format!("http://127.0.0.1:{port}/h1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

async fn websocket_echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_passes_through() {
    let ws_addr = websocket_echo_server().await;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: ws, nodes: [{{ address: \"{ws_addr}\" }}] }}\n\
         routes:\n  - {{ id: ws, paths: [/ws], upstream: ws }}\n"
    );
    let _gw = GatewayProcess::start(&y, port);
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().to_string(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unary_call_over_h2() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let grpc_port = free_port();
    let (mut reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("users.v1.Users", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve(([127, 0, 0, 1], grpc_port).into()),
    );
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: grpc, address: 127.0.0.1:{port}, http2: true }}\n\
         upstreams:\n  - {{ id: grpc, http2: true, nodes: [{{ address: \"127.0.0.1:{grpc_port}\" }}] }}\n\
         routes:\n  - {{ id: grpc, paths: [/grpc.health.v1.Health/*], upstream: grpc }}\n"
    );
    let _gw = GatewayProcess::start(&y, port);
    support::gateway::wait_for_tcp(grpc_port).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let resp = client
        .check(HealthCheckRequest {
            service: "users.v1.Users".into(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    // An error status travels back too (grpc-status in trailers/headers).
    let err = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_with_sni_custom_ca_and_verification() {
    let dir = tempfile::tempdir().unwrap();
    let backend_cert = make_cert(dir.path(), "backend.test");
    let other_cert = make_cert(dir.path(), "other.test");
    // The TLS upstream is another gateway with an https listener.
    let backend_port = free_port();
    let backend = GatewayProcess::start(
        &format!(
            "listeners:\n  - name: tls\n    address: 127.0.0.1:{backend_port}\n    protocol: https\n    tls:\n      certificates:\n        - {{ cert: {}, key: {} }}\n\
             routes:\n  - {{ id: b, paths: [\"/*\"], plugins: {{ mock: {{ body: from-tls-backend }} }} }}\n",
            backend_cert.cert_path, backend_cert.key_path
        ),
        backend_port,
    );
    let port = free_port();
    let node = format!("127.0.0.1:{backend_port}");
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n\
         \x20 - {{ id: trusted, scheme: https, nodes: [{{ address: \"{node}\" }}], tls: {{ sni: backend.test, ca: {ca} }} }}\n\
         \x20 - {{ id: wrong-ca, scheme: https, retries: 0, nodes: [{{ address: \"{node}\" }}], tls: {{ sni: backend.test, ca: {other} }} }}\n\
         \x20 - {{ id: wrong-name, scheme: https, retries: 0, nodes: [{{ address: \"{node}\" }}], tls: {{ sni: evil.test, ca: {ca} }} }}\n\
         \x20 - {{ id: unverified, scheme: https, nodes: [{{ address: \"{node}\" }}], tls: {{ sni: backend.test, verify: false }} }}\n\
         routes:\n\
         \x20 - {{ id: trusted, paths: [/trusted], upstream: trusted }}\n\
         \x20 - {{ id: wrong-ca, paths: [/wrong-ca], upstream: wrong-ca }}\n\
         \x20 - {{ id: wrong-name, paths: [/wrong-name], upstream: wrong-name }}\n\
         \x20 - {{ id: unverified, paths: [/unverified], upstream: unverified }}\n",
        ca = backend_cert.cert_path,
        other = other_cert.cert_path,
    );
    let _gw = GatewayProcess::start(&y, port);
    let c = client();
    let get = |path: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/trusted").await, (200, "from-tls-backend".to_string()));
    assert_eq!(
        get("/unverified").await,
        (200, "from-tls-backend".to_string())
    );
    assert_eq!(get("/wrong-ca").await.0, 502);
    assert_eq!(get("/wrong-name").await.0, 502);
    drop(backend);
}

/// Top-level certificates edited through the admin API serve the next handshake, with no
/// restart: added (inline PEM), re-pointed with `snis`, removed, and a file rotated and
/// reloaded. Inline private keys never leave the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_through_the_admin_api_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a.test");
    let port = free_port();
    let admin_port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: tls, address: 127.0.0.1:{port}, protocol: https }}\n\
         admin: {{ address: 127.0.0.1:{admin_port}, api_key: k }}\n\
         certificates:\n  - {{ id: a, cert: {}, key: {} }}\n\
         routes:\n  - {{ id: hello, paths: [/], plugins: {{ mock: {{ body: secure }} }} }}\n",
        a.cert_path, a.key_path
    );
    let gw = GatewayProcess::start(&y, port);
    support::gateway::wait_for_tcp(admin_port).await;
    let probe = |sni: &'static str| tokio::task::spawn_blocking(move || tls_probe(port, sni).0);
    assert_eq!(probe("a.test").await.unwrap(), vec!["a.test"]);

    let c = client();
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");
    let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
    let (b_cert, b_key) = (b.cert.pem(), b.key_pair.serialize_pem());
    let r = c
        .post(admin("/certificates"))
        .header("x-api-key", "k")
        .json(&serde_json::json!({ "id": "b", "cert": b_cert, "key": b_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(probe("b.test").await.unwrap(), vec!["b.test"]);
    assert_eq!(probe("a.test").await.unwrap(), vec!["a.test"]);

    // The inline key is redacted; sending the document back keeps it.
    let got: serde_json::Value = c
        .get(admin("/certificates/b"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["key"], "<redacted>");
    assert_eq!(got["cert"], b_cert.as_str());
    let listed = c
        .get(admin("/config"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("PRIVATE KEY"), "{listed}");
    let mut edited = got.clone();
    edited["snis"] = serde_json::json!(["c.test", "*.wild.test"]);
    let r = c
        .put(admin("/certificates/b"))
        .header("x-api-key", "k")
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // `snis` decides the names now; b.test falls to the default (a).
    assert_eq!(probe("c.test").await.unwrap(), vec!["b.test"]);
    assert_eq!(probe("x.wild.test").await.unwrap(), vec!["b.test"]);
    assert_eq!(probe("b.test").await.unwrap(), vec!["a.test"]);
    let saved = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(saved.contains("c.test") && saved.contains("PRIVATE KEY"));

    // Bad input is refused with the key path, and the running certificates stay.
    for (body, expect) in [
        (
            serde_json::json!({ "id": "bad", "cert": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "key": b_key }),
            "certificates[2]",
        ),
        (
            serde_json::json!({ "id": "mismatch", "cert": a.pem, "key": b_key }),
            "is not the key of",
        ),
        (
            serde_json::json!({ "id": "redacted", "cert": b_cert, "key": "<redacted>" }),
            "send the PEM key",
        ),
        (
            serde_json::json!({ "id": "names", "cert": b_cert, "key": b_key, "snis": ["bad name"] }),
            "snis[0]",
        ),
    ] {
        let r = c
            .post(admin("/certificates"))
            .header("x-api-key", "k")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains(expect), "{expect}: {text}");
    }

    // Removing one leaves the other as the default; removing the last is refused.
    let r = c
        .delete(admin("/certificates/a"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(probe("a.test").await.unwrap(), vec!["b.test"]);
    let r = c
        .delete(admin("/certificates/b"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("an https listener needs a certificate"));
    assert_eq!(probe("c.test").await.unwrap(), vec!["b.test"]);

    // A certificate file renewed in place is served after a reload.
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = make_cert(renewed_dir.path(), "renewed.test");
    let r = c
        .post(admin("/certificates"))
        .header("x-api-key", "k")
        .json(&serde_json::json!({ "id": "file", "cert": a.cert_path, "key": a.key_path, "snis": ["file.test"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(probe("file.test").await.unwrap(), vec!["a.test"]);
    std::fs::copy(&renewed.cert_path, &a.cert_path).unwrap();
    std::fs::copy(&renewed.key_path, &a.key_path).unwrap();
    let r = c
        .post(admin("/reload"))
        .header("x-api-key", "k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(probe("file.test").await.unwrap(), vec!["renewed.test"]);
}

/// A gateway proxying everything to an echo upstream, with one plain and one HTTPS (HTTP/1.1
/// only) listener; returns the upstream, the gateway, the plain port and the HTTPS port.
async fn echo_gateway(dir: &Path) -> (EchoUpstream, GatewayProcess, u16, u16) {
    let up = EchoUpstream::start("u").await;
    let cert = make_cert(dir, "a.test");
    let (port, tls_port) = (free_port(), free_port());
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         \x20 - {{ name: tls, address: 127.0.0.1:{tls_port}, protocol: https, tls: {{ certificates: [{{ cert: {}, key: {} }}] }} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: all, paths: [\"/*\"], upstream: u }}\n",
        cert.cert_path, cert.key_path, up.addr
    );
    let gw = GatewayProcess::start(&y, port);
    (up, gw, port, tls_port)
}

/// Sends requests on one kept-alive connection and checks what the upstream received: a
/// body sent in the same packet as its head, a head larger than one read, a body larger than
/// one read, and a request sent after the connection was idle for a while.
fn requests_reach_the_upstream_whole(s: &mut (impl std::io::Read + std::io::Write)) {
    let mut echoed = |request: &[u8]| -> serde_json::Value {
        s.write_all(request).unwrap();
        let response = read_response(s);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    };
    let v = echoed(b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\npayload");
    assert_eq!(
        (v["uri"].as_str(), v["body"].as_str()),
        (Some("/small"), Some("payload"))
    );

    let big_header = "h".repeat(10_000);
    let head = format!("GET /big-head HTTP/1.1\r\nHost: t\r\nX-Big: {big_header}\r\n\r\n");
    let v = echoed(head.as_bytes());
    assert_eq!(v["uri"], "/big-head");
    assert_eq!(v["headers"]["x-big"].as_str().map(str::len), Some(10_000));

    let body = "b".repeat(20_000);
    let request = format!(
        "POST /big-body HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let v = echoed(request.as_bytes());
    assert_eq!(v["uri"], "/big-body");
    assert_eq!(v["body"].as_str().map(str::len), Some(20_000));

    std::thread::sleep(std::time::Duration::from_millis(1200));
    let v = echoed(b"GET /after-idle HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(v["uri"], "/after-idle");
}

/// Kept-alive plain and HTTPS connections: what the gateway reads while a connection waits
/// for its next request reaches the upstream whole; a shutdown closes the waiting HTTPS
/// connection too.
#[tokio::test(flavor = "multi_thread")]
async fn keepalive_requests_reach_the_upstream_whole() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let (_up, gw, port, tls_port) = echo_gateway(dir.path()).await;
    let tls = tokio::task::spawn_blocking(move || {
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        requests_reach_the_upstream_whole(&mut plain);

        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        let tcp = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        let mut tls = b.build().connect("a.test", tcp).unwrap();
        requests_reach_the_upstream_whole(&mut tls);
        tls
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let mut tcp = tls.get_ref().try_clone().unwrap();
    let closed =
        tokio::task::spawn_blocking(move || closed_within(&mut tcp, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(
        closed,
        "the idle HTTPS connection stayed open after SIGTERM"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Sends requests back to back without waiting for the answers (HTTP/1.1 pipelining, RFC 9112
/// §9.3.2) and checks that each is answered, in order, by what the upstream received: one
/// burst with bodies in the middle (a `Content-Length` and a chunked one), one larger than a
/// single read, and a last request asking
/// to close, after which the connection closes.
fn pipelined_requests_are_answered_in_order(s: &mut (impl std::io::Read + std::io::Write)) {
    let mut responses = ResponseReader::default();
    let mut check = |s: &mut dyn std::io::Read, uri: &str, body: &str| {
        let response = responses.next(s);
        assert!(response.starts_with("HTTP/1.1 200"), "{uri}: {response}");
        let (_, echoed) = response.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(echoed).unwrap();
        assert_eq!(
            (v["uri"].as_str(), v["body"].as_str().unwrap_or("")),
            (Some(uri), body),
            "answers out of order or a request lost"
        );
    };
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
          POST /three HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nchun\r\n3\r\nked\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let first = [
        ("/one", ""),
        ("/two", "abc"),
        ("/three", "chunked"),
        ("/four", ""),
    ];
    for (uri, body) in first {
        check(s, uri, body);
    }

    // More than one read's worth of requests (the gateway reads 4 KiB at a time).
    let burst: String = (0..150)
        .map(|i| format!("GET /burst/{i:03} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    assert!(burst.len() > 5000);
    s.write_all(burst.as_bytes()).unwrap();
    for i in 0..150 {
        check(s, &format!("/burst/{i:03}"), "");
    }

    s.write_all(
        b"GET /last-but-one HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    check(s, "/last-but-one", "");
    check(s, "/last", "");
    assert!(
        responses.at_end(s),
        "the connection stayed open after `Connection: close`"
    );
}

/// Pipelined requests are all answered, in order, on plain and HTTPS connections, and on a
/// plain listener that also accepts h2c.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let dir = tempfile::tempdir().unwrap();
    let up = EchoUpstream::start("u").await;
    let cert = make_cert(dir.path(), "a.test");
    let (port, h2c_port, tls_port) = (free_port(), free_port(), free_port());
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         \x20 - {{ name: h2c, address: 127.0.0.1:{h2c_port}, http2: true }}\n\
         \x20 - {{ name: tls, address: 127.0.0.1:{tls_port}, protocol: https, tls: {{ certificates: [{{ cert: {}, key: {} }}] }} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: all, paths: [\"/*\"], upstream: u }}\n",
        cert.cert_path, cert.key_path, up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    gatehouse_testkit::wait_for_tcp(h2c_port).await;
    // A request left waiting fails the read instead of hanging the test.
    let connect = |port: u16| {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        tcp
    };
    tokio::task::spawn_blocking(move || {
        pipelined_requests_are_answered_in_order(&mut connect(port));
        pipelined_requests_are_answered_in_order(&mut connect(h2c_port));

        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        let tcp = connect(tls_port);
        let mut tls = b.build().connect("a.test", tcp).unwrap();
        pipelined_requests_are_answered_in_order(&mut tls);
    })
    .await
    .unwrap();
}

/// Reads HTTP/1.1 responses with a `Content-Length` body one at a time from a connection that
/// may deliver several in one read.
#[derive(Default)]
struct ResponseReader {
    pending: Vec<u8>,
}

impl ResponseReader {
    /// The next whole response, as text.
    fn next(&mut self, s: &mut dyn std::io::Read) -> String {
        loop {
            if let Some(end) = self.complete_response_len() {
                let rest = self.pending.split_off(end);
                let response = std::mem::replace(&mut self.pending, rest);
                return String::from_utf8_lossy(&response).into_owned();
            }
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "closed before a response: {}",
                String::from_utf8_lossy(&self.pending)
            );
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The length of the first response in `pending`, once all of it is there.
    fn complete_response_len(&self) -> Option<usize> {
        let head_end = self.pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.pending[..head_end]).to_ascii_lowercase();
        let body_len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        (self.pending.len() >= head_end + body_len).then_some(head_end + body_len)
    }

    /// Whether the connection ends with no further bytes.
    fn at_end(&mut self, s: &mut dyn std::io::Read) -> bool {
        let mut buf = [0u8; 256];
        // A TLS connection may end with a close_notify alert, which the reader consumes.
        self.pending.is_empty() && matches!(s.read(&mut buf), Ok(0))
    }
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from `s`.
fn read_response(s: &mut impl std::io::Read) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

/// Whether the server closed `s` within `wait` (a read returns end of file).
fn closed_within(s: &mut std::net::TcpStream, wait: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    // A TLS connection may get a close_notify alert before the end.
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// `keepalive_timeout` closes client connections idle between requests; `0s` turns
/// keep-alive off; the default keeps them open (for 60 s).
#[tokio::test(flavor = "multi_thread")]
async fn keepalive_timeout_per_listener() {
    use std::io::Write;
    let (short, off, default) = (free_port(), free_port(), free_port());
    let y = format!(
        "listeners:\n  - {{ name: short, address: 127.0.0.1:{short}, keepalive_timeout: 1s }}\n\
         \x20 - {{ name: off, address: 127.0.0.1:{off}, keepalive_timeout: 0s }}\n\
         \x20 - {{ name: default, address: 127.0.0.1:{default} }}\n\
         routes:\n  - {{ id: hello, paths: [/], plugins: {{ mock: {{ body: hi }} }} }}\n"
    );
    let _gw = GatewayProcess::start(&y, short);
    support::gateway::wait_for_tcp(off).await;
    support::gateway::wait_for_tcp(default).await;
    tokio::task::spawn_blocking(move || {
        let connect = |port: u16| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let r = read_response(&mut s);
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            s
        };
        let mut s = connect(short);
        // Still usable right away, closed once idle past the limit.
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(read_response(&mut s).ends_with("hi"));
        assert!(closed_within(&mut s, std::time::Duration::from_secs(4)));

        let mut s = connect(off);
        assert!(closed_within(&mut s, std::time::Duration::from_secs(2)));

        let mut s = connect(default);
        assert!(!closed_within(&mut s, std::time::Duration::from_secs(2)));
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert!(read_response(&mut s).ends_with("hi"));
    })
    .await
    .unwrap();
}

/// A keep-alive connection waits for its next request outside the proxy: a request that
/// arrives in pieces, requests sent back to back and a request sent long after the last one
/// are all served, a client that closes while idle is let go, and a shutdown closes idle
/// connections instead of waiting out their keep-alive timeout.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keepalive_connections_are_served_and_closed_on_shutdown() {
    use std::io::Write;
    use std::time::Duration;
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         routes:\n  - {{ id: hello, paths: [/], plugins: {{ mock: {{ body: hi }} }} }}\n"
    );
    let gw = GatewayProcess::start(&y, port);
    let mut s = tokio::task::spawn_blocking(move || {
        let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // The first byte alone, then the rest.
        s.write_all(&request[..1]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&request[1..]).unwrap();
        assert!(read_response(&mut s).ends_with("hi"));
        for _ in 0..50 {
            s.write_all(request).unwrap();
            assert!(read_response(&mut s).ends_with("hi"));
        }
        std::thread::sleep(Duration::from_millis(1500));
        s.write_all(request).unwrap();
        assert!(read_response(&mut s).ends_with("hi"));
        // Closed by the client while idle: the gateway still serves others.
        let closing = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        drop(closing);
        let mut other = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        other.write_all(request).unwrap();
        assert!(read_response(&mut other).ends_with("hi"));
        s
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    gw.signal("TERM");
    let closed =
        tokio::task::spawn_blocking(move || closed_within(&mut s, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(closed, "the idle connection stayed open after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(10));
}
