//! Decoder harnesses shared by the property test (`tests/decoders/`, part of `cargo test`) and
//! the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `make fuzz`).
//!
//! A harness takes arbitrary bytes, hands them to one decoder of untrusted input and checks what
//! must hold for *every* input. The checks use independent oracles (a second formulation of the
//! rule, never a copy of the decoder's code), so a fuzzer finds wrong answers as well as panics.
//! A panic or a failed assertion here is the bug being looked for.
//!
//! Harnesses are grouped into families, one family per fuzz target, and both the property test
//! and the fuzz targets read the families from here. To cover a new decoder, write its harness
//! function and add one `("name", harness)` line to its family (or a new family to [`FAMILIES`],
//! plus a three-line target under `fuzz_targets/` and a `fuzz/Cargo.toml` entry).
//!
//! This file is compiled as a module of each fuzz target and of the test, by `#[path]`, because
//! the fuzz crate is outside the main workspace and the test cannot depend on it.

// Each fuzz target uses only its own family, so the other families look unused to the compiler.
#![allow(dead_code)]

use std::borrow::Cow;
use std::time::Duration;

use serde_json::{json, Value};
use sms_sender::config::{Config, ConfigError, SmsSender};
use sms_sender::message::MessageId;
use sms_sender::redact;
use sms_sender::supabase::realtime::frame::{self, ServerFrame};
use sms_sender::supabase::rest::{self, Claim, RestError};
use sms_sender::timestamp;
use sms_sender::twilio::client::{self, SendError};

/// One harness: never panics on any input unless the decoder is wrong.
pub type Harness = fn(&[u8]);

/// The harnesses of one fuzz target.
pub struct Family {
    /// The fuzz target's name, which is also its seed directory under `fuzz/seeds/`.
    pub name: &'static str,
    /// Every input of the target is fed to each of these.
    pub harnesses: &'static [(&'static str, Harness)],
}

/// Supabase Realtime (Phoenix V1) frames.
pub const REALTIME_FRAME: Family = Family {
    name: "realtime_frame",
    harnesses: &[
        ("realtime::frame::decode", realtime_decode),
        ("realtime::frame::binding_id", realtime_binding_id),
    ],
};

/// PostgREST response bodies, and the ids read out of them.
pub const POSTGREST_BODY: Family = Family {
    name: "postgrest_body",
    harnesses: &[
        ("postgrest::parse_claim", postgrest_claim),
        ("postgrest::parse_error", postgrest_error),
        ("message::MessageId::parse", message_id),
    ],
};

/// Twilio Messages API response bodies.
pub const TWILIO_BODY: Family = Family {
    name: "twilio_body",
    harnesses: &[
        ("twilio::parse_created", twilio_created),
        ("twilio::parse_rejection", twilio_rejection),
        ("twilio::parse_list_page", twilio_list_page),
    ],
};

/// The environment, as `NAME=value` lines.
pub const CONFIG: Family = Family {
    name: "config",
    harnesses: &[("config::Config::from_source", config_lines)],
};

/// Timestamps read from PostgREST rows (`timestamptz`) and Twilio (`date_created`, RFC 2822).
pub const CLOCK: Family = Family {
    name: "clock",
    harnesses: &[
        ("timestamp::parse_rfc3339", clock_rfc3339),
        ("timestamp::parse_rfc2822", clock_rfc2822),
    ],
};

/// Text from outside (Twilio's error messages), masked before it is logged.
pub const REDACT: Family = Family {
    name: "redact",
    harnesses: &[
        ("redact::scrub", redact_scrub),
        ("redact::scrub_with", redact_scrub_with),
    ],
};

/// Every family, in the order the property test runs them.
pub const FAMILIES: &[Family] = &[
    REALTIME_FRAME,
    POSTGREST_BODY,
    TWILIO_BODY,
    CONFIG,
    CLOCK,
    REDACT,
];

/// Feed `data` to every harness of `family` (the body of each fuzz target).
pub fn run(family: &Family, data: &[u8]) {
    for (_, harness) in family.harnesses {
        harness(data);
    }
}

