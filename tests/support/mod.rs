//! Shared fixtures for the integration tests: real upstream servers and a real gateway
//! process, all on 127.0.0.1 with ephemeral ports.
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod services;
pub mod upstream;

pub use gateway::{check_config, GatewayProcess};
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
