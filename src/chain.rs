//! Plugin chains: the plugins of a route (global → service → route), merged and sorted once at
//! config load, and split into one list per phase so that a request only visits the plugins
//! that act in that phase.

use gatehouse_plugins::{Phases, Plugin};
use std::sync::Arc;

/// A plugin with the scope it was configured at, before merging.
#[derive(Clone)]
pub struct Scoped {
    /// The plugin's name.
    pub name: String,
    /// The instance.
    pub plugin: Arc<dyn Plugin>,
}

/// A merged, ordered chain with per-phase lists.
#[derive(Clone, Default)]
pub struct Chain {
    /// Every plugin, in order.
    pub all: Box<[Arc<dyn Plugin>]>,
    /// `request_filter` plugins.
    pub request: Box<[Arc<dyn Plugin>]>,
    /// `request_body_filter` plugins.
    pub request_body: Box<[Arc<dyn Plugin>]>,
    /// `upstream_peer` plugins.
    pub upstream_peer: Box<[Arc<dyn Plugin>]>,
    /// `upstream_request_filter` plugins.
    pub upstream_request: Box<[Arc<dyn Plugin>]>,
    /// `response_filter` plugins.
    pub response: Box<[Arc<dyn Plugin>]>,
    /// `response_body_filter` plugins.
    pub response_body: Box<[Arc<dyn Plugin>]>,
    /// `logging` plugins.
    pub logging: Box<[Arc<dyn Plugin>]>,
}

fn sort(list: &mut [Scoped]) {
    // Stable: equal priorities keep name order (the config's maps are sorted by name).
    list.sort_by_key(|s| std::cmp::Reverse(s.plugin.priority()));
}

impl Chain {
    /// Merges the scopes: global plugins run first (by priority), then the service's and the
    /// route's together (by priority). A plugin named at a narrower scope replaces the wider
    /// scope's instance of the same name.
    pub fn merge(global: &[Scoped], service: &[Scoped], route: &[Scoped]) -> Chain {
        let narrow_names = |name: &str| {
            service.iter().any(|s| s.name == name) || route.iter().any(|s| s.name == name)
        };
        let mut first: Vec<Scoped> = global
            .iter()
            .filter(|g| !narrow_names(&g.name))
            .cloned()
            .collect();
        sort(&mut first);
        let mut second: Vec<Scoped> = service
            .iter()
            .filter(|s| !route.iter().any(|r| r.name == s.name))
            .chain(route.iter())
            .cloned()
            .collect();
        sort(&mut second);
        Chain::from_ordered(first.into_iter().chain(second).map(|s| s.plugin).collect())
    }

    /// A chain of plugins already in order.
    pub fn from_ordered(all: Vec<Arc<dyn Plugin>>) -> Chain {
        let pick = |p: Phases| -> Box<[Arc<dyn Plugin>]> {
            all.iter()
                .filter(|x| x.phases().contains(p))
                .cloned()
                .collect()
        };
        Chain {
            request: pick(Phases::REQUEST),
            request_body: pick(Phases::REQUEST_BODY),
            upstream_peer: pick(Phases::UPSTREAM_PEER),
            upstream_request: pick(Phases::UPSTREAM_REQUEST),
            response: pick(Phases::RESPONSE),
            response_body: pick(Phases::RESPONSE_BODY),
            logging: pick(Phases::LOGGING),
            all: all.into_boxed_slice(),
        }
    }

    /// This chain with a consumer's plugins joined in: a plugin of the same name is replaced
    /// by the consumer's instance (in place), others are inserted by priority.
    pub fn with_consumer(&self, consumer: &[Scoped]) -> Chain {
        let mut all: Vec<Arc<dyn Plugin>> = self
            .all
            .iter()
            .map(|p| {
                consumer
                    .iter()
                    .find(|c| c.name == p.name())
                    .map_or_else(|| p.clone(), |c| c.plugin.clone())
            })
            .collect();
        for c in consumer {
            if self.all.iter().any(|p| p.name() == c.name) {
                continue;
            }
            let at = all
                .iter()
                .position(|p| p.priority() < c.plugin.priority())
                .unwrap_or(all.len());
            all.insert(at, c.plugin.clone());
        }
        Chain::from_ordered(all)
    }

    /// The plugin names in order (for tests and the admin API).
    pub fn names(&self) -> Vec<String> {
        self.all.iter().map(|p| p.name().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(&'static str, i32);
    impl Plugin for P {
        fn name(&self) -> &str {
            self.0
        }
        fn priority(&self) -> i32 {
            self.1
        }
    }
    fn s(name: &'static str, prio: i32) -> Scoped {
        Scoped {
            name: name.into(),
            plugin: Arc::new(P(name, prio)),
        }
    }

    #[test]
    fn global_first_then_narrower_by_priority_with_overrides() {
        let chain = Chain::merge(
            &[
                s("request-id", 12000),
                s("prometheus", 500),
                s("key-auth", 2500),
            ],
            &[s("key-auth", 2500), s("headers", 950)],
            &[s("rate-limit", 1000), s("headers", 950)],
        );
        assert_eq!(
            chain.names(),
            [
                "request-id",
                "prometheus",
                "key-auth",
                "rate-limit",
                "headers"
            ]
        );
    }
}
