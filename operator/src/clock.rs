//! The one time source of the operator. `--clock real | fixed:INSTANT | fast:INSTANT,xFACTOR`:
//! a fast clock starts at INSTANT when the process starts and runs FACTOR times faster, so a
//! demo or a test can run an operating day in seconds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

/// What time it is for the planner, and how long to really wait for a clock instant.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
    /// Clock seconds per real second (1 for the real clock, 0 for a fixed one).
    fn factor(&self) -> f64;

    /// The real time until the clock shows `at` (zero when it already has; one hour for a fixed
    /// clock, which never gets there).
    fn real_until(&self, at: Timestamp) -> Duration {
        let ahead = at.duration_since(self.now());
        if ahead <= SignedDuration::ZERO {
            return Duration::ZERO;
        }
        let factor = self.factor();
        if factor <= 0.0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64(ahead.as_secs_f64() / factor)
    }

    /// A real duration expressed in clock time (a timeout measured in real seconds).
    fn clock_duration(&self, real: Duration) -> SignedDuration {
        SignedDuration::from_secs_f64(real.as_secs_f64() * self.factor().max(1.0))
    }

    /// What the clock showed at a real instant (the API server stamps objects in real time).
    fn clock_time_of(&self, real: Timestamp) -> Timestamp {
        real
    }

    /// This clock for the node services, `fast:SHOWN@REAL,xFACTOR` (juki-node's `clock`),
    /// when it is not the real one.
    fn shared(&self) -> Option<String> {
        None
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn factor(&self) -> f64 {
        1.0
    }
}

/// A clock that always shows the same instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
    fn factor(&self) -> f64 {
        0.0
    }
    fn shared(&self) -> Option<String> {
        Some(format!("fast:{}@{},x0", self.0, self.0))
    }
}

/// A clock that starts at an instant and runs `factor` times faster than real time.
#[derive(Debug, Clone, Copy)]
pub struct FastClock {
    start: Timestamp,
    started: Instant,
    /// The real instant of `started`, to read the API server's timestamps.
    real_start: Timestamp,
    factor: f64,
}

impl FastClock {
    pub fn new(start: Timestamp, factor: f64) -> FastClock {
        FastClock {
            start,
            started: Instant::now(),
            real_start: Timestamp::now(),
            factor,
        }
    }
}

impl Clock for FastClock {
    fn now(&self) -> Timestamp {
        let elapsed =
            SignedDuration::from_secs_f64(self.started.elapsed().as_secs_f64() * self.factor);
        self.start.saturating_add(elapsed).unwrap_or(self.start)
    }
    fn factor(&self) -> f64 {
        self.factor
    }
    fn clock_time_of(&self, real: Timestamp) -> Timestamp {
        let since = real.duration_since(self.real_start).as_secs_f64() * self.factor;
        self.start
            .saturating_add(SignedDuration::from_secs_f64(since))
            .unwrap_or(self.start)
    }
    fn shared(&self) -> Option<String> {
        Some(format!(
            "fast:{}@{},x{}",
            self.start, self.real_start, self.factor
        ))
    }
}

/// Why a `--clock` value was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "--clock {given:?}: {rule} (expected real, fixed:INSTANT or fast:INSTANT,xFACTOR, e.g. fast:2026-11-30T06:00:00+09:00,x600)"
)]
pub struct ClockError {
    given: String,
    rule: String,
}

