//! `circuit-breaker`: stop sending requests to an upstream that keeps failing, answer 503 at
//! once instead, and let a few probe requests through after a pause to find out whether it
//! recovered.
//!
//! ```text
//!            `failures` consecutive failures
//!  Closed ─────────────────────────────────────► Open ──(`open_for` passed)──► HalfOpen
//!    ▲                                            ▲                               │
//!    │ `half_open_requests` probes succeeded      │ a probe failed                │
//!    └────────────────────────────────────────────┴───────────────────────────────┘
//! ```
//!
//! Each route the instance runs on has its own circuit. Outcomes are read in `logging`, for
//! requests the breaker let through and that went on to the upstream: a request answered by
//! a later plugin (a 429 from `rate-limit`) says nothing about the upstream and is ignored.

use crate::context::RequestContext;
use crate::factory::{ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use crate::response::PluginResponse;
use crate::units::Duration;
use async_trait::async_trait;
use dashmap::DashMap;
use http::header::{HeaderValue, RETRY_AFTER};
use pingora_error::Result;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Config of `circuit-breaker`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit (default 5).
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Response statuses that count as failures (default `[500, 502, 503, 504]`). A request
    /// that got no response at all, and the gateway's own 502 and 504 (the upstream could
    /// not be reached or did not answer in time), always count.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// How long the circuit stays open before probes are let through (default `30s`).
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
    /// Probe requests let through while half-open; all must succeed to close (default 1).
    #[serde(default = "default_half_open_requests")]
    pub half_open_requests: u32,
}

fn default_failures() -> u32 {
    5
}

fn default_statuses() -> Vec<u16> {
    vec![500, 502, 503, 504]
}

fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

fn default_half_open_requests() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// The request never reached the upstream.
    Unknown,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Bumped at every change of phase: outcomes of requests admitted under an earlier
    /// phase are ignored.
    generation: u64,
    /// Consecutive failures while closed.
    failures: u32,
    open_until: Instant,
    /// Probes let through while half-open, and how many of them succeeded.
    probes: u32,
    probe_successes: u32,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    failures: u32,
    open_for: std::time::Duration,
    half_open_requests: u32,
}

/// One route's circuit.
#[derive(Debug)]
struct Circuit {
    state: Mutex<State>,
}

enum Admission {
    Pass { generation: u64 },
    Refuse { retry_after: std::time::Duration },
}

