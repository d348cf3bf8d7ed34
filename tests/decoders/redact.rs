//! Masking: no phone number, no configured secret, no key-shaped value and no line break gets
//! through `redact::scrub`.

use super::*;

/// An E.164-looking number: `+` and 7 to 15 digits.
fn random_number(rng: &mut Rng) -> String {
    let digits = rng.usize(7..=15);
    let mut n = String::from("+");
    n.push(char::from(b'1' + rng.u8(..9)));
    for _ in 1..digits {
        n.push(char::from(b'0' + rng.u8(..10)));
    }
    n
}

#[test]
fn scrub_never_lets_a_number_through_whatever_surrounds_it() {
    let started = Instant::now();
    let mut rng = rng(21);
    let contexts: &[(&str, &str)] = &[
        ("The 'To' number ", " is not a valid phone number."),
        ("", ""),
        ("To=", "&From=+15005550006"),
        ("AC0123456789abcdef0123456789abcde", "f"),
        ("\u{202e}", "\u{0}"),
        ("+", "+"),
        ("12", "34"),
        ("é", "ü"),
    ];
    let mut runs = 0;
    for _ in 0..cases(5000) {
        let number = random_number(&mut rng);
        let (before, after) = *pick(&mut rng, contexts);
        let mut text = format!("{before}{number}{after}");
        if rng.bool() {
            text = format!("{}{text}{}", random_text(&mut rng), random_text(&mut rng));
        }
        let out = scrub(&text);
        assert!(!out.contains(&number), "{number} in {out:?} from {text:?}");
        let digits = &number[1..];
        assert!(!out.contains(digits), "{digits} in {out:?} from {text:?}");
        harness::check_scrubbed(&out, &text);
        runs += 1;
    }
    report("scrub", runs, started);
}

/// Base64url of `len` random bytes' worth: what JWT parts and keys are made of.
fn random_base64url(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len).map(|_| char::from(*pick(rng, ALPHABET))).collect()
}

/// A secret of one of the kinds the service is configured with: a service_role JWT, an
/// `sb_secret_` key, a Twilio auth token (32 hex), an account SID, a Basic credential (standard
/// base64, so `+`, `/` and `=` padding).
fn random_secret(rng: &mut Rng) -> String {
    let hex = |rng: &mut Rng| -> String {
        (0..32)
            .map(|_| char::from(*pick(rng, b"0123456789abcdef")))
            .collect()
    };
    match rng.u8(..5) {
        0 => {
            let claims = rng.usize(20..120);
            let claims = random_base64url(rng, claims);
            let signature = random_base64url(rng, 43);
            format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{claims}.{signature}")
        }
        1 => {
            let len = rng.usize(20..40);
            format!("sb_secret_{}", random_base64url(rng, len))
        }
        2 => hex(rng),
        3 => format!("AC{}", hex(rng)),
        _ => {
            use base64::Engine as _;
            let len = rng.usize(40..70);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
    }
}

/// `secret` as text from outside may carry it: as it is, percent-encoded, JSON-escaped.
fn random_form(rng: &mut Rng, secret: &str) -> String {
    let forms = harness::secret_forms(secret);
    pick(rng, &forms).clone()
}

#[test]
fn scrub_with_never_lets_a_configured_secret_through() {
    let started = Instant::now();
    let mut rng = rng(22);
    let contexts: &[(&str, &str)] = &[
        ("Cannot GET /realtime/v1/websocket?apikey=", "&vsn=1.0.0"),
        (
            "<pre>Cannot GET /realtime/v1/websocket?apikey=",
            "&amp;vsn=1.0.0</pre>",
        ),
        (r#"{"message":"Invalid API key ","hint":"key="#, r#""}"#),
        ("Authorization: Basic ", "\r\n"),
        ("Bearer ", ""),
        ("", ""),
        ("/2010-04-01/Accounts/", "/Messages.json"),
        ("token ", " was refused\n2026-01-01T00:00:00Z ERROR forged"),
        ("x", "y"),
        ("12345", "678"),
        ("\u{202e}", "\u{0}"),
    ];
    let mut runs = 0;
    for _ in 0..cases(3000) {
        let secrets: Vec<String> = (0..rng.usize(1..=4))
            .map(|_| random_secret(&mut rng))
            .collect();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let registered = sms_sender::redact::Secrets::new(&refs);
        let mut text = String::new();
        for _ in 0..rng.usize(1..4) {
            let (before, after) = *pick(&mut rng, contexts);
            let secret = pick(&mut rng, &secrets).clone();
            let form = random_form(&mut rng, &secret);
            if rng.bool() {
                text.push_str(&random_text(&mut rng));
            }
            text.push_str(&format!("{before}{form}{after}"));
        }
        if rng.u8(..8) == 0 {
            // Long enough that the bound falls anywhere, after or inside a secret.
            text = format!("{}{text}", "x".repeat(rng.usize(200..320)));
        }
        let out = sms_sender::redact::scrub_with(&text, &registered);
        harness::check_scrubbed(&out, &text);
        harness::check_secrets_removed(&out, &text, &secrets);
        runs += 1;
    }
    report("scrub_with", runs, started);
}

/// Keys and tokens nobody registered (another project's key, a token in a URL) are removed by
/// their shape: a JWT even cut short, an `sb_` key, a credential parameter's value.
#[test]
fn scrub_removes_keys_by_their_shape() {
    let started = Instant::now();
    let mut rng = rng(23);
    let mut runs = 0;
    for _ in 0..cases(3000) {
        let key = match rng.u8(..3) {
            0 => format!(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
                random_base64url(&mut rng, 40),
                random_base64url(&mut rng, 43)
            ),
            1 => format!("sb_secret_{}", random_base64url(&mut rng, 32)),
            _ => format!("sb_publishable_{}", random_base64url(&mut rng, 32)),
        };
        // Cut anywhere from 20 characters on: a proxy or a log may have cut it already.
        let shown = &key[..rng.usize(20..=key.len())];
        let text = match rng.u8(..4) {
            0 => format!("Cannot GET /realtime/v1/websocket?apikey={shown}&vsn=1.0.0"),
            1 => format!("{}{shown}{}", random_text(&mut rng), random_text(&mut rng)),
            2 => format!(r#"{{"access_token":"{shown}"}}"#),
            _ => format!("Authorization: Bearer {shown}"),
        };
        let out = scrub(&text);
        harness::check_scrubbed(&out, &text);
        assert!(
            !out.contains(&key[..20]),
            "{:?} in {out:?} from {text:?}",
            &key[..20]
        );
        runs += 1;
    }
    report("scrub by shape", runs, started);
}

/// No outside text can make a log line of its own: whatever surrounds a line break, the result
/// is one line, and the break is shown (`\n`), not dropped.
#[test]
fn scrub_keeps_one_record_on_one_line_and_shows_the_breaks() {
    let breaks = [
        '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
    ];
    let mut rng = rng(24);
    for _ in 0..cases(3000) {
        let c = *pick(&mut rng, &breaks);
        let text = format!(
            "{}{c}2026-01-01T00:00:00Z ERROR forged{}",
            random_text(&mut rng),
            random_text(&mut rng)
        );
        let out = scrub(&text);
        harness::check_scrubbed(&out, &text);
        assert_eq!(out.lines().count().max(1), 1, "{out:?}");
        if out.chars().count() < sms_sender::redact::MAX_CHARS - 40 {
            assert!(
                out.contains("\\n") || out.contains("\\r") || out.contains("\\u{"),
                "the break is not shown in {out:?} from {text:?}"
            );
        }
    }
}
