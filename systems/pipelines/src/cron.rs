//! Cron schedules in a user's IANA time zone.
//!
//! Expressions are the classic five fields, `minute hour day-of-month month
//! day-of-week`, each `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`
//! or `a/n`, or a comma list of those; months and weekdays also by their
//! three-letter English names; weekday 0 and 7 are both Sunday; `@hourly`,
//! `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`).
//! When both day fields are restricted a day matches if EITHER matches (the
//! Vixie cron rule every crontab user expects).
//!
//! Times are wall-clock times in the schedule's zone. Daylight-saving rules
//! (the choices are Vixie cron's, stated exactly):
//!
//! * **A local time that does not exist** (spring forward: 02:30 in New York
//!   on the second Sunday of March): a schedule with a fixed hour runs once,
//!   at the instant the gap ends (03:00 local); several skipped times of one
//!   gap collapse into that one run. A schedule whose hour field is `*`
//!   ("interval-like", e.g. `*/15 * * * *`) simply has no runs in the gap:
//!   its next run is the next wall time that exists.
//! * **A local time that happens twice** (fall back: 01:30 in New York on the
//!   first Sunday of November): a schedule with a fixed hour runs once, the
//!   first time (the earlier offset). An interval-like schedule runs on both
//!   passes, because its user asked for "every 15 minutes", not for a time.
//! * **Missed runs** (the processor was down): see [`plan_firing`]: at most
//!   one catch-up run, for the latest missed time, then the schedule moves
//!   to its first time after now ([`CatchUp::Once`], the default), or no
//!   catch-up run when the miss is older than the grace ([`CatchUp::Skip`]).
//!
//! Everything here is pure: instants are Unix seconds passed in. Zones come
//! from [`edgeworks_runtime::tz`], which on the edge asks the host's `Intl`
//! for the UTC offset at an instant (no time-zone database in the wasm); a
//! civil minute is resolved from offsets alone (see `Schedule::instants_of`).

use edgeworks_runtime::tz::{TzError, Zone};
use serde::Serialize;

use edgeworks_core::time::{civil_from_days, days_from_civil};

/// How far ahead a search looks before deciding an expression never fires:
/// eight years covers every February 29th.
const HORIZON_DAYS: i64 = 8 * 366;
/// Larger than any daylight-saving shift: a fold's second pass can put a
/// civil time up to this far behind the instant being searched from.
const MAX_SHIFT_SECS: i64 = 3 * 3600;

/// What is wrong with an expression or a zone, for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronError {
    /// `minute`, `hour`, `day_of_month`, `month`, `day_of_week`,
    /// `expression` or `timezone`.
    pub field: &'static str,
    /// The offending text.
    pub value: String,
    /// What to fix.
    pub message: String,
}

impl std::fmt::Display for CronError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({:?})", self.field, self.message, self.value)
    }
}

