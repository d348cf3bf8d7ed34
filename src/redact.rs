//! The one scrub for text that came from outside (Twilio's and PostgREST's error texts, Realtime's
//! reasons and close reasons, the bodies of refused requests, transport errors) before it reaches
//! a log line or an error the service reports.
//!
//! Such text quotes what it was given: Twilio's 21211 says "The 'To' number +1555… is not a valid
//! phone number", a 20404 names `/Accounts/AC…/Messages.json`, a proxy behind a wrong
//! `SUPABASE_URL` answers `Cannot GET /realtime/v1/websocket?apikey=<the service key>`, and a
//! PostgREST message holds whatever a trigger raised, newlines included. [`scrub`]:
//! - removes secrets: the configured ones, registered once at start ([`register_config`]: the
//!   Supabase key, the Twilio auth token, the account SID, the Basic credential), as they are,
//!   percent-encoded (either case of hex) or JSON-escaped (`\/`); and, whoever's they are, the
//!   value of an `apikey=`, `…token=`, `secret=` or `password=` parameter (also `%3D` and JSON
//!   `"name":"value"`), a `Bearer` credential, anything shaped like a JWT (`eyJ…`) and the body of
//!   an `sb_secret_…`/`sb_publishable_…` key. Each becomes [`REDACTED`] (a registered account SID
//!   is shortened like any other);
//! - masks phone numbers the way [`crate::phone::mask`] does and shortens account and API-key SIDs;
//! - escapes control characters, Unicode line separators and bidi overrides visibly (`\n`, `\r`,
//!   `\u{9}`, `\u{2028}`): one record stays one line, and no text can forge another;
//! - bounds the result to [`MAX_CHARS`] characters. Only as much of the text is read as the
//!   result needs, so a 10 MiB body costs what its first few hundred characters do.
//!
//! Invariants: never panics; the result holds no run of 8 or more ASCII digits, no `+` followed by
//! 7 or more digits, no complete `AC`/`SK` SID, no form of a registered secret (for secrets
//! without `[`/`]`, i.e. every key and token there is), no JWT-shaped run, no `sb_secret_`/
//! `sb_publishable_` key body, no value after a credential parameter, no control character, and
//! at most [`MAX_CHARS`] characters. Masking errs on the side of hiding: an order number of 8
//! digits is masked too. [`scrub_with`] is the same scrub with the secrets given, for tests.

use std::fmt::Write as _;
use std::sync::{PoisonError, RwLock};

use crate::phone;

/// Longest result, in characters (the last one is `…` when the text was cut).
pub const MAX_CHARS: usize = 300;

/// What a removed secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not registered: they would match ordinary words and numbers.
pub const MIN_SECRET_CHARS: usize = 8;

/// A run starting with `eyJ` (base64 of `{"`) of at least this many base64url characters and dots
/// is taken for a JWT, even cut short (the `{"alg":"HS256"…` header alone is 36 of them).
const JWT_MIN_CHARS: usize = 16;

/// A `Bearer` credential shorter than this is taken for a word.
const BEARER_MIN_CHARS: usize = 8;

/// Hex digits after the two-letter prefix of a Twilio SID.
const SID_HEX: usize = 32;

/// SID prefixes whose values identify an account or a credential (message SIDs are not masked:
/// they are what an operator looks up).
const SECRET_SID_PREFIXES: &[&[u8; 2]] = &[b"AC", b"SK"];

/// Key prefixes whose rest is secret (the prefix stays: it tells which kind of key was quoted).
const KEY_PREFIXES: &[&[u8]] = &[b"sb_secret_", b"sb_publishable_"];

/// Parameter names (ASCII, compared case-insensitively, anywhere in a word) whose value is a
/// credential: `apikey=`, `access_token=`, `refresh_token=`, `client_secret=`, `password=`, …
const CREDENTIAL_NAMES: &[&[u8]] = &[
    b"apikey",
    b"api_key",
    b"api-key",
    b"token",
    b"secret",
    b"password",
];

