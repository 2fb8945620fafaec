//! `compression` through a real gateway: gzip, brotli and zstd bodies that decode to the
//! origin's, `Accept-Encoding` q-values, `Vary`, and the responses left alone (small, other
//! types, already encoded, `no-transform`, HEAD); with `proxy-cache`, stored bodies stay
//! plain and every client gets its own coding.

#[path = "support/scripted.rs"]
mod scripted;
mod support;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use scripted::{Script, ScriptedUpstream};
use std::io::Read;
use support::{client, free_port, GatewayProcess};

fn text_body(len: usize) -> Bytes {
    let words = [
        "gateway ",
        "compression ",
        "brotli ",
        "gzip ",
        "zstd ",
        "pingora ",
    ];
    let mut out = String::new();
    let mut i = 0usize;
    while out.len() < len {
        out.push_str(words[i % words.len()]);
        out.push_str(&(i % 97).to_string());
        i += 1;
    }
    out.truncate(len);
    out.into()
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The body with the response's `Content-Encoding` undone by an independent decoder.
    fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.header("content-encoding") {
            None => out.extend_from_slice(&self.body),
            Some("gzip") => {
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .expect("valid gzip");
            }
            Some("br") => {
                brotli::Decompressor::new(&self.body[..], 4096)
                    .read_to_end(&mut out)
                    .expect("valid brotli");
            }
            Some("zstd") => out = zstd::stream::decode_all(&self.body[..]).expect("valid zstd"),
            Some(other) => panic!("unexpected coding {other}"),
        }
        out
    }

    fn varies_on_accept_encoding(&self) -> bool {
        self.headers.get_all("vary").iter().any(|v| {
            v.to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")
        })
    }
}

struct Gw {
    _gw: GatewayProcess,
    base: String,
    c: reqwest::Client,
}

fn start(up: &ScriptedUpstream, plugins: &str) -> Gw {
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - id: r\n    paths: [\"/*\"]\n    upstream: u\n    plugins:\n{plugins}",
        up.addr
    );
    Gw {
        _gw: GatewayProcess::start(&y, port),
        base: format!("http://127.0.0.1:{port}"),
        c: client(),
    }
}

impl Gw {
    async fn req(&self, method: &str, path: &str, accept: Option<&str>) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.c.request(method, format!("{}{path}", self.base));
        if let Some(a) = accept {
            rb = rb.header("accept-encoding", a);
        }
        let r = rb.send().await.expect("request");
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("body"),
        }
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> Resp {
        self.req("GET", path, accept).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_coding_decodes_to_the_original() {
    let up = ScriptedUpstream::start().await;
    let body = text_body(20_000);
    up.set(
        "/t",
        Script::ok(
            body.clone(),
            &[
                ("content-type", "text/plain; charset=utf-8"),
                ("etag", "\"e1\""),
            ],
        ),
    );
    up.set(
        "/chunked",
        Script::ok(body.clone(), &[("content-type", "application/json")]).chunked(),
    );
    let gw = start(&up, "      compression: { algorithms: [br, gzip, zstd] }\n");

    for (accept, coding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, br", "br"),
    ] {
        for path in ["/t", "/chunked"] {
            let r = gw.get(path, Some(accept)).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("content-encoding"),
                Some(coding),
                "{accept} {path}"
            );
            assert!(r.header("content-length").is_none());
            assert!(r.varies_on_accept_encoding(), "{accept} {path}");
            assert!(r.body.len() < body.len() / 3, "{accept} {path}: compressed");
            assert_eq!(r.decoded(), body, "{accept} {path}");
        }
    }
    let r = gw.get("/t", Some("gzip")).await;
    assert_eq!(
        r.header("etag"),
        Some("W/\"e1\""),
        "another representation: a weak validator"
    );

    // No Accept-Encoding: sent as it is, still marked as varying.
    let plain = gw.get("/t", None).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("content-length"), Some("20000"));
    assert!(plain.varies_on_accept_encoding());
    assert_eq!(plain.body, body);
}

