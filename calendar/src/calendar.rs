//! The compiled operating calendar and its queries: open days, online windows, window services.

use std::collections::BTreeMap;
use std::fmt;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::config::{BatchConfig, CalendarConfig, Tier};
use crate::holidays::{self, Holiday};
use crate::time_of_day::TimeOfDay;
use crate::validate::{self, ValidationErrors};

/// A month and day, as in a recurring closed period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MonthDay {
    pub month: i8,
    pub day: i8,
}

/// A window on an operating day, in operating-day times (the end may pass midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.start, self.end)
    }
}

/// A window as instants: open from `start` (inclusive) to `end` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The operating date the window belongs to.
    pub date: Date,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// Whether the instant is inside the window.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// Why a day is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosedReason {
    /// A closed weekday (by default Saturday and Sunday).
    Weekday(Weekday),
    /// A national holiday.
    Holiday(Holiday),
    /// A recurring closed period, by its name (e.g. "year-end closure").
    Period(String),
    /// A one-off closed date, with its reason.
    ExtraClosed(String),
}

impl fmt::Display for ClosedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClosedReason::Weekday(w) => write!(f, "{w:?}"),
            ClosedReason::Holiday(h) => write!(f, "{} ({})", h.name_ja, h.name_en),
            ClosedReason::Period(name) => f.write_str(name),
            ClosedReason::ExtraClosed(reason) if reason.is_empty() => {
                f.write_str("extra closed date")
            }
            ClosedReason::ExtraClosed(reason) => write!(f, "extra closed date: {reason}"),
        }
    }
}

/// Whether a date is an operating day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayStatus {
    Open,
    /// Closed, with every reason that applies (a holiday can also fall on a Sunday).
    Closed(Vec<ClosedReason>),
}

impl DayStatus {
    pub fn is_open(&self) -> bool {
        matches!(self, DayStatus::Open)
    }
}

impl fmt::Display for DayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DayStatus::Open => f.write_str("open"),
            DayStatus::Closed(reasons) => {
                let parts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                write!(f, "closed: {}", parts.join(", "))
            }
        }
    }
}

/// A validated operating calendar. Build it with [`Calendar::new`].
#[derive(Debug, Clone)]
pub struct Calendar {
    pub(crate) tz: TimeZone,
    pub(crate) closed_weekdays: [bool; 7],
    pub(crate) national_holidays: bool,
    pub(crate) closed_periods: Vec<(MonthDay, MonthDay, String)>,
    pub(crate) extra_closed: BTreeMap<Date, String>,
    pub(crate) extra_open: BTreeMap<Date, String>,
    /// Online windows by tier, in [`Tier::ALL`] order.
    pub(crate) windows: [DailyWindow; 3],
    pub(crate) prefecture_ends: BTreeMap<u8, TimeOfDay>,
    pub(crate) window_service: DailyWindow,
    pub(crate) batches: Vec<BatchConfig>,
}

