//! The `sms-sender` binary: read the arguments and configuration, start logging, run, map the
//! exit code.
//!
//! `sms-sender` runs the service; `sms-sender check` verifies the configuration against the real
//! services and exits; `--help` and `--version` print and exit.
//! Exit codes: 0 after a graceful shutdown (or all checks passed), 2 for a configuration problem
//! (one line on stderr naming the variable) or bad arguments, 1 when the service could not start
//! or a check failed.
//!
//! Everything on stderr is in the `LOG_FORMAT` format, read first and on its own for that
//! reason: with `json`, the configuration error and "cannot start" are one JSON object each, like
//! every log line. An invalid `LOG_FORMAT` is reported in text, the default: the format asked
//! for is unknown, and a plain line is what a person (and Cloud Logging, as a text entry) reads.
//! `--help`, `--version` and `check` write to stdout, for people, and are the same in both.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use sms_sender::config::{vars, Config, LogFormat};
use sms_sender::shutdown::Shutdown;
use sms_sender::{http, logging, ops::preflight, service, signals};

/// The allocator: dlmalloc (pure Rust, one lock) instead of musl's mallocng. A send makes a few
/// hundred small allocations, mostly inside ureq (headers, URL, pool keys); with mallocng they
/// were about a quarter of the service's instructions, plus `mmap`/`munmap` churn and futex
/// contention between sender threads. Measured (README, Performance): instructions per message
/// 383 k → 373 k, system time per message down 12–25 %, idle and burst RSS as before (mimalloc
/// was as fast but took 22 MiB with 128 threads: its per-thread pages). dlmalloc gives memory
/// back to the system when more than 2 MiB at the top of its heap is free.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// What the arguments ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Run the service.
    Run,
    /// Check the configuration against the real services.
    Check,
}

/// The command the arguments name; `Err` with the exit code once `--help`, `--version` or an
/// unknown argument has been answered.
fn command(args: &[String], format: LogFormat) -> Result<Command, ExitCode> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Ok(Command::Run),
        ["check"] => Ok(Command::Check),
        ["--help" | "-h" | "help"] => {
            print!("{}", vars::usage());
            Err(ExitCode::SUCCESS)
        }
        ["--version" | "-V"] => {
            println!("sms-sender {}", env!("CARGO_PKG_VERSION"));
            Err(ExitCode::SUCCESS)
        }
        _ => {
            match format {
                LogFormat::Text => eprintln!(
                    "sms-sender: unknown arguments {args:?}\n\n{}",
                    vars::usage()
                ),
                LogFormat::Json => logging::startup_error(
                    format,
                    format_args!("unknown arguments {args:?} (sms-sender --help lists them)"),
                ),
            }
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    // Invalid: text, and `Config::from_env` below reports it (it checks LOG_FORMAT first).
    let format = LogFormat::from_env().unwrap_or(LogFormat::Text);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let checking = match command(&args, format) {
        Ok(command) => command == Command::Check,
        Err(code) => return code,
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            if checking {
                println!("✗ configuration: {e}");
            } else {
                logging::startup_error(format, format_args!("{e}"));
            }
            return ExitCode::from(2);
        }
    };
    // Before any request: every text from outside is scrubbed of these from now on.
    sms_sender::redact::register_config(&config);
    let ca = http::trust_store();
    if checking {
        return if preflight::run(&config) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    logging::init(config.log_format, &config.log_filter);
    match ca {
        Some(ca) => log::debug!("TLS trust store: {ca}"),
        None => log::warn!("no CA bundle found: TLS connections will fail (set SSL_CERT_FILE)"),
    }
    let shutdown = Shutdown::new();
    // Once each, past the filter: these must be seen even with RUST_LOG=off.
    if let Err(e) = signals::spawn(shutdown.clone()) {
        logging::always(
            log::Level::Error,
            module_path!(),
            format_args!("cannot watch signals: {e}"),
        );
        return ExitCode::from(1);
    }
    match service::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::always(
                log::Level::Error,
                module_path!(),
                format_args!("cannot start: {e}"),
            );
            ExitCode::from(1)
        }
    }
}
