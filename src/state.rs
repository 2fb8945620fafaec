//! The live config snapshot, swapped atomically on reload. Each request pins the snapshot it
//! started with, so a reload never changes a request half-way.

use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Shared handle to the live snapshot.
#[derive(Clone)]
pub struct LiveState(Arc<ArcSwap<Snapshot>>);

impl LiveState {
    /// A state serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        LiveState(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Makes `snapshot` live; requests already running keep theirs.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.0.store(snapshot);
    }

    /// Makes `snapshot` live and frees the one it replaces off the request path: requests
    /// still running hold it, and whichever let go of it last would otherwise pay for freeing
    /// every route, chain and tree (milliseconds with 10,000 routes) inside a request. Here a
    /// background task waits until it alone holds the old snapshot and frees it on a blocking
    /// thread. Outside a Tokio runtime the old snapshot is released at once.
    pub fn replace(&self, snapshot: Arc<Snapshot>) {
        let old = self.0.swap(snapshot);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut wait = std::time::Duration::from_millis(10);
            while Arc::strong_count(&old) > 1 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            tokio::task::spawn_blocking(move || drop(old));
        });
    }
}
