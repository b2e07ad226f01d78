//! Time as text: RFC 3339 timestamps (UTC, millisecond precision) for JSON,
//! HTTP-dates for headers, and human durations (`30s`, `5m`, `1h30m`) for
//! configuration. Everything is Unix milliseconds in and out; the civil
//! calendar arithmetic is the proleptic Gregorian calendar.

use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("not a valid timestamp")]
    Format,
    #[error("timestamp is out of range")]
    OutOfRange,
    #[error("not a valid duration (use e.g. 250ms, 30s, 5m, 2h, 1d, 1h30m)")]
    Duration,
}

const MS_PER_DAY: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the years RFC 3339 can spell.
pub const MIN_MS: i64 = -62_167_219_200_000;
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Days since 1970-01-01 of a civil date (valid for any i64-sized year
/// range we accept). Counts 400-year eras of 146097 days, with March as
/// the first month so the leap day is the last day of the year.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
    weekday: usize,
}

fn split_ms(ms: i64) -> Parts {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    Parts {
        year,
        month,
        day,
        hour: (rem / 3_600_000) as u32,
        minute: (rem / 60_000 % 60) as u32,
        second: (rem / 1000 % 60) as u32,
        millis: (rem % 1000) as u32,
        // 1970-01-01 was a Thursday (index 4, Sunday = 0).
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

/// `2024-05-06T07:08:09.010Z`. Always UTC, always three fraction digits.
/// Values outside years 0000..=9999 are clamped to that range.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_ms(&mut out, ms);
    out
}

/// [`format_rfc3339_ms`] appended to `out` (a log line is built in one
/// buffer; this is on every request's path, so digits are pushed directly).
pub fn push_rfc3339_ms(out: &mut String, ms: i64) {
    fn digits(out: &mut String, v: i64, width: u32) {
        for i in (0..width).rev() {
            let d = (v / 10i64.pow(i)) % 10;
            out.push(char::from(b'0' + d as u8));
        }
    }
    let p = split_ms(ms.clamp(MIN_MS, MAX_MS));
    digits(out, p.year, 4);
    out.push('-');
    digits(out, i64::from(p.month), 2);
    out.push('-');
    digits(out, i64::from(p.day), 2);
    out.push('T');
    digits(out, i64::from(p.hour), 2);
    out.push(':');
    digits(out, i64::from(p.minute), 2);
    out.push(':');
    digits(out, i64::from(p.second), 2);
    out.push('.');
    digits(out, i64::from(p.millis), 3);
    out.push('Z');
}

/// A tiny cursor over ASCII bytes for the fixed-width formats below.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn digits(&mut self, n: usize) -> Result<u32, TimeError> {
        let s = self.b.get(self.i..self.i + n).ok_or(TimeError::Format)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return Err(TimeError::Format);
        }
        self.i += n;
        Ok(s.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    }
    fn eat(&mut self, c: u8) -> Result<(), TimeError> {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(TimeError::Format)
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn civil_to_ms(year: i64, month: u32, day: u32, h: u32, mi: u32, s: u32, millis: u32) -> Result<i64, TimeError> {
    // Second 60 is a leap second; it lands on the next minute's :00.
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || h > 23 || mi > 59 || s > 60 {
        return Err(TimeError::OutOfRange);
    }
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    Ok(secs * 1000 + i64::from(millis))
}

/// Parses RFC 3339 (`2024-05-06T07:08:09Z`, `...09.123456+02:00`), also
/// accepting a space or lower-case `t` between date and time and an offset
/// without minutes (`+00`, as Postgres prints it). Fractions beyond
/// milliseconds are truncated.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, TimeError> {
    let mut p = Scan {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let year = p.digits(4)?;
    p.eat(b'-')?;
    let month = p.digits(2)?;
    p.eat(b'-')?;
    let day = p.digits(2)?;
    match p.peek() {
        Some(b'T' | b't' | b' ') => p.i += 1,
        _ => return Err(TimeError::Format),
    }
    let hour = p.digits(2)?;
    p.eat(b':')?;
    let minute = p.digits(2)?;
    p.eat(b':')?;
    let second = p.digits(2)?;
    let mut millis = 0u32;
    if p.peek() == Some(b'.') {
        p.i += 1;
        let start = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            if p.i - start < 3 {
                millis = millis * 10 + u32::from(p.b[p.i] - b'0');
            }
            p.i += 1;
        }
        let n = p.i - start;
        if n == 0 || n > 12 {
            return Err(TimeError::Format);
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = match p.peek() {
        Some(b'Z' | b'z') => {
            p.i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let oh = p.digits(2)?;
            let om = if p.peek() == Some(b':') {
                p.i += 1;
                p.digits(2)?
            } else if p.done() {
                0
            } else {
                p.digits(2)?
            };
            if oh > 23 || om > 59 {
                return Err(TimeError::OutOfRange);
            }
            let m = i64::from(oh * 60 + om);
            if sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return Err(TimeError::Format),
    };
    if !p.done() {
        return Err(TimeError::Format);
    }
    let local = civil_to_ms(i64::from(year), month, day, hour, minute, second, millis)?;
    Ok(local - offset_min * 60_000)
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const WEEKDAYS_LONG: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate, the preferred HTTP-date: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(ms: i64) -> String {
    let p = split_ms(ms.clamp(MIN_MS, MAX_MS));
    let mut s = String::with_capacity(29);
    let _ = write!(
        s,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[p.weekday],
        p.day,
        MONTHS[(p.month - 1) as usize],
        p.year,
        p.hour,
        p.minute,
        p.second
    );
    s
}

fn month_index(name: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

fn hms(s: &str) -> Result<(u32, u32, u32), TimeError> {
    let mut p = Scan { b: s.as_bytes(), i: 0 };
    let h = p.digits(2)?;
    p.eat(b':')?;
    let m = p.digits(2)?;
    p.eat(b':')?;
    let sec = p.digits(2)?;
    if !p.done() {
        return Err(TimeError::Format);
    }
    Ok((h, m, sec))
}

fn num(s: &str, len: std::ops::RangeInclusive<usize>) -> Result<u32, TimeError> {
    if !len.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimeError::Format);
    }
    s.parse().map_err(|_| TimeError::Format)
}

/// Parses an HTTP-date in any of the three forms RFC 9110 §5.6.7 requires
/// recipients to accept: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`). The weekday is not cross-checked.
pub fn parse_http_date(s: &str) -> Result<i64, TimeError> {
    let s = s.trim();
    if let Some((wd, rest)) = s.split_once(", ") {
        let parts: Vec<&str> = rest.split(' ').collect();
        if WEEKDAYS.contains(&wd) {
            // IMF-fixdate: 06 Nov 1994 08:49:37 GMT
            let [d, mon, y, t, "GMT"] = parts[..] else {
                return Err(TimeError::Format);
            };
            let (h, mi, sec) = hms(t)?;
            let month = month_index(mon).ok_or(TimeError::Format)?;
            return civil_to_ms(i64::from(num(y, 4..=4)?), month, num(d, 2..=2)?, h, mi, sec, 0);
        }
        if WEEKDAYS_LONG.contains(&wd) {
            // RFC 850: 06-Nov-94 08:49:37 GMT; two-digit years within 50
            // years of 2000 count as this century (RFC 9110 says to pick
            // the century closest to now; this fixed rule is deterministic).
            let [date, t, "GMT"] = parts[..] else {
                return Err(TimeError::Format);
            };
            let dparts: Vec<&str> = date.split('-').collect();
            let [d, mon, y] = dparts[..] else {
                return Err(TimeError::Format);
            };
            let yy = num(y, 2..=2)?;
            let year = if yy < 50 { 2000 + yy } else { 1900 + yy };
            let (h, mi, sec) = hms(t)?;
            let month = month_index(mon).ok_or(TimeError::Format)?;
            return civil_to_ms(i64::from(year), month, num(d, 2..=2)?, h, mi, sec, 0);
        }
        return Err(TimeError::Format);
    }
    // asctime: "Sun Nov  6 08:49:37 1994" (day padded with a space).
    let parts: Vec<&str> = s.split(' ').filter(|p| !p.is_empty()).collect();
    let [wd, mon, d, t, y] = parts[..] else {
        return Err(TimeError::Format);
    };
    if !WEEKDAYS.contains(&wd) {
        return Err(TimeError::Format);
    }
    let (h, mi, sec) = hms(t)?;
    let month = month_index(mon).ok_or(TimeError::Format)?;
    civil_to_ms(i64::from(num(y, 4..=4)?), month, num(d, 1..=2)?, h, mi, sec, 0)
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `1d`, or a sum of them without
/// spaces (`1h30m`), into milliseconds. Every number needs a unit; an
/// empty string, a bare number or an overflow is an error.
pub fn parse_duration_ms(s: &str) -> Result<u64, TimeError> {
    let b = s.trim().as_bytes();
    if b.is_empty() {
        return Err(TimeError::Duration);
    }
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 15 {
            return Err(TimeError::Duration);
        }
        let n: u64 = s.trim()[start..i].parse().map_err(|_| TimeError::Duration)?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: u64 = match &b[unit_start..i] {
            b"ms" => 1,
            b"s" => 1_000,
            b"m" => 60_000,
            b"h" => 3_600_000,
            b"d" => 86_400_000,
            _ => return Err(TimeError::Duration),
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or(TimeError::Duration)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("2023-11-14T22:13:20.123Z"), Ok(1_700_000_000_123));
        assert_eq!(parse_rfc3339_ms("2023-11-14T23:13:20.123+01:00"), Ok(1_700_000_000_123));
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T22:13:20.123456+00:00"),
            Ok(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("2023-11-14 22:13:20.1+00"), Ok(1_700_000_000_100));
        assert_eq!(parse_rfc3339_ms("2023-11-14t17:13:20-05:00"), Ok(1_700_000_000_000));
        assert_eq!(parse_rfc3339_ms("2016-12-31T23:59:60Z"), Ok(1_483_228_800_000));
    }

    #[test]
    fn rejects_invalid_timestamps() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20ZZ",
            "23-11-14T22:13:20Z",
            "2023/11/14T22:13:20Z",
            "2023-11-14T22:13:20+1:00",
            "２０２３-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::Format), "{bad}");
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:00:00+24:00",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), Err(TimeError::OutOfRange), "{bad}");
        }
    }

    #[test]
    fn http_date_round_trips_in_imf_fixdate() {
        assert_eq!(format_http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Ok(784_111_777_000));
    }

    #[test]
    fn http_date_accepts_the_obsolete_forms() {
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Ok(784_111_777_000));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Ok(784_111_777_000));
        assert_eq!(
            parse_http_date("Thursday, 01-Jan-26 00:00:00 GMT").map(format_rfc3339_ms),
            Ok("2026-01-01T00:00:00.000Z".into())
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994",
            "Someday, 06-Nov-94 08:49:37 GMT",
            "Sun Foo  6 08:49:37 1994",
            "1994-11-06T08:49:37Z",
        ] {
            assert!(parse_http_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_to_milliseconds() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms(" 1d "), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        for bad in [
            "",
            "30",
            "s",
            "1.5h",
            "-5m",
            "5 m",
            "5M",
            "1w",
            "99999999999999999999s",
            "999999999999999d",
        ] {
            assert_eq!(parse_duration_ms(bad), Err(TimeError::Duration), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
        }

        #[test]
        fn http_date_round_trips_to_the_second(ms in 0i64..=MAX_MS) {
            let secs = ms - ms.rem_euclid(1000);
            prop_assert_eq!(parse_http_date(&format_http_date(ms)), Ok(secs));
        }

        #[test]
        fn civil_days_round_trip(days in -1_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&s);
            let _ = parse_http_date(&s);
            let _ = parse_duration_ms(&s);
        }
    }
}
