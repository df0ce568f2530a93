//! The instants at which windows open and close, in order.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};

use crate::calendar::{Calendar, DailyWindow};
use crate::config::Tier;

/// Whose window a transition belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A tier's online window; for the Prefecture tier, optionally one prefecture's.
    Online(Tier, Option<u8>),
    /// The nationwide window-service hours.
    WindowService,
}

/// Whether a window opens or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    Open,
    Close,
}

/// One window opening or closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at: Timestamp,
    /// The operating date the window belongs to (a close past midnight keeps its start date).
    pub date: Date,
    pub scope: Scope,
    pub kind: TransitionKind,
}

impl Transition {
    /// Order of transitions at the same instant: opens top-down, closes bottom-up, so that a
    /// simultaneous start or stop still follows the dependency order.
    fn rank(&self) -> (Timestamp, u8) {
        let depth = match self.scope {
            Scope::Online(tier, _) => tier as u8,
            Scope::WindowService => 3,
        };
        match self.kind {
            TransitionKind::Close => (self.at, 3 - depth),
            TransitionKind::Open => (self.at, 4 + depth),
        }
    }
}

/// How far ahead [`Calendar::next_transition`] looks before giving up (no open day at all).
const HORIZON_DAYS: i32 = 3 * 366;

impl Calendar {
    fn scope_window(&self, scope: Scope) -> DailyWindow {
        match scope {
            Scope::Online(tier, prefecture) => self.daily_window(tier, prefecture),
            Scope::WindowService => self.daily_window_service(),
        }
    }

    /// Transitions of one operating date, unsorted.
    fn transitions_of(&self, date: Date, scopes: &[Scope]) -> Vec<Transition> {
        if !self.is_open(date) {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(scopes.len() * 2);
        for &scope in scopes {
            let w = self.scope_window(scope);
            // A window whose instants jiff cannot express (the year 9999) has no transitions.
            let (Some(open), Some(close)) = (
                self.checked_instant(date, w.start),
                self.checked_instant(date, w.end),
            ) else {
                continue;
            };
            out.push(Transition {
                at: open,
                date,
                scope,
                kind: TransitionKind::Open,
            });
            out.push(Transition {
                at: close,
                date,
                scope,
                kind: TransitionKind::Close,
            });
        }
        out
    }

    /// Every transition of the scopes with `from <= at < to`, in order (see [`Transition`]).
    pub fn transitions<'a>(
        &'a self,
        from: Timestamp,
        to: Timestamp,
        scopes: &'a [Scope],
    ) -> Transitions<'a> {
        // A window that passes midnight can close on the day after its operating date.
        let first = self.date_of(from).yesterday().unwrap_or(self.date_of(from));
        Transitions {
            calendar: self,
            scopes,
            next_date: Some(first),
            last_date: self.date_of(to),
            from,
            to,
            ready: Vec::new(),
        }
    }

    /// The first transition of the scopes strictly after `at`, within about three years.
    pub fn next_transition(&self, at: Timestamp, scopes: &[Scope]) -> Option<Transition> {
        let horizon = at.checked_add((HORIZON_DAYS * 24).hours()).ok()?;
        let after = at.checked_add(1.nanosecond()).ok()?;
        self.transitions(after, horizon, scopes).next()
    }
}

/// Iterator returned by [`Calendar::transitions`]. Generates one operating date at a time.
#[derive(Debug)]
pub struct Transitions<'a> {
    calendar: &'a Calendar,
    scopes: &'a [Scope],
    next_date: Option<Date>,
    last_date: Date,
    from: Timestamp,
    to: Timestamp,
    /// Generated but not yet emitted, sorted in reverse so `pop` yields the earliest.
    ready: Vec<Transition>,
}

impl Iterator for Transitions<'_> {
    type Item = Transition;

    fn next(&mut self) -> Option<Transition> {
        loop {
            // Transitions of later dates are all at or after that date's midnight; whatever is
            // buffered before it is final.
            let horizon = self.next_date.map(|d| {
                self.calendar
                    .instant(d, crate::TimeOfDay::hm(0, 0).unwrap())
            });
            if let Some(t) = self.ready.last()
                && horizon.is_none_or(|h| t.at < h)
            {
                return self.ready.pop();
            }
            let date = self.next_date?;
            self.next_date = if date < self.last_date {
                date.checked_add(1.day()).ok()
            } else {
                None
            };
            let (from, to) = (self.from, self.to);
            self.ready.extend(
                self.calendar
                    .transitions_of(date, self.scopes)
                    .into_iter()
                    .filter(|t| from <= t.at && t.at < to),
            );
            self.ready.sort_by_key(|t| std::cmp::Reverse(t.rank()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CalendarConfig;

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    const TIERS: [Scope; 3] = [
        Scope::Online(Tier::National, None),
        Scope::Online(Tier::Prefecture, None),
        Scope::Online(Tier::Cs, None),
    ];

    #[test]
    fn a_weekday_opens_top_down_and_closes_bottom_up() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let day: Vec<(String, Scope, TransitionKind)> = cal
            .transitions(tokyo("2026-11-27T00:00"), tokyo("2026-11-28T00:00"), &TIERS)
            .map(|t| {
                (
                    t.at.to_zoned(cal.time_zone().clone())
                        .strftime("%H:%M")
                        .to_string(),
                    t.scope,
                    t.kind,
                )
            })
            .collect();
        use TransitionKind::*;
        assert_eq!(
            day,
            vec![
                ("07:00".into(), TIERS[0], Open),
                ("07:30".into(), TIERS[1], Open),
                ("08:00".into(), TIERS[2], Open),
                ("21:00".into(), TIERS[2], Close),
                ("21:30".into(), TIERS[1], Close),
                ("22:00".into(), TIERS[0], Close),
            ]
        );
    }

    #[test]
    fn the_next_transition_skips_weekends_and_the_year_end() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let next = cal
            .next_transition(tokyo("2026-12-28T22:00"), &TIERS)
            .unwrap();
        assert_eq!(next.at, tokyo("2027-01-04T07:00"));
        assert_eq!((next.scope, next.kind), (TIERS[0], TransitionKind::Open));
        // Strictly after: asking at the instant itself gives the following one.
        assert_eq!(
            cal.next_transition(next.at, &TIERS).unwrap().at,
            tokyo("2027-01-04T07:30")
        );
    }

    #[test]
    fn a_close_past_midnight_is_found_from_the_next_day() {
        let mut config = CalendarConfig::default();
        config.online_windows.national.end = "25:00".into();
        let cal = Calendar::new(&config).unwrap();
        let next = cal
            .next_transition(tokyo("2026-11-28T00:30"), &TIERS[..1])
            .unwrap();
        assert_eq!(
            (next.at, next.date, next.kind),
            (
                tokyo("2026-11-28T01:00"),
                jiff::civil::date(2026, 11, 27),
                TransitionKind::Close
            )
        );
    }
}
