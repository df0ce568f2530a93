//! The one time source. Handlers ask the clock; the pure code is given "now"/"today".

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{TimeZone, offset};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Today's date in Japan (Asia/Tokyo is UTC+9 all year, no daylight saving).
    fn today(&self) -> Date {
        self.now().to_zoned(TimeZone::fixed(offset(9))).date()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock stopped at one instant (tests, demos).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// The operator's clock, shared: at the real instant `real` it showed `shown`, and it runs
/// `factor` times faster than real time (0: stopped). The operator on a fast clock (a demo, a
/// test of a whole night) renders it into its nodes' configuration as
/// `fast:SHOWN@REAL,xFACTOR`, so that a node judges its online windows as the operator does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedClock {
    shown: Timestamp,
    real: Timestamp,
    factor: f64,
}

impl SharedClock {
    /// Parses `real` (None: the system clock) or `fast:SHOWN@REAL,xFACTOR` (RFC 3339 instants,
    /// a factor from 0 to 100000).
    pub fn parse(spec: &str) -> Result<Option<SharedClock>, String> {
        let spec = spec.trim();
        if spec == "real" {
            return Ok(None);
        }
        let rule = "expected `real` or `fast:SHOWN@REAL,xFACTOR` (RFC 3339 instants)";
        let fast = spec
            .strip_prefix("fast:")
            .ok_or_else(|| format!("{spec:?}: {rule}"))?;
        let (instants, factor) = fast
            .split_once(",x")
            .ok_or_else(|| format!("{spec:?}: {rule}"))?;
        let (shown, real) = instants
            .split_once('@')
            .ok_or_else(|| format!("{spec:?}: {rule}"))?;
        let instant = |text: &str| {
            text.parse::<Timestamp>()
                .map_err(|e| format!("{spec:?}: {text:?} is not an RFC 3339 instant: {e}"))
        };
        let factor: f64 = factor
            .parse()
            .ok()
            .filter(|f: &f64| (0.0..=100_000.0).contains(f))
            .ok_or_else(|| {
                format!("{spec:?}: the factor {factor:?} is not a number from 0 to 100000")
            })?;
        Ok(Some(SharedClock {
            shown: instant(shown)?,
            real: instant(real)?,
            factor,
        }))
    }

    /// What the clock shows at the real instant `real_now`.
    pub fn at(&self, real_now: Timestamp) -> Timestamp {
        let elapsed = real_now.duration_since(self.real).as_secs_f64() * self.factor;
        self.shown
            .checked_add(jiff::SignedDuration::from_secs_f64(elapsed))
            .unwrap_or(self.shown)
    }
}

impl Clock for SharedClock {
    fn now(&self) -> Timestamp {
        self.at(Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_clock_runs_from_the_operators_instant_at_its_factor() {
        let clock = SharedClock::parse("fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x300")
            .unwrap()
            .unwrap();
        let real = |t: &str| t.parse::<Timestamp>().unwrap();
        assert_eq!(
            clock.at(real("2026-12-06T05:00:00Z")),
            real("2026-11-25T01:00:00Z")
        );
        // 12 real seconds are an hour at ×300.
        assert_eq!(
            clock.at(real("2026-12-06T05:00:12Z")),
            real("2026-11-25T02:00:00Z")
        );
        let stopped = SharedClock::parse("fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x0")
            .unwrap()
            .unwrap();
        assert_eq!(
            stopped.at(real("2026-12-07T00:00:00Z")),
            real("2026-11-25T01:00:00Z")
        );
        assert_eq!(SharedClock::parse("real").unwrap(), None);
        for bad in [
            "fast",
            "fast:2026-11-25T01:00:00Z,x300",
            "fast:yesterday@2026-12-06T05:00:00Z,x300",
            "fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x-1",
            "fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,xmany",
        ] {
            assert!(SharedClock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn today_is_the_japanese_date() {
        let clock = FixedClock("2024-03-31T15:30:00Z".parse().unwrap());
        assert_eq!(clock.today(), jiff::civil::date(2024, 4, 1));
    }
}
