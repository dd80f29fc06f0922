//! Standard 5-field cron schedules, as the CronJob controller reads them (robfig/cron's
//! `ParseStandard`): minute, hour, day of month, month, day of week; `*`, `?`, lists,
//! ranges, steps (`*/5`, `1-30/2`, `5/15`), month and weekday names, `7` for Sunday, and
//! the descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//! `@hourly`. When both day fields are restricted a day matches either (cron's rule).
//!
//! [`SimClock`] is the schedule time of the simulated cluster: it starts at the wall clock
//! when the simulator starts and runs `60s / cron_minute` times faster.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    doms: u32,
    months: u16,
    dows: u8,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    s.parse::<u32>()
        .map_err(|_| format!("failed to parse int from {s}: not a number"))
}

/// Parses one field into a bit set over `lo..=hi`; returns (bits, starred).
fn field(f: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("failed to parse int from {s}: not a number"))?;
                if s == 0 {
                    return Err(format!("step of range should be a positive number: {part}"));
                }
                (r, Some(s))
            }
            None => (part, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            star = true;
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, base)?, value(b, names, base)?)
        } else {
            let v = value(range, names, base)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if step.is_some() { hi } else { v })
        };
        if start < lo {
            return Err(format!(
                "beginning of range ({start}) below minimum ({lo}): {part}"
            ));
        }
        if end > hi {
            return Err(format!("end of range ({end}) above maximum ({hi}): {part}"));
        }
        if start > end {
            return Err(format!(
                "beginning of range ({start}) beyond end of range ({end}): {part}"
            ));
        }
        let step = step.unwrap_or(1);
        if step > 1 {
            star = false;
        }
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a schedule; the error says what is wrong, as kube-apiserver's validation does.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = spec.trim();
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(format!("unrecognized descriptor: {s}"));
            }
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {spec}",
                fields.len()
            ));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0)?;
        let (doms, dom_star) = field(fields[2], 1, 31, &[], 0)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1)?;
        let (mut dows, dow_star) = field(fields[4], 0, 7, &DAYS, 0)?;
        if dows & (1 << 7) != 0 {
            dows = (dows & 0x7f) | 1;
        }
        Ok(Schedule {
            minutes,
            hours: hours as u32,
            doms: doms as u32,
            months: months as u16,
            dows: dows as u8,
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.doms & (1 << d.day()) != 0;
        let dow = self.dows & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first activation strictly after `t`, in `tz`; None within five years.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        // The next whole minute.
        let mut start = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?;
        for _ in 0..(366 * 5) {
            let date = start.date();
            if self.day_matches(date) {
                for h in start.hour()..24 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let from = if h == start.hour() { start.minute() } else { 0 };
                    for m in from..60 {
                        if self.minutes & (1 << m) != 0 {
                            let dt = DateTime::from_parts(date, jiff::civil::time(h, m, 0, 0));
                            if let Ok(ts) = tz.to_ambiguous_timestamp(dt).compatible() {
                                if ts > t {
                                    return Some(ts);
                                }
                            }
                        }
                    }
                }
            }
            start = DateTime::from_parts(date.tomorrow().ok()?, jiff::civil::time(0, 0, 0, 0));
        }
        None
    }
}

/// The simulated cluster's schedule time: equal to the wall clock at `start`, then running
/// `factor` times faster (`factor` = 60s / `cron_minute`).
#[derive(Clone, Debug)]
pub struct SimClock {
    start: Timestamp,
    factor: f64,
}

impl SimClock {
    pub fn new(cron_minute: Duration) -> Self {
        let secs = cron_minute.as_secs_f64().max(0.001);
        Self {
            start: Timestamp::now(),
            factor: 60.0 / secs,
        }
    }

    fn scale(&self, t: Timestamp, f: f64) -> Timestamp {
        let d = t.duration_since(self.start).as_secs_f64() * f;
        self.start
            .checked_add(jiff::SignedDuration::from_secs_f64(d))
            .unwrap_or(t)
    }

    /// Schedule time now.
    pub fn now(&self) -> Timestamp {
        self.to_schedule(Timestamp::now())
    }

    pub fn to_schedule(&self, wall: Timestamp) -> Timestamp {
        self.scale(wall, self.factor)
    }

    pub fn to_wall(&self, schedule: Timestamp) -> Timestamp {
        self.scale(schedule, 1.0 / self.factor)
    }

    /// How long (wall clock) until schedule time `t`.
    pub fn wall_until(&self, t: Timestamp) -> Duration {
        let wall = self.to_wall(t);
        let d = wall.duration_since(Timestamp::now()).as_secs_f64();
        Duration::from_secs_f64(d.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .unwrap()
            .next_after(at(after), &TimeZone::UTC)
            .unwrap()
            .to_string()
    }

    #[test]
    fn standard_fields() {
        assert_eq!(
            next("*/5 * * * *", "2026-03-01T10:02:30Z"),
            "2026-03-01T10:05:00Z"
        );
        assert_eq!(
            next("*/5 * * * *", "2026-03-01T10:05:00Z"),
            "2026-03-01T10:10:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "2026-03-01T10:00:00Z"),
            "2026-03-02T03:00:00Z"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "2026-03-06T10:00:00Z"),
            "2026-03-09T09:30:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-03-01T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("15,45 */6 * * *", "2026-03-01T06:20:00Z"),
            "2026-03-01T06:45:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-03-01T06:26:00Z"),
            "2026-03-01T06:45:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-03-01T06:26:00Z"),
            "2026-03-01T07:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-03-02T00:00:00Z"),
            "2026-03-08T00:00:00Z",
            "7 is Sunday"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        assert_eq!(
            next("0 0 13 * fri", "2026-03-01T00:00:00Z"),
            "2026-03-06T00:00:00Z"
        );
    }

    #[test]
    fn impossible_schedule_has_no_next() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for (spec, want) in [
            ("* * * *", "expected exactly 5 fields"),
            ("60 * * * *", "above maximum"),
            ("*/0 * * * *", "positive"),
            ("x * * * *", "failed to parse int"),
            ("TZ=UTC * * * * *", "timeZone field"),
            ("@every 5m", "unrecognized descriptor"),
        ] {
            let e = Schedule::parse(spec).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }

    #[test]
    fn sim_clock_runs_faster() {
        let c = SimClock::new(Duration::from_secs(1));
        let wall = Timestamp::now();
        let sched = c.to_schedule(wall);
        let back = c.to_wall(sched);
        assert!((back.as_millisecond() - wall.as_millisecond()).abs() <= 1);
        let later = wall
            .checked_add(jiff::SignedDuration::from_secs(2))
            .unwrap();
        let d = c.to_schedule(later).duration_since(sched).as_secs_f64();
        assert!(
            (d - 120.0).abs() < 0.01,
            "2 wall seconds are 2 schedule minutes, got {d}"
        );
    }
}
