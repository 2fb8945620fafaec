//! Wiring: a config becomes a Pingora server with the proxy on every listener and the
//! background services (health checks).

use crate::admin::AdminApi;
use crate::cli::Cli;
use crate::config::model::{Config, ListenerProtocol};
use crate::config::{self, ConfigError};
use crate::drain::Draining;
use crate::idle::LeanKeepalive;
use crate::proxy::GatewayProxy;
use crate::reload::{ConfigManager, ReloadService};
use crate::snapshot::Snapshot;
use crate::state::LiveState;
use crate::tls::LiveCertificates;
use crate::upstream::health::HealthService;
use gatehouse_plugins::{PluginFactory, PluginRegistry, SharedServices};
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::Opt;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The socket read buffer of a client connection: none. Pingora's default (64 KiB) would be
/// held by every connection, idle ones included. Under plain HTTP/1 a request's head is read
/// into a buffer of [`LeanKeepalive`]'s and its body into Pingora's own, so a socket buffer
/// would only copy the bytes once more; under TLS, OpenSSL reads ahead into a buffer of its
/// own (see the HTTPS listener), so one system call still takes whatever the socket has.
const SOCKET_READ_BUFFER: usize = 0;

/// A Gatehouse gateway: the built-in plugins plus any added with
/// [`GatewayBuilder::plugin`].
///
/// ```no_run
/// gatehouse::Gateway::builder().run();
/// ```
pub struct Gateway;

impl Gateway {
    /// Starts building a gateway binary.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            registry: PluginRegistry::with_builtins(),
        }
    }
}

/// Builds a gateway binary: which plugins it knows.
pub struct GatewayBuilder {
    registry: PluginRegistry,
}

impl GatewayBuilder {
    /// Adds a plugin (replacing a built-in of the same name).
    pub fn plugin(mut self, factory: impl PluginFactory) -> Self {
        self.registry.register(factory);
        self
    }

    /// The plugin registry built so far.
    pub fn registry(&self) -> &PluginRegistry {
        &self.registry
    }

    /// Parses the command line and runs the gateway; exits the process when done (1 on a bad
    /// config, with the error on stderr).
    pub fn run(self) -> ! {
        use clap::Parser;
        let cli = Cli::parse();
        self.run_with(cli)
    }