impl Circuit {
    fn new() -> Self {
        Circuit {
            state: Mutex::new(State {
                phase: Phase::Closed,
                generation: 0,
                failures: 0,
                open_until: Instant::now(),
                probes: 0,
                probe_successes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self, s: &Settings, now: Instant) -> Admission {
        let mut st = self.lock();
        if st.phase == Phase::Open {
            if now < st.open_until {
                return Admission::Refuse {
                    retry_after: st.open_until - now,
                };
            }
            st.phase = Phase::HalfOpen;
            st.generation += 1;
            st.probes = 0;
            st.probe_successes = 0;
        }
        match st.phase {
            Phase::HalfOpen if st.probes >= s.half_open_requests => Admission::Refuse {
                retry_after: std::time::Duration::from_secs(1),
            },
            Phase::HalfOpen => {
                st.probes += 1;
                Admission::Pass {
                    generation: st.generation,
                }
            }
            _ => Admission::Pass {
                generation: st.generation,
            },
        }
    }

    fn record(&self, s: &Settings, generation: u64, outcome: Outcome, now: Instant) {
        let mut st = self.lock();
        if st.generation != generation {
            return;
        }
        let open = |st: &mut State| {
            st.phase = Phase::Open;
            st.generation += 1;
            st.open_until = now + s.open_for;
            st.failures = 0;
        };
        match (st.phase, outcome) {
            (Phase::Closed, Outcome::Success) => st.failures = 0,
            (Phase::Closed, Outcome::Failure) => {
                st.failures += 1;
                if st.failures >= s.failures {
                    open(&mut st);
                }
            }
            (Phase::HalfOpen, Outcome::Failure) => open(&mut st),
            (Phase::HalfOpen, Outcome::Success) => {
                st.probe_successes += 1;
                if st.probe_successes >= s.half_open_requests {
                    st.phase = Phase::Closed;
                    st.generation += 1;
                    st.failures = 0;
                }
            }
            // The probe told nothing: its place goes to the next request.
            (Phase::HalfOpen, Outcome::Unknown) => st.probes = st.probes.saturating_sub(1),
            _ => {}
        }
    }
}

/// The `circuit-breaker` plugin.
pub struct CircuitBreaker {
    settings: Settings,
    statuses: Box<[u16]>,
    circuits: DashMap<Arc<str>, Arc<Circuit>>,
}

/// Priority of `circuit-breaker`: after `limit-conn`, before `rate-limit`.
pub const PRIORITY: i32 = 1002;

/// The factory for `circuit-breaker`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new(
        "circuit-breaker",
        PRIORITY,
        |c: CircuitBreakerConfig, _env| CircuitBreaker::new(c),
    )
}

impl CircuitBreaker {
    /// Builds the plugin from its config.
    pub fn new(c: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        if c.failures == 0 {
            return Err(ConfigError::at("failures", "must be at least 1"));
        }
        if c.half_open_requests == 0 {
            return Err(ConfigError::at("half_open_requests", "must be at least 1"));
        }
        if c.open_for.get().is_zero() {
            return Err(ConfigError::at(
                "open_for",
                "must be longer than 0, e.g. `10s`",
            ));
        }
        if c.statuses.is_empty() {
            return Err(ConfigError::at(
                "statuses",
                "the list is empty; expected statuses that count as failures, e.g. [500, 502, 503, 504]",
            ));
        }
        for (i, s) in c.statuses.iter().enumerate() {
            if !(400..=599).contains(s) {
                return Err(ConfigError::at(
                    format!("statuses[{i}]"),
                    format!("{s} is not an error status (400-599)"),
                ));
            }
        }
        Ok(CircuitBreaker {
            settings: Settings {
                failures: c.failures,
                open_for: c.open_for.get(),
                half_open_requests: c.half_open_requests,
            },
            statuses: c.statuses.into(),
            circuits: DashMap::new(),
        })
    }

    fn circuit(&self, route: &Option<Arc<str>>) -> Arc<Circuit> {
        let id: &str = route.as_deref().unwrap_or("");
        if let Some(c) = self.circuits.get(id) {
            return c.clone();
        }
        self.circuits
            .entry(route.clone().unwrap_or_else(|| Arc::from("")))
            .or_insert_with(|| Arc::new(Circuit::new()))
            .clone()
    }

    fn outcome(&self, status: u16, proxied: bool) -> Outcome {
        if status == 0 || status == 502 || status == 504 {
            // No response reached the client, or the gateway could not get one.
            return if proxied {
                Outcome::Failure
            } else {
                Outcome::Unknown
            };
        }
        if !proxied {
            Outcome::Unknown
        } else if self.statuses.contains(&status) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

/// A request the breaker let through, until its outcome is recorded. If the request ends
/// without `logging`, dropping the context records "unknown", which frees a probe's place.
struct Ticket {
    circuit: Arc<Circuit>,
    settings: Settings,
    generation: u64,
    proxied: AtomicBool,
    settled: AtomicBool,
}

impl Ticket {
    fn settle(&self, outcome: Outcome) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.circuit
                .record(&self.settings, self.generation, outcome, Instant::now());
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settle(Outcome::Unknown);
    }
}

#[derive(Clone)]
struct Admitted(Arc<Ticket>);

#[async_trait]
impl Plugin for CircuitBreaker {
    fn name(&self) -> &str {
        "circuit-breaker"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::UPSTREAM_PEER | Phases::LOGGING
    }

