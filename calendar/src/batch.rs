//! Which batches are due on a date, after the closed-day policy of weekly and monthly batches.

use jiff::ToSpan;
use jiff::civil::{Date, Weekday};

use crate::calendar::Calendar;
use crate::config::{BatchConfig, BatchSchedule, ClosedDayPolicy, Tier};

/// One batch due on a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRun<'a> {
    pub batch: &'a BatchConfig,
    /// The date the schedule names (a weekly batch's weekday, a monthly batch's day).
    pub nominal: Date,
    /// The date it runs on: the nominal date, or the open day the closed-day policy chose.
    pub date: Date,
}

impl Calendar {
    /// Batches that run on `date`, in configured order. Daily batches run on every open day;
    /// weekly and monthly ones on their day, or as their closed-day policy says when it is closed,
    /// looking no further than their own period (7 days, 28 days).
    pub fn batch_runs(&self, date: Date) -> Vec<BatchRun<'_>> {
        self.batches
            .iter()
            .filter_map(|b| self.run_on(b, date))
            .collect()
    }

    /// Whether a batch (of this calendar or not: a JobSchedule entry is checked the same way)
    /// runs on `date`, after its closed-day policy.
    pub fn run_on<'a>(&self, batch: &'a BatchConfig, date: Date) -> Option<BatchRun<'a>> {
        let nominal = self
            .nominal_dates_near(batch, date)
            .into_iter()
            .find(|&n| self.effective_date(batch, n) == Some(date))?;
        Some(BatchRun {
            batch,
            nominal,
            date,
        })
    }

    /// Batches a node of `tier` runs on `date`.
    pub fn batch_runs_for(&self, tier: Tier, date: Date) -> Vec<BatchRun<'_>> {
        self.batch_runs(date)
            .into_iter()
            .filter(|r| r.batch.tiers.contains(&tier))
            .collect()
    }

    fn nominal_dates_near(&self, batch: &BatchConfig, date: Date) -> Vec<Date> {
        match batch.schedule {
            BatchSchedule::Daily => vec![date],
            BatchSchedule::Weekly => {
                let weekday: Weekday = batch.weekday.map_or(Weekday::Monday, Into::into);
                (-7..=7)
                    .filter_map(|i| date.checked_add(i.days()).ok())
                    .filter(|d| d.weekday() == weekday)
                    .collect()
            }
            BatchSchedule::Monthly => {
                let day = batch.day_of_month.unwrap_or(1) as i8;
                (-1..=1)
                    .filter_map(|m| date.first_of_month().checked_add(m.months()).ok())
                    .map(|first| {
                        first
                            .with()
                            .day(day.min(first.days_in_month()))
                            .build()
                            .unwrap_or(first)
                    })
                    .collect()
            }
        }
    }

    fn effective_date(&self, batch: &BatchConfig, nominal: Date) -> Option<Date> {
        if self.is_open(nominal) {
            return Some(nominal);
        }
        let reach: i32 = match batch.schedule {
            BatchSchedule::Daily => return None,
            BatchSchedule::Weekly => 6,
            BatchSchedule::Monthly => 27,
        };
        let step = match batch.closed_day_policy {
            ClosedDayPolicy::Skip => return None,
            ClosedDayPolicy::PreviousOpenDay => -1,
            ClosedDayPolicy::NextOpenDay => 1,
        };
        (1..=reach)
            .filter_map(|i| nominal.checked_add((i * step).days()).ok())
            .find(|d| self.is_open(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CalendarConfig, WeekdayName};
    use jiff::civil::date;

    fn calendar_with(batch: BatchConfig) -> Calendar {
        let config = CalendarConfig {
            batches: vec![BatchConfig::daily("statistics"), batch],
            ..CalendarConfig::default()
        };
        Calendar::new(&config).unwrap()
    }

    fn weekly(policy: ClosedDayPolicy) -> BatchConfig {
        BatchConfig {
            schedule: BatchSchedule::Weekly,
            weekday: Some(WeekdayName::Monday),
            closed_day_policy: policy,
            ..BatchConfig::daily("weekly")
        }
    }

    fn names(runs: &[BatchRun<'_>]) -> Vec<String> {
        runs.iter()
            .map(|r| format!("{}@{}", r.batch.name, r.nominal))
            .collect()
    }

    #[test]
    fn daily_batches_run_on_open_days_only() {
        let cal = calendar_with(weekly(ClosedDayPolicy::Skip));
        assert_eq!(
            names(&cal.batch_runs(date(2026, 11, 27))),
            ["statistics@2026-11-27"]
        );
        assert!(cal.batch_runs(date(2026, 11, 28)).is_empty());
    }

    #[test]
    fn a_weekly_batch_on_a_holiday_follows_its_policy() {
        // Monday 2026-11-23 is 勤労感謝の日.
        let skip = calendar_with(weekly(ClosedDayPolicy::Skip));
        assert!((17..=27).all(|d| {
            skip.batch_runs(date(2026, 11, d))
                .iter()
                .all(|r| r.batch.name != "weekly" || r.nominal != date(2026, 11, 23))
        }));
        let next = calendar_with(weekly(ClosedDayPolicy::NextOpenDay));
        assert_eq!(
            names(&next.batch_runs(date(2026, 11, 24))),
            ["statistics@2026-11-24", "weekly@2026-11-23"]
        );
        let previous = calendar_with(weekly(ClosedDayPolicy::PreviousOpenDay));
        assert_eq!(
            names(&previous.batch_runs(date(2026, 11, 20))),
            ["statistics@2026-11-20", "weekly@2026-11-23"]
        );
        assert_eq!(
            names(&previous.batch_runs(date(2026, 11, 30))),
            ["statistics@2026-11-30", "weekly@2026-11-30"]
        );
    }

    #[test]
    fn a_monthly_batch_on_the_31st_runs_on_the_last_day_of_short_months() {
        let monthly = BatchConfig {
            schedule: BatchSchedule::Monthly,
            day_of_month: Some(31),
            closed_day_policy: ClosedDayPolicy::PreviousOpenDay,
            ..BatchConfig::daily("monthly")
        };
        let cal = calendar_with(monthly);
        // 2026-02-28 is a Saturday: the run moves to Friday the 27th.
        assert_eq!(
            names(&cal.batch_runs(date(2026, 2, 27))),
            ["statistics@2026-02-27", "monthly@2026-02-28"]
        );
        assert_eq!(
            names(&cal.batch_runs(date(2026, 3, 31))),
            ["statistics@2026-03-31", "monthly@2026-03-31"]
        );
    }

    #[test]
    fn batches_can_be_limited_to_tiers() {
        let national_only = BatchConfig {
            tiers: vec![Tier::National],
            ..BatchConfig::daily("audit")
        };
        let cal = calendar_with(national_only);
        assert_eq!(
            cal.batch_runs_for(Tier::National, date(2026, 11, 27)).len(),
            2
        );
        assert_eq!(cal.batch_runs_for(Tier::Cs, date(2026, 11, 27)).len(), 1);
    }
}