fn err(field: &'static str, value: &str, message: impl Into<String>) -> CronError {
    CronError {
        field,
        value: value.chars().take(100).collect(),
        message: message.into(),
    }
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day_of_month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is accepted and folded onto 0 (Sunday).
const DOW: FieldSpec = FieldSpec {
    name: "day_of_week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// Parses one field into a bit set; also says whether it was written as
/// an unrestricted `*` (or `*/1`).
fn parse_field(text: &str, spec: &FieldSpec) -> Result<(u64, bool), CronError> {
    let value = |s: &str| -> Result<u32, CronError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = spec.names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + spec.min);
        }
        if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                spec.name,
                text,
                format!(
                    "{s:?} is not a number{}",
                    if spec.names.is_empty() { "" } else { " or a name" }
                ),
            ));
        }
        let n: u32 = s.parse().map_err(|_| err(spec.name, text, "not a number"))?;
        if n < spec.min || n > spec.max {
            return Err(err(
                spec.name,
                text,
                format!("{} must be {}-{}", spec.name, spec.min, spec.max),
            ));
        }
        Ok(n)
    };
    if text.is_empty() {
        return Err(err(spec.name, text, "is empty"));
    }
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err(spec.name, text, format!("step {s:?} is not a number")));
                }
                let n: u32 = s.parse().unwrap_or(0);
                if n == 0 || n > spec.max {
                    return Err(err(spec.name, text, format!("step must be 1-{}", spec.max)));
                }
                (r, n)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            if step == 1 {
                star = true;
            }
            (spec.min, if spec.max == 7 { 6 } else { spec.max })
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(err(spec.name, text, format!("range {range} runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `a/n` means from a to the end, stepping n.
            (a, if part.contains('/') { spec.max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            // Sunday written as 7 is Sunday 0.
            let bit = if spec.max == 7 && v == 7 { 0 } else { v };
            bits |= 1 << bit;
            v += step;
        }
    }
    Ok((bits, star))
}

/// A parsed five-field expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_star: bool,
    weekdays_star: bool,
    hours_star: bool,
}

const MAX_EXPRESSION_CHARS: usize = 200;

impl CronExpr {
    /// Parses and validates `text`; the error names the field.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let trimmed = text.trim();
        if trimmed.len() > MAX_EXPRESSION_CHARS {
            return Err(err("expression", trimmed, "is longer than 200 characters"));
        }
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            s if s.starts_with('@') => {
                return Err(err(
                    "expression",
                    trimmed,
                    "unknown macro; use @hourly, @daily, @weekly, @monthly or @yearly",
                ))
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(
                "expression",
                trimmed,
                format!(
                    "needs 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
            ));
        }
        let (minutes, _) = parse_field(fields[0], &MINUTE)?;
        let (hours, hours_star) = parse_field(fields[1], &HOUR)?;
        let (days, days_star) = parse_field(fields[2], &DOM)?;
        let (months, _) = parse_field(fields[3], &MONTH)?;
        let (weekdays, weekdays_star) = parse_field(fields[4], &DOW)?;
        let expr = CronExpr {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_star,
            weekdays_star,
            hours_star,
        };
        // Only day-of-month can make an expression impossible (30 2 = Feb 30).
        if weekdays_star && !days_star {
            let possible = (1..=12u32)
                .filter(|m| months & (1 << m) != 0)
                .any(|m| (1..=max_days(m)).any(|d| days & (1 << d) != 0));
            if !possible {
                return Err(err(
                    "day_of_month",
                    fields[2],
                    "never occurs in the months given, so the schedule would never run",
                ));
            }
        }
        Ok(expr)
    }

    /// Whether the hour field is unrestricted: the schedule is "every N
    /// minutes" rather than "at a time" (see the module's DST rules).
    pub fn is_interval_like(&self) -> bool {
        self.hours_star
    }

    fn matches_day(&self, year: i64, month: u32, day: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let weekday = weekday(days_from_civil(year, month, day));
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        match (self.days_star, self.weekdays_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// Whether a civil minute (seconds since 1970-01-01T00:00 local) matches.
    pub fn matches_local(&self, local_secs: i64) -> bool {
        let days = local_secs.div_euclid(86_400);
        let secs = local_secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (h, mi) = ((secs / 3600) as u32, ((secs % 3600) / 60) as u32);
        self.matches_day(y, m, d) && self.hours & (1 << h) != 0 && self.minutes & (1 << mi) != 0
    }

    /// Matching civil minutes at or after `from_local` (local seconds), in
    /// order, up to the horizon.
    fn local_minutes_from(&self, from_local: i64) -> impl Iterator<Item = i64> + '_ {
        let start = from_local.div_euclid(60) * 60;
        let first_day = start.div_euclid(86_400);
        let start_secs = start.rem_euclid(86_400);
        (first_day..first_day + HORIZON_DAYS)
            .filter(move |day| {
                let (y, m, d) = civil_from_days(*day);
                self.matches_day(y, m, d)
            })
            .flat_map(move |day| {
                let floor = if day == first_day { start_secs } else { 0 };
                (0..24i64)
                    .filter(move |h| self.hours & (1 << h) != 0 && (h + 1) * 3600 > floor)
                    .flat_map(move |h| {
                        (0..60i64)
                            .filter(move |mi| self.minutes & (1 << mi) != 0)
                            .map(move |mi| day * 86_400 + h * 3600 + mi * 60)
                            .filter(move |s| s - day * 86_400 >= floor)
                    })
            })
    }
}

fn max_days(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// 0 = Sunday.
fn weekday(days_since_epoch: i64) -> u32 {
    // 1970-01-01 was a Thursday.
    (days_since_epoch + 4).rem_euclid(7) as u32
}

/// An expression in a zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: CronExpr,
    tz: Zone,
}

/// Checks an IANA zone name and finds it in the host's time-zone data.
pub fn time_zone(name: &str) -> Result<Zone, CronError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    // Every IANA name starts with a letter; `Intl` would also take offsets
    // such as `+01`, which are not zones.
    let letter_first = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if name.is_empty() || name.len() > 64 || !ok_chars || !letter_first {
        return Err(err(
            "timezone",
            name,
            "is not an IANA time zone name such as Europe/London",
        ));
    }
    Zone::get(name).map_err(|e| match e {
        TzError::Unknown => err("timezone", name, "is not a known IANA time zone, such as Europe/London"),
        TzError::Unavailable => err("timezone", name, "cannot be checked: this host has no time-zone data"),
    })
}

