//! Graceful draining for the proxy services.
//!
//! When Pingora shuts a service down (SIGTERM, or the old process of a binary upgrade), it
//! stops accepting and, at the same moment, drops every connection still waiting for its
//! request head. A client that connected just before that instant — its request bytes still
//! on the way — would see its connection closed. [`Draining`] delays that second step: the
//! accept loop stops at once, while connections already accepted get a moment to deliver
//! their request, which is then served normally.

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// Wraps a server app so that shutdown drains accepted connections first.
pub struct Draining<A> {
    inner: Arc<A>,
    delay: Duration,
}

impl<A> Draining<A> {
    /// `inner`, with `delay` between "stop accepting" and "drop idle connections".
    pub fn new(inner: A, delay: Duration) -> Self {
        Draining {
            inner: Arc::new(inner),
            delay,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Draining<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // One call serves a downstream connection (all its keep-alive requests).
        let _open = crate::metrics::ConnectionGuard::new();
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        tokio::time::sleep(self.delay).await;
        self.inner.cleanup().await;
    }
}
