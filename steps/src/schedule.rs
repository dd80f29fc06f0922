//! `spec.automation.schedule`, as pure functions of the spec and the time: whether the
//! maintenance windows are open now (and until when, or when the next one opens), and whether
//! the trust anchor is due for the operator's scheduled renewal (`renewAnchorBefore`).
//!
//! Window times are local times in each window's IANA time zone (jiff's tz database), so a
//! window at 02:00 Europe/Berlin opens at 02:00 Berlin time in winter and in summer. A window
//! lasts `duration` of real time from its opening, across midnight, the week's end or a
//! daylight-saving change. A start time that a spring-forward gap skips opens the window as
//! much later as the clocks jumped (jiff's `compatible` rule: 02:30 becomes 03:30); one that
//! an autumn fold repeats opens it at the first of the two.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use std::time::Duration;
use trust_rotation_crds::{MaintenanceWindow, Schedule, ScheduledRenewalRecord};

/// How every window-parked `blockingMessage` starts.
pub const OUTSIDE_WINDOWS: &str = "outside the maintenance windows:";

/// Event reasons.
pub const WINDOW_CLOSED: &str = "MaintenanceWindowClosed";
pub const WINDOW_OPENED: &str = "MaintenanceWindowOpened";
pub const ANCHOR_RENEWAL_SCHEDULED: &str = "AnchorRenewalScheduled";
pub const ANCHOR_RENEWAL_TRIGGERED: &str = "AnchorRenewalTriggered";
pub const ANCHOR_RENEWAL_NOT_SCHEDULED: &str = "AnchorRenewalNotScheduled";

/// The shortest `renewAnchorBefore` accepted.
pub const MIN_RENEW_ANCHOR_BEFORE: Duration = Duration::from_secs(3600);
/// The longest maintenance window.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// One maintenance window, checked.
#[derive(Debug, Clone)]
struct Window {
    days: [bool; 7],
    hour: i8,
    minute: i8,
    duration: SignedDuration,
    tz: TimeZone,
    tz_name: String,
}

/// `spec.automation.schedule`, checked: build it with [`Parsed::parse`].
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// `renewAnchorBefore`, if set.
    pub renew_anchor_before: Option<Duration>,
    windows: Vec<Window>,
}

/// Where the maintenance windows stand at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WindowState {
    /// No window configured: the operator may act at any time.
    #[default]
    Always,
    /// Inside a window, which closes at `closes_at` (windows that overlap or touch count as
    /// one); the next one opens at `next_opens_at`.
    Open {
        closes_at: Timestamp,
        next_opens_at: Timestamp,
    },
    /// Outside every window; the next one opens at `opens_at`, shown as `local` (e.g. `Tue
    /// 2026-12-08 02:00 Europe/Berlin`).
    Closed { opens_at: Timestamp, local: String },
    /// `spec.automation.schedule` cannot be read (`message` says what and the fix): the
    /// operator holds what a closed window holds until it is fixed, and nothing more, so a
    /// renewed anchor still enters the trust bundle.
    Invalid { message: String },
}

impl WindowState {
    pub fn is_open(&self) -> bool {
        matches!(self, WindowState::Always | WindowState::Open { .. })
    }

    /// The windows of `schedule` at `now`; [`WindowState::Invalid`] when they cannot be read.
    /// A schedule that cannot be read schedules no renewal.
    pub fn of(schedule: &Schedule, now: Timestamp) -> (Parsed, WindowState) {
        match Parsed::parse(schedule) {
            Ok(p) => {
                let w = p.window_at(now);
                (p, w)
            }
            Err(message) => (Parsed::default(), WindowState::Invalid { message }),
        }
    }

    /// When the next window opens (`None` without windows). While a window is open, the one
    /// after it.
    pub fn next_opening(&self) -> Option<Timestamp> {
        match self {
            WindowState::Always => None,
            WindowState::Open { next_opens_at, .. } => Some(*next_opens_at),
            WindowState::Closed { opens_at, .. } => Some(*opens_at),
            WindowState::Invalid { .. } => None,
        }
    }

