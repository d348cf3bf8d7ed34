//! Configuration variables: E.164 senders only, secrets never in an error.

use super::*;
use sms_sender::config::vars::{Reader, Secrecy, VARS};

/// The variables `Config` reads, from the one table of configuration.
fn config_vars() -> Vec<&'static str> {
    VARS.iter()
        .filter(|v| v.reader == Reader::Config)
        .map(|v| v.name)
        .collect()
}

fn is_secret(name: &str) -> bool {
    VARS.iter()
        .any(|v| v.name == name && v.secrecy == Secrecy::Secret)
}

pub(super) fn env_of(text: &str) -> Vec<(String, String)> {
    harness::parse_env_lines(text)
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

fn set(vars: &mut Vec<(String, String)>, name: &str, value: Option<String>) {
    vars.retain(|(n, _)| n != name);
    if let Some(value) = value {
        vars.push((name.to_string(), value));
    }
}

/// base64url without padding, as JWT segments are written.
fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT-shaped key with random claims (role, exp of any JSON type) and the given signature.
fn random_jwt(rng: &mut Rng, signature: &str) -> String {
    let role = match rng.u8(..4) {
        0 => J::str("service_role"),
        1 => J::str("anon"),
        2 => J::Null,
        _ => J::Str(random_text(rng)),
    };
    let exp = match rng.u8(..4) {
        0 => J::Num("4102444800".into()),
        1 => J::Num("1000".into()),
        2 => J::Num(pick(rng, HUGE_NUMBERS).to_string()),
        _ => random_scalar(rng),
    };
    let claims = J::obj(&[("role", role), ("exp", exp)]).emit(rng, Style::COMPACT);
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    format!("{header}.{}.{signature}", b64url(claims.as_bytes()))
}

/// Values for the number variables: in and out of range, and not numbers at all.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "100",
    "255",
    "256",
    "55000",
    "65535",
    "65536",
    "-1",
    "+5",
    " 42 ",
    "4_2",
    "1e3",
    "0x10",
    "٤٢",
    "１",
    "18446744073709551616",
    "",
    " ",
];

/// A value for `var`: near-valid for its kind most of the time, anything at all otherwise.
fn config_value(rng: &mut Rng, var: &str) -> String {
    if rng.u8(..4) == 0 {
        return random_text(rng);
    }
    let choices: &[&str] = match var {
        "STATUS_CALLBACK_URL" => &[
            "https://sms.example.com/twilio/status",
            "https://sms.example.com/twilio/status?x=1#y",
            "https://sms_1.example.com/twilio/status",
            "https:///twilio/status",
            "https://h/twilio/status/",
            "http://h/twilio/status ",
            "https://h/twilio/statuS",
            "/twilio/status",
        ],
        "MAX_SENDS_PER_SECOND" => &[
            "1", "0.01", "0.00999", "10000", "10000.5", "1e4", "1e400", "NaN", "inf", "-inf", "-0",
            " 2.5 ", "1,5", "",
        ],
        "SUPABASE_URL" | "TWILIO_API_URL" => &[
            "https://abc.supabase.co",
            "http://127.0.0.1:54321/",
            "https://",
            "http://h:0",
            "http://h:65536",
            "http://h:",
            "https://:80",
            "http://[::1]:8080",
            "http://[::1]",
            "https://user@host",
            "https://h/ path",
            "https://h?apikey=x",
            "HTTPS://h",
            "https://h//",
            "https://é.example",
            "ftp://h",
        ],
        "TWILIO_ACCOUNT_SID" | "TWILIO_MESSAGING_SERVICE_SID" => &[
            "AC0123456789abcdef0123456789abcdef",
            "MG0123456789abcdef0123456789abcdef",
            "SK0123456789abcdef0123456789abcdef",
            "ac0123456789abcdef0123456789abcdef",
            "AC0123456789abcdef0123456789abcde",
            "AC0123456789abcdef0123456789abcdeé",
            "MG٠123456789abcdef0123456789abcdef",
        ],
        "TWILIO_PHONE_NUMBER" => return random_phone(rng),
        "SUPABASE_SERVICE_KEY" => {
            return match rng.u8(..3) {
                0 => random_jwt(rng, "sig"),
                1 => format!("sb_secret_{}", random_text(rng)),
                _ => pick(
                    rng,
                    &["sb_publishable_x", "a.b", "a..c", "a.b.c.d", "x.!!!.y"],
                )
                .to_string(),
            }
        }
        "LOG_FORMAT" => &["json", "text", " json ", "JSON", "xml", ""],
        "RUST_LOG" => &["info", "sms_sender=trace,warn", "[", ""],
        _ => NUMBERS,
    };
    pick(rng, choices).to_string()
}

/// Valid E.164 numbers and their near misses, in equal parts.
fn random_phone(rng: &mut Rng) -> String {
    let len = rng.usize(8..=15);
    let mut digits: Vec<char> = (0..len)
        .map(|i| {
            let d = if i == 0 { rng.u8(1..10) } else { rng.u8(..10) };
            char::from(b'0' + d)
        })
        .collect();
    if rng.bool() {
        return format!("+{}", digits.into_iter().collect::<String>());
    }
    let at = rng.usize(..digits.len());
    match rng.u8(..9) {
        0 => digits.push(rng.digit(10)),
        1 => digits.truncate(7),
        2 => digits[0] = '0',
        3 => digits[at] = *pick(rng, &['٣', '３', '𝟑', ' ', '-', '.', '(']),
        4 => {
            return format!(
                "{}{}",
                pick(rng, &["", "00", "++", "＋", "+ "]),
                String::from_iter(&digits)
            )
        }
        5 => {
            return format!(
                "+{}{}",
                String::from_iter(&digits),
                pick(rng, &[" ", "\n", "\t", "\u{a0}", "x"])
            )
        }
        6 => {
            return format!(
                "{}+{}",
                pick(rng, &[" ", "\t", "\u{feff}"]),
                String::from_iter(&digits)
            )
        }
        7 => return pick(rng, &["", " ", "+", "\n"]).to_string(),
        _ => return random_text(rng),
    }
    format!("+{}", digits.into_iter().collect::<String>())
}

