//! Log output: `env_logger` with the `RUST_LOG` filter, writing either text lines or one JSON
//! object per line (`LOG_FORMAT=json`) with the fields Cloud Logging reads: `severity`,
//! `message`, `time`, plus `target`.
//!
//! Invariant kept by callers, not here: no secret and no message body is ever passed to an
//! `info!` or higher (bodies only at `trace!`), and phone numbers go through [`crate::phone::mask`].

use std::io::Write;

use crate::clock;
use crate::config::LogFormat;

/// Libraries whose debug output would print request headers or URLs carrying our keys
/// (ureq logs every header, `apikey` included; the WebSocket URL carries the key). They are
/// capped at `info` whatever `RUST_LOG` says, so no filter can make a secret reach the log.
const CAPPED: &[&str] = &[
    "ureq",
    "tungstenite",
    "async_tungstenite",
    "native_tls",
    "tiny_http",
];

/// Install the global logger. Call once, before any thread starts logging.
pub fn init(format: LogFormat, filter: &str) {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter);
    for module in CAPPED {
        // A directive for the same module replaces the one parsed from RUST_LOG.
        let level = log::LevelFilter::Info.min(max_level_for(filter, module));
        builder.filter_module(module, level);
    }
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

/// The level `filter` would give `module` (its most specific directive, else the default),
/// used so that capping never *raises* a library's level above what the operator asked for.
fn max_level_for(filter: &str, module: &str) -> log::LevelFilter {
    let mut best: Option<(usize, log::LevelFilter)> = None;
    for directive in filter.split('/').next().unwrap_or("").split(',') {
        let directive = directive.trim();
        if directive.is_empty() {
            continue;
        }
        let (name, level) = match directive.split_once('=') {
            Some((name, level)) => (name, level.parse().unwrap_or(log::LevelFilter::Trace)),
            None => match directive.parse::<log::LevelFilter>() {
                Ok(level) => ("", level),
                Err(_) => (directive, log::LevelFilter::Trace),
            },
        };
        if module.starts_with(name) && best.map_or(true, |(len, _)| name.len() >= len) {
            best = Some((name.len(), level));
        }
    }
    best.map_or(log::LevelFilter::Off, |(_, level)| level)
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
    fn capping_follows_the_most_specific_directive() {
        assert_eq!(max_level_for("debug", "ureq"), log::LevelFilter::Debug);
        assert_eq!(
            max_level_for("info,ureq=trace", "ureq"),
            log::LevelFilter::Trace
        );
        assert_eq!(
            max_level_for("trace,ureq=off", "ureq"),
            log::LevelFilter::Off
        );
        assert_eq!(
            max_level_for("sms_sender=debug", "ureq"),
            log::LevelFilter::Off
        );
        assert_eq!(max_level_for("warn", "tungstenite"), log::LevelFilter::Warn);
    }

    #[test]
    fn severities_match_cloud_logging() {
        assert_eq!(severity(log::Level::Warn), "WARNING");
        assert_eq!(severity(log::Level::Error), "ERROR");
        assert_eq!(severity(log::Level::Trace), "DEBUG");
    }
}