impl Schedule {
    /// The expression in the named zone.
    pub fn new(expression: &str, zone: &str) -> Result<Schedule, CronError> {
        Ok(Schedule {
            expr: CronExpr::parse(expression)?,
            tz: time_zone(zone)?,
        })
    }

    /// The expression.
    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    /// The zone's offset at an instant (0 outside the supported years).
    fn offset_at(&self, unix_secs: i64) -> i64 {
        self.tz.offset_at(unix_secs).map_or(0, i64::from)
    }

    /// The instants a civil minute runs at, earliest first (empty: none).
    ///
    /// Resolved from offsets alone: the offsets a day before and a day after
    /// (`o1`, `o2`) are the only ones near `local` (transitions are months
    /// apart); an offset `o` gives the candidate `local - o`, which is real
    /// when the zone's offset there is `o`. Both real and distinct: a fold
    /// (earlier first); one: unambiguous; none: a gap from `o1` to `o2`.
    fn instants_of(&self, local: i64) -> Vec<i64> {
        let before = self.offset_at(local - 86_400);
        let after = self.offset_at(local + 86_400);
        let real = |o: i64| self.offset_at(local - o) == o;
        match (real(before), before != after && real(after)) {
            (true, true) => {
                let first = local - before.max(after);
                let second = local - before.min(after);
                if self.expr.is_interval_like() {
                    vec![first, second]
                } else {
                    vec![first]
                }
            }
            (true, false) => vec![local - before],
            (false, true) => vec![local - after],
            (false, false) => {
                if self.expr.is_interval_like() || after <= before {
                    // `after <= before`: not a gap between these two offsets
                    // (two transitions within two days); no instant shows it.
                    return Vec::new();
                }
                // The gap's end: the transition T, with L - after < T <= L - before.
                let (mut lo, mut hi) = (local - after, local - before);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_at(mid) == after {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                vec![hi]
            }
        }
    }

    /// The first run strictly after `after` (Unix seconds); `None` when the
    /// expression does not fire within the horizon.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let offset = self.offset_at(after);
        let local = after + offset;
        // A fold near `after` can make earlier civil times run later than
        // `after` (their second pass); look back only when one is near.
        let steady =
            self.offset_at(after - MAX_SHIFT_SECS) == offset && self.offset_at(after + MAX_SHIFT_SECS) == offset;
        let from = if steady { local } else { local - MAX_SHIFT_SECS };
        let mut best: Option<i64> = None;
        // Earliest instants of civil minutes rise with the civil minute; only
        // a fold's second pass runs "late". So the first civil minute whose
        // earliest instant is after `after` ends the search.
        for l in self.expr.local_minutes_from(from) {
            let instants = self.instants_of(l);
            for i in &instants {
                if *i > after && best.is_none_or(|b| *i < b) {
                    best = Some(*i);
                }
            }
            if instants.first().is_some_and(|first| *first > after) {
                break;
            }
        }
        best
    }

