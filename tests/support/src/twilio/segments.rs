//! How many SMS segments a body takes (docs/twilio.md §5.3): what Twilio reports as `num_segments`.

/// The GSM 03.38 default alphabet (127 characters; the escape code itself excluded).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table: each costs an escape plus the character (2 septets).
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// Septets a character costs in GSM-7, or `None` if it forces UCS-2.
fn gsm7_septets(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// SMS segments for `body` (docs/twilio.md §5.3): GSM-7 when every character is in the GSM 03.38
/// alphabet or its extension (extension characters cost 2 septets), else UCS-2 counted in UTF-16
/// units. One segment holds 160 septets / 70 units; concatenated segments hold 153 / 67, and a
/// 2-unit character (escape pair, surrogate pair) is never split across two segments.
/// An empty body is one (empty) segment.
pub fn count_segments(body: &str) -> u32 {
    let gsm: Option<Vec<u32>> = body.chars().map(gsm7_septets).collect();
    let (costs, single, concatenated) = match gsm {
        Some(costs) => (costs, 160, 153),
        None => (body.chars().map(|c| c.len_utf16() as u32).collect(), 70, 67),
    };
    if costs.iter().sum::<u32>() <= single {
        return 1;
    }
    let mut segments = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > concatenated {
            segments += 1;
            used = 0;
        }
        used += cost;
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_count_segments_rules() {
        assert_eq!(GSM7_BASIC.chars().count(), 127);
        assert_eq!(count_segments(""), 1);
        assert_eq!(count_segments("hello"), 1);
        assert_eq!(count_segments(&"a".repeat(160)), 1);
        assert_eq!(count_segments(&"a".repeat(161)), 2);
        assert_eq!(count_segments(&"a".repeat(306)), 2);
        assert_eq!(count_segments(&"a".repeat(307)), 3);
        // '€' is an extension character: 2 septets, still GSM-7.
        assert_eq!(count_segments(&"€".repeat(80)), 1);
        assert_eq!(count_segments(&format!("{}€", "a".repeat(159))), 2);
        // An escape pair is not split: 152 + '€' does not fit the 153-septet first segment.
        assert_eq!(
            count_segments(&format!("{}€{}", "a".repeat(152), "a".repeat(152))),
            3
        );
        // One emoji switches the whole message to UCS-2 (70 / 67 units).
        assert_eq!(count_segments(&format!("{}😀", "a".repeat(68))), 1);
        assert_eq!(count_segments(&format!("{}😀", "a".repeat(69))), 2);
        assert_eq!(
            count_segments(&"é".repeat(160)),
            1,
            "é is in the GSM alphabet"
        );
        assert_eq!(count_segments(&"á".repeat(70)), 1, "á is not");
        assert_eq!(count_segments(&"á".repeat(71)), 2);
        assert_eq!(count_segments(&"á".repeat(134)), 2);
        assert_eq!(count_segments(&"á".repeat(135)), 3);
        assert_eq!(count_segments("“smart quotes”"), 1);
    }
}
