//! The table of configuration: every environment variable the service reads, declared once with
//! its default, the values it accepts, whether it is required, whether it is secret, and one line
//! of help.
//!
//! Invariants: [`VARS`] lists every variable in the order [`super::Config::from_source`] checks
//! them (so the first variable an error names is the first wrong one in the table; a unit test
//! records the reads and compares); the parser takes defaults and ranges from here, never from
//! literals of its own; the `--help` text ([`usage`]) and the README's configuration table (a test
//! compares them) are derived from, or checked against, this table alone.

use std::fmt::{self, Write as _};

/// Whether a variable's value may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrecy {
    /// Never printed: not in an error, not in `Debug` output.
    Secret,
    /// May be quoted in an error message (URLs through `redact_url`).
    Plain,
}

/// Which part of the program reads a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// [`super::Config::from_source`].
    Config,
    /// [`crate::http::trust_store`], when it looks for the CA bundle.
    TrustStore,
}

/// What a variable accepts, and what it means when unset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Must be set; its value follows `shape`.
    Required {
        /// The accepted values, for people.
        shape: &'static str,
    },
    /// Must be set unless `other` is.
    RequiredUnless {
        /// The variable that makes this one optional.
        other: &'static str,
        /// The accepted values, for people.
        shape: &'static str,
    },
    /// A whole number in `min..=max`; `default` when unset.
    Whole {
        /// The value when unset.
        default: u64,
        /// The smallest accepted value.
        min: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// A decimal number in `min..=max`; unset means `unset`.
    Decimal {
        /// What an unset value means, for people.
        unset: &'static str,
        /// The smallest accepted value.
        min: f64,
        /// The largest accepted value.
        max: f64,
    },
    /// One of these words; the first when unset.
    OneOf(&'static [&'static str]),
    /// Text following `shape`; `default` when unset.
    Text {
        /// The value when unset.
        default: &'static str,
        /// The accepted values, for people.
        shape: &'static str,
    },
    /// Optional text following `shape`; unset means `unset`.
    Optional {
        /// What an unset value means, for people.
        unset: &'static str,
        /// The accepted values, for people.
        shape: &'static str,
    },
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Var {
    /// The variable's name.
    pub name: &'static str,
    /// What it accepts and its default.
    pub value: Value,
    /// Whether its value may be shown.
    pub secrecy: Secrecy,
    /// Who reads it.
    pub reader: Reader,
    /// What it does, in one line.
    pub help: &'static str,
}

impl Var {
    /// Whether the service refuses to start without it (alone or with its alternative).
    pub fn required(&self) -> bool {
        matches!(
            self.value,
            Value::Required { .. } | Value::RequiredUnless { .. }
        )
    }

    /// The default as the README's table writes it: `required`, a value in backquotes, or a word
    /// saying what an unset variable means (`unset`, `unlimited`, `probed`).
    pub fn readme_default(&self) -> String {
        match self.value {
            Value::Required { .. } => "required".to_string(),
            Value::RequiredUnless { other, .. } => format!("required unless `{other}`"),
            Value::Whole { default, .. } => format!("`{default}`"),
            Value::OneOf(choices) => format!("`{}`", choices[0]),
            Value::Text { default, .. } => format!("`{default}`"),
            Value::Decimal { unset, .. } | Value::Optional { unset, .. } => unset.to_string(),
        }
    }
}

/// `(default, range)` as `--help` shows it after an optional variable's name.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Required { shape } | Value::RequiredUnless { shape, .. } => {
                write!(f, "({shape})")
            }
            Value::Whole { default, min, max } => write!(f, "({default}, {min}–{max})"),
            Value::Decimal { unset, min, max } => write!(f, "({unset}, {min}–{max})"),
            Value::OneOf(choices) => write!(f, "({})", choices.join("|")),
            Value::Text { default, .. } => write!(f, "({default})"),
            Value::Optional { unset, .. } => write!(f, "({unset})"),
        }
    }
}

const fn var(name: &'static str, value: Value, secrecy: Secrecy, help: &'static str) -> Var {
    Var {
        name,
        value,
        secrecy,
        reader: Reader::Config,
        help,
    }
}

