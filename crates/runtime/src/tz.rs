//! IANA time zones without a time-zone database in the wasm.
//!
//! The edge runtime is V8 with full ICU, whose `Intl.DateTimeFormat` knows
//! every IANA zone, so on wasm32 a [`Zone`] asks it: one formatter per zone
//! (`en-US`, 23-hour clock, numeric fields), cached in a small bounded map
//! and reused; the offset at an instant is the formatted wall clock, read as
//! if it were UTC, minus the instant. An unknown name makes the formatter's
//! constructor throw a `RangeError`: [`TzError::Unknown`]. A host without
//! `Intl` gives [`TzError::Unavailable`], never a panic.
//!
//! On native targets (unit tests) the same API is backed by jiff with its
//! bundled database, which the wasm never links.

/// Why a zone cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TzError {
    /// Not a zone the time-zone data knows.
    Unknown,
    /// The host has no time-zone data (no `Intl` in the JS host).
    Unavailable,
}

/// A known IANA zone, by name.
#[derive(Debug, Clone)]
pub struct Zone {
    name: Box<str>,
    #[cfg(not(target_arch = "wasm32"))]
    tz: jiff::tz::TimeZone,
}

impl Zone {
    /// The zone called `name`, if the time-zone data knows it.
    pub fn get(name: &str) -> Result<Zone, TzError> {
        imp::get(name)
    }

    /// The name it was looked up by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone's UTC offset, in seconds east, at `unix_secs`; `None` when
    /// the instant is outside the supported range (years 1 to 9999) or the
    /// host's data failed.
    pub fn offset_at(&self, unix_secs: i64) -> Option<i32> {
        if !(MIN_SECS..=MAX_SECS).contains(&unix_secs) {
            return None;
        }
        imp::offset_at(self, unix_secs)
    }
}

/// Whether `name` is a zone the time-zone data knows.
pub fn is_known_zone(name: &str) -> bool {
    Zone::get(name).is_ok()
}

/// The UTC offset of the zone `name` at `unix_secs`, in seconds east.
pub fn offset_seconds(name: &str, unix_secs: i64) -> Option<i32> {
    Zone::get(name).ok()?.offset_at(unix_secs)
}

/// 0001-01-02T00:00:00Z and 9999-12-30T00:00:00Z: a day inside the years
/// both backends format as plain numbers.
const MIN_SECS: i64 = -62_135_510_400;
const MAX_SECS: i64 = 253_402_041_600;

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{TzError, Zone};

    pub(super) fn get(name: &str) -> Result<Zone, TzError> {
        let tz = jiff::tz::TimeZone::get(name).map_err(|_| TzError::Unknown)?;
        Ok(Zone { name: name.into(), tz })
    }

    pub(super) fn offset_at(zone: &Zone, unix_secs: i64) -> Option<i32> {
        let ts = jiff::Timestamp::from_second(unix_secs).ok()?;
        Some(zone.tz.to_offset(ts).seconds())
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    use super::{TzError, Zone};

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = Intl)]
        type DateTimeFormat;
        #[wasm_bindgen(constructor, catch, js_namespace = Intl)]
        fn new(locale: &str, options: &js_sys::Object) -> Result<DateTimeFormat, JsValue>;
        #[wasm_bindgen(method, catch)]
        fn format(this: &DateTimeFormat, epoch_ms: f64) -> Result<String, JsValue>;
    }

    /// Formatters kept; a schedule set rarely spans more zones than this.
    const CACHE_ZONES: usize = 64;

    thread_local! {
        static FORMATTERS: RefCell<HashMap<Box<str>, DateTimeFormat>> = RefCell::new(HashMap::new());
    }

    fn formatter(name: &str) -> Result<DateTimeFormat, TzError> {
        let options = js_sys::Object::new();
        let set = |k: &str, v: &str| js_sys::Reflect::set(&options, &JsValue::from_str(k), &JsValue::from_str(v));
        for (k, v) in [
            ("timeZone", name),
            ("hourCycle", "h23"),
            ("year", "numeric"),
            ("month", "numeric"),
            ("day", "numeric"),
            ("hour", "numeric"),
            ("minute", "numeric"),
            ("second", "numeric"),
        ] {
            set(k, v).map_err(|_| TzError::Unavailable)?;
        }
        DateTimeFormat::new("en-US", &options).map_err(|e| {
            if e.is_instance_of::<js_sys::RangeError>() {
                TzError::Unknown
            } else {
                TzError::Unavailable
            }
        })
    }

    /// Runs `f` on the cached formatter for `name`, creating it if needed.
    fn with_formatter<T>(name: &str, f: impl FnOnce(&DateTimeFormat) -> T) -> Result<T, TzError> {
        FORMATTERS.with(|cache| {
            if let Some(dtf) = cache.borrow().get(name) {
                return Ok(f(dtf));
            }
            let dtf = formatter(name)?;
            let out = f(&dtf);
            let mut cache = cache.borrow_mut();
            if cache.len() >= CACHE_ZONES {
                cache.clear();
            }
            cache.insert(name.into(), dtf);
            Ok(out)
        })
    }

    pub(super) fn get(name: &str) -> Result<Zone, TzError> {
        with_formatter(name, |_| ())?;
        Ok(Zone { name: name.into() })
    }

    pub(super) fn offset_at(zone: &Zone, unix_secs: i64) -> Option<i32> {
        let text = with_formatter(&zone.name, |dtf| dtf.format(unix_secs as f64 * 1000.0))
            .ok()?
            .ok()?;
        super::offset_from_wall_clock(&text, unix_secs)
    }
}

