//! Services the gateway shares with plugins: they live as long as the process, across config
//! reloads, so state kept in them (rate-limit counters, in-flight slots) survives a reload.

use crate::store::LocalStore;
use std::sync::Arc;

/// Long-lived services handed to every plugin build through [`crate::BuildEnv::services`].
#[derive(Clone)]
pub struct SharedServices {
    /// The in-process counter store (`store: local` of the traffic plugins).
    pub local_store: Arc<LocalStore>,
}

impl SharedServices {
    /// Fresh services for one gateway process.
    pub fn new() -> Self {
        SharedServices {
            local_store: Arc::new(LocalStore::new()),
        }
    }
}

impl Default for SharedServices {
    fn default() -> Self {
        Self::new()
    }
}
