//! Events: which Kubernetes Events a reconcile's outcome is worth (pure), and publishing them.

use jiff::civil::Date;
use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::api::{JukiNode, NodePhase};
use crate::controller::Context;
use crate::planner::{Action, Plan, Reason};

/// The Event of a batch started for a day missed while the operator was away.
const CATCH_UP_BATCH: &str = "CatchUpBatch";

/// What a reconcile saw and decided, as far as Events go.
#[derive(Debug, Clone)]
pub(super) struct Outcome<'a> {
    /// The phase and reason in status before this reconcile (`None` for a new node).
    pub old_phase: Option<NodePhase>,
    pub old_reason: Option<&'a str>,
    /// The message of the SpecValid problem already reported in status.
    pub old_problem: Option<&'a str>,
    pub plan: &'a Plan,
    /// The invalid calendar or spec edit the node is planned around now.
    pub problem: Option<&'a (Reason, String)>,
    /// A manual override is in force.
    pub overridden: bool,
    /// The calendar has batches for the plan's operating date.
    pub batches_ran: bool,
    /// The plan's Job is for a day missed while the operator was away.
    pub catch_up: bool,
    /// `--transition-events`: every phase change is an Event.
    pub transition_events: bool,
}

/// One Event to publish about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events an outcome is worth: a phase change that warns, is overridden or notable (all of
/// them with `--transition-events`); a new warning or suspension without a phase change; a new
/// spec problem planned around; a catch-up batch.
pub(super) fn events_for(o: &Outcome<'_>) -> Vec<NodeEvent> {
    let plan = o.plan;
    let reason = plan.reason.as_str();
    let warning = plan.phase == NodePhase::Failed || plan.reason.is_warning();
    let mut events = Vec::new();
    match o.old_phase {
        Some(from) if from != plan.phase => {
            let notable = plan.reason.is_notable()
                && (plan.reason != Reason::BatchSucceeded || o.batches_ran);
            if o.transition_events || warning || o.overridden || notable {
                events.push(NodeEvent {
                    warning,
                    reason,
                    note: format!("{from:?} → {:?}: {}", plan.phase, plan.message),
                });
            }
        }
        // A new node that cannot start, a new reason for waiting, a suspension or its end.
        _ if (warning
            || plan.reason == Reason::Suspended
            || o.old_reason == Some(Reason::Suspended.as_str()))
            && o.old_reason != Some(reason) =>
        {
            events.push(NodeEvent {
                warning,
                reason,
                note: plan.message.clone(),
            });
        }
        _ => {}
    }
    // An invalid edit planned around: one warning per new problem.
    if let Some((problem, message)) = o.problem
        && o.old_problem != Some(message.as_str())
    {
        events.push(NodeEvent {
            warning: true,
            reason: problem.as_str(),
            note: message.clone(),
        });
    }
    if let Action::CreateJob { batch, date } = &plan.action
        && o.catch_up
    {
        events.push(catch_up_event(batch, *date));
    }
    events
}

fn catch_up_event(batch: &str, date: Date) -> NodeEvent {
    NodeEvent {
        warning: false,
        reason: CATCH_UP_BATCH,
        note: format!("running missed batch {batch} of {date}"),
    }
}

