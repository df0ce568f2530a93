//! The live national → prefecture → CS tree of `kubectl juki tree`, rendered from JukiNodes.

use std::fmt::Write;

use jiff::tz::TimeZone;

use crate::api::{JukiNode, NodePhase};
use crate::topology::{Resolved, from_jukinode, resolve};

/// One line's columns for a node.
fn line(node: &JukiNode, tz: &TimeZone) -> String {
    let ns = node.metadata.namespace.as_deref().unwrap_or("default");
    let name = node.metadata.name.as_deref().unwrap_or("?");
    let status = node.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("-".to_string(), |p| format!("{p:?}"));
    let reason = status.reason.unwrap_or_default();
    let next = status.next_transition.map_or(String::new(), |n| {
        format!(
            "  next {:?} at {}",
            n.phase,
            n.at.0.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M")
        )
    });
    let who = match (&node.spec.municipality, &node.spec.prefecture) {
        (Some(m), _) => format!(" {m}"),
        (None, Some(p)) => format!(" {p}"),
        _ => String::new(),
    };
    format!("{ns}/{name}{who}  {phase} {reason}{next}")
}

/// The nodes and who hangs under whom.
struct Tree<'a> {
    nodes: &'a [&'a JukiNode],
    children: Vec<Vec<usize>>,
    tz: &'a TimeZone,
}

impl Tree<'_> {
    /// Writes node `i` and everything below it. `branch` is (prefix, last child) below a parent.
    fn walk(&self, out: &mut String, i: usize, branch: Option<(&str, bool)>) {
        let (lead, below) = match branch {
            None => (String::new(), String::new()),
            Some((prefix, true)) => (format!("{prefix}└─ "), format!("{prefix}   ")),
            Some((prefix, false)) => (format!("{prefix}├─ "), format!("{prefix}│  ")),
        };
        writeln!(out, "{lead}{}", line(self.nodes[i], self.tz)).unwrap();
        let kids = &self.children[i];
        for (k, &c) in kids.iter().enumerate() {
            self.walk(out, c, Some((&below, k + 1 == kids.len())));
        }
    }
}

/// Renders every node under its upstream; nodes without a usable upstream are listed after the
/// tree with why. `tz` is the zone for the next-transition times.
pub fn render(nodes: &[JukiNode], tz: &TimeZone) -> String {
    let mut kept: Vec<&JukiNode> = Vec::new();
    let mut topology = Vec::new();
    let mut unreadable = Vec::new();
    for n in nodes {
        match from_jukinode(n, "default") {
            Ok((t, _)) => {
                kept.push(n);
                topology.push(t);
            }
            Err(e) => unreadable.push(format!("{}  {e}", line(n, tz))),
        }
    }
    let resolved = resolve(&topology);
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by(|&a, &b| {
        (&topology[a].namespace, &topology[a].name)
            .cmp(&(&topology[b].namespace, &topology[b].name))
    });
    let mut children = vec![Vec::new(); kept.len()];
    for &i in &order {
        if let Resolved::Node(parent) = resolved[i] {
            children[parent].push(i);
        }
    }
    let tree = Tree {
        nodes: &kept,
        children,
        tz,
    };
    let mut out = String::new();
    for &i in order.iter().filter(|&&i| resolved[i] == Resolved::None) {
        tree.walk(&mut out, i, None);
    }
    let orphans: Vec<String> = order
        .iter()
        .filter_map(|&i| match resolved[i] {
            Resolved::Missing => Some(format!("{}  (no upstream found)", line(kept[i], tz))),
            Resolved::Ambiguous => Some(format!(
                "{}  (more than one upstream matches)",
                line(kept[i], tz)
            )),
            Resolved::Invalid => Some(format!(
                "{}  ({})",
                line(kept[i], tz),
                crate::topology::upstream_problem(&topology, i).unwrap_or_default()
            )),
            _ => None,
        })
        .chain(unreadable)
        .collect();
    if !orphans.is_empty() {
        writeln!(out, "not in the tree:").unwrap();
        for o in orphans {
            writeln!(out, "  {o}").unwrap();
        }
    }
    let online = kept
        .iter()
        .filter(|n| n.status.as_ref().and_then(|s| s.phase) == Some(NodePhase::Online))
        .count();
    writeln!(out, "{} nodes, {online} online", nodes.len()).unwrap();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JukiNodeSpec, JukiNodeStatus};
    use serde_json::json;

    fn node(ns: &str, name: &str, spec: serde_json::Value, phase: NodePhase) -> JukiNode {
        let spec: JukiNodeSpec = serde_json::from_value(spec).unwrap();
        let mut n = JukiNode::new(name, spec);
        n.metadata.namespace = Some(ns.into());
        n.status = Some(JukiNodeStatus {
            phase: Some(phase),
            reason: Some("InWindow".into()),
            ..Default::default()
        });
        n
    }

    #[test]
    fn nodes_hang_under_their_upstream_and_orphans_are_listed() {
        let nodes = vec![
            node(
                "p13",
                "cs-131041",
                json!({"tier": "CS", "municipality": "131041"}),
                NodePhase::Online,
            ),
            node(
                "nat",
                "national",
                json!({"tier": "National"}),
                NodePhase::Online,
            ),
            node(
                "p13",
                "pref-13",
                json!({"tier": "Prefecture", "prefecture": "13"}),
                NodePhase::Online,
            ),
            node(
                "p13",
                "cs-131016",
                json!({"tier": "CS", "municipality": "131016"}),
                NodePhase::Starting,
            ),
            node(
                "p27",
                "cs-271004",
                json!({"tier": "CS", "municipality": "271004"}),
                NodePhase::Offline,
            ),
        ];
        let text = render(&nodes, &TimeZone::UTC);
        assert_eq!(
            text,
            "nat/national  Online InWindow\n\
             └─ p13/pref-13 13  Online InWindow\n\
             \u{20}  ├─ p13/cs-131016 131016  Starting InWindow\n\
             \u{20}  └─ p13/cs-131041 131041  Online InWindow\n\
             not in the tree:\n\
             \u{20} p27/cs-271004 271004  Offline InWindow  (no upstream found)\n\
             5 nodes, 3 online\n"
        );
    }
}