/// What may join a credential name to its value: a query or form `=` (raw or encoded), a JSON
/// member (`"name":"value"`, with or without a space).
const CREDENTIAL_SEPARATORS: &[&[u8]] = &[b"=", b"%3d", b"\":\"", b"\": \""];

/// The configured secrets, registered once at start.
static REGISTERED: RwLock<Secrets> = RwLock::new(Secrets::EMPTY);

/// Register the configured secrets of `config`: the Supabase service key, the Twilio auth token,
/// the account SID, and the HTTP Basic credential made of the last two. Call once, right after
/// the configuration is read and before any request is made.
pub fn register_config(config: &crate::config::Config) {
    let sid = config.twilio.account_sid.expose();
    let token = config.twilio.auth_token.expose();
    register_secrets(&[
        config.supabase.key.expose(),
        token,
        sid,
        &basic_credential(sid, token),
    ]);
}

/// Add `values` to the secrets [`scrub`] removes (those shorter than [`MIN_SECRET_CHARS`] are
/// skipped). Later calls add to the earlier ones.
pub fn register_secrets(values: &[&str]) {
    let mut registered = REGISTERED.write().unwrap_or_else(PoisonError::into_inner);
    for value in values {
        registered.add(value);
    }
}

/// The HTTP Basic credential for `user` and `password`: standard, padded base64 of
/// `user:password` (what follows `Basic ` in the header).
pub fn basic_credential(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A set of secret values, each with the forms it may take in text.
#[derive(Clone)]
pub struct Secrets {
    /// Every form of every secret, longest first (so the longest match wins).
    forms: Vec<Box<str>>,
    /// Whether some form starts with this byte: the quick test made at each position.
    first: [bool; 256],
}

impl Secrets {
    const EMPTY: Secrets = Secrets {
        forms: Vec::new(),
        first: [false; 256],
    };

    /// The set of `values` (those shorter than [`MIN_SECRET_CHARS`] are skipped).
    pub fn new(values: &[&str]) -> Secrets {
        let mut secrets = Secrets::EMPTY;
        for value in values {
            secrets.add(value);
        }
        secrets
    }

    /// Add `value` in its forms: as it is, percent-encoded with upper- and lower-case hex, and
    /// with `/` escaped as JSON may escape it.
    pub fn add(&mut self, value: &str) {
        if value.chars().count() < MIN_SECRET_CHARS {
            return;
        }
        let forms = [
            value.to_string(),
            percent_encoded(value, b"0123456789ABCDEF"),
            percent_encoded(value, b"0123456789abcdef"),
            value.replace('/', "\\/"),
        ];
        for form in forms {
            if !self.forms.iter().any(|f| **f == *form) {
                self.first[usize::from(form.as_bytes()[0])] = true;
                self.forms.push(form.into());
            }
        }
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// Whether no secret is registered.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The length of the longest form starting at byte `i` of `bytes`, if any.
    fn longest_at(&self, bytes: &[u8], i: usize) -> Option<usize> {
        if !self.first[usize::from(*bytes.get(i)?)] {
            return None;
        }
        let rest = &bytes[i..];
        self.forms
            .iter()
            .find(|f| rest.starts_with(f.as_bytes()))
            .map(|f| f.len())
    }

    /// `text` with every form replaced by [`REDACTED`] (the last pass of [`scrub_with`], for
    /// forms that only came together in the result, e.g. after a mask's last four digits).
    fn remove_from(&self, text: String) -> String {
        if !self.forms.iter().any(|f| text.contains(&**f)) {
            return text;
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while let Some(c) = text[i..].chars().next() {
            if let Some(len) = self.longest_at(bytes, i) {
                out.push_str(REDACTED);
                i += len;
            } else {
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        write!(f, "Secrets({} forms)", self.forms.len())
    }
}

/// `value` with every byte outside RFC 3986's unreserved set written `%XX` with `hex` digits.
fn percent_encoded(value: &str, hex: &[u8; 16]) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(hex[usize::from(b >> 4)]));
            out.push(char::from(hex[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Scrub `text` (see the module documentation) with the secrets registered at start.
pub fn scrub(text: &str) -> String {
    let registered = REGISTERED.read().unwrap_or_else(PoisonError::into_inner);
    scrub_with(text, &registered)
}

/// Scrub `text` (see the module documentation), removing `secrets`.
pub fn scrub_with(text: &str, secrets: &Secrets) -> String {
    let bytes = text.as_bytes();
    let mut out = Out::default();
    let mut i = 0;
    // Every step ends on a character boundary: tokens are whole secrets or ASCII runs.
    while i < bytes.len() && out.chars <= MAX_CHARS {
        i = step(text, i, secrets, &mut out);
    }
    let cut = i < bytes.len();
    let mut result = out.text;
    if !secrets.is_empty() {
        result = secrets.remove_from(result);
    }
    bound(result, cut)
}

/// The result being built, with its length in characters.
#[derive(Default)]
struct Out {
    text: String,
    chars: usize,
}

impl Out {
    fn push(&mut self, c: char) {
        self.text.push(c);
        self.chars += 1;
    }

    fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
        self.chars += s.chars().count();
    }

    /// The start of a shortened SID (`AC0123…cdef` → `AC…cdef`); returns how many bytes of the
    /// SID it stands for: all but the last four characters, which are scanned with what follows
    /// (so that, with it, they are masked as anything else would be: `AC…1234` + `5678` is a run
    /// of eight digits, `AC…000a` + `pikey=v` a parameter).
    fn push_sid_start(&mut self, sid: &str) -> usize {
        self.push_str(&sid[..2]);
        self.push('…');
        sid.len() - 4
    }
}

/// Scrub the token starting at byte `i` into `out`; returns where the next one starts.
fn step(text: &str, i: usize, secrets: &Secrets, out: &mut Out) -> usize {
    let bytes = text.as_bytes();
    if let Some(len) = secrets.longest_at(bytes, i) {
        if secret_sid_at(bytes, i) == Some(len) {
            return i + out.push_sid_start(&text[i..i + len]);
        }
        out.push_str(REDACTED);
        return i + len;
    }
    if let Some(len) = secret_sid_at(bytes, i) {
        return i + out.push_sid_start(&text[i..i + len]);
    }
    if let Some((kept, len)) = credential_at(bytes, i) {
        out.push_str(&text[i..i + kept]);
        out.push_str(REDACTED);
        return i + len;
    }
    let plus = bytes[i] == b'+';
    let start = i + usize::from(plus);
    let digits = run(bytes, start, |b| b.is_ascii_digit());
    if plus && (7..=15).contains(&digits) {
        out.push_str(&phone::mask(&text[i..start + digits]));
        return start + digits;
    }
    if !plus && digits > 0 {
        let run = &text[i..i + digits];
        if digits < 8 {
            out.push_str(run);
        } else if digits <= MAX_CHARS {
            out.push_str(&phone::mask(run));
        } else {
            // Cut by the bound anyway: no need to build a mask as long as the run.
            out.push_str(&"*".repeat(MAX_CHARS + 1));
        }
        return i + digits;
    }
    // Any other character (a lone `+` included): copied, or escaped when it could break a line.
    let c = text[i..].chars().next().unwrap_or(' ');
    push_char(out, c);
    i + c.len_utf8()
}

/// `c`, escaped visibly when it is a control character, a line or paragraph separator or a
/// bidi control (text that reorders what a terminal shows). Only `\n` and `\r` have short forms:
/// every other escape ends in `}`, so that none runs on into what follows (`\0` + `1234567`
/// would be eight digits, `\t` + `oken=v` a parameter).
fn push_char(out: &mut Out, c: char) {
    let short = match c {
        '\n' => "\\n",
        '\r' => "\\r",
        c if c.is_control()
            || matches!(
                c,
                '\u{2028}'
                    | '\u{2029}'
                    | '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            ) =>
        {
            let mut escaped = String::with_capacity(10);
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            out.push_str(&escaped);
            return;
        }
        c => {
            out.push(c);
            return;
        }
    };
    out.push_str(short);
}

/// How many bytes from `i` on satisfy `accept`.
fn run(bytes: &[u8], i: usize, accept: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(i..)
        .map_or(0, |rest| rest.iter().take_while(|&&b| accept(b)).count())
}

/// Whether `bytes` holds `pattern` (ASCII, lower case) at `i`, ignoring ASCII case.
fn has_at(bytes: &[u8], i: usize, pattern: &[u8]) -> bool {
    bytes
        .get(i..i + pattern.len())
        .is_some_and(|b| b.eq_ignore_ascii_case(pattern))
}

/// Base64url and the dots between a JWT's parts.
fn is_jwt_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The characters of an `sb_…` key.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// The characters of a parameter's value: printable ASCII up to what ends a value in a query, a
/// form, JSON, HTML or a sentence.
fn is_value_byte(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'&' | b'"'
                | b'\''
                | b'<'
                | b'>'
                | b','
                | b';'
                | b'#'
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'\\'
        )
}

/// A credential starting at byte `i` whoever's it is: how many bytes to keep (a parameter's name,
/// a key's prefix) and how many the whole takes.
fn credential_at(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    if bytes[i..].starts_with(b"eyJ") {
        let len = run(bytes, i, is_jwt_byte);
        if len >= JWT_MIN_CHARS {
            return Some((0, len));
        }
    }
    for prefix in KEY_PREFIXES {
        if bytes[i..].starts_with(prefix) {
            let rest = run(bytes, i + prefix.len(), is_key_byte);
            if rest > 0 {
                return Some((prefix.len(), prefix.len() + rest));
            }
        }
    }
    if has_at(bytes, i, b"bearer ") {
        let kept = "bearer ".len();
        let value = run(bytes, i + kept, is_value_byte);
        if value >= BEARER_MIN_CHARS {
            return Some((kept, kept + value));
        }
    }
    for name in CREDENTIAL_NAMES {
        if !has_at(bytes, i, name) {
            continue;
        }
        for separator in CREDENTIAL_SEPARATORS {
            let kept = name.len() + separator.len();
            if has_at(bytes, i + name.len(), separator) {
                let value = run(bytes, i + kept, is_value_byte);
                if value > 0 {
                    return Some((kept, kept + value));
                }
            }
        }
    }
    None
}

/// Length of an `AC`/`SK` SID starting at byte `i` (2 + [`SID_HEX`]), if there is one. Longer hex
/// runs still count: the first 34 characters are then a SID followed by more hex.
fn secret_sid_at(bytes: &[u8], i: usize) -> Option<usize> {
    let prefix = bytes.get(i..i + 2)?;
    if !SECRET_SID_PREFIXES.iter().any(|p| p[..] == *prefix) {
        return None;
    }
    let hex = bytes.get(i + 2..i + 2 + SID_HEX)?;
    hex.iter().all(u8::is_ascii_hexdigit).then_some(2 + SID_HEX)
}

/// At most [`MAX_CHARS`] characters, cut on a character boundary with a trailing `…`, which is
/// also added when the text was `cut` before its end.
fn bound(text: String, cut: bool) -> String {
    let count = text.chars().count();
    if count <= MAX_CHARS && !cut {
        return text;
    }
    let mut bounded: String = if count < MAX_CHARS {
        text
    } else {
        text.chars().take(MAX_CHARS - 1).collect()
    };
    bounded.push('…');
    bounded
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
    const SB_KEY: &str = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz";
    /// A service_role JWT (header, claims, a made-up signature).
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                       eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ.\
                       c2lnbmF0dXJlLW9mLXRoZS10ZXN0LWtleQ";

    #[test]
    fn twilio_21211_text_keeps_only_the_last_four_digits() {
        let text = "The 'To' number +15005550001 is not a valid phone number.";
        assert_eq!(
            scrub(text),
            "The 'To' number ********0001 is not a valid phone number."
        );
        assert_eq!(
            scrub(text).replace("********0001", "+15005550001"),
            text,
            "the mask is phone::mask's"
        );
    }

    #[test]
    fn numbers_with_a_plus_from_seven_digits_and_bare_from_eight() {
        assert_eq!(scrub("+1234567"), "****4567");
        assert_eq!(scrub("+123456"), "+123456", "too short to be a number");
        assert_eq!(scrub("call 15551234567 now"), "call *******4567 now");
        assert_eq!(scrub("order 1234567"), "order 1234567");
        assert_eq!(scrub("id 12345678"), "id ****5678");
        // Longer than E.164 after a plus: the digits are still masked as a bare run.
        assert_eq!(
            scrub("+1234567890123456789"),
            format!("+{}6789", "*".repeat(15))
        );
        assert_eq!(scrub("a+b++"), "a+b++");
        assert_eq!(scrub("error 21211, HTTP 400"), "error 21211, HTTP 400");
        // A run longer than the bound is all stars up to the cut.
        let out = scrub(&"7".repeat(5000));
        assert_eq!(out, format!("{}…", "*".repeat(MAX_CHARS - 1)));
    }

    #[test]
    fn account_and_key_sids_are_shortened() {
        let text = format!(
            "The requested resource /2010-04-01/Accounts/{SID}/Messages.json was not found"
        );
        let out = scrub(&text);
        assert!(out.contains("/Accounts/AC…cdef/Messages.json"), "{out}");
        assert!(!out.contains(SID));
        let key = format!("SK{}", "f".repeat(32));
        assert_eq!(scrub(&key), "SK…ffff");
        assert_eq!(scrub(&format!("{SID}00")), "AC…cdef00");
        let message_sid = format!("SM{}", "a".repeat(32));
        assert_eq!(scrub(&message_sid), message_sid, "message SIDs stay");
        assert_eq!(scrub("AC12"), "AC12");
        // A SID whose hex holds a long digit run is read as a SID first.
        let digits_sid = format!("AC{}", "1".repeat(32));
        assert_eq!(scrub(&digits_sid), "AC…1111");
        // Its last four characters are read again with what follows them.
        assert_eq!(scrub(&format!("{digits_sid}2345")), "AC…****2345");
        let a_sid = format!("AC{}a", "0".repeat(31));
        assert_eq!(scrub(&format!("{a_sid}pikey=v")), "AC…000apikey=[redacted]");
        let e_sid = format!("AC{}e", "0".repeat(31));
        assert_eq!(
            scrub(&format!("{e_sid}yJhbGciOiJIUzI1NiIs")),
            "AC…000[redacted]"
        );
    }

    #[test]
    fn control_characters_are_escaped_visibly_and_length_is_bounded() {
        assert_eq!(scrub("a\nb\r\tc\u{0}"), "a\\nb\\r\\u{9}c\\u{0}");
        // No escape runs on into what follows it.
        assert_eq!(scrub("\u{0}1234567"), "\\u{0}1234567");
        assert_eq!(scrub("\token=v"), "\\u{9}oken=v");
        assert_eq!(
            scrub("line one\n2026-01-01T00:00:00Z ERROR forged"),
            "line one\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(
            scrub("esc\u{1b}[31m del\u{7f} nel\u{85}"),
            "esc\\u{1b}[31m del\\u{7f} nel\\u{85}"
        );
        assert_eq!(
            scrub("ls\u{2028}ps\u{2029}rlo\u{202e}fsi\u{2068}"),
            "ls\\u{2028}ps\\u{2029}rlo\\u{202e}fsi\\u{2068}"
        );
        assert_eq!(scrub("tab-free é ü 中"), "tab-free é ü 中");
        let long = "é".repeat(1000);
        let out = scrub(&long);
        assert_eq!(out.chars().count(), MAX_CHARS);
        assert!(out.ends_with('…'));
        assert_eq!(scrub(&"x".repeat(MAX_CHARS)), "x".repeat(MAX_CHARS));
        // Escapes count in the bound.
        let out = scrub(&"\n".repeat(MAX_CHARS));
        assert_eq!(out.chars().count(), MAX_CHARS);
        assert!(out.starts_with("\\n\\n") && out.ends_with('…'));
        // A number cut by the bound is masked before the cut, so no prefix of it survives.
        let text = format!("{}+15551234567", "x".repeat(MAX_CHARS - 6));
        assert!(!scrub(&text).contains("+1555"));
        assert_eq!(scrub(""), "");
    }

    #[test]
    fn configured_secrets_are_removed_in_every_form() {
        let basic = basic_credential(SID, TOKEN);
        assert_eq!(
            basic,
            "QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjpmMDBkZmVlZGYwMGRmZWVkZjAwZGZlZWRmMDBkZmVlZA=="
        );
        let secrets = Secrets::new(&[SB_KEY, TOKEN, SID, &basic]);
        let s = |text: &str| scrub_with(text, &secrets);
        assert_eq!(
            s(&format!("token {TOKEN} refused")),
            "token [redacted] refused"
        );
        assert_eq!(s(&format!("auth: Basic {basic}")), "auth: Basic [redacted]");
        // The account SID keeps its usual short form.
        assert_eq!(s(&format!("/Accounts/{SID}/")), "/Accounts/AC…cdef/");
        // Percent-encoded (either hex case) and JSON-escaped forms.
        let encoded = basic.replace('=', "%3D");
        assert_eq!(s(&format!("u={encoded}x")), "u=[redacted]x");
        assert_eq!(
            s(&format!("u={}x", basic.replace('=', "%3d"))),
            "u=[redacted]x"
        );
        let slashed = "abc/def+ghi/jkl==";
        let secrets = Secrets::new(&[slashed]);
        for form in [
            slashed.to_string(),
            "abc%2Fdef%2Bghi%2Fjkl%3D%3D".into(),
            "abc%2fdef%2bghi%2fjkl%3d%3d".into(),
            r"abc\/def+ghi\/jkl==".into(),
        ] {
            assert_eq!(scrub_with(&format!("<{form}>"), &secrets), "<[redacted]>");
        }
        // A key anywhere, whatever its shape, and even with no parameter name before it.
        let secrets = Secrets::new(&["0123456789"]);
        assert_eq!(
            scrub_with("x0123456789y", &secrets),
            "x[redacted]y",
            "before the digit rule"
        );
    }

    #[test]
    fn a_secret_is_removed_even_where_only_the_result_holds_it() {
        // After a mask, the last four digits meet the text that followed the number.
        let secrets = Secrets::new(&["4567abcdef"]);
        assert_eq!(
            scrub_with("+15551234567abcdef", &secrets),
            "********[redacted]"
        );
        // An escape ends in a letter.
        let secrets = Secrets::new(&["nabcdefgh"]);
        assert_eq!(scrub_with("\nabcdefgh", &secrets), "\\[redacted]");
    }

    #[test]
    fn short_secrets_are_not_registered() {
        assert!(Secrets::new(&["", "1234567", "abcdefg"]).is_empty());
        assert!(!Secrets::new(&["abcdefgh"]).is_empty());
        assert_eq!(format!("{:?}", Secrets::new(&[TOKEN])), "Secrets(1 forms)");
    }

    #[test]
    fn keys_tokens_and_jwts_are_removed_whoever_they_belong_to() {
        let none = Secrets::new(&[]);
        let s = |text: &str| scrub_with(text, &none);
        assert_eq!(
            s(&format!(
                "Cannot GET /realtime/v1/websocket?apikey={SB_KEY}&vsn=1.0.0"
            )),
            "Cannot GET /realtime/v1/websocket?apikey=[redacted]&vsn=1.0.0"
        );
        assert_eq!(
            s(&format!(
                "<pre>Cannot GET /ws?vsn=1.0.0&amp;apikey={JWT}</pre>"
            )),
            "<pre>Cannot GET /ws?vsn=1.0.0&amp;apikey=[redacted]</pre>"
        );
        assert_eq!(
            s(&format!("key {SB_KEY} refused")),
            "key sb_secret_[redacted] refused"
        );
        assert_eq!(
            s("sb_publishable_abc123 is not a secret key"),
            "sb_publishable_[redacted] is not a secret key"
        );
        assert_eq!(s("sb_secret_ alone"), "sb_secret_ alone");
        assert_eq!(
            s(&format!("Authorization: Bearer {JWT}")),
            "Authorization: Bearer [redacted]"
        );
        assert_eq!(s("Bearer token missing"), "Bearer token missing", "a word");
        assert_eq!(s(&format!("jwt {JWT}.")), "jwt [redacted]");
        // Cut short, still a JWT; a short run starting with eyJ is a word.
        assert_eq!(s(&format!("x {}", &JWT[..20])), "x [redacted]");
        assert_eq!(s("heyJude"), "heyJude");
        assert_eq!(
            s(r#"{"access_token":"abc.def","token": "x1","Password":"hunter22"}"#),
            r#"{"access_token":"[redacted]","token": "[redacted]","Password":"[redacted]"}"#
        );
        assert_eq!(
            s("?ACCESS_TOKEN%3Dabc&refresh_token=zz#frag"),
            "?ACCESS_TOKEN%3D[redacted]&refresh_token=[redacted]#frag"
        );
        assert_eq!(s("client_secret=s3cr3t"), "client_secret=[redacted]");
        assert_eq!(s("token= expired"), "token= expired", "no value");
        assert_eq!(
            s("Invalid JWT token: expired"),
            "Invalid JWT token: expired"
        );
    }

    #[test]
    fn scrubbing_twice_changes_nothing_more() {
        let none = Secrets::new(&[]);
        let text = format!(
            "a\nb apikey={SB_KEY} {JWT} +15551234567 {SID} Bearer abcdefghij sb_secret_x ü"
        );
        let once = scrub_with(&text, &none);
        assert_eq!(scrub_with(&once, &none), once);
    }

    #[test]
    fn a_long_text_is_read_only_as_far_as_the_result_needs() {
        let secrets = Secrets::new(&[TOKEN]);
        // Secrets replaced before the bound, wherever the bound falls.
        let text = format!("{}{TOKEN}", "x".repeat(MAX_CHARS - 10));
        assert_eq!(
            scrub_with(&text, &secrets),
            format!("{}[redacted]", "x".repeat(MAX_CHARS - 10))
        );
        let text = format!("{}{TOKEN}", "x".repeat(MAX_CHARS - 5));
        let out = scrub_with(&text, &secrets);
        assert!(out.ends_with("[red…"), "{out}");
        // Many secrets shrink the text: what is left after the last one read is marked as cut.
        let text = format!("{}{}", TOKEN.repeat(40), "y".repeat(10 << 20));
        let out = scrub_with(&text, &secrets);
        assert_eq!(out.chars().count(), MAX_CHARS);
        assert!(out.starts_with("[redacted][redacted]") && out.ends_with('…'));
    }

    #[test]
    fn registered_secrets_are_what_scrub_removes() {
        // A value no other test uses, so the shared registry cannot change their results.
        let value = "registry-test-9f3a7c1e5b";
        assert_eq!(scrub(value), value);
        register_secrets(&[value, "short"]);
        assert_eq!(scrub(&format!("x {value} y")), "x [redacted] y");
        assert_eq!(scrub("short"), "short");
    }
}
