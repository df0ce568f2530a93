//! Service levels in business hours. The call center works in the municipalities' and
//! prefectures' business hours: the window-service hours (default 09:00–17:00) of the open days
//! of the OperatingCalendar (weekends, national holidays and Dec 29 – Jan 3 closed). The time to
//! first answer counts only those hours.

use jiff::{SignedDuration, Timestamp};
use juki_calendar::Calendar;
use serde::Serialize;

/// The most days one computation walks (a ticket open for longer counts as breached anyway).
const MAX_DAYS: i32 = 3660;

/// Business time between `from` and `to` (zero when `to` is not after `from`).
pub fn business_time(cal: &Calendar, from: Timestamp, to: Timestamp) -> SignedDuration {
    if to <= from {
        return SignedDuration::ZERO;
    }
    let mut total = SignedDuration::ZERO;
    let mut date = cal.date_of(from);
    let last = cal.date_of(to);
    for _ in 0..MAX_DAYS {
        if let Some(w) = cal.window_service(date) {
            let start = w.start.max(from);
            let end = w.end.min(to);
            if end > start {
                total += end.duration_since(start);
            }
        }
        if date >= last {
            break;
        }
        let Ok(next) = date.tomorrow() else { break };
        date = next;
    }
    total
}

/// The instant at which `amount` of business time has passed since `from`; None when the
/// calendar has no such instant within ten years.
pub fn add_business_time(
    cal: &Calendar,
    from: Timestamp,
    amount: SignedDuration,
) -> Option<Timestamp> {
    let mut left = amount;
    let mut date = cal.date_of(from);
    for _ in 0..MAX_DAYS {
        if let Some(w) = cal.window_service(date) {
            let start = w.start.max(from);
            if w.end > start {
                let here = w.end.duration_since(start);
                if here >= left {
                    return start.checked_add(left).ok();
                }
                left -= here;
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// Where a ticket stands against its first-answer target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaStatus {
    /// Answered within the target.
    Met,
    /// Answered after the target.
    Missed,
    /// Not answered, with time to spare.
    Ok,
    /// Not answered, and less than the warning share of the target is left.
    Near,
    /// Not answered, and the target has passed.
    Breached,
}

impl SlaStatus {
    pub fn label(self) -> &'static str {
        match self {
            SlaStatus::Met => "目標内に回答",
            SlaStatus::Missed => "目標超過で回答",
            SlaStatus::Ok => "余裕あり",
            SlaStatus::Near => "期限間近",
            SlaStatus::Breached => "期限超過",
        }
    }
}

/// The first-answer target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Business time to the first answer.
    pub target: SignedDuration,
    /// Flag a ticket once less than this much business time is left.
    pub warn_before: SignedDuration,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        SlaPolicy {
            target: SignedDuration::from_hours(4),
            warn_before: SignedDuration::from_hours(1),
        }
    }
}

/// A ticket's service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sla {
    pub status: SlaStatus,
    /// Business seconds used so far (to the first answer, or to now).
    pub business_seconds: i64,
    /// Business seconds left (negative once breached; absent once answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<i64>,
    /// When the target falls (wall-clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
}

