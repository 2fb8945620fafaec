//! The custom gateway binary, end to end: tenants reach their own upstreams, config errors of
//! the custom plugin are reported like the built-ins'.

use gatehouse_testkit::{check_config_with, client, free_port, EchoUpstream, GatewayProcess};

const BIN: &str = env!("CARGO_BIN_EXE_tenant-gateway");

#[tokio::test(flavor = "multi_thread")]
async fn tenants_reach_their_upstreams() {
    let acme = EchoUpstream::start("acme").await;
    let shared = EchoUpstream::start("shared").await;
    let port = free_port();
    let yaml = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
         upstreams:\n  - {{ id: acme-up, nodes: [{{ address: \"{}\" }}] }}\n  - {{ id: shared, nodes: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - id: api\n    paths: [\"/*\"]\n    upstream: shared\n    plugins:\n      tenant-router: {{ tenants: {{ acme: acme-up }} }}\n",
        acme.addr, shared.addr
    );
    let _gw = GatewayProcess::start_binary(BIN, &yaml, port);
    let c = client();
    let node = |tenant: Option<&'static str>| {
        let c = c.clone();
        async move {
            let mut req = c.get(format!("http://127.0.0.1:{port}/orders"));
            if let Some(t) = tenant {
                req = req.header("x-tenant", t);
            }
            let r = req.send().await.unwrap();
            r.headers()["x-upstream-node"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(node(Some("acme")).await, "acme");
    assert_eq!(node(Some("initech")).await, "shared");
    assert_eq!(node(None).await, "shared");
}

#[test]
fn custom_plugin_config_errors_name_the_key() {
    let yaml = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\n\
                routes:\n  - { id: api, paths: [/], plugins: { tenant-router: { tenants: { acme: nowhere } } } }\n";
    let (ok, out) = check_config_with(BIN, yaml);
    assert!(!ok);
    assert_eq!(
        out,
        "gatehouse: DIR/bad.yaml: routes[0].plugins.tenant-router.tenants.acme: unknown upstream \"nowhere\""
    );
}
