//! The names of a kind's objects grouped by the node they belong to (their namespace and
//! `jukinet.io/node` label), kept up to date by the watch itself. A reconcile then reads its own
//! node's two or three objects instead of scanning every pod or Job of the country: at full size
//! those scans, tens of thousands of times per wave, were a fifth of the operator's CPU.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::Resource;
use kube::runtime::watcher;

use crate::resources::NODE_LABEL;

/// (namespace, node name).
type NodeKey = (String, String);

#[derive(Debug, Default)]
struct Groups {
    by_node: HashMap<NodeKey, BTreeSet<String>>,
    /// (namespace, object name) → its node, so that a changed label leaves its old group.
    node_of: HashMap<NodeKey, NodeKey>,
}

impl Groups {
    fn insert(&mut self, namespace: String, name: String, node: Option<NodeKey>) {
        let key = (namespace, name);
        if let Some(old) = self.node_of.remove(&key) {
            let emptied = self.by_node.get_mut(&old).is_some_and(|names| {
                names.remove(&key.1);
                names.is_empty()
            });
            if emptied {
                self.by_node.remove(&old);
            }
        }
        if let Some(node) = node {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(key.1.clone());
            self.node_of.insert(key, node);
        }
    }
}

/// Which objects of one kind belong to which node.
#[derive(Debug)]
pub struct ByNode {
    /// Objects the index leaves out (e.g. a batch Job's pods among the pods).
    skip: fn(&std::collections::BTreeMap<String, String>) -> bool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Groups,
    /// A relist in progress: filled from its objects, then swapped in whole.
    relist: Option<Groups>,
}

impl ByNode {
    /// An index of the objects whose labels `skip` does not reject.
    pub fn new(skip: fn(&std::collections::BTreeMap<String, String>) -> bool) -> ByNode {
        ByNode {
            skip,
            inner: Mutex::default(),
        }
    }

    /// Follows one watch event; called before the event reaches the store, so that an object
    /// named here may not be in the store yet (readers skip it) but a deleted one is never named.
    pub fn follow<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => inner.relist = Some(Groups::default()),
            watcher::Event::InitApply(o) => {
                let entry = self.entry(o);
                if let Some(groups) = inner.relist.as_mut() {
                    groups.insert(entry.0, entry.1, entry.2);
                }
            }
            watcher::Event::InitDone => {
                if let Some(groups) = inner.relist.take() {
                    inner.live = groups;
                }
            }
            watcher::Event::Apply(o) => {
                let (ns, name, node) = self.entry(o);
                inner.live.insert(ns, name, node);
            }
            watcher::Event::Delete(o) => {
                let (ns, name, _) = self.entry(o);
                inner.live.insert(ns, name, None);
            }
        }
    }

    fn entry<K: Resource>(&self, o: &K) -> (String, String, Option<NodeKey>) {
        let meta = o.meta();
        let ns = meta.namespace.clone().unwrap_or_default();
        let node = meta
            .labels
            .as_ref()
            .filter(|labels| !(self.skip)(labels))
            .and_then(|labels| labels.get(NODE_LABEL))
            .map(|node| (ns.clone(), node.clone()));
        (ns, meta.name.clone().unwrap_or_default(), node)
    }

    /// The names of the objects of node `name` in `namespace`.
    pub fn names(&self, namespace: &str, name: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .live
            .by_node
            .get(&(namespace.to_string(), name.to_string()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    fn no_skip(_: &std::collections::BTreeMap<String, String>) -> bool {
        false
    }

    #[test]
    fn groups_by_namespace_and_node_label_and_forgets_deleted_objects() {
        let index = ByNode::new(no_skip);
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "p1",
            &[(NODE_LABEL, "cs-1")],
        )));
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "p2",
            &[(NODE_LABEL, "cs-1")],
        )));
        index.follow(&watcher::Event::Apply(pod(
            "b",
            "p3",
            &[(NODE_LABEL, "cs-1")],
        )));
        index.follow(&watcher::Event::Apply(pod("a", "p4", &[])));
        assert_eq!(index.names("a", "cs-1"), ["p1", "p2"]);
        assert_eq!(index.names("b", "cs-1"), ["p3"]);
        index.follow(&watcher::Event::Delete(pod(
            "a",
            "p1",
            &[(NODE_LABEL, "cs-1")],
        )));
        assert_eq!(index.names("a", "cs-1"), ["p2"]);
        // A relabelled object moves to its new node.
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "p2",
            &[(NODE_LABEL, "cs-2")],
        )));
        assert!(index.names("a", "cs-1").is_empty());
        assert_eq!(index.names("a", "cs-2"), ["p2"]);
    }

    #[test]
    fn a_relist_replaces_the_groups_only_when_it_is_complete() {
        let index = ByNode::new(no_skip);
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "gone",
            &[(NODE_LABEL, "n")],
        )));
        index.follow(&watcher::Event::<Pod>::Init);
        index.follow(&watcher::Event::InitApply(pod(
            "a",
            "new",
            &[(NODE_LABEL, "n")],
        )));
        assert_eq!(
            index.names("a", "n"),
            ["gone"],
            "the old list holds until InitDone"
        );
        index.follow(&watcher::Event::<Pod>::InitDone);
        assert_eq!(index.names("a", "n"), ["new"]);
    }

    #[test]
    fn skipped_objects_are_left_out() {
        let index = ByNode::new(|labels| labels.contains_key("batch"));
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "job-pod",
            &[(NODE_LABEL, "n"), ("batch", "x")],
        )));
        index.follow(&watcher::Event::Apply(pod(
            "a",
            "pod",
            &[(NODE_LABEL, "n")],
        )));
        assert_eq!(index.names("a", "n"), ["pod"]);
    }
}
