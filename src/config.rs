//! Configuration: raw environment values in, one validated [`Config`] out.
//!
//! Two layers, as ripgrep does it: [`Config::from_source`] reads named values through a lookup
//! function (the process environment in production, a map in tests, so tests never mutate the
//! environment) and turns each into a checked, derived value. The rest of the program trusts
//! `Config` and never reads the environment itself.
//!
//! Invariants: every problem is reported as one [`ConfigError`] naming the variable; `http://`
//! (cleartext: the service key, the Twilio credentials and callbacks' phone numbers would travel
//! readable) is accepted only for a loopback host, where the local doubles run; secret values
//! (`SUPABASE_SERVICE_KEY`, `TWILIO_AUTH_TOKEN`, and the account SID, which users keep in secret
//! stores) never appear in an error message or in `Debug` output; nor does a URL's user info or
//! the values of its query: every message quoting a URL shows it through [`redact_url`].

use std::fmt;
use std::time::Duration;

use url::{Host, Url};

use crate::phone;

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
    match src.optional("LOG_FORMAT").as_deref().map(str::trim) {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            Err(err(
                "LOG_FORMAT",
                format!("{shown:?} is not \"text\" or \"json\""),
            ))
        }
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

/// Reads named values; an empty value counts as unset.
struct Source<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    fn optional(&self, var: &'static str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var)
            .ok_or_else(|| err(var, "is required but not set"))
    }

    /// A number in `range`, or `default` when unset.
    fn number<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.optional(var) else {
            return Ok(default);
        };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| err(var, format!("{raw:?} is not a whole number")))?;
        if !range.contains(&value) {
            return Err(err(
                var,
                format!(
                    "{value} is out of range ({}–{})",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }
}

impl Config {
    /// Read and validate the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_source(&|name| std::env::var(name).ok())
    }

    /// Read and validate the configuration from `lookup` (variable name → value).
    pub fn from_source(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let src = Source(lookup);
        // First: the format decides how every other error is printed, so an error in it must be
        // the one reported (main reads it the same way before this runs).
        let log_format = log_format(&src)?;

        let base = parse_base_url("SUPABASE_URL", &src.required("SUPABASE_URL")?)?;
        let key = src.required("SUPABASE_SERVICE_KEY")?;
        let key_kind = classify_supabase_key(key.trim())?;
        let supabase = SupabaseConfig {
            rest_url: format!("{base}/rest/v1"),
            realtime_url: format!("{}/realtime/v1/websocket", websocket_base(&base)),
            key: Secret::new(key.trim()),
            key_kind,
        };

        let account_sid = src.required("TWILIO_ACCOUNT_SID")?.trim().to_string();
        if !is_sid(&account_sid, "AC") {
            return Err(err(
                "TWILIO_ACCOUNT_SID",
                format!(
                    "must be \"AC\" followed by 32 hex digits (the value has {} characters{})",
                    account_sid.chars().count(),
                    if account_sid.starts_with("SK") {
                        "; an API key SID starts with SK, use the account SID"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let auth_token = src.required("TWILIO_AUTH_TOKEN")?;
        if auth_token.trim() != auth_token || auth_token.chars().any(char::is_whitespace) {
            return Err(err("TWILIO_AUTH_TOKEN", "contains white space"));
        }
        let service_sid = src.optional("TWILIO_MESSAGING_SERVICE_SID");
        let phone = src.optional("TWILIO_PHONE_NUMBER");
        if let Some(number) = &phone {
            if !phone::is_e164(number) {
                return Err(err(
                    "TWILIO_PHONE_NUMBER",
                    format!("{number:?} is not E.164 (+ and 8–15 digits)"),
                ));
            }
        }
        let sender = match service_sid {
            Some(sid) => {
                let sid = sid.trim().to_string();
                if !is_sid(&sid, "MG") {
                    return Err(err(
                        "TWILIO_MESSAGING_SERVICE_SID",
                        format!("{sid:?} is not \"MG\" followed by 32 hex digits"),
                    ));
                }
                SmsSender::MessagingService(sid)
            }
            None => SmsSender::Number(phone.ok_or_else(|| {
                err(
                    "TWILIO_PHONE_NUMBER",
                    "is required unless TWILIO_MESSAGING_SERVICE_SID is set",
                )
            })?),
        };
        let api_url = match src.optional("TWILIO_API_URL") {
            Some(url) => parse_base_url("TWILIO_API_URL", &url)?,
            None => "https://api.twilio.com".to_string(),
        };
        let twilio = TwilioConfig {
            api_url,
            account_sid: Secret::new(account_sid),
            auth_token: Secret::new(auth_token),
            sender,
        };

        let port = src.number("PORT", 8080u16, 1..=65535)?;
        let sender_threads = src.number("SENDER_THREADS", 128usize, 1..=256)?;
        let max_retries = src.number("MAX_RETRIES", 3u32, 0..=20)?;
        let backoff_ms = src.number("RETRY_BACKOFF_MS", 1000u64, 1..=600_000)?;
        let log_filter = src
            .optional("RUST_LOG")
            .unwrap_or_else(|| "info".to_string());
        let heartbeat_ms = src.number("REALTIME_HEARTBEAT_MS", 25_000u64, 100..=55_000)?;
        let http_timeout_ms = src.number("HTTP_TIMEOUT_MS", 15_000u64, 200..=120_000)?;
        let shortest_lease = shortest_lease_secs(Duration::from_millis(http_timeout_ms));
        let sending_timeout_secs = src.number(
            "SENDING_TIMEOUT_SECS",
            DEFAULT_LEASE_SECS.max(shortest_lease),
            1..=86_400,
        )?;
        if sending_timeout_secs < shortest_lease {
            return Err(err(
                "SENDING_TIMEOUT_SECS",
                format!(
                    "{sending_timeout_secs} s is too short: a claim must outlive one request and \
                     leave room to renew it, at least 1.5 × (HTTP_TIMEOUT_MS + the connect \
                     timeout) = {shortest_lease} s"
                ),
            ));
        }
        let orphan_check_secs = src.number("ORPHAN_CHECK_SECS", 60u64, 1..=86_400)?;
        let shortest_window = shortest_liveness_window_secs(
            Duration::from_millis(heartbeat_ms),
            Duration::from_millis(http_timeout_ms),
        );
        let liveness_window_secs = src.number(
            "LIVENESS_WINDOW_SECS",
            DEFAULT_LIVENESS_WINDOW_SECS.max(shortest_window),
            1..=86_400,
        )?;
        if liveness_window_secs < shortest_window {
            return Err(err(
                "LIVENESS_WINDOW_SECS",
                format!(
                    "{liveness_window_secs} s is too short: a healthy loop may wait for two \
                     heartbeats (REALTIME_HEARTBEAT_MS) or a request (HTTP_TIMEOUT_MS + the \
                     connect timeout) and a 5 s backoff step; at least {shortest_window} s"
                ),
            ));
        }
        let sweep_interval_secs = src.number("SWEEP_INTERVAL_SECS", 60u64, 1..=86_400)?;
        let settle_ms = src.number("RECONCILE_SETTLE_MS", 10_000u64, 500..=600_000)?;
        let max_sends_per_second = match src.optional("MAX_SENDS_PER_SECOND") {
            None => None,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(r) if r.is_finite() && (0.01..=10_000.0).contains(&r) => Some(r),
                _ => {
                    return Err(err(
                        "MAX_SENDS_PER_SECOND",
                        format!("{raw:?} is not a rate between 0.01 and 10000 (sends per second)"),
                    ))
                }
            },
        };
        let status_callback_url = match src.optional("STATUS_CALLBACK_URL") {
            None => None,
            Some(raw) => {
                let url = raw.trim();
                let shown = redact_url(url);
                // User info is allowed here (Twilio answers a server's Basic challenge with it)
                // but is not the host: the host follows the last '@' before the query.
                let host = ["https://", "http://"]
                    .into_iter()
                    .find_map(|scheme| url.strip_prefix(scheme))
                    .map_or("", |rest| {
                        let before_query = rest.split(['?', '#']).next().unwrap_or("");
                        let after_userinfo = before_query.rsplit('@').next().unwrap_or("");
                        after_userinfo.split('/').next().unwrap_or("")
                    });
                if host.is_empty() || host.contains('_') || url.contains(' ') {
                    return Err(err(
                        "STATUS_CALLBACK_URL",
                        format!(
                            "{shown:?} is not a public http(s) URL (Twilio refuses hosts with \
                             underscores); it must end in /twilio/status"
                        ),
                    ));
                }
                if Url::parse(url).is_err() {
                    return Err(err(
                        "STATUS_CALLBACK_URL",
                        format!("{shown:?} is not a valid URL"),
                    ));
                }
                if !url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or("")
                    .ends_with("/twilio/status")
                {
                    return Err(err(
                        "STATUS_CALLBACK_URL",
                        format!("{shown:?} must point at this service's /twilio/status path"),
                    ));
                }
                // Callbacks carry phone numbers and message SIDs, and a signature an observer
                // could replay: cleartext only where nothing crosses a network. (Only checked:
                // the URL is kept as written, since Twilio signs it verbatim.)
                require_tls_off_loopback("STATUS_CALLBACK_URL", url)?;
                Some(url.to_string())
            }
        };

        Ok(Config {
            supabase,
            twilio,
            port,
            sender_threads,
            max_retries,
            retry_backoff: Duration::from_millis(backoff_ms),
            log_format,
            log_filter,
            heartbeat: Duration::from_millis(heartbeat_ms),
            http_timeout: Duration::from_millis(http_timeout_ms),
            sending_timeout: Duration::from_secs(sending_timeout_secs),
            orphan_check: Duration::from_secs(orphan_check_secs),
            sweep_interval: Duration::from_secs(sweep_interval_secs),
            reconcile_settle: Duration::from_millis(settle_ms),
            max_sends_per_second,
            status_callback_url,
            liveness_window: Duration::from_secs(liveness_window_secs),
        })
    }
}

/// Check an `http(s)://host[:port][/path]` URL and return it without a trailing slash (as
/// written otherwise: `url::Url` splits it for the checks, its normalised form is not used).
///
/// User info (`user:pass@`) and a query or fragment are refused, with a message that names
/// where the credentials belong: the service adds its own paths after the base (a query would
/// end up in the middle of every request URL), it sends the key and the Twilio credentials in
/// headers from their own variables, and a credential written into a URL has already been
/// copied to wherever URLs go (dashboards, shell history, this log). Silently stripping it
/// would hide that; echoing it would repeat the leak, so the message shows [`redact_url`].
fn parse_base_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let (scheme, rest) = ["https://", "http://"]
        .iter()
        .find_map(|s| raw.strip_prefix(s).map(|rest| (*s, rest)))
        .ok_or_else(|| {
            err(
                var,
                format!("{:?} must start with https:// or http://", redact_url(raw)),
            )
        })?;
    let rest = rest.trim_end_matches('/');
    let url = format!("{scheme}{rest}");
    let shown = redact_url(&url);
    let credentials_go = match var {
        "SUPABASE_URL" => "the key belongs in SUPABASE_SERVICE_KEY",
        "TWILIO_API_URL" => "they come from TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        _ => "they belong in their own variables",
    };
    // The same boundary `redact_url` hides: everything before the last '@' ahead of the query.
    if rest.split(['?', '#']).next().unwrap_or("").contains('@') {
        return Err(err(
            var,
            format!(
                "{shown:?} has user info (credentials) before the host; credentials do not \
                 belong in the URL: {credentials_go}"
            ),
        ));
    }
    if rest.contains(['?', '#']) {
        return Err(err(
            var,
            format!(
                "{shown:?} has a query or fragment; a base URL takes neither \
                 (scheme://host[:port][/path]), and credentials do not belong in the URL: \
                 {credentials_go}"
            ),
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    // `Url` refuses an empty host and a port past 65535; it takes `h:` and `h:0`, we do not.
    let valid = Url::parse(&url).is_ok_and(|u| u.host().is_some() && u.port() != Some(0));
    if !valid || authority.ends_with(':') || rest.contains(' ') {
        return Err(err(
            var,
            format!("{shown:?} is not a valid base URL (scheme://host[:port])"),
        ));
    }
    require_tls_off_loopback(var, &url)?;
    Ok(url)
}

/// The most characters of a URL [`redact_url`] shows (the last is `…` when it was cut).
pub const SHOWN_URL_CHARS: usize = 120;

/// `raw`, a URL as configured (valid or not), as it may be shown in a message: the scheme, host,
/// port and path as written, but the user info replaced by `***` and every query and fragment
/// value by `***`, names kept (`https://***@host/path?apikey=***`); at most
/// [`SHOWN_URL_CHARS`] characters. Quote the result with `{:?}`, which escapes control
/// characters. It errs on the side of hiding:
/// - user info is everything before the *last* `@` ahead of the query, since a password may hold
///   an unencoded `/` (an `@` in a path hides the host too);
/// - a password cut short by an unencoded `?` or `#` (`https://u:p?w@host`) leaves `u:p` where
///   the host would be: an authority whose port is not digits is hidden when an `@` follows;
/// - a query item without `=` is hidden whole (it may be a bare token);
/// - a value without `scheme://` is shown only when it looks like a host name (the common slip
///   `abc.supabase.co`) or a path; anything else, such as a key pasted into the wrong variable,
///   is `***`.
pub fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) if is_scheme(&raw[..i]) => raw.split_at(i + 3),
        _ => ("", raw),
    };
    let (before, tail) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let mut out = String::from(scheme);
    match before.rfind('@') {
        Some(at) => {
            out.push_str("***@");
            out.push_str(&before[at + 1..]);
        }
        None => {
            let (authority, path) = before.split_at(before.find('/').unwrap_or(before.len()));
            if scheme.is_empty() && !looks_like_host(authority) {
                return "***".to_string();
            }
            if tail.contains('@') && !is_host_port(authority) {
                out.push_str("***");
            } else {
                out.push_str(authority);
            }
            out.push_str(path);
        }
    }
    let (query, fragment) = match tail.find('#') {
        Some(i) => (&tail[..i], Some(&tail[i + 1..])),
        None => (tail, None),
    };
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        mask_values(&mut out, query);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        mask_values(&mut out, fragment);
    }
    if out.chars().count() > SHOWN_URL_CHARS {
        out = out.chars().take(SHOWN_URL_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// `name=value&…` with each value as `***` (an empty one stays empty) and each item without
/// `=` as `***`.
fn mask_values(out: &mut String, items: &str) {
    for (i, item) in items.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match item.split_once('=') {
            Some((name, "")) => {
                out.push_str(name);
                out.push('=');
            }
            Some((name, _)) => {
                out.push_str(name);
                out.push_str("=***");
            }
            None if item.is_empty() => {}
            None => out.push_str("***"),
        }
    }
}

/// An RFC 3986 scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `host` or `host:digits` (an IPv6 literal in brackets counts as a host).
fn is_host_port(authority: &str) -> bool {
    if authority.starts_with('[') {
        return true;
    }
    match authority.rsplit_once(':') {
        Some((_, port)) => port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// Whether a value written without a scheme is shown: empty (a bare path), `localhost`, an IPv6
/// literal, an IPv4 address, or dotted labels of letters, digits and `-` (at most 63 each) ending
/// in a top-level domain of letters, with an optional numeric port. A token has no dot, an
/// `sb_secret_` key has `_`, a JWT begins with `eyJ` (base64 of `{"`) and ends in its signature.
fn looks_like_host(authority: &str) -> bool {
    if authority.is_empty() || authority.starts_with('[') {
        return true;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => authority,
    };
    if host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    labels.len() > 1
        && !host.starts_with("eyJ")
        && (2..=63).contains(&tld.len())
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Refuse an `http://` URL unless its host is a loopback address: `localhost`, an IPv4 address
/// in 127.0.0.0/8 or the IPv6 loopback `[::1]`, as `url::Url` reads the host (the same reading
/// the HTTP client connects by).
fn require_tls_off_loopback(var: &'static str, url: &str) -> Result<(), ConfigError> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(());
    };
    let parsed = Url::parse(url).ok();
    let loopback = match parsed.as_ref().and_then(Url::host) {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback {
        return Ok(());
    }
    // Unparsed, the host is what follows the user info: never show that.
    let host = parsed.as_ref().and_then(Url::host_str).unwrap_or_else(|| {
        let before_query = rest.split(['?', '#']).next().unwrap_or("");
        let after_userinfo = before_query.rsplit('@').next().unwrap_or("");
        after_userinfo.split('/').next().unwrap_or("")
    });
    let shown: String = host.chars().take(80).collect();
    Err(err(
        var,
        format!(
            "http:// to {shown:?} would send credentials in cleartext; use https:// \
             (http:// is only accepted for loopback: 127.0.0.0/8, localhost, [::1])"
        ),
    ))
}

/// `https://x` → `wss://x`, `http://x` → `ws://x`.
fn websocket_base(base: &str) -> String {
    match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    }
}

/// `prefix` followed by exactly 32 hex digits.
fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Decide how to present a Supabase key, refusing keys that cannot do the job.
fn classify_supabase_key(key: &str) -> Result<KeyKind, ConfigError> {
    const VAR: &str = "SUPABASE_SERVICE_KEY";
    if key.starts_with("sb_secret_") {
        return Ok(KeyKind::Secret);
    }
    if key.starts_with("sb_publishable_") {
        return Err(err(
            VAR,
            "is a publishable key; use the secret key (sb_secret_…) or the service_role key",
        ));
    }
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(err(
            VAR,
            "is neither a JWT (service_role key) nor an sb_secret_ key",
        ));
    }
    let claims = base64url_decode(parts[1])
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .ok_or_else(|| {
            err(
                VAR,
                "is a malformed JWT (its payload is not base64url JSON)",
            )
        })?;
    match claims.get("role").and_then(|r| r.as_str()) {
        Some("service_role") => {}
        Some("anon") => {
            return Err(err(
                VAR,
                "is the anon key; the service_role key is needed to read and update messages",
            ))
        }
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            return Err(err(
                VAR,
                format!("is a JWT for role {shown:?}, not service_role"),
            ));
        }
        None => return Err(err(VAR, "is a JWT without a role claim")),
    }
    if let Some(exp) = claims.get("exp").and_then(|e| e.as_f64()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if exp < now {
            return Err(err(VAR, "is a JWT that has expired (exp is in the past)"));
        }
    }
    Ok(KeyKind::LegacyJwt)
}

/// Decode unpadded base64url (JWT segments); `None` on any invalid character. Hand-written on
/// purpose: the `base64` crate's decoder is not otherwise linked (ureq only encodes), and using
/// it here grew the release binary by 4 KiB.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn b64url(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64url(claims.as_bytes())
        )
    }

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("SUPABASE_URL", "https://abc.supabase.co/".to_string()),
            (
                "SUPABASE_SERVICE_KEY",
                jwt(r#"{"role":"service_role","exp":4102444800}"#),
            ),
            (
                "TWILIO_ACCOUNT_SID",
                format!("AC{}", "0123456789abcdef".repeat(2)),
            ),
            ("TWILIO_AUTH_TOKEN", "supersecrettoken".to_string()),
            ("TWILIO_PHONE_NUMBER", "+15551234567".to_string()),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_source(&|name| vars.get(name).cloned())
    }

    fn load_with(changes: &[(&'static str, Option<&str>)]) -> Result<Config, ConfigError> {
        let mut vars = base();
        for (k, v) in changes {
            match v {
                Some(v) => vars.insert(k, v.to_string()),
                None => vars.remove(k),
            };
        }
        load(&vars)
    }

    #[test]
    fn the_lease_defaults_short_and_grows_with_the_http_timeout() {
        assert_eq!(shortest_lease_secs(Duration::from_secs(15)), 30);
        assert_eq!(shortest_lease_secs(Duration::from_secs(1)), 3);
        let slow = load_with(&[("HTTP_TIMEOUT_MS", Some("30000"))]).unwrap();
        assert_eq!(
            slow.sending_timeout,
            Duration::from_secs(53),
            "1.5 × (30 s + 5 s)"
        );
        let fast = load_with(&[("HTTP_TIMEOUT_MS", Some("1000"))]).unwrap();
        assert_eq!(
            fast.sending_timeout,
            Duration::from_secs(30),
            "never below the default"
        );
        let set = load_with(&[
            ("HTTP_TIMEOUT_MS", Some("1000")),
            ("SENDING_TIMEOUT_SECS", Some("3")),
        ])
        .unwrap();
        assert_eq!(set.sending_timeout, Duration::from_secs(3));
        let e = load_with(&[
            ("SENDING_TIMEOUT_SECS", Some("40")),
            ("HTTP_TIMEOUT_MS", Some("30000")),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("SENDING_TIMEOUT_SECS") && e.contains("53 s"),
            "{e}"
        );
    }

    #[test]
    fn the_liveness_window_outlasts_every_healthy_wait() {
        let c = load(&base()).unwrap();
        assert_eq!(c.liveness_window, Duration::from_secs(120));
        assert_eq!(
            shortest_liveness_window_secs(Duration::from_millis(500), Duration::from_secs(1)),
            7
        );
        let short = load_with(&[
            ("REALTIME_HEARTBEAT_MS", Some("500")),
            ("HTTP_TIMEOUT_MS", Some("1000")),
            ("LIVENESS_WINDOW_SECS", Some("8")),
        ])
        .unwrap();
        assert_eq!(short.liveness_window, Duration::from_secs(8));
        let e = load_with(&[("LIVENESS_WINDOW_SECS", Some("30"))])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("LIVENESS_WINDOW_SECS") && e.contains("at least 55 s"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_derived_urls() {
        let c = load(&base()).unwrap();
        assert_eq!(c.supabase.rest_url, "https://abc.supabase.co/rest/v1");
        assert_eq!(
            c.supabase.realtime_url,
            "wss://abc.supabase.co/realtime/v1/websocket"
        );
        assert_eq!(c.supabase.key_kind, KeyKind::LegacyJwt);
        assert_eq!(c.twilio.api_url, "https://api.twilio.com");
        assert_eq!(c.twilio.sender, SmsSender::Number("+15551234567".into()));
        assert_eq!(c.port, 8080);
        assert_eq!(c.sender_threads, 128);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.retry_backoff, Duration::from_millis(1000));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.http_timeout, Duration::from_secs(15));
        assert_eq!(c.sending_timeout, Duration::from_secs(30));
        assert_eq!(c.orphan_check, Duration::from_secs(60));
        assert_eq!(c.sweep_interval, Duration::from_secs(60));
    }

    #[test]
    fn local_http_url_maps_to_ws() {
        let c = load_with(&[("SUPABASE_URL", Some("http://127.0.0.1:54321"))]).unwrap();
        assert_eq!(
            c.supabase.realtime_url,
            "ws://127.0.0.1:54321/realtime/v1/websocket"
        );
        assert_eq!(c.supabase.rest_url, "http://127.0.0.1:54321/rest/v1");
    }

    #[test]
    fn http_is_refused_except_for_loopback() {
        for (var, url) in [
            ("SUPABASE_URL", "http://abc.supabase.co"),
            ("SUPABASE_URL", "http://10.0.0.1:54321"),
            ("SUPABASE_URL", "http://128.0.0.1"),
            ("SUPABASE_URL", "http://localhost.example.com"),
            ("TWILIO_API_URL", "http://api.twilio.com"),
            ("TWILIO_API_URL", "http://[::2]:80"),
            ("TWILIO_API_URL", "http://127.0.0.1.nip.io"),
            (
                "STATUS_CALLBACK_URL",
                "http://sms.example.com/twilio/status",
            ),
            (
                "STATUS_CALLBACK_URL",
                "http://sms.example.com:8080/twilio/status",
            ),
        ] {
            let e = load_with(&[(var, Some(url))]).unwrap_err();
            assert_eq!(e.var, var, "{url}: {e}");
            assert!(e.problem.contains("use https://"), "{url}: {e}");
        }
        for (var, url) in [
            ("SUPABASE_URL", "http://127.0.0.1:54321"),
            ("SUPABASE_URL", "http://127.8.9.10"),
            ("SUPABASE_URL", "http://LOCALHOST:1"),
            ("TWILIO_API_URL", "http://[::1]:4010"),
            ("TWILIO_API_URL", "https://api.dublin.ie1.twilio.com"),
            ("STATUS_CALLBACK_URL", "http://127.0.0.1:8080/twilio/status"),
            ("STATUS_CALLBACK_URL", "http://localhost/twilio/status"),
            ("STATUS_CALLBACK_URL", "http://[::1]:8080/twilio/status"),
            (
                "STATUS_CALLBACK_URL",
                "https://sms.example.com/twilio/status",
            ),
        ] {
            assert!(load_with(&[(var, Some(url))]).is_ok(), "{var}={url}");
        }
    }

    #[test]
    fn messaging_service_replaces_from() {
        let sid = format!("MG{}", "ab".repeat(16));
        let c = load_with(&[
            ("TWILIO_PHONE_NUMBER", None),
            ("TWILIO_MESSAGING_SERVICE_SID", Some(&sid)),
        ])
        .unwrap();
        assert_eq!(c.twilio.sender, SmsSender::MessagingService(sid));
    }

    #[test]
    fn each_problem_names_its_variable() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("SUPABASE_URL", None, "is required"),
            ("SUPABASE_URL", Some("ftp://x"), "must start with https://"),
            ("SUPABASE_URL", Some("https://"), "not a valid base URL"),
            (
                "SUPABASE_URL",
                Some("http://h:99999"),
                "not a valid base URL",
            ),
            ("SUPABASE_SERVICE_KEY", Some("hello"), "neither a JWT"),
            (
                "SUPABASE_SERVICE_KEY",
                Some("sb_publishable_x"),
                "publishable",
            ),
            ("TWILIO_ACCOUNT_SID", Some("AC123"), "32 hex digits"),
            ("TWILIO_AUTH_TOKEN", None, "is required"),
            ("TWILIO_AUTH_TOKEN", Some("a b"), "white space"),
            ("TWILIO_PHONE_NUMBER", Some("555-1234"), "is not E.164"),
            (
                "TWILIO_PHONE_NUMBER",
                None,
                "unless TWILIO_MESSAGING_SERVICE_SID",
            ),
            ("TWILIO_MESSAGING_SERVICE_SID", Some("MGxyz"), "32 hex"),
            ("TWILIO_API_URL", Some("api.twilio.com"), "must start with"),
            ("PORT", Some("eighty"), "not a whole number"),
            ("PORT", Some("0"), "out of range"),
            ("SENDER_THREADS", Some("0"), "out of range"),
            ("MAX_RETRIES", Some("-1"), "not a whole number"),
            ("RETRY_BACKOFF_MS", Some("0"), "out of range"),
            ("LOG_FORMAT", Some("xml"), "not \"text\" or \"json\""),
            ("REALTIME_HEARTBEAT_MS", Some("60000"), "out of range"),
            ("SENDING_TIMEOUT_SECS", Some("29"), "= 30 s"),
            ("ORPHAN_CHECK_SECS", Some("0"), "out of range"),
            ("SWEEP_INTERVAL_SECS", Some("x"), "not a whole number"),
            ("HTTP_TIMEOUT_MS", Some("50"), "out of range"),
            ("MAX_SENDS_PER_SECOND", Some("0"), "not a rate"),
            ("MAX_SENDS_PER_SECOND", Some("fast"), "not a rate"),
            (
                "STATUS_CALLBACK_URL",
                Some("https://my_host.example/twilio/status"),
                "underscores",
            ),
            (
                "STATUS_CALLBACK_URL",
                Some("https://h.example/other"),
                "/twilio/status",
            ),
        ];
        for (var, value, expected) in cases {
            let e = load_with(&[(var, *value)]).unwrap_err();
            assert_eq!(e.var, *var, "{var}={value:?} gave {e}");
            assert!(e.to_string().contains(expected), "{var}={value:?} gave {e}");
            assert!(e.to_string().starts_with(&format!("{var}: ")));
        }
    }

    #[test]
    fn example_message_from_the_issue() {
        let e = load_with(&[("TWILIO_PHONE_NUMBER", Some("555-1234"))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TWILIO_PHONE_NUMBER: \"555-1234\" is not E.164 (+ and 8–15 digits)"
        );
    }

    #[test]
    fn key_checks_read_the_jwt_claims() {
        let anon = jwt(r#"{"role":"anon","exp":4102444800}"#);
        let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&anon))]).unwrap_err();
        assert!(e.problem.contains("anon key"), "{e}");
        let expired = jwt(r#"{"role":"service_role","exp":1000}"#);
        let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&expired))]).unwrap_err();
        assert!(e.problem.contains("expired"), "{e}");
        let c = load_with(&[("SUPABASE_SERVICE_KEY", Some("sb_secret_abc123"))]).unwrap();
        assert_eq!(c.supabase.key_kind, KeyKind::Secret);
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let secret_key = jwt(r#"{"role":"anon","exp":4102444800}"#);
        let e = load_with(&[("SUPABASE_SERVICE_KEY", Some(&secret_key))]).unwrap_err();
        assert!(!e.to_string().contains(&secret_key));
        let sid = "ACnothexnothexnothexnothexnothex12";
        let e = load_with(&[("TWILIO_ACCOUNT_SID", Some(sid))]).unwrap_err();
        assert!(!e.to_string().contains(sid), "{e}");
        let c = load(&base()).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("supersecrettoken"));
        assert!(!dump.contains(base()["SUPABASE_SERVICE_KEY"].as_str()));
        assert!(!dump.contains("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn redact_url_shows_the_place_never_the_credentials() {
        let key = jwt(r#"{"role":"service_role","exp":4102444800}"#);
        let cases: &[(&str, &str)] = &[
            ("https://abc.supabase.co", "https://abc.supabase.co"),
            ("http://127.0.0.1:54321/x/", "http://127.0.0.1:54321/x/"),
            (
                "http://[::1]:8080/twilio/status",
                "http://[::1]:8080/twilio/status",
            ),
            ("https://h?apikey=s3cret", "https://h?apikey=***"),
            (
                "https://user:tok@sms.example.com/twilio/status?a=1&b=&c#rc=5&rp=all",
                "https://***@sms.example.com/twilio/status?a=***&b=&***#rc=***&rp=***",
            ),
            ("https://tok@h", "https://***@h"),
            // A password with an unencoded '/', '@' or '?': hidden all the same.
            ("https://u:pa/ss@h/p", "https://***@h/p"),
            ("https://u:p@ss@h", "https://***@h"),
            ("https://u:p?w@host/p", "https://***?***"),
            ("https://u:p#w@host", "https://***#***"),
            // An '@' in a query value does not hide the host.
            ("https://h:8080/p?email=a@b.c", "https://h:8080/p?email=***"),
            // No scheme: host names and paths are shown, anything else is not.
            ("abc.supabase.co", "abc.supabase.co"),
            ("localhost:54321", "localhost:54321"),
            ("/twilio/status", "/twilio/status"),
            ("user:pw@abc.supabase.co", "***@abc.supabase.co"),
            ("0123456789abcdef0123456789abcdef", "***"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYSJ9.abc", "***"),
            ("10.0.0.1:54321/p", "10.0.0.1:54321/p"),
            ("sb_secret_abc123", "***"),
            (&key, "***"),
            ("ftp://x", "ftp://x"),
            ("", ""),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), *shown, "{raw}");
        }
        let long = format!("https://h/{}?k=v", "p".repeat(300));
        let shown = redact_url(&long);
        assert_eq!(shown.chars().count(), SHOWN_URL_CHARS);
        assert!(shown.ends_with('…'), "{shown}");
    }

    #[test]
    fn redact_url_never_shows_a_marker_in_user_info_or_query() {
        let mark = "Zq9xMARKx";
        let templates = [
            "https://{}@h",
            "https://u:{}@h/p",
            "https://u:a/{}@h",
            "https://u:a?{}@h",
            "https://h?apikey={}",
            "https://h?{}",
            "https://h?a=1&apikey={}&b=2",
            "https://h/p#token={}",
            "http://u:{}@[::1]:80/x?y=1",
            "{}",
            "u:{}@h.example",
            "HTTPS://{}:x@h",
            "https://h/?k={}=more",
        ];
        for template in templates {
            let raw = template.replace("{}", mark);
            let shown = redact_url(&raw);
            assert!(!shown.contains(mark), "{raw} shown as {shown}");
        }
    }

    #[test]
    fn url_errors_never_show_user_info_or_query_values() {
        let secret = "s3cr3tVALUE";
        let cases = [
            (
                "SUPABASE_URL",
                format!("https://abc.supabase.co?apikey={secret}"),
                "has a query",
            ),
            (
                "SUPABASE_URL",
                format!("https://abc.supabase.co/?apikey={secret}#x"),
                "has a query",
            ),
            (
                "SUPABASE_URL",
                format!("https://service:{secret}@abc.supabase.co"),
                "has user info",
            ),
            (
                "SUPABASE_URL",
                format!("http://service:{secret}@abc.supabase.co"),
                "has user info",
            ),
            ("SUPABASE_URL", secret.to_string(), "must start with"),
            (
                "SUPABASE_URL",
                format!("ftp://u:{secret}@h"),
                "must start with",
            ),
            (
                "TWILIO_API_URL",
                format!("https://AC0123:{secret}@api.twilio.com"),
                "TWILIO_AUTH_TOKEN",
            ),
            (
                "TWILIO_API_URL",
                format!("https://api.twilio.com?token={secret}"),
                "has a query",
            ),
            (
                "TWILIO_API_URL",
                format!("http://u:{secret}@[::1]:99999"),
                "has user info",
            ),
            (
                "STATUS_CALLBACK_URL",
                format!("https://user:{secret}@sms.example.com/wrong"),
                "/twilio/status path",
            ),
            (
                "STATUS_CALLBACK_URL",
                format!("http://user:{secret}@sms.example.com/twilio/status"),
                "use https://",
            ),
            (
                "STATUS_CALLBACK_URL",
                format!("https://sms.example.com/other?token={secret}"),
                "/twilio/status path",
            ),
            (
                "STATUS_CALLBACK_URL",
                format!("https://user:{secret}@my_host.example/twilio/status"),
                "underscores",
            ),
            (
                "STATUS_CALLBACK_URL",
                format!("https://user:{secret}@h^st.example/twilio/status"),
                "not a valid URL",
            ),
        ];
        for (var, url, expected) in cases {
            let e = load_with(&[(var, Some(&url))]).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.var, var, "{url}: {text}");
            assert!(text.contains(expected), "{url}: {text}");
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(!format!("{e:?}").contains(secret), "{url}: {e:?}");
        }
    }

    #[test]
    fn credentials_in_a_base_url_are_refused_naming_where_they_belong() {
        let e = load_with(&[("SUPABASE_URL", Some("https://x:k@abc.supabase.co"))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SUPABASE_URL: \"https://***@abc.supabase.co\" has user info (credentials) before \
             the host; credentials do not belong in the URL: the key belongs in \
             SUPABASE_SERVICE_KEY"
        );
        let e =
            load_with(&[("SUPABASE_URL", Some("https://abc.supabase.co?apikey=k"))]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("SUPABASE_URL: \"https://abc.supabase.co?apikey=***\" has a query"),
            "{e}"
        );
        assert!(e.to_string().contains("SUPABASE_SERVICE_KEY"), "{e}");
    }

    #[test]
    fn a_status_callback_url_keeps_its_user_info_and_query() {
        // Twilio answers a Basic challenge with the URL's user info, and signs the URL as written.
        for url in [
            "https://user:tok@sms.example.com/twilio/status",
            "https://user_name:tok@sms.example.com/twilio/status?x=1",
            "https://sms.example.com/twilio/status?x=1#rc=2",
        ] {
            let c = load_with(&[("STATUS_CALLBACK_URL", Some(url))]).unwrap();
            assert_eq!(c.status_callback_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn log_format_is_checked_first_and_alone() {
        let e = load_with(&[("LOG_FORMAT", Some("yaml")), ("SUPABASE_URL", None)]).unwrap_err();
        assert_eq!(e.var, "LOG_FORMAT", "{e}");
        let vars = HashMap::from([("LOG_FORMAT", " json ".to_string())]);
        let src = Source(&|name| vars.get(name).cloned());
        assert_eq!(log_format(&src), Ok(LogFormat::Json));
        let vars = HashMap::from([("LOG_FORMAT", "JSON".to_string())]);
        let src = Source(&|name| vars.get(name).cloned());
        assert_eq!(log_format(&src).unwrap_err().var, "LOG_FORMAT");
        let none = |_: &str| None;
        assert_eq!(log_format(&Source(&none)), Ok(LogFormat::Text));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = load_with(&[("PORT", Some("")), ("LOG_FORMAT", Some(" "))]).unwrap();
        assert_eq!(c.port, 8080);
        let e = load_with(&[("TWILIO_AUTH_TOKEN", Some(""))]).unwrap_err();
        assert_eq!(e.var, "TWILIO_AUTH_TOKEN");
    }
}
