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
//! Invariant kept here too: with `LOG_FORMAT=json` every line this process writes to stderr is
//! one JSON object with the same four fields, from a configuration error to the last shutdown
//! line. So nothing else writes there: what must be seen whatever the filter (why the service
//! could not start) goes through [`always`], a configuration error before the logger runs through
//! [`startup_error`], `RUST_LOG` directives the filter parser would have complained about in its
//! own plain text are taken out first and reported by [`always`], and a panic is reported by a
//! hook as one line.
//!
//! Invariant kept by callers, not here: no secret and no message body is ever passed to an
//! `info!` or higher (bodies only at `trace!`), and phone numbers go through [`crate::phone::mask`]
//! (text from outside through [`crate::redact::scrub`]).

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use crate::config::LogFormat;
use crate::timestamp;

/// The format [`init`] installed, for the lines written past the filter by [`always`].
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The target of lines about the program as a whole (the binary's module path).
const PROGRAM_TARGET: &str = "sms_sender";

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

/// Install the global logger. Call once, before any thread starts logging. `RUST_LOG` directives
/// that cannot be read are ignored (as `env_logger` does) and each is reported by one warning
/// line in `format`; with `json`, a panic is reported as one `ERROR` line too.
pub fn init(format: LogFormat, filter: &str) {
    let (usable, ignored) = usable_filter(filter);
    let mut builder = env_logger::Builder::new();
    // Only directives the parser takes: it prints its complaints itself, in plain text.
    builder.parse_filters(&usable);
    builder.target(env_logger::Target::Stderr);
    builder.format(move |buf, record| {
        write_line(buf, format, record.level(), record.target(), *record.args())
    });
    let logger = builder.build();
    let max_level = logger.filter();
    // A second init (tests) is harmless: keep the first logger.
    if log::set_boxed_logger(Box::new(Capped(logger))).is_ok() {
        log::set_max_level(max_level);
        let _ = FORMAT.set(format);
        if format == LogFormat::Json {
            std::panic::set_hook(Box::new(|info| {
                let thread = std::thread::current();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("Box<dyn Any>");
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                always(
                    log::Level::Error,
                    PROGRAM_TARGET,
                    format_args!(
                        "thread '{}' panicked{at}: {payload}",
                        thread.name().unwrap_or("<unnamed>")
                    ),
                );
            }));
        }
    }
    for problem in ignored {
        always(
            log::Level::Warn,
            module_path!(),
            format_args!("RUST_LOG: {problem}"),
        );
    }
}

/// Write one line to stderr whatever the filter says, in the format [`init`] installed (text if
/// it has not run): for what must always be seen, once.
pub fn always(level: log::Level, target: &str, message: fmt::Arguments<'_>) {
    let format = FORMAT.get().copied().unwrap_or(LogFormat::Text);
    let mut line = Vec::with_capacity(256);
    if write_line(&mut line, format, level, target, message).is_ok() {
        // One write per line, as the logger does, so lines from threads never interleave.
        let _ = io::stderr().lock().write_all(&line);
    }
}

/// Report a problem found before the logger runs (a configuration error, unknown arguments) on
/// stderr as one line: `sms-sender: <message>` in text (the form the README documents), one
/// `ERROR` object in JSON.
pub fn startup_error(format: LogFormat, message: fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(256);
    let written = match format {
        LogFormat::Text => writeln!(line, "sms-sender: {message}"),
        LogFormat::Json => write_line(
            &mut line,
            format,
            log::Level::Error,
            PROGRAM_TARGET,
            message,
        ),
    };
    if written.is_ok() {
        let _ = io::stderr().lock().write_all(&line);
    }
}

/// One log line: `<time> <LEVEL> <target>: <message>` in text, a [`JsonLine`] in JSON.
fn write_line(
    out: &mut dyn Write,
    format: LogFormat,
    level: log::Level,
    target: &str,
    message: fmt::Arguments<'_>,
) -> io::Result<()> {
    let time = timestamp::rfc3339_millis(std::time::SystemTime::now());
    match format {
        LogFormat::Text => writeln!(out, "{time} {level:<5} {target}: {message}"),
        LogFormat::Json => {
            // Written field by field: a `serde_json::Value` per line (a map, a copy of each
            // field) cost about as much as the rest of the send it reports.
            let line = JsonLine {
                time: &time,
                severity: severity(level),
                message: &message.to_string(),
                target,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")
        }
    }
}

/// The most characters of a `RUST_LOG` directive quoted in a warning.
const SHOWN_DIRECTIVE_CHARS: usize = 80;

/// `spec` without the directives `env_logger`'s parser would refuse (it would print a plain-text
/// warning for each), and what was taken out, in words. The grammar is the parser's
/// (`env_filter::parse_spec`): `directive,…[/message filter]`, a directive being `level`,
/// `module` or `module=level`; more than one `/` makes the whole value unusable (the parser then
/// keeps nothing: errors only, as with an empty value). The filter after `/` is a plain substring
/// (no `regex` feature), which cannot be invalid.
fn usable_filter(spec: &str) -> (String, Vec<String>) {
    let quote = |text: &str| -> String {
        let mut shown: String = text.chars().take(SHOWN_DIRECTIVE_CHARS).collect();
        if text.chars().count() > SHOWN_DIRECTIVE_CHARS {
            shown.push('…');
        }
        format!("{shown:?}")
    };
    let mut parts = spec.split('/');
    let directives = parts.next().unwrap_or("");
    let message_filter = parts.next();
    if parts.next().is_some() {
        return (
            String::new(),
            vec![format!(
                "{} has more than one '/'; ignored whole (errors only are logged)",
                quote(spec)
            )],
        );
    }
    let mut kept = Vec::new();
    let mut ignored = Vec::new();
    for directive in directives.split(',').map(str::trim) {
        if directive.is_empty() {
            continue;
        }
        let mut sides = directive.split('=');
        let usable = match (sides.next(), sides.next().map(str::trim), sides.next()) {
            (Some(_), None, None) | (Some(_), Some(""), None) => true,
            (Some(_), Some(level), None) => level.parse::<log::LevelFilter>().is_ok(),
            _ => false,
        };
        if usable {
            kept.push(directive);
        } else {
            ignored.push(format!(
                "ignored the directive {}: not `level`, `module` or `module=level` (levels: \
                 off, error, warn, info, debug, trace)",
                quote(directive)
            ));
        }
    }
    let mut usable = kept.join(",");
    if let Some(filter) = message_filter {
        usable.push('/');
        usable.push_str(filter);
    }
    (usable, ignored)
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
    fn unreadable_directives_are_taken_out_and_named() {
        for (spec, usable, ignored) in [
            ("info", "info", 0),
            ("", "", 0),
            ("sms_sender=debug, warn", "sms_sender=debug,warn", 0),
            ("ureq=", "ureq=", 0),
            ("trace/apikey", "trace/apikey", 0),
            ("info,ureq=loud", "info", 1),
            ("a=b=c,info,x=verbose/needle", "info/needle", 2),
            ("a/b/c", "", 1),
            ("[", "[", 0),
            ("OFF,x=TRACE", "OFF,x=TRACE", 0),
        ] {
            let (got, problems) = usable_filter(spec);
            assert_eq!(got, usable, "{spec}");
            assert_eq!(problems.len(), ignored, "{spec}: {problems:?}");
        }
        let (_, problems) = usable_filter(&format!("x={}", "y".repeat(500)));
        assert!(
            problems[0].contains("ignored the directive \"x=yyy"),
            "{problems:?}"
        );
        assert!(problems[0].len() < 300, "{problems:?}");
    }

    #[test]
    fn a_json_line_has_the_four_fields_and_a_text_line_the_documented_shape() {
        let mut out = Vec::new();
        write_line(
            &mut out,
            LogFormat::Json,
            log::Level::Warn,
            "sms_sender::x",
            format_args!("a \"quoted\"\nline"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["severity"], "WARNING");
        assert_eq!(v["message"], "a \"quoted\"\nline");
        assert_eq!(v["target"], "sms_sender::x");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        let mut out = Vec::new();
        write_line(
            &mut out,
            LogFormat::Text,
            log::Level::Info,
            "sms_sender",
            format_args!("hello"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Z INFO  sms_sender: hello\n"), "{text:?}");
    }

    #[test]
    fn severities_match_cloud_logging() {
        assert_eq!(severity(log::Level::Warn), "WARNING");
        assert_eq!(severity(log::Level::Error), "ERROR");
        assert_eq!(severity(log::Level::Trace), "DEBUG");
    }
}