/// Parses `real`, `fixed:INSTANT` or `fast:INSTANT,xFACTOR` (INSTANT in RFC 3339).
pub fn parse_clock(spec: &str) -> Result<Arc<dyn Clock>, ClockError> {
    let err = |rule: &str| ClockError {
        given: spec.to_string(),
        rule: rule.to_string(),
    };
    let instant = |text: &str| {
        text.parse::<Timestamp>()
            .map_err(|_| err(&format!("{text:?} is not an RFC 3339 instant")))
    };
    if spec == "real" {
        return Ok(Arc::new(RealClock));
    }
    if let Some(rest) = spec.strip_prefix("fixed:") {
        return Ok(Arc::new(FixedClock(instant(rest)?)));
    }
    if let Some(rest) = spec.strip_prefix("fast:") {
        let (at, factor) = rest
            .rsplit_once(",x")
            .ok_or_else(|| err("a fast clock needs ,xFACTOR after the instant"))?;
        let factor: f64 = factor
            .parse()
            .map_err(|_| err(&format!("{factor:?} is not a number")))?;
        if !(factor.is_finite() && (1.0..=100_000.0).contains(&factor)) {
            return Err(err("the factor must be between 1 and 100000"));
        }
        return Ok(Arc::new(FastClock::new(instant(at)?, factor)));
    }
    Err(err("unknown clock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_clocks() {
        assert_eq!(parse_clock("real").unwrap().factor(), 1.0);
        let fixed = parse_clock("fixed:2026-11-30T06:00:00+09:00").unwrap();
        assert_eq!(fixed.now().to_string(), "2026-11-29T21:00:00Z");
        let fast = parse_clock("fast:2026-11-30T06:00:00+09:00,x600").unwrap();
        assert_eq!(fast.factor(), 600.0);
        let t0: Timestamp = "2026-11-29T21:00:00Z".parse().unwrap();
        assert!(fast.now() >= t0 && fast.now() < t0 + SignedDuration::from_mins(10));
        // One clock hour is six real seconds at x600.
        let hour_later = fast.now() + SignedDuration::from_hours(1);
        let wait = fast.real_until(hour_later);
        assert!(
            wait <= Duration::from_secs(6) && wait > Duration::from_millis(5900),
            "{wait:?}"
        );
    }

    #[test]
    fn the_nodes_are_given_the_clock_anchored_at_a_real_instant_and_the_real_clock_is_not_given() {
        let fast = FastClock::new("2026-11-25T01:00:00Z".parse().unwrap(), 300.0);
        let shared = fast.shared().unwrap();
        let (shown, rest) = shared
            .strip_prefix("fast:")
            .unwrap()
            .split_once('@')
            .unwrap();
        let (real, factor) = rest.split_once(",x").unwrap();
        assert_eq!((shown, factor), ("2026-11-25T01:00:00Z", "300"));
        // The anchor's real instant is when the clock started: reading it back gives the start.
        let real: Timestamp = real.parse().unwrap();
        assert!(
            fast.clock_time_of(real).duration_since(fast.start).abs()
                < SignedDuration::from_secs(1)
        );
        assert_eq!(
            FixedClock("2026-11-25T01:00:00Z".parse().unwrap())
                .shared()
                .unwrap(),
            "fast:2026-11-25T01:00:00Z@2026-11-25T01:00:00Z,x0"
        );
        assert_eq!(RealClock.shared(), None);
    }

    #[test]
    fn a_fast_clock_reads_real_timestamps_on_its_own_time_line() {
        let fast = FastClock::new("2026-11-19T12:00:00Z".parse().unwrap(), 600.0);
        let real_now = Timestamp::now();
        let at_start = fast.clock_time_of(real_now);
        assert!(at_start.duration_since(fast.now()).abs() < SignedDuration::from_mins(1));
        // Ten real seconds later is a hundred clock minutes later.
        let later = fast.clock_time_of(real_now + SignedDuration::from_secs(10));
        assert_eq!(
            later.duration_since(at_start),
            SignedDuration::from_mins(100)
        );
        let t: Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
        assert_eq!(RealClock.clock_time_of(t), t);
    }

    #[test]
    fn bad_clocks_say_what_is_wrong() {
        for (spec, says) in [
            ("sundial", "unknown clock"),
            ("fast:2026-11-30T06:00:00+09:00", "needs ,xFACTOR"),
            ("fast:2026-11-30T06:00:00+09:00,x0", "between 1 and 100000"),
            ("fixed:tomorrow", "\"tomorrow\" is not an RFC 3339 instant"),
        ] {
            let e = parse_clock(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
