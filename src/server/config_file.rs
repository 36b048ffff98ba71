//! Reading a configuration: the file from disk, parsed and validated by the core's model
//! ([`tandem_core::config::parse`]), plus what only the edge can judge (the log filter, whose
//! syntax is the logging backend's).

use std::path::Path;
use tandem_core::config::{self, Config, ConfigError};

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: None,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    // Files the configuration names (a subnet's reservations_file) are read relative to the
    // configuration file's folder.
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut read = |p: &Path| {
        let full = dir.join(p);
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    };
    let cfg = config::parse_with(&name, &text, &mut read)?;
    check(&name, cfg)
}

/// Parses and validates config text (which may name no other file); `file` names it in
/// errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    check(file, config::parse(file, text)?)
}

/// What only the edge can judge.
fn check(file: &str, cfg: Config) -> Result<Config, ConfigError> {
    check_log_level(&cfg.server.log_level).map_err(|message| ConfigError {
        file: file.to_string(),
        line: None,
        field: "server.log_level".into(),
        message,
    })?;
    Ok(cfg)
}

/// Whether `filter` is a log filter the server can use; the error says what to try.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "`{filter}` is not a log filter (try info, debug, warn)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_log_filter_is_refused_with_its_field() {
        let text = config::EMBEDDED_DEFAULT.replace("[server]", "[server]\nlog_level = \"=+\"");
        assert!(
            config::parse("t", &text).is_ok(),
            "the core does not judge log filters"
        );
        let e = parse("t", &text).unwrap_err();
        assert_eq!(e.field, "server.log_level");
        assert!(parse("t", config::EMBEDDED_DEFAULT).is_ok());
    }
}
