//! `proxy-cache` through a real gateway and a scripted upstream: freshness and expiry,
//! revalidation with 304, `Vary`, what is never stored, `Age`, purge, the cache lock, serving
//! stale (while revalidating, on errors), the memory budget, the disk store across restarts,
//! the key, metrics and config errors. Bodies served from the cache are compared byte for
//! byte with the origin's.

#[path = "support/scripted.rs"]
mod scripted;
mod support;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use scripted::{Script, ScriptedUpstream};
use std::time::Duration;
use support::{check_config, client, free_port, GatewayProcess};

/// A body with every byte value, so that any re-encoding would show.
fn binary_body(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 7 % 256) as u8)
        .collect::<Vec<u8>>()
        .into()
}

struct Gw {
    _gw: GatewayProcess,
    base: String,
    c: reqwest::Client,
}

/// A gateway on `up` with one route `r` on `/*` whose `proxy-cache` config is `cache` (YAML
/// flow syntax), plus any `extra` routes (YAML list items).
fn start(up: &ScriptedUpstream, cache: &str, extra: &str) -> Gw {
    let port = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n{extra}\
         \x20 - id: r\n    paths: [\"/*\"]\n    upstream: u\n    plugins:\n      proxy-cache: {cache}\n",
        up.addr
    );
    Gw {
        _gw: GatewayProcess::start(&y, port),
        base: format!("http://127.0.0.1:{port}"),
        c: client(),
    }
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn cache(&self) -> &str {
        self.headers
            .get("x-cache-status")
            .map_or("-", |v| v.to_str().unwrap())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl Gw {
    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.c.request(method, format!("{}{path}", self.base));
        for (n, v) in headers {
            rb = rb.header(*n, *v);
        }
        let r = rb.send().await.expect("request");
        Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("body"),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[]).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_responses_are_hits_until_they_expire() {
    let up = ScriptedUpstream::start().await;
    let body = binary_body(10_000);
    up.set(
        "/f",
        Script::ok(
            body.clone(),
            &[
                ("cache-control", "max-age=1"),
                ("content-type", "application/octet-stream"),
            ],
        ),
    );
    up.set(
        "/c",
        Script::ok(body.clone(), &[("cache-control", "max-age=60")]).chunked(),
    );
    let gw = start(&up, "{}", "");

    let miss = gw.get("/f").await;
    assert_eq!((miss.status, miss.cache()), (200, "MISS"));
    assert_eq!(miss.body, body);
    let hit = gw.get("/f").await;
    assert_eq!((hit.status, hit.cache()), (200, "HIT"));
    assert_eq!(
        hit.body, body,
        "the cached body is the origin's, byte for byte"
    );
    assert_eq!(hit.header("content-type"), Some("application/octet-stream"));
    assert_eq!(hit.header("content-length"), Some("10000"));
    let age: u64 = hit
        .header("age")
        .expect("a hit carries Age")
        .parse()
        .unwrap();
    assert!(age <= 1);
    let range = gw.req("GET", "/f", &[("range", "bytes=10-19")]).await;
    assert_eq!((range.status, range.cache()), (206, "HIT"));
    assert_eq!(range.body, body.slice(10..20));
    assert_eq!(range.header("content-range"), Some("bytes 10-19/10000"));
    let head = gw.req("HEAD", "/f", &[]).await;
    assert_eq!((head.status, head.cache()), (200, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(up.hits("/f"), 1);

    // A chunked origin response is stored and served whole.
    assert_eq!(gw.get("/c").await.cache(), "MISS");
    let hit = gw.get("/c").await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(hit.body, body);
    assert_eq!(up.hits("/c"), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = gw.get("/f").await;
    assert_eq!((expired.status, expired.cache()), (200, "EXPIRED"));
    assert_eq!(expired.body, body);
    assert_eq!(up.hits("/f"), 2);
    assert_eq!(gw.get("/f").await.cache(), "HIT");
    assert_eq!(up.hits("/f"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_entries_revalidate_with_304() {
    let up = ScriptedUpstream::start().await;
    let lm = "Tue, 01 Dec 2026 10:00:00 GMT";
    up.set(
        "/v",
        Script::ok(
            "validated body",
            &[
                ("cache-control", "max-age=1"),
                ("etag", "\"v1\""),
                ("last-modified", lm),
            ],
        ),
    );
    up.set(
        "/nc",
        Script::ok(
            "always validated",
            &[("cache-control", "no-cache"), ("etag", "\"n1\"")],
        ),
    );
    let gw = start(&up, "{}", "");

    assert_eq!(gw.get("/v").await.cache(), "MISS");
    assert_eq!(
        up.last_header("/v", "if-none-match"),
        None,
        "a miss asks for the full response"
    );
    // A client's own validators are answered by the cache.
    let cond = gw.req("GET", "/v", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((cond.status, cond.cache()), (304, "HIT"));
    assert!(cond.body.is_empty());
    assert_eq!(up.hits("/v"), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = gw.get("/v").await;
    assert_eq!((r.status, r.cache()), (200, "REVALIDATED"));
    assert_eq!(&r.body[..], b"validated body");
    assert_eq!(up.hits("/v"), 2);
    assert_eq!(
        up.last_header("/v", "if-none-match").as_deref(),
        Some("\"v1\"")
    );
    assert_eq!(
        up.last_header("/v", "if-modified-since").as_deref(),
        Some(lm)
    );
    let again = gw.get("/v").await;
    assert_eq!(again.cache(), "HIT", "the 304 made the entry fresh again");
    assert_eq!(&again.body[..], b"validated body");
    assert_eq!(up.hits("/v"), 2);

    // A client's `no-cache` makes even a fresh entry revalidate.
    let forced = gw.req("GET", "/v", &[("cache-control", "no-cache")]).await;
    assert_eq!(forced.cache(), "REVALIDATED");
    assert_eq!(up.hits("/v"), 3);

    // `no-cache` from the origin: stored, but validated on every use.
    assert_eq!(gw.get("/nc").await.cache(), "MISS");
    for _ in 0..2 {
        let r = gw.get("/nc").await;
        assert_eq!(r.cache(), "REVALIDATED");
        assert_eq!(&r.body[..], b"always validated");
    }
    assert_eq!(up.hits("/nc"), 3);
    assert_eq!(
        up.last_header("/nc", "if-none-match").as_deref(),
        Some("\"n1\"")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_keeps_one_entry_per_variant() {
    let up = ScriptedUpstream::start().await;
    up.set(
        "/lang",
        Script::ok(
            "hello in ",
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
        )
        .echo("accept-language"),
    );
    let gw = start(&up, "{}", "");
    let get = |lang: &'static str| {
        let gw = &gw;
        async move { gw.req("GET", "/lang", &[("accept-language", lang)]).await }
    };
    assert_eq!(get("en").await.cache(), "MISS");
    assert_eq!(get("fr").await.cache(), "MISS");
    let en = get("en").await;
    let fr = get("fr").await;
    assert_eq!((en.cache(), &en.body[..]), ("HIT", &b"hello in en"[..]));
    assert_eq!((fr.cache(), &fr.body[..]), ("HIT", &b"hello in fr"[..]));
    assert_eq!(up.hits("/lang"), 2);
    let none = gw.get("/lang").await;
    assert_eq!((none.cache(), &none.body[..]), ("MISS", &b"hello in "[..]));
    assert_eq!(gw.get("/lang").await.cache(), "HIT");
    assert_eq!(up.hits("/lang"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn uncacheable_responses_and_requests_are_not_stored() {
    let up = ScriptedUpstream::start().await;
    let cases = [
        (
            "/no-store",
            Script::ok("x", &[("cache-control", "no-store, max-age=60")]),
        ),
        (
            "/private",
            Script::ok("x", &[("cache-control", "private, max-age=60")]),
        ),
        ("/no-freshness", Script::ok("x", &[])),
        (
            "/cookie",
            Script::ok(
                "x",
                &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
            ),
        ),
        (
            "/error",
            Script::ok("x", &[("cache-control", "max-age=60")]).status(500),
        ),
        (
            "/vary-star",
            Script::ok("x", &[("cache-control", "max-age=60"), ("vary", "*")]),
        ),
    ];
    for (path, script) in &cases {
        up.set(path, script.clone());
    }
    up.set("/auth", Script::ok("x", &[("cache-control", "max-age=60")]));
    up.set(
        "/auth-public",
        Script::ok("x", &[("cache-control", "public, max-age=60")]),
    );
    up.set(
        "/plain",
        Script::ok("x", &[("cache-control", "max-age=60")]),
    );
    let gw = start(&up, "{}", "");

    for (path, script) in &cases {
        for _ in 0..2 {
            let r = gw.get(path).await;
            assert_eq!((r.status, r.cache()), (script.status, "MISS"), "{path}");
        }
        assert_eq!(up.hits(path), 2, "{path} is never served from the cache");
    }
    let auth = [("authorization", "Bearer t")];
    for _ in 0..2 {
        assert_eq!(gw.req("GET", "/auth", &auth).await.cache(), "MISS");
    }
    assert_eq!(
        up.hits("/auth"),
        2,
        "a response to Authorization needs public/s-maxage"
    );
    assert_eq!(gw.req("GET", "/auth-public", &auth).await.cache(), "MISS");
    assert_eq!(gw.req("GET", "/auth-public", &auth).await.cache(), "HIT");

    // Methods outside `methods` and a client's `no-store` bypass the cache.
    assert_eq!(gw.get("/plain").await.cache(), "MISS");
    assert_eq!(gw.req("POST", "/plain", &[]).await.cache(), "BYPASS");
    let r = gw
        .req("GET", "/plain", &[("cache-control", "no-store")])
        .await;
    assert_eq!((r.status, r.cache()), (200, "BYPASS"));
    assert_eq!(up.hits("/plain"), 3);
    assert_eq!(gw.get("/plain").await.cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn age_s_maxage_and_expires() {
    let up = ScriptedUpstream::start().await;
    up.set(
        "/aged",
        Script::ok("a", &[("cache-control", "max-age=100"), ("age", "30")]),
    );
    up.set(
        "/too-old",
        Script::ok("o", &[("cache-control", "max-age=10"), ("age", "20")]),
    );
    up.set(
        "/shared",
        Script::ok("s", &[("cache-control", "max-age=0, s-maxage=60")]),
    );
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    up.set(
        "/expires",
        Script::ok("e", &[("expires", expires.as_str())]),
    );
    let gw = start(&up, "{}", "");

    let miss = gw.get("/aged").await;
    assert_eq!((miss.cache(), miss.header("age")), ("MISS", Some("30")));
    let hit = gw.get("/aged").await;
    assert_eq!(hit.cache(), "HIT");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(
        (30..=31).contains(&age),
        "the origin's Age carries on: {age}"
    );

    gw.get("/too-old").await;
    assert_eq!(
        gw.get("/too-old").await.cache(),
        "EXPIRED",
        "Age over max-age: already stale"
    );

    for path in ["/shared", "/expires"] {
        assert_eq!(gw.get(path).await.cache(), "MISS");
        assert_eq!(gw.get(path).await.cache(), "HIT", "{path}");
        assert_eq!(up.hits(path), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_one_entry_and_is_protected() {
    let up = ScriptedUpstream::start().await;
    up.set(
        "/p",
        Script::ok("purge me", &[("cache-control", "max-age=60")]),
    );
    up.set(
        "/other",
        Script::ok("keep me", &[("cache-control", "max-age=60")]),
    );
    let gw = start(&up, "{ purge: { allow: [127.0.0.1], key: s3cret } }", "");
    for path in ["/p", "/other"] {
        gw.get(path).await;
        assert_eq!(gw.get(path).await.cache(), "HIT");
    }

    let refused = gw.req("PURGE", "/p", &[]).await;
    assert_eq!(refused.status, 403);
    let json: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(json["status"], 403);
    let wrong = gw.req("PURGE", "/p", &[("x-purge-key", "guess")]).await;
    assert_eq!(wrong.status, 403);
    assert_eq!(
        gw.get("/p").await.cache(),
        "HIT",
        "refused purges change nothing"
    );

    let key = [("x-purge-key", "s3cret")];
    assert_eq!(gw.req("PURGE", "/p", &key).await.status, 200);
    assert_eq!(
        gw.req("PURGE", "/p", &key).await.status,
        404,
        "nothing left to purge"
    );
    let r = gw.get("/p").await;
    assert_eq!((r.cache(), &r.body[..]), ("MISS", &b"purge me"[..]));
    assert_eq!(
        gw.get("/other").await.cache(),
        "HIT",
        "only the one entry went"
    );
    assert_eq!(up.hits("/p"), 2);
    assert_eq!(up.hits("/other"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_make_one_upstream_request() {
    let up = ScriptedUpstream::start().await;
    let body = binary_body(50_000);
    up.set(
        "/slow",
        Script::ok(body.clone(), &[("cache-control", "max-age=60")]).delayed(400),
    );
    let gw = start(&up, "{ lock_timeout: 5s }", "");
    let requests = (0..10).map(|_| gw.get("/slow"));
    let answers = futures_util::future::join_all(requests).await;
    assert_eq!(up.hits("/slow"), 1, "one miss filled the cache for all");
    let mut statuses: Vec<&str> = answers.iter().map(Resp::cache).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "HIT").count(),
        9,
        "{statuses:?}"
    );
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.body, body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_is_served_when_the_upstream_fails() {
    let up = ScriptedUpstream::start().await;
    up.set(
        "/sie",
        Script::ok(
            "stale but fine",
            &[("cache-control", "max-age=1, stale-if-error=60")],
        ),
    );
    up.set(
        "/5xx",
        Script::ok(
            "before the outage",
            &[("cache-control", "max-age=1, stale-if-error=60")],
        ),
    );
    up.set(
        "/strict",
        Script::ok(
            "x",
            &[(
                "cache-control",
                "max-age=1, stale-if-error=60, must-revalidate",
            )],
        ),
    );
    let gw = start(&up, "{}", "");
    for p in ["/sie", "/5xx", "/strict"] {
        assert_eq!(gw.get(p).await.cache(), "MISS");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The origin answers 503: the stale entry is served instead.
    up.set("/5xx", Script::ok("outage", &[]).status(503));
    let r = gw.get("/5xx").await;
    assert_eq!(
        (r.status, r.cache(), &r.body[..]),
        (200, "STALE", &b"before the outage"[..])
    );

    // The origin is gone.
    up.stop();
    let r = gw.get("/sie").await;
    assert_eq!((r.status, r.cache()), (200, "STALE"));
    assert_eq!(&r.body[..], b"stale but fine");
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the client connection is not reused"
    );
    let strict = gw.get("/strict").await;
    assert_eq!(strict.status, 502, "must-revalidate forbids serving stale");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_answers_at_once_and_refreshes() {
    let up = ScriptedUpstream::start().await;
    up.set(
        "/swr",
        Script::ok(
            "v1",
            &[("cache-control", "max-age=1, stale-while-revalidate=30")],
        ),
    );
    let gw = start(&up, "{}", "");
    assert_eq!(gw.get("/swr").await.cache(), "MISS");
    up.set(
        "/swr",
        Script::ok("v2", &[("cache-control", "max-age=60")]).delayed(800),
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let started = std::time::Instant::now();
    let stale = gw.get("/swr").await;
    assert_eq!((stale.cache(), &stale.body[..]), ("STALE", &b"v1"[..]));
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "not held by the refresh"
    );
    let mut refreshed = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = gw.get("/swr").await;
        if &r.body[..] == b"v2" {
            refreshed = Some(r);
            break;
        }
    }
    let r = refreshed.expect("the background refresh stored v2");
    assert_eq!(r.cache(), "HIT");
    assert_eq!(up.hits("/swr"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_default_statuses_and_max_body() {
    let up = ScriptedUpstream::start().await;
    up.set("/plain", Script::ok("no cache headers", &[]));
    up.set("/gone", Script::ok("not here", &[]).status(404));
    up.set("/moved", Script::ok("", &[("location", "/x")]).status(301));
    up.set(
        "/big",
        Script::ok(binary_body(2000), &[("cache-control", "max-age=60")]),
    );
    up.set(
        "/big-chunked",
        Script::ok(binary_body(3000), &[("cache-control", "max-age=60")]).chunked(),
    );
    up.set(
        "/small-chunked",
        Script::ok(binary_body(900), &[("cache-control", "max-age=60")]).chunked(),
    );
    let gw = start(
        &up,
        "{ ttl_default: 1m, statuses: [200, 404], max_body: 1KiB }",
        "",
    );

    for path in ["/plain", "/gone"] {
        assert_eq!(gw.get(path).await.cache(), "MISS");
        assert_eq!(
            gw.get(path).await.cache(),
            "HIT",
            "{path}: ttl_default applies"
        );
    }
    assert_eq!(gw.get("/gone").await.status, 404);
    for _ in 0..2 {
        assert_eq!(
            gw.get("/moved").await.cache(),
            "MISS",
            "301 is not in statuses"
        );
    }
    for (path, len) in [("/big", 2000), ("/big-chunked", 3000)] {
        for _ in 0..2 {
            let r = gw.get(path).await;
            assert_eq!((r.status, r.cache()), (200, "MISS"), "{path}");
            assert_eq!(r.body, binary_body(len), "{path}: the client gets it all");
        }
        assert_eq!(up.hits(path), 2, "{path} is over max_body");
    }
    gw.get("/small-chunked").await;
    let r = gw.get("/small-chunked").await;
    assert_eq!((r.cache(), r.body.clone()), ("HIT", binary_body(900)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_is_made_of_the_configured_parts() {
    let up = ScriptedUpstream::start().await;
    up.set("/q", Script::ok("q", &[("cache-control", "max-age=60")]));
    up.set(
        "/k/page",
        Script::ok("k", &[("cache-control", "max-age=60")]),
    );
    let gw = start(
        &up,
        "{}",
        "  - id: chosen\n    paths: [\"/k/*\"]\n    upstream: u\n    plugins:\n      proxy-cache: { key: [path, \"query:page\"] }\n",
    );
    assert_eq!(gw.get("/q?a=1&b=2").await.cache(), "MISS");
    assert_eq!(
        gw.get("/q?b=2&a=1").await.cache(),
        "HIT",
        "arguments are sorted"
    );
    assert_eq!(gw.get("/q?a=1").await.cache(), "MISS");

    assert_eq!(gw.get("/k/page?page=1&utm=a").await.cache(), "MISS");
    assert_eq!(
        gw.get("/k/page?utm=b&page=1").await.cache(),
        "HIT",
        "only `page` counts"
    );
    assert_eq!(gw.get("/k/page?page=2").await.cache(), "MISS");
    assert_eq!(up.hits("/k/page"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_budget_evicts_the_least_recently_used() {
    let up = ScriptedUpstream::start().await;
    for p in ["/a", "/b", "/c", "/d"] {
        up.set(
            p,
            Script::ok(binary_body(1000), &[("cache-control", "max-age=60")]),
        );
    }
    // About 1.4KiB per entry with its header: three fit in 5KiB, four do not.
    let gw = start(&up, "{ memory: { max_size: 5KiB }, max_body: 1KiB }", "");
    for p in ["/a", "/b", "/c"] {
        assert_eq!(gw.get(p).await.cache(), "MISS");
    }
    assert_eq!(gw.get("/a").await.cache(), "HIT");
    assert_eq!(gw.get("/d").await.cache(), "MISS");
    assert_eq!(gw.get("/a").await.cache(), "HIT", "recently used, kept");
    assert_eq!(gw.get("/c").await.cache(), "HIT");
    assert_eq!(
        gw.get("/b").await.cache(),
        "MISS",
        "least recently used, evicted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_store_keeps_entries_across_restarts() {
    let up = ScriptedUpstream::start().await;
    let body = binary_body(300_000);
    up.set(
        "/file",
        Script::ok(
            body.clone(),
            &[("cache-control", "max-age=60"), ("etag", "\"f\"")],
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = format!(
        "{{ disk: {{ path: \"{}\", max_size: 10MiB }} }}",
        dir.path().display()
    );
    {
        let gw = start(&up, &cache, "");
        assert_eq!(gw.get("/file").await.cache(), "MISS");
        let hit = gw.get("/file").await;
        assert_eq!(hit.cache(), "HIT");
        assert_eq!(hit.body, body);
    }
    let gw = start(&up, &cache, "");
    let hit = gw.get("/file").await;
    assert_eq!(hit.cache(), "HIT", "the entry outlived the process");
    let range = gw.req("GET", "/file", &[("range", "bytes=0-9")]).await;
    assert_eq!(
        (range.status, range.body.len()),
        (200, body.len()),
        "whole body from disk"
    );
    assert_eq!(hit.body, body);
    assert_eq!(hit.header("etag"), Some("\"f\""));
    assert_eq!(up.hits("/file"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_and_misses_are_counted_per_route() {
    let up = ScriptedUpstream::start().await;
    up.set("/m", Script::ok("m", &[("cache-control", "max-age=60")]));
    let port = free_port();
    let mport = free_port();
    let y = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         metrics: {{ address: 127.0.0.1:{mport} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: counted, paths: [\"/*\"], upstream: u, plugins: {{ proxy-cache: {{}} }} }}\n",
        up.addr
    );
    let _gw = GatewayProcess::start(&y, port);
    support::gateway::wait_for_tcp(mport).await;
    let c = client();
    for _ in 0..3 {
        c.get(format!("http://127.0.0.1:{port}/m"))
            .send()
            .await
            .unwrap();
    }
    c.post(format!("http://127.0.0.1:{port}/m"))
        .send()
        .await
        .unwrap();
    // The count is taken when the request is logged, just after its response is sent.
    let mut last = Vec::new();
    for _ in 0..40 {
        let text = c
            .get(format!("http://127.0.0.1:{mport}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let count = |status: &str| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == "gatehouse_cache_requests_total"
                        && s.labels.get("route") == Some("counted")
                        && s.labels.get("status") == Some(status)
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) => v,
                    _ => -1.0,
                })
        };
        last = vec![count("MISS"), count("HIT"), count("BYPASS")];
        if last == [Some(1.0), Some(2.0), Some(1.0)] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("MISS, HIT, BYPASS counted as {last:?}");
}

#[test]
fn bad_cache_configs_are_refused_with_the_key_path() {
    let base = "listeners:\n  - { name: main, address: 127.0.0.1:1 }\n\
                upstreams:\n  - { id: u, nodes: [{ address: \"127.0.0.1:2\" }] }\n\
                routes:\n  - id: r\n    paths: [\"/*\"]\n    upstream: u\n    plugins:\n";
    let cases = [
        (
            "proxy-cache: { methods: [POST] }",
            "proxy-cache.methods[0]",
            "only GET and HEAD",
        ),
        (
            "proxy-cache: { key: [host, url] }",
            "proxy-cache.key[1]",
            "unknown key part `url`",
        ),
        (
            "proxy-cache: { statuses: [206] }",
            "proxy-cache.statuses[0]",
            "partial",
        ),
        (
            "proxy-cache: { storage: disk }",
            "proxy-cache.disk",
            "needs `disk",
        ),
        (
            "proxy-cache: { purge: {} }",
            "proxy-cache.purge",
            "never open to all",
        ),
        (
            "proxy-cache: { ttl_default: 10 }",
            "proxy-cache.ttl_default",
            "ambiguous",
        ),
        (
            "compression: { algorithms: [deflate] }",
            "compression.algorithms[0]",
            "unknown coding",
        ),
        (
            "compression: { level: { gzip: 12 } }",
            "compression.level.gzip",
            "out of range",
        ),
    ];
    for (plugin, path, message) in cases {
        let (ok, out) = check_config(&format!("{base}      {plugin}\n"));
        assert!(!ok, "{plugin} must be refused");
        assert!(out.contains(path), "{plugin}: {out}");
        assert!(out.contains(message), "{plugin}: {out}");
    }
    let (ok, out) = check_config(&format!(
        "{base}      proxy-cache: {{ ttl_default: 1m, lock_timeout: 2s, purge: {{ key: k }} }}\n      compression: {{}}\n"
    ));
    assert!(ok, "{out}");
}
