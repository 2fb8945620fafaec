//! The Gatehouse plugin SDK and the built-in plugins.
//!
//! A plugin is a Rust type implementing [`Plugin`]. The engine builds one instance per
//! configured scope when a config is loaded (through a [`PluginFactory`] found in the
//! [`PluginRegistry`]) and runs the instances of a route's chain, highest priority first,
//! at each phase of a request:
//!
//! ```text
//!  client ──► request_filter ──► upstream_peer ──► upstream_request_filter ──► request_body_filter ──► upstream
//!                 │ (Flow::Respond: the plugin answers;          (the body streams to the upstream       │
//!                 │  later request phases are skipped)            after its headers were sent)           ▼
//!  client ◄── response_body_filter ◄── response_filter ◄──────────────────────────────────────────── response
//!                                           │
//!                                       logging (always, once, also for answered and failed requests)
//! ```
//!
//! Ownership, from longest to shortest lived:
//!
//! ```text
//! PluginRegistry ── owns ──► PluginFactory (one per plugin name)
//!        │ build(config) at every config load
//!        ▼
//! Arc<dyn Plugin> (one per scope where it is configured; holds counters, key indexes, regexes)
//!        │ shared by every request on that route
//!        ▼
//! RequestContext (one per request: route, consumer, request id, typed per-plugin state)
//! ```
//!
//! Plugins see only this crate's types and the HTTP header types re-exported below, never the
//! engine's internals, so a plugin runs unchanged in the gateway and in the [`testkit`].

pub mod builtin;
pub mod cache_policy;
pub mod context;
pub mod factory;
pub mod plugin;
pub mod response;
pub mod services;
pub mod store;
pub mod testkit;
pub mod units;

pub use bytes::Bytes;
pub use context::{Consumer, RequestContext};
pub use factory::{
    parse_config, BuildEnv, ConfigError, PluginFactory, PluginRegistry, TypedFactory,
};
pub use pingora_error::{Error, ErrorType, Result};
pub use pingora_http::{RequestHeader, ResponseHeader};
pub use plugin::{Flow, Phases, Plugin};
pub use response::PluginResponse;
pub use services::SharedServices;
pub use store::{Decision, LocalStore, Permit, RateLimitStore, StoreError};