#[tokio::test(flavor = "multi_thread")]
async fn q_values_are_honoured() {
    let up = ScriptedUpstream::start().await;
    let body = text_body(5_000);
    up.set(
        "/t",
        Script::ok(body.clone(), &[("content-type", "text/html")]),
    );
    let gw = start(&up, "      compression: {}\n");
    for (accept, coding) in [
        ("br;q=0, gzip", Some("gzip")),
        ("gzip;q=0.5, br;q=0.9", Some("br")),
        ("gzip;q=1, br;q=0.2", Some("gzip")),
        ("identity", None),
        ("*;q=0", None),
        ("*", Some("br")),
        ("zstd", None), // not offered by default
        ("deflate, compress", None),
    ] {
        let r = gw.get("/t", Some(accept)).await;
        assert_eq!(r.header("content-encoding"), coding, "{accept}");
        assert_eq!(r.decoded(), body, "{accept}");
        assert!(r.varies_on_accept_encoding(), "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_responses_are_left_alone() {
    let up = ScriptedUpstream::start().await;
    let body = text_body(5_000);
    let mut pre = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut pre, &body).unwrap();
    let pre: Bytes = pre.finish().unwrap().into();
    up.set(
        "/small",
        Script::ok(text_body(100), &[("content-type", "text/plain")]),
    );
    up.set(
        "/png",
        Script::ok(body.clone(), &[("content-type", "image/png")]),
    );
    up.set("/untyped", Script::ok(body.clone(), &[]));
    up.set(
        "/pre",
        Script::ok(
            pre.clone(),
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
        ),
    );
    up.set(
        "/pre-br",
        Script::ok(
            pre.clone(),
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
        ),
    );
    up.set(
        "/no-transform",
        Script::ok(
            body.clone(),
            &[
                ("content-type", "text/plain"),
                ("cache-control", "no-transform"),
            ],
        ),
    );
    up.set(
        "/t",
        Script::ok(body.clone(), &[("content-type", "text/plain")]),
    );
    let gw = start(
        &up,
        "      compression: { min_length: 1KiB, types: [\"text/*\"] }\n",
    );

    for path in ["/small", "/png", "/untyped", "/no-transform"] {
        let r = gw.get(path, Some("gzip, br")).await;
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert!(r.header("content-length").is_some(), "{path}");
        assert!(!r.varies_on_accept_encoding(), "{path}");
    }
    assert_eq!(gw.get("/small", Some("gzip")).await.body, text_body(100));

    // Already gzip from the origin: passed through as is, never compressed twice.
    let r = gw.get("/pre", Some("gzip")).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, pre);
    assert_eq!(r.decoded(), body);
    let r = gw.get("/pre-br", Some("br")).await;
    assert_eq!(r.header("content-encoding"), Some("gzip"), "not transcoded");
    assert_eq!(r.body, pre);

    // HEAD: headers only, nothing encoded.
    let head = gw.req("HEAD", "/t", Some("gzip")).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_bodies_stay_plain_and_each_client_gets_its_coding() {
    let up = ScriptedUpstream::start().await;
    let body = text_body(30_000);
    up.set(
        "/c",
        Script::ok(
            body.clone(),
            &[
                ("content-type", "application/json"),
                ("cache-control", "max-age=60"),
            ],
        ),
    );
    let gw = start(&up, "      compression: {}\n      proxy-cache: {}\n");
    let first = gw.get("/c", Some("gzip")).await;
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    assert_eq!(first.header("content-encoding"), Some("gzip"));
    assert_eq!(first.decoded(), body);
    for (accept, coding) in [
        (Some("br"), Some("br")),
        (None, None),
        (Some("gzip"), Some("gzip")),
    ] {
        let r = gw.get("/c", accept).await;
        assert_eq!(r.header("x-cache-status"), Some("HIT"), "{accept:?}");
        assert_eq!(r.header("content-encoding"), coding, "{accept:?}");
        assert!(r.varies_on_accept_encoding());
        assert_eq!(r.decoded(), body, "{accept:?}");
    }
    assert_eq!(up.hits("/c"), 1);
}
