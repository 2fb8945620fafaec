//! Runtime state of one upstream node: requests in flight and passive-health ejection.

use super::discovery::NodeSpec;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// State of one node, shared by every request and by health checks.
#[derive(Debug)]
pub struct NodeState {
    /// The address as configured (`host:port`): the `Host` for `pass_host: node`.
    pub address: String,
    /// The host part, for SNI.
    pub host: String,
    inflight: AtomicUsize,
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl NodeState {
    /// A fresh state for `spec`.
    pub fn new(spec: &NodeSpec) -> Self {
        NodeState {
            address: spec.address.clone(),
            host: spec.host.clone(),
            inflight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        }
    }

    /// Requests in flight to this node.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    /// Whether passive health checking has taken this node out of rotation.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && now_ms() < until
    }

    /// Records a request's outcome. After `threshold` consecutive failures the node is
    /// ejected for `eject_for`; any success resets the count.
    pub fn record(&self, ok: bool, threshold: u32, eject_for: Duration) {
        if ok {
            self.consecutive_failures.store(0, Relaxed);
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n >= threshold {
            let until =
                now_ms().saturating_add(u64::try_from(eject_for.as_millis()).unwrap_or(u64::MAX));
            self.ejected_until_ms.store(until.max(1), Relaxed);
            self.consecutive_failures.store(0, Relaxed);
            log::warn!(
                "upstream node {} ejected for {:?} after {n} consecutive failures",
                self.address,
                eject_for
            );
        }
    }
}

/// Counts one request in flight on a node until dropped.
#[derive(Debug)]
pub struct InflightGuard(pub Arc<NodeState>);

impl InflightGuard {
    /// Starts counting.
    pub fn new(node: Arc<NodeState>) -> Self {
        node.inflight.fetch_add(1, Relaxed);
        InflightGuard(node)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
