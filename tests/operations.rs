//! Operations on a running gateway: hot reload (file change, SIGHUP, admin API), bad configs
//! refused with the old one kept, the admin API, reloads and a binary upgrade under load with
//! zero failed requests, and graceful shutdown.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{client, free_port, EchoUpstream, GatewayProcess};

fn mock_config(port: u16, body: &str) -> String {
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         routes:\n  - {{ id: hello, paths: [/hello], plugins: {{ mock: {{ body: {body} }} }} }}\n"
    )
}

async fn body_of(port: u16, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn wait_for_body(port: u16, path: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if body_of(port, path).await.1 == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} did not answer {want:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_change_is_applied_within_a_second_and_bad_config_is_refused() {
    let port = free_port();
    let gw = GatewayProcess::start(&mock_config(port, "v1"), port);
    assert_eq!(body_of(port, "/hello").await, (200, "v1".into()));

    gw.write_config(&mock_config(port, "v2"));
    let took = wait_for_body(port, "/hello", "v2", Duration::from_secs(3)).await;
    assert!(took < Duration::from_millis(1500), "reload took {took:?}");

    // A broken file is refused: v2 keeps serving, and the log says why.
    gw.write_config(&format!(
        "{}  - {{ id: broken, paths: [nope] }}\n",
        mock_config(port, "v3")
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(body_of(port, "/hello").await, (200, "v2".into()));
    let log = gw.log();
    assert!(
        log.contains("config reload (file change) refused, the running config stays")
            && log.contains("routes[1].paths[0]: `nope` must start with `/`"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_when_watching_is_off() {
    let port = free_port();
    let gw = GatewayProcess::start_with_args(&mock_config(port, "v1"), port, &["--no-watch"]);
    gw.write_config(&mock_config(port, "v2"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        body_of(port, "/hello").await.1,
        "v1",
        "reloaded without SIGHUP"
    );
    gw.signal("HUP");
    wait_for_body(port, "/hello", "v2", Duration::from_secs(3)).await;
}

fn admin_config(port: u16, admin_port: u16, upstream: &str) -> String {
    format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         admin: {{ address: 127.0.0.1:{admin_port}, api_key: s3cret }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{upstream}\" }}] }}\n\
         routes:\n  - {{ id: hello, paths: [/hello], plugins: {{ mock: {{ body: v1 }} }} }}\n"
    )
}

/// Changes sent at the same moment are applied one after the other, each to the config the
/// previous one left: none is lost, in the live config or in the file.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_admin_changes_are_all_kept() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let admin_port = free_port();
    let gw = GatewayProcess::start(&admin_config(port, admin_port, &up.addr.to_string()), port);
    support::gateway::wait_for_tcp(admin_port).await;
    let c = client();
    let url = format!("http://127.0.0.1:{admin_port}/consumers");
    let posts = (0..20).map(|i| {
        c.post(&url)
            .header("x-api-key", "s3cret")
            .json(&serde_json::json!({ "id": format!("c{i}") }))
            .send()
    });
    for r in futures_util::future::join_all(posts).await {
        assert_eq!(r.unwrap().status(), 201);
    }
    let listed: Vec<serde_json::Value> = c
        .get(&url)
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed.iter().filter_map(|c| c["id"].as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let saved = std::fs::read_to_string(&gw.config_path).unwrap();
    for id in &expected {
        assert!(saved.contains(&format!("id: {id}\n")), "{id} not saved");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_crud_validation_and_persistence() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let admin_port = free_port();
    let gw = GatewayProcess::start(&admin_config(port, admin_port, &up.addr.to_string()), port);
    support::gateway::wait_for_tcp(admin_port).await;
    let c = client();
    let admin = |path: &str| format!("http://127.0.0.1:{admin_port}{path}");

    // Health and readiness need no key; everything else does.
    assert_eq!(c.get(admin("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(admin("/readyz")).send().await.unwrap().status(), 200);
    let r = c.get(admin("/config")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(admin("/config"))
        .header("x-api-key", "wrong!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(admin("/config"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cfg: serde_json::Value = r.json().await.unwrap();
    assert_eq!(cfg["routes"][0]["id"], "hello");
    // The admin key itself is never shown.
    assert_eq!(cfg["admin"]["api_key"], "<redacted>");

    // Create a proxied route: traffic follows at once.
    let r = c
        .post(admin("/routes"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"id": "api", "paths": ["/api/*"], "upstream": "u", "strip_prefix": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = c
        .get(format!("http://127.0.0.1:{port}/api/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["uri"], "/x");

    // Same id again: 409. Invalid object: 400 with the key path; nothing applied.
    let r = c
        .post(admin("/routes"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"id": "api", "paths": ["/other"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = c
        .put(admin("/routes/bad"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"paths": ["/bad"], "upstream": "missing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        e["error"],
        "routes[2].upstream: unknown upstream \"missing\" (expected the id of an entry in `upstreams`)"
    );
    let r = c
        .put(admin("/routes/typo"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"paths": ["/t"], "plugins": {"mock": {"stauts": 200}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("routes[2].plugins.mock.stauts: unknown field `stauts`"),
        "{e}"
    );
    assert_eq!(body_of(port, "/bad").await.0, 404);

    // Replace and delete.
    let r = c
        .put(admin("/routes/hello"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"paths": ["/hello"], "plugins": {"mock": {"body": "v2"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_of(port, "/hello").await.1, "v2");
    // Deleting an upstream still in use is refused by validation.
    let r = c
        .delete(admin("/upstreams/u"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .delete(admin("/routes/api"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(body_of(port, "/api/x").await.0, 404);
    let r = c
        .get(admin("/routes/api"))
        .header("x-api-key", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The change was saved to the file: a fresh gateway on it serves v2.
    let saved = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(saved.contains("v2"), "{saved}");
    let (ok, out) = support::check_config(&saved);
    assert!(ok, "{out}");

    // A read-only config file: the change is refused, nothing applied.
    let mut perms = std::fs::metadata(gw.dir.path()).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    let original = perms.mode();
    perms.set_mode(0o555);
    std::fs::set_permissions(gw.dir.path(), perms.clone()).unwrap();
    let writable_by_root = std::fs::File::create(gw.dir.path().join("probe")).is_ok();
    if !writable_by_root {
        let r = c
            .put(admin("/routes/hello"))
            .header("x-api-key", "s3cret")
            .json(&serde_json::json!({"paths": ["/hello"], "plugins": {"mock": {"body": "v3"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(body_of(port, "/hello").await.1, "v2");
    }
    perms.set_mode(original);
    std::fs::set_permissions(gw.dir.path(), perms).unwrap();
    let _ = std::fs::remove_file(gw.dir.path().join("probe"));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_refuses_unsaveable_change_and_serves_openapi() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let admin_port = free_port();
    let gw = GatewayProcess::start(&admin_config(port, admin_port, &up.addr.to_string()), port);
    support::gateway::wait_for_tcp(admin_port).await;
    let c = client();
    // The config path replaced by a directory cannot be written by anyone, root included.
    std::fs::remove_file(&gw.config_path).unwrap();
    std::fs::create_dir(&gw.config_path).unwrap();
    let r = c
        .put(format!("http://127.0.0.1:{admin_port}/routes/hello"))
        .header("x-api-key", "s3cret")
        .json(&serde_json::json!({"paths": ["/hello"], "plugins": {"mock": {"body": "v3"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("cannot be written"),
        "{e}"
    );
    assert_eq!(body_of(port, "/hello").await.1, "v1");
    let r = c
        .get(format!("http://127.0.0.1:{admin_port}/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spec: serde_yaml::Value = serde_yaml::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(spec["openapi"].as_str(), Some("3.0.3"));
    std::fs::remove_dir(&gw.config_path).unwrap();
}

/// Sends requests in a loop on `concurrency` tasks until stopped; counts successes and
/// failures (anything but a 200).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(port: u16, path: &'static str, concurrency: usize, keepalive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let mut b = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10));
            if !keepalive {
                b = b.pool_max_idle_per_host(0);
            }
            let c = b.build().unwrap();
            tasks.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match c.get(format!("http://127.0.0.1:{port}{path}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("status {}", r.status()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.push(format!("{e:?}"));
                        }
                    }
                }
                errors
            }));
        }
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_reloads_under_load_drop_nothing() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let config = |n: usize| {
        format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
             upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ id: r, paths: [\"/*\"], upstream: u, plugins: {{ headers: {{ request: {{ set: {{ x-generation: \"{n}\" }} }} }} }} }}\n",
            up.addr
        )
    };
    let gw = GatewayProcess::start(&config(0), port);
    let load = Load::start(port, "/load", 4, true);
    for n in 1..=20 {
        gw.write_config(&config(n));
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = load.finish().await;
    assert_eq!(
        failed,
        0,
        "{failed} failed of {}: {:?}",
        ok + failed,
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests went through");
    let v: serde_json::Value = client()
        .get(format!("http://127.0.0.1:{port}/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-generation"], "20");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_upgrade_under_load_drops_nothing() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let yaml = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: r, paths: [\"/*\"], upstream: u }}\n",
        up.addr
    );
    let mut old = GatewayProcess::start(&yaml, port);
    let load = Load::start(port, "/load", 4, false);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits on the upgrade socket; SIGQUIT makes the old one hand over its
    // listening sockets and drain.
    let log = std::fs::File::create(old.dir.path().join("new.log")).unwrap();
    let mut new = std::process::Command::new(support::gateway::binary())
        .arg("-u")
        .arg("-c")
        .arg(&old.config_path)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let mut old_child = old.take_child().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while old_child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the old process did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, errors) = load.finish().await;
    let new_log = std::fs::read_to_string(old.dir.path().join("new.log")).unwrap_or_default();
    assert_eq!(
        failed,
        0,
        "{failed} failed of {}: {:?}\n{new_log}",
        ok + failed,
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests went through");
    // The new process serves, under a new pid.
    assert_eq!(body_of(port, "/after").await.0, 200);
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process exited:\n{new_log}"
    );
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(new.id().to_string())
        .status();
    let _ = new.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish() {
    let up = EchoUpstream::start("u").await;
    let port = free_port();
    let yaml = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ id: r, paths: [\"/*\"], upstream: u }}\n",
        up.addr
    );
    let gw = GatewayProcess::start(&yaml, port);
    let slow = tokio::spawn(async move { body_of(port, "/delay/800").await.0 });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    assert_eq!(slow.await.unwrap(), 200);
}
