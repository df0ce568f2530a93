//! Whether a ServiceExtension is valid and in force, and which nodes it keeps up: the named nodes
//! and the whole upstream chain they need. Pure.

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};

use crate::api::{ExtensionKind, ExtensionPhase, ServiceExtensionSpec};
use crate::planner::{NodeView, window_on};
use crate::topology::{Resolved, TopologyNode};

/// The verdict on one extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub phase: ExtensionPhase,
    pub reason: &'static str,
    pub message: String,
    pub date: Option<Date>,
    pub end: Option<Timestamp>,
    /// Indices of the nodes kept up (named nodes first, then their upstream chain).
    pub covers: Vec<usize>,
    /// When the phase changes next (Pending → Active → Expired).
    pub next_change: Option<Timestamp>,
}

fn rejected(reason: &'static str, message: String) -> Evaluation {
    Evaluation {
        phase: ExtensionPhase::Rejected,
        reason,
        message,
        date: None,
        end: None,
        covers: Vec::new(),
        next_change: None,
    }
}

/// Evaluates an extension in `namespace` against the calendar and the current topology.
/// `online_ends[i]` is node i's own online end.
pub fn evaluate(
    spec: &ServiceExtensionSpec,
    namespace: &str,
    calendar: &Calendar,
    nodes: &[TopologyNode],
    resolved: &[Resolved],
    online_ends: &[Option<TimeOfDay>],
    now: Timestamp,
) -> Evaluation {
    let Ok(date) = spec.date.parse::<Date>() else {
        return rejected(
            "InvalidDate",
            format!("spec.date {:?} is not a real date (YYYY-MM-DD)", spec.date),
        );
    };
    let end_time = match TimeOfDay::parse(&spec.end_time) {
        Ok(t) => t,
        Err(m) => return rejected("InvalidEndTime", format!("spec.endTime: {m}")),
    };
    if spec.kind != ExtensionKind::LocalProcessing && spec.coordinated_with.is_empty() {
        return rejected(
            "CoordinationMissing",
            format!(
                "spec.coordinatedWith must name who was coordinated with for {:?}",
                spec.kind
            ),
        );
    }
    let status = calendar.day_status(date);
    if !status.is_open() {
        return rejected(
            "DateClosed",
            format!("{date} is {status}: there is no online window to extend"),
        );
    }
    let Some(end) = calendar.checked_instant(date, end_time) else {
        return rejected(
            "InvalidDate",
            format!(
                "spec.date {date} with spec.endTime {end_time} is outside the range of instants the operator can plan"
            ),
        );
    };
    let mut covers = Vec::new();
    for r in &spec.nodes {
        let ns = r.namespace.as_deref().unwrap_or(namespace);
        // An extension keeps up only the nodes of its own namespace (and, through them, their
        // upstream chain): another tenant's extension cannot keep this namespace's nodes up.
        if ns != namespace {
            return rejected(
                "OtherNamespace",
                format!(
                    "spec.nodes names {ns}/{}: an extension may name only nodes of its own namespace {namespace}",
                    r.name
                ),
            );
        }
        let Some(i) = nodes
            .iter()
            .position(|n| n.namespace == ns && n.name == r.name)
        else {
            return rejected(
                "NodeNotFound",
                format!("JukiNode {ns}/{} does not exist", r.name),
            );
        };
        let normal = normal_window_end(calendar, &nodes[i], online_ends[i], date);
        if normal.is_some_and(|n| end <= n) {
            return rejected(
                "EndNotAfterWindow",
                format!(
                    "spec.endTime {end_time} is not later than the normal online end of {ns}/{}",
                    r.name
                ),
            );
        }
        // The node and every node above it stay up.
        let mut at = Some(i);
        while let Some(k) = at {
            if covers.contains(&k) {
                break;
            }
            covers.push(k);
            at = match resolved[k] {
                Resolved::Node(up) => Some(up),
                _ => None,
            };
        }
    }
    let start = calendar
        .online_window(juki_calendar::Tier::National, None, date)
        .map_or(end, |w| w.start);
    let (phase, reason, message, next_change) = if now < start {
        (
            ExtensionPhase::Pending,
            "NotYetInForce",
            format!("in force on {date} until {end_time}"),
            Some(start),
        )
    } else if now < end {
        (
            ExtensionPhase::Active,
            "InForce",
            format!("{} nodes kept online until {end_time}", covers.len()),
            Some(end),
        )
    } else {
        (
            ExtensionPhase::Expired,
            "Ended",
            format!("ended at {end_time} on {date}"),
            None,
        )
    };
    Evaluation {
        phase,
        reason,
        message,
        date: Some(date),
        end: Some(end),
        covers,
        next_change,
    }
}

