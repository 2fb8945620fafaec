//! Shared fixtures for the integration tests: the public test kit (`gatehouse-testkit`,
//! which plugin authors use too) plus the services some features need.
#![allow(dead_code, unused_imports)]

pub mod bearer;
pub mod services;

pub use gatehouse_testkit::{
    check_config, client, free_port, gateway, upstream, EchoUpstream, GatewayProcess,
};