impl Calendar {
    /// Validates a configuration; the error lists every mistake with its field.
    pub fn new(config: &CalendarConfig) -> Result<Calendar, ValidationErrors> {
        validate::compile(config)
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The batches, in run order.
    pub fn batches(&self) -> &[BatchConfig] {
        &self.batches
    }

    /// Whether a date is open and, if not, why.
    pub fn day_status(&self, date: Date) -> DayStatus {
        if self.extra_open.contains_key(&date) {
            return DayStatus::Open;
        }
        let mut reasons = Vec::new();
        if self.closed_weekdays[date.weekday().to_monday_zero_offset() as usize] {
            reasons.push(ClosedReason::Weekday(date.weekday()));
        }
        if self.national_holidays
            && let Some(h) = holidays::holiday_on(date)
        {
            reasons.push(ClosedReason::Holiday(h));
        }
        let md = MonthDay {
            month: date.month(),
            day: date.day(),
        };
        for (from, to, name) in &self.closed_periods {
            let inside = if from <= to {
                *from <= md && md <= *to
            } else {
                *from <= md || md <= *to
            };
            if inside {
                reasons.push(ClosedReason::Period(name.clone()));
            }
        }
        if let Some(reason) = self.extra_closed.get(&date) {
            reasons.push(ClosedReason::ExtraClosed(reason.clone()));
        }
        if reasons.is_empty() {
            DayStatus::Open
        } else {
            DayStatus::Closed(reasons)
        }
    }

    /// Whether a date is an operating day.
    pub fn is_open(&self, date: Date) -> bool {
        self.day_status(date).is_open()
    }

    /// The first open day on or after `date`, looking at most `limit_days` ahead.
    pub fn next_open_day(&self, date: Date, limit_days: i32) -> Option<Date> {
        (0..=limit_days)
            .filter_map(|i| date.checked_add(i.days()).ok())
            .find(|d| self.is_open(*d))
    }

    /// The daily online window of a tier, in operating-day times. For the Prefecture tier, the
    /// prefecture's own end applies when `prefecture` is given and has one.
    pub fn daily_window(&self, tier: Tier, prefecture: Option<u8>) -> DailyWindow {
        let base = self.windows[tier as usize];
        match (tier, prefecture.and_then(|p| self.prefecture_ends.get(&p))) {
            (Tier::Prefecture, Some(end)) => DailyWindow {
                start: base.start,
                end: *end,
            },
            _ => base,
        }
    }

    /// Prefectures with their own online end, in code order.
    pub fn prefecture_online_ends(&self) -> impl Iterator<Item = (u8, TimeOfDay)> + '_ {
        self.prefecture_ends.iter().map(|(&p, &end)| (p, end))
    }

    /// The daily window-service hours.
    pub fn daily_window_service(&self) -> DailyWindow {
        self.window_service
    }

    /// Instant of an operating-day time on a date, in the calendar's zone. Times past 24:00 fall
    /// on the next calendar day; a time skipped by a DST gap moves forward (RFC 5545 rules).
    /// `None` when the instant lies outside jiff's range (dates near the years -9999 and 9999,
    /// which a resource can name: a ServiceExtension dated 9999-12-31).
    pub fn checked_instant(&self, date: Date, time: TimeOfDay) -> Option<Timestamp> {
        let (days, hour, minute) = time.split();
        let day = date.checked_add(i32::from(days).days()).ok()?;
        self.tz.to_timestamp(day.at(hour, minute, 0, 0)).ok()
    }

    /// [`Calendar::checked_instant`], saturating at the ends of jiff's range instead of failing:
    /// never panics, whatever the date. Windows use the checked form (a date whose window cannot
    /// be expressed has none).
    pub fn instant(&self, date: Date, time: TimeOfDay) -> Timestamp {
        self.checked_instant(date, time)
            .unwrap_or(if date.year() < 0 {
                Timestamp::MIN
            } else {
                Timestamp::MAX
            })
    }

    /// The calendar date an instant falls on, in the calendar's zone.
    pub fn date_of(&self, at: Timestamp) -> Date {
        at.to_zoned(self.tz.clone()).date()
    }

    /// The window of an open date; `None` on a closed day, or when the window's instants lie
    /// outside jiff's range.
    fn window_on(&self, date: Date, daily: DailyWindow) -> Option<Window> {
        if !self.is_open(date) {
            return None;
        }
        Some(Window {
            date,
            start: self.checked_instant(date, daily.start)?,
            end: self.checked_instant(date, daily.end)?,
        })
    }

    /// The online window of a tier (and prefecture) on a date; `None` on a closed day.
    pub fn online_window(&self, tier: Tier, prefecture: Option<u8>, date: Date) -> Option<Window> {
        self.window_on(date, self.daily_window(tier, prefecture))
    }

    /// The window-service hours on a date; `None` on a closed day.
    pub fn window_service(&self, date: Date) -> Option<Window> {
        self.window_on(date, self.window_service)
    }

    /// The online window of a tier that contains the instant, if any. A window can pass
    /// midnight, so the previous operating date is checked too.
    pub fn online_window_at(
        &self,
        tier: Tier,
        prefecture: Option<u8>,
        at: Timestamp,
    ) -> Option<Window> {
        self.window_containing(at, self.daily_window(tier, prefecture))
    }

    /// Whether a tier (and prefecture) is inside its online window at an instant.
    pub fn in_online_window(&self, tier: Tier, prefecture: Option<u8>, at: Timestamp) -> bool {
        self.online_window_at(tier, prefecture, at).is_some()
    }

