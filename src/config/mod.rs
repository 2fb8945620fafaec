//! The config: its model ([`model`]), reading it ([`load`]) and its errors ([`error`]).
//! Checking references and building runtime objects is [`crate::snapshot`]'s job.

pub mod error;
pub mod load;
pub mod model;

pub use error::ConfigError;
pub use load::{load_file, parse_yaml, server_conf};
pub use model::Config;
