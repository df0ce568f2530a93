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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_the_japanese_date() {
        let clock = FixedClock("2024-03-31T15:30:00Z".parse().unwrap());
        assert_eq!(clock.today(), jiff::civil::date(2024, 4, 1));
    }
}