const fn whole(name: &'static str, default: u64, min: u64, max: u64, help: &'static str) -> Var {
    var(
        name,
        Value::Whole { default, min, max },
        Secrecy::Plain,
        help,
    )
}

use Secrecy::{Plain, Secret};

/// `LOG_FORMAT`.
pub const LOG_FORMAT: Var = var(
    "LOG_FORMAT",
    Value::OneOf(&["text", "json"]),
    Plain,
    "text lines, or one JSON object per line (Cloud Logging)",
);
/// `SUPABASE_URL`.
pub const SUPABASE_URL: Var = var(
    "SUPABASE_URL",
    Value::Required {
        shape: "https:// base URL; http:// only on loopback",
    },
    Plain,
    "the Supabase project; REST and Realtime paths are added to it",
);
/// `SUPABASE_SERVICE_KEY`.
pub const SUPABASE_SERVICE_KEY: Var = var(
    "SUPABASE_SERVICE_KEY",
    Value::Required {
        shape: "service_role JWT or sb_secret_ key",
    },
    Secret,
    "the key REST and Realtime are called with",
);
/// `TWILIO_ACCOUNT_SID`.
pub const TWILIO_ACCOUNT_SID: Var = var(
    "TWILIO_ACCOUNT_SID",
    Value::Required {
        shape: "AC + 32 hex digits",
    },
    Secret,
    "the Twilio account; also the Basic-auth user name",
);
/// `TWILIO_AUTH_TOKEN`.
pub const TWILIO_AUTH_TOKEN: Var = var(
    "TWILIO_AUTH_TOKEN",
    Value::Required {
        shape: "no white space",
    },
    Secret,
    "the Basic-auth password; also signs status callbacks",
);
/// `TWILIO_PHONE_NUMBER`.
pub const TWILIO_PHONE_NUMBER: Var = var(
    "TWILIO_PHONE_NUMBER",
    Value::RequiredUnless {
        other: "TWILIO_MESSAGING_SERVICE_SID",
        shape: "E.164",
    },
    Plain,
    "the number SMS are sent from",
);
/// `TWILIO_MESSAGING_SERVICE_SID`.
pub const TWILIO_MESSAGING_SERVICE_SID: Var = var(
    "TWILIO_MESSAGING_SERVICE_SID",
    Value::Optional {
        unset: "unset",
        shape: "MG + 32 hex digits",
    },
    Plain,
    "sent as MessagingServiceSid instead of From",
);
/// `TWILIO_API_URL`.
pub const TWILIO_API_URL: Var = var(
    "TWILIO_API_URL",
    Value::Text {
        default: "https://api.twilio.com",
        shape: "https:// base URL; http:// only on loopback",
    },
    Plain,
    "Twilio's API (a regional edge, a test double)",
);
/// `PORT`.
pub const PORT: Var = whole("PORT", 8080, 1, 65_535, "the health and metrics port");
/// `SENDER_THREADS`.
pub const SENDER_THREADS: Var = whole(
    "SENDER_THREADS",
    128,
    1,
    256,
    "the most sender threads, and so concurrent Twilio creates",
);
/// `MAX_RETRIES`.
pub const MAX_RETRIES: Var = whole(
    "MAX_RETRIES",
    3,
    0,
    20,
    "retries of a send after its first attempt",
);
/// `RETRY_BACKOFF_MS`.
pub const RETRY_BACKOFF_MS: Var = whole(
    "RETRY_BACKOFF_MS",
    1000,
    1,
    600_000,
    "the first retry's delay, doubled on each further retry",
);
/// `RUST_LOG`.
pub const RUST_LOG: Var = var(
    "RUST_LOG",
    Value::Text {
        default: "info",
        shape: "env_logger directives",
    },
    Plain,
    "the log filter",
);
/// `REALTIME_HEARTBEAT_MS`.
pub const REALTIME_HEARTBEAT_MS: Var = whole(
    "REALTIME_HEARTBEAT_MS",
    25_000,
    100,
    55_000,
    "the Realtime heartbeat period",
);
/// `HTTP_TIMEOUT_MS`.
pub const HTTP_TIMEOUT_MS: Var = whole(
    "HTTP_TIMEOUT_MS",
    15_000,
    200,
    120_000,
    "the total time limit of one request to Twilio or Supabase REST",
);
/// `SENDING_TIMEOUT_SECS`: the default grows with `HTTP_TIMEOUT_MS` (see
/// [`super::shortest_lease_secs`]).
pub const SENDING_TIMEOUT_SECS: Var = whole(
    "SENDING_TIMEOUT_SECS",
    super::DEFAULT_LEASE_SECS,
    1,
    86_400,
    "a claim's lease, renewed while its sender holds the row",
);
/// `ORPHAN_CHECK_SECS`.
pub const ORPHAN_CHECK_SECS: Var = whole(
    "ORPHAN_CHECK_SECS",
    60,
    1,
    86_400,
    "the longest gap between looks for orphaned claims",
);
/// `LIVENESS_WINDOW_SECS`: the default grows with the heartbeat and the request timeout (see
/// [`super::shortest_liveness_window_secs`]).
pub const LIVENESS_WINDOW_SECS: Var = whole(
    "LIVENESS_WINDOW_SECS",
    super::DEFAULT_LIVENESS_WINDOW_SECS,
    1,
    86_400,
    "how long one of the service's loops may be silent before /livez fails",
);
/// `SWEEP_INTERVAL_SECS`.
pub const SWEEP_INTERVAL_SECS: Var = whole(
    "SWEEP_INTERVAL_SECS",
    60,
    1,
    86_400,
    "how often to sweep queued messages besides every (re)subscription",
);
/// `RECONCILE_SETTLE_MS`.
pub const RECONCILE_SETTLE_MS: Var = whole(
    "RECONCILE_SETTLE_MS",
    10_000,
    500,
    600_000,
    "how long Twilio's list is given to show a create whose outcome is unknown",
);
/// `MAX_SENDS_PER_SECOND`.
pub const MAX_SENDS_PER_SECOND: Var = var(
    "MAX_SENDS_PER_SECOND",
    Value::Decimal {
        unset: "unlimited",
        min: 0.01,
        max: 10_000.0,
    },
    Plain,
    "the sender's throughput, shared by all sender threads",
);
/// `STATUS_CALLBACK_URL`.
pub const STATUS_CALLBACK_URL: Var = var(
    "STATUS_CALLBACK_URL",
    Value::Optional {
        unset: "unset",
        shape: "public https:// URL ending in /twilio/status",
    },
    Plain,
    "turns on delivery receipts: where Twilio posts them",
);
/// `SSL_CERT_FILE`.
pub const SSL_CERT_FILE: Var = Var {
    reader: Reader::TrustStore,
    ..var(
        "SSL_CERT_FILE",
        Value::Optional {
            unset: "probed",
            shape: "a PEM bundle",
        },
        Plain,
        "the CA bundle TLS trusts; the usual places are probed when unset",
    )
};
/// `SSL_CERT_DIR`.
pub const SSL_CERT_DIR: Var = Var {
    reader: Reader::TrustStore,
    ..var(
        "SSL_CERT_DIR",
        Value::Optional {
            unset: "probed",
            shape: "a hashed certificate directory",
        },
        Plain,
        "more CAs TLS trusts, read as a handshake needs them",
    )
};

