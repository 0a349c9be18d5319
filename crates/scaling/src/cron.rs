//! Five-field cron expressions (`minute hour day-of-month month
//! day-of-week`) and the next time one fires in a time zone.
//!
//! Syntax: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`
//! (from `a` to the field's end), comma lists, and names `JAN`–`DEC` and
//! `SUN`–`SAT` (any case, also inside ranges: `MON-FRI`). Day of week is 0-7
//! with both 0 and 7 Sunday. As in Vixie cron, when both day of month and day
//! of week are restricted (neither starts with `*`), a day matches if
//! *either* does; otherwise it must match both (so `*/2` in one of them
//! still filters).
//!
//! Time zones, the rule followed ([`CronSchedule::next_after`]):
//! - a local time skipped by a spring-forward (02:30 in Europe/Berlin on the
//!   last Sunday of March) fires once, at the first valid moment after it —
//!   the instant of the transition (03:00 CEST). Several skipped matches
//!   (02:00 and 02:30) collapse into that one firing;
//! - a local time repeated by a fall-back fires once, at its first
//!   occurrence (the daylight-time one).
//!
//! Not supported: seconds or year fields, `?`, `L`, `W`, `#`, and macros
//! such as `@daily`; they are errors, not silently ignored.

use std::fmt;

use crate::tz::{civil_from_days, days_in_month, weekday, LocalResult, TimeZone};
use crate::UnixSeconds;

/// A cron expression that could not be parsed; the message names the
/// expression, the field and the bad token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cron {expr:?}: {message}")]
pub struct CronError {
    /// The whole expression as given.
    pub expr: String,
    /// What is wrong, naming the field and the token.
    pub message: String,
    /// The byte offset in `expr` of the field at fault, so that a caller
    /// can point into the text; `None` when the number of fields is wrong.
    pub offset: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of month",
            Field::Month => "month",
            Field::DayOfWeek => "day of week",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        const MONTHS: [&str; 12] = [
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ];
        const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        match self {
            Field::Month => &MONTHS,
            Field::DayOfWeek => &DAYS,
            _ => &[],
        }
    }

    /// The value a name stands for (`JAN` = 1, `SUN` = 0).
    fn name_value(self, token: &str) -> Option<u32> {
        let base = if matches!(self, Field::Month) { 1 } else { 0 };
        let i = self
            .names()
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))?;
        u32::try_from(i).ok().map(|i| i + base)
    }
}

/// A parsed cron expression: the set of values each field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    /// Bit i set = minute i matches.
    minutes: u64,
    hours: u32,
    /// Bit d set = day d (1-31) matches.
    days_of_month: u32,
    /// Bit m set = month m (1-12) matches.
    months: u16,
    /// Bit d set = weekday d (0 = Sunday … 6) matches.
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for CronExpr {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, CronError> {
        CronExpr::parse(s)
    }
}

impl CronExpr {
    /// Parses a five-field expression.
    pub fn parse(expr: &str) -> Result<CronExpr, CronError> {
        let err = |message: String, offset: Option<usize>| CronError {
            expr: expr.to_string(),
            message,
            offset,
        };
        let (offsets, fields): (Vec<usize>, Vec<&str>) = split_fields(expr).into_iter().unzip();
        if fields.len() != 5 {
            return Err(err(
                format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
                None,
            ));
        }
        let mut sets = [0u64; 5];
        for (i, (field, text)) in Field::ALL.iter().zip(&fields).enumerate() {
            sets[i] = parse_field(*field, text).map_err(|m| err(m, Some(offsets[i])))?;
        }
        // Day of week 7 is Sunday too.
        let mut dow = sets[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        // Each set was built from values inside its field's range, so these
        // narrowing conversions keep every bit.
        Ok(CronExpr {
            source: fields.join(" "),
            minutes: sets[0],
            hours: sets[1] as u32,
            days_of_month: sets[2] as u32,
            months: sets[3] as u16,
            days_of_week: dow as u8,
            dom_restricted: !fields[2].starts_with('*'),
            dow_restricted: !fields[4].starts_with('*'),
        })
    }

    fn matches_day(&self, days: i64) -> bool {
        let (_, m, d) = civil_from_days(days);
        if self.months & (1 << m) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << d) != 0;
        let dow = self.days_of_week & (1 << weekday(days)) != 0;
        // Vixie cron: OR only when both fields are restricted; otherwise both
        // sets must match (a `*`-led field such as `*/2` still filters).
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Whether any calendar day can ever match (e.g. `0 0 30 2 *` cannot).
    fn can_match(&self) -> bool {
        // With OR, any weekday matches somewhere. With AND, every date occurs
        // on every weekday over the years, so the date alone decides.
        if self.dom_restricted && self.dow_restricted {
            return true;
        }
        (1u8..=12).any(|m| {
            self.months & (1 << m) != 0
                && (1..=days_in_month(2000, m)).any(|d| self.days_of_month & (1 << d) != 0)
        })
    }
}

/// The whitespace-separated fields of `expr`, each with its byte offset.
fn split_fields(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &expr[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &expr[s..]));
    }
    out
}