    /// The `blockingMessage` of a rotation parked at a step boundary outside the windows,
    /// `None` while the operator may act: before the old root leaves the trust bundle, where
    /// every pod trusts both anchors. It does not change while the rotation waits (no status
    /// write or Event per look).
    pub fn park(&self) -> Option<String> {
        self.park_because("old and new anchors are both trusted")
    }

    /// [`Self::park`] once the old root has left the trust bundle (after ReduceBundle).
    pub fn park_reduced(&self) -> Option<String> {
        self.park_because(
            "every workload certificate chains to the new anchor, which every pod trusts",
        )
    }

    fn park_because(&self, why_safe: &str) -> Option<String> {
        match self {
            WindowState::Closed { opens_at, local } => Some(format!(
                "{OUTSIDE_WINDOWS} the next opens {local} ({}); the mesh is safe to hold here ({why_safe}); the operator resumes by itself then (spec.automation.schedule.maintenanceWindows)",
                opens_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            )),
            WindowState::Invalid { message } => Some(format!(
                "{message}; until spec.automation.schedule is fixed the operator holds what a closed maintenance window holds; the mesh is safe to hold here ({why_safe})"
            )),
            _ => None,
        }
    }
}

fn parse_duration(field: &str, value: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{field}: {value:?} is not a duration: use digits followed by one unit of m, h or d (for example 90m, 4h or 30d)"
        )
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let mul = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    n.checked_mul(mul)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

fn parse_window(i: usize, w: &MaintenanceWindow) -> Result<Window, String> {
    let field = |f: &str| format!("spec.automation.schedule.maintenanceWindows[{i}].{f}");
    if w.weekdays.is_empty() {
        return Err(format!(
            "{}: the window opens on no day: list at least one of Mon, Tue, Wed, Thu, Fri, Sat, Sun",
            field("weekdays")
        ));
    }
    let mut days = [false; 7];
    for d in &w.weekdays {
        days[d.from_monday() as usize] = true;
    }
    let (hour, minute) = w
        .start
        .split_once(':')
        .filter(|(h, m)| h.len() == 2 && m.len() == 2)
        .and_then(|(h, m)| Some((h.parse::<i8>().ok()?, m.parse::<i8>().ok()?)))
        .filter(|(h, m)| (0..24).contains(h) && (0..60).contains(m))
        .ok_or_else(|| {
            format!(
                "{}: {:?} is not a time of day: use HH:MM on a 24-hour clock (for example 02:00 or 22:30)",
                field("start"),
                w.start
            )
        })?;
    let duration = parse_duration(&field("duration"), &w.duration)?;
    if duration.is_zero() || duration > MAX_WINDOW {
        return Err(format!(
            "{}: {:?} must be longer than 0 and at most 7d",
            field("duration"),
            w.duration
        ));
    }
    let tz = TimeZone::get(&w.time_zone).map_err(|_| {
        // Without a tz database only UTC is known: say so rather than blame the name.
        let no_db = if jiff::tz::db().is_definitively_empty() {
            " (this operator found no IANA time zone database: its image lacks /usr/share/zoneinfo, or TZDIR points elsewhere; only UTC works without it)"
        } else {
            ""
        };
        format!(
            "{}: {:?} is not a time zone the operator knows: use an IANA time zone name such as Europe/Berlin, America/New_York or UTC{no_db}",
            field("timeZone"),
            w.time_zone
        )
    })?;
    Ok(Window {
        days,
        hour,
        minute,
        duration: SignedDuration::try_from(duration).map_err(|e| e.to_string())?,
        tz,
        tz_name: w.time_zone.clone(),
    })
}

