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
}
