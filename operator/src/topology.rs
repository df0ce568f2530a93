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
    /// The node serves mutual TLS (`spec.tls`): those below call it over HTTPS.
    pub tls: bool,
}

/// The resolved upstream of a node: an index into the node list, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    None,
    Node(usize),
    Missing,
    Ambiguous,
    /// `spec.upstream` names a node that cannot be this node's upstream: itself, a node of the
    /// wrong tier, or a chain that comes back around ([`upstream_error`] says which).
    Invalid,
}

impl Resolved {
    /// The upstream's state for the planner, given a way to read a node's phase.
    pub fn state(self, phase_of: impl Fn(usize) -> crate::api::NodePhase) -> Upstream {
        match self {
            Resolved::None => Upstream::NotNeeded,
            Resolved::Node(i) => Upstream::Phase(phase_of(i)),
            Resolved::Missing | Resolved::Invalid => Upstream::Missing,
            Resolved::Ambiguous => Upstream::Ambiguous,
        }
    }
}

/// Resolves the upstream of every node, in list order. Linear in the number of nodes, so the
/// whole country (1,789 nodes) resolves in microseconds on every reconcile.
pub fn resolve(nodes: &[TopologyNode]) -> Vec<Resolved> {
    use std::collections::HashMap;
    let mut by_name: HashMap<(&str, &str), usize> = HashMap::with_capacity(nodes.len());
    let mut national = Vec::new();
    let mut prefectures: HashMap<u8, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        by_name.insert((n.namespace.as_str(), n.name.as_str()), i);
        match (n.tier, n.prefecture) {
            (Tier::National, _) => national.push(i),
            (Tier::Prefecture, Some(p)) => prefectures.entry(p).or_default().push(i),
            _ => {}
        }
    }
    let one_of = |candidates: Option<&Vec<usize>>| match candidates.map(Vec::as_slice) {
        None | Some([]) => Resolved::Missing,
        Some([i]) => Resolved::Node(*i),
        Some(_) => Resolved::Ambiguous,
    };
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match (&n.upstream, n.tier) {
            (Some((ns, name)), _) => match by_name.get(&(ns.as_str(), name.as_str())) {
                None => Resolved::Missing,
                Some(_) if upstream_error(nodes, &by_name, i).is_some() => Resolved::Invalid,
                Some(&up) => Resolved::Node(up),
            },
            (None, Tier::National) => Resolved::None,
            (None, Tier::Prefecture) => one_of(Some(&national)),
            (None, Tier::Cs) => one_of(n.prefecture.and_then(|p| prefectures.get(&p))),
        })
        .collect()
}

/// The tier a node's upstream must have: the tier right above it (none above National).
fn tier_above(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::National => None,
        Tier::Prefecture => Some(Tier::National),
        Tier::Cs => Some(Tier::Prefecture),
    }
}

/// Why node `i`'s explicit `spec.upstream` cannot be its upstream, if it cannot: it names the
/// node itself, the references form a cycle, or the named node is not of the tier right above
/// (a CS names a Prefecture node, a Prefecture node the National one; a National node has
/// none). `None` when there is no explicit reference, it is valid, or it names no node (Missing).
fn upstream_error(
    nodes: &[TopologyNode],
    by_name: &std::collections::HashMap<(&str, &str), usize>,
    i: usize,
) -> Option<String> {
    let n = &nodes[i];
    let (ns, name) = n.upstream.as_ref()?;
    let &up = by_name.get(&(ns.as_str(), name.as_str()))?;
    if up == i {
        return Some(format!("spec.upstream {ns}/{name} names the node itself"));
    }
    // Follow the explicit references: a chain that comes back to this node is a cycle.
    let mut chain = vec![format!("{}/{}", n.namespace, n.name)];
    let mut at = up;
    while chain.len() <= nodes.len() {
        let m = &nodes[at];
        chain.push(format!("{}/{}", m.namespace, m.name));
        if at == i {
            return Some(format!(
                "spec.upstream forms a cycle: {}",
                chain.join(" → ")
            ));
        }
        match m
            .upstream
            .as_ref()
            .and_then(|(ns, name)| by_name.get(&(ns.as_str(), name.as_str())))
        {
            Some(&next) if next != at => at = next,
            _ => break,
        }
    }
    let target = &nodes[up];
    match tier_above(n.tier) {
        None => Some(format!(
            "spec.upstream {ns}/{name}: a National node has no upstream; remove spec.upstream"
        )),
        Some(want) if target.tier != want => Some(format!(
            "spec.upstream {ns}/{name} is a {} node; the upstream of a {} node must be a {} node",
            target.tier.as_str(),
            n.tier.as_str(),
            want.as_str()
        )),
        Some(_) => None,
    }
}

