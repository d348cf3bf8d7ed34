//! The `sms-sender` binary: read the configuration, start logging, run, map the exit code.
//!
//! Exit codes: 0 after a graceful shutdown, 2 for a configuration problem (one line on stderr
//! naming the variable), 1 when the service could not start (e.g. the port is taken).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use sms_sender::{config::Config, logging, service, tls};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sms-sender: {e}");
            return ExitCode::from(2);
        }
    };
    // Still single-threaded here: the CA lookup may set SSL_CERT_FILE.
    let ca = tls::configure_ca_bundle();
    logging::init(config.log_format, &config.log_filter);
    match ca {
        Some(ca) => log::debug!("TLS trust store: {ca}"),
        None => log::warn!("no CA bundle found: TLS connections will fail (set SSL_CERT_FILE)"),
    }
    match service::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("cannot start: {e}");
            eprintln!("sms-sender: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
