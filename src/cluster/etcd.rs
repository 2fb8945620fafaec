//! The etcd client side of the config source: read the document, write it with a
//! compare-and-swap, and stream changes to it.
//!
//! All etcd I/O runs on one `gatehouse-etcd` thread, started at first use (after Pingora has
//! forked into the background); callers on any runtime await the results. The start-up read
//! ([`fetch_blocking`]) uses its own short-lived runtime and connection instead.

use super::ConfigSource;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetResponse, OpenSslClientConfig, Txn,
    TxnOp, WatchOptions,
};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// The document as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The document, `None` when the key does not exist.
    pub value: Option<String>,
    /// The key's modification revision (0 when it does not exist).
    pub mod_revision: i64,
    /// The store's revision at the time of the read: watch from the next one.
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The document was written at `revision`.
    Put { value: String, revision: i64 },
    /// The key was deleted at `revision`.
    Delete { revision: i64 },
    /// The watch ended (etcd restarted, the connection broke, the revision was compacted…):
    /// list again, then watch again.
    Ended(String),
}

/// What a compare-and-swap write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the key's new revision.
    Ok(i64),
    /// The key's revision was not the expected one: someone else wrote first.
    Conflict { actual: i64 },
}

/// Runtime for the etcd connection, started at first use.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gatehouse-etcd")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the etcd I/O thread: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

async fn connect(s: &ConfigSource) -> Result<Client, String> {
    let timeout = s.timeout.get();
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(Duration::from_secs(5), timeout)
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &s.tls {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| format!("config_source.tls.{what}: cannot read {path}: {e}"))
        };
        let mut config = OpenSslClientConfig::default();
        if let Some(ca) = &tls.ca {
            config = config.ca_cert_pem(&read("ca", ca)?);
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            config = config.client_cert_pem_and_key(&read("cert", cert)?, &read("key", key)?);
        }
        options = options.with_openssl_tls(config);
    }
    tokio::time::timeout(timeout, Client::connect(&s.endpoints, Some(options)))
        .await
        .map_err(|_| format!("no answer from etcd within {timeout:?}"))?
        .map_err(|e| format!("cannot connect to etcd: {e}"))
}

fn fetched(key: &str, resp: &GetResponse) -> Fetched {
    let revision = resp.header().map_or(0, |h| h.revision());
    match resp.kvs().iter().find(|kv| kv.key() == key.as_bytes()) {
        Some(kv) => Fetched {
            value: Some(String::from_utf8_lossy(kv.value()).into_owned()),
            mod_revision: kv.mod_revision(),
            revision,
        },
        None => Fetched {
            value: None,
            mod_revision: 0,
            revision,
        },
    }
}

async fn get(client: &mut Client, key: &str, timeout: Duration) -> Result<Fetched, String> {
    let resp = tokio::time::timeout(timeout, client.get(key, None))
        .await
        .map_err(|_| format!("no answer from etcd within {timeout:?}"))?
        .map_err(|e| format!("cannot read {key} from etcd: {e}"))?;
    Ok(fetched(key, &resp))
}

/// Reads the document once, on a runtime of its own (for start-up and `gatehouse -t`).
pub fn fetch_blocking(s: &ConfigSource) -> Result<Fetched, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let mut client = connect(s).await?;
        get(&mut client, &s.key(), s.timeout.get()).await
    })
}

/// Writes `value` at `key` if the key's revision is `expected` (0: if it does not exist),
/// on a runtime of its own (for `gatehouse etcd push`).
pub fn put_blocking(
    s: &ConfigSource,
    value: &str,
    expected: Option<i64>,
) -> Result<Written, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let mut client = connect(s).await?;
        put(&mut client, &s.key(), value, expected, s.timeout.get()).await
    })
}

async fn put(
    client: &mut Client,
    key: &str,
    value: &str,
    expected: Option<i64>,
    timeout: Duration,
) -> Result<Written, String> {
    let mut txn = Txn::new();
    if let Some(rev) = expected {
        txn = txn.when([Compare::mod_revision(key, CompareOp::Equal, rev)]);
    }
    let txn = txn
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)]);
    let resp = tokio::time::timeout(timeout, client.txn(txn))
        .await
        .map_err(|_| format!("no answer from etcd within {timeout:?}"))?
        .map_err(|e| format!("cannot write {key} to etcd: {e}"))?;
    if resp.succeeded() {
        return Ok(Written::Ok(resp.header().map_or(0, |h| h.revision())));
    }
    let actual = resp
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => Some(fetched(key, &g).mod_revision),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Written::Conflict { actual })
}

