//! `traffic-split`: send some of a route's requests to other upstreams, by weight (canary
//! releases, blue/green) and by request attributes (a header, a cookie).
//!
//! Rules are tried in order; the first whose `match` conditions all hold picks one of its
//! `upstreams` by weight. Weights are served in a smooth, repeating sequence (weights 3 and
//! 1 give `A A B A`, then again), so every run of `sum of weights` requests is split exactly.

use crate::context::RequestContext;
use crate::factory::{regex_error, BuildEnv, ConfigError, TypedFactory};
use crate::plugin::{Flow, Phases, Plugin};
use async_trait::async_trait;
use http::header::{HeaderName, COOKIE};
use pingora_error::Result;
use pingora_http::RequestHeader;
use regex::Regex;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Config of `traffic-split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplitConfig {
    /// The rules, tried in order.
    pub rules: Vec<RuleConfig>,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Conditions that must all hold (none: the rule applies to every request).
    #[serde(default, rename = "match")]
    pub matches: Vec<MatchConfig>,
    /// Where matching requests go, by weight.
    pub upstreams: Vec<WeightedUpstreamConfig>,
}

/// One condition: `header` or `cookie` names what is tested; `equals`, `regex` or
/// `present` how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// A request header's name.
    pub header: Option<String>,
    /// A cookie's name.
    pub cookie: Option<String>,
    /// The value must be exactly this.
    pub equals: Option<String>,
    /// The value must match this regex (anywhere, unless anchored with `^…$`).
    pub regex: Option<String>,
    /// `true`: present with any value; `false`: absent.
    pub present: Option<bool>,
}

/// One destination of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedUpstreamConfig {
    /// An upstream id; omitted, the route's own upstream.
    pub upstream: Option<String>,
    /// Relative share (default 1; 0 sends nothing there).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

enum Source {
    Header(HeaderName),
    Cookie(String),
}

enum Test {
    Equals(String),
    Regex(Regex),
    Present(bool),
}

struct Condition {
    source: Source,
    test: Test,
}

/// How a rule picks among its destinations.
enum Schedule {
    /// One destination only.
    Single(usize),
    /// Destinations in a precomputed smooth weighted round-robin order.
    Sequence(Box<[u16]>),
    /// For very large weight sums: cumulative weights; a counter walks through them.
    Cumulative(Box<[u64]>),
}

struct Rule {
    conditions: Box<[Condition]>,
    /// `None`: the route's own upstream.
    targets: Box<[Option<Arc<str>>]>,
    schedule: Schedule,
    counter: AtomicU64,
}

/// The `traffic-split` plugin.
pub struct TrafficSplit {
    rules: Box<[Rule]>,
}

/// Priority of `traffic-split`: after auth and limits, before transforms.
pub const PRIORITY: i32 = 966;

/// Weight sums (after dividing by their greatest common divisor) up to this are served in
/// a precomputed interleaved sequence.
const MAX_SEQUENCE: u64 = 10_000;

/// The factory for `traffic-split`.
pub fn factory() -> impl crate::PluginFactory {
    TypedFactory::new("traffic-split", PRIORITY, TrafficSplit::new)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Smooth weighted round robin over `weights`, for one full cycle.
fn smooth_sequence(weights: &[u64]) -> Box<[u16]> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u16);
    }
    out.into()
}

fn compile_condition(m: &MatchConfig, at: &str) -> Result<Condition, ConfigError> {
    let source = match (&m.header, &m.cookie) {
        (Some(h), None) => Source::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            ConfigError::at(
                format!("{at}.header"),
                format!("`{h}` is not a valid header name"),
            )
        })?),
        (None, Some(c)) => {
            if c.is_empty() || c.contains([';', '=', ' ']) {
                return Err(ConfigError::at(
                    format!("{at}.cookie"),
                    format!("`{c}` is not a valid cookie name"),
                ));
            }
            Source::Cookie(c.clone())
        }
        _ => {
            return Err(ConfigError::at(
                at,
                "set exactly one of `header` or `cookie`",
            ))
        }
    };
    let test = match (&m.equals, &m.regex, m.present) {
        (Some(v), None, None) => Test::Equals(v.clone()),
        (None, Some(r), None) => Test::Regex(
            Regex::new(r).map_err(|e| ConfigError::at(format!("{at}.regex"), regex_error(&e)))?,
        ),
        (None, None, Some(p)) => Test::Present(p),
        _ => {
            return Err(ConfigError::at(
                at,
                "set exactly one of `equals`, `regex` or `present`",
            ))
        }
    };
    Ok(Condition { source, test })
}

fn compile_rule(r: &RuleConfig, at: &str, env: &BuildEnv<'_>) -> Result<Rule, ConfigError> {
    let conditions = r
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| compile_condition(m, &format!("{at}.match[{i}]")))
        .collect::<Result<Box<[_]>, _>>()?;
    if r.upstreams.is_empty() {
        return Err(ConfigError::at(
            format!("{at}.upstreams"),
            "the list is empty; expected at least one `{ upstream: ID, weight: N }`",
        ));
    }
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for (i, u) in r.upstreams.iter().enumerate() {
        if let Some(id) = &u.upstream {
            if !env.upstream_ids.contains(id) {
                return Err(ConfigError::at(
                    format!("{at}.upstreams[{i}].upstream"),
                    format!(
                        "unknown upstream \"{id}\" (expected the id of an entry in `upstreams`)"
                    ),
                ));
            }
        }
        if u.weight > 0 {
            targets.push(u.upstream.as_deref().map(Arc::from));
            weights.push(u64::from(u.weight));
        }
    }
    if weights.is_empty() {
        return Err(ConfigError::at(
            format!("{at}.upstreams"),
            "every weight is 0; at least one must be positive",
        ));
    }
    let divisor = weights.iter().copied().fold(0, gcd);
    for w in &mut weights {
        *w /= divisor;
    }
    let total: u64 = weights.iter().sum();
    let schedule = if weights.len() == 1 {
        Schedule::Single(0)
    } else if total <= MAX_SEQUENCE {
        Schedule::Sequence(smooth_sequence(&weights))
    } else {
        Schedule::Cumulative(
            weights
                .iter()
                .scan(0, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect(),
        )
    };
    Ok(Rule {
        conditions,
        targets: targets.into(),
        schedule,
        counter: AtomicU64::new(0),
    })
}

impl TrafficSplit {
    /// Builds the plugin from its config, checking upstream ids against `env`.
    pub fn new(c: TrafficSplitConfig, env: &BuildEnv<'_>) -> Result<Self, ConfigError> {
        if c.rules.is_empty() {
            return Err(ConfigError::at(
                "rules",
                "the list is empty; expected at least one rule with `upstreams`",
            ));
        }
        let rules = c
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| compile_rule(r, &format!("rules[{i}]"), env))
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(TrafficSplit { rules })
    }
}

fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Condition {
    fn holds(&self, req: &RequestHeader) -> bool {
        match &self.source {
            Source::Header(name) => {
                let mut values = req.headers.get_all(name).iter().peekable();
                match &self.test {
                    Test::Present(p) => values.peek().is_some() == *p,
                    Test::Equals(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
                    Test::Regex(re) => values
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| re.is_match(v)),
                }
            }
            Source::Cookie(name) => {
                let value = cookie(req, name);
                match &self.test {
                    Test::Present(p) => value.is_some() == *p,
                    Test::Equals(want) => value == Some(want.as_str()),
                    Test::Regex(re) => value.is_some_and(|v| re.is_match(v)),
                }
            }
        }
    }
}

impl Rule {
    fn pick(&self) -> Option<&Arc<str>> {
        let i = match &self.schedule {
            Schedule::Single(i) => *i,
            Schedule::Sequence(seq) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let len = seq.len() as u64;
                seq.get(usize::try_from(n % len.max(1)).unwrap_or(0))
                    .map_or(0, |&i| usize::from(i))
            }
            Schedule::Cumulative(cum) => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let total = cum.last().copied().unwrap_or(1).max(1);
                cum.partition_point(|&c| c <= n % total)
            }
        };
        self.targets.get(i).and_then(Option::as_ref)
    }
}

#[async_trait]
impl Plugin for TrafficSplit {
    fn name(&self) -> &str {
        "traffic-split"
    }

    fn priority(&self) -> i32 {
        PRIORITY
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    async fn request_filter(
        &self,
        req: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<Flow> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.conditions.iter().all(|c| c.holds(req)))
        {
            if let Some(id) = rule.pick() {
                ctx.upstream_override = Some(id.clone());
            }
        }
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{request, HarnessEnv, PluginHarness};
    use serde_json::json;

    fn env() -> HarnessEnv {
        HarnessEnv {
            upstream_ids: ["canary", "blue"].iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn harness(config: serde_json::Value) -> PluginHarness {
        PluginHarness::from_config_with(&factory(), config, &env()).unwrap()
    }

    fn build_err(config: serde_json::Value) -> ConfigError {
        PluginHarness::from_config_with(&factory(), config, &env())
            .err()
            .expect("refused")
    }

    async fn route(h: &mut PluginHarness, mut req: RequestHeader) -> Option<String> {
        h.ctx.upstream_override = None;
        assert!(matches!(h.request(&mut req).await.unwrap(), Flow::Continue));
        h.ctx.upstream_override.as_deref().map(str::to_string)
    }

    #[test]
    fn smooth_sequence_interleaves_exactly() {
        assert_eq!(&*smooth_sequence(&[3, 1]), &[0, 0, 1, 0]);
        let seq = smooth_sequence(&[5, 1, 1]);
        assert_eq!(&*seq, &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[tokio::test]
    async fn weights_split_exactly_per_cycle() {
        let mut h = harness(json!({"rules": [{"upstreams": [
            {"weight": 3}, {"upstream": "canary", "weight": 1}
        ]}]}));
        let mut canary = 0;
        for _ in 0..100 {
            if route(&mut h, request("GET", "/").build()).await.as_deref() == Some("canary") {
                canary += 1;
            }
        }
        assert_eq!(canary, 25);
    }

    #[tokio::test]
    async fn large_weights_use_cumulative_counts() {
        let mut h = harness(json!({"rules": [{"upstreams": [
            {"upstream": "blue", "weight": 9999}, {"upstream": "canary", "weight": 2}
        ]}]}));
        let mut canary = 0;
        for _ in 0..10001 {
            if route(&mut h, request("GET", "/").build()).await.as_deref() == Some("canary") {
                canary += 1;
            }
        }
        assert_eq!(canary, 2);
    }

    #[tokio::test]
    async fn first_matching_rule_decides() {
        let mut h = harness(json!({"rules": [
            {"match": [{"header": "X-Canary", "equals": "yes"}], "upstreams": [{"upstream": "canary"}]},
            {"match": [{"cookie": "beta", "present": true}, {"header": "x-plan", "regex": "^(gold|silver)$"}],
             "upstreams": [{"upstream": "blue"}]},
            {"match": [{"header": "x-legacy", "present": false}], "upstreams": [{"weight": 1}]}
        ]}));
        let r = request("GET", "/").header("x-canary", "yes").build();
        assert_eq!(route(&mut h, r).await.as_deref(), Some("canary"));
        let r = request("GET", "/").header("x-canary", "no").build();
        assert_eq!(route(&mut h, r).await, None);
        let r = request("GET", "/")
            .header("cookie", "a=1; beta=on")
            .header("x-plan", "gold")
            .build();
        assert_eq!(route(&mut h, r).await.as_deref(), Some("blue"));
        let r = request("GET", "/")
            .header("cookie", "beta=on")
            .header("x-plan", "golden")
            .build();
        assert_eq!(route(&mut h, r).await, None, "regex is anchored here");
        let r = request("GET", "/").header("cookie", "betamax=1").build();
        assert_eq!(route(&mut h, r).await, None);
        // A matching rule that picks the route's own upstream keeps an earlier choice.
        let mut req = request("GET", "/").build();
        h.ctx.upstream_override = Some(Arc::from("earlier"));
        h.request(&mut req).await.unwrap();
        assert_eq!(h.ctx.upstream_override.as_deref(), Some("earlier"));
    }

    #[tokio::test]
    async fn zero_weights_get_nothing() {
        let mut h = harness(json!({"rules": [{"upstreams": [
            {"upstream": "blue", "weight": 0}, {"upstream": "canary", "weight": 2}
        ]}]}));
        for _ in 0..5 {
            let r = request("GET", "/").build();
            assert_eq!(route(&mut h, r).await.as_deref(), Some("canary"));
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = build_err(json!({"rules": [{"upstreams": [{"upstream": "green"}]}]}));
        assert_eq!(e.path, "rules[0].upstreams[0].upstream");
        assert_eq!(
            e.message,
            "unknown upstream \"green\" (expected the id of an entry in `upstreams`)"
        );
        let e = build_err(json!({"rules": []}));
        assert_eq!(e.path, "rules");
        let e = build_err(json!({"rules": [{"upstreams": []}]}));
        assert_eq!(e.path, "rules[0].upstreams");
        let e = build_err(json!({"rules": [{"upstreams": [{"weight": 0}]}]}));
        assert!(e.message.contains("every weight is 0"));
        let e = build_err(
            json!({"rules": [{"match": [{"header": "a", "cookie": "b", "equals": "c"}],
            "upstreams": [{}]}]}),
        );
        assert_eq!(e.path, "rules[0].match[0]");
        assert_eq!(e.message, "set exactly one of `header` or `cookie`");
        let e = build_err(json!({"rules": [{"match": [{"header": "a"}], "upstreams": [{}]}]}));
        assert_eq!(
            e.message,
            "set exactly one of `equals`, `regex` or `present`"
        );
        let e = build_err(
            json!({"rules": [{"match": [{}, {"header": "a", "regex": "("}],
            "upstreams": [{}]}]}),
        );
        assert_eq!(e.path, "rules[0].match[0]");
        let e = build_err(json!({"rules": [{"match": [{"header": "a", "regex": "("}],
            "upstreams": [{}]}]}));
        assert_eq!(e.path, "rules[0].match[0].regex");
        assert!(e.message.starts_with("invalid regex"));
        let e = build_err(
            json!({"rules": [{"match": [{"header": "bad name", "present": true}],
            "upstreams": [{}]}]}),
        );
        assert_eq!(e.path, "rules[0].match[0].header");
        let e = build_err(
            json!({"rules": [{"match": [{"cookie": "a;b", "present": true}],
            "upstreams": [{}]}]}),
        );
        assert_eq!(e.path, "rules[0].match[0].cookie");
        let e = build_err(json!({"rules": [{"upstreams": [{"upstream": "canary", "weigth": 2}]}]}));
        assert!(e.message.contains("unknown field `weigth`"));
        assert!(e.path.starts_with("rules[0].upstreams[0]"), "{}", e.path);
    }
}