#[test]
fn config_never_accepts_an_invalid_e164_sender() {
    let mut rng = rng(13);
    let by_number = env_of(&seed("config", "legacy_jwt.env"));
    let by_service = env_of(&seed("config", "messaging_service_local.env"));
    assert!(harness::check_config(&by_number).is_ok());
    assert!(harness::check_config(&by_service).is_ok());
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..cases(4000) {
        let phone = random_phone(&mut rng);
        let blank = phone.trim().is_empty();
        let with_service = rng.bool();
        let mut vars = if with_service {
            by_service.clone()
        } else {
            by_number.clone()
        };
        set(&mut vars, "TWILIO_PHONE_NUMBER", Some(phone.clone()));
        let result = harness::check_config(&vars);
        // A blank value counts as unset: fine beside a Messaging Service, missing without one.
        let valid = if blank { with_service } else { is_e164(&phone) };
        match &result {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert_eq!(e.var, "TWILIO_PHONE_NUMBER", "{phone:?}: {e}");
            }
        }
        assert_eq!(result.is_ok(), valid, "TWILIO_PHONE_NUMBER={phone:?}");
    }
    // Both outcomes were exercised, so the equality above is not vacuous.
    assert!(accepted > 500 && refused > 500, "{accepted} / {refused}");
}

#[test]
fn config_errors_never_contain_secrets() {
    let mut rng = rng(14);
    let bases: Vec<Vec<(String, String)>> = seeds("config")
        .iter()
        .map(|(_, bytes)| env_of(&String::from_utf8_lossy(bytes)))
        .collect();
    let names = config_vars();
    let mut errors_by_var = std::collections::BTreeMap::<&str, usize>::new();
    for _ in 0..cases(4000) {
        let mut vars = pick(&mut rng, &bases).clone();
        // Random damage elsewhere, so that every variable's error path gets its turn.
        for _ in 0..rng.usize(..3) {
            let name = *pick(&mut rng, &names);
            if !is_secret(name) {
                set(&mut vars, name, Some(config_value(&mut rng, name)));
            }
        }
        // Each secret carries a random marker no message template can hold by chance, placed
        // where it keeps a valid secret valid (a JWT's signature, after sb_secret_, a token).
        let mut marker = || -> String { (0..12).map(|_| rng.alphanumeric()).collect() };
        let (key_mark, token_mark, sid_mark) = (marker(), marker(), marker());
        let key = match rng.u8(..4) {
            0 => random_jwt(&mut rng, &format!("sig{key_mark}")),
            1 => format!("sb_secret_{key_mark}"),
            2 => format!("sb_publishable_{key_mark}"),
            _ => format!(
                "{}{key_mark}{}",
                random_text(&mut rng),
                random_text(&mut rng)
            ),
        };
        let token = match rng.u8(..3) {
            0 => token_mark.clone(),
            1 => format!("{token_mark} {}", random_text(&mut rng)),
            _ => format!("{}{token_mark}", random_text(&mut rng)),
        };
        set(&mut vars, "SUPABASE_SERVICE_KEY", Some(key.clone()));
        set(&mut vars, "TWILIO_AUTH_TOKEN", Some(token.clone()));
        if rng.u8(..4) == 0 {
            set(
                &mut vars,
                "TWILIO_ACCOUNT_SID",
                Some(format!("AC{sid_mark}")),
            );
        }
        let shown = match harness::check_config(&vars) {
            Ok(config) => format!("{config:?}"),
            Err(e) => {
                *errors_by_var.entry(e.var).or_default() += 1;
                format!("{e} {e:?}")
            }
        };
        for (mark, var) in [
            (&key_mark, "SUPABASE_SERVICE_KEY"),
            (&token_mark, "TWILIO_AUTH_TOKEN"),
            (&sid_mark, "TWILIO_ACCOUNT_SID"),
        ] {
            assert!(!shown.contains(mark.as_str()), "{var} shown in {shown}");
        }
        assert!(
            !shown.contains(key.trim()) && !shown.contains(token.trim()),
            "{shown}"
        );
    }
    // The secrets' own error paths were reached, not only the ones before them.
    for var in [
        "SUPABASE_SERVICE_KEY",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
    ] {
        assert!(
            errors_by_var.get(var).is_some_and(|&n| n > 50),
            "{errors_by_var:?}"
        );
    }
}

#[test]
fn config_survives_arbitrary_values_for_every_variable() {
    let started = Instant::now();
    let mut rng = rng(4);
    let bases: Vec<Vec<(String, String)>> = seeds("config")
        .iter()
        .map(|(_, bytes)| env_of(&String::from_utf8_lossy(bytes)))
        .collect();
    let names = config_vars();
    let mut runs = 0;
    for _ in 0..cases(4000) {
        let mut vars = pick(&mut rng, &bases).clone();
        for _ in 0..rng.usize(1..5) {
            let name = *pick(&mut rng, &names);
            match rng.u8(..6) {
                0 => vars.retain(|(n, _)| n != name),
                // Names are looked up exactly: a lower-case twin must not count.
                1 => vars.push((name.to_lowercase(), config_value(&mut rng, name))),
                _ => vars.push((name.to_string(), config_value(&mut rng, name))),
            }
        }
        // Values may hold anything a process environment can, newlines included.
        let _ = harness::check_config(&vars);
        runs += 1;
    }
    report("config values", runs, started);
}