/// Why node `i`'s `spec.upstream` is invalid, when [`resolve`] found it so
/// ([`Resolved::Invalid`]); for the node's InvalidSpec status.
pub fn upstream_problem(nodes: &[TopologyNode], i: usize) -> Option<String> {
    let by_name: std::collections::HashMap<(&str, &str), usize> = nodes
        .iter()
        .enumerate()
        .map(|(k, n)| ((n.namespace.as_str(), n.name.as_str()), k))
        .collect();
    upstream_error(nodes, &by_name, i)
}

/// Whether a change of `changed` can matter to `other`: `other` may be its upstream or one of its
/// downstream nodes (by tier and prefecture, or by an explicit reference). An over-approximation
/// of [`resolve`] that needs no other node, for mapping watch events.
pub fn may_be_neighbours(other: &TopologyNode, changed: &TopologyNode) -> bool {
    // Called for every node on every phase change: compare without allocating.
    let names = |up: &Option<(String, String)>, n: &TopologyNode| {
        up.as_ref()
            .is_some_and(|(ns, name)| *ns == n.namespace && *name == n.name)
    };
    if names(&other.upstream, changed) || names(&changed.upstream, other) {
        return other != changed;
    }
    let same_prefecture = other.prefecture.is_some() && other.prefecture == changed.prefecture;
    match (changed.tier, other.tier) {
        (Tier::National, Tier::Prefecture) | (Tier::Prefecture, Tier::National) => true,
        (Tier::Prefecture, Tier::Cs) | (Tier::Cs, Tier::Prefecture) => same_prefecture,
        _ => false,
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
            tls: spec.tls.is_some(),
        },
        online_end,
    ))
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
            tls: false,
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
    fn neighbours_are_the_tiers_next_door_in_the_same_prefecture() {
        let national = node("nat", "national", Tier::National, None);
        let p13 = node("p13", "pref-13", Tier::Prefecture, Some(13));
        let p27 = node("p27", "pref-27", Tier::Prefecture, Some(27));
        let cs13 = node("p13", "cs-131016", Tier::Cs, Some(13));
        assert!(may_be_neighbours(&p13, &cs13) && may_be_neighbours(&cs13, &p13));
        assert!(!may_be_neighbours(&p27, &cs13) && !may_be_neighbours(&national, &cs13));
        assert!(may_be_neighbours(&national, &p27) && !may_be_neighbours(&p13, &p27));
        let mut explicit = node("x", "cs-x", Tier::Cs, Some(1));
        explicit.upstream = Some(("p27".into(), "pref-27".into()));
        assert!(may_be_neighbours(&p27, &explicit) && may_be_neighbours(&explicit, &p27));
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

    #[test]
    fn an_upstream_that_is_the_node_itself_a_cycle_or_the_wrong_tier_is_invalid() {
        let base = vec![
            node("nat", "national", Tier::National, None),
            node("p13", "pref-13", Tier::Prefecture, Some(13)),
            node("p13", "cs-131016", Tier::Cs, Some(13)),
            node("p13", "pref-13b", Tier::Prefecture, Some(13)),
        ];
        let with = |links: &[(usize, (&str, &str))]| {
            let mut nodes = base.clone();
            for (i, (ns, name)) in links {
                nodes[*i].upstream = Some((ns.to_string(), name.to_string()));
            }
            nodes
        };
        let check = |nodes: &[TopologyNode], i: usize, wanted: &str| {
            assert_eq!(resolve(nodes)[i], Resolved::Invalid, "{wanted}");
            let problem = upstream_problem(nodes, i).unwrap();
            assert!(problem.contains(wanted), "{problem}");
        };
        // Itself.
        check(
            &with(&[(2, ("p13", "cs-131016"))]),
            2,
            "spec.upstream p13/cs-131016 names the node itself",
        );
        // A CS naming the national server directly.
        check(
            &with(&[(2, ("nat", "national"))]),
            2,
            "spec.upstream nat/national is a National node; the upstream of a CS node must be a Prefecture node",
        );
        // A cycle of two prefectures.
        let cycle = with(&[(1, ("p13", "pref-13b")), (3, ("p13", "pref-13"))]);
        check(
            &cycle,
            1,
            "spec.upstream forms a cycle: p13/pref-13 → p13/pref-13b → p13/pref-13",
        );
        check(&cycle, 3, "forms a cycle");
        // A National node with an upstream at all.
        check(
            &with(&[(0, ("p13", "pref-13"))]),
            0,
            "a National node has no upstream",
        );
        // A valid explicit reference still resolves, and the other nodes are untouched.
        let ok = with(&[(2, ("p13", "pref-13b"))]);
        assert_eq!(resolve(&ok)[2], Resolved::Node(3));
        assert_eq!(upstream_problem(&ok, 2), None);
    }
}
