//! Log output: `env_logger` with the `RUST_LOG` filter, writing either text lines or one JSON
//! object per line (`LOG_FORMAT=json`) with the fields Cloud Logging reads: `severity`,
//! `message`, `time`, plus `target`.
//!
//! Invariant kept here: only this crate's own records can be below `info`, whatever `RUST_LOG`
//! says. The libraries' debug output prints what we must never log (ureq writes every request
//! header, the `apikey` one included, and every URL, which carries the account SID; tungstenite
//! writes the WebSocket request, whose URL carries the key), and a filter on the crate name is
//! bypassed by a directive for one of its modules (`ureq::unit=trace`). So the logger itself
//! drops every record below `info` whose target is not ours, whichever directive enabled it; a
//! library added later is covered without being listed.
//!
//! Invariant kept by callers, not here: no secret and no message body is ever passed to an
//! `info!` or higher (bodies only at `trace!`), and phone numbers go through [`crate::phone::mask`]
//! (text from outside through [`crate::redact::scrub`]).

use std::io::Write;

use crate::clock;
use crate::config::LogFormat;

/// The target prefix of this crate's records (the library's and the binary's).
const OWN_TARGET: &str = "sms_sender";

/// Whether a record may be written: `info` and above from anyone, lower levels only from us.
fn permitted(target: &str, level: log::Level) -> bool {
    let ours = target
        .strip_prefix(OWN_TARGET)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
    level <= log::Level::Info || ours
}

/// `env_logger` behind the cap of [`permitted`].
struct Capped(env_logger::Logger);

impl log::Log for Capped {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        permitted(metadata.target(), metadata.level()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if permitted(record.target(), record.level()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

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
                // Written field by field: a `serde_json::Value` per line (a map, a copy of each
                // field) cost about as much as the rest of the send it reports.
                let line = JsonLine {
                    time: &clock::rfc3339_millis(std::time::SystemTime::now()),
                    severity: severity(record.level()),
                    message: &record.args().to_string(),
                    target: record.target(),
                };
                serde_json::to_writer(&mut *buf, &line)?;
                buf.write_all(b"\n")
            });
        }
    }
    let logger = builder.build();
    let max_level = logger.filter();
    // A second init (tests) is harmless: keep the first logger.
    if log::set_boxed_logger(Box::new(Capped(logger))).is_ok() {
        log::set_max_level(max_level);
    }
}

/// One `LOG_FORMAT=json` line, in the field order Cloud Logging shows.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    severity: &'static str,
    message: &'a str,
    target: &'a str,
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
    fn only_our_own_records_go_below_info() {
        use log::Level::*;
        for target in [
            "ureq",
            "ureq::unit",
            "tungstenite::handshake::client",
            "async_tungstenite",
            "native_tls",
            "openssl",
            "polling",
            "sms_sender_evil",
            "sms_senders::x",
            "",
        ] {
            assert!(!permitted(target, Debug), "{target}");
            assert!(!permitted(target, Trace), "{target}");
            assert!(permitted(target, Info), "{target}");
            assert!(permitted(target, Error), "{target}");
        }
        for target in [
            "sms_sender",
            "sms_sender::supabase::realtime",
            "sms_sender::delivery::sender",
        ] {
            assert!(permitted(target, Trace), "{target}");
        }
    }

    #[test]
    fn severities_match_cloud_logging() {
        assert_eq!(severity(log::Level::Warn), "WARNING");
        assert_eq!(severity(log::Level::Error), "ERROR");
        assert_eq!(severity(log::Level::Trace), "DEBUG");
    }
}
