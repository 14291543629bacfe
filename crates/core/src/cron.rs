//! pg_cron jobs as `crm_sync.status` sees them: when a schedule fires next,
//! and which sources (and streams) a job's command syncs.
//!
//! pg_cron parses schedules with Paul Vixie's cron code (its `src/entry.c`),
//! plus `$` for the last day of the month and `N seconds` for intervals
//! (<https://github.com/citusdata/pg_cron#cron-syntax>), and decides each
//! minute in `ShouldRunTask` (`src/pg_cron.c`). So this follows them: five
//! fields (minute, hour, day of month, month, day of week), each a list of
//! `*`, numbers, names (`jan`, `mon`) and ranges, with an optional `/step`
//! after `*` or a range; `@hourly`-style macros; and when both day fields
//! are restricted, a day matches if either does, unless
//! `cron.match_dom_and_dow` is on. Times are local times of pg_cron's time
//! zone (`cron.timezone`); the caller converts.

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
    /// Accepted by pg_cron but never fires (`@yearly`, see [`parse`]).
    Never,
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
        "@reboot" | "@restart" => return Ok(Schedule::Reboot),
        // pg_cron's entry.c sets month bit 0 (FIRST_MINUTE) for these, which
        // no month has: such a job never fires.
        "@yearly" | "@annually" => return Ok(Schedule::Never),
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
        } else if step > 1 {
            // pg_cron: "Step specified without range" is refused.
            return Err(format!("{item:?} has a step without a range"));
        } else {
            let a = value(range)?;
            (a, a)
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
    /// `and_days`: `cron.match_dom_and_dow` (both day fields must match).
    fn day_matches(&self, d: NaiveDate, and_days: bool) -> bool {
        let dom = if self.last_day {
            (d + Duration::days(1)).month() != d.month()
        } else {
            self.days & (1 << d.day()) != 0
        };
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        // Vixie cron: with both day fields restricted, either one will do.
        if and_days || self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

/// The first minute after `after` at which `schedule` fires; None for
/// schedules without a knowable next time (`@reboot`, `N seconds`) or none
/// within five years (`0 0 30 2 *`). `and_days` is pg_cron's
/// `cron.match_dom_and_dow`.
pub fn next_after(
    schedule: &Schedule,
    after: NaiveDateTime,
    and_days: bool,
) -> Option<NaiveDateTime> {
    let Schedule::Cron(f) = schedule else {
        return None;
    };
    let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
    let mut day = start.date();
    for _ in 0..(5 * 366) {
        if f.months & (1 << day.month()) != 0 && f.day_matches(day, and_days) {
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
pub fn next_after_epoch(schedule: &str, after: i64, and_days: bool) -> Option<i64> {
    let s = parse(schedule).ok()?;
    let after = chrono::DateTime::from_timestamp(after, 0)?.naive_utc();
    next_after(&s, after, and_days).map(|t| t.and_utc().timestamp())
}

/// The syncs a cron job's command runs: for each call of
/// `crm_sync.sync_async(...)` or `crm_sync.sync(...)`, its source and
/// stream (None: every enabled stream) when they are literals, positional
/// or named (`=>` or `:=`, in any order). Calls whose source is not a
/// literal are left out.
pub fn sync_calls(command: &str) -> Vec<(String, Option<String>)> {
    let lower = command.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("crm_sync") {
        let mut i = from + at + "crm_sync".len();
        from = i;
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        i = skip_ws(i);
        if b.get(i) != Some(&b'.') {
            continue;
        }
        i = skip_ws(i + 1);
        let name_len = ["sync_async", "sync"]
            .iter()
            .find(|n| lower[i..].starts_with(**n))
            .map(|n| n.len());
        let Some(n) = name_len else { continue };
        i = skip_ws(i + n);
        if b.get(i) != Some(&b'(') {
            continue;
        }
        let args = call_args(&command[i + 1..]);
        let mut source = None;
        let mut stream = None;
        for (pos, (name, value)) in args.iter().enumerate() {
            match name.as_deref() {
                Some("source") => source = Some(value.clone()),
                Some("stream") => stream = Some(value.clone()),
                Some(_) => {}
                None if pos == 0 => source = Some(value.clone()),
                None if pos == 1 => stream = Some(value.clone()),
                None => {}
            }
        }
        if let Some(Some(src)) = source {
            out.push((src, stream.flatten()));
        }
    }
    out
}

/// The arguments of a call, from just after its `(`: each argument's name
/// (named notation, lower case) and its value when it is a string literal
/// (an optional `::type` after it is allowed); None for any other value.
fn call_args(s: &str) -> Vec<(Option<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut arg = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if in_quote {
            arg.push(c);
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    arg.push(chars.next().unwrap_or('\''));
                } else {
                    in_quote = false;
                }
            }
            continue;
        }
        match c {
            '\'' => {
                in_quote = true;
                arg.push(c);
            }
            '(' => {
                depth += 1;
                arg.push(c);
            }
            ')' if depth == 0 => {
                out.push(std::mem::take(&mut arg));
                break;
            }
            ')' => {
                depth -= 1;
                arg.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut arg)),
            _ => arg.push(c),
        }
    }
    out.iter()
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            let a = a.trim();
            let (name, value) = match a.find("=>").or_else(|| a.find(":=")) {
                // A named argument: an identifier, then the arrow.
                Some(at) if !a[..at].contains('\'') => (
                    Some(a[..at].trim().to_ascii_lowercase()),
                    a[at + 2..].trim(),
                ),
                _ => (None, a),
            };
            (name, literal(value))
        })
        .collect()
}

