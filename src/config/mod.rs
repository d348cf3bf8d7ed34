//! Configuration: raw environment values in, one validated [`Config`] out.
//!
//! Two layers, as ripgrep does it: [`Config::from_source`] reads named values through a lookup
//! function (the process environment in production, a map in tests, so tests never mutate the
//! environment) and turns each into a checked, derived value. The rest of the program trusts
//! `Config` and never reads the environment itself. Every variable, with its default, range,
//! secrecy and help, is declared once in [`vars`]; `source` reads a variable as the table says,
//! `url` and `keys` check the URLs and the credentials.
//!
//! Invariants: every problem is reported as one [`ConfigError`] naming the variable; `http://`
//! (cleartext: the service key, the Twilio credentials and callbacks' phone numbers would travel
//! readable) is accepted only for a loopback host, where the local doubles run; secret values
//! (`SUPABASE_SERVICE_KEY`, `TWILIO_AUTH_TOKEN`, and the account SID, which users keep in secret
//! stores) never appear in an error message or in `Debug` output; nor does a URL's user info or
//! the values of its query: every message quoting a URL shows it through [`redact_url`].

mod keys;
mod source;
mod url;
pub mod vars;

use std::fmt;
use std::time::Duration;

use crate::phone;

use self::source::Source;
use self::vars as v;

pub use self::url::{redact_url, SHOWN_URL_CHARS};

/// A value that must never be printed: `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (an HTTP header, a URL parameter).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which kind of Supabase key we hold; it decides how the key is sent (docs/supabase.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A legacy `service_role` JWT: sent as `apikey` and `Authorization: Bearer`, and as the
    /// Realtime join `access_token`.
    LegacyJwt,
    /// A new `sb_secret_…` key: sent as `apikey` only (it is not a JWT, so a Bearer would be
    /// refused); never as a join `access_token` (the server ignores `sb_` tokens there).
    Secret,
}

/// Where and how to reach the Supabase project.
#[derive(Debug, Clone)]
pub struct SupabaseConfig {
    /// `SUPABASE_URL` + `/rest/v1`, without a trailing slash.
    pub rest_url: String,
    /// `ws(s)://…/realtime/v1/websocket` (no query: the key is added when connecting).
    pub realtime_url: String,
    /// The service key (legacy JWT or `sb_secret_`).
    pub key: Secret,
    /// How `key` must be presented.
    pub key_kind: KeyKind,
}

/// Who the SMS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsSender {
    /// An E.164 number owned by the account, sent as `From`.
    Number(String),
    /// A Messaging Service SID (`MG…`), sent as `MessagingServiceSid` instead of `From`.
    MessagingService(String),
}

