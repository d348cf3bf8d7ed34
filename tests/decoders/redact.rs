//! Masking: no phone number gets through `redact::scrub`.

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