    /// The next `n` runs after `after`.
    pub fn upcoming(&self, after: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The latest run at or before `at`, no earlier than `not_before`.
    pub fn latest_at_or_before(&self, not_before: i64, at: i64) -> Option<i64> {
        let mut t = not_before - 1;
        let mut latest = None;
        while let Some(next) = self.next_after(t) {
            if next > at {
                break;
            }
            latest = Some(next);
            t = next;
        }
        latest
    }
}

/// What to do about runs missed while no processor ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// One run for everything missed (for the latest missed time).
    Once,
    /// No run when the miss is older than the grace.
    Skip,
}

impl CatchUp {
    /// `once` or `skip`.
    pub fn parse(s: &str) -> Option<CatchUp> {
        match s {
            "once" => Some(CatchUp::Once),
            "skip" => Some(CatchUp::Skip),
            _ => None,
        }
    }
}

/// One due schedule's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    /// Whether a run is created now.
    pub fire: bool,
    /// The time the run stands for (recorded as `scheduled_for`).
    pub scheduled_for: i64,
    /// The schedule's next time, strictly after now.
    pub next_run_at: Option<i64>,
}

/// Decides a schedule that was due at `due_at` (its stored next run), seen
/// at `now`. A run late by no more than `grace_secs` is simply on time.
/// Otherwise runs were missed: [`CatchUp::Once`] fires one run for the
/// latest missed time; [`CatchUp::Skip`] fires none. Either way the
/// schedule moves to its first time after `now`, never into the past, so a
/// long outage can never produce a burst of runs.
pub fn plan_firing(schedule: &Schedule, due_at: i64, now: i64, catch_up: CatchUp, grace_secs: i64) -> Firing {
    let next_run_at = schedule.next_after(now.max(due_at));
    if now - due_at <= grace_secs {
        return Firing {
            fire: true,
            scheduled_for: due_at,
            next_run_at,
        };
    }
    match catch_up {
        CatchUp::Once => Firing {
            fire: true,
            scheduled_for: schedule.latest_at_or_before(due_at, now).unwrap_or(due_at),
            next_run_at,
        },
        CatchUp::Skip => Firing {
            fire: false,
            scheduled_for: due_at,
            next_run_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeworks_core::time::{format_rfc3339_ms, parse_rfc3339_ms};
    use proptest::prelude::*;

    fn at(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap() / 1000
    }
    fn iso(secs: i64) -> String {
        format_rfc3339_ms(secs * 1000)
    }
    fn runs(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        Schedule::new(expr, zone)
            .unwrap()
            .upcoming(at(after), n)
            .into_iter()
            .map(iso)
            .collect()
    }

    #[test]
    fn each_field_error_names_its_field() {
        let e = |s: &str| CronExpr::parse(s).unwrap_err();
        assert_eq!(e("60 * * * *").field, "minute");
        assert_eq!(e("* 24 * * *").field, "hour");
        assert_eq!(e("* * 0 * *").field, "day_of_month");
        assert_eq!(e("* * * 13 *").field, "month");
        assert_eq!(e("* * * * 8").field, "day_of_week");
        assert_eq!(e("* * * *").field, "expression");
        assert_eq!(e("* * * * * *").field, "expression");
        assert_eq!(e("*/0 * * * *").message, "step must be 1-59");
        assert_eq!(e("5-1 * * * *").field, "minute");
        assert_eq!(e("@often").field, "expression");
        assert_eq!(e("0 0 30 2 *").field, "day_of_month");
        assert_eq!(e("a * * * *").field, "minute");
        assert!(e("* 25 * * *").message.contains("0-23"));
        assert_eq!(time_zone("Mars/Olympus").unwrap_err().field, "timezone");
        assert_eq!(time_zone("../etc/passwd").unwrap_err().field, "timezone");
        assert_eq!(time_zone("+01").unwrap_err().field, "timezone");
        assert_eq!(
            time_zone("Mars/Olympus").unwrap_err().message,
            "is not a known IANA time zone, such as Europe/London"
        );
    }

    #[test]
    fn names_macros_lists_and_sunday_seven_parse() {
        assert_eq!(
            CronExpr::parse("0 9 * JAN-mar mon-FRI").unwrap(),
            CronExpr::parse("0 9 * 1-3 1-5").unwrap()
        );
        assert_eq!(
            CronExpr::parse("@daily").unwrap(),
            CronExpr::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            CronExpr::parse("0 0 * * 7").unwrap(),
            CronExpr::parse("0 0 * * 0").unwrap()
        );
        assert_eq!(
            CronExpr::parse("5/20 * * * *").unwrap(),
            CronExpr::parse("5,25,45 * * * *").unwrap()
        );
        assert!(CronExpr::parse("0 0 29 2 *").is_ok(), "leap days exist");
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 13th, or any Friday, in UTC.
        let got = runs("0 12 13 * 5", "UTC", "2026-02-01T00:00:00Z", 4);
        assert_eq!(
            got,
            [
                "2026-02-06T12:00:00.000Z",
                "2026-02-13T12:00:00.000Z",
                "2026-02-20T12:00:00.000Z",
                "2026-02-27T12:00:00.000Z"
            ]
        );
    }

    #[test]
    fn new_york_spring_forward_runs_a_skipped_fixed_time_once_at_the_gap_end() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            [
                "2026-03-08T07:00:00.000Z", // 03:00 EDT, the gap's end
                "2026-03-09T06:30:00.000Z", // 02:30 EDT
                "2026-03-10T06:30:00.000Z"
            ]
        );
        // Every minute of the skipped hour collapses into the one run.
        assert_eq!(
            runs("*/20 2 * * *", "America/New_York", "2026-03-08T06:00:00Z", 2),
            ["2026-03-08T07:00:00.000Z", "2026-03-09T06:00:00.000Z"]
        );
    }

    #[test]
    fn new_york_interval_schedule_skips_the_missing_hour() {
        assert_eq!(
            runs("*/30 * * * *", "America/New_York", "2026-03-08T06:15:00Z", 3),
            [
                "2026-03-08T06:30:00.000Z", // 01:30 EST
                "2026-03-08T07:00:00.000Z", // 03:00 EDT
                "2026-03-08T07:30:00.000Z"
            ]
        );
    }

    #[test]
    fn new_york_fall_back_runs_a_fixed_time_once_and_intervals_on_both_passes() {
        // 2026-11-01: 02:00 EDT becomes 01:00 EST.
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]
        );
        assert_eq!(
            runs("*/30 * * * *", "America/New_York", "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01T05:00:00.000Z", // 01:00 EDT
                "2026-11-01T05:30:00.000Z", // 01:30 EDT
                "2026-11-01T06:00:00.000Z", // 01:00 EST
                "2026-11-01T06:30:00.000Z", // 01:30 EST
                "2026-11-01T07:00:00.000Z"  // 02:00 EST
            ]
        );
        // Searching from inside the second pass finds the second pass's runs.
        assert_eq!(
            runs("*/30 * * * *", "America/New_York", "2026-11-01T06:10:00Z", 1),
            ["2026-11-01T06:30:00.000Z"]
        );
    }

    #[test]
    fn london_gap_and_fold() {
        // 2026-03-29: 01:00 GMT becomes 02:00 BST.
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"]
        );
        // 2026-10-25: 02:00 BST becomes 01:00 GMT.
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]
        );
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // 2026-10-04: 02:00 +10:30 becomes 02:30 +11.
        assert_eq!(
            runs("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00Z", 2),
            ["2026-10-03T15:30:00.000Z", "2026-10-04T15:15:00.000Z"]
        );
        // 2026-04-05: 02:00 +11 becomes 01:30 +10:30.
        assert_eq!(
            runs("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T00:00:00Z", 2),
            ["2026-04-04T14:45:00.000Z", "2026-04-05T15:15:00.000Z"]
        );
        assert_eq!(
            runs("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:20:00Z", 5),
            [
                "2026-04-04T14:30:00.000Z", // 01:30 +11
                "2026-04-04T14:45:00.000Z", // 01:45 +11
                "2026-04-04T15:00:00.000Z", // 01:30 +10:30
                "2026-04-04T15:15:00.000Z", // 01:45 +10:30
                "2026-04-04T15:30:00.000Z"  // 02:00 +10:30
            ]
        );
    }

    #[test]
    fn an_on_time_schedule_fires_for_its_own_time() {
        let s = Schedule::new("*/5 * * * *", "UTC").unwrap();
        let due = at("2026-01-01T10:05:00Z");
        let f = plan_firing(&s, due, due + 2, CatchUp::Once, 60);
        assert_eq!(
            f,
            Firing {
                fire: true,
                scheduled_for: due,
                next_run_at: Some(due + 300)
            }
        );
    }

    #[test]
    fn missed_runs_catch_up_once_for_the_latest_and_never_schedule_the_past() {
        let s = Schedule::new("*/5 * * * *", "UTC").unwrap();
        let due = at("2026-01-01T10:05:00Z");
        let now = at("2026-01-01T12:07:00Z");
        let once = plan_firing(&s, due, now, CatchUp::Once, 60);
        assert!(once.fire);
        assert_eq!(iso(once.scheduled_for), "2026-01-01T12:05:00.000Z");
        assert_eq!(iso(once.next_run_at.unwrap()), "2026-01-01T12:10:00.000Z");
        let skip = plan_firing(&s, due, now, CatchUp::Skip, 60);
        assert!(!skip.fire);
        assert_eq!(skip.next_run_at, once.next_run_at);
    }

    /// jiff's own resolution of a civil minute (the implementation before
    /// the offset oracle), the reference the offset-based one must match.
    fn jiff_instants(tz: &jiff::tz::TimeZone, interval_like: bool, local: i64) -> Vec<i64> {
        use jiff::tz::AmbiguousOffset;
        let offset_at = |t: i64| i64::from(tz.to_offset(jiff::Timestamp::from_second(t).unwrap()).seconds());
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        let secs = local.rem_euclid(86_400);
        let dt = jiff::civil::DateTime::new(
            y as i16,
            m as i8,
            d as i8,
            (secs / 3600) as i8,
            ((secs % 3600) / 60) as i8,
            0,
            0,
        )
        .unwrap();
        match tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => vec![local - i64::from(offset.seconds())],
            AmbiguousOffset::Gap { before, after } => {
                if interval_like {
                    return Vec::new();
                }
                let target = i64::from(after.seconds());
                let (mut lo, mut hi) = (local - target, local - i64::from(before.seconds()));
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(mid) == target {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                vec![hi]
            }
            AmbiguousOffset::Fold { before, after } => {
                let first = local - i64::from(before.seconds());
                let second = local - i64::from(after.seconds());
                if interval_like {
                    vec![first, second]
                } else {
                    vec![first]
                }
            }
        }
    }

    /// Compares both resolutions for every minute within five hours of each
    /// transition in [from, to), and for a sweep of the whole span.
    fn compare_with_jiff(zone: &str, from: &str, to: &str) -> usize {
        let tz = jiff::tz::TimeZone::get(zone).unwrap();
        let fixed = Schedule::new("0 1 * * *", zone).unwrap();
        let every = Schedule::new("* * * * *", zone).unwrap();
        let (from, to) = (at(from), at(to));
        let check = |local: i64| {
            assert_eq!(
                fixed.instants_of(local),
                jiff_instants(&tz, false, local),
                "{zone}: fixed-time {}",
                iso(local)
            );
            assert_eq!(
                every.instants_of(local),
                jiff_instants(&tz, true, local),
                "{zone}: interval-like {}",
                iso(local)
            );
        };
        let mut transitions = 0;
        for t in tz
            .following(jiff::Timestamp::from_second(from).unwrap())
            .take_while(|t| t.timestamp().as_second() < to)
        {
            transitions += 1;
            let centre = (t.timestamp().as_second() + i64::from(t.offset().seconds())) / 60 * 60;
            for local in (centre - 5 * 3600..=centre + 5 * 3600).step_by(60) {
                check(local);
            }
        }
        for local in (from..to).step_by(97 * 60) {
            check(local);
        }
        transitions
    }

    #[test]
    fn offset_based_resolution_matches_jiff_around_transitions() {
        for zone in [
            "America/New_York",
            "Europe/London",
            "Europe/Dublin",       // negative DST in the database
            "Australia/Lord_Howe", // a 30-minute shift
            "Australia/Sydney",    // southern hemisphere
            "America/Santiago",    // southern hemisphere, rule changes
            "Pacific/Chatham",     // +12:45 / +13:45
            "America/St_Johns",    // -03:30
            "Africa/Casablanca",   // two shifts a year around Ramadan
        ] {
            assert!(
                compare_with_jiff(zone, "2022-01-01T00:00:00Z", "2028-01-01T00:00:00Z") >= 10,
                "{zone}"
            );
        }
        assert_eq!(
            compare_with_jiff("Asia/Kolkata", "2024-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            0
        );
        // Samoa skipped a whole day (2011-12-30): a 24-hour gap.
        assert!(compare_with_jiff("Pacific/Apia", "2011-06-01T00:00:00Z", "2012-06-01T00:00:00Z") >= 2);
    }

    fn zones() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "UTC",
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
            "America/Santiago",
        ])
    }

    fn exprs() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "* * * * *",
            "*/7 * * * *",
            "30 2 * * *",
            "0 1 * * *",
            "15,45 1-3 * * *",
            "0 0 1 * *",
            "0 9 * * MON-FRI",
            "0 12 13 * 5",
            "*/20 2 * * *",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Each run is after the last; every run is a matching wall time
        /// (or a fixed-time schedule's gap end); nothing between two runs
        /// is a matching wall time that exists.
        #[test]
        fn next_run_is_monotonic_and_matches_the_expression(
            expr in exprs(), zone in zones(),
            // 2025-2028: covers several DST transitions in each zone.
            start in 1_735_689_600i64..1_830_297_600i64,
        ) {
            let s = Schedule::new(expr, zone).unwrap();
            let mut t = start;
            for _ in 0..4 {
                let Some(next) = s.next_after(t) else { prop_assert!(false, "no next run"); break };
                prop_assert!(next > t);
                let local = next + s.offset_at(next);
                let gap_end = s.offset_at(next - 1) < s.offset_at(next);
                prop_assert!(s.expr.matches_local(local) || gap_end, "{} in {} ran at {}", expr, zone, iso(next));
                // No minute strictly between t and next is a matching, existing wall time
                // (checked minute by minute over the first day of the interval).
                let mut m = (t / 60 + 1) * 60;
                while m < next && m < t + 86_400 {
                    let l = m + s.offset_at(m);
                    // m is a run time of wall time l under the DST rules, and l matches.
                    if s.instants_of(l).contains(&m) {
                        prop_assert!(!s.expr.matches_local(l), "{} in {}: skipped {}", expr, zone, iso(m));
                    }
                    m += 60;
                }
                t = next;
            }
        }
    }
}
