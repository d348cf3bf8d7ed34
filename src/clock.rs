//! Wall-clock formatting in UTC without a date crate: RFC 3339 timestamps (`sent_at`, the health
//! response, JSON logs) and calendar dates. The civil-from-days conversion is the well-known
//! proleptic Gregorian algorithm; it is exact for every date after 1970.

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
