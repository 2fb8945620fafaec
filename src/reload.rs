//! Config changes while running: reload from the file (SIGHUP, file change, admin API) or
//! apply a config from the admin API. Either way: parse → validate → compile a new snapshot →
//! atomic swap. A bad config is refused with the same error as `gatehouse -t`, and the running
//! config stays.

use crate::cluster::etcd::{Applied, EtcdSource, Written};
use crate::config::model::Config;
use crate::config::{self, ConfigError};
use crate::metrics;
use crate::snapshot::Snapshot;
use crate::state::LiveState;
use async_trait::async_trait;
use gatehouse_plugins::{PluginRegistry, SharedServices};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why a change was not applied.
#[derive(Debug)]
pub enum ApplyError {
    /// The config is invalid; nothing changed.
    Invalid(ConfigError),
    /// The config is valid but could not be saved to the file; nothing changed.
    Persist(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Invalid(e) => write!(f, "{e}"),
            ApplyError::Persist(m) => f.write_str(m),
        }
    }
}

/// The hash that tells whether a config text changed.
pub(crate) fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Owns every change to the live config.
pub struct ConfigManager {
    path: PathBuf,
    registry: PluginRegistry,
    services: SharedServices,
    state: LiveState,
    /// Serialises changes: two reloads never compile against the same previous snapshot.
    change: tokio::sync::Mutex<()>,
    /// Hash of the file content last applied or written, so the watcher skips our own writes.
    applied_hash: Mutex<u64>,
    started_listeners: Vec<crate::config::model::Listener>,
    /// With `config_source: etcd`: the shared sections come from there (see [`crate::cluster`]).
    etcd: Option<Arc<EtcdSource>>,
}

impl ConfigManager {
    /// A manager for the config file at `path`, now serving `state`.
    pub fn new(
        path: PathBuf,
        registry: PluginRegistry,
        services: SharedServices,
        state: LiveState,
    ) -> Arc<Self> {
        Self::with_etcd(path, registry, services, state, None)
    }

    /// A manager whose shared sections come from `etcd` when it is set (the file at `path`
    /// then holds the node's own sections).
    pub fn with_etcd(
        path: PathBuf,
        registry: PluginRegistry,
        services: SharedServices,
        state: LiveState,
        etcd: Option<Arc<EtcdSource>>,
    ) -> Arc<Self> {
        let hash = std::fs::read(&path).map(|b| content_hash(&b)).unwrap_or(0);
        let started_listeners = state.load().config.listeners.clone();
        Arc::new(ConfigManager {
            path,
            registry,
            services,
            state,
            change: tokio::sync::Mutex::new(()),
            applied_hash: Mutex::new(hash),
            started_listeners,
            etcd,
        })
    }

