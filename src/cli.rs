//! Command-line flags. Pingora's own (`-c`, `-t`, `-d`, `-u`) keep their meaning; a
//! subcommand (`gatehouse etcd push ...`) runs a tool instead of the gateway.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Gatehouse: a programmable API gateway.
#[derive(Parser, Debug, Clone)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// The config file.
    #[arg(short = 'c', long = "conf", default_value = "conf/gatehouse.yaml")]
    pub conf: PathBuf,
    /// Check the config (every key, reference and plugin config) and exit: 0 if it is valid,
    /// 1 with the error otherwise.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Run in the background (daemon).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Take over the listening sockets of a running gateway (zero-downtime binary upgrade;
    /// then send SIGQUIT to the old process).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Do not reload when the config file changes (SIGHUP and the admin API still reload).
    #[arg(long = "no-watch")]
    pub no_watch: bool,
    /// A tool to run instead of the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Config in etcd, for a fleet of gateways (docs/cluster.md).
    #[command(subcommand)]
    Etcd(EtcdCommand),
}

/// `gatehouse etcd ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum EtcdCommand {
    /// Validate a config file and store its shared sections in etcd, for every node.
    Push(crate::cluster::push::PushArgs),
}
