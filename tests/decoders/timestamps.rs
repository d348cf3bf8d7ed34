//! Timestamps: RFC 3339 and RFC 2822, read exactly or refused.

use super::*;

/// Seconds from 1970-01-01T00:00:00 to the start of a day, counted year by year and month by
/// month: a second formulation of the calendar, independent of `timestamp`'s day arithmetic.
fn epoch_seconds(year: i64, month: u32, day: u32, secs_of_day: i64) -> i64 {
    let leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mut days: i64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    for m in 1..month {
        days += i64::from(month_days(year, m));
    }
    days += i64::from(day) - 1;
    days * 86_400 + secs_of_day
}

fn month_days(year: i64, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month as usize - 1]
}

/// Parts of a timestamp, each sometimes out of range, and whether they are all valid.
struct Stamp {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Offset east of UTC in minutes, or `None` for `Z`/`GMT`.
    offset: Option<i32>,
}

impl Stamp {
    fn random(rng: &mut Rng) -> Stamp {
        let any = rng.i64(1970..2200);
        let year = *pick(
            rng,
            &[0, 1, 1969, 1970, 1999, 2000, 2023, 2024, 2100, 9999, any],
        );
        let month = if rng.u8(..8) == 0 {
            *pick(rng, &[0, 13, 99])
        } else {
            rng.u32(1..=12)
        };
        let day = if rng.u8(..8) == 0 {
            *pick(rng, &[0, 29, 30, 31, 32, 99])
        } else {
            rng.u32(1..=28)
        };
        let hour = if rng.u8(..8) == 0 {
            *pick(rng, &[23, 24, 99])
        } else {
            rng.u32(0..24)
        };
        let minute = if rng.u8(..8) == 0 {
            *pick(rng, &[59, 60, 99])
        } else {
            rng.u32(0..60)
        };
        let second = if rng.u8(..8) == 0 {
            *pick(rng, &[59, 60, 61, 99])
        } else {
            rng.u32(0..60)
        };
        let offset = match rng.u8(..4) {
            0 => None,
            1 => Some(0),
            2 => Some(rng.i32(-23 * 60 - 59..=23 * 60 + 59)),
            _ => Some(*pick(
                rng,
                &[24 * 60, -24 * 60, 60 * 99, 5 * 60 + 60, 14 * 60],
            )),
        };
        Stamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            offset,
        }
    }

    /// The instant these parts name, in seconds after the epoch, if they are all in range.
    fn expected(&self) -> Option<i64> {
        let offset = self.offset.unwrap_or(0);
        let valid = (1970..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=month_days(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second <= 60
            && offset.unsigned_abs() / 60 < 24
            && offset.unsigned_abs() % 60 < 60;
        let secs = i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        let total = epoch_seconds(self.year, self.month.clamp(1, 12), self.day, secs)
            - i64::from(offset) * 60;
        (valid && total >= 0).then_some(total)
    }

    fn zone(&self, rng: &mut Rng, colon: bool) -> String {
        match self.offset {
            None => pick(rng, &["Z", "GMT", "UT", "UTC"]).to_string(),
            Some(minutes) => {
                let sign = if minutes < 0 || (minutes == 0 && rng.bool()) {
                    '-'
                } else {
                    '+'
                };
                let (h, m) = (minutes.unsigned_abs() / 60, minutes.unsigned_abs() % 60);
                if colon {
                    format!("{sign}{h:02}:{m:02}")
                } else {
                    format!("{sign}{h:02}{m:02}")
                }
            }
        }
    }

    fn rfc3339(&self, rng: &mut Rng) -> (String, u32) {
        let sep = *pick(rng, &['T', 't', ' ']);
        let digits = rng.usize(..=9);
        let fraction: String = (0..digits)
            .map(|_| char::from(b'0' + rng.u8(..10)))
            .collect();
        let nanos = if digits == 0 {
            0
        } else {
            fraction.parse::<u32>().unwrap() * 10u32.pow(9 - digits as u32)
        };
        let zone = match self.offset {
            None => pick(rng, &["Z", "z"]).to_string(),
            Some(_) => {
                let colon = rng.bool();
                self.zone(rng, colon)
            }
        };
        let text = format!(
            "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{}{zone}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            if digits == 0 {
                String::new()
            } else {
                format!(".{fraction}")
            },
        );
        (text, nanos)
    }

    fn rfc2822(&self, rng: &mut Rng) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS
            .get((self.month as usize).wrapping_sub(1))
            .copied()
            .unwrap_or("Foo");
        let weekday = if rng.bool() { "Thu, " } else { "" };
        let zone = self.zone(rng, false);
        format!(
            "{weekday}{} {month} {:04} {:02}:{:02}:{:02} {zone}",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

/// One character-level change (never leaves the text unchanged): a non-ASCII or odd character
/// replacing, or inserted before, any character, or one character deleted.
fn damage(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = rng
        .usize(..chars.len().max(1))
        .min(chars.len().saturating_sub(1));
    let odd = if rng.bool() {
        *pick(rng, ODD_CHARS)
    } else {
        rng.char('\u{80}'..)
    };
    match rng.u8(..3) {
        0 if !chars.is_empty() => chars[at] = odd,
        1 if !chars.is_empty() => {
            chars.remove(at);
        }
        _ => chars.insert(at, odd),
    }
    chars.into_iter().collect()
}

#[test]
fn timestamp_parsers_read_valid_stamps_exactly_and_refuse_the_rest_without_panicking() {
    let started = Instant::now();
    let mut rng = rng(20);
    let mut runs = 0;
    for _ in 0..cases(6000) {
        let stamp = Stamp::random(&mut rng);
        let expected = stamp.expected();
        let (text, nanos) = stamp.rfc3339(&mut rng);
        let got = parse_rfc3339(&text);
        let want = expected.map(|s| UNIX_EPOCH + Duration::new(s as u64, nanos));
        assert_eq!(got, want, "{text:?}");
        let twilio = stamp.rfc2822(&mut rng);
        let want = expected.map(|s| UNIX_EPOCH + Duration::from_secs(s as u64));
        assert_eq!(parse_rfc2822(&twilio), want, "{twilio:?}");
        // Damaged copies: any answer but a panic, and never a different valid reading of a
        // stamp whose damage landed on a non-ASCII character (nothing non-ASCII is accepted
        // in the RFC 3339 form).
        for _ in 0..4 {
            let bad = damage(&mut rng, &text);
            if parse_rfc3339(&bad).is_some() {
                assert!(bad.trim().is_ascii(), "accepted {bad:?}");
            }
            let _ = parse_rfc2822(&damage(&mut rng, &twilio));
            let _ = parse_rfc2822(&bad);
            let _ = parse_rfc3339(&twilio);
        }
        runs += 10;
    }
    report("timestamps", runs, started);
}
