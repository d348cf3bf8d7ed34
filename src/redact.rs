//! Masking of text that came from outside (Twilio's error messages, response excerpts) before it
//! reaches a log line.
//!
//! Such text quotes what it was given: Twilio's 21211 says "The 'To' number +1555… is not a valid
//! phone number", and a 20404 names `/Accounts/AC…/Messages.json`. [`scrub`] masks phone numbers
//! the way [`crate::phone::mask`] does, shortens account and API-key SIDs, turns control
//! characters into spaces (one log record stays one line) and bounds the length.
//!
//! Invariants: never panics; the result holds no run of 8 or more ASCII digits, no `+` followed by
//! 7 or more digits, no complete `AC`/`SK` SID, no control character, and at most [`MAX_CHARS`]
//! characters. Masking errs on the side of hiding: an order number of 8 digits is masked too.

use crate::phone;

/// Longest result, in characters (the last one is `…` when the text was cut).
pub const MAX_CHARS: usize = 300;

/// Hex digits after the two-letter prefix of a Twilio SID.
const SID_HEX: usize = 32;

/// SID prefixes whose values identify an account or a credential (message SIDs are not masked:
/// they are what an operator looks up).
const SECRET_SID_PREFIXES: &[&[u8; 2]] = &[b"AC", b"SK"];

/// Mask phone numbers and account/key SIDs in `text`, replace control characters with spaces,
/// and cut the result to [`MAX_CHARS`] characters.
pub fn scrub(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len().min(4 * MAX_CHARS));
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = secret_sid_at(bytes, i) {
            // ASCII only, so slicing at these byte offsets is on char boundaries.
            out.push_str(&text[i..i + 2]);
            out.push('…');
            out.push_str(&text[i + len - 4..i + len]);
            i += len;
            continue;
        }
        let plus = bytes[i] == b'+';
        let start = i + usize::from(plus);
        let digits = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if plus && (7..=15).contains(&digits) {
            out.push_str(&phone::mask(&text[i..start + digits]));
            i = start + digits;
            continue;
        }
        if !plus && digits > 0 {
            let run = &text[i..i + digits];
            if digits >= 8 {
                out.push_str(&phone::mask(run));
            } else {
                out.push_str(run);
            }
            i += digits;
            continue;
        }
        // Any other character (a lone `+` included): copied, control characters as a space.
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(if c.is_control() { ' ' } else { c });
        i += c.len_utf8().max(1);
    }
    bound(out)
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

/// At most [`MAX_CHARS`] characters, cut on a character boundary with a trailing `…`.
fn bound(text: String) -> String {
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

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
    }

    #[test]
    fn control_characters_become_spaces_and_length_is_bounded() {
        assert_eq!(scrub("a\nb\r\tc\u{0}"), "a b  c ");
        let long = "é".repeat(1000);
        let out = scrub(&long);
        assert_eq!(out.chars().count(), MAX_CHARS);
        assert!(out.ends_with('…'));
        assert_eq!(scrub(&"x".repeat(MAX_CHARS)), "x".repeat(MAX_CHARS));
        // A number cut by the bound is masked before the cut, so no prefix of it survives.
        let text = format!("{}+15551234567", "x".repeat(MAX_CHARS - 6));
        assert!(!scrub(&text).contains("+1555"));
        assert_eq!(scrub(""), "");
    }
}
