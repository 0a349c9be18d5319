//! IANA time zones read from the system's zoneinfo (`/usr/share/zoneinfo`):
//! a small reader of TZif files (RFC 8536, versions 2 and later, 64-bit
//! data) including the POSIX TZ footer that gives the rule for instants after
//! the last stored transition (slim zoneinfo files stop in 2007 for
//! America/New_York, so the footer is what answers for today), and the
//! civil-calendar arithmetic the cron evaluator needs.
//!
//! This is not a general date-time library: it converts between UTC seconds
//! and local wall-clock seconds, and finds where a local time is skipped
//! (spring forward) or repeated (fall back). It does not read `TZ`, does not
//! know leap seconds (they are skipped), and refuses version-1-only files.

use std::path::{Path, PathBuf};

use crate::UnixSeconds;

/// The directory the zone names are looked up in.
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

/// Why a time zone could not be loaded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TzError {
    /// The name is not a zone name (empty, absolute, or with `..`).
    #[error("time zone {0:?} is not a valid IANA zone name")]
    BadName(String),
    /// No file of that name in the zoneinfo directory.
    #[error("time zone {name:?} not found (looked for {path})")]
    NotFound {
        /// The zone name asked for.
        name: String,
        /// The file looked for.
        path: String,
    },
    /// The file exists but could not be read.
    #[error("time zone {name:?}: cannot read {path}: {message}")]
    Read {
        /// The zone name asked for.
        name: String,
        /// The file read.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The file is not a TZif file this reader understands.
    #[error("time zone {name:?}: bad TZif data: {message}")]
    Format {
        /// The zone name asked for.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// A time zone: its transitions, and the POSIX rule after the last one.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeZone {
    name: String,
    /// Transition instants, ascending, with the UTC offset (seconds east)
    /// in force from each.
    transitions: Vec<(UnixSeconds, i32)>,
    /// The offset before the first transition (local time type 0).
    initial_offset: i32,
    /// The rule for instants after the last transition, if the file has one.
    footer: Option<PosixTz>,
}

/// The local wall-clock time a UTC instant shows, as seconds since the epoch
/// of the local calendar (so `civil_from_days(local / 86400)` is the date).
pub type LocalSeconds = i64;

/// How a local wall-clock time maps to instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalResult {
    /// Exactly one instant shows this time.
    Single(UnixSeconds),
    /// Two instants do (a fall-back repeats it); earlier first.
    Ambiguous(UnixSeconds, UnixSeconds),
    /// None does (a spring-forward skips it); the instant of the transition
    /// that skipped it, i.e. the first valid moment after it.
    Skipped(UnixSeconds),
}

impl TimeZone {
    /// Loads `name` (e.g. `Europe/Berlin`, `UTC`) from [`ZONEINFO_DIR`].
    pub fn load(name: &str) -> Result<TimeZone, TzError> {
        Self::load_from(Path::new(ZONEINFO_DIR), name)
    }

