//! Shared limits in a real Redis: three gateway nodes share one budget exactly; local batching
//! stays within its documented error bound with far fewer round trips; Redis killed, paused
//! and restarted with `on_store_error: allow` and `deny`; concurrency slots shared by nodes.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::services::{RedisCluster, RedisServer};
use support::{client, free_port, EchoUpstream, GatewayProcess};

fn listener(port: u16) -> String {
    format!("listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n")
}

/// Starts one gateway per port on `routes` (the same config apart from the listener).
fn fleet(ports: &[u16], routes: &str) -> Vec<GatewayProcess> {
    ports
        .iter()
        .map(|&p| GatewayProcess::start(&format!("{}{routes}", listener(p)), p))
        .collect()
}

/// Sends `total` GETs to `path`, spread round robin over `ports` by `workers` concurrent
/// clients; returns (status, when answered) of each.
async fn load(ports: &[u16], path: &str, total: usize, workers: usize) -> Vec<(u16, Instant)> {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (next, out, ports, path) =
            (next.clone(), out.clone(), ports.to_vec(), path.to_string());
        tasks.push(tokio::spawn(async move {
            let c = client();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let port = ports[i % ports.len()];
                let status = c
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                out.lock().unwrap().push((status, Instant::now()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

fn count(results: &[(u16, Instant)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_share_one_exact_limit() {
    let redis = RedisServer::start();
    let ports = [free_port(), free_port(), free_port()];
    let route = |id: &str, extra: &str| {
        format!(
            "  - id: {id}\n    paths: [/{id}]\n    plugins:\n      \
             rate-limit: {{ {extra}key: route, store: redis, on_store_error: deny, \
             redis: {{ url: \"{}\", timeout: 2s }} }}\n      mock: {{ body: ok }}\n",
            redis.url()
        )
    };
    let routes = format!(
        "routes:\n{}{}{}",
        route("gcra", "count: 300, period: 1h, "),
        route("fixed", "count: 300, period: 1h, algorithm: fixed_window, "),
        route("refill", "count: 10, period: 10s, "),
    );
    let _gws = fleet(&ports, &routes);

    // Both algorithms: 3 nodes sharing 300 admit 300 in all, not 3 × 300.
    for path in ["/gcra", "/fixed"] {
        let results = load(&ports, path, 600, 12).await;
        let (ok, limited) = (count(&results, 200), count(&results, 429));
        assert_eq!((ok, limited), (300, 300), "{path}");
    }
    // One key per limit for the three nodes (nothing node-specific in it), expiring.
    assert_eq!(redis.cmd(&["DBSIZE"]), "2");
    let fixed = "gatehouse:rate-limit\nroute:fixed\n300/3600000ms\nr=fixed";
    assert_eq!(redis.cmd(&["GET", fixed]), "300");
    let gcra = "gatehouse:gcra:rate-limit\nroute:gcra\n300/3600000ms\nr=gcra";
    for key in [fixed, gcra] {
        let ttl: i64 = redis.cmd(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "PTTL {ttl} of {key:?}");
    }

    // GCRA across nodes: a burst of 10, then one request a second, whichever node.
    for i in 0..10 {
        assert_eq!(probe(ports[i % 3], "/refill").await.0, 200);
    }
    let r = client()
        .get(format!("http://127.0.0.1:{}/refill", ports[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(probe(ports[2], "/refill").await.0, 200);
    assert_eq!(probe(ports[0], "/refill").await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_interval_stays_within_its_bound_with_fewer_round_trips() {
    const COUNT: usize = 150;
    const INTERVAL_MS: u64 = 100;
    let redis = RedisServer::start();
    let ports = [free_port(), free_port(), free_port()];
    let routes = format!(
        "routes:\n  - id: batched\n    paths: [/b]\n    plugins:\n      \
         rate-limit: {{ count: {COUNT}, period: 1m, key: route, store: redis, on_store_error: deny, \
         redis: {{ url: \"{}\", timeout: 2s, sync_interval: {INTERVAL_MS}ms }} }}\n      mock: {{ body: ok }}\n",
        redis.url()
    );
    let _gws = fleet(&ports, &routes);
    redis.cmd(&["CONFIG", "RESETSTAT"]);

    // Each node gets a request every ~5 ms for 1.5 s.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for port in ports {
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            while started.elapsed() < Duration::from_millis(1500) {
                let s = c
                    .get(format!("http://127.0.0.1:{port}/b"))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                out.push((s, Instant::now()));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let sent = results.len();
    let admitted = count(&results, 200);
    assert_eq!(admitted + count(&results, 429), sent, "only 200s and 429s");

    // The bound (docs/cluster.md): beyond `count`, at most what the fleet admitted in three
    // sync intervals (plus a little scheduling slack).
    let mut times: Vec<Instant> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    times.sort();
    let span = Duration::from_millis(3 * INTERVAL_MS + 50);
    let most_in_span = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] <= span)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        admitted >= COUNT,
        "admitted {admitted} of {sent}: never fewer than the limit"
    );
    assert!(
        admitted <= COUNT + most_in_span,
        "admitted {admitted}: more than {COUNT} + {most_in_span} (the fleet's admissions in {span:?})"
    );
    assert!(admitted < 3 * COUNT, "admitted {admitted}");

    // Round trips: one sync per node and interval, not one per request.
    let stats = redis.cmd(&["INFO", "commandstats"]);
    let calls: usize = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(calls > 0, "{stats}");
    assert!(calls * 3 < sent, "{calls} script calls for {sent} requests");
}

/// GET `path`: status, `RateLimit-Remaining`, time taken.
async fn probe(port: u16, path: &str) -> (u16, Option<u64>, Duration) {
    let started = Instant::now();
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .expect("the gateway answers");
    let remaining = r
        .headers()
        .get("ratelimit-remaining")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), remaining, started.elapsed())
}

async fn wait_until_counted(port: u16, path: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let (status, remaining, _) = probe(port, path).await;
        if status == 200 && remaining.is_some() {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{path} not counted again after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_or_slow_fails_open_or_closed_and_counting_resumes() {
    let mut redis = RedisServer::start();
    let port = free_port();
    let mport = free_port();
    let limit = |id: &str, action: &str| {
        format!(
            "  - id: {id}\n    paths: [/{id}]\n    plugins:\n      \
             rate-limit: {{ count: 1000, period: 1h, key: route, store: redis, on_store_error: {action}, \
             redis: {{ url: \"{}\", timeout: 200ms }} }}\n      mock: {{ body: ok }}\n",
            redis.url()
        )
    };
    let yaml = format!(
        "{}metrics: {{ address: 127.0.0.1:{mport} }}\nroutes:\n{}{}",
        listener(port),
        limit("open", "allow"),
        limit("closed", "deny")
    );
    let gw = GatewayProcess::start(&yaml, port);
    assert_eq!(probe(port, "/open").await.0, 200);
    let (status, remaining, _) = probe(port, "/closed").await;
    assert_eq!((status, remaining), (200, Some(999)));

    // Redis killed: allow lets requests through uncounted, deny answers 503; no waiting.
    redis.kill();
    for _ in 0..5 {
        let (status, remaining, took) = probe(port, "/open").await;
        assert_eq!((status, remaining), (200, None));
        assert!(took < Duration::from_millis(600), "{took:?}");
        let r = client()
            .get(format!("http://127.0.0.1:{port}/closed"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "rate limit unavailable", "status": 503})
        );
    }
    let metrics = client()
        .get(format!("http://127.0.0.1:{mport}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_redis_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 10.0, "{metrics}");
    let log = gw.log();
    let warnings = log
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains(&format!("redis redis://127.0.0.1:{}", redis.port))
        })
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "one warning, not one per request:\n{log}"
    );

    // Redis back (empty): counting resumes within about a second.
    redis.restart();
    wait_until_counted(port, "/closed", Duration::from_secs(3)).await;
    let (_, first, _) = probe(port, "/closed").await;
    let (_, second, _) = probe(port, "/closed").await;
    assert_eq!(second.unwrap() + 1, first.unwrap());
    assert!(gw.log().contains("reachable again"), "{}", gw.log());

    // Redis slow (every client paused for 1.2 s): the 200ms timeout decides.
    redis.cmd(&["CLIENT", "PAUSE", "1200", "ALL"]);
    let (status, _, took) = probe(port, "/closed").await;
    assert_eq!(status, 503);
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(900),
        "{took:?}"
    );
    let (status, remaining, _) = probe(port, "/open").await;
    assert_eq!((status, remaining), (200, None));
    wait_until_counted(port, "/closed", Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_conn_slots_are_shared_by_the_nodes() {
    let redis = RedisServer::start();
    let up = EchoUpstream::start("slow").await;
    let ports = [free_port(), free_port()];
    let routes = format!(
        "upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - id: slow\n    paths: [/delay/*]\n    upstream: u\n    plugins:\n      \
         limit-conn: {{ max: 2, key: route, store: redis, on_store_error: deny, \
         redis: {{ url: \"{}\", timeout: 2s }} }}\n",
        up.addr,
        redis.url()
    );
    let _gws = fleet(&ports, &routes);
    let a = ports[0];
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { probe(a, "/delay/900").await.0 }))
        .collect();
    // Both slots are taken on node A; node B sees them.
    let key = "gatehouse:limit-conn\nroute:slow\n2\nr=slow";
    let started = Instant::now();
    while redis.cmd(&["ZCARD", key]) != "2" {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "slots never taken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, _) = probe(ports[1], "/delay/0").await;
    assert_eq!(status, 503, "node B must see node A's two slots");
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Released in Redis when the requests ended.
    let started = Instant::now();
    while redis.cmd(&["ZCARD", key]) != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "slots never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe(ports[1], "/delay/0").await.0, 200);
    let ttl: i64 = redis.cmd(&["PTTL", key]).parse().unwrap();
    assert!(ttl == -2 || (ttl > 0 && ttl <= 30_000), "PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_counts_exactly_across_slots() {
    let cluster = RedisCluster::start(3);
    let ports = [free_port(), free_port()];
    let seeds = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let routes = format!(
        "routes:\n  - id: tenants\n    paths: [/t]\n    plugins:\n      \
         rate-limit: {{ count: 20, period: 1h, key: header:x-tenant, store: redis, on_store_error: deny, \
         redis: {{ cluster: [{seeds}], timeout: 2s }} }}\n      mock: {{ body: ok }}\n"
    );
    let _gws = fleet(&ports, &routes);
    // Six tenants (keys in different slots, so on different nodes), 40 requests each.
    let mut tasks = Vec::new();
    for tenant in 0..6 {
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut ok = 0;
            for i in 0..40 {
                let r = c
                    .get(format!("http://127.0.0.1:{}/t", ports[i % 2]))
                    .header("x-tenant", format!("tenant-{tenant}"))
                    .send()
                    .await
                    .unwrap();
                ok += usize::from(r.status() == 200);
            }
            ok
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 20, "each tenant gets exactly its 20");
    }
    let keys: usize = cluster
        .nodes
        .iter()
        .map(|n| n.cmd(&["DBSIZE"]).parse::<usize>().unwrap())
        .sum();
    assert_eq!(keys, 6);
    assert!(
        cluster
            .nodes
            .iter()
            .filter(|n| n.cmd(&["DBSIZE"]) != "0")
            .count()
            >= 2,
        "the keys are spread over the nodes"
    );
}
