//! Wall-clock formatting and parsing in UTC without a date crate: RFC 3339 timestamps (`sent_at`,
//! the health response, JSON logs, PostgreSQL `timestamptz` values), Twilio's RFC 2822 dates, and
//! calendar dates. The civil/days conversions are the well-known proleptic Gregorian algorithms;
//! they are exact for every date after 1970. Parsers return `None` on anything malformed.

use std::time::{SystemTime, UNIX_EPOCH};

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

fn from_parts(
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: i64,
    nanos: u32,
    offset_secs: i64,
) -> Option<SystemTime> {
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..86_400 + 1).contains(&secs_of_day)
    {
        return None;
    }
    let total = days_from_civil(year, month, day)
        .checked_mul(86_400)?
        .checked_add(secs_of_day)?
        .checked_sub(offset_secs)?;
    let total = u64::try_from(total).ok()?;
    UNIX_EPOCH.checked_add(std::time::Duration::new(total, nanos))
}

fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
        return None;
    }
    s.parse().ok()
}

/// Parse `2026-11-24T20:37:35.086+00:00`, `…35Z`, `2026-11-24 20:37:35+00` (PostgreSQL's text
/// form), with 0–9 fraction digits; an offset is required.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.len() < 20 || !text.is_char_boundary(10) || !text.is_char_boundary(19) {
        return None;
    }
    let (date, rest) = text.split_at(10);
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, mut tail) = rest.split_at(8.min(rest.len()));
    let mut c = clock.split(':');
    let (h, m, s) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    if c.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if let Some(frac) = tail.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = (num(&frac[..digits])? * 10i64.pow(9 - digits as u32)) as u32;
        tail = &frac[digits..];
    }
    let offset = match tail {
        "Z" | "z" => 0,
        _ => {
            let sign = match tail.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let body = &tail[1..];
            let (oh, om) = match body.len() {
                2 => (num(body)?, 0),
                4 => (num(&body[..2])?, num(&body[2..])?),
                5 if &body[2..3] == ":" => (num(&body[..2])?, num(&body[3..])?),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    from_parts(
        year,
        month as u32,
        day as u32,
        h * 3600 + m * 60 + s,
        nanos,
        offset,
    )
}

/// Parse Twilio's `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn parse_rfc2822(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let text = text.trim();
    let text = text.split_once(", ").map_or(text, |(_, rest)| rest);
    let mut parts = text.split_whitespace();
    let day = num(parts.next()?)?;
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year = num(parts.next()?)?;
    let mut c = parts.next()?.split(':');
    let (h, m, s) = (
        num(c.next()?)?,
        num(c.next()?)?,
        num(c.next().unwrap_or("0"))?,
    );
    let zone = parts.next().unwrap_or("+0000");
    let offset = match zone {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        z if z.len() == 5 => {
            let sign = match &z[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (num(&z[1..3])? * 3600 + num(&z[3..5])? * 60)
        }
        _ => return None,
    };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    from_parts(year, month, day as u32, h * 3600 + m * 60 + s, 0, offset)
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    (y, m, day, secs % 86_400, d.subsec_millis())
}

/// `2026-11-24T20:30:05.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (y, m, d, s, ms) = split(t);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-24T20:30:05Z`.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let (y, m, d, s, _) = split(t);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-24`, the UTC day.
pub fn utc_date(t: SystemTime) -> String {
    let (y, m, d, _, _) = split(t);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