    /// Loads `name` from the zoneinfo directory `dir`.
    pub fn load_from(dir: &Path, name: &str) -> Result<TimeZone, TzError> {
        let bad = name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..");
        if bad {
            return Err(TzError::BadName(name.to_string()));
        }
        let path: PathBuf = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || path.is_dir() => {
                return Err(TzError::NotFound {
                    name: name.to_string(),
                    path: path.display().to_string(),
                })
            }
            Err(e) => {
                return Err(TzError::Read {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        Self::parse(name, &bytes)
    }

    /// Parses TZif bytes; `name` only labels errors and [`TimeZone::name`].
    pub fn parse(name: &str, bytes: &[u8]) -> Result<TimeZone, TzError> {
        let fmt = |message: &str| TzError::Format {
            name: name.to_string(),
            message: message.to_string(),
        };
        let v1 = Header::read(bytes).ok_or_else(|| fmt("not a TZif file (no \"TZif\" header)"))?;
        if v1.version < 2 {
            return Err(fmt(
                "version 1 file (no 64-bit data); version 2 or later is needed",
            ));
        }
        // Skip the 32-bit block: the 64-bit one follows it.
        let v2_start = 44 + v1.block_len(4);
        let rest = bytes
            .get(v2_start..)
            .ok_or_else(|| fmt("truncated version 1 block"))?;
        let h = Header::read(rest).ok_or_else(|| fmt("missing version 2 header"))?;
        let data = rest
            .get(44..44 + h.block_len(8))
            .ok_or_else(|| fmt("truncated version 2 block"))?;
        let mut at = 0usize;
        let mut times = Vec::with_capacity(h.timecnt);
        for _ in 0..h.timecnt {
            let b: [u8; 8] = data[at..at + 8]
                .try_into()
                .map_err(|_| fmt("bad transition time"))?;
            times.push(i64::from_be_bytes(b));
            at += 8;
        }
        let indices: Vec<usize> = data[at..at + h.timecnt]
            .iter()
            .map(|&i| usize::from(i))
            .collect();
        at += h.timecnt;
        let mut offsets = Vec::with_capacity(h.typecnt);
        for _ in 0..h.typecnt {
            let b: [u8; 4] = data[at..at + 4]
                .try_into()
                .map_err(|_| fmt("bad local time type"))?;
            offsets.push(i32::from_be_bytes(b));
            at += 6;
        }
        if offsets.is_empty() {
            return Err(fmt("no local time types"));
        }
        let mut transitions = Vec::with_capacity(times.len());
        for (t, i) in times.into_iter().zip(indices) {
            let off = *offsets
                .get(i)
                .ok_or_else(|| fmt("transition names a missing local time type"))?;
            transitions.push((t, off));
        }
        let footer_bytes = &rest[44 + h.block_len(8)..];
        let footer = parse_footer(footer_bytes).map_err(|m| fmt(&m))?;
        Ok(TimeZone {
            name: name.to_string(),
            transitions,
            initial_offset: offsets[0],
            footer,
        })
    }

    /// A fixed-offset zone with no transitions (UTC is `fixed("UTC", 0)`).
    pub fn fixed(name: &str, offset_secs: i32) -> TimeZone {
        TimeZone {
            name: name.to_string(),
            transitions: Vec::new(),
            initial_offset: offset_secs,
            footer: None,
        }
    }

    /// The zone's name as given to [`TimeZone::load`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UTC offset (seconds east) in force at `t`.
    pub fn offset_at(&self, t: UnixSeconds) -> i32 {
        let idx = self.transitions.partition_point(|&(at, _)| at <= t);
        if self.transitions.is_empty() {
            // RFC 8536: with no transitions the footer, if any, rules always.
            return self
                .footer
                .as_ref()
                .map_or(self.initial_offset, |rule| rule.offset_at(t));
        }
        if idx == 0 {
            return self.initial_offset;
        }
        if idx == self.transitions.len() {
            if let Some(rule) = &self.footer {
                return rule.offset_at(t);
            }
        }
        self.transitions[idx - 1].1
    }

    /// The local wall-clock time `t` shows.
    pub fn to_local(&self, t: UnixSeconds) -> LocalSeconds {
        t + i64::from(self.offset_at(t))
    }

    /// The instants that show local time `local`.
    pub fn from_local(&self, local: LocalSeconds) -> LocalResult {
        // Any transition moves the offset by less than a day, and transitions
        // are far more than a day apart, so the offsets a day either side are
        // the only candidates.
        let mut candidates = [
            self.offset_at(local - 86_400),
            self.offset_at(local),
            self.offset_at(local + 86_400),
        ];
        candidates.sort_unstable();
        let mut found: Vec<UnixSeconds> = Vec::new();
        for (i, &off) in candidates.iter().enumerate() {
            if i > 0 && candidates[i - 1] == off {
                continue;
            }
            let t = local - i64::from(off);
            if self.offset_at(t) == off && !found.contains(&t) {
                found.push(t);
            }
        }
        found.sort_unstable();
        match found.as_slice() {
            [t] => LocalResult::Single(*t),
            [a, .., b] => LocalResult::Ambiguous(*a, *b),
            [] => {
                // Skipped: the offset jumps from `lo` to `hi` at some T with
                // local - hi < T <= local - lo. Find T by bisection.
                let lo = i64::from(candidates[0]);
                let hi = i64::from(candidates[2]);
                let after = self.offset_at(local - lo);
                let (mut a, mut b) = (local - hi, local - lo);
                while b - a > 1 {
                    let mid = a + (b - a) / 2;
                    if self.offset_at(mid) == after {
                        b = mid;
                    } else {
                        a = mid;
                    }
                }
                LocalResult::Skipped(b)
            }
        }
    }
}

struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    fn read(b: &[u8]) -> Option<Header> {
        if b.len() < 44 || &b[0..4] != b"TZif" {
            return None;
        }
        let version = match b[4] {
            0 => 1,
            c @ b'2'..=b'9' => c - b'0',
            _ => return None,
        };
        let n = |i: usize| -> Option<usize> {
            let v: [u8; 4] = b.get(20 + 4 * i..24 + 4 * i)?.try_into().ok()?;
            usize::try_from(u32::from_be_bytes(v)).ok()
        };
        Some(Header {
            version,
            isutcnt: n(0)?,
            isstdcnt: n(1)?,
            leapcnt: n(2)?,
            timecnt: n(3)?,
            typecnt: n(4)?,
            charcnt: n(5)?,
        })
    }

    /// Length of the data block that follows this header, with `time_size`
    /// bytes per transition time and leap-second record time.
    fn block_len(&self, time_size: usize) -> usize {
        self.timecnt * time_size
            + self.timecnt
            + self.typecnt * 6
            + self.charcnt
            + self.leapcnt * (time_size + 4)
            + self.isstdcnt
            + self.isutcnt
    }
}

fn parse_footer(b: &[u8]) -> Result<Option<PosixTz>, String> {
    // The footer is "\n<TZ string>\n"; an empty TZ string means none.
    let text = std::str::from_utf8(b).map_err(|_| "footer is not UTF-8".to_string())?;
    let Some(body) = text.strip_prefix('\n') else {
        return Ok(None);
    };
    let tz = body.split('\n').next().unwrap_or("");
    if tz.is_empty() {
        return Ok(None);
    }
    PosixTz::parse(tz)
        .map(Some)
        .map_err(|m| format!("footer TZ string {tz:?}: {m}"))
}

/// A POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`.
#[derive(Debug, Clone, PartialEq)]
struct PosixTz {
    /// Standard offset, seconds east (the string's sign inverted).
    std_offset: i32,
    dst: Option<PosixDst>,
}

#[derive(Debug, Clone, PartialEq)]
struct PosixDst {
    offset: i32,
    start: (DateRule, i32),
    end: (DateRule, i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DateRule {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(u16),
    /// `n`: day 0..=365, February 29 counted.
    Julian0(u16),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    MonthWeekDay(u8, u8, u8),
}

impl PosixTz {
    fn parse(s: &str) -> Result<PosixTz, String> {
        let mut p = Cursor {
            s: s.as_bytes(),
            i: 0,
        };
        p.name()?;
        let std_offset = -p.offset()?;
        if p.done() {
            return Ok(PosixTz {
                std_offset,
                dst: None,
            });
        }
        p.name()?;
        let offset = if p.peek() == Some(b',') {
            std_offset + 3600
        } else {
            -p.offset()?
        };
        if p.done() {
            // No rule: POSIX leaves it implementation-defined; US rules are the
            // traditional default, but zic always writes a rule, so refuse.
            return Err("daylight saving time without a rule".into());
        }
        p.expect(b',')?;
        let start = p.rule()?;
        p.expect(b',')?;
        let end = p.rule()?;
        if !p.done() {
            return Err("trailing characters".into());
        }
        Ok(PosixTz {
            std_offset,
            dst: Some(PosixDst { offset, start, end }),
        })
    }

    fn offset_at(&self, t: UnixSeconds) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std_offset;
        };
        let year = civil_from_days((t + i64::from(self.std_offset)).div_euclid(86_400)).0;
        // Start is given in standard local time, end in daylight local time.
        let start =
            rule_local(dst.start.0, year) + i64::from(dst.start.1) - i64::from(self.std_offset);
        let end = rule_local(dst.end.0, year) + i64::from(dst.end.1) - i64::from(dst.offset);
        let in_dst = if start <= end {
            start <= t && t < end
        } else {
            !(end <= t && t < start)
        };
        if in_dst {
            dst.offset
        } else {
            self.std_offset
        }
    }
}

/// Local midnight (as [`LocalSeconds`]) of the day `rule` names in `year`.
fn rule_local(rule: DateRule, year: i64) -> LocalSeconds {
    let jan1 = days_from_civil(year, 1, 1);
    let day = match rule {
        DateRule::Julian1(n) => {
            let n = i64::from(n);
            // Days after February count as if there were no February 29.
            jan1 + n - 1 + i64::from(is_leap(year) && n > 59)
        }
        DateRule::Julian0(n) => jan1 + i64::from(n),
        DateRule::MonthWeekDay(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            let first_wd = weekday(first);
            let mut day = first + i64::from((7 + d - first_wd) % 7) + 7 * (i64::from(w) - 1);
            let len = i64::from(days_in_month(year, m));
            while day >= first + len {
                day -= 7;
            }
            day
        }
    };
    day * 86_400
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }
    fn name(&mut self) -> Result<(), String> {
        let start = self.i;
        if self.peek() == Some(b'<') {
            while let Some(c) = self.peek() {
                self.i += 1;
                if c == b'>' {
                    return Ok(());
                }
            }
            return Err("unterminated <name>".into());
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphabetic()) {
            self.i += 1;
        }
        if self.i - start < 3 {
            return Err(format!("zone abbreviation too short at byte {start}"));
        }
        Ok(())
    }
    fn number(&mut self) -> Result<i32, String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("expected a number at byte {start}"))
    }
    /// `[+-]hh[:mm[:ss]]`, as written (west positive for offsets).
    fn offset(&mut self) -> Result<i32, String> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                -1
            }
            Some(b'+') => {
                self.i += 1;
                1
            }
            _ => 1,
        };
        let mut secs = self.number()? * 3600;
        if self.peek() == Some(b':') {
            self.i += 1;
            secs += self.number()? * 60;
            if self.peek() == Some(b':') {
                self.i += 1;
                secs += self.number()?;
            }
        }
        Ok(sign * secs)
    }
    fn rule(&mut self) -> Result<(DateRule, i32), String> {
        let date = match self.peek() {
            Some(b'J') => {
                self.i += 1;
                DateRule::Julian1(u16::try_from(self.number()?).map_err(|_| "bad Jn")?)
            }
            Some(b'M') => {
                self.i += 1;
                let m = self.number()?;
                self.expect(b'.')?;
                let w = self.number()?;
                self.expect(b'.')?;
                let d = self.number()?;
                if !(1..=12).contains(&m) || !(1..=5).contains(&w) || !(0..=6).contains(&d) {
                    return Err("M rule out of range".into());
                }
                // The ranges were just checked, so these fit in a u8.
                DateRule::MonthWeekDay(m as u8, w as u8, d as u8)
            }
            _ => DateRule::Julian0(u16::try_from(self.number()?).map_err(|_| "bad n")?),
        };
        // The time of day defaults to 02:00 and may be negative or past 24h
        // (RFC 8536's extension to POSIX).
        let time = if self.peek() == Some(b'/') {
            self.i += 1;
            self.offset()?
        } else {
            7200
        };
        Ok((date, time))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
pub fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m is 1..=12 by construction.
    (y, m as u8, d as u8)
}

