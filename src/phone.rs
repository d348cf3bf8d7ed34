//! Phone numbers: the E.164 check applied before any Twilio call, and the masking applied before
//! any number reaches a log line (only the last four digits are shown).

/// `+` then 8 to 15 digits, the first not zero (E.164 as Twilio accepts it).
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `+15551234567` → `*******4567`: enough to tell numbers apart in logs, not to identify a person.
pub fn mask(number: &str) -> String {
    let count = number.chars().count();
    let hidden = count - count.min(4);
    number
        .chars()
        .enumerate()
        .map(|(i, c)| if i < hidden { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_rules() {
        assert!(is_e164("+15551234567"));
        assert!(is_e164("+4915112345678"));
        assert!(is_e164("+12345678"));
        assert!(!is_e164("+1234567"), "7 digits is too short");
        assert!(!is_e164("+1234567890123456"), "16 digits is too long");
        assert!(!is_e164("15551234567"), "needs a plus");
        assert!(!is_e164("+1 555 123 4567"));
        assert!(!is_e164("+05551234567"));
        assert!(!is_e164("555-1234"));
        assert!(!is_e164(""));
    }

    #[test]
    fn masking_keeps_last_four() {
        assert_eq!(mask("+15551234567"), "********4567");
        assert_eq!(mask("123"), "123");
        assert_eq!(mask(""), "");
        assert!(!mask("+15551234567").contains("555123"));
    }
}