impl SlaPolicy {
    pub fn evaluate(
        &self,
        cal: &Calendar,
        received: Timestamp,
        first_answer: Option<Timestamp>,
        now: Timestamp,
    ) -> Sla {
        let due_at = add_business_time(cal, received, self.target);
        match first_answer {
            Some(at) => {
                let used = business_time(cal, received, at);
                Sla {
                    status: if used <= self.target {
                        SlaStatus::Met
                    } else {
                        SlaStatus::Missed
                    },
                    business_seconds: used.as_secs(),
                    remaining_seconds: None,
                    due_at,
                }
            }
            None => {
                let used = business_time(cal, received, now);
                let left = self.target - used;
                let status = if left <= SignedDuration::ZERO {
                    SlaStatus::Breached
                } else if left <= self.warn_before {
                    SlaStatus::Near
                } else {
                    SlaStatus::Ok
                };
                Sla {
                    status,
                    business_seconds: used.as_secs(),
                    remaining_seconds: Some(left.as_secs()),
                    due_at,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::CalendarConfig;

    fn cal() -> Calendar {
        Calendar::new(&CalendarConfig::default()).unwrap()
    }

    fn tokyo(s: &str) -> Timestamp {
        format!("{s}:00+09:00[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn hours(h: f64) -> SignedDuration {
        SignedDuration::from_secs_f64(h * 3600.0)
    }

    #[test]
    fn business_hours_skip_nights_and_weekends() {
        let cal = cal();
        // Friday 2026-11-27 16:00 → Monday 11-30 10:00: 1 h Friday + 1 h Monday.
        assert_eq!(
            business_time(&cal, tokyo("2026-11-27T16:00"), tokyo("2026-11-30T10:00")),
            hours(2.0)
        );
        // Filed on a Saturday, answered Monday 09:30: half an hour.
        assert_eq!(
            business_time(&cal, tokyo("2026-11-28T11:00"), tokyo("2026-11-30T09:30")),
            hours(0.5)
        );
        // Within one day, and before opening.
        assert_eq!(
            business_time(&cal, tokyo("2026-11-26T07:00"), tokyo("2026-11-26T09:45")),
            hours(0.75)
        );
        assert_eq!(
            business_time(&cal, tokyo("2026-11-26T12:00"), tokyo("2026-11-26T11:00")),
            SignedDuration::ZERO
        );
    }

    #[test]
    fn business_hours_skip_national_holidays() {
        let cal = cal();
        // Monday 2026-11-23 is 勤労感謝の日: Friday 16:00 → Tuesday 10:00 is 2 h.
        assert_eq!(
            business_time(&cal, tokyo("2026-11-20T16:00"), tokyo("2026-11-24T10:00")),
            hours(2.0)
        );
        // Due time of a 4 h target filed Friday 15:00: 2 h Friday, then Tuesday 11:00.
        assert_eq!(
            add_business_time(&cal, tokyo("2026-11-20T15:00"), hours(4.0)),
            Some(tokyo("2026-11-24T11:00"))
        );
    }

    #[test]
    fn business_hours_skip_the_year_end_closure() {
        let cal = cal();
        // Monday 2026-12-28 16:00 → Monday 2027-01-04 10:00 (Dec 29 – Jan 3 closed): 2 h.
        assert_eq!(
            business_time(&cal, tokyo("2026-12-28T16:00"), tokyo("2027-01-04T10:00")),
            hours(2.0)
        );
        assert_eq!(
            add_business_time(&cal, tokyo("2026-12-28T16:30"), hours(1.0)),
            Some(tokyo("2027-01-04T09:30"))
        );
    }

    #[test]
    fn tickets_near_their_target_are_flagged() {
        let cal = cal();
        let p = SlaPolicy::default();
        let filed = tokyo("2026-11-26T09:00");
        let at = |s| p.evaluate(&cal, filed, None, tokyo(s));
        assert_eq!(at("2026-11-26T11:00").status, SlaStatus::Ok);
        assert_eq!(at("2026-11-26T12:30").status, SlaStatus::Near);
        assert_eq!(at("2026-11-26T13:00").status, SlaStatus::Breached);
        // Filed Friday 16:30: by Monday 09:00 only 30 min used.
        let friday = tokyo("2026-11-27T16:30");
        let s = p.evaluate(&cal, friday, None, tokyo("2026-11-30T09:00"));
        assert_eq!(
            (s.status, s.remaining_seconds),
            (SlaStatus::Ok, Some(3 * 3600 + 1800))
        );
        let answered = p.evaluate(
            &cal,
            filed,
            Some(tokyo("2026-11-26T14:00")),
            tokyo("2026-11-27T09:00"),
        );
        assert_eq!(answered.status, SlaStatus::Missed);
    }
}
