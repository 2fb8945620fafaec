//! Config from a real etcd: a change reaches three nodes within a second, a bad document is
//! refused everywhere with the old config kept, the admin API of any node writes for all,
//! an etcd restart (with compaction, a deleted key, and a rebuild from nothing) causes no
//! 404, and the
//! `gatehouse etcd push` tool validates and pushes a file.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::gateway::{binary, wait_for_tcp};
use support::services::EtcdServer;
use support::{check_config, client, free_port, GatewayProcess};

const KEY: &str = "/gatehouse/config";

/// The shared document: one mock route answering `body`.
fn doc(body: &str) -> String {
    format!(
        "routes:\n  - {{ id: hello, paths: [/hello], plugins: {{ mock: {{ body: {body} }} }} }}\n"
    )
}

/// A node's own file: listener, admin API, etcd source.
fn bootstrap(port: u16, admin_port: u16, endpoint: &str) -> String {
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         admin: {{ address: 127.0.0.1:{admin_port}, api_key: s3cret }}\n\
         config_source: {{ type: etcd, endpoints: [\"{endpoint}\"], prefix: /gatehouse, timeout: 1s }}\n"
    )
}

struct Node {
    port: u16,
    admin_port: u16,
    gw: GatewayProcess,
}

async fn start_nodes(n: usize, etcd: &EtcdServer) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let (port, admin_port) = (free_port(), free_port());
        let gw = GatewayProcess::start(&bootstrap(port, admin_port, &etcd.endpoint()), port);
        wait_for_tcp(admin_port).await;
        nodes.push(Node {
            port,
            admin_port,
            gw,
        });
    }
    nodes
}

/// `gatehouse etcd push -c FILE ARGS...` on `yaml`: (success, stdout + stderr).
fn push(yaml: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(binary())
        .args(["etcd", "push", "-c"])
        .arg(&path)
        .args(args)
        .output()
        .expect("run gatehouse etcd push");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        text.replace(&dir.path().display().to_string(), "DIR")
            .trim()
            .to_string(),
    )
}

async fn etcd_client(etcd: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client")
}

