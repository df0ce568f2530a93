//! Who is upstream of whom: resolves each node's upstream from `spec.upstream` or, by default, by
//! tier (a CS's Prefecture node of its prefecture, a Prefecture's National node), in any namespace.

use juki_calendar::Tier;

use crate::planner::Upstream;

/// What the resolution needs of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    pub namespace: String,
    pub name: String,
    pub tier: Tier,
    /// Prefecture code (for a CS, from its municipality code when not given).
    pub prefecture: Option<u8>,
    /// `spec.upstream` as (namespace, name), the namespace defaulted to the node's own.
    pub upstream: Option<(String, String)>,
}

/// The resolved upstream of a node: an index into the node list, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    None,
    Node(usize),
    Missing,
    Ambiguous,
}

impl Resolved {
    /// The upstream's state for the planner, given a way to read a node's phase.
    pub fn state(self, phase_of: impl Fn(usize) -> crate::api::NodePhase) -> Upstream {
        match self {
            Resolved::None => Upstream::NotNeeded,
            Resolved::Node(i) => Upstream::Phase(phase_of(i)),
            Resolved::Missing => Upstream::Missing,
            Resolved::Ambiguous => Upstream::Ambiguous,
        }
    }
}

/// Resolves the upstream of every node, in list order.
pub fn resolve(nodes: &[TopologyNode]) -> Vec<Resolved> {
    nodes.iter().map(|n| resolve_one(nodes, n)).collect()
}

fn resolve_one(nodes: &[TopologyNode], node: &TopologyNode) -> Resolved {
    if let Some((ns, name)) = &node.upstream {
        return nodes
            .iter()
            .position(|n| &n.namespace == ns && &n.name == name)
            .map_or(Resolved::Missing, Resolved::Node);
    }
    let wanted = match node.tier {
        Tier::National => return Resolved::None,
        Tier::Prefecture => |n: &TopologyNode, _: Option<u8>| n.tier == Tier::National,
        Tier::Cs => |n: &TopologyNode, p: Option<u8>| {
            n.tier == Tier::Prefecture && n.prefecture == p && p.is_some()
        },
    };
    let mut matches = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| wanted(n, node.prefecture));
    match (matches.next(), matches.next()) {
        (None, _) => Resolved::Missing,
        (Some((i, _)), None) => Resolved::Node(i),
        _ => Resolved::Ambiguous,
    }
}

/// Indices of the nodes whose upstream is `index`.
pub fn downstream_of(resolved: &[Resolved], index: usize) -> impl Iterator<Item = usize> + '_ {
    resolved
        .iter()
        .enumerate()
        .filter(move |(_, r)| **r == Resolved::Node(index))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ns: &str, name: &str, tier: Tier, prefecture: Option<u8>) -> TopologyNode {
        TopologyNode {
            namespace: ns.into(),
            name: name.into(),
            tier,
            prefecture,
            upstream: None,
        }
    }

    #[test]
    fn defaults_follow_the_tiers_across_namespaces() {
        let nodes = vec![
            node("nat", "national", Tier::National, None),
            node("p13", "pref-13", Tier::Prefecture, Some(13)),
            node("p13", "cs-131016", Tier::Cs, Some(13)),
            node("p27", "cs-271004", Tier::Cs, Some(27)),
        ];
        assert_eq!(
            resolve(&nodes),
            [
                Resolved::None,
                Resolved::Node(0),
                Resolved::Node(1),
                Resolved::Missing
            ]
        );
        assert_eq!(downstream_of(&resolve(&nodes), 1).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn two_candidates_are_ambiguous_and_an_explicit_reference_wins() {
        let mut nodes = vec![
            node("a", "national", Tier::National, None),
            node("b", "national", Tier::National, None),
            node("p", "pref", Tier::Prefecture, Some(1)),
        ];
        assert_eq!(resolve(&nodes)[2], Resolved::Ambiguous);
        nodes[2].upstream = Some(("b".into(), "national".into()));
        assert_eq!(resolve(&nodes)[2], Resolved::Node(1));
        nodes[2].upstream = Some(("c".into(), "national".into()));
        assert_eq!(resolve(&nodes)[2], Resolved::Missing);
    }
}

/// The topology facts of a JukiNode, and its own online end. The namespace defaults to
/// `default_namespace` when the object has none (a manifest file).
pub fn from_jukinode(
    node: &crate::api::JukiNode,
    default_namespace: &str,
) -> Result<(TopologyNode, Option<juki_calendar::TimeOfDay>), String> {
    let namespace = node
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    let name = node.metadata.name.clone().unwrap_or_default();
    let spec = &node.spec;
    let prefecture = match (&spec.prefecture, &spec.municipality) {
        (Some(p), _) => Some(
            juki_codes::validate_prefecture_code(p)
                .map_err(|e| format!("spec.prefecture {p:?}: {e}"))?,
        ),
        (None, Some(m)) => Some(
            juki_codes::validate_municipality_code(m)
                .map_err(|e| format!("spec.municipality {m:?}: {e}"))?,
        ),
        (None, None) => None,
    };
    let online_end = spec
        .online_end
        .as_deref()
        .map(|e| juki_calendar::TimeOfDay::parse(e).map_err(|m| format!("spec.onlineEnd: {m}")))
        .transpose()?;
    let upstream = spec.upstream.as_ref().map(|u| {
        (
            u.namespace.clone().unwrap_or_else(|| namespace.clone()),
            u.name.clone(),
        )
    });
    Ok((
        TopologyNode {
            namespace,
            name,
            tier: spec.tier,
            prefecture,
            upstream,
        },
        online_end,
    ))
}