/// The document last applied on this node (to skip its own writes and to write with a
/// compare-and-swap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The key's modification revision (0: the key did not exist).
    pub revision: i64,
    /// A hash of the document's text.
    pub hash: u64,
}

/// A node's link to etcd: the settings, one connection (opened on first use, re-opened after
/// an error) and what was applied last.
pub struct EtcdSource {
    settings: ConfigSource,
    key: String,
    client: tokio::sync::Mutex<Option<Client>>,
    applied: Mutex<Applied>,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource")
            .field("endpoints", &self.settings.endpoints)
            .field("key", &self.key)
            .field("applied", &self.applied())
            .finish()
    }
}

impl EtcdSource {
    /// A source for `settings`, which applied `applied` at start.
    pub fn new(settings: ConfigSource, applied: Applied) -> Arc<Self> {
        Arc::new(EtcdSource {
            key: settings.key(),
            settings,
            client: tokio::sync::Mutex::new(None),
            applied: Mutex::new(applied),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ConfigSource {
        &self.settings
    }

    /// The key of the document.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The document last applied (or written) on this node.
    pub fn applied(&self) -> Applied {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the document now applied.
    pub fn set_applied(&self, applied: Applied) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
    }

    /// A connection; runs on the etcd thread.
    async fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.settings).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after an error, so that the next call connects afresh.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Runs `op` with a connection on the etcd thread.
    async fn on_io<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>, Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, String>> + Send,
    {
        let rt = io_runtime()?;
        let this = self.clone();
        rt.spawn(async move {
            let client = this.client().await?;
            let r = op(this.clone(), client).await;
            if r.is_err() {
                this.reset().await;
            }
            r
        })
        .await
        .map_err(|e| format!("etcd task failed: {e}"))?
    }

    /// Reads the document.
    pub async fn fetch(self: &Arc<Self>) -> Result<Fetched, String> {
        self.on_io(|this, mut c| async move {
            get(&mut c, &this.key, this.settings.timeout.get()).await
        })
        .await
    }

    /// Writes the document if the key is still at `expected` (its revision; 0 = absent).
    pub async fn write(self: &Arc<Self>, value: String, expected: i64) -> Result<Written, String> {
        self.on_io(move |this, mut c| async move {
            put(
                &mut c,
                &this.key,
                &value,
                Some(expected),
                this.settings.timeout.get(),
            )
            .await
        })
        .await
    }

    /// Watches the key from `from_revision` on. Changes arrive on the returned channel; the
    /// last message is always [`Change::Ended`] (unless the receiver is dropped first).
    pub async fn watch(
        self: &Arc<Self>,
        from_revision: i64,
    ) -> Result<mpsc::Receiver<Change>, String> {
        let (tx, rx) = mpsc::channel(16);
        let timeout = self.settings.timeout.get();
        self.on_io(move |this, mut c| async move {
            let options = WatchOptions::new().with_start_revision(from_revision);
            let mut stream =
                tokio::time::timeout(timeout, c.watch(this.key.as_str(), Some(options)))
                    .await
                    .map_err(|_| format!("no answer from etcd within {timeout:?}"))?
                    .map_err(|e| format!("cannot watch {}: {e}", this.key))?;
            tokio::spawn(async move {
                let reason = loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                break format!(
                                    "revision {from_revision} was compacted (oldest kept: {})",
                                    resp.compact_revision()
                                );
                            }
                            if resp.canceled() {
                                break format!("etcd canceled the watch: {}", resp.cancel_reason());
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                let change = match ev.event_type() {
                                    EventType::Put => Change::Put {
                                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                                        revision: kv.mod_revision(),
                                    },
                                    EventType::Delete => Change::Delete {
                                        revision: kv.mod_revision(),
                                    },
                                };
                                if tx.send(change).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => break "etcd closed the watch".to_string(),
                        Err(e) => break format!("the watch broke: {e}"),
                    }
                };
                this.reset().await;
                let _ = tx.send(Change::Ended(reason)).await;
            });
            Ok(())
        })
        .await?;
        Ok(rx)
    }
}
