//! Building plugins from config: factories, the registry, and typed config parsing.

use crate::context::Consumer;
use crate::plugin::Plugin;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Why a plugin's config was refused: the key path inside the plugin's config (empty for the
/// whole value) and what was expected. The engine prefixes the path with where the plugin
/// was configured, e.g. `routes[2].plugins.key-auth.header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path inside the plugin's config (`redis.timeout`, `allow[1]`).
    pub path: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about the key at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error about the plugin's config as a whole.
    pub fn whole(message: impl Into<String>) -> Self {
        ConfigError::at("", message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A regex compile error as one line (`invalid regex: unclosed group`); the regex crate's own
/// message spans several lines with a caret diagram, which reads badly in a config error.
pub fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let reason = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_string())
        .unwrap_or(text);
    format!("invalid regex: {reason}")
}

/// Parses a plugin's config value into its typed config, reporting the key path of the first
/// error. Use `#[serde(deny_unknown_fields)]` on config types so that typos are errors.
pub fn parse_config<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ConfigError> {
    // `null` (written as `plugin:` or `plugin: ~`) means "all defaults".
    let empty = serde_json::Value::Object(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::at(path, e.into_inner().to_string())
    })
}

/// What a factory may consult while building a plugin.
#[derive(Clone, Copy)]
pub struct BuildEnv<'a> {
    /// Every consumer in the config, for auth plugins to index by credential.
    pub consumers: &'a [Arc<Consumer>],
    /// The ids of the upstreams in the config, for plugins that pick an upstream.
    pub upstream_ids: &'a HashSet<String>,
    /// The directory relative paths in the config are resolved against (the gateway's
    /// working directory).
    pub base_dir: &'a Path,
    /// Where the plugin is configured: `global`, `service:ID`, `route:ID`, `consumer:ID`. Stable across
    /// reloads, so a plugin can name state it keeps in [`BuildEnv::services`].
    pub scope: &'a str,
    /// Services that outlive the config (shared counter stores).
    pub services: &'a crate::services::SharedServices,
}

impl BuildEnv<'_> {
    /// Resolves a path from the config against [`BuildEnv::base_dir`].
    pub fn resolve_path(&self, path: &str) -> std::path::PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Makes plugin instances of one kind from their config.
pub trait PluginFactory: Send + Sync + 'static {
    /// The name used in config.
    fn name(&self) -> &'static str;

    /// The priority instances get (see [`Plugin::priority`]).
    fn priority(&self) -> i32;

    /// Checks `config` and builds an instance. Called once per scope per config load, never
    /// on the request path, so expensive preparation (compiling regexes, indexing keys,
    /// reading files) belongs here.
    fn build(
        &self,
        config: &serde_json::Value,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError>;
}

/// A [`PluginFactory`] from a typed config and a build function: the usual way to write one.
///
/// ```
/// use gatehouse_plugins::{Plugin, TypedFactory, PluginRegistry};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config { greeting: String }
///
/// struct Greeter { greeting: String }
/// impl Plugin for Greeter {
///     fn name(&self) -> &str { "greeter" }
///     fn priority(&self) -> i32 { 500 }
/// }
///
/// let mut registry = PluginRegistry::with_builtins();
/// registry.register(TypedFactory::new("greeter", 500, |c: Config, _env| {
///     Ok(Greeter { greeting: c.greeting })
/// }));
/// assert!(registry.get("greeter").is_some());
/// ```
pub struct TypedFactory<C, P, F> {
    name: &'static str,
    priority: i32,
    build: F,
    _types: std::marker::PhantomData<fn(C) -> P>,
}

impl<C, P, F> TypedFactory<C, P, F>
where
    C: DeserializeOwned + 'static,
    P: Plugin,
    F: Fn(C, &BuildEnv<'_>) -> Result<P, ConfigError> + Send + Sync + 'static,
{
    /// A factory named `name` whose instances have `priority`, built by `build` from the
    /// parsed config.
    pub fn new(name: &'static str, priority: i32, build: F) -> Self {
        TypedFactory {
            name,
            priority,
            build,
            _types: std::marker::PhantomData,
        }
    }
}

impl<C, P, F> PluginFactory for TypedFactory<C, P, F>
where
    C: DeserializeOwned + 'static,
    P: Plugin,
    F: Fn(C, &BuildEnv<'_>) -> Result<P, ConfigError> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn build(
        &self,
        config: &serde_json::Value,
        env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let typed: C = parse_config(config)?;
        Ok(Arc::new((self.build)(typed, env)?))
    }
}

/// The plugins a gateway binary knows, by name.
#[derive(Clone, Default)]
pub struct PluginRegistry {
    factories: BTreeMap<&'static str, Arc<dyn PluginFactory>>,
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with every built-in plugin.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtin::register_all(&mut r);
        r
    }

    /// Adds a factory, replacing any with the same name (so a binary may swap a built-in for
    /// its own implementation).
    pub fn register(&mut self, factory: impl PluginFactory) -> &mut Self {
        self.factories.insert(factory.name(), Arc::new(factory));
        self
    }

    /// The factory for `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PluginFactory>> {
        self.factories.get(name)
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

impl fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}
