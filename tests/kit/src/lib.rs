//! Integration-test helpers for Gatehouse and for gateways built on it: start a real gateway
//! binary on a config, real upstream servers, and talk HTTP to them, all on 127.0.0.1 with
//! ephemeral ports. Plugin unit tests need none of this: see
//! `gatehouse_plugins::testkit` for running hooks without sockets.
//!
//! ```no_run
//! use gatehouse_testkit::{client, free_port, EchoUpstream, GatewayProcess};
//!
//! # async fn demo() {
//! let upstream = EchoUpstream::start("backend").await;
//! let port = free_port();
//! let yaml = format!(
//!     "listeners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\n\
//!      upstreams:\n  - {{ id: u, nodes: [{{ address: \"{}\" }}] }}\n\
//!      routes:\n  - {{ id: r, paths: [\"/*\"], upstream: u }}\n",
//!     upstream.addr
//! );
//! // In an integration test of your own binary: env!("CARGO_BIN_EXE_<name>").
//! let gateway = GatewayProcess::start_binary("target/debug/gatehouse", &yaml, port);
//! let body = client().get(format!("http://127.0.0.1:{port}/hi")).send().await.unwrap().text().await.unwrap();
//! assert!(body.contains("\"uri\":\"/hi\""));
//! # drop(gateway);
//! # }
//! ```

pub mod gateway;
pub mod upstream;

pub use gateway::{
    binary, cargo_bin, check_config, check_config_with, wait_for_tcp, GatewayProcess,
};
pub use upstream::EchoUpstream;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP client for tests: no proxy from the environment, short timeouts, no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}
