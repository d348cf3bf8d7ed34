//! Log output: `env_logger` with the `RUST_LOG` filter, writing either text lines or one JSON
//! object per line (`LOG_FORMAT=json`) with the fields Cloud Logging reads: `severity`,
//! `message`, `time`, plus `target`.
//!
//! Invariant kept by callers, not here: no secret and no message body is ever passed to an
//! `info!` or higher (bodies only at `trace!`), and phone numbers go through [`crate::phone::mask`].

use std::io::Write;

use crate::clock;
use crate::config::LogFormat;

/// Install the global logger. Call once, before any thread starts logging.
pub fn init(format: LogFormat, filter: &str) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter);
    builder.target(env_logger::Target::Stderr);
    match format {
        LogFormat::Text => {
            builder.format(|buf, record| {
                writeln!(
                    buf,
                    "{} {:<5} {}: {}",
                    clock::rfc3339_millis(std::time::SystemTime::now()),
                    record.level(),
                    record.target(),
                    record.args()
                )
            });
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = serde_json::json!({
                    "time": clock::rfc3339_millis(std::time::SystemTime::now()),
                    "severity": severity(record.level()),
                    "message": record.args().to_string(),
                    "target": record.target(),
                });
                writeln!(buf, "{line}")
            });
        }
    }
    // A second init (tests) is harmless: keep the first logger.
    let _ = builder.try_init();
}

/// Cloud Logging's severity names for `log` levels.
pub fn severity(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "INFO",
        log::Level::Debug | log::Level::Trace => "DEBUG",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_match_cloud_logging() {
        assert_eq!(severity(log::Level::Warn), "WARNING");
        assert_eq!(severity(log::Level::Error), "ERROR");
        assert_eq!(severity(log::Level::Trace), "DEBUG");
    }
}
