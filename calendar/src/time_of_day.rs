//! A time on an operating day, "HH:MM", where the hour may run past midnight up to 29:59
//! (the business-day boundary of enterprise job schedulers): 25:30 is 01:30 the next morning,
//! still counted to the operating day it started on.

use std::fmt;

/// Minutes since the operating day's midnight, 0 (00:00) to 1799 (29:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

/// The latest time an operating day can reach: 29:59.
pub const MAX_HOUR: u16 = 29;

impl TimeOfDay {
    /// Builds a time from hours (0–29) and minutes (0–59).
    pub const fn hm(hours: u16, minutes: u16) -> Option<TimeOfDay> {
        if hours <= MAX_HOUR && minutes < 60 {
            Some(TimeOfDay(hours * 60 + minutes))
        } else {
            None
        }
    }

    /// Parses "HH:MM" (two digits each; hours 00–29, minutes 00–59).
    pub fn parse(text: &str) -> Result<TimeOfDay, String> {
        let b = text.as_bytes();
        let two = |i: usize| -> Option<u16> {
            let (h, l) = (b[i], b[i + 1]);
            (h.is_ascii_digit() && l.is_ascii_digit())
                .then(|| u16::from(h - b'0') * 10 + u16::from(l - b'0'))
        };
        let parsed = if b.len() == 5 && b[2] == b':' {
            two(0).zip(two(3))
        } else {
            None
        };
        let (h, m) = parsed.ok_or_else(|| format!("{text:?} is not a time of the form HH:MM"))?;
        TimeOfDay::hm(h, m).ok_or_else(|| format!("{text:?} is out of range (00:00 to 29:59)"))
    }

    /// Minutes since the operating day's midnight.
    pub const fn minutes(self) -> u16 {
        self.0
    }

    /// Whole days past the operating date (0 or 1) and the wall-clock hour and minute then.
    pub const fn split(self) -> (i8, i8, i8) {
        let days = (self.0 / 1440) as i8;
        let rest = self.0 % 1440;
        (days, (rest / 60) as i8, (rest % 60) as i8)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_times_past_midnight_up_to_29_59() {
        assert_eq!(TimeOfDay::parse("08:30").unwrap().minutes(), 510);
        assert_eq!(TimeOfDay::parse("25:30").unwrap().split(), (1, 1, 30));
        assert_eq!(TimeOfDay::parse("29:59").unwrap().to_string(), "29:59");
    }

    #[test]
    fn rejects_malformed_and_out_of_range_times() {
        for bad in [
            "8:30", "08:3", "08-30", "30:00", "12:60", "", "ab:cd", "08:30:00",
        ] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
        assert!(
            TimeOfDay::parse("30:00")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(TimeOfDay::parse("8:30").unwrap_err().contains("HH:MM"));
    }
}