/// The decoders take `&str` (ureq and the WebSocket layer hand over text), so bytes are converted
/// the way a lossy transport would; invalid UTF-8 then shows up as U+FFFD inside the text.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// An HTTP status chosen from the input, so that runs vary it without spending input bytes on it
/// (a status prefix would make the seed files unreadable). Includes the edge values of `u16`.
fn status_of(data: &[u8], choices: &[u16]) -> u16 {
    let mix = data
        .iter()
        .fold(data.len(), |acc, &b| acc.wrapping_mul(31) ^ usize::from(b));
    choices[mix % choices.len()]
}

const ERROR_STATUSES: &[u16] = &[
    400, 401, 403, 404, 406, 409, 429, 500, 502, 503, 504, 0, 65535,
];
const SUCCESS_STATUSES: &[u16] = &[200, 201, 202, 204];

// ----------------------------------------------------------------------------------------------
// Oracles: each restates a rule from docs/supabase.md and docs/twilio.md in a different way than the code under test.

/// JSON's four white-space characters (RFC 8259 §2); nothing else may surround a value.
fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The body is `[]` with any JSON white space around or inside: the only way to say "no rows".
pub fn is_empty_json_array(text: &str) -> bool {
    let significant: String = text.chars().filter(|&c| !is_json_space(c)).collect();
    significant == "[]"
}

/// Whether serde could possibly read a struct from this text: serde_json accepts a struct as an
/// object or (positionally) as an array, so the first significant character must be `{` or `[`.
pub fn may_hold_a_json_struct(text: &str) -> bool {
    matches!(
        text.trim_start_matches(is_json_space).chars().next(),
        Some('{' | '[')
    )
}

/// What an error body may be reduced to in a log line, JSON or not: a scrubbed text (bounded,
/// one line, no number, no SID, no key), see [`check_scrubbed`].
pub fn assert_plain_excerpt(message: &str, input: &str) {
    check_scrubbed(message, input);
}

