//! Micro-benchmarks of the per-request work and of config compilation:
//! router match (10 / 1,000 / 10,000 routes), plugin chain dispatch (0 / 5 / 10 no-op
//! plugins), JWT (RS256) verification through the `jwt-auth` plugin, a local rate-limit
//! check, and compiling a 10,000-route config.
//!
//! `cargo bench --bench micro` (results in target/criterion/).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::FutureExt;
use gatehouse::chain::Chain;
use gatehouse::config::model::Config;
use gatehouse::router::tree::parse_pattern;
use gatehouse::router::{Lookup, RouteKey, Router, Verdict};
use gatehouse::snapshot::Snapshot;
use gatehouse_plugins::testkit::{request, HarnessEnv, PluginHarness};
use gatehouse_plugins::{Consumer, Plugin, PluginRegistry, RequestContext, SharedServices};
use std::path::Path;
use std::sync::Arc;

/// A realistic API surface: `/api/v{n}/resource{i}` exact, `/{id}` params and prefixes.
fn route_patterns(n: usize) -> Vec<(Vec<String>, Vec<gatehouse::router::tree::Pattern>, i32)> {
    (0..n)
        .map(|i| {
            let p = match i % 3 {
                0 => format!("/api/v{}/resource{i}", i % 4),
                1 => format!("/api/v{}/resource{i}/{{id}}", i % 4),
                _ => format!("/api/v{}/resource{i}/*", i % 4),
            };
            (Vec::new(), vec![parse_pattern(&p).unwrap()], 0)
        })
        .collect()
}

fn router_match(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_match");
    for n in [10usize, 1_000, 10_000] {
        let keys = route_patterns(n);
        let router = Router::build(keys.iter().enumerate().map(|(i, (h, p, prio))| RouteKey {
            index: i,
            hosts: h,
            patterns: p,
            priority: *prio,
        }));
        let target = n - 2; // a `{id}` route near the end
        let path = format!("/api/v{}/resource{target}/12345", target % 4);
        g.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, path| {
            b.iter(|| {
                let found =
                    router.lookup("api.example.com", black_box(path), &mut |_| Verdict::Accept);
                assert!(matches!(found, Lookup::Found(_)));
            })
        });
    }
    g.finish();
}

struct Noop(usize);

impl Plugin for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn priority(&self) -> i32 {
        self.0 as i32
    }
}

fn chain_dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("chain_dispatch");
    for n in [0usize, 5, 10] {
        let plugins: Vec<Arc<dyn Plugin>> = (0..n)
            .map(|i| Arc::new(Noop(i)) as Arc<dyn Plugin>)
            .collect();
        let chain = Chain::from_ordered(plugins);
        let mut req = request("GET", "/api/v1/orders").build();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let mut ctx = RequestContext::new();
                for p in chain.request.iter() {
                    let _ = p.request_filter(&mut req, &mut ctx).now_or_never();
                }
                for p in chain.logging.iter() {
                    let _ = p.logging(&req, 200, &mut ctx).now_or_never();
                }
                black_box(&ctx);
            })
        });
    }
    g.finish();
}

fn jwt_verify(c: &mut Criterion) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let public_pem = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    let private_pem = key.private_key_to_pem_pkcs8().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pub_path = dir.path().join("k.pub.pem");
    std::fs::write(&pub_path, &public_pem).unwrap();
    let mut credentials = std::collections::BTreeMap::new();
    credentials.insert(
        "jwt-auth".to_string(),
        serde_json::json!({ "key": "k1", "algorithm": "RS256", "public_key": pub_path.display().to_string() }),
    );
    let env = HarnessEnv {
        consumers: vec![Arc::new(Consumer {
            id: "alice".into(),
            groups: vec![],
            labels: Default::default(),
            credentials,
        })],
        ..HarnessEnv::default()
    };
    let factory = gatehouse_plugins::builtin::auth::jwt_auth::factory();
    let harness =
        || PluginHarness::from_config_with(&factory, serde_json::json!({}), &env).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let signing_key = jsonwebtoken::EncodingKey::from_rsa_pem(&private_pem).unwrap();
    // Distinct tokens (by `jti`), so that each is seen for the first time.
    let bearers: Vec<String> = (0..FRESH_TOKENS)
        .map(|i| {
            let claims = serde_json::json!({ "sub": "alice", "exp": exp, "jti": i });
            let token = jsonwebtoken::encode(&header, &claims, &signing_key).unwrap();
            format!("Bearer {token}")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verify = |h: &mut PluginHarness, bearer: &str| {
        let mut req = request("GET", "/").header("authorization", bearer).build();
        h.ctx.consumer = None;
        let flow = rt.block_on(h.request(&mut req)).unwrap();
        assert!(matches!(flow, gatehouse_plugins::Flow::Continue));
    };
    // A token seen for the first time: the signature and the claims are checked. A fresh
    // plugin instance for every pass over the tokens, so none comes from its cache.
    let mut h = harness();
    let mut i = 0usize;
    c.bench_function("jwt_verify_rs256", |b| {
        b.iter(|| {
            if i == bearers.len() {
                h = harness();
                i = 0;
            }
            verify(&mut h, &bearers[i]);
            i += 1;
        })
    });
    // The same token again: taken from the cache of verified tokens.
    let mut h = harness();
    c.bench_function("jwt_verify_rs256_remembered", |b| {
        b.iter(|| verify(&mut h, &bearers[0]))
    });
}

/// How many distinct tokens `jwt_verify_rs256` cycles through.
const FRESH_TOKENS: usize = 256;

fn rate_limit_check(c: &mut Criterion) {
    let store = gatehouse_plugins::store::LocalStore::new();
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("route:api\nip=10.0.{}.{}", i / 256, i % 256))
        .collect();
    let mut i = 0usize;
    c.bench_function("rate_limit_check_local", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(store.check_now(&keys[i], 1_000_000, std::time::Duration::from_secs(60), 1));
        })
    });
}

fn compile_10k(c: &mut Criterion) {
    let mut yaml =
        String::from("listeners:\n  - { name: main, address: 127.0.0.1:8080 }\nupstreams:\n");
    for u in 0..50 {
        yaml += &format!(
            "  - {{ id: u{u}, nodes: [{{ address: \"127.0.0.1:{}\" }}] }}\n",
            10000 + u
        );
    }
    yaml += "routes:\n";
    for i in 0..10_000 {
        yaml += &format!(
            "  - {{ id: r{i}, hosts: [\"h{}.example.com\"], paths: [\"/api/v{}/res{i}/{{id}}\", \"/api/v{}/res{i}/*\"], methods: [GET, POST], upstream: u{}, plugins: {{ headers: {{ request: {{ set: {{ x-route: r{i} }} }} }} }} }}\n",
            i % 20,
            i % 4,
            i % 4,
            i % 50
        );
    }
    let config: Config = gatehouse::config::parse_yaml(&yaml).unwrap();
    let registry = PluginRegistry::with_builtins();
    let services = SharedServices::new();
    let mut g = c.benchmark_group("config_compile");
    g.sample_size(10);
    g.bench_function("10000_routes", |b| {
        b.iter(|| {
            let s = Snapshot::compile(config.clone(), &registry, Path::new("."), None, &services)
                .unwrap();
            black_box(s.routes.len());
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    router_match,
    chain_dispatch,
    jwt_verify,
    rate_limit_check,
    compile_10k
);
criterion_main!(benches);
