//! Dates as Twilio writes and reads them: the RFC 2822 form of every date in a resource, and
//! the `DateSent` list filters. The calendar (days, months, weekdays, leap years) is the `time`
//! crate's, not a copy of the service's `timestamp.rs`, so the double checks the service's dates
//! independently. Only the shapes Twilio accepts, and its time zones, are spelled out here.

use std::time::SystemTime;
use time::format_description::BorrowedFormatItem;
use time::macros::{date, format_description};
use time::parsing::Parsed;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// Twilio's date format, always GMT: `Thu, 24 Aug 2023 05:01:45 +0000`.
const RFC2822_GMT: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
);
/// The documented `DateSent` form: a whole GMT day.
const YEAR_MONTH_DAY: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");
/// An ISO 8601 date-time up to its zone (`T` or a space between date and time, an optional
/// fraction of a second).
const ISO_DATE_TIME: &[BorrowedFormatItem<'_>] = format_description!(
    "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
);
/// The date of an RFC 2822 date-time (its weekday taken off, its fields one space apart).
const DAY_MONTH_YEAR: &[BorrowedFormatItem<'_>] =
    format_description!("[day padding:none] [month repr:short] [year]");
const WEEKDAY: &[BorrowedFormatItem<'_>] = format_description!("[weekday repr:short]");
const HOUR_MINUTE_SECOND: &[BorrowedFormatItem<'_>] =
    format_description!("[hour]:[minute]:[second]");
const UNIX_EPOCH_DAY: Date = date!(1970 - 01 - 01);

/// Twilio's date format, always GMT: `Thu, 24 Aug 2023 05:01:45 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(RFC2822_GMT)
        .expect("a UTC date-time has every component the format names")
}

/// Whole seconds since the Unix epoch, flooring instants before it.
pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    OffsetDateTime::from(t).unix_timestamp()
}

/// Days since 1970-01-01.
fn epoch_day(date: Date) -> i64 {
    (date - UNIX_EPOCH_DAY).whole_days()
}

/// A `DateSent` filter value: a whole GMT day (the documented form) or an instant (what
/// twilio-python sends for date-times).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum DateBound {
    /// Days since 1970-01-01.
    Day(i64),
    /// Seconds since the Unix epoch.
    Instant(i64),
}

/// Whether a message sent at `sent` (unix seconds) passes the filter `name` (`DateSent`,
/// `DateSent<`, `DateSent>`). Both bounds are inclusive, as Twilio documents (§3.1).
pub(super) fn date_matches(name: &str, bound: DateBound, sent: i64) -> bool {
    match (name, bound) {
        ("DateSent>", DateBound::Day(d)) => sent >= d * 86_400,
        ("DateSent>", DateBound::Instant(t)) => sent >= t,
        ("DateSent<", DateBound::Day(d)) => sent < (d + 1) * 86_400,
        ("DateSent<", DateBound::Instant(t)) => sent <= t,
        (_, DateBound::Day(d)) => sent.div_euclid(86_400) == d,
        (_, DateBound::Instant(t)) => sent == t,
    }
}

/// Accept the documented `YYYY-MM-DD`, ISO 8601 date-times (`2024-01-02T10:00:00Z`, optional
/// fraction, offset or space separator) and RFC 2822 (`Wed, 19 Jun 2019 22:04:00 -0000`).
pub(super) fn parse_date_filter(s: &str) -> Option<DateBound> {
    let s = s.trim();
    // Twilio's forms start with an unsigned year, a weekday or a day: never a sign.
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(date) = Date::parse(s, YEAR_MONTH_DAY) {
            return Some(DateBound::Day(epoch_day(date)));
        }
        if let Some(instant) = parse_iso_date_time(s) {
            return Some(DateBound::Instant(instant));
        }
    }
    parse_rfc2822(s).map(DateBound::Instant)
}

/// `2023-08-24T05:01:45Z`, `2023-08-24 07:01:45.000+02:00`, … → unix seconds.
fn parse_iso_date_time(s: &str) -> Option<i64> {
    let mut parsed = Parsed::new();
    let zone = parsed.parse_items(s.as_bytes(), ISO_DATE_TIME).ok()?;
    let local = PrimitiveDateTime::try_from(parsed).ok()?;
    let offset = parse_zone(std::str::from_utf8(zone).ok()?.trim())?;
    Some(local.assume_utc().unix_timestamp() - offset)
}

/// `Thu, 24 Aug 2023 05:01:45 +0000` (the weekday optional, and not checked against the date;
/// fields separated by any whitespace) → unix seconds.
fn parse_rfc2822(s: &str) -> Option<i64> {
    let s = match s.split_once(',') {
        Some((weekday, rest)) if is_weekday(weekday.trim()) => rest.trim(),
        _ => s,
    };
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = fields.as_slice() else {
        return None;
    };
    let date = Date::parse(&format!("{day} {month} {year}"), DAY_MONTH_YEAR).ok()?;
    let time = Time::parse(time, HOUR_MINUTE_SECOND).ok()?;
    let offset = parse_zone(zone)?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp()
            - offset,
    )
}

/// `Mon` … `Sun`.
fn is_weekday(s: &str) -> bool {
    Parsed::new()
        .parse_items(s.as_bytes(), WEEKDAY)
        .is_ok_and(|rest| rest.is_empty())
}

/// `Z`, `GMT`, `UT`, `+HH:MM`, `-HHMM`, … (or nothing: GMT) → offset east of GMT in seconds.
fn parse_zone(s: &str) -> Option<i64> {
    match s {
        "" | "Z" | "GMT" | "UT" | "UTC" => return Some(0),
        _ => {}
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = s[1..].replace(':', "");
    if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = rest[0..2].parse().ok()?;
    let m: i64 = rest[2..4].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn twilio_rfc2822_and_calendar() {
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(1_692_853_305)),
            "Thu, 24 Aug 2023 05:01:45 +0000"
        );
        assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(
            rfc2822(UNIX_EPOCH + Duration::from_secs(1_438_286_400)),
            "Thu, 30 Jul 2015 20:00:00 +0000"
        );
        assert_eq!(
            rfc2822(UNIX_EPOCH - Duration::from_secs(1)),
            "Wed, 31 Dec 1969 23:59:59 +0000"
        );
        // Every day from 1900 to 2298 (1900, 2100 and 2200 not leap years, 2000 one): its
        // midnight written as Twilio writes it, and the day as `YYYY-MM-DD`, read back as the
        // same instant and the same day.
        for days in -25_567..120_000 {
            let date = UNIX_EPOCH_DAY + time::Duration::days(days);
            let midnight = SystemTime::from(date.midnight().assume_utc());
            assert_eq!(
                parse_date_filter(&rfc2822(midnight)),
                Some(DateBound::Instant(days * 86_400))
            );
            let ymd = date.format(YEAR_MONTH_DAY).unwrap();
            assert_eq!(parse_date_filter(&ymd), Some(DateBound::Day(days)));
        }
        assert_eq!(
            parse_date_filter("2023-08-24"),
            Some(DateBound::Day(19_593))
        );
        assert_eq!(parse_date_filter("2023-02-29"), None);
        assert_eq!(
            parse_date_filter("2023-08-24T05:01:45Z"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(
            parse_date_filter("2023-08-24 07:01:45.000+02:00"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(
            parse_date_filter("Thu, 24 Aug 2023 05:01:45 +0000"),
            Some(DateBound::Instant(1_692_853_305))
        );
        assert_eq!(parse_date_filter("06/11/2019 22:05:25 MST"), None);
    }
}
