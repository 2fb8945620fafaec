//! Reading a config: file → `${ENV}` substitution → YAML → typed [`Config`], with the key path
//! of the first error.

use super::error::ConfigError;
use super::model::Config;
use pingora_core::server::configuration::ServerConf;
use std::path::Path;

/// Reads and parses the config file at `path`. Semantic checks (references, plugin configs)
/// happen when the config is compiled.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::at("", format!("cannot read the config file: {e}")).in_file(path)
    })?;
    parse_yaml(&text).map_err(|e| e.in_file(path))
}

/// Parses a config from YAML text (JSON is YAML too).
pub fn parse_yaml(text: &str) -> Result<Config, ConfigError> {
    let text = substitute_env(text)?;
    // Syntax first, so a broken file gets a plain "invalid YAML" error without a key path.
    serde_yaml::from_str::<serde_yaml::Value>(&text)
        .map_err(|e| ConfigError::at("", format!("invalid YAML: {e}")))?;
    let de = serde_yaml::Deserializer::from_str(&text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // serde_yaml prefixes its own (shorter) path; ours is the precise one.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => {
                rest.to_string()
            }
            _ => message,
        };
        ConfigError::at(path, message)
    })?;
    server_conf(&config)?;
    Ok(config)
}

/// The Pingora `ServerConf` of `config.server`, with unknown keys refused.
pub fn server_conf(config: &Config) -> Result<ServerConf, ConfigError> {
    if config.server.is_null() {
        return Ok(ServerConf::default());
    }
    let mut unknown = Vec::new();
    let conf: ServerConf =
        serde_ignored::deserialize(config.server.clone(), |p| unknown.push(p.to_string()))
            .map_err(|e| ConfigError::at("server", e.to_string()))?;
    if let Some(key) = unknown.first() {
        return Err(ConfigError::at(
            format!("server.{key}"),
            "unknown key (the server section takes Pingora's ServerConf keys: threads, \
             work_stealing, pid_file, upgrade_sock, grace_period_seconds, \
             graceful_shutdown_timeout_seconds, ...)",
        ));
    }
    conf.validate()
        .map_err(|e| ConfigError::at("server", e.to_string()))
}

/// Replaces `${NAME}` with the environment variable `NAME` (`${NAME:-default}` when unset).
/// `$${` writes a literal `${`.
pub fn substitute_env(text: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix("${") {
            out.push_str("${");
            rest = a;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body.find('}').ok_or_else(|| {
            ConfigError::at(
                "",
                "unclosed `${` in the config (write `$${` for a literal `${`)",
            )
        })?;
        let expr = &body[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        // As in a shell, `:-` also replaces a variable that is set but empty.
        let value = std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty() || default.is_none());
        match (value, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ConfigError::at(
                    "",
                    format!("environment variable `{name}` is not set (used as `${{{name}}}`)"),
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_substitution() {
        std::env::set_var("GH_TEST_KEY", "s3cret");
        assert_eq!(substitute_env("k: ${GH_TEST_KEY}").unwrap(), "k: s3cret");
        assert_eq!(substitute_env("k: ${GH_NOPE:-d}").unwrap(), "k: d");
        assert_eq!(substitute_env("k: $${X} $5").unwrap(), "k: ${X} $5");
        assert!(substitute_env("k: ${GH_NOPE}")
            .unwrap_err()
            .message
            .contains("GH_NOPE"));
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = parse_yaml("routes:\n  - id: a\n    paths: [/]\n    upstrem: x\n").unwrap_err();
        assert_eq!(e.path, "routes[0].upstrem");
        assert!(
            e.message.contains("unknown field `upstrem`"),
            "{}",
            e.message
        );
        let e = parse_yaml("server:\n  threadz: 2\n").unwrap_err();
        assert_eq!(e.path, "server.threadz");
    }
}