async fn body_of(port: u16, path: &str) -> (u16, String) {
    match client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Waits until every node answers `want` on `path`; returns how long it took.
async fn converge(nodes: &[Node], path: &str, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for n in nodes {
            if body_of(n.port, path).await.1 != want {
                all = false;
                break;
            }
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path} did not answer {want:?} on every node within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_reaches_three_nodes_within_a_second_and_bad_ones_are_refused() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let (ok, out) = push(&doc("v1"), &["--endpoints", &endpoint]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("pushed DIR/fleet.yaml to etcd /gatehouse/config (revision "),
        "{out}"
    );
    let nodes = start_nodes(3, &etcd).await;
    converge(&nodes, "/hello", "v1", Duration::from_secs(2)).await;

    // A change in etcd: every node serves it within a second.
    let mut c = etcd_client(&etcd).await;
    c.put(KEY, doc("v2"), None).await.unwrap();
    let took = converge(&nodes, "/hello", "v2", Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A bad document: refused on every node, v2 stays, each log says why.
    c.put(KEY, "routes:\n  - { id: hello, paths: [nope] }\n", None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in &nodes {
        assert_eq!(body_of(n.port, "/hello").await, (200, "v2".into()));
        let log = n.gw.log();
        assert!(
            log.contains(
                "config reload (etcd watch) refused, the running config stays: \
                 etcd /gatehouse/config: routes[0].paths[0]: `nope` must start with `/`"
            ),
            "{log}"
        );
    }
    // Per-node sections are refused in the shared document.
    c.put(
        KEY,
        format!("{}admin: {{ address: 0.0.0.0:1, api_key: x }}\n", doc("v3")),
        None,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(body_of(nodes[0].port, "/hello").await.1, "v2");
    assert!(nodes[0].gw.log().contains(
        "etcd /gatehouse/config: admin: is set in each node's own config file, not in etcd"
    ));

    // The admin API of any node writes to etcd; all nodes converge.
    let admin = |n: &Node, path: &str| format!("http://127.0.0.1:{}{path}", n.admin_port);
    let r = client()
        .post(admin(&nodes[1], "/routes"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"id": "added", "paths": ["/added"], "plugins": {"mock": {"body": "from-admin"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let took = converge(&nodes, "/added", "from-admin", Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(body_of(nodes[2].port, "/hello").await.1, "v2");
    let stored = c.get(KEY, None).await.unwrap();
    let stored = String::from_utf8_lossy(stored.kvs()[0].value()).to_string();
    assert!(
        stored.contains("from-admin") && stored.contains("hello"),
        "{stored}"
    );
    assert!(
        !stored.contains("listeners") && !stored.contains("s3cret"),
        "node sections stay on the node:\n{stored}"
    );
    // An invalid change through the admin API: 400, nothing written.
    let r = client()
        .put(admin(&nodes[0], "/routes/added"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"paths": ["/added"], "upstream": "missing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let again = c.get(KEY, None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(again.kvs()[0].value()), stored);
    // Each node's own sections are its own: node 0's config still lists its own listener.
    let cfg: serde_json::Value = client()
        .get(admin(&nodes[0], "/config"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cfg["listeners"][0]["address"],
        format!("127.0.0.1:{}", nodes[0].port)
    );
    assert_eq!(cfg["routes"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restart_compaction_and_deletion_cause_no_404() {
    let mut etcd = EtcdServer::start();
    let (ok, out) = push(&doc("v1"), &["--endpoints", &etcd.endpoint()]);
    assert!(ok, "{out}");
    let nodes = start_nodes(3, &etcd).await;
    converge(&nodes, "/hello", "v1", Duration::from_secs(2)).await;

    // Traffic on every node for the whole test (bounded: it stops by itself after 20 s).
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let traffic = {
        let (stop, bad) = (stop.clone(), bad.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(20) {
                for &p in &ports {
                    let (status, body) = body_of(p, "/hello").await;
                    sent += 1;
                    if status != 200 {
                        bad.lock().unwrap().push((p, status, body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };

    // etcd goes away and comes back; meanwhile the nodes serve what they have.
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    etcd.restart();
    // New revisions, then history compacted away: the nodes list again and catch up.
    let mut c = etcd_client(&etcd).await;
    for v in ["v2", "v3", "v4"] {
        c.put(KEY, doc(v), None).await.unwrap();
    }
    let rev = c.get(KEY, None).await.unwrap().header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    converge(&nodes, "/hello", "v4", Duration::from_secs(5)).await;

    // The key deleted: the running config stays.
    c.delete(KEY, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in &nodes {
        assert!(
            n.gw.log().contains("/gatehouse/config is not in etcd"),
            "{}",
            n.gw.log()
        );
    }
    // And a new document after the deletion is applied.
    c.put(KEY, doc("v5"), None).await.unwrap();
    converge(&nodes, "/hello", "v5", Duration::from_secs(2)).await;

    // etcd rebuilt from nothing (revisions start over, lower than what the nodes applied):
    // the nodes keep serving, then follow the new store.
    etcd.restart_empty();
    let mut c = etcd_client(&etcd).await;
    c.put(KEY, doc("v6"), None).await.unwrap();
    converge(&nodes, "/hello", "v6", Duration::from_secs(5)).await;

    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    let bad = bad.lock().unwrap();
    assert!(sent > 30, "only {sent} requests");
    assert!(
        bad.is_empty(),
        "{} of {sent} requests failed: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(nodes[0]
        .gw
        .log()
        .contains("listing /gatehouse/config again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn push_tool_and_bootstrap_checks() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();

    // Where to push is needed.
    let (ok, out) = push(&doc("v1"), &[]);
    assert!(!ok);
    assert_eq!(
        out,
        "gatehouse: no etcd endpoints: pass --endpoints http://HOST:2379 or set `config_source` in DIR/fleet.yaml"
    );
    // An invalid file is not pushed.
    let (ok, out) = push(
        "routes:\n  - { id: r, paths: [/r], upstream: nowhere }\n",
        &["--endpoints", &endpoint],
    );
    assert!(!ok);
    assert_eq!(
        out,
        "gatehouse: DIR/fleet.yaml: routes[0].upstream: unknown upstream \"nowhere\" (expected the id of an entry in `upstreams`)"
    );
    // A whole gateway file: its node sections are left out; settings from its config_source.
    let full = format!(
        "listeners: [{{ name: main, address: 127.0.0.1:1 }}]\n\
         config_source: {{ type: etcd, endpoints: [\"{endpoint}\"], prefix: /fleet-a }}\n{}",
        doc("v1")
    );
    let (ok, out) = push(&full, &[]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("pushed DIR/fleet.yaml to etcd /fleet-a/config"),
        "{out}"
    );
    assert!(
        out.ends_with("(left out, as each node keeps its own: listeners, config_source)"),
        "{out}"
    );
    let (ok, out) = push(&full, &[]);
    assert!(
        ok && out.starts_with("/fleet-a/config is unchanged"),
        "{out}"
    );

    // `-t` checks the node's file and the document in etcd.
    let node = bootstrap(free_port(), free_port(), &endpoint).replace("/gatehouse", "/fleet-a");
    let (ok, out) = check_config(&node);
    assert!(ok, "{out}");
    let mut c = etcd_client(&etcd).await;
    c.put(
        "/fleet-a/config",
        "routes: [{ id: r, paths: [/r], upstream: gone }]\n",
        None,
    )
    .await
    .unwrap();
    let (ok, out) = check_config(&node);
    assert!(!ok);
    assert_eq!(
        out.lines().last().unwrap(),
        "gatehouse: etcd /fleet-a/config: routes[0].upstream: unknown upstream \"gone\" (expected the id of an entry in `upstreams`)"
    );
    // Shared sections in a node's file are refused rather than silently replaced.
    let (ok, out) = check_config(&format!("{node}{}", doc("x")));
    assert!(!ok);
    assert!(
        out.starts_with(
            "gatehouse: DIR/bad.yaml: routes: comes from etcd when `config_source.type` is etcd"
        ),
        "{out}"
    );
    // etcd unreachable at start: a clear error.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) = check_config(&bootstrap(free_port(), free_port(), &closed));
    assert!(!ok);
    assert!(
        out.starts_with("gatehouse: DIR/bad.yaml: config_source: "),
        "{out}"
    );
}