/// Every variable the service reads, in the order the configuration is checked.
pub const VARS: &[Var] = &[
    LOG_FORMAT,
    SUPABASE_URL,
    SUPABASE_SERVICE_KEY,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    TWILIO_PHONE_NUMBER,
    TWILIO_MESSAGING_SERVICE_SID,
    TWILIO_API_URL,
    PORT,
    SENDER_THREADS,
    MAX_RETRIES,
    RETRY_BACKOFF_MS,
    RUST_LOG,
    REALTIME_HEARTBEAT_MS,
    HTTP_TIMEOUT_MS,
    SENDING_TIMEOUT_SECS,
    ORPHAN_CHECK_SECS,
    LIVENESS_WINDOW_SECS,
    SWEEP_INTERVAL_SECS,
    RECONCILE_SETTLE_MS,
    MAX_SENDS_PER_SECOND,
    STATUS_CALLBACK_URL,
    SSL_CERT_FILE,
    SSL_CERT_DIR,
];

/// The widest line of the variable lists in [`usage`].
const USAGE_WIDTH: usize = 92;

const USAGE_HEAD: &str = "\
sms-sender: sends the SMS of a Supabase `messages` table through Twilio.

Usage:
  sms-sender            run the service (configured by environment variables)
  sms-sender check      check the configuration, Supabase and Twilio without sending an SMS
  sms-sender --help     this text
  sms-sender --version  the version

