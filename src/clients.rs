//! The clients every part shares — Supabase REST, Twilio, and the one TLS connector — built from
//! the configuration, for the service and the `check` command alike.
//!
//! Invariant: the TLS connector (and so the parsed CA bundle) is built at most once per process
//! run, only when some URL is `https://` or `wss://`, and REST, Twilio and Realtime all use it.
//! Building the clients uses no network.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::http::{self, Observer};
use crate::supabase::rest::Rest;
use crate::twilio::client::Twilio;

/// The clients every part shares.
pub struct Clients {
    /// Supabase REST.
    pub rest: Rest,
    /// Twilio.
    pub twilio: Twilio,
    /// The one TLS connector (and so the one parsed CA bundle) of every connection — REST,
    /// Twilio and Realtime; `None` when no URL needs TLS.
    pub tls: Option<Arc<native_tls::TlsConnector>>,
}

/// Who is told what each client's requests came to.
pub struct Observers {
    /// Of Supabase REST.
    pub rest: Arc<dyn Observer>,
    /// Of Twilio.
    pub twilio: Arc<dyn Observer>,
}

/// The clients could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientsError {
    /// The TLS connector could not be built (no usable CA bundle, OpenSSL failure).
    Tls(String),
}

impl std::fmt::Display for ClientsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientsError::Tls(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ClientsError {}

/// The limit of connecting (and of resolving the host name) for every HTTP client.
pub fn connect_timeout(config: &Config) -> Duration {
    config.http_timeout.min(crate::config::CONNECT_TIMEOUT_MAX)
}

/// Whether some URL of `config` needs TLS.
fn needs_tls(config: &Config) -> bool {
    [&config.supabase.rest_url, &config.twilio.api_url]
        .iter()
        .any(|url| url.starts_with("https://"))
        || config.supabase.realtime_url.starts_with("wss://")
}

/// Build the REST and Twilio clients and the TLS connector they share with Realtime (no network
/// use). The connector is built once, and only when some URL is `https://` or `wss://`.
pub fn build(config: &Config, observers: Observers) -> Result<Clients, ClientsError> {
    let connect_timeout = connect_timeout(config);
    let tls = if needs_tls(config) {
        Some(http::tls_connector().map_err(ClientsError::Tls)?)
    } else {
        None
    };
    let rest = Rest::new(
        &config.supabase,
        config.sender_threads + 4,
        connect_timeout,
        config.http_timeout,
        tls.clone(),
        observers.rest,
    );
    let agent = http::Agent::new(
        connect_timeout,
        config.http_timeout,
        config.sender_threads + 1,
        tls.clone(),
    );
    let twilio = Twilio::new(
        &config.twilio,
        agent,
        config.status_callback_url.as_deref(),
        observers.twilio,
    );
    Ok(Clients { rest, twilio, tls })
}