/// A string literal's text (`'it''s'::text` -> `it's`).
fn literal(v: &str) -> Option<String> {
    let rest = v.strip_prefix('\'')?;
    let mut text = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                text.push('\'');
                continue;
            }
            let tail: String = chars.collect();
            let tail = tail.trim();
            return (tail.is_empty() || tail.starts_with("::")).then_some(text);
        }
        text.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(schedule: &str, after: &str) -> Option<String> {
        let s = parse(schedule).unwrap();
        next_after(&s, at(after), false).map(|t| t.format("%Y-%m-%d %H:%M").to_string())
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
        // cron.match_dom_and_dow: a Friday the 13th.
        let fri13 = next_after(
            &parse("0 0 13 * 5").unwrap(),
            at("2026-12-04 12:00:00"),
            true,
        );
        assert_eq!(
            fri13.map(|t| t.format("%Y-%m-%d").to_string()).as_deref(),
            Some("2027-08-13")
        );
    }

    #[test]
    fn epoch_seconds_in_and_out() {
        // 2026-12-04 17:31:55 -> 17:45:00
        assert_eq!(
            next_after_epoch("*/15 * * * *", 1_796_405_515, false),
            Some(1_796_406_300)
        );
        assert_eq!(next_after_epoch("not a schedule", 0, false), None);
    }

    #[test]
    fn schedules_without_a_next_time() {
        assert_eq!(parse("5 seconds"), Ok(Schedule::Seconds(5)));
        assert_eq!(next("5 seconds", "2026-12-04 00:00:00"), None);
        assert_eq!(next("@reboot", "2026-12-04 00:00:00"), None);
        // pg_cron accepts @yearly but never runs it (see parse).
        assert_eq!(next("@annually", "2026-12-04 00:00:00"), None);
        assert_eq!(next("0 0 30 2 *", "2026-12-04 00:00:00"), None);
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(parse("* * *").unwrap_err().contains("five fields"));
        assert!(parse("61 * * * *").unwrap_err().contains("0 to 59"));
        assert!(parse("*/0 * * * *").unwrap_err().contains("step"));
        assert!(parse("5/15 * * * *")
            .unwrap_err()
            .contains("without a range"));
        assert!(parse("5-1 * * * *").unwrap_err().contains("backwards"));
        assert!(parse("0 0 * * funday").is_err());
        assert!(parse("90 seconds").is_err());
    }

    #[test]
    fn sync_calls_are_read_from_commands() {
        let one = |c: &str| sync_calls(c);
        assert_eq!(
            one("SELECT crm_sync.sync_async('hs', if_running => 'skip')"),
            [("hs".to_owned(), None)]
        );
        assert_eq!(
            one("select CRM_SYNC . Sync_Async ( 'hs' , 'contacts' )"),
            [("hs".to_owned(), Some("contacts".to_owned()))]
        );
        assert_eq!(
            one("SELECT crm_sync.sync_async(stream => 'deals', source := 'hs'::text)"),
            [("hs".to_owned(), Some("deals".to_owned()))]
        );
        assert_eq!(
            one("SELECT * FROM crm_sync.sync('sf', NULL, true); SELECT crm_sync.sync_async('hs')"),
            [("sf".to_owned(), None), ("hs".to_owned(), None)]
        );
        assert_eq!(
            one("SELECT crm_sync.sync_async('it''s', lower('X'))"),
            [("it's".to_owned(), None)]
        );
        // Not a sync, or no literal source.
        assert!(one("SELECT crm_sync.merge()").is_empty());
        assert!(one("SELECT crm_sync.sync_async(current_setting('x'))").is_empty());
        assert!(one("SELECT crm_sync.synchronise('hs')").is_empty());
        assert!(one("VACUUM").is_empty());
    }
}
