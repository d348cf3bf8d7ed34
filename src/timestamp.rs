//! Wall-clock formatting and parsing in UTC without a date crate: RFC 3339 timestamps (`sent_at`,
//! the health response, JSON logs, PostgreSQL `timestamptz` values), Twilio's RFC 2822 dates, and
//! calendar dates. The civil/days conversions are the well-known proleptic Gregorian algorithms;
//! they are exact for every date after 1970. Parsers are total: any input, non-ASCII and
//! out-of-range numbers included, gives `None` unless it is a real date and time in years
//! 1970–9999 (so that what they return can always be formatted and read back).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Year, month (1–12) and day (1–31) of the day `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days after 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// 28 to 31.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn from_parts(
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: i64,
    nanos: u32,
    offset_secs: i64,
) -> Option<SystemTime> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || !(0..86_400 + 1).contains(&secs_of_day)
    {
        return None;
    }
    let total = days_from_civil(year, month, day)
        .checked_mul(86_400)?
        .checked_add(secs_of_day)?
        .checked_sub(offset_secs)?;
    let total = u64::try_from(total).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(total, nanos))
}

/// 1 to 9 ASCII digits as a number; `None` for anything else (no sign, no white space).
fn num(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + i64::from(b - b'0')))
}

/// `+hh`, `-hh`, `+hhmm` or `+hh:mm` as seconds east of UTC (hours ≤ 23, minutes ≤ 59).
fn offset(zone: &[u8]) -> Option<i64> {
    let (&sign, body) = zone.split_first()?;
    let sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = match body {
        [h1, h2] => (num(&[*h1, *h2])?, 0),
        [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => (num(&[*h1, *h2])?, num(&[*m1, *m2])?),
        _ => return None,
    };
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

/// `hh:mm:ss` (or `hh:mm` when `seconds_optional`) as seconds of the day; 60 is allowed as a
/// leap second.
fn time_of_day(clock: &[u8], seconds_optional: bool) -> Option<i64> {
    let mut parts = clock.split(|&b| b == b':');
    let h = num(parts.next()?)?;
    let m = num(parts.next()?)?;
    let s = match parts.next() {
        Some(s) => num(s)?,
        None if seconds_optional => 0,
        None => return None,
    };
    if parts.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + s)
}

/// Parse `2026-11-24T20:37:35.086+00:00`, `…35Z`, `2026-11-24 20:37:35+00` (PostgreSQL's text
/// form), with 0–9 fraction digits; an offset is required. Works on bytes, so any input,
/// non-ASCII included, gives a value or `None`, never a panic.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(&b[..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let secs_of_day = time_of_day(&b[11..19], false)?;
    let mut tail = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = tail.strip_prefix(b".") {
        let digits = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = u32::try_from(num(&frac[..digits])? * 10i64.pow(9 - digits as u32)).ok()?;
        tail = &frac[digits..];
    }
    let offset = match tail {
        b"Z" | b"z" => 0,
        zone => offset(zone)?,
    };
    from_parts(
        year,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
        secs_of_day,
        nanos,
        offset,
    )
}

/// Parse Twilio's `Thu, 24 Aug 2023 05:01:45 +0000` (weekday optional, seconds optional, zone
/// `GMT`/`UT`/`UTC`/`Z`/`±hhmm`, `+0000` when absent). Total, as [`parse_rfc3339`].
pub fn parse_rfc2822(text: &str) -> Option<SystemTime> {
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let text = text.trim();
    let text = text.split_once(", ").map_or(text, |(_, rest)| rest);
    let mut parts = text.split_ascii_whitespace().map(str::as_bytes);
    let day = num(parts.next()?)?;
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))?;
    let year = num(parts.next()?)?;
    let secs_of_day = time_of_day(parts.next()?, true)?;
    let offset = match parts.next().unwrap_or(b"+0000") {
        b"GMT" | b"UT" | b"UTC" | b"Z" => 0,
        zone @ [_, _, _, _, _] => offset(zone)?,
        _ => return None,
    };
    from_parts(
        year,
        month as u32 + 1,
        u32::try_from(day).ok()?,
        secs_of_day,
        0,
        offset,
    )
}