/// Publishes one Event on the node; a failure is logged, not fatal (Events are best effort).
pub(super) async fn publish(node: &JukiNode, ctx: &Context, event: NodeEvent) {
    let event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.into(),
        note: Some(event.note),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics.api_write("Event");
    if let Err(e) = ctx.recorder.publish(&event, &node.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(phase: NodePhase, reason: Reason) -> Plan {
        Plan::new(phase, reason, "why")
    }

    fn outcome<'a>(old: Option<(NodePhase, &'static str)>, plan: &'a Plan) -> Outcome<'a> {
        Outcome {
            old_phase: old.map(|o| o.0),
            old_reason: old.map(|o| o.1),
            old_problem: None,
            plan,
            problem: None,
            overridden: false,
            batches_ran: true,
            catch_up: false,
            transition_events: false,
        }
    }

    fn event(warning: bool, reason: &'static str, note: &str) -> NodeEvent {
        NodeEvent {
            warning,
            reason,
            note: note.into(),
        }
    }

    #[test]
    fn routine_phase_changes_are_quiet_unless_every_change_is_asked_for() {
        let online = plan(NodePhase::Online, Reason::Ready);
        let o = outcome(Some((NodePhase::Starting, "WindowOpen")), &online);
        assert_eq!(events_for(&o), []);
        let all = Outcome {
            transition_events: true,
            ..o.clone()
        };
        assert_eq!(
            events_for(&all),
            [event(false, "Ready", "Starting → Online: why")]
        );
        let overridden = Outcome {
            overridden: true,
            ..o
        };
        assert_eq!(
            events_for(&overridden),
            [event(false, "Ready", "Starting → Online: why")]
        );
    }

    #[test]
    fn batch_outcomes_and_failures_are_events_a_day_without_batches_is_not() {
        let done = plan(NodePhase::Offline, Reason::BatchSucceeded);
        let o = outcome(Some((NodePhase::DailyBatch, "BatchRunning")), &done);
        assert_eq!(
            events_for(&o),
            [event(false, "BatchSucceeded", "DailyBatch → Offline: why")]
        );
        let no_batches = Outcome {
            batches_ran: false,
            ..o
        };
        assert_eq!(events_for(&no_batches), []);
        let failed = plan(NodePhase::Failed, Reason::ReadinessTimeout);
        let o = outcome(Some((NodePhase::Starting, "WindowOpen")), &failed);
        assert_eq!(
            events_for(&o),
            [event(true, "ReadinessTimeout", "Starting → Failed: why")]
        );
    }

    #[test]
    fn a_new_warning_or_suspension_without_a_phase_change_is_one_event() {
        let missing = plan(NodePhase::Offline, Reason::UpstreamMissing);
        let first = outcome(None, &missing);
        assert_eq!(events_for(&first), [event(true, "UpstreamMissing", "why")]);
        // The same reason again is no news.
        let again = outcome(Some((NodePhase::Offline, "UpstreamMissing")), &missing);
        assert_eq!(events_for(&again), []);
        let suspended = plan(NodePhase::Online, Reason::Suspended);
        let o = outcome(Some((NodePhase::Online, "Ready")), &suspended);
        assert_eq!(events_for(&o), [event(false, "Suspended", "why")]);
        // Its end too.
        let resumed = plan(NodePhase::Online, Reason::Ready);
        let o = outcome(Some((NodePhase::Online, "Suspended")), &resumed);
        assert_eq!(events_for(&o), [event(false, "Ready", "why")]);
        // A routine reason change is not.
        let waiting = plan(NodePhase::Offline, Reason::WaitingForUpstream);
        let o = outcome(Some((NodePhase::Offline, "OutsideWindow")), &waiting);
        assert_eq!(events_for(&o), []);
    }

    #[test]
    fn a_spec_problem_is_reported_once_and_a_catch_up_batch_says_which_day() {
        let mut batch = plan(NodePhase::DailyBatch, Reason::BatchRunning);
        batch.action = Action::CreateJob {
            batch: "backup".into(),
            date: jiff::civil::date(2026, 11, 27),
        };
        let problem = (
            Reason::InvalidCalendar,
            "holidays[0]: not a date".to_string(),
        );
        let o = Outcome {
            problem: Some(&problem),
            catch_up: true,
            ..outcome(Some((NodePhase::DailyBatch, "BatchRunning")), &batch)
        };
        assert_eq!(
            events_for(&o),
            [
                event(true, "InvalidCalendar", "holidays[0]: not a date"),
                event(
                    false,
                    "CatchUpBatch",
                    "running missed batch backup of 2026-11-27"
                ),
            ]
        );
        let known = Outcome {
            old_problem: Some("holidays[0]: not a date"),
            catch_up: false,
            ..o
        };
        assert_eq!(events_for(&known), []);
    }
}
