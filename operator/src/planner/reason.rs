//! Why a node is in its phase: the one CamelCase word of `status.reason` and of the node's Events.
//! Typed, so that the controller's decisions (which reasons warn, which are worth an Event) are
//! made in one place and a misspelt reason does not compile.

use std::fmt;
use std::str::FromStr;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A phase reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The word written to status and Events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    /// `spec.suspend` is true: nothing changes.
    Suspended,
    /// The window is open and the node is starting.
    WindowOpen,
    /// All replicas are ready.
    Ready,
    /// Online with fewer ready replicas than asked for.
    Degraded,
    /// Back Online: the window reopened while the node was stopping.
    InWindow,
    /// Its pods are not all gone yet (stopping) or not all ready yet.
    WaitingForPods,
    /// No node matches the upstream.
    UpstreamMissing,
    /// More than one node matches the upstream.
    UpstreamAmbiguous,
    /// The upstream is not Online yet.
    WaitingForUpstream,
    /// A scheduled run with deadline HoldStart is not done yet.
    HeldBySchedule,
    /// Started, but a required delivery is not applied yet: it does not go Online.
    DeliveryNotApplied,
    /// Offline between windows.
    OutsideWindow,
    /// Offline: the calendar closes the day.
    ClosedDay,
    /// Draining until every node below is Offline.
    WaitingForDownstream,
    /// The final request is being made.
    FinalRequest,
    /// The final exchange failed; the stop went on.
    FinalAnswerFailed,
    /// The node answered `done: false`: updates wait in its outbox for the next day.
    UpdatesHeld,
    /// Offline after a stop with no batch to run.
    Stopped,
    /// The day's batches succeeded.
    BatchSucceeded,
    /// A batch Job runs.
    BatchRunning,
    /// A batch Job failed.
    BatchFailed,
    /// A batch waits for a slot (`--max-batch-nodes`).
    BatchQueued,
    /// Stayed Online through a window's end: that night's final exchange was skipped.
    MissedNight,
    /// Starting took longer than `--readiness-timeout`.
    ReadinessTimeout,
    /// The node's calendar cannot be read or was never valid.
    CalendarUnavailable,
    /// No spec.tls, and the operator runs without --allow-plain-http: nothing of it runs.
    PlainHttpRefused,
    /// The node's calendar changed to an invalid one; the last valid one is used.
    InvalidCalendar,
    /// The node's spec cannot be planned with (or an edit of it is refused).
    InvalidSpec,
}

impl Reason {
    /// Whether the reason says something is wrong: a warning Event rather than a normal one.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::UpstreamMissing
                | Reason::UpstreamAmbiguous
                | Reason::Degraded
                | Reason::MissedNight
                | Reason::UpdatesHeld
                | Reason::DeliveryNotApplied
        )
    }

    /// Phase changes worth an Event whatever `--transition-events` says: the day's batch outcome
    /// and a stop without a complete final answer. Routine changes (Starting, Online, Draining, …)
    /// are in status and the transition metric; as Events they would be some 10,000 a day at full
    /// size and a third of the operator's API writes.
    pub fn is_notable(self) -> bool {
        matches!(
            self,
            Reason::BatchSucceeded
                | Reason::BatchFailed
                | Reason::FinalAnswerFailed
                | Reason::UpdatesHeld
                | Reason::ReadinessTimeout
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is no reason of this operator's (a status written by another version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a node phase reason")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Reason, UnknownReason> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_word() {
        for &r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
        }
        assert_eq!(
            "Upstreammissing".parse::<Reason>(),
            Err(UnknownReason("Upstreammissing".into()))
        );
    }

    #[test]
    fn warnings_are_the_upstream_problems_a_degraded_node_a_missing_delivery_a_missed_night_and_held_updates()
     {
        let warnings: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.is_warning())
            .map(|r| r.as_str())
            .collect();
        assert_eq!(
            warnings,
            [
                "Degraded",
                "UpstreamMissing",
                "UpstreamAmbiguous",
                "DeliveryNotApplied",
                "UpdatesHeld",
                "MissedNight"
            ]
        );
    }
}
