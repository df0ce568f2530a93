//! The job scheduler's pure core (ジョブスケジューラ): a `JobSchedule` validated into a
//! [`Schedule`], and [`decide`], which says at an instant which runs start, wait, are skipped,
//! ran out of time or are late, and which nodes must not start yet. No I/O, no clock: the
//! controller gathers a [`World`], calls [`decide`] and applies the [`Decisions`].
//!
//! A run is one entry on one node for one operating day; each attempt has a Job named by
//! [`RunKey::job_name`], so it runs once per node, entry and day even across operator restarts.
//! The calendar's `batches` are the default schedule ([`implicit_spec`]), kept as they are.
//!
//! Around [`decide`], all pure: [`job`] builds an attempt's Job, [`runs_from_jobs`] rebuilds the
//! record from the Jobs after a restart, [`summarize`] makes the status ([`unstarted`] its runs without a Job that must outlive a restart), [`plan`] the forecast of
//! `kubectl juki plan --schedule`, [`report`] the table of `kubectl juki jobs`, [`unknown_node_sets`] and [`Schedule::name_clashes`] the
//! warnings that need the nodes or the other schedules.

mod compile;
mod decide;
mod job;
mod key;
pub mod plan;
mod record;
pub mod report;
pub mod rerun;
mod select;
mod status;
pub mod unstarted;

pub use compile::{Entry, Schedule, ScheduleError, ScheduleErrors, When, Work, implicit_spec};
pub use decide::{
    Decisions, LOOKBACK_DAYS, Late, RunId, RunState, ScheduleNode, SkipReason, Start, Wait, World,
    decide, unknown_node_sets,
};
pub use job::{ATTEMPT_LABEL, SCHEDULE_LABEL, job};
pub use key::{RunKey, is_dns_label, job_name};
pub use record::runs_from_jobs;
pub use select::{label_selector_matches, selects};
pub use status::summarize;

#[cfg(test)]
mod tests;
