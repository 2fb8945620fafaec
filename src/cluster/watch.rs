//! The background service that keeps a node on etcd's document: list, watch, and on any
//! break (etcd restarted, connection lost, watch canceled, revision compacted) list and watch
//! again. While etcd is away the node keeps serving the config it has.

use super::etcd::{Change, EtcdSource};
use crate::reload::ConfigManager;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// First wait after a failure; doubled up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Follows `<prefix>/config` in etcd and applies each change through the [`ConfigManager`].
pub struct EtcdWatchService {
    manager: Arc<ConfigManager>,
    source: Arc<EtcdSource>,
}

impl EtcdWatchService {
    /// A service applying `source`'s changes through `manager`.
    pub fn new(manager: Arc<ConfigManager>, source: Arc<EtcdSource>) -> Self {
        EtcdWatchService { manager, source }
    }
}

/// Sleeps `d`; false when the server is shutting down meanwhile.
async fn pause(d: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

#[async_trait]
impl BackgroundService for EtcdWatchService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let key = self.source.key().to_string();
        let mut retry = RETRY_MIN;
        // Whether etcd is known to be away (logged once, then once more when it is back).
        let mut away = false;
        loop {
            // List: the whole document and the store's revision.
            let fetched = tokio::select! {
                _ = shutdown.changed() => return,
                r = self.source.fetch() => r,
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    if !away {
                        log::warn!("etcd: {e}; the running config stays, retrying");
                        away = true;
                    } else {
                        log::debug!("etcd: {e}");
                    }
                    if !pause(retry, &mut shutdown).await {
                        return;
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let _ = self
                .manager
                .apply_etcd(fetched.value.as_deref(), fetched.mod_revision, true, "etcd")
                .await;
            // Watch from the next revision: nothing between the list and the watch is missed.
            let mut changes = match self.source.watch(fetched.revision + 1).await {
                Ok(rx) => rx,
                Err(e) => {
                    log::warn!("etcd: {e}; retrying");
                    away = true;
                    if !pause(retry, &mut shutdown).await {
                        return;
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            };
            if away {
                log::info!("etcd: watching {key} again (revision {})", fetched.revision);
            } else {
                log::info!(
                    "etcd: watching {key} from revision {}",
                    fetched.revision + 1
                );
            }
            retry = RETRY_MIN;
            loop {
                let change = tokio::select! {
                    _ = shutdown.changed() => return,
                    c = changes.recv() => c,
                };
                match change {
                    Some(Change::Put { value, revision }) => {
                        let _ = self
                            .manager
                            .apply_etcd(Some(&value), revision, false, "etcd watch")
                            .await;
                    }
                    Some(Change::Delete { revision }) => {
                        let _ = self
                            .manager
                            .apply_etcd(None, revision, false, "etcd watch")
                            .await;
                    }
                    Some(Change::Ended(reason)) => {
                        log::warn!("etcd: {reason}; listing {key} again");
                        break;
                    }
                    None => {
                        log::warn!("etcd: the watch stopped; listing {key} again");
                        break;
                    }
                }
            }
            // The break was logged; a failing list after it is not logged again.
            away = true;
            if !pause(RETRY_MIN, &mut shutdown).await {
                return;
            }
        }
    }
}
