//! juki-calendar: the operating calendar of the Basic Resident Registration Network.
//!
//! Pure functions of dates, instants and a [`CalendarConfig`]: which days are open, when each tier
//! is online, when the window services run, which batches are due. No I/O, no clock: callers pass
//! the instant they care about.

pub mod batch;
pub mod calendar;
pub mod config;
pub mod holidays;
pub mod time_of_day;
pub mod transitions;
pub mod validate;

pub use batch::BatchRun;
pub use calendar::{Calendar, ClosedReason, DayStatus, Window};
pub use config::{
    BatchConfig, BatchSchedule, CalendarConfig, ClosedDayPolicy, ClosedPeriod, DatedReason, Tier,
    TierWindows, WindowConfig,
};
pub use holidays::{Holiday, HolidayKind};
pub use time_of_day::TimeOfDay;
pub use transitions::{Scope, Transition, TransitionKind};
pub use validate::{ValidationError, ValidationErrors};