impl Parsed {
    /// Checks the schedule. `Err` is a message for the user naming the field (and the
    /// window's index), the bad value and the fix.
    pub fn parse(s: &Schedule) -> Result<Self, String> {
        let renew_anchor_before = s
            .renew_anchor_before
            .as_deref()
            .map(|v| {
                let field = "spec.automation.schedule.renewAnchorBefore";
                let d = parse_duration(field, v)?;
                if d < MIN_RENEW_ANCHOR_BEFORE {
                    return Err(format!(
                        "{field}: {v:?} is shorter than the minimum of 1h: set it longer than the anchor Certificate's renewBefore (for example 720h)"
                    ));
                }
                Ok(d)
            })
            .transpose()?;
        let windows = s
            .maintenance_windows
            .iter()
            .enumerate()
            .map(|(i, w)| parse_window(i, w))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            renew_anchor_before,
            windows,
        })
    }

    /// Every window opening within a week and a day either side of `now`, as `(start, end,
    /// index)`.
    fn intervals(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp, usize)> {
        let mut out = Vec::new();
        for (i, w) in self.windows.iter().enumerate() {
            let today: Date = now.to_zoned(w.tz.clone()).date();
            for offset in -8i32..=8 {
                let Ok(day) = today.checked_add(offset.days()) else {
                    continue;
                };
                let weekday = day.weekday().to_monday_zero_offset() as usize;
                if !w.days[weekday] {
                    continue;
                }
                let Ok(start) = day
                    .at(w.hour, w.minute, 0, 0)
                    .to_zoned(w.tz.clone())
                    .map(|z| z.timestamp())
                else {
                    continue;
                };
                if let Ok(end) = start.checked_add(w.duration) {
                    out.push((start, end, i));
                }
            }
        }
        out.sort();
        out
    }

    /// Where the windows stand at `now`.
    pub fn window_at(&self, now: Timestamp) -> WindowState {
        if self.windows.is_empty() {
            return WindowState::Always;
        }
        let intervals = self.intervals(now);
        // Merge windows that overlap or touch: one stretch of open time.
        let mut merged: Vec<(Timestamp, Timestamp, usize)> = Vec::new();
        for (s, e, i) in intervals {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e, i)),
            }
        }
        let next_after = |t: Timestamp| merged.iter().find(|(s, _, _)| *s > t).copied();
        if let Some(&(_, closes_at, _)) = merged.iter().find(|(s, e, _)| *s <= now && now < *e) {
            // A week's openings either side always hold the next one (every window opens at
            // least once a week and lasts at most 7d); the fallback is a week on.
            let next_opens_at = next_after(closes_at)
                .map(|(s, _, _)| s)
                .unwrap_or(closes_at + SignedDuration::from_hours(168));
            return WindowState::Open {
                closes_at,
                next_opens_at,
            };
        }
        match next_after(now) {
            Some((opens_at, _, i)) => {
                let w = &self.windows[i];
                let local = opens_at.to_zoned(w.tz.clone());
                WindowState::Closed {
                    opens_at,
                    local: format!("{} {}", local.strftime("%a %Y-%m-%d %H:%M"), w.tz_name),
                }
            }
            // Unreachable with checked windows; closed for a week is the safe reading.
            None => WindowState::Closed {
                opens_at: now + SignedDuration::from_hours(168),
                local: "in a week".into(),
            },
        }
    }
}

