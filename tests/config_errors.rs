//! Bad configs are refused before anything is applied, with the file, the key path and what
//! was expected. Each case checks the whole message of `gatehouse -t -c FILE`.

mod support;

use support::check_config;

const LISTENER: &str = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\n";

fn refused(yaml: &str, expected: &str) {
    let (ok, out) = check_config(yaml);
    assert!(!ok, "config was accepted:\n{yaml}");
    assert_eq!(
        out,
        format!("gatehouse: DIR/bad.yaml: {expected}"),
        "config:\n{yaml}"
    );
}

#[test]
fn valid_config_passes() {
    let (ok, out) = check_config(&format!(
        "{LISTENER}routes:\n  - {{ id: a, paths: [/], plugins: {{ mock: {{ body: hi }} }} }}\n"
    ));
    assert!(ok, "{out}");
    assert_eq!(out, "DIR/bad.yaml: the configuration is valid");
}

#[test]
fn shipped_default_config_is_valid() {
    let out = std::process::Command::new(support::gateway::binary())
        .args(["-t", "-c", "conf/gatehouse.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn yaml_syntax_error() {
    refused(
        "routes: [ {id: a\n",
        "invalid YAML: did not find expected ',' or '}' at line 2 column 1, while parsing a flow mapping at line 1 column 11",
    );
}

#[test]
fn unknown_key() {
    refused(
        &format!("{LISTENER}routes:\n  - id: a\n    paths: [/]\n    upstrem: x\n"),
        "routes[0].upstrem: unknown field `upstrem`, expected one of `id`, `hosts`, `paths`, `methods`, `headers`, `priority`, `service`, `upstream`, `strip_prefix`, `plugins` at line 6 column 5",
    );
}

#[test]
fn unknown_server_key() {
    refused(
        &format!("server: {{ threadz: 2 }}\n{LISTENER}"),
        "server.threadz: unknown key (the server section takes Pingora's ServerConf keys: threads, work_stealing, pid_file, upgrade_sock, grace_period_seconds, graceful_shutdown_timeout_seconds, ...)",
    );
}

#[test]
fn duplicate_id() {
    refused(
        &format!("{LISTENER}upstreams:\n  - {{ id: a, nodes: [{{address: '127.0.0.1:1'}}] }}\n  - {{ id: a, nodes: [{{address: '127.0.0.1:2'}}] }}\n"),
        "upstreams[1].id: duplicate upstream id \"a\"",
    );
}

#[test]
fn dangling_upstream_reference() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], upstream: users-v2 }}\n"),
        "routes[0].upstream: unknown upstream \"users-v2\" (expected the id of an entry in `upstreams`)",
    );
}

#[test]
fn dangling_service_reference() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], service: nope }}\n"),
        "routes[0].service: unknown service \"nope\" (expected the id of an entry in `services`)",
    );
}

#[test]
fn bad_node_address() {
    refused(
        &format!("{LISTENER}upstreams:\n  - {{ id: a, nodes: [{{address: '127.0.0.1'}}] }}\n"),
        "upstreams[0].nodes[0].address: `127.0.0.1` has no port; expected `IP:port` or `hostname:port`",
    );
}

#[test]
fn bad_listener_address() {
    refused(
        "listeners:\n  - { name: main, address: 'localhost' }\n",
        "listeners[0].address: `localhost` is not an address; expected `IP:port`, e.g. `0.0.0.0:8080`",
    );
}

#[test]
fn bad_regex() {
    refused(
        &format!("{LISTENER}routes:\n  - id: a\n    paths: [/]\n    headers: [{{ name: x, regex: '(' }}]\n    plugins: {{ mock: {{}} }}\n"),
        "routes[0].headers[0].regex: invalid regex: unclosed group",
    );
}

#[test]
fn unknown_plugin() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], plugins: {{ key-auht: {{}} }} }}\n"),
        "routes[0].plugins.key-auht: unknown plugin \"key-auht\" (did you mean \"key-auth\"?)",
    );
}