/// Where and how to reach Twilio.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// Base URL without a trailing slash (`https://api.twilio.com`, a regional edge, a test double).
    pub api_url: String,
    /// `AC` + 32 hex; also the Basic-auth user name.
    pub account_sid: Secret,
    /// The Basic-auth password.
    pub auth_token: Secret,
    /// `From` or `MessagingServiceSid`.
    pub sender: SmsSender,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line with `severity` and `message` (Cloud Logging).
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT` from the process environment, read on its own before anything else: it
    /// decides how every other configuration error is printed. On an error the caller prints it
    /// as text (the default format: the operator asked for a format we cannot honour).
    pub fn from_env() -> Result<LogFormat, ConfigError> {
        log_format(&Source(&|name| std::env::var(name).ok()))
    }
}

/// `LOG_FORMAT`: `text` (the default, also when unset or blank) or `json`.
fn log_format(src: &Source<'_>) -> Result<LogFormat, ConfigError> {
    match src.choice(&v::LOG_FORMAT)? {
        "json" => Ok(LogFormat::Json),
        _ => Ok(LogFormat::Text),
    }
}

/// The default lease of a claim, in seconds: short, because a crashed instance's rows wait for
/// it (plus the settle window) before a successor settles them, and renewed while held.
pub const DEFAULT_LEASE_SECS: u64 = 30;

/// The longest a connection (and its DNS resolution) may take; less when `HTTP_TIMEOUT_MS` is.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// The shortest lease (whole seconds) that works with requests limited to `http_timeout`: one
/// request (its timeout plus connecting) and half as much again to renew in.
pub fn shortest_lease_secs(http_timeout: Duration) -> u64 {
    let budget = http_timeout + http_timeout.min(CONNECT_TIMEOUT_MAX);
    (budget + budget / 2).as_millis().div_ceil(1000) as u64
}

/// The default liveness window, in seconds (see [`crate::ops::liveness`]).
pub const DEFAULT_LIVENESS_WINDOW_SECS: u64 = 120;

/// The shortest liveness window (whole seconds) with these timings: a healthy loop may wait two
/// heartbeats, or one request and its connect, plus a 5 s backoff step.
pub fn shortest_liveness_window_secs(heartbeat: Duration, http_timeout: Duration) -> u64 {
    let request = http_timeout + http_timeout.min(CONNECT_TIMEOUT_MAX);
    let wait = (heartbeat * 2).max(request) + Duration::from_secs(5);
    wait.as_millis().div_ceil(1000) as u64
}

/// The validated configuration the service runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Supabase REST and Realtime.
    pub supabase: SupabaseConfig,
    /// Twilio Messages API.
    pub twilio: TwilioConfig,
    /// Health server port.
    pub port: u16,
    /// Number of blocking sender threads (and so of concurrent Twilio requests).
    pub sender_threads: usize,
    /// Retries after the first attempt for transient send failures.
    pub max_retries: u32,
    /// First retry delay; doubled on each further retry.
    pub retry_backoff: Duration,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// The `RUST_LOG` filter (default `info`).
    pub log_filter: String,
    /// Realtime heartbeat period (`REALTIME_HEARTBEAT_MS`, default 25 s; shorter in tests).
    pub heartbeat: Duration,
    /// Total time limit of one HTTP request to Twilio or Supabase REST (`HTTP_TIMEOUT_MS`).
    pub http_timeout: Duration,
    /// A claim's lease (`SENDING_TIMEOUT_SECS`, 30 s by default): renewed while the sender holds
    /// the row, so a row whose stamp is past belongs to a dead instance. The sender never starts a
    /// Twilio request it could not finish inside the lease.
    pub sending_timeout: Duration,
    /// How often to look for orphaned `sending` rows (`ORPHAN_CHECK_SECS`).
    pub orphan_check: Duration,
    /// How often to sweep `queued_for_send` besides (re)subscriptions (`SWEEP_INTERVAL_SECS`).
    pub sweep_interval: Duration,
    /// How long after an ambiguous create Twilio's list is trusted to show the message
    /// (`RECONCILE_SETTLE_MS`): a "not found" counts only from a look started this long after.
    pub reconcile_settle: Duration,
    /// `MAX_SENDS_PER_SECOND`: the sender's throughput; `None` for unlimited.
    pub max_sends_per_second: Option<f64>,
    /// How long one of the service's own loops may be silent before `/livez` fails
    /// (`LIVENESS_WINDOW_SECS`, default 120 s; never shorter than a request or two heartbeats).
    pub liveness_window: Duration,
    /// `STATUS_CALLBACK_URL`: the public URL of `POST /twilio/status`, when delivery receipts are on.
    pub status_callback_url: Option<String>,
}

/// A configuration problem: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong, for an operator (never containing a secret value).
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

impl Config {
    /// Read and validate the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_source(&|name| std::env::var(name).ok())
    }

    /// Read and validate the configuration from `lookup` (variable name → value), in the order of
    /// [`vars::VARS`].
    pub fn from_source(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let src = Source(lookup);
        // First: the format decides how every other error is printed, so an error in it must be
        // the one reported (main reads it the same way before this runs).
        let log_format = log_format(&src)?;
        let supabase = supabase(&src)?;
        let twilio = twilio(&src)?;
        let port = src.whole::<u16>(&v::PORT)?;
        let sender_threads = src.whole::<usize>(&v::SENDER_THREADS)?;
        let max_retries = src.whole::<u32>(&v::MAX_RETRIES)?;
        let retry_backoff = Duration::from_millis(src.whole(&v::RETRY_BACKOFF_MS)?);
        let log_filter = src.text(&v::RUST_LOG);
        let timings = timings(&src)?;
        let max_sends_per_second = src.decimal(&v::MAX_SENDS_PER_SECOND)?;
        let status_callback_url = src
            .optional(&v::STATUS_CALLBACK_URL)
            .map(|raw| url::status_callback_url(v::STATUS_CALLBACK_URL.name, &raw))
            .transpose()?;
        Ok(Config {
            supabase,
            twilio,
            port,
            sender_threads,
            max_retries,
            retry_backoff,
            log_format,
            log_filter,
            heartbeat: timings.heartbeat,
            http_timeout: timings.http_timeout,
            sending_timeout: timings.sending_timeout,
            orphan_check: timings.orphan_check,
            sweep_interval: timings.sweep_interval,
            reconcile_settle: timings.reconcile_settle,
            max_sends_per_second,
            status_callback_url,
            liveness_window: timings.liveness_window,
        })
    }
}

/// `SUPABASE_URL` and `SUPABASE_SERVICE_KEY`: the REST and Realtime URLs, and how to send the key.
fn supabase(src: &Source<'_>) -> Result<SupabaseConfig, ConfigError> {
    let base = url::parse_base_url(v::SUPABASE_URL.name, &src.required(&v::SUPABASE_URL)?)?;
    let key = src.required(&v::SUPABASE_SERVICE_KEY)?;
    let key_kind = keys::classify_supabase_key(key.trim())?;
    Ok(SupabaseConfig {
        rest_url: format!("{base}/rest/v1"),
        realtime_url: format!("{}/realtime/v1/websocket", url::websocket_base(&base)),
        key: Secret::new(key.trim()),
        key_kind,
    })
}

/// The Twilio credentials, the sender and the API's base URL.
fn twilio(src: &Source<'_>) -> Result<TwilioConfig, ConfigError> {
    let account_sid = keys::account_sid(&src.required(&v::TWILIO_ACCOUNT_SID)?)?;
    let auth_token = keys::auth_token(src.required(&v::TWILIO_AUTH_TOKEN)?)?;
    let sender = sms_sender(src)?;
    let api_url = url::parse_base_url(v::TWILIO_API_URL.name, &src.text(&v::TWILIO_API_URL))?;
    Ok(TwilioConfig {
        api_url,
        account_sid: Secret::new(account_sid),
        auth_token: Secret::new(auth_token),
        sender,
    })
}

/// `TWILIO_MESSAGING_SERVICE_SID` when set, else `TWILIO_PHONE_NUMBER`; a number that is set is
/// E.164 either way.
fn sms_sender(src: &Source<'_>) -> Result<SmsSender, ConfigError> {
    const PHONE: &v::Var = &v::TWILIO_PHONE_NUMBER;
    let number = src.optional(PHONE);
    if let Some(number) = &number {
        if !phone::is_e164(number) {
            return Err(err(
                PHONE.name,
                format!("{number:?} is not E.164 (+ and 8–15 digits)"),
            ));
        }
    }
    if let Some(sid) = src.optional(&v::TWILIO_MESSAGING_SERVICE_SID) {
        return Ok(SmsSender::MessagingService(keys::messaging_service_sid(
            &sid,
        )?));
    }
    number.map(SmsSender::Number).ok_or_else(|| {
        let other = v::TWILIO_MESSAGING_SERVICE_SID.name;
        err(PHONE.name, format!("is required unless {other} is set"))
    })
}

/// The periods and limits, checked against each other.
struct Timings {
    heartbeat: Duration,
    http_timeout: Duration,
    sending_timeout: Duration,
    orphan_check: Duration,
    liveness_window: Duration,
    sweep_interval: Duration,
    reconcile_settle: Duration,
}

fn timings(src: &Source<'_>) -> Result<Timings, ConfigError> {
    let heartbeat = Duration::from_millis(src.whole(&v::REALTIME_HEARTBEAT_MS)?);
    let http_timeout = Duration::from_millis(src.whole(&v::HTTP_TIMEOUT_MS)?);
    let sending_timeout = lease(src, http_timeout)?;
    let orphan_check = Duration::from_secs(src.whole(&v::ORPHAN_CHECK_SECS)?);
    let liveness_window = liveness_window(src, heartbeat, http_timeout)?;
    Ok(Timings {
        heartbeat,
        http_timeout,
        sending_timeout,
        orphan_check,
        liveness_window,
        sweep_interval: Duration::from_secs(src.whole(&v::SWEEP_INTERVAL_SECS)?),
        reconcile_settle: Duration::from_millis(src.whole(&v::RECONCILE_SETTLE_MS)?),
    })
}

/// `SENDING_TIMEOUT_SECS`: never shorter than [`shortest_lease_secs`], which is also the default
/// when that is longer than the table's.
fn lease(src: &Source<'_>, http_timeout: Duration) -> Result<Duration, ConfigError> {
    const VAR: &v::Var = &v::SENDING_TIMEOUT_SECS;
    let shortest = shortest_lease_secs(http_timeout);
    let secs: u64 = src.whole_or(VAR, DEFAULT_LEASE_SECS.max(shortest))?;
    if secs < shortest {
        return Err(err(
            VAR.name,
            format!(
                "{secs} s is too short: a claim must outlive one request and leave room to \
                 renew it, at least 1.5 × (HTTP_TIMEOUT_MS + the connect timeout) = {shortest} s"
            ),
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// `LIVENESS_WINDOW_SECS`: never shorter than [`shortest_liveness_window_secs`], which is also
/// the default when that is longer than the table's.
fn liveness_window(
    src: &Source<'_>,
    heartbeat: Duration,
    http_timeout: Duration,
) -> Result<Duration, ConfigError> {
    const VAR: &v::Var = &v::LIVENESS_WINDOW_SECS;
    let shortest = shortest_liveness_window_secs(heartbeat, http_timeout);
    let secs: u64 = src.whole_or(VAR, DEFAULT_LIVENESS_WINDOW_SECS.max(shortest))?;
    if secs < shortest {
        return Err(err(
            VAR.name,
            format!(
                "{secs} s is too short: a healthy loop may wait for two heartbeats \
                 (REALTIME_HEARTBEAT_MS) or a request (HTTP_TIMEOUT_MS + the connect timeout) \
                 and a 5 s backoff step; at least {shortest} s"
            ),
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