    /// Runs the gateway with the given flags; exits the process.
    pub fn run_with(self, cli: Cli) -> ! {
        crate::alloc::tune();
        init_logging();
        if let Some(crate::cli::Command::Etcd(crate::cli::EtcdCommand::Push(args))) = &cli.command {
            match crate::cluster::push::run(args, &self.registry) {
                Ok(done) => {
                    println!("{done}");
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("gatehouse: {e}");
                    std::process::exit(1)
                }
            }
        }
        match start(cli, self.registry) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("gatehouse: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// Loads and compiles the config at `path` (relative paths inside it resolve against the
/// working directory).
pub fn load_snapshot(
    path: &Path,
    registry: &PluginRegistry,
    services: &SharedServices,
) -> Result<Snapshot, ConfigError> {
    let config = config::load_file(path)?;
    Snapshot::compile(config, registry, Path::new("."), None, services).map_err(|e| e.in_file(path))
}

fn start(cli: Cli, registry: PluginRegistry) -> Result<(), String> {
    let services = SharedServices::new();
    // The file (the default source), or the node's file plus the shared sections from etcd.
    let (snapshot, etcd) =
        crate::cluster::load_startup(&cli.conf, &registry, &services).map_err(|e| e.to_string())?;
    let mut server_conf =
        config::server_conf(&snapshot.config).map_err(|e| e.in_file(&cli.conf).to_string())?;
    // Relative paths (the config file itself, certificates, keys, log files) keep meaning what
    // they meant at start, also after `-d` detaches the process.
    if server_conf.working_directory.is_none() {
        server_conf.working_directory = std::env::current_dir().ok();
    }
    if cli.test {
        println!("{}: the configuration is valid", cli.conf.display());
        return Ok(());
    }
    // Resolve node host names before serving; the runtime is gone before Pingora forks.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(snapshot.resolve(Duration::from_secs(5)));

    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    let config: Arc<Config> = snapshot.config.clone();
    let state = LiveState::new(snapshot);
    add_proxy_services(&mut server, &config, &state)?;
    let manager = ConfigManager::with_etcd(
        cli.conf.clone(),
        registry,
        services,
        state.clone(),
        etcd.clone(),
    );
    if let Some(etcd) = etcd {
        server.add_service(background_service(
            "etcd config",
            crate::cluster::watch::EtcdWatchService::new(manager.clone(), etcd),
        ));
    }
    server.add_service(background_service(
        "config reload",
        ReloadService::new(manager.clone(), !cli.no_watch),
    ));
    if let Some(metrics) = &config.metrics {
        let mut service = Service::new(
            "gatehouse metrics".to_string(),
            crate::metrics::MetricsApi::new(state.clone()),
        );
        service.add_tcp(&metrics.address);
        server.add_service(service);
        log::info!("metrics on http://{}/metrics", metrics.address);
    }
    if let Some(admin) = &config.admin {
        let mut service = Service::new(
            "gatehouse admin".to_string(),
            AdminApi::new(manager.clone()),
        );
        service.add_tcp(&admin.address);
        server.add_service(service);
        log::info!("admin API on {}", admin.address);
    }
    server.add_service(background_service(
        "upstream health",
        HealthService::new(state.clone()),
    ));
    log::info!(
        "gatehouse listening on {}",
        config
            .listeners
            .iter()
            .map(|l| format!("{} ({})", l.address, l.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}

fn add_proxy_services(
    server: &mut Server,
    config: &Config,
    state: &LiveState,
) -> Result<(), String> {
    // Connections accepted just before a shutdown get this long to send their request.
    let drain = Duration::from_secs(
        server
            .configuration
            .grace_period_seconds
            .unwrap_or(5)
            .clamp(0, 2),
    );
    let proxy_service = |name: &str, h2c: bool| {
        let mut proxy = HttpProxy::new(
            GatewayProxy::new(state.clone()),
            server.configuration.clone(),
        );
        proxy.handle_init_modules();
        if h2c {
            let mut opts = HttpServerOptions::default();
            opts.h2c = true;
            proxy.server_options = Some(opts);
        }
        Service::new(
            name.to_string(),
            Draining::new(LeanKeepalive::new(proxy), drain),
        )
    };
    // h2c is a per-service option: plain listeners with `http2: true` get their own service.
    let mut main = proxy_service("gatehouse", false);
    let mut h2c = proxy_service("gatehouse-h2c", true);
    let mut uses_h2c = false;
    for (i, l) in config.listeners.iter().enumerate() {
        match l.protocol {
            ListenerProtocol::Http if l.http2 => {
                h2c.add_tcp(&l.address);
                uses_h2c = true;
            }
            ListenerProtocol::Http => main.add_listener(
                ListenerConfig::tcp(l.address.clone())
                    .l4_buffer(L4BufferSettings::default().read(SOCKET_READ_BUFFER)),
            ),
            ListenerProtocol::Https => {
                let certificates =
                    LiveCertificates::new(state.clone(), &l.address).ok_or_else(|| {
                        format!("listeners[{i}]: no certificates were loaded for this listener")
                    })?;
                let mut settings = TlsSettings::with_callbacks(Box::new(certificates))
                    .map_err(|e| format!("listeners[{i}]: TLS setup failed: {e}"))?;
                if l.http2 {
                    settings.enable_h2();
                }
                // OpenSSL reads as much as the socket has into its own buffer, which it frees
                // once consumed (the acceptor runs in RELEASE_BUFFERS mode): no socket buffer
                // is needed in front of it.
                settings.set_read_ahead(true);
                let listener = ListenerConfig::tcp(l.address.clone())
                    .tls(settings)
                    .l4_buffer(L4BufferSettings::default().read(SOCKET_READ_BUFFER));
                main.add_listener(listener);
            }
        }
    }
    server.add_service(main);
    if uses_h2c {
        server.add_service(h2c);
    }
    Ok(())
}