#[test]
fn bad_plugin_config() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], plugins: {{ mock: {{ status: 'teapot' }} }} }}\n"),
        "routes[0].plugins.mock.status: invalid type: string \"teapot\", expected u16",
    );
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], plugins: {{ headers: {{ request: {{ set: {{ 'bad name': x }} }} }} }} }}\n"),
        "routes[0].plugins.headers.request.set.bad name: `bad name` is not a valid header name",
    );
}

#[test]
fn bad_path_pattern() {
    refused(
        &format!(
            "{LISTENER}routes:\n  - {{ id: a, paths: ['/a/*/b'], plugins: {{ mock: {{}} }} }}\n"
        ),
        "routes[0].paths[0]: `/a/*/b`: `*` is only allowed as the last segment (`/prefix/*`)",
    );
}

#[test]
fn bad_enum_value() {
    refused(
        &format!("{LISTENER}upstreams:\n  - {{ id: a, balance: fastest, nodes: [{{address: '127.0.0.1:1'}}] }}\n"),
        "upstreams[0].balance: unknown variant `fastest`, expected one of `round_robin`, `consistent_hash`, `random`, `least_conn` at line 4 column 23",
    );
}

#[test]
fn bad_method() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a, paths: [/], methods: [FETCH], plugins: {{ mock: {{}} }} }}\n"),
        "routes[0].methods[0]: unknown method `FETCH`; expected one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT, TRACE, PURGE",
    );
}

#[test]
fn https_listener_without_certificates() {
    refused(
        "listeners:\n  - { name: main, address: '127.0.0.1:8443', protocol: https }\n",
        "listeners[0].tls.certificates: an https listener needs a certificate: list one here or in the top-level `certificates`",
    );
    refused(
        "listeners:\n  - { name: main, address: '127.0.0.1:8443', protocol: https }\ncertificates:\n  - { id: a, cert: /nope.pem, key: /nope.key }\n  - { id: a, cert: /nope.pem, key: /nope.key }\n",
        "certificates[1].id: duplicate certificate id \"a\"",
    );
    refused(
        "listeners:\n  - { name: main, address: '127.0.0.1:8443', protocol: https }\ncertificates:\n  - { id: a, cert: /nope.pem, key: /nope.key }\n",
        "certificates[0]: cannot read /nope.pem: No such file or directory (os error 2)",
    );
    refused(
        "listeners:\n  - { name: main, address: '127.0.0.1:8443', protocol: https, tls: { certificates: [{cert: /nope.pem, key: /nope.key}] } }\n",
        "listeners[0].tls.certificates[0]: cannot read /nope.pem: No such file or directory (os error 2)",
    );
}

#[test]
fn unset_environment_variable() {
    refused(
        &format!("{LISTENER}admin: {{ address: '127.0.0.1:9180', api_key: '${{GH_SURELY_UNSET_KEY}}' }}\n"),
        "environment variable `GH_SURELY_UNSET_KEY` is not set (used as `${GH_SURELY_UNSET_KEY}`)",
    );
}

#[test]
fn missing_required_key() {
    refused(
        &format!("{LISTENER}routes:\n  - {{ id: a }}\n"),
        "routes[0]: missing field `paths` at line 4 column 5",
    );
}

#[test]
fn bad_health_check_and_hash_settings() {
    refused(
        &format!("{LISTENER}upstreams:\n  - {{ id: a, balance: consistent_hash, hash_on: body, nodes: [{{address: '127.0.0.1:1'}}] }}\n"),
        "upstreams[0].hash_on: `body` is not a hash key; expected `client_ip`, `header:NAME`, `cookie:NAME` or `path`",
    );
    refused(
        &format!("{LISTENER}upstreams:\n  - id: a\n    nodes: [{{address: '127.0.0.1:1'}}]\n    health_check: {{ active: {{ path: /h, statuses: [700] }} }}\n"),
        "upstreams[0].health_check.active.statuses: expected a non-empty list of HTTP statuses (100-599)",
    );
    refused(
        &format!("{LISTENER}upstreams:\n  - {{ id: a, timeouts: {{ connect: 2 }}, nodes: [{{address: '127.0.0.1:1'}}] }}\n"),
        "upstreams[0].timeouts.connect: a bare number (2) is ambiguous; write a unit, e.g. `2s` or `2ms` at line 4 column 35",
    );
}