    /// The live state.
    pub fn state(&self) -> &LiveState {
        &self.state
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn compile(&self, config: Config) -> Result<Snapshot, ConfigError> {
        let registry = self.registry.clone();
        let services = self.services.clone();
        let previous = self.state.load();
        let started = Instant::now();
        let snapshot = tokio::task::spawn_blocking(move || {
            Snapshot::compile(
                config,
                &registry,
                Path::new("."),
                Some(&previous),
                &services,
            )
        })
        .await
        .map_err(|e| ConfigError::at("", format!("config compilation failed: {e}")))??;
        snapshot.resolve(Duration::from_secs(5)).await;
        log::debug!("config compiled in {:?}", started.elapsed());
        Ok(snapshot)
    }

    /// Makes `snapshot` live. `since` is when the change began (read or received), for the
    /// log and `gatehouse_config_reload_duration_seconds`.
    fn swap(&self, snapshot: Snapshot, trigger: &str, since: Instant) {
        if !same_sockets(&snapshot.config.listeners, &self.started_listeners) {
            log::warn!(
                "config reload ({trigger}): the listeners changed; listeners are only \
                 (re)bound at start: run a binary upgrade (`gatehouse -u`, see docs/operations.md) \
                 to apply them. Routes, upstreams and plugins are live now."
            );
        }
        let routes = snapshot.routes.len();
        self.state.replace(Arc::new(snapshot));
        let took = since.elapsed();
        metrics::record_reload(true);
        metrics::record_reload_duration(took);
        log::info!(
            "config reloaded ({trigger}): {routes} routes, in {:.1} ms",
            took.as_secs_f64() * 1000.0
        );
    }

    fn failed(&self, trigger: &str, e: &dyn std::fmt::Display) {
        metrics::record_reload(false);
        log::error!("config reload ({trigger}) refused, the running config stays: {e}");
    }

    /// Reloads the config file. `trigger` names the cause for the log.
    pub async fn reload_file(&self, trigger: &str) -> Result<(), ConfigError> {
        let since = Instant::now();
        if let Some(etcd) = &self.etcd {
            return self.reload_etcd(etcd, trigger).await;
        }
        let _guard = self.change.lock().await;
        let bytes = std::fs::read(&self.path).map_err(|e| {
            ConfigError::at("", format!("cannot read the config file: {e}")).in_file(&self.path)
        });
        let result = match bytes {
            Ok(bytes) => {
                let hash = content_hash(&bytes);
                let parsed = std::str::from_utf8(&bytes)
                    .map_err(|_| ConfigError::at("", "the config file is not UTF-8"))
                    .and_then(config::parse_yaml)
                    .map_err(|e| e.in_file(&self.path));
                match parsed {
                    Ok(cfg) => match self.compile(cfg).await {
                        Ok(snapshot) => {
                            *self.applied_hash.lock().unwrap_or_else(|p| p.into_inner()) = hash;
                            self.swap(snapshot, trigger, since);
                            Ok(())
                        }
                        Err(e) => Err(e.in_file(&self.path)),
                    },
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.failed(trigger, e);
        }
        result
    }

    /// Applies `config` (from the admin API): validated and compiled, then saved to the file
    /// (temporary file + rename, so the file is never half-written) when `persist` is set,
    /// then swapped in. Nothing changes when any step fails.
    pub async fn apply(&self, config: Config, persist: bool) -> Result<(), ApplyError> {
        let _guard = self.change.lock().await;
        let result = self.apply_locked(config, persist).await;
        if let Err(e) = &result {
            self.failed("admin API", e);
        }
        result
    }

    /// Applies the config `edit` makes of the live one, holding the same lock as every other
    /// change from reading the live config to swapping in the new one, so that concurrent
    /// edits (two admin API clients) never undo each other. `edit`'s own error comes back
    /// as the outer `Err`, and nothing is applied.
    pub async fn apply_edit<E>(
        &self,
        edit: impl FnOnce(&Config) -> Result<Config, E>,
        persist: bool,
    ) -> Result<Result<(), ApplyError>, E> {
        let _guard = self.change.lock().await;
        let current = self.state.load();
        let config = edit(&current.config)?;
        drop(current);
        let result = self.apply_locked(config, persist).await;
        if let Err(e) = &result {
            self.failed("admin API", e);
        }
        Ok(result)
    }

    async fn apply_locked(&self, config: Config, persist: bool) -> Result<(), ApplyError> {
        let since = Instant::now();
        if let Some(etcd) = &self.etcd {
            return self.apply_to_etcd(etcd, config, persist).await;
        }
        // The same checks as a file: the server section too.
        config::server_conf(&config).map_err(ApplyError::Invalid)?;
        let text = serde_yaml::to_string(&config)
            .map_err(|e| ApplyError::Persist(format!("cannot serialise the config: {e}")))?;
        let snapshot = self.compile(config).await.map_err(ApplyError::Invalid)?;
        if persist {
            write_atomically(&self.path, text.as_bytes()).map_err(ApplyError::Persist)?;
            *self.applied_hash.lock().unwrap_or_else(|p| p.into_inner()) =
                content_hash(text.as_bytes());
        }
        self.swap(snapshot, "admin API", since);
        Ok(())
    }

    fn file_changed(&self) -> Option<u64> {
        let bytes = std::fs::read(&self.path).ok()?;
        let hash = content_hash(&bytes);
        let applied = *self.applied_hash.lock().unwrap_or_else(|p| p.into_inner());
        (hash != applied).then_some(hash)
    }
}

// ---- `config_source: etcd` (see crate::cluster): the same compile-and-swap path, with the
// shared sections read from / written to etcd instead of the file.
impl ConfigManager {
    /// The etcd source, when the config comes from etcd.
    pub fn etcd(&self) -> Option<&Arc<EtcdSource>> {
        self.etcd.as_ref()
    }

    /// Applies the shared document read from etcd at `revision` (`None`: the key is absent,
    /// and the running config stays). Documents already applied (this node's own writes) are
    /// skipped, and so are watch events older than what was applied; a `listed` document (a
    /// fresh read) is applied whatever its revision, so that an etcd restored with lower
    /// revisions is still followed. Returns whether a new config was swapped in; a bad
    /// document is refused, logged and counted like a bad file, and the running config stays.
    pub async fn apply_etcd(
        &self,
        value: Option<&str>,
        revision: i64,
        listed: bool,
        trigger: &str,
    ) -> Result<bool, ConfigError> {
        let since = Instant::now();
        let Some(etcd) = &self.etcd else {
            return Ok(false);
        };
        let _guard = self.change.lock().await;
        let applied = etcd.applied();
        if !listed && revision < applied.revision {
            return Ok(false);
        }
        let Some(text) = value else {
            log::warn!(
                "config ({trigger}): {} is not in etcd (revision {revision}); the running config stays",
                etcd.key()
            );
            etcd.set_applied(Applied {
                revision: 0,
                ..applied
            });
            return Ok(false);
        };
        let hash = content_hash(text.as_bytes());
        if hash == applied.hash {
            etcd.set_applied(Applied { revision, hash });
            return Ok(false);
        }
        let compiled = match crate::cluster::parse_shared(text) {
            Ok(shared) => {
                let config = crate::cluster::merge(&self.state.load().config, shared);
                self.compile(config).await
            }
            Err(e) => Err(e),
        };
        match compiled {
            Ok(snapshot) => {
                etcd.set_applied(Applied { revision, hash });
                self.swap(snapshot, trigger, since);
                Ok(true)
            }
            Err(e) => {
                let e = e.in_file(format!("etcd {}", etcd.key()));
                self.failed(trigger, &e);
                // A later write (admin API) replaces this revision; the running config stays.
                etcd.set_applied(Applied {
                    revision,
                    ..applied
                });
                Err(e)
            }
        }
    }

    /// `reload_file` in etcd mode: the node's file and etcd's document, read again.
    async fn reload_etcd(&self, etcd: &Arc<EtcdSource>, trigger: &str) -> Result<(), ConfigError> {
        let since = Instant::now();
        let _guard = self.change.lock().await;
        let result = async {
            let bytes = std::fs::read(&self.path).map_err(|e| {
                ConfigError::at("", format!("cannot read the config file: {e}")).in_file(&self.path)
            })?;
            let node = std::str::from_utf8(&bytes)
                .map_err(|_| ConfigError::at("", "the config file is not UTF-8"))
                .and_then(config::parse_yaml)
                .and_then(|c| {
                    crate::cluster::check_bootstrap(&c)?;
                    match crate::cluster::etcd_source(&c)? {
                        Some(s) if &s == etcd.settings() => Ok(c),
                        _ => Err(ConfigError::at(
                            "config_source",
                            "changed; a new config source takes effect at the next start",
                        )),
                    }
                })
                .map_err(|e| e.in_file(&self.path))?;
            let fetched = etcd.fetch().await.map_err(|e| ConfigError::at("", e))?;
            let at_etcd = |e: ConfigError| e.in_file(format!("etcd {}", etcd.key()));
            let (shared, applied) = match &fetched.value {
                Some(text) => (
                    crate::cluster::parse_shared(text).map_err(at_etcd)?,
                    Applied {
                        revision: fetched.mod_revision,
                        hash: content_hash(text.as_bytes()),
                    },
                ),
                None => (
                    (*self.state.load().config).clone(),
                    Applied {
                        revision: 0,
                        ..etcd.applied()
                    },
                ),
            };
            let snapshot = self
                .compile(crate::cluster::merge(&node, shared))
                .await
                .map_err(at_etcd)?;
            *self.applied_hash.lock().unwrap_or_else(|p| p.into_inner()) = content_hash(&bytes);
            etcd.set_applied(applied);
            self.swap(snapshot, trigger, since);
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            self.failed(trigger, e);
        }
        result
    }

    /// `apply` in etcd mode: the node's own sections stay as they are; the shared ones are
    /// written to etcd (compare-and-swap on the revision this node applied last), from where
    /// every node applies them.
    async fn apply_to_etcd(
        &self,
        etcd: &Arc<EtcdSource>,
        config: Config,
        persist: bool,
    ) -> Result<(), ApplyError> {
        let since = Instant::now();
        let config = crate::cluster::merge(&self.state.load().config, config);
        let text = crate::cluster::shared_yaml(&config).map_err(ApplyError::Persist)?;
        let snapshot = self.compile(config).await.map_err(ApplyError::Invalid)?;
        if persist {
            let expected = etcd.applied().revision;
            match etcd.write(text.clone(), expected).await {
                Ok(Written::Ok(revision)) => etcd.set_applied(Applied {
                    revision,
                    hash: content_hash(text.as_bytes()),
                }),
                Ok(Written::Conflict { actual }) => {
                    return Err(ApplyError::Persist(format!(
                        "the config in etcd changed meanwhile (revision {actual}; this node \
                         applied {expected}); read it again and retry"
                    )))
                }
                Err(e) => {
                    return Err(ApplyError::Persist(format!(
                        "cannot write the config to etcd: {e}"
                    )))
                }
            }
        }
        self.swap(snapshot, "admin API", since);
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("the config file {} cannot be written: {e}", path.display())
    })
}

/// Reloads on SIGHUP, reopens log files on SIGUSR1, and reloads when the config file changes (checked twice a second; a change is
/// applied once the file has been stable for a moment, so half-written saves are skipped).
pub struct ReloadService {
    manager: Arc<ConfigManager>,
    watch: bool,
}

impl ReloadService {
    /// A service for `manager`; `watch` enables reloading on file changes.
    pub fn new(manager: Arc<ConfigManager>, watch: bool) -> Self {
        ReloadService { manager, watch }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::error!("cannot listen for SIGUSR1: {e}");
                    None
                }
            };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_mtime: Option<SystemTime> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    let _ = self.manager.reload_file("SIGHUP").await;
                }
                Some(()) = async { match usr1.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    log::info!("SIGUSR1: reopening log files");
                    gatehouse_plugins::builtin::observe::access_log::reopen_all();
                }
                _ = tick.tick(), if self.watch => {
                    let mtime = std::fs::metadata(&self.manager.path).and_then(|m| m.modified()).ok();
                    if mtime == last_mtime {
                        continue;
                    }
                    last_mtime = mtime;
                    if self.manager.file_changed().is_some() {
                        // Let an editor finish writing.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = self.manager.reload_file("file change").await;
                    }
                }
            }
        }
    }
}

/// Whether two listener lists bind the same sockets the same way. Certificates are left out:
/// they are read from the live snapshot at each handshake.
fn same_sockets(
    a: &[crate::config::model::Listener],
    b: &[crate::config::model::Listener],
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.address == y.address
                && x.protocol == y.protocol
                && x.http2 == y.http2
        })
}