";

/// The `--help` text: the commands, then every variable of [`VARS`], the required ones by name
/// and the optional ones with their default and range.
pub fn usage() -> String {
    let mut required: Vec<String> = Vec::new();
    let mut alternatives: Vec<String> = Vec::new();
    let mut optional: Vec<String> = Vec::new();
    let is_alternative = |name: &str| {
        VARS.iter()
            .any(|v| matches!(v.value, Value::RequiredUnless { other, .. } if other == name))
    };
    for v in VARS {
        match v.value {
            Value::Required { .. } => required.push(format!("{},", v.name)),
            Value::RequiredUnless { other, .. } => {
                alternatives.push(format!("{} or {other}", v.name))
            }
            _ if is_alternative(v.name) => {}
            value => optional.push(format!("{} {value},", v.name)),
        }
    }
    if !alternatives.is_empty() {
        required.push("and".to_string());
        required.push(alternatives.join(", "));
    }
    end_list(&mut required);
    end_list(&mut optional);
    let mut out = String::from(USAGE_HEAD);
    wrap(&mut out, "Required:", &required);
    wrap(&mut out, "Optional (default, range):", &optional);
    out.push_str("See README.md for what each does.\n");
    out
}

/// Ends the last item of a list with `.` instead of `,`.
fn end_list(items: &mut [String]) {
    if let Some(last) = items.last_mut() {
        if last.ends_with(',') {
            last.pop();
        }
        last.push('.');
    }
}

/// Appends `head` and `items`, separated by spaces and broken into lines of at most
/// [`USAGE_WIDTH`] characters (an item is never split).
fn wrap(out: &mut String, head: &str, items: &[String]) {
    let mut line = head.to_string();
    for item in items {
        if line.chars().count() + 1 + item.chars().count() > USAGE_WIDTH {
            let _ = writeln!(out, "{line}");
            line.clear();
        } else {
            line.push(' ');
        }
        line.push_str(item);
    }
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_secrets_are_the_three_credentials() {
        let mut names: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARS.len());
        let secrets: Vec<&str> = VARS
            .iter()
            .filter(|v| v.secrecy == Secrecy::Secret)
            .map(|v| v.name)
            .collect();
        assert_eq!(
            secrets,
            [
                "SUPABASE_SERVICE_KEY",
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN"
            ]
        );
    }

    #[test]
    fn defaults_lie_in_their_ranges() {
        for v in VARS {
            if let Value::Whole { default, min, max } = v.value {
                assert!((min..=max).contains(&default), "{}", v.name);
            }
            assert!(!v.help.is_empty() && !v.help.contains('\n'), "{}", v.name);
        }
    }

    #[test]
    fn usage_names_every_variable_with_its_default_and_range() {
        let text = usage();
        for v in VARS {
            assert!(text.contains(v.name), "{} missing from\n{text}", v.name);
            if let Value::Whole { default, min, max } = v.value {
                let shown = format!("{} ({default}, {min}–{max})", v.name);
                assert!(text.contains(&shown), "{shown} missing from\n{text}");
            }
        }
        assert!(text.contains("LOG_FORMAT (text|json)"), "{text}");
        assert!(text.contains("MAX_SENDS_PER_SECOND (unlimited, 0.01–10000)"));
        assert!(text.contains(
            "TWILIO_AUTH_TOKEN, and\nTWILIO_PHONE_NUMBER or TWILIO_MESSAGING_SERVICE_SID.\n"
        ));
        assert!(text.lines().all(|line| line.chars().count() <= USAGE_WIDTH));
    }
}