/// The offset that `text`, an `en-US` 23-hour numeric wall clock
/// (`3/8/2026, 03:00:00`: month, day, year, hour, minute, second), shows for
/// the instant `unix_secs`.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn offset_from_wall_clock(text: &str, unix_secs: i64) -> Option<i32> {
    let mut fields = [0i64; 6];
    let mut n = 0;
    let mut current: Option<i64> = None;
    for c in text.chars().chain(std::iter::once(' ')) {
        match c.to_digit(10) {
            Some(d) => current = Some(current.unwrap_or(0).checked_mul(10)? + i64::from(d)),
            None => {
                if let Some(v) = current.take() {
                    *fields.get_mut(n)? = v;
                    n += 1;
                }
            }
        }
    }
    let [month, day, year, hour, minute, second] = fields;
    if n != 6 || !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 24 || minute > 59 || second > 59 {
        return None;
    }
    // Older ICU wrote midnight as 24 despite h23.
    let hour = hour % 24;
    let wall = edgeworks_core::time::days_from_civil(year, month as u32, day as u32) * 86_400
        + hour * 3600
        + minute * 60
        + second;
    let offset = wall - unix_secs;
    // Real offsets are within ±26 hours.
    if offset.abs() > 26 * 3600 {
        return None;
    }
    i32::try_from(offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (zone, instant, offset): also checked on the wasm by
    /// tests/shim/tz.test.ts.
    const KNOWN: &[(&str, i64, i32)] = &[
        ("UTC", 1_772_953_200, 0),
        ("America/New_York", 1_772_953_199, -5 * 3600), // 2026-03-08T06:59:59Z
        ("America/New_York", 1_772_953_200, -4 * 3600), // 2026-03-08T07:00:00Z
        ("Europe/London", 1_792_890_000, 0),            // 2026-10-25T01:00:00Z
        ("Europe/London", 1_792_889_999, 3600),
        ("Australia/Lord_Howe", 1_775_314_800, 37_800), // 2026-04-04T15:00:00Z
        ("Australia/Lord_Howe", 1_775_314_799, 39_600),
        ("Asia/Kolkata", 1_772_953_200, 19_800),
        ("America/Santiago", 1_775_357_999, -3 * 3600), // 2026-04-05T02:59:59Z
        ("America/Santiago", 1_775_358_000, -4 * 3600),
    ];

    #[test]
    fn known_offsets() {
        for (zone, at, offset) in KNOWN {
            assert_eq!(offset_seconds(zone, *at), Some(*offset), "{zone} at {at}");
        }
    }

    #[test]
    fn unknown_zones_are_not_known() {
        assert!(is_known_zone("Europe/London"));
        assert!(!is_known_zone("Mars/Olympus_Mons"));
        assert_eq!(Zone::get("Mars/Olympus_Mons").unwrap_err(), TzError::Unknown);
        assert_eq!(offset_seconds("Mars/Olympus_Mons", 0), None);
        assert_eq!(Zone::get("UTC").unwrap().offset_at(i64::MAX), None);
    }

    #[test]
    fn wall_clock_text_parses_to_the_offset() {
        // 2026-03-08T07:00:00Z in New York.
        assert_eq!(
            offset_from_wall_clock("3/8/2026, 03:00:00", 1_772_953_200),
            Some(-4 * 3600)
        );
        assert_eq!(offset_from_wall_clock("3/8/2026, 24:00:00", 1_772_928_000), Some(0));
        assert_eq!(offset_from_wall_clock("3/8/2026, 03:00", 0), None);
        assert_eq!(offset_from_wall_clock("3/8/2026, 03:00:00", 0), None);
    }
}