/// What the scheduled renewal makes of the current trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorRenewal {
    /// No `renewAnchorBefore`.
    Off,
    /// Not due before `due_at`.
    NotDue { due_at: Timestamp },
    /// Due: less validity left than `renewAnchorBefore`. `reason` says so for the status,
    /// the Event and the rotation's trigger.
    Due { reason: String },
    /// `renewAnchorBefore` is at least the anchor's whole lifetime: every new anchor would be
    /// renewed at once. Nothing is triggered; `message` says why and the fix.
    LongerThanLifetime { message: String },
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// Whether the anchor valid from `not_before` to `not_after` is due for the scheduled
/// renewal at `now`.
pub fn anchor_renewal(
    renew_anchor_before: Option<Duration>,
    not_before: Timestamp,
    not_after: Timestamp,
    now: Timestamp,
) -> AnchorRenewal {
    let Some(before) = renew_anchor_before else {
        return AnchorRenewal::Off;
    };
    let lifetime = Duration::try_from(not_before.duration_until(not_after)).unwrap_or_default();
    if before >= lifetime {
        return AnchorRenewal::LongerThanLifetime {
            message: format!(
                "spec.automation.schedule.renewAnchorBefore ({}) is not shorter than the trust anchor's whole lifetime ({}): every new anchor would be renewed as soon as it is issued, so the operator renews none. Set renewAnchorBefore shorter than the anchor Certificate's duration (and longer than its renewBefore)",
                human(before),
                human(lifetime)
            ),
        };
    }
    let due_at = not_after
        .checked_sub(SignedDuration::try_from(before).unwrap_or_default())
        .unwrap_or(not_after);
    if now <= due_at {
        return AnchorRenewal::NotDue { due_at };
    }
    // No `now` in it: while it waits for a window, the record and its Event do not change.
    AnchorRenewal::Due {
        reason: format!(
            "scheduled renewal: the trust anchor expires at {}, and has had less validity left than spec.automation.schedule.renewAnchorBefore ({}) since {}",
            not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            human(before),
            due_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
    }
}

/// The current trust anchor's identity and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorValidity {
    pub fingerprint: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// What the scheduled renewal did or decided, for the status and an Event.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledNote {
    pub kind: NoteKind,
    pub record: ScheduledRenewalRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// The operator triggered the renewal (Normal Event [`ANCHOR_RENEWAL_TRIGGERED`]).
    Triggered,
    /// Due, waiting for a maintenance window (Normal Event [`ANCHOR_RENEWAL_SCHEDULED`]).
    AwaitingWindow,
    /// Not renewed, and a person should know why (Warning Event
    /// [`ANCHOR_RENEWAL_NOT_SCHEDULED`]).
    NotScheduled,
}

impl NoteKind {
    pub fn reason(self) -> &'static str {
        match self {
            NoteKind::Triggered => ANCHOR_RENEWAL_TRIGGERED,
            NoteKind::AwaitingWindow => ANCHOR_RENEWAL_SCHEDULED,
            NoteKind::NotScheduled => ANCHOR_RENEWAL_NOT_SCHEDULED,
        }
    }
}