/// `8-4-4-4-12` groups of ASCII hex digits, read group by group.
pub fn is_canonical_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// `^(SM|MM)[0-9a-fA-F]{32}$` (docs/twilio.md §2).
pub fn is_message_sid(sid: &str) -> bool {
    let Some(hex) = sid.strip_prefix("SM").or_else(|| sid.strip_prefix("MM")) else {
        return false;
    };
    hex.chars().count() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// `+`, then 8 to 15 ASCII digits of which the first is not 0 (E.164 as Twilio takes it).
pub fn is_e164(number: &str) -> bool {
    let mut chars = number.chars();
    if chars.next() != Some('+') {
        return false;
    }
    let digits: Vec<char> = chars.collect();
    (8..=15).contains(&digits.len()) && digits.iter().all(char::is_ascii_digit) && digits[0] != '0'
}

// ----------------------------------------------------------------------------------------------
// Realtime

fn realtime_decode(data: &[u8]) {
    let text = text(data);
    match frame::decode(&text) {
        // The join reply's `response` is handed to `binding_id` next, so chain the two as the
        // client does.
        Ok(ServerFrame::Reply { response, .. }) => check_binding_id(&response),
        Ok(other) => drop(format!("{other:?}")),
        Err(e) => drop(e.to_string()),
    }
}

fn realtime_binding_id(data: &[u8]) {
    // Raw bytes this time: serde_json rejects invalid UTF-8 itself, which is worth exercising.
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    check_binding_id(&value);
    // A whole frame (seed corpus) or a lone binding item also reach the interesting branches.
    if let Some(response) = value.pointer("/payload/response") {
        check_binding_id(response);
    }
    check_binding_id(&json!({ "postgres_changes": [value] }));
}

/// `binding_id` may only answer `Ok(id)` for exactly our one binding, echoed with that id.
pub fn check_binding_id(response: &Value) {
    let Ok(id) = frame::binding_id(response) else {
        return;
    };
    let items = response["postgres_changes"]
        .as_array()
        .expect("Ok without a postgres_changes list");
    assert_eq!(items.len(), 1, "Ok({id}) for {response}");
    let item = &items[0];
    assert_eq!(item["id"].as_u64(), Some(id), "{response}");
    let event = item["event"].as_str().unwrap_or_default();
    assert!(event.eq_ignore_ascii_case("update"), "{response}");
    assert_eq!(item["schema"], "public", "{response}");
    assert_eq!(item["table"], "messages", "{response}");
    assert_eq!(item["filter"], "status=eq.queued_for_send", "{response}");
}

// ----------------------------------------------------------------------------------------------
// PostgREST

/// The id the claim seeds are written for, so a fuzzer can reach `Claim::Won`.
pub const CLAIM_ID: &str = "6f1c2e0a-0000-4000-8000-000000000001";

fn postgrest_claim(data: &[u8]) {
    let text = text(data);
    let id = MessageId::parse(CLAIM_ID).expect("CLAIM_ID is a UUID");
    let result = rest::parse_claim(&id, &text);
    assert_eq!(
        matches!(result, Ok(Claim::Lost)),
        is_empty_json_array(&text),
        "Lost must mean exactly `[]`: {text:?} gave {result:?}"
    );
    match &result {
        // Whatever the body says, the claim is about the row that was asked for.
        Ok(Claim::Won(m)) => assert_eq!(m.id, id, "{text:?}"),
        Ok(Claim::Malformed { id: got, .. }) => assert_eq!(got, &id, "{text:?}"),
        Ok(Claim::Lost) | Err(RestError::Body(_)) => {}
        Err(other) => panic!("parse_claim invented a transport error {other:?} for {text:?}"),
    }
    if let Err(e) = &result {
        drop(e.to_string());
    }
}

fn postgrest_error(data: &[u8]) {
    let text = text(data);
    let status = status_of(data, ERROR_STATUSES);
    let error = rest::parse_error(status, &text);
    drop(error.to_string());
    let RestError::Status {
        status: got,
        code,
        message,
    } = error
    else {
        panic!("parse_error gave {error:?} for {text:?}");
    };
    assert_eq!(got, status);
    if !may_hold_a_json_struct(&text) {
        assert_eq!(code, None, "a code out of the non-JSON body {text:?}");
    }
    // PostgREST's texts (a trigger's RAISE, a constraint's detail) are scrubbed, JSON or not.
    assert_plain_excerpt(&message, &text);
    if let Some(code) = &code {
        check_scrubbed(code, &text);
    }
}

fn message_id(data: &[u8]) {
    let text = text(data);
    check_message_id(&text);
    // Also every 36-byte window of the input's start, so ids embedded in a body (the seed
    // corpus is made of bodies) are tried without the fuzzer having to cut them out.
    for start in 0..text.len().min(256) {
        if let Some(window) = text.get(start..start + 36) {
            check_message_id(window);
        }
    }
}

/// `MessageId::parse` accepts exactly the canonical UUID form, and keeps it lower-cased.
pub fn check_message_id(text: &str) {
    let parsed = MessageId::parse(text);
    assert_eq!(parsed.is_some(), is_canonical_uuid(text), "{text:?}");
    if let Some(id) = parsed {
        assert_eq!(id.as_str(), text.to_ascii_lowercase());
        assert_eq!(MessageId::parse(id.as_str()).as_ref(), Some(&id));
    }
}

// ----------------------------------------------------------------------------------------------
// Twilio

fn twilio_created(data: &[u8]) {
    let text = text(data);
    let status = status_of(data, SUCCESS_STATUSES);
    match client::parse_created(status, &text) {
        Ok(accepted) => assert!(
            is_message_sid(&accepted.sid),
            "accepted a non-Message SID from {text:?}"
        ),
        Err(e @ SendError::Unreadable { .. }) => {
            assert_eq!(e.http_status(), Some(status));
            drop(e.to_string());
        }
        Err(other) => panic!("parse_created gave {other:?} for {text:?}"),
    }
}

fn twilio_list_page(data: &[u8]) {
    let text = text(data);
    if let Ok(page) = client::parse_list_page(&text) {
        // Every field is optional; a page may be empty, and nothing read may be invented.
        for m in &page.messages {
            if let Some(sid) = &m.sid {
                assert!(text.contains(sid.as_str()) || sid.is_empty() || text.contains('\\'));
            }
        }
    }
}

fn twilio_rejection(data: &[u8]) {
    let text = text(data);
    let status = status_of(data, ERROR_STATUSES);
    // Both shapes of the header: absent, and present with any number of seconds.
    let retry_after = (data.len() % 2 == 1).then(|| Duration::from_secs(data.len() as u64));
    let error = client::parse_rejection(status, &text, retry_after);
    drop(error.to_string());
    assert_eq!(error.http_status(), Some(status));
    let SendError::Rejected {
        code,
        message,
        retry_after: kept,
        ..
    } = error
    else {
        panic!("parse_rejection gave {error:?} for {text:?}");
    };
    assert_eq!(kept, retry_after);
    if !may_hold_a_json_struct(&text) {
        assert_eq!(code, None, "a code out of the non-JSON body {text:?}");
    }
    assert_plain_excerpt(&message, &text);
}

// ----------------------------------------------------------------------------------------------
// Config

/// The variables `Config::from_source` reads, for generators to draw names from. Only a guide:
/// a variable missing here is still fuzzed through the seeds, and the checks below learn the
/// names actually read from the lookup itself.
pub const CONFIG_VARS: &[&str] = &[
    "SUPABASE_URL",
    "SUPABASE_SERVICE_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_API_URL",
    "PORT",
    "SENDER_THREADS",
    "MAX_RETRIES",
    "RETRY_BACKOFF_MS",
    "LOG_FORMAT",
    "RUST_LOG",
    "REALTIME_HEARTBEAT_MS",
    "HTTP_TIMEOUT_MS",
    "SENDING_TIMEOUT_SECS",
    "ORPHAN_CHECK_SECS",
    "SWEEP_INTERVAL_SECS",
    "MAX_SENDS_PER_SECOND",
    "STATUS_CALLBACK_URL",
];

/// The variables whose values must never be printed.
pub const SECRET_VARS: &[&str] = &[
    "SUPABASE_SERVICE_KEY",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
];

/// Appended to secret values in [`check_config`]. No message template holds it, and the check is
/// skipped when some value already does, so finding it in an error means a secret was echoed.
/// (The mark is the whole string: a JWT's role claim, which an error may quote, is decoded from
/// the key and may hold a padlock of its own without any leak of the key.)
pub const CANARY: &str = "\u{1F512}canary\u{1F512}";

/// `NAME=value` per line (the seed format); a line without `=` sets its name to "". Values can
/// hold anything but a newline; the property test covers newlines through [`check_config`].
pub fn parse_env_lines(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .map(|line| match line.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

fn config_lines(data: &[u8]) {
    // The result was checked inside; the config itself is of no further use here.
    let _ = check_config(&parse_env_lines(&text(data)));
}

/// `Config::from_source` over `vars` (a later duplicate wins, as in a shell), then its
/// invariants, then again with [`CANARY`] inside each secret to prove no secret is ever echoed.
pub fn check_config(vars: &[(String, String)]) -> Result<Config, ConfigError> {
    let (result, read) = load(vars);
    let phone = lookup(vars, "TWILIO_PHONE_NUMBER").filter(|v| !v.trim().is_empty());
    match &result {
        Ok(config) => {
            if let Some(phone) = phone {
                assert!(is_e164(phone), "accepted TWILIO_PHONE_NUMBER={phone:?}");
            }
            if let SmsSender::Number(n) = &config.twilio.sender {
                assert!(is_e164(n), "sends from {n:?}");
            }
        }
        Err(e) => {
            assert!(
                read.iter().any(|name| name == e.var),
                "{e} blames a variable that was not read"
            );
            assert!(e.to_string().starts_with(&format!("{}: ", e.var)));
        }
    }

    if vars.iter().all(|(_, value)| !value.contains(CANARY)) {
        // Appended before trailing white space, so a key or token that was valid stays valid
        // (the canary has no `.` nor white space) and validation goes on to the later variables.
        let with_canary = |sid_too: bool| -> Vec<(String, String)> {
            vars.iter()
                .map(|(name, value)| {
                    let marked = match name.as_str() {
                        "TWILIO_ACCOUNT_SID" if !sid_too => false,
                        n => SECRET_VARS.contains(&n),
                    };
                    if !marked {
                        return (name.clone(), value.clone());
                    }
                    let body = value.trim_end();
                    (
                        name.clone(),
                        format!("{body}{CANARY}{}", &value[body.len()..]),
                    )
                })
                .collect()
        };
        // Marking the account SID always invalidates it, so it gets a run of its own.
        for sid_too in [false, true] {
            let marked = with_canary(sid_too);
            match load(&marked).0 {
                Ok(config) => {
                    let dump = format!("{config:?}");
                    assert!(!dump.contains(CANARY), "secret in Debug: {dump}");
                }
                Err(e) => {
                    let shown = format!("{e} / {e:?}");
                    assert!(!shown.contains(CANARY), "secret in the error: {shown}");
                }
            }
        }
    }
    result
}

fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The result, and the names `from_source` asked for (in order).
fn load(vars: &[(String, String)]) -> (Result<Config, ConfigError>, Vec<String>) {
    let read = std::cell::RefCell::new(Vec::new());
    let result = Config::from_source(&|name| {
        read.borrow_mut().push(name.to_string());
        lookup(vars, name).map(str::to_string)
    });
    (result, read.into_inner())
}

// ----------------------------------------------------------------------------------------------
// Clock

/// The calendar year of `t`, read from our own formatting of it.
fn year_of(t: std::time::SystemTime) -> i64 {
    let text = timestamp::rfc3339_seconds(t);
    text.split('-')
        .next()
        .and_then(|y| y.parse().ok())
        .expect("a year")
}

/// What holds for any instant a parser returns: it is after the epoch, it survives our own
/// formatting and parsing (to the millisecond), and `saturating_sub` stays between the epoch and
/// it for any duration taken from the input.
fn check_instant(t: std::time::SystemTime, data: &[u8]) {
    let since = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    let millis = std::time::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64);
    assert_eq!(
        timestamp::parse_rfc3339(&timestamp::rfc3339_millis(t)),
        Some(millis)
    );
    let d = Duration::from_secs(u64::from(status_of(data, &[0, 1, 59, 3600, 65_535])) * 86_400);
    for d in [d, since, since + d, Duration::MAX] {
        let earlier = timestamp::saturating_sub(t, d);
        assert!(earlier <= t && earlier >= std::time::UNIX_EPOCH);
    }
}

fn clock_rfc3339(data: &[u8]) {
    let text = text(data);
    for candidate in std::iter::once(text.as_ref()).chain(text.lines().take(64)) {
        let Some(t) = timestamp::parse_rfc3339(candidate) else {
            continue;
        };
        let trimmed = candidate.trim();
        assert!(trimmed.is_ascii(), "accepted non-ASCII {candidate:?}");
        // The offset moves the instant by less than a day, so at most across one new year.
        let written: i64 = trimmed[..4].parse().expect("four digits of year");
        assert!(
            (year_of(t) - written).abs() <= 1,
            "{candidate:?} gave {}",
            timestamp::rfc3339_seconds(t)
        );
        check_instant(t, data);
    }
}

fn clock_rfc2822(data: &[u8]) {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let text = text(data);
    for candidate in std::iter::once(text.as_ref()).chain(text.lines().take(64)) {
        let Some(t) = timestamp::parse_rfc2822(candidate) else {
            continue;
        };
        let lower = candidate.to_ascii_lowercase();
        assert!(
            MONTHS.iter().any(|m| lower.contains(m)),
            "no month name in {candidate:?}"
        );
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            0,
            "RFC 2822 has whole seconds: {candidate:?}"
        );
        check_instant(t, data);
    }
}

// ----------------------------------------------------------------------------------------------
// Redact

/// Whether `c` could break a log record or change how it reads: a control character, a line or
/// paragraph separator, a bidi control.
pub fn breaks_a_record(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// What may follow a credential parameter's name in scrubbed text: the end, the marker, or a
/// character no value holds (this oracle's own list: anything but printable ASCII, and the
/// characters that end a value in a query, a form, JSON, HTML or a sentence).
fn ends_a_value(rest: &str) -> bool {
    match rest.chars().next() {
        None => true,
        Some(c) => {
            rest.starts_with(redact::REDACTED)
                || !c.is_ascii_graphic()
                || "&\"'<>,;#()[]{}\\".contains(c)
        }
    }
}

/// What `scrub` promises for any text: bounded, one line, no phone number, no complete account or
/// key SID, no key-shaped value left. Checked by scanning the output afresh, not by re-running
/// the rules.
pub fn check_scrubbed(out: &str, input: &str) {
    assert!(
        out.chars().count() <= redact::MAX_CHARS,
        "longer than {} chars for {input:?}",
        redact::MAX_CHARS
    );
    assert!(
        !out.chars().any(breaks_a_record),
        "a character that breaks a record in {out:?} from {input:?}"
    );
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 0 {
            if i + 34 <= b.len()
                && (b[i..].starts_with(b"AC") || b[i..].starts_with(b"SK"))
                && b[i + 2..i + 34].iter().all(u8::is_ascii_hexdigit)
            {
                panic!("a whole SID in {out:?} from {input:?}");
            }
            i += 1;
            continue;
        }
        assert!(run < 8, "{run} digits in a row in {out:?} from {input:?}");
        assert!(
            !(i > 0 && b[i - 1] == b'+' && run >= 7),
            "a number after + in {out:?} from {input:?}"
        );
        i += run;
    }
    // A JWT (`eyJ`, base64 of `{"`, then base64url and dots), even cut short.
    for (at, _) in out.match_indices("eyJ") {
        let run = out[at..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
            .count();
        assert!(run < 16, "a JWT-shaped run in {out:?} from {input:?}");
    }
    // A Supabase key's body.
    for prefix in ["sb_secret_", "sb_publishable_"] {
        for (at, _) in out.match_indices(prefix) {
            let next = out[at + prefix.len()..].bytes().next();
            assert!(
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "a key after {prefix} in {out:?} from {input:?}"
            );
        }
    }
    // A credential parameter's value (`apikey=`, `access_token=`, `"password":"`, …); ASCII
    // lower-casing keeps every byte where it was.
    let lower = out.to_ascii_lowercase();
    for name in [
        "apikey", "api_key", "api-key", "token", "secret", "password",
    ] {
        for separator in ["=", "%3d", "\":\"", "\": \""] {
            let pattern = format!("{name}{separator}");
            for (at, _) in lower.match_indices(&pattern) {
                assert!(
                    ends_a_value(&out[at + pattern.len()..]),
                    "a value after {pattern} in {out:?} from {input:?}"
                );
            }
        }
    }
}

/// The forms a secret takes in text that `scrub_with` promises to remove: as it is,
/// percent-encoded (upper- and lower-case hex), and with `/` escaped as in JSON.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let encode = |upper: bool| -> String {
        secret
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    vec![
        secret.to_string(),
        encode(true),
        encode(false),
        secret.replace('/', "\\/"),
    ]
}

/// Whether `scrub_with` promises to remove `secret` wherever it is: long enough to be
/// registered, and not made of the markers' own characters (a secret holding `[`, `]` or `…`, or
/// "redacted", could be formed anew next to a marker or at the cut; no key or token is).
pub fn removable_secret(secret: &str) -> bool {
    secret.chars().count() >= redact::MIN_SECRET_CHARS
        && !secret.contains(['[', ']', '…'])
        && !redact::REDACTED.contains(secret)
}

/// No form of any removable secret of `secrets` is left in `out`.
pub fn check_secrets_removed(out: &str, input: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| removable_secret(s)) {
        for form in secret_forms(secret) {
            assert!(
                !out.contains(&form),
                "secret {secret:?} (as {form:?}) in {out:?} from {input:?}"
            );
        }
    }
}

fn redact_scrub(data: &[u8]) {
    let text = text(data);
    check_scrubbed(&redact::scrub(&text), &text);
}

/// Secrets taken from the input itself (so that they occur in it, at any place and in any
/// neighbourhood the fuzzer finds), then the text scrubbed with them.
fn redact_scrub_with(data: &[u8]) {
    let text = text(data);
    let chars: Vec<char> = text.chars().collect();
    let mut secrets = Vec::new();
    let mut mix = status_of(data, &[7, 11, 13, 17, 19, 23, 29, 31]) as usize;
    for _ in 0..3 {
        if chars.len() < redact::MIN_SECRET_CHARS {
            break;
        }
        mix = mix.wrapping_mul(31).wrapping_add(17);
        let len = redact::MIN_SECRET_CHARS + mix % 33;
        let len = len.min(chars.len());
        let start = (mix / 7) % (chars.len() - len + 1);
        secrets.push(chars[start..start + len].iter().collect::<String>());
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let out = redact::scrub_with(&text, &redact::Secrets::new(&refs));
    check_scrubbed(&out, &text);
    check_secrets_removed(&out, &text, &secrets);
}
