//! Which nodes an entry selects: namespaces, tiers, prefectures and a label selector, all of
//! which must hold.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::NodeSelection;
use crate::topology::TopologyNode;

/// Whether the selection picks a node. `home` is the schedule's namespace (the default).
pub fn selects(
    selection: &NodeSelection,
    home: &str,
    node: &TopologyNode,
    labels: &BTreeMap<String, String>,
) -> bool {
    let namespace_ok = if selection.namespaces.is_empty() {
        node.namespace == home
    } else {
        selection
            .namespaces
            .iter()
            .any(|ns| ns == "*" || *ns == node.namespace)
    };
    let tier_ok = selection.tiers.is_empty() || selection.tiers.contains(&node.tier);
    let prefecture_ok = selection.prefectures.is_empty()
        || selection
            .prefectures
            .iter()
            .any(|p| p.0.parse::<u8>().ok() == node.prefecture && node.prefecture.is_some());
    let labels_ok = selection
        .selector
        .as_ref()
        .is_none_or(|s| label_selector_matches(s, labels));
    namespace_ok && tier_ok && prefecture_ok && labels_ok
}

/// Kubernetes label-selector semantics: every matchLabels pair and every matchExpression.
/// An expression with an unknown operator matches nothing (validation refuses it first).
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && expressions
}

/// Why a selector is malformed, if it is: an unknown operator, In/NotIn without values,
/// Exists/DoesNotExist with values.
pub fn selector_problem(selector: &LabelSelector) -> Option<String> {
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
        let problem = match (e.operator.as_str(), has_values) {
            ("In" | "NotIn", false) => "needs values",
            ("Exists" | "DoesNotExist", true) => "takes no values",
            ("In" | "NotIn" | "Exists" | "DoesNotExist", _) => continue,
            _ => "is not one of In, NotIn, Exists, DoesNotExist",
        };
        return Some(format!(
            "matchExpressions[{i}]: operator {:?} {problem}",
            e.operator
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::Tier;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn node(ns: &str, tier: Tier, prefecture: Option<u8>) -> TopologyNode {
        TopologyNode {
            namespace: ns.into(),
            name: "n".into(),
            tier,
            prefecture,
            upstream: None,
            tls: false,
        }
    }

    #[test]
    fn every_condition_must_hold_and_empty_means_the_home_namespace() {
        let none = BTreeMap::new();
        let all = NodeSelection::default();
        assert!(selects(
            &all,
            "p13",
            &node("p13", Tier::Cs, Some(13)),
            &none
        ));
        assert!(!selects(
            &all,
            "p13",
            &node("p27", Tier::Cs, Some(27)),
            &none
        ));
        let sel: NodeSelection = serde_json::from_value(serde_json::json!({
            "namespaces": ["*"], "tiers": ["CS"], "prefectures": ["13"]
        }))
        .unwrap();
        assert!(selects(&sel, "x", &node("p13", Tier::Cs, Some(13)), &none));
        assert!(!selects(
            &sel,
            "x",
            &node("p13", Tier::Prefecture, Some(13)),
            &none
        ));
        assert!(!selects(&sel, "x", &node("p27", Tier::Cs, Some(27)), &none));
    }

    #[test]
    fn label_selectors_follow_kubernetes() {
        let labels = BTreeMap::from([("role".to_string(), "big".to_string())]);
        let expr = |op: &str, values: Option<Vec<&str>>| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "role".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
            match_labels: None,
        };
        assert!(label_selector_matches(
            &expr("In", Some(vec!["big"])),
            &labels
        ));
        assert!(!label_selector_matches(
            &expr("NotIn", Some(vec!["big"])),
            &labels
        ));
        assert!(label_selector_matches(&expr("Exists", None), &labels));
        assert!(!label_selector_matches(
            &expr("DoesNotExist", None),
            &labels
        ));
        assert!(!label_selector_matches(&expr("Near", None), &labels));
        assert_eq!(
            selector_problem(&expr("In", None)).unwrap(),
            "matchExpressions[0]: operator \"In\" needs values"
        );
        assert!(selector_problem(&expr("Exists", None)).is_none());
    }
}