/// What the scheduled renewal does now, before any write: `None` when there is nothing to
/// do or say (not configured, not due, or this anchor's renewal was triggered already).
/// `Some(Ok(reason))`: trigger the renewal now. `Some(Err(note))`: record and say `note`.
pub fn plan_renewal(
    renew_anchor_before: Option<Duration>,
    anchor: &AnchorValidity,
    window: &WindowState,
    recorded: Option<&ScheduledRenewalRecord>,
    now: Timestamp,
) -> Option<Result<String, ScheduledNote>> {
    if recorded.is_some_and(|r| r.anchor == anchor.fingerprint && r.triggered_at.is_some()) {
        return None;
    }
    let note = |kind, reason: String| ScheduledNote {
        kind,
        record: ScheduledRenewalRecord {
            anchor: anchor.fingerprint.clone(),
            triggered_at: None,
            reason,
        },
    };
    match anchor_renewal(renew_anchor_before, anchor.not_before, anchor.not_after, now) {
        AnchorRenewal::Off | AnchorRenewal::NotDue { .. } => None,
        AnchorRenewal::LongerThanLifetime { message } => {
            Some(Err(note(NoteKind::NotScheduled, message)))
        }
        AnchorRenewal::Due { reason } => match window {
            WindowState::Closed { opens_at, local } => Some(Err(note(
                NoteKind::AwaitingWindow,
                format!(
                    "{reason}; the operator renews it when the next maintenance window opens, {local} ({})",
                    opens_at.strftime("%Y-%m-%dT%H:%M:%SZ")
                ),
            ))),
            _ => Some(Ok(reason)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trust_rotation_crds::Weekday::{self, *};

    fn window(days: &[Weekday], start: &str, duration: &str, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            weekdays: days.to_vec(),
            start: start.into(),
            duration: duration.into(),
            time_zone: tz.into(),
        }
    }

    fn parsed(windows: Vec<MaintenanceWindow>) -> Parsed {
        Parsed::parse(&Schedule {
            renew_anchor_before: None,
            maintenance_windows: windows,
        })
        .expect("valid")
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn no_window_is_always_open() {
        let p = parsed(vec![]);
        assert_eq!(p.window_at(t("2026-12-02T15:00:00Z")), WindowState::Always);
        assert_eq!(WindowState::Always.park(), None);
        assert!(WindowState::Always.is_open());
    }

    #[test]
    fn open_and_closed_in_a_time_zone() {
        // 2026-12-08 is a Tuesday; Berlin is UTC+1 in December.
        let p = parsed(vec![window(&[Tue, Thu], "02:00", "4h", "Europe/Berlin")]);
        let open = p.window_at(t("2026-12-08T02:30:00Z"));
        assert_eq!(
            open,
            WindowState::Open {
                closes_at: t("2026-12-08T05:00:00Z"),
                next_opens_at: t("2026-12-10T01:00:00Z"),
            }
        );
        let closed = p.window_at(t("2026-12-07T22:48:00Z"));
        let WindowState::Closed { opens_at, local } = &closed else {
            panic!("{closed:?}")
        };
        assert_eq!(*opens_at, t("2026-12-08T01:00:00Z"));
        assert_eq!(local, "Tue 2026-12-08 02:00 Europe/Berlin");
        assert!(closed
            .park_reduced()
            .unwrap()
            .contains("safe to hold here (every workload certificate chains to the new anchor"));
        let m = closed.park().unwrap();
        assert!(
            m.starts_with("outside the maintenance windows: the next opens Tue 2026-12-08 02:00 Europe/Berlin (2026-12-08T01:00:00Z); the mesh is safe to hold here (old and new anchors are both trusted)"),
            "{m}"
        );
        // The end is exclusive.
        assert!(!p.window_at(t("2026-12-08T05:00:00Z")).is_open());
        assert_eq!(
            p.window_at(t("2026-12-08T05:00:00Z")).next_opening(),
            Some(t("2026-12-10T01:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_changes_keep_local_time() {
        // Europe/Berlin moves to summer time on 2026-03-29 (02:00 → 03:00), back on 2026-10-25.
        let p = parsed(vec![window(
            &[Sat, Sun, Mon],
            "01:00",
            "2h",
            "Europe/Berlin",
        )]);
        // Saturday 01:00 CET = 00:00Z; Monday 01:00 CEST = 23:00Z on Sunday.
        assert!(p.window_at(t("2026-03-28T00:30:00Z")).is_open());
        assert!(p.window_at(t("2026-03-29T23:30:00Z")).is_open());
        assert!(!p.window_at(t("2026-03-30T01:30:00Z")).is_open());
        // Sunday the 29th: 01:00 CET (00:00Z) for 2 real hours, across the jump.
        assert_eq!(
            p.window_at(t("2026-03-29T01:30:00Z")),
            WindowState::Open {
                closes_at: t("2026-03-29T02:00:00Z"),
                next_opens_at: t("2026-03-29T23:00:00Z"),
            }
        );
        // A start the gap skips (02:30 on 2026-03-29) opens an hour later, at 03:30 CEST.
        let gap = parsed(vec![window(&[Sun], "02:30", "1h", "Europe/Berlin")]);
        let WindowState::Closed { opens_at, local } = gap.window_at(t("2026-03-28T12:00:00Z"))
        else {
            panic!()
        };
        assert_eq!(opens_at, t("2026-03-29T01:30:00Z"));
        assert_eq!(local, "Sun 2026-03-29 03:30 Europe/Berlin");
        // A start the fold repeats (02:30 on 2026-10-25) opens at the first one (CEST).
        let fold = parsed(vec![window(&[Sun], "02:30", "1h", "Europe/Berlin")]);
        let WindowState::Closed { opens_at, .. } = fold.window_at(t("2026-10-24T12:00:00Z")) else {
            panic!()
        };
        assert_eq!(opens_at, t("2026-10-25T00:30:00Z"));
        // New York's summer time: 22:00 local is 02:00Z in summer, 03:00Z in winter.
        let ny = parsed(vec![window(&[Fri], "22:00", "1h", "America/New_York")]);
        assert!(ny.window_at(t("2026-07-04T02:30:00Z")).is_open());
        assert!(ny.window_at(t("2026-12-05T03:30:00Z")).is_open());
        assert!(!ny.window_at(t("2026-12-05T02:30:00Z")).is_open());
    }

    #[test]
    fn windows_cross_midnight_and_the_weeks_end() {
        // Sunday 22:00 UTC for 6h: open into Monday 04:00.
        let p = parsed(vec![window(&[Sun], "22:00", "6h", "UTC")]);
        // 2026-12-06 is a Sunday, 2026-12-07 a Monday.
        assert!(p.window_at(t("2026-12-06T23:00:00Z")).is_open());
        assert_eq!(
            p.window_at(t("2026-12-07T03:59:00Z")),
            WindowState::Open {
                closes_at: t("2026-12-07T04:00:00Z"),
                next_opens_at: t("2026-12-13T22:00:00Z"),
            }
        );
        let WindowState::Closed { opens_at, local } = p.window_at(t("2026-12-07T04:00:00Z")) else {
            panic!()
        };
        assert_eq!(opens_at, t("2026-12-13T22:00:00Z"));
        assert_eq!(local, "Sun 2026-12-13 22:00 UTC");
        // A window of a whole week is open all the time but for its end instant.
        let week = parsed(vec![window(&[Mon], "00:00", "7d", "UTC")]);
        assert!(week.window_at(t("2026-12-06T23:59:00Z")).is_open());
    }

    #[test]
    fn several_windows_the_earliest_next_and_touching_ones_merge() {
        let p = parsed(vec![
            window(&[Wed], "10:00", "2h", "UTC"),
            window(&[Wed], "12:00", "1h", "UTC"),
            window(&[Tue], "09:00", "1h", "Asia/Tokyo"),
        ]);
        // Wednesday 2026-12-02 11:00Z: the 10:00 and 12:00 windows are one stretch to 13:00.
        let WindowState::Open { closes_at, .. } = p.window_at(t("2026-12-02T11:00:00Z")) else {
            panic!()
        };
        assert_eq!(closes_at, t("2026-12-02T13:00:00Z"));
        // After it, the next is Tuesday 09:00 in Tokyo (00:00Z), before next Wednesday.
        let WindowState::Closed { opens_at, local } = p.window_at(t("2026-12-02T13:00:00Z")) else {
            panic!()
        };
        assert_eq!(opens_at, t("2026-12-08T00:00:00Z"));
        assert_eq!(local, "Tue 2026-12-08 09:00 Asia/Tokyo");
    }

    #[test]
    fn bad_values_name_the_window_the_value_and_the_fix() {
        let bad = |w: MaintenanceWindow| {
            Parsed::parse(&Schedule {
                renew_anchor_before: None,
                maintenance_windows: vec![window(&[Mon], "01:00", "1h", "UTC"), w],
            })
            .unwrap_err()
        };
        let e = bad(window(&[Mon], "01:00", "1h", "Europe/Berln"));
        assert!(
            e.contains("maintenanceWindows[1].timeZone")
                && e.contains("\"Europe/Berln\"")
                && e.contains("Europe/Berlin"),
            "{e}"
        );
        let e = bad(window(&[Mon], "24:00", "1h", "UTC"));
        assert!(
            e.contains("maintenanceWindows[1].start") && e.contains("HH:MM"),
            "{e}"
        );
        let e = bad(window(&[Mon], "01:00", "8d", "UTC"));
        assert!(
            e.contains("[1].duration") && e.contains("at most 7d"),
            "{e}"
        );
        let e = bad(window(&[Mon], "01:00", "1h30m", "UTC"));
        assert!(e.contains("[1].duration") && e.contains("one unit"), "{e}");
        let e = bad(window(&[], "01:00", "1h", "UTC"));
        assert!(e.contains("[1].weekdays"), "{e}");
        let e = Parsed::parse(&Schedule {
            renew_anchor_before: Some("30m".into()),
            maintenance_windows: vec![],
        })
        .unwrap_err();
        assert!(e.contains("renewAnchorBefore") && e.contains("1h"), "{e}");
        let ok = Parsed::parse(&Schedule {
            renew_anchor_before: Some("30d".into()),
            maintenance_windows: vec![],
        })
        .unwrap();
        assert_eq!(
            ok.renew_anchor_before,
            Some(Duration::from_secs(30 * 86_400))
        );
    }

    #[test]
    fn the_renewal_is_planned_once_per_anchor_and_only_inside_a_window() {
        let anchor = AnchorValidity {
            fingerprint: "aaaa".into(),
            not_before: t("2026-01-01T00:00:00Z"),
            not_after: t("2027-01-01T00:00:00Z"),
        };
        let before = Some(Duration::from_secs(720 * 3600));
        let now = t("2026-12-15T00:00:00Z");
        let open = WindowState::Always;
        let closed = WindowState::Closed {
            opens_at: t("2026-12-15T02:00:00Z"),
            local: "Tue 2026-12-15 03:00 Europe/Berlin".into(),
        };
        let Some(Ok(reason)) = plan_renewal(before, &anchor, &open, None, now) else {
            panic!("due and open: trigger")
        };
        assert!(reason.starts_with("scheduled renewal:"), "{reason}");
        let Some(Err(note)) = plan_renewal(before, &anchor, &closed, None, now) else {
            panic!("due and closed: wait")
        };
        assert_eq!(note.kind, NoteKind::AwaitingWindow);
        assert!(
            note.record
                .reason
                .contains("Tue 2026-12-15 03:00 Europe/Berlin")
                && note.record.triggered_at.is_none(),
            "{:?}",
            note.record
        );
        // Triggered for this anchor already (a restarted operator): nothing more.
        let done = ScheduledRenewalRecord {
            anchor: "aaaa".into(),
            triggered_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            reason: reason.clone(),
        };
        assert_eq!(plan_renewal(before, &anchor, &open, Some(&done), now), None);
        // A record of an older anchor does not count.
        let older = ScheduledRenewalRecord {
            anchor: "0000".into(),
            ..done
        };
        assert!(matches!(
            plan_renewal(before, &anchor, &open, Some(&older), now),
            Some(Ok(_))
        ));
        // Not due, or not configured: nothing.
        assert_eq!(
            plan_renewal(before, &anchor, &open, None, t("2026-06-01T00:00:00Z")),
            None
        );
        assert_eq!(plan_renewal(None, &anchor, &open, None, now), None);
    }

    #[test]
    fn the_anchor_is_due_when_less_validity_is_left() {
        let nb = t("2026-01-01T00:00:00Z");
        let na = t("2027-01-01T00:00:00Z");
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        assert_eq!(anchor_renewal(None, nb, na, nb), AnchorRenewal::Off);
        assert_eq!(
            anchor_renewal(h(720), nb, na, t("2026-06-01T00:00:00Z")),
            AnchorRenewal::NotDue {
                due_at: t("2026-12-02T00:00:00Z")
            }
        );
        let AnchorRenewal::Due { reason } =
            anchor_renewal(h(720), nb, na, t("2026-12-02T00:00:01Z"))
        else {
            panic!()
        };
        assert_eq!(
            anchor_renewal(h(720), nb, na, t("2026-12-20T00:00:00Z")),
            AnchorRenewal::Due {
                reason: reason.clone()
            },
            "the reason does not change while it waits"
        );
        assert!(
            reason.starts_with("scheduled renewal:") && reason.contains("renewAnchorBefore (30d)"),
            "{reason}"
        );
        // As long as the whole lifetime: nothing, and why.
        let AnchorRenewal::LongerThanLifetime { message } =
            anchor_renewal(h(8760), nb, na, t("2026-12-02T00:00:00Z"))
        else {
            panic!()
        };
        assert!(
            message.contains("renewAnchorBefore (365d)")
                && message.contains("lifetime (365d)")
                && message.contains("shorter than the anchor Certificate's duration"),
            "{message}"
        );
    }
}