    async fn request_filter(
        &self,
        _req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        let circuit = self.circuit(&ctx.route_id);
        match circuit.admit(&self.settings, Instant::now()) {
            Admission::Pass { generation } => {
                ctx.set_state(Admitted(Arc::new(Ticket {
                    circuit,
                    settings: self.settings,
                    generation,
                    proxied: AtomicBool::new(false),
                    settled: AtomicBool::new(false),
                })));
                Ok(Flow::Continue)
            }
            Admission::Refuse { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                Ok(Flow::Respond(
                    PluginResponse::error(503, "circuit open")
                        .with_header(RETRY_AFTER, HeaderValue::from(secs.max(1))),
                ))
            }
        }
    }

    async fn upstream_peer(&self, _req: &RequestHeader, ctx: &mut RequestContext) -> Result<()> {
        if let Some(Admitted(t)) = ctx.state::<Admitted>() {
            t.proxied.store(true, Ordering::Release);
        }
        Ok(())
    }

    async fn logging(&self, _req: &RequestHeader, status: u16, ctx: &mut RequestContext) {
        if let Some(Admitted(t)) = ctx.take_state::<Admitted>() {
            t.settle(self.outcome(status, t.proxied.load(Ordering::Acquire)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, PluginHarness};
    use serde_json::json;

    fn breaker(config: serde_json::Value) -> Arc<dyn Plugin> {
        PluginHarness::from_config(&factory(), config)
            .unwrap()
            .plugin
    }

    /// Runs one request through the breaker; `status` None means a later plugin answered
    /// (the upstream was never asked). Returns the breaker's own answer, if it gave one.
    async fn run(p: &Arc<dyn Plugin>, route: &str, status: Option<u16>) -> Option<PluginResponse> {
        let mut h = PluginHarness::new(p.clone());
        h.ctx.route_id = Some(Arc::from(route));
        let mut req = request("GET", "/").build();
        if let Flow::Respond(r) = h.request(&mut req).await.unwrap() {
            h.logging(&req, r.status).await;
            return Some(r);
        }
        match status {
            Some(s) => {
                h.upstream_peer(&req).await.unwrap();
                h.logging(&req, s).await;
            }
            None => h.logging(&req, 429).await,
        }
        None
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_only() {
        let p = breaker(json!({"failures": 3, "open_for": "1m"}));
        assert!(run(&p, "r", Some(500)).await.is_none());
        assert!(run(&p, "r", Some(502)).await.is_none());
        assert!(
            run(&p, "r", Some(200)).await.is_none(),
            "a success resets the count"
        );
        assert!(run(&p, "r", Some(503)).await.is_none());
        assert!(
            run(&p, "r", Some(404)).await.is_none(),
            "404 is not a failure"
        );
        assert!(run(&p, "r", Some(500)).await.is_none());
        assert!(run(&p, "r", Some(0)).await.is_none());
        assert!(run(&p, "r", None).await.is_none(), "not proxied: ignored");
        assert!(run(&p, "r", Some(504)).await.is_none());
        let r = run(&p, "r", Some(200)).await.expect("open now");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type").unwrap(), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, json!({"error": "circuit open", "status": 503}));
        let retry: u64 = r
            .header("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        // Other routes have their own circuit.
        assert!(run(&p, "other", Some(200)).await.is_none());
    }

    #[tokio::test]
    async fn half_open_probe_failure_reopens_and_success_closes() {
        let p = breaker(json!({"failures": 1, "open_for": "30ms"}));
        assert!(run(&p, "r", Some(500)).await.is_none());
        assert!(run(&p, "r", Some(200)).await.is_some(), "open");
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        assert!(
            run(&p, "r", Some(500)).await.is_none(),
            "the probe goes through"
        );
        assert!(run(&p, "r", Some(200)).await.is_some(), "re-opened");
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        assert!(run(&p, "r", Some(200)).await.is_none(), "probe");
        for _ in 0..3 {
            assert!(run(&p, "r", Some(200)).await.is_none(), "closed");
        }
    }

    #[tokio::test]
    async fn half_open_admits_only_the_probes() {
        let p = breaker(json!({"failures": 1, "open_for": "20ms", "half_open_requests": 2}));
        assert!(run(&p, "r", Some(500)).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let mut probes: Vec<PluginHarness> = Vec::new();
        for _ in 0..2 {
            let mut h = PluginHarness::new(p.clone());
            h.ctx.route_id = Some(Arc::from("r"));
            let flow = h.request(&mut request("GET", "/").build()).await.unwrap();
            assert!(matches!(flow, Flow::Continue));
            probes.push(h);
        }
        let r = run(&p, "r", Some(200)).await.expect("no third probe");
        assert_eq!(r.header("retry-after").unwrap(), "1");
        // A probe that never reached the upstream gives its place back.
        let mut first = probes.remove(0);
        first.logging(&request("GET", "/").build(), 429).await;
        assert!(
            run(&p, "r", Some(200)).await.is_none(),
            "took the freed place"
        );
        // One success of two is not enough to close.
        let mut second = probes.remove(0);
        let req = request("GET", "/").build();
        second.upstream_peer(&req).await.unwrap();
        second.logging(&req, 200).await;
        assert!(
            run(&p, "r", Some(200)).await.is_none(),
            "closed after 2 successes"
        );
        assert!(run(&p, "r", Some(200)).await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_probe_frees_its_place() {
        let p = breaker(json!({"failures": 1, "open_for": "20ms"}));
        assert!(run(&p, "r", Some(500)).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let mut h = PluginHarness::new(p.clone());
        h.ctx.route_id = Some(Arc::from("r"));
        let flow = h.request(&mut request("GET", "/").build()).await.unwrap();
        assert!(matches!(flow, Flow::Continue));
        assert!(run(&p, "r", Some(200)).await.is_some(), "probe in flight");
        drop(h);
        assert!(
            run(&p, "r", Some(200)).await.is_none(),
            "a new probe went through"
        );
    }

    #[tokio::test]
    async fn late_outcomes_from_before_opening_are_ignored() {
        let p = breaker(json!({"failures": 1, "open_for": "20ms"}));
        let mut slow = PluginHarness::new(p.clone());
        slow.ctx.route_id = Some(Arc::from("r"));
        let req = request("GET", "/").build();
        assert!(matches!(
            slow.request(&mut req.clone()).await.unwrap(),
            Flow::Continue
        ));
        slow.upstream_peer(&req).await.unwrap();
        assert!(run(&p, "r", Some(500)).await.is_none());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let mut probe = PluginHarness::new(p.clone());
        probe.ctx.route_id = Some(Arc::from("r"));
        assert!(matches!(
            probe.request(&mut req.clone()).await.unwrap(),
            Flow::Continue
        ));
        // The slow request from the closed phase succeeds now: it must not close the circuit.
        slow.logging(&req, 200).await;
        assert!(run(&p, "r", Some(200)).await.is_some(), "still half-open");
    }

    #[test]
    fn custom_statuses_and_config_errors() {
        let p = CircuitBreaker::new(parse(json!({"statuses": [429]})).unwrap()).unwrap();
        assert_eq!(p.outcome(429, true), Outcome::Failure);
        assert_eq!(p.outcome(500, true), Outcome::Success);
        assert_eq!(p.outcome(502, true), Outcome::Failure);
        assert_eq!(p.outcome(0, true), Outcome::Failure);
        assert_eq!(p.outcome(429, false), Outcome::Unknown);

        let err = |v| {
            PluginHarness::from_config(&factory(), v)
                .err()
                .expect("refused")
        };
        assert_eq!(err(json!({"failures": 0})).path, "failures");
        assert_eq!(
            err(json!({"half_open_requests": 0})).path,
            "half_open_requests"
        );
        assert_eq!(err(json!({"open_for": "0s"})).path, "open_for");
        assert_eq!(err(json!({"statuses": []})).path, "statuses");
        let e = err(json!({"statuses": [500, 200]}));
        assert_eq!(e.path, "statuses[1]");
        assert_eq!(e.message, "200 is not an error status (400-599)");
        assert!(err(json!({"threshold": 2}))
            .message
            .contains("unknown field"));
    }

    fn parse(v: serde_json::Value) -> Result<CircuitBreakerConfig, ConfigError> {
        crate::factory::parse_config(&v)
    }
}
