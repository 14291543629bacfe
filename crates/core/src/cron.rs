//! When a pg_cron schedule fires next, for `crm_sync.status`.
//!
//! pg_cron parses schedules with Paul Vixie's cron code, plus `$` for the
//! last day of the month and `N seconds` for intervals
//! (<https://github.com/citusdata/pg_cron#cron-syntax>). So this follows
//! Vixie cron: five fields (minute, hour, day of month, month, day of week),
//! each a list of `*`, numbers, names (`jan`, `mon`) and ranges, with an
//! optional `/step`; `@hourly`-style macros; and when both day fields are
//! restricted, a day matches if either does. Times are local times of
//! pg_cron's time zone; the caller converts.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Runs at the minutes the fields allow.
    Cron(Fields),
    /// `N seconds`: every N seconds, counted from when pg_cron started it.
    Seconds(u32),
    /// `@reboot`: only when pg_cron starts.
    Reboot,
}

/// The allowed values of each field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// `$`: the last day of the month.
    last_day: bool,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday = 0.
    weekdays: u8,
    day_star: bool,
    weekday_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parse a pg_cron schedule; `Err` says what is wrong.
pub fn parse(schedule: &str) -> Result<Schedule, String> {
    let s = schedule.trim().to_ascii_lowercase();
    let expanded = match s.as_str() {
        "@reboot" => return Ok(Schedule::Reboot),
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if let [n, unit] = parts.as_slice() {
        if unit.starts_with("second") {
            return match n.parse::<u32>() {
                Ok(n @ 1..=59) => Ok(Schedule::Seconds(n)),
                _ => Err(format!("{n} seconds: pg_cron takes 1 to 59 seconds")),
            };
        }
    }
    let [min, hour, dom, mon, dow] = parts.as_slice() else {
        return Err(format!("{schedule:?} does not have five fields"));
    };
    let last_day = *dom == "$";
    let days = if last_day {
        0
    } else {
        field(dom, 1, 31, &[], 1)? as u32
    };
    let mut weekdays = field(dow, 0, 7, &DAYS, 0)? as u8;
    // 7 is Sunday too.
    if weekdays & 0x80 != 0 {
        weekdays = (weekdays & 0x7f) | 1;
    }
    Ok(Schedule::Cron(Fields {
        minutes: field(min, 0, 59, &[], 0)?,
        hours: field(hour, 0, 23, &[], 0)? as u32,
        days,
        last_day,
        months: field(mon, 1, 12, &MONTHS, 1)? as u16,
        weekdays,
        day_star: dom.starts_with('*'),
        weekday_star: dow.starts_with('*'),
    }))
}

/// One field as a bit set of its allowed values. `names[i]` stands for
/// `first_name + i`.
fn field(text: &str, lo: u32, hi: u32, names: &[&str], first_name: u32) -> Result<u64, String> {
    let value = |t: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| *n == t) {
            return Ok(i as u32 + first_name);
        }
        match t.parse::<u32>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(v),
            _ => Err(format!("{t:?} is not a value from {lo} to {hi}")),
        }
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => match s.parse::<u32>() {
                Ok(s) if s > 0 => (r, s),
                _ => return Err(format!("{item:?} has a bad step")),
            },
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            // `5/15` runs from 5 to the end, as most crons read it.
            (a, if step > 1 { hi } else { a })
        };
        if a > b {
            return Err(format!("{item:?} is a range backwards"));
        }
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl Fields {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = if self.last_day {
            (d + Duration::days(1)).month() != d.month()
        } else {
            self.days & (1 << d.day()) != 0
        };
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        // Vixie cron: with both day fields restricted, either one will do.
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

/// The first minute after `after` at which `schedule` fires; None for
/// schedules without a knowable next time (`@reboot`, `N seconds`) or none
/// within five years (`0 0 30 2 *`).
pub fn next_after(schedule: &Schedule, after: NaiveDateTime) -> Option<NaiveDateTime> {
    let Schedule::Cron(f) = schedule else {
        return None;
    };
    let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
    let mut day = start.date();
    for _ in 0..(5 * 366) {
        if f.months & (1 << day.month()) != 0 && f.day_matches(day) {
            let from = if day == start.date() {
                (start.hour(), start.minute())
            } else {
                (0, 0)
            };
            for h in from.0..24 {
                if f.hours & (1 << h) == 0 {
                    continue;
                }
                let m0 = if h == from.0 { from.1 } else { 0 };
                if let Some(m) = (m0..60).find(|m| f.minutes & (1 << m) != 0) {
                    return day.and_hms_opt(h, m, 0);
                }
            }
        }
        day = day.succ_opt()?;
    }
    None
}

/// [`next_after`] for a schedule given as text, with times as seconds since
/// 1970 (of local times); None also for a schedule that does not parse.
pub fn next_after_epoch(schedule: &str, after: i64) -> Option<i64> {
    let s = parse(schedule).ok()?;
    let after = chrono::DateTime::from_timestamp(after, 0)?.naive_utc();
    next_after(&s, after).map(|t| t.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(schedule: &str, after: &str) -> Option<String> {
        let s = parse(schedule).unwrap();
        next_after(&s, at(after)).map(|t| t.format("%Y-%m-%d %H:%M").to_string())
    }

    #[test]
    fn steps_ranges_lists_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2026-12-04 17:31:55").as_deref(),
            Some("2026-12-04 17:45")
        );
        // Exactly on a firing minute: the next one.
        assert_eq!(
            next("*/15 * * * *", "2026-12-04 17:45:00").as_deref(),
            Some("2026-12-04 18:00")
        );
        assert_eq!(
            next("30 3 * * 6", "2026-12-04 17:31:00").as_deref(),
            Some("2026-12-05 03:30")
        );
        assert_eq!(
            next("0 9-17/4 * * mon-fri", "2026-12-05 10:00:00").as_deref(),
            Some("2026-12-07 09:00")
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "2026-12-04 00:00:00").as_deref(),
            Some("2027-01-01 00:00")
        );
        assert_eq!(
            next("@hourly", "2026-12-04 23:59:59").as_deref(),
            Some("2026-12-05 00:00")
        );
        // Sunday as 7.
        assert_eq!(
            next("0 4 * * 7", "2026-12-04 00:00:00").as_deref(),
            Some("2026-12-06 04:00")
        );
    }

    #[test]
    fn last_day_of_month_and_either_day_field() {
        assert_eq!(
            next("0 12 $ * *", "2027-02-10 00:00:00").as_deref(),
            Some("2027-02-28 12:00")
        );
        assert_eq!(
            next("0 12 $ * *", "2028-02-10 00:00:00").as_deref(),
            Some("2028-02-29 12:00")
        );
        // Both restricted: the 13th or a Friday, whichever comes first.
        assert_eq!(
            next("0 0 13 * 5", "2026-12-04 12:00:00").as_deref(),
            Some("2026-12-11 00:00")
        );
        // Day of month restricted, weekday `*`: only the 13th.
        assert_eq!(
            next("0 0 13 * *", "2026-12-04 12:00:00").as_deref(),
            Some("2026-12-13 00:00")
        );
    }

    #[test]
    fn epoch_seconds_in_and_out() {
        // 2026-12-04 17:31:55 -> 17:45:00
        assert_eq!(
            next_after_epoch("*/15 * * * *", 1_796_405_515),
            Some(1_796_406_300)
        );
        assert_eq!(next_after_epoch("not a schedule", 0), None);
    }

    #[test]
    fn schedules_without_a_next_time() {
        assert_eq!(parse("5 seconds"), Ok(Schedule::Seconds(5)));
        assert_eq!(next("5 seconds", "2026-12-04 00:00:00"), None);
        assert_eq!(next("@reboot", "2026-12-04 00:00:00"), None);
        assert_eq!(next("0 0 30 2 *", "2026-12-04 00:00:00"), None);
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(parse("* * *").unwrap_err().contains("five fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("0 to 59"));
        assert!(parse("*/0 * * * *").unwrap_err().contains("step"));
        assert!(parse("5-1 * * * *").unwrap_err().contains("backwards"));
        assert!(parse("0 0 * * funday").is_err());
        assert!(parse("90 seconds").is_err());
    }
}
