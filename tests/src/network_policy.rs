//! Which callers the NetworkPolicies of a namespace admit to a pod, read the way a network
//! plugin that enforces them would (ingress only, label selectors by `matchLabels`). The test
//! cluster's bridge CNI enforces nothing; this lets the real-pod tests check the charts'
//! policies against the labels the real pods carry.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A pod as a policy sees it: its labels and those of its namespace.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
}

/// Whether the `policies` of `target`'s namespace admit `source` to `target`'s TCP `port`.
/// A pod that no policy selects admits everyone. Panics on selectors this reading does not
/// cover (`matchExpressions`, named ports), so a policy it cannot judge fails the test.
pub fn admits(policies: &[NetworkPolicy], target: &Endpoint, source: &Endpoint, port: i32) -> bool {
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(target.namespace.as_str()))
        .filter(|p| {
            // An absent podSelector, like an empty one, selects every pod of the namespace.
            let selector = p.spec.as_ref().map(|s| s.pod_selector.as_ref());
            selector.is_some_and(|s| s.is_none_or(|s| selects(s, &target.labels)))
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|p| {
        let rules = p.spec.as_ref().and_then(|s| s.ingress.as_ref());
        rules.into_iter().flatten().any(|rule| {
            let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                ports.iter().any(|p| match &p.port {
                    None => true,
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        *n == port
                    }
                    Some(other) => panic!("named port {other:?}: not covered"),
                })
            });
            let from_ok = rule.from.as_ref().is_none_or(|peers| {
                peers
                    .iter()
                    .any(|peer| peer_matches(peer, &target.namespace, source))
            });
            port_ok && from_ok
        })
    })
}

fn peer_matches(peer: &NetworkPolicyPeer, policy_namespace: &str, source: &Endpoint) -> bool {
    if peer.ip_block.is_some() {
        // CIDRs name addresses outside the pod network (the API server); no pod here.
        return false;
    }
    let namespace_ok = match &peer.namespace_selector {
        None => source.namespace == policy_namespace,
        Some(selector) => selects(selector, &source.namespace_labels),
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|selector| selects(selector, &source.labels));
    namespace_ok && pod_ok
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(
        selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty),
        "matchExpressions are not covered: {selector:?}"
    );
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint(namespace: &str, labels: &[(&str, &str)]) -> Endpoint {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Endpoint {
            namespace: namespace.to_owned(),
            labels: owned(labels),
            namespace_labels: owned(&[("kubernetes.io/metadata.name", namespace)]),
        }
    }

    fn policy() -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"name": "pref-13", "namespace": "a"},
            "spec": {
                "podSelector": {"matchLabels": {"node": "pref-13"}},
                "ingress": [{
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                    "from": [
                        {"podSelector": {"matchLabels": {"tier": "CS"}}},
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "op"}},
                         "podSelector": {"matchLabels": {"app": "operator"}}},
                        {"ipBlock": {"cidr": "10.0.0.1/32"}},
                    ],
                }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_selected_pod_admits_only_the_listed_peers_on_the_listed_port() {
        let policies = [policy()];
        let target = endpoint("a", &[("node", "pref-13")]);
        let cs = endpoint("a", &[("tier", "CS")]);
        let operator = endpoint("op", &[("app", "operator")]);
        assert!(admits(&policies, &target, &cs, 8080));
        assert!(admits(&policies, &target, &operator, 8080));
        assert!(!admits(&policies, &target, &cs, 9090), "another port");
        assert!(!admits(
            &policies,
            &target,
            &endpoint("b", &[("tier", "CS")]),
            8080
        ));
        assert!(!admits(
            &policies,
            &target,
            &endpoint("a", &[("app", "operator")]),
            8080
        ));
        assert!(!admits(&policies, &target, &endpoint("a", &[]), 8080));
    }

    #[test]
    fn a_pod_no_policy_selects_admits_everyone() {
        let policies = [policy()];
        let other = endpoint("a", &[("node", "national")]);
        assert!(admits(&policies, &other, &endpoint("z", &[]), 8080));
        let elsewhere = endpoint("b", &[("node", "pref-13")]);
        assert!(admits(&policies, &elsewhere, &endpoint("z", &[]), 8080));
    }
}