    /// Whether an instant is inside the window-service hours.
    pub fn in_window_service(&self, at: Timestamp) -> bool {
        self.window_containing(at, self.window_service).is_some()
    }

    fn window_containing(&self, at: Timestamp, daily: DailyWindow) -> Option<Window> {
        let today = self.date_of(at);
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| self.window_on(d, daily))
            .find(|w| w.contains(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatedReason, PrefectureOnlineEnd};
    use jiff::civil::date;

    fn japan() -> Calendar {
        Calendar::new(&CalendarConfig::default()).unwrap()
    }

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    #[test]
    fn closed_days_say_why() {
        let cal = japan();
        assert_eq!(cal.day_status(date(2026, 11, 27)), DayStatus::Open);
        assert_eq!(
            cal.day_status(date(2026, 11, 28)).to_string(),
            "closed: Saturday"
        );
        assert_eq!(
            cal.day_status(date(2026, 11, 3)).to_string(),
            "closed: 文化の日 (Culture Day)"
        );
        assert_eq!(
            cal.day_status(date(2026, 12, 29)).to_string(),
            "closed: year-end closure"
        );
        // Jan 1 2027 is a Friday: both the holiday and the year-end closure apply.
        assert_eq!(
            cal.day_status(date(2027, 1, 1)).to_string(),
            "closed: 元日 (New Year's Day), year-end closure"
        );
        assert!(cal.is_open(date(2027, 1, 4)));
    }

    #[test]
    fn extra_open_dates_override_every_closing_rule() {
        let config = CalendarConfig {
            extra_open_dates: vec![DatedReason {
                date: "2026-12-29".into(),
                reason: "system migration".into(),
            }],
            extra_closed_dates: vec![DatedReason {
                date: "2026-11-27".into(),
                reason: "maintenance".into(),
            }],
            ..CalendarConfig::default()
        };
        let cal = Calendar::new(&config).unwrap();
        assert!(cal.is_open(date(2026, 12, 29)));
        assert_eq!(
            cal.day_status(date(2026, 11, 27)).to_string(),
            "closed: extra closed date: maintenance"
        );
    }

    #[test]
    fn windows_passing_midnight_belong_to_the_day_they_start() {
        let config = CalendarConfig {
            online_windows: crate::config::TierWindows {
                national: crate::config::WindowConfig {
                    start: "06:00".into(),
                    end: "26:30".into(),
                },
                ..Default::default()
            },
            ..CalendarConfig::default()
        };
        let cal = Calendar::new(&config).unwrap();
        // Friday's national window runs into Saturday morning.
        let w = cal
            .online_window_at(Tier::National, None, tokyo("2026-11-28T01:00"))
            .unwrap();
        assert_eq!(w.date, date(2026, 11, 27));
        assert_eq!(w.end, tokyo("2026-11-28T02:30"));
        assert!(!cal.in_online_window(Tier::National, None, tokyo("2026-11-28T02:30")));
        assert!(!cal.in_online_window(Tier::National, None, tokyo("2026-11-28T07:00")));
    }

    #[test]
    fn a_prefecture_end_applies_only_to_that_prefecture() {
        let config = CalendarConfig {
            prefecture_online_ends: vec![PrefectureOnlineEnd {
                prefecture: "13".into(),
                online_end: "21:45".into(),
            }],
            ..CalendarConfig::default()
        };
        let cal = Calendar::new(&config).unwrap();
        let at = tokyo("2026-11-27T21:40");
        assert!(cal.in_online_window(Tier::Prefecture, Some(13), at));
        assert!(!cal.in_online_window(Tier::Prefecture, Some(1), at));
        assert!(!cal.in_online_window(Tier::Prefecture, None, at));
        assert!(cal.in_online_window(Tier::National, None, at));
    }

    #[test]
    fn window_services_follow_the_nationwide_hours_on_open_days() {
        let cal = japan();
        assert!(cal.in_window_service(tokyo("2026-11-27T09:00")));
        assert!(!cal.in_window_service(tokyo("2026-11-27T17:00")));
        assert!(!cal.in_window_service(tokyo("2026-11-28T10:00")));
    }
}