/// `t - d`, or the epoch when that would fall before it (a host clock set near 1970, a huge `d`):
/// `SystemTime - Duration` panics there.
pub fn saturating_sub(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).map_or(UNIX_EPOCH, |s| s.max(UNIX_EPOCH))
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    (y, m, day, secs % 86_400, d.subsec_micros())
}

/// `2026-11-24T20:30:05`, then a dot and the first `digits` digits of the fraction when
/// `digits` is not 0, then `Z`. Written digit by digit: these stamp every log line and every
/// `sent_at`, and `format!` cost several times more.
fn rfc3339_with(t: SystemTime, digits: u32) -> String {
    let (y, m, d, s, micros) = split(t);
    let mut out = String::with_capacity(28);
    // After the epoch, so never negative; past 9999 it takes the digits it needs.
    push_digits(&mut out, y.max(0) as u64, 4);
    out.push('-');
    push_digits(&mut out, u64::from(m), 2);
    out.push('-');
    push_digits(&mut out, u64::from(d), 2);
    out.push('T');
    push_digits(&mut out, s / 3600, 2);
    out.push(':');
    push_digits(&mut out, s / 60 % 60, 2);
    out.push(':');
    push_digits(&mut out, s % 60, 2);
    if digits > 0 {
        out.push('.');
        push_digits(&mut out, u64::from(micros) / 10u64.pow(6 - digits), digits);
    }
    out.push('Z');
    out
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, value: u64, width: u32) {
    let width = width.max(value.checked_ilog10().map_or(1, |l| l + 1));
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u64.pow(place) % 10) as u8));
    }
}

/// `2026-11-24T20:30:05.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    rfc3339_with(t, 3)
}

/// `2026-11-24T20:30:05.123456Z`: PostgreSQL's precision, so a value written and read back
/// compares equal.
pub fn rfc3339_micros(t: SystemTime) -> String {
    rfc3339_with(t, 6)
}

/// `2026-11-24T20:30:05Z`.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    rfc3339_with(t, 0)
}