fn normal_window_end(
    calendar: &Calendar,
    node: &TopologyNode,
    online_end: Option<TimeOfDay>,
    date: Date,
) -> Option<Timestamp> {
    let view = NodeView::bare(node.tier, node.prefecture, online_end);
    window_on(calendar, &view, date).map(|w| w.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeRef;
    use crate::topology::resolve;
    use juki_calendar::{CalendarConfig, Tier};

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn nodes() -> Vec<TopologyNode> {
        let n = |ns: &str, name: &str, tier, p| TopologyNode {
            namespace: ns.into(),
            name: name.into(),
            tier,
            prefecture: p,
            upstream: None,
            tls: false,
        };
        vec![
            n("nat", "national", Tier::National, None),
            n("p13", "pref-13", Tier::Prefecture, Some(13)),
            n("p13", "cs-131016", Tier::Cs, Some(13)),
            n("p13", "cs-131041", Tier::Cs, Some(13)),
        ]
    }

    fn spec(kind: ExtensionKind, end: &str, coordinated: &[&str]) -> ServiceExtensionSpec {
        ServiceExtensionSpec {
            kind,
            nodes: vec![NodeRef {
                name: "cs-131016".into(),
                namespace: None,
            }],
            date: "2026-11-30".into(),
            end_time: end.into(),
            coordinated_with: coordinated.iter().map(|s| s.to_string()).collect(),
            reason: String::new(),
        }
    }

    #[test]
    fn an_extension_covers_the_node_and_its_upstream_chain() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = nodes();
        let resolved = resolve(&nodes);
        let ends = vec![None; nodes.len()];
        let e = evaluate(
            &spec(ExtensionKind::WideAreaIssuance, "23:00", &["131041"]),
            "p13",
            &cal,
            &nodes,
            &resolved,
            &ends,
            tokyo("2026-11-30T21:30"),
        );
        assert_eq!((e.phase, e.reason), (ExtensionPhase::Active, "InForce"));
        assert_eq!(e.covers, [2, 1, 0]);
        assert_eq!(e.next_change, Some(tokyo("2026-11-30T23:00")));
        let later = evaluate(
            &spec(ExtensionKind::WideAreaIssuance, "23:00", &["131041"]),
            "p13",
            &cal,
            &nodes,
            &resolved,
            &ends,
            tokyo("2026-11-30T23:00"),
        );
        assert_eq!(later.phase, ExtensionPhase::Expired);
        let early = evaluate(
            &spec(ExtensionKind::LocalProcessing, "23:00", &[]),
            "p13",
            &cal,
            &nodes,
            &resolved,
            &ends,
            tokyo("2026-11-29T12:00"),
        );
        assert_eq!(early.phase, ExtensionPhase::Pending);
    }

    #[test]
    fn invalid_extensions_are_rejected_with_a_reason() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = nodes();
        let resolved = resolve(&nodes);
        let ends = vec![None; nodes.len()];
        let now = tokyo("2026-11-30T12:00");
        let eval =
            |s: &ServiceExtensionSpec| evaluate(s, "p13", &cal, &nodes, &resolved, &ends, now);
        assert_eq!(
            eval(&spec(ExtensionKind::WideAreaIssuance, "23:00", &[])).reason,
            "CoordinationMissing"
        );
        assert_eq!(
            eval(&spec(ExtensionKind::LocalProcessing, "20:30", &[])).reason,
            "EndNotAfterWindow"
        );
        let mut missing = spec(ExtensionKind::LocalProcessing, "23:00", &[]);
        missing.nodes[0].name = "cs-999999".into();
        assert_eq!(
            eval(&missing).message,
            "JukiNode p13/cs-999999 does not exist"
        );
        let mut closed = spec(ExtensionKind::LocalProcessing, "23:00", &[]);
        closed.date = "2026-11-28".into();
        assert_eq!(eval(&closed).reason, "DateClosed");
    }

    #[test]
    fn an_extension_names_only_nodes_of_its_own_namespace() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = nodes();
        let resolved = resolve(&nodes);
        let ends = vec![None; nodes.len()];
        let now = tokyo("2026-11-30T21:30");
        let mut s = spec(ExtensionKind::LocalProcessing, "23:00", &[]);
        // From another tenant's namespace: rejected, nothing covered.
        s.nodes[0].namespace = Some("p13".into());
        let e = evaluate(&s, "p27", &cal, &nodes, &resolved, &ends, now);
        assert_eq!(
            (e.phase, e.reason, e.covers.len()),
            (ExtensionPhase::Rejected, "OtherNamespace", 0)
        );
        assert_eq!(
            e.message,
            "spec.nodes names p13/cs-131016: an extension may name only nodes of its own namespace p27"
        );
        s.nodes[0] = NodeRef {
            name: "national".into(),
            namespace: Some("nat".into()),
        };
        assert_eq!(
            evaluate(&s, "p13", &cal, &nodes, &resolved, &ends, now).reason,
            "OtherNamespace"
        );
        // Its own namespace, spelled out or not: in force, with the chain above.
        s.nodes[0] = NodeRef {
            name: "cs-131016".into(),
            namespace: Some("p13".into()),
        };
        let e = evaluate(&s, "p13", &cal, &nodes, &resolved, &ends, now);
        assert_eq!((e.phase, e.covers), (ExtensionPhase::Active, vec![2, 1, 0]));
    }
}