fn parse_field(field: Field, text: &str) -> Result<u64, String> {
    let (lo, hi) = field.range();
    let mut set = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!(
                "{} has an empty list item in {text:?}",
                field.name()
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| {
                    format!("{} step {s:?} is not a number (in {item:?})", field.name())
                })?;
                if step == 0 {
                    return Err(format!(
                        "{} step 0 is not allowed (in {item:?})",
                        field.name()
                    ));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (start, end) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(field, a)?;
            let b = value(field, b)?;
            if a > b {
                return Err(format!("{} range {range:?} runs backwards", field.name()));
            }
            (a, b)
        } else {
            let a = value(field, range)?;
            // `a/n` means from a to the end of the field.
            (a, if item.contains('/') { hi } else { a })
        };
        let mut v = start;
        while v <= end {
            set |= 1 << v;
            // A step past the field's end just stops the walk.
            match v.checked_add(step) {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    Ok(set)
}

fn value(field: Field, token: &str) -> Result<u32, String> {
    let (lo, hi) = field.range();
    let v = if token.chars().all(|c| c.is_ascii_digit()) && !token.is_empty() {
        token
            .parse::<u32>()
            .map_err(|_| format!("{} {token} is out of range {lo}-{hi}", field.name()))?
    } else if let Some(v) = field.name_value(token) {
        v
    } else {
        let hint = if field.names().is_empty() {
            String::new()
        } else {
            format!(" (names: {})", field.names().join(", "))
        };
        return Err(format!("{} {token:?} is not a number{hint}", field.name()));
    };
    if v < lo || v > hi {
        return Err(format!("{} {v} is out of range {lo}-{hi}", field.name()));
    }
    Ok(v)
}

/// A cron expression evaluated in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct CronSchedule {
    /// When it fires, in local wall-clock time.
    pub expr: CronExpr,
    /// The zone the wall clock is in.
    pub zone: TimeZone,
}

/// How far ahead [`CronSchedule::next_after`] looks: nine years, enough for
/// any February 29 that the Gregorian calendar has within them.
const SEARCH_DAYS: i64 = 9 * 366;

impl CronSchedule {
    /// The first instant strictly after `t` at which the schedule fires, or
    /// `None` if it never fires (e.g. `0 0 30 FEB *`). See the module comment
    /// for skipped and repeated local times.
    pub fn next_after(&self, t: UnixSeconds) -> Option<UnixSeconds> {
        if !self.expr.can_match() {
            return None;
        }
        // Start a day early: a skipped time yesterday (local) may still fire
        // at a transition instant after t. The fire instant grows with the
        // local time (first occurrence of a repeated time, transition instant
        // for a skipped one), so the first candidate after t is the answer.
        let first_day = self.zone.to_local(t).div_euclid(86_400) - 1;
        for day in first_day..first_day + SEARCH_DAYS {
            if !self.expr.matches_day(day) {
                continue;
            }
            for h in 0..24i64 {
                if self.expr.hours & (1 << h) == 0 {
                    continue;
                }
                for m in 0..60i64 {
                    if self.expr.minutes & (1 << m) == 0 {
                        continue;
                    }
                    let local = day * 86_400 + h * 3600 + m * 60;
                    let fire = match self.zone.from_local(local) {
                        LocalResult::Single(u)
                        | LocalResult::Ambiguous(u, _)
                        | LocalResult::Skipped(u) => u,
                    };
                    if fire > t {
                        return Some(fire);
                    }
                }
            }
        }
        None
    }

    /// Every firing in `(after, until]`, in order.
    pub fn fires_between(&self, after: UnixSeconds, until: UnixSeconds) -> Vec<UnixSeconds> {
        let mut out = Vec::new();
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > until {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tz::utc;

    fn err(expr: &str) -> String {
        CronExpr::parse(expr).unwrap_err().to_string()
    }

    fn sched(expr: &str, zone: &str) -> CronSchedule {
        CronSchedule {
            expr: CronExpr::parse(expr).unwrap(),
            zone: TimeZone::load(zone).unwrap(),
        }
    }

    #[test]
    fn parse_errors_say_where_the_bad_field_starts() {
        let at = |expr: &str| CronExpr::parse(expr).unwrap_err().offset;
        assert_eq!(at("0  25 * * *"), Some(3));
        assert_eq!(at("0 8 * * MON-FRI/0"), Some(8));
        assert_eq!(at("* * * *"), None);
    }

    #[test]
    fn parse_errors_name_the_field_and_token() {
        assert_eq!(
            err("0 25 * * *"),
            r#"cron "0 25 * * *": hour 25 is out of range 0-23"#
        );
        assert_eq!(
            err("60 * * * *"),
            r#"cron "60 * * * *": minute 60 is out of range 0-59"#
        );
        assert_eq!(
            err("0 0 0 * *"),
            r#"cron "0 0 0 * *": day of month 0 is out of range 1-31"#
        );
        assert_eq!(
            err("0 0 * 13 *"),
            r#"cron "0 0 * 13 *": month 13 is out of range 1-12"#
        );
        assert_eq!(
            err("0 0 * * 8"),
            r#"cron "0 0 * * 8": day of week 8 is out of range 0-7"#
        );
        assert!(
            err("0 0 * * MOX").contains(r#"day of week "MOX" is not a number (names: SUN, MON"#)
        );
        assert!(err("0 0 * FOO *").contains(r#"month "FOO" is not a number"#));
        assert!(err("* * * *").contains("expected 5 fields"));
        assert!(err("0 0 * * * *").contains("found 6"));
        assert!(err("*/0 * * * *").contains("minute step 0 is not allowed"));
        assert!(err("*/x * * * *").contains(r#"minute step "x" is not a number"#));
        assert!(err("0 5-2 * * *").contains(r#"hour range "5-2" runs backwards"#));
        assert!(err("0 1,,2 * * *").contains("hour has an empty list item"));
        assert!(err("0 0 ? * *").contains(r#"day of month "?" is not a number"#));
        assert!(err("@daily").contains("expected 5 fields"));
        assert_eq!(
            CronExpr::parse("1/4294967295 * * * *").unwrap().minutes,
            1 << 1,
            "huge step does not overflow"
        );
        assert!(err("99999999999 * * * *").contains("minute 99999999999 is out of range 0-59"));
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let e = CronExpr::parse("*/15 8-18/2 1,15 JAN-MAR mon-fri").unwrap();
        assert_eq!(e.minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(
            e.hours,
            (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14) | (1 << 16) | (1 << 18)
        );
        assert_eq!(e.days_of_month, (1 << 1) | (1 << 15));
        assert_eq!(e.months, 0b1110);
        assert_eq!(e.days_of_week, 0b0111110);
        let e = CronExpr::parse("5/20 * * * 7").unwrap();
        assert_eq!(e.minutes, (1 << 5) | (1 << 25) | (1 << 45));
        assert_eq!(e.days_of_week, 1, "7 is Sunday");
        let e = CronExpr::parse("0 0 * * FRI-SUN").unwrap_err();
        assert!(e.to_string().contains("runs backwards"), "SUN is 0: {e}");
        let e = CronExpr::parse("0 0 * * 5-7").unwrap();
        assert_eq!(e.days_of_week, (1 << 5) | (1 << 6) | 1);
    }

    /// `next_after` agrees with a minute-by-minute scan in a zone without
    /// transitions, for random expressions and instants.
    #[test]
    fn randomized_next_after_matches_a_brute_force_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pick = |rng: &mut rand::rngs::StdRng, opts: &[&'static str]| {
            opts[rng.random_range(0..opts.len())]
        };
        for case in 0..300 {
            let expr = [
                pick(&mut rng, &["*", "0", "*/7", "15,45", "5-10", "30/20"]),
                pick(&mut rng, &["*", "8", "19", "*/5", "0-3,22"]),
                pick(&mut rng, &["*", "1", "*/10", "13", "28-31"]),
                pick(&mut rng, &["*", "JAN-MAR", "*/2", "12"]),
                pick(&mut rng, &["*", "MON-FRI", "0", "SAT,SUN", "5"]),
            ]
            .join(" ");
            let s = CronSchedule {
                expr: CronExpr::parse(&expr).unwrap(),
                zone: TimeZone::fixed("UTC", 0),
            };
            let t: UnixSeconds = utc(2026, 1, 1, 0, 0) + rng.random_range(0..365 * 86_400);
            let mut u = (t.div_euclid(60) + 1) * 60;
            let limit = t + 400 * 86_400;
            let expected = loop {
                if u > limit {
                    break None;
                }
                let day = u.div_euclid(86_400);
                let minute_of_day = u.rem_euclid(86_400) / 60;
                if s.expr.matches_day(day)
                    && s.expr.hours & (1 << (minute_of_day / 60)) != 0
                    && s.expr.minutes & (1 << (minute_of_day % 60)) != 0
                {
                    break Some(u);
                }
                u += 60;
            };
            match expected {
                Some(_) => assert_eq!(s.next_after(t), expected, "case {case}: {expr:?} after {t}"),
                // Nothing within the scan: the answer, if any, lies beyond it.
                None => assert!(
                    s.next_after(t).is_none_or(|n| n > limit),
                    "case {case}: {expr:?} after {t}"
                ),
            }
        }
    }

    #[test]
    fn weekday_range_skips_the_weekend() {
        let s = sched("0 19 * * MON-FRI", "UTC");
        // Friday 2026-11-27 20:00 → next is Monday 30th 19:00.
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 20, 0)),
            Some(utc(2026, 11, 30, 19, 0))
        );
        // Friday before 19:00 → the same day.
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 18, 59)),
            Some(utc(2026, 11, 27, 19, 0))
        );
        // Exactly at the fire time → strictly after, so the next day.
        assert_eq!(
            s.next_after(utc(2026, 11, 26, 19, 0)),
            Some(utc(2026, 11, 27, 19, 0))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        let s = sched("0 0 13 * FRI", "UTC");
        // From Sunday 2026-11-01: Friday the 6th comes before the 13th.
        assert_eq!(
            s.next_after(utc(2026, 11, 1, 0, 0)),
            Some(utc(2026, 11, 6, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 11, 6, 0, 0)),
            Some(utc(2026, 11, 13, 0, 0))
        );
    }

    #[test]
    fn star_led_steps_still_filter() {
        let s = sched("0 0 */2 * *", "UTC");
        assert_eq!(
            s.fires_between(utc(2026, 11, 27, 12, 0), utc(2026, 12, 2, 12, 0))
                .len(),
            2,
            "the 29th and the 1st"
        );
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 12, 0)),
            Some(utc(2026, 11, 29, 0, 0))
        );
        let s = sched("0 0 * * */2", "UTC");
        // Friday 27 November → Saturday 28 (6), then Sunday 29 (0), Tuesday 1 December (2).
        let fires = s.fires_between(utc(2026, 11, 27, 12, 0), utc(2026, 12, 1, 12, 0));
        assert_eq!(
            fires,
            vec![
                utc(2026, 11, 28, 0, 0),
                utc(2026, 11, 29, 0, 0),
                utc(2026, 12, 1, 0, 0)
            ]
        );
        let s = sched("0 0 */10 * MON", "UTC");
        // Both must match: a Monday that is the 1st, 11th, 21st or 31st.
        assert_eq!(
            s.next_after(utc(2026, 11, 27, 0, 0)),
            Some(utc(2026, 12, 21, 0, 0))
        );
    }

    #[test]
    fn impossible_and_rare_dates() {
        assert_eq!(sched("0 0 30 FEB *", "UTC").next_after(0), None);
        assert_eq!(
            sched("0 0 29 2 *", "UTC").next_after(utc(2097, 1, 1, 0, 0)),
            Some(utc(2104, 2, 29, 0, 0))
        );
    }

    #[test]
    fn weekday_evening_across_berlin_dst() {
        let s = sched("0 19 * * MON-FRI", "Europe/Berlin");
        // Friday 27 March 2026, CET: 18:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 3, 27, 12, 0)),
            Some(utc(2026, 3, 27, 18, 0))
        );
        // Monday 30 March, after spring forward, CEST: 17:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 3, 27, 18, 0)),
            Some(utc(2026, 3, 30, 17, 0))
        );
        // Friday 23 October, CEST; Monday 26 October, CET again.
        assert_eq!(
            s.next_after(utc(2026, 10, 23, 12, 0)),
            Some(utc(2026, 10, 23, 17, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 23, 17, 0)),
            Some(utc(2026, 10, 26, 18, 0))
        );
    }

    #[test]
    fn weekday_evening_across_new_york_dst() {
        let s = sched("0 19 * * MON-FRI", "America/New_York");
        // Friday 6 March 2026, EST: 00:00 UTC Saturday.
        assert_eq!(
            s.next_after(utc(2026, 3, 6, 12, 0)),
            Some(utc(2026, 3, 7, 0, 0))
        );
        // Monday 9 March, EDT: 23:00 UTC.
        assert_eq!(
            s.next_after(utc(2026, 3, 7, 0, 0)),
            Some(utc(2026, 3, 9, 23, 0))
        );
        // Friday 30 October EDT, Monday 2 November EST.
        assert_eq!(
            s.next_after(utc(2026, 10, 30, 12, 0)),
            Some(utc(2026, 10, 30, 23, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 10, 30, 23, 0)),
            Some(utc(2026, 11, 3, 0, 0))
        );
    }

    #[test]
    fn skipped_0230_fires_once_at_the_transition_berlin() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        let fires = s.fires_between(utc(2026, 3, 27, 12, 0), utc(2026, 3, 31, 12, 0));
        assert_eq!(
            fires,
            vec![
                utc(2026, 3, 28, 1, 30), // 02:30 CET
                utc(2026, 3, 29, 1, 0),  // 02:30 skipped: 03:00 CEST, the transition
                utc(2026, 3, 30, 0, 30), // 02:30 CEST
                utc(2026, 3, 31, 0, 30),
            ]
        );
        // Two matches inside the gap (02:00 and 02:30) still fire once.
        let s = sched("0,30 2 * * *", "Europe/Berlin");
        let fires = s.fires_between(utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 23, 0));
        assert_eq!(fires, vec![utc(2026, 3, 29, 1, 0)]);
    }

    #[test]
    fn repeated_0230_fires_once_berlin() {
        let s = sched("30 2 * * *", "Europe/Berlin");
        let fires = s.fires_between(utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0));
        // Sunday 25 October: 02:30 CEST (00:30 UTC) only, not 02:30 CET too.
        assert_eq!(
            fires,
            vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
        );
        // Asking from inside the repeated hour (02:10 CET, second pass) does
        // not fire the 02:30 again.
        assert_eq!(
            s.next_after(utc(2026, 10, 25, 1, 10)),
            Some(utc(2026, 10, 26, 1, 30))
        );
    }

    #[test]
    fn skipped_and_repeated_0230_new_york() {
        let s = sched("30 2 * * *", "America/New_York");
        let spring = s.fires_between(utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 12, 0));
        // Sunday 8 March: 02:30 does not exist; fires at 03:00 EDT (07:00 UTC).
        assert_eq!(spring, vec![utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]);
        let fall = s.fires_between(utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0));
        // Sunday 1 November: 01:30 is repeated, 02:30 is not (it is EST only).
        assert_eq!(fall, vec![utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]);
        let s = sched("30 1 * * *", "America/New_York");
        let fall = s.fires_between(utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0));
        // 01:30 EDT (05:30 UTC) once, not 01:30 EST (06:30 UTC).
        assert_eq!(fall, vec![utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]);
    }
}
