//! Node discovery: turns configured node addresses into backends, resolving host names with
//! the async resolver (never on the request path) and keeping each node's runtime state.

use super::node::NodeState;
use async_trait::async_trait;
use pingora_error::{ErrorType, OrErr, Result};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A node as configured.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `host:port` as written in config.
    pub address: String,
    /// The host part (name or IP), for SNI and `pass_host: node`.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address, when `host` is an IP literal.
    pub socket: Option<SocketAddr>,
    /// Relative weight.
    pub weight: usize,
}

impl NodeSpec {
    /// Parses `host:port` (`[v6]:port` for IPv6). The error says what is expected.
    pub fn parse(address: &str, weight: u32) -> Result<NodeSpec, String> {
        let expected = "expected `IP:port` or `hostname:port`";
        if let Ok(sa) = address.parse::<SocketAddr>() {
            return Ok(NodeSpec {
                address: address.to_string(),
                host: sa.ip().to_string(),
                port: sa.port(),
                socket: Some(sa),
                weight: weight as usize,
            });
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("`{address}` has no port; {expected}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{address}` has an invalid port; {expected}"))?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_name || port == 0 {
            return Err(format!("`{address}` is not a valid address; {expected}"));
        }
        Ok(NodeSpec {
            address: address.to_string(),
            host: host.to_string(),
            port,
            socket: None,
            weight: weight as usize,
        })
    }
}

/// [`ServiceDiscovery`] over the configured nodes.
pub struct NodeDiscovery {
    nodes: Vec<NodeSpec>,
    /// State per (configured address, resolved address), kept across re-resolutions so a
    /// node's in-flight count and ejection survive DNS refreshes.
    states: Mutex<HashMap<(String, SocketAddr), Arc<NodeState>>>,
}

impl NodeDiscovery {
    /// Discovery over `nodes`.
    pub fn new(nodes: Vec<NodeSpec>) -> Self {
        NodeDiscovery {
            nodes,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any node is a host name that needs resolving.
    pub fn needs_dns(&self) -> bool {
        self.nodes.iter().any(|n| n.socket.is_none())
    }

    fn backend(&self, spec: &NodeSpec, addr: SocketAddr) -> Backend {
        let state = {
            let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            states
                .entry((spec.address.clone(), addr))
                .or_insert_with(|| Arc::new(NodeState::new(spec)))
                .clone()
        };
        let mut b = Backend {
            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
            weight: spec.weight.max(1),
            ext: Default::default(),
        };
        b.ext.insert(state);
        b
    }
}

#[async_trait]
impl ServiceDiscovery for NodeDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut set = BTreeSet::new();
        for spec in &self.nodes {
            match spec.socket {
                Some(sa) => {
                    set.insert(self.backend(spec, sa));
                }
                None => {
                    let addrs = tokio::net::lookup_host((spec.host.as_str(), spec.port))
                        .await
                        .or_err_with(ErrorType::ConnectNoRoute, || {
                            format!("resolving upstream node {}", spec.address)
                        });
                    match addrs {
                        Ok(addrs) => {
                            for a in addrs {
                                set.insert(self.backend(spec, a));
                            }
                        }
                        // One unresolvable name must not take the other nodes away.
                        Err(e) => log::warn!("{e}"),
                    }
                }
            }
        }
        Ok((set, HashMap::new()))
    }
}