/// Day of the week of a day count since 1970-01-01: 0 = Sunday … 6 = Saturday.
pub fn weekday(days: i64) -> u8 {
    // 1970-01-01 was a Thursday; the result is in 0..7.
    (days + 4).rem_euclid(7) as u8
}

/// Whether `year` is a Gregorian leap year.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1-12) of `year`.
pub fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a UTC civil time; a helper for tests and
/// callers that hold dates.
pub fn utc(y: i64, mo: u8, d: u8, h: u8, mi: u8) -> UnixSeconds {
    days_from_civil(y, mo, d) * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::load(name).unwrap()
    }

    #[test]
    fn civil_round_trips() {
        for z in [-800_000, -1, 0, 1, 19_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(days_from_civil(2026, 11, 27)), 5); // a Friday
    }

    #[test]
    fn berlin_offsets_follow_the_footer_rule() {
        let z = zone("Europe/Berlin");
        assert_eq!(z.offset_at(utc(2026, 1, 15, 12, 0)), 3600);
        assert_eq!(z.offset_at(utc(2026, 7, 15, 12, 0)), 7200);
        // 2026: spring forward Sunday 29 March 01:00 UTC, back 25 October 01:00 UTC.
        assert_eq!(z.offset_at(utc(2026, 3, 29, 0, 59)), 3600);
        assert_eq!(z.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
        // Far beyond any stored transition.
        assert_eq!(z.offset_at(utc(2090, 7, 1, 0, 0)), 7200);
    }

    #[test]
    fn new_york_offsets_follow_the_footer_rule() {
        let z = zone("America/New_York");
        // 2026: DST from 8 March 07:00 UTC to 1 November 06:00 UTC.
        assert_eq!(z.offset_at(utc(2026, 3, 8, 6, 59)), -5 * 3600);
        assert_eq!(z.offset_at(utc(2026, 3, 8, 7, 0)), -4 * 3600);
        assert_eq!(z.offset_at(utc(2026, 11, 1, 5, 59)), -4 * 3600);
        assert_eq!(z.offset_at(utc(2026, 11, 1, 6, 0)), -5 * 3600);
    }

    #[test]
    fn southern_hemisphere_rule_wraps_the_year() {
        let z = zone("Australia/Sydney");
        assert_eq!(z.offset_at(utc(2026, 1, 15, 0, 0)), 11 * 3600);
        assert_eq!(z.offset_at(utc(2026, 7, 15, 0, 0)), 10 * 3600);
    }

    #[test]
    fn local_times_skipped_and_repeated() {
        let z = zone("Europe/Berlin");
        let local = |y, mo, d, h, mi| utc(y, mo, d, h, mi);
        assert_eq!(
            z.from_local(local(2026, 3, 29, 2, 30)),
            LocalResult::Skipped(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            z.from_local(local(2026, 10, 25, 2, 30)),
            LocalResult::Ambiguous(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))
        );
        assert_eq!(
            z.from_local(local(2026, 6, 1, 19, 0)),
            LocalResult::Single(utc(2026, 6, 1, 17, 0))
        );
    }

    #[test]
    fn zones_without_dst_and_utc() {
        assert_eq!(zone("UTC").offset_at(utc(2026, 7, 1, 0, 0)), 0);
        assert_eq!(
            zone("Asia/Tokyo").offset_at(utc(2026, 7, 1, 0, 0)),
            9 * 3600
        );
        assert_eq!(
            zone("Asia/Kolkata").offset_at(utc(2026, 1, 1, 0, 0)),
            5 * 3600 + 1800
        );
    }

    #[test]
    fn missing_zone_and_bad_names_are_clear_errors() {
        let err = TimeZone::load("Mars/Olympus_Mons").unwrap_err();
        assert!(matches!(err, TzError::NotFound { .. }));
        assert!(
            err.to_string().contains("\"Mars/Olympus_Mons\" not found"),
            "{err}"
        );
        assert!(matches!(
            TimeZone::load("../etc/passwd"),
            Err(TzError::BadName(_))
        ));
        assert!(matches!(
            TimeZone::load("Europe"),
            Err(TzError::NotFound { .. })
        ));
        assert!(matches!(
            TimeZone::parse("x", b"not tzif"),
            Err(TzError::Format { .. })
        ));
    }

    #[test]
    fn posix_strings_parse() {
        let ny = PosixTz::parse("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(ny.std_offset, -5 * 3600);
        assert_eq!(ny.dst.as_ref().unwrap().offset, -4 * 3600);
        let odd = PosixTz::parse("<+0330>-3:30").unwrap();
        assert_eq!(odd.std_offset, 3 * 3600 + 1800);
        assert!(PosixTz::parse("EST5EDT").is_err());
    }
}