/// `2026-11-24`, the UTC day.
pub fn utc_date(t: SystemTime) -> String {
    let (y, m, d, _, _) = split(t);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_692_853_305_042);
        assert_eq!(rfc3339_millis(t), "2023-08-24T05:01:45.042Z");
        assert_eq!(rfc3339_seconds(t), "2023-08-24T05:01:45Z");
        assert_eq!(utc_date(t), "2023-08-24");
        assert_eq!(rfc3339_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // A leap day and the last second of a year.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_208_000); // 2024-02-29T12:00:00Z
        assert_eq!(rfc3339_seconds(leap), "2024-02-29T12:00:00Z");
        let eoy = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(rfc3339_seconds(eoy), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn digit_by_digit_formatting_matches_format() {
        // A spread of instants, from the epoch past the year 9999 (five-digit years).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let micros = match n {
                0 => 0,
                1 => 253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
                2 => 253_402_300_800_000_000, // 10000-01-01
                _ => x % 260_000_000_000_000_000,
            };
            let t = UNIX_EPOCH + Duration::from_micros(micros);
            let (y, m, d, s, us) = split(t);
            let clock = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            assert_eq!(rfc3339_seconds(t), format!("{clock}Z"));
            assert_eq!(rfc3339_millis(t), format!("{clock}.{:03}Z", us / 1000));
            assert_eq!(rfc3339_micros(t), format!("{clock}.{us:06}Z"));
        }
    }

    #[test]
    fn parses_postgres_and_twilio_times() {
        let t = UNIX_EPOCH + Duration::from_millis(1_692_853_305_042);
        assert_eq!(parse_rfc3339("2023-08-24T05:01:45.042Z"), Some(t));
        assert_eq!(parse_rfc3339("2023-08-24T05:01:45.042+00:00"), Some(t));
        assert_eq!(parse_rfc3339("2023-08-24 07:01:45.042+02"), Some(t));
        assert_eq!(parse_rfc3339("2023-08-24T00:01:45.042-05:00"), Some(t));
        assert_eq!(
            parse_rfc3339("2023-08-24T05:01:45+00:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_692_853_305))
        );
        assert_eq!(
            parse_rfc3339(&rfc3339_millis(t)),
            Some(t),
            "round trip through our own format"
        );
        for bad in [
            "",
            "2023-08-24",
            "2023-08-24T05:01:45",
            "2023-13-24T05:01:45Z",
            "2023-08-24T25:01:45Z",
            "2023-08-24T05:01:45.Z",
            "2023-08-24T05:01:45+0",
            "x023-08-24T05:01:45Z",
            "2023-08-24T05:01:45.0000000000Z",
            "2023-08-24T05:01:45ü",
            "ü023-08-24T05:01:45Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_rfc2822("Thu, 24 Aug 2023 05:01:45 +0000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_692_853_305))
        );
        assert_eq!(
            parse_rfc2822("Wed, 19 Jun 2019 22:04:00 -0000"),
            parse_rfc3339("2019-06-19T22:04:00Z")
        );
        assert_eq!(parse_rfc2822("Thu, 24 Foo 2023 05:01:45 +0000"), None);
        assert_eq!(parse_rfc2822("garbage"), None);
        assert_eq!(
            parse_rfc2822("24 Aug 2023 05:01 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_692_853_260))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_164_800))
        );
    }

    #[test]
    fn parsers_are_total_on_non_ascii_and_out_of_range_input() {
        for text in [
            "2023-08-24T05:01:45+aüb",
            "2023-08-24T05:01:45+0ü:0",
            "2023-08-24T05:01:45+üü",
            "2023-08-24T05:01:45.1ü",
            "2023-08-24T05:01:45-ü",
            "2023-08-24T05:01:4ü+00:00",
            "2023-08-24T99:99:99Z",
            "999999999-12-31T23:59:60+99:99",
            "0000-00-00T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-08-24T05:01:45+24:00",
            "2023-08-24T05:01:45+00:60",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
        for text in [
            "Thu, 24 Aug 2023 05:01:45 ü+12",
            "Thu, 24 Aug 2023 05:01:45 +1ü2",
            "Thu, 24 Aug 2023 05:01:45 +12ü",
            "Thu, 24 Aug 2023 05:01:45 ++++++",
            "Thu, 99 Aug 999999999 99:99:99 +9999",
            "Thu, 24 Äug 2023 05:01:45 +0000",
            "Thu, 24 Aug 2023 05:01 ü",
        ] {
            assert_eq!(parse_rfc2822(text), None, "{text:?}");
        }
    }

    #[test]
    fn saturating_sub_floors_at_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(
            saturating_sub(t, Duration::from_secs(3)),
            UNIX_EPOCH + Duration::from_secs(7)
        );
        assert_eq!(saturating_sub(t, Duration::from_secs(11)), UNIX_EPOCH);
        assert_eq!(saturating_sub(UNIX_EPOCH, Duration::MAX), UNIX_EPOCH);
        assert_eq!(saturating_sub(t, Duration::ZERO), t);
    }

    #[test]
    fn days_round_trip() {
        for days in [-1000i64, 0, 1, 59, 60, 365, 10_957, 19_593, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn every_day_for_sixty_years_is_consecutive() {
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..(60 * 366) {
            let next = civil_from_days(days);
            let same_month = next.0 == prev.0 && next.1 == prev.1 && next.2 == prev.2 + 1;
            let new_month = next.2 == 1
                && ((next.0 == prev.0 && next.1 == prev.1 + 1)
                    || (next.0 == prev.0 + 1 && next.1 == 1 && prev.1 == 12));
            assert!(same_month || new_month, "{prev:?} -> {next:?}");
            prev = next;
        }
    }
}
