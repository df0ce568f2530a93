//! Nodes held back by another controller, with why: a scheduled run holds a node's next start
//! (the JobSchedule controller), a required delivery holds a started node from going Online
//! (the FileDelivery controller). The node controller reads them; a node whose hold comes,
//! changes or goes is woken.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::api::JukiNode;

/// What each holder (a JobSchedule's or a FileDelivery's uid) holds.
#[derive(Debug)]
pub struct Holds {
    by_holder: Mutex<HashMap<String, HashMap<ObjectRef<JukiNode>, String>>>,
    wake: UnboundedSender<ObjectRef<JukiNode>>,
}

impl Holds {
    pub fn new(wake: UnboundedSender<ObjectRef<JukiNode>>) -> Holds {
        Holds {
            by_holder: Mutex::default(),
            wake,
        }
    }

    /// Why the node is held, if a holder holds it.
    pub fn of(&self, node: &ObjectRef<JukiNode>) -> Option<String> {
        let held = self
            .by_holder
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut why: Vec<&String> = held.values().filter_map(|nodes| nodes.get(node)).collect();
        // The same answer whatever the map's order: no status write for nothing.
        why.sort();
        why.first().map(|w| (*w).clone())
    }

    /// Replaces what one holder holds; wakes the nodes held, released, or held for a new reason.
    pub fn set(&self, holder: &str, nodes: HashMap<ObjectRef<JukiNode>, String>) {
        let old = {
            let mut held = self
                .by_holder
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if nodes.is_empty() {
                held.remove(holder)
            } else {
                held.insert(holder.to_string(), nodes.clone())
            }
        }
        .unwrap_or_default();
        let released = old.keys().filter(|n| !nodes.contains_key(*n));
        let changed = nodes.iter().filter(|(n, why)| old.get(*n) != Some(*why));
        for node in released.chain(changed.map(|(n, _)| n)) {
            let _ = self.wake.unbounded_send(node.clone());
        }
    }

    /// Forgets the holders not in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        let gone: Vec<String> = {
            let held = self
                .by_holder
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            held.keys()
                .filter(|k| !live.contains(*k))
                .cloned()
                .collect()
        };
        for holder in gone {
            self.set(&holder, HashMap::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_wakes_the_node_when_it_comes_changes_and_goes() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let holds = Holds::new(tx);
        let node = ObjectRef::<JukiNode>::new("pref-13").within("p13");
        let hold = |why: &str| HashMap::from([(node.clone(), why.to_string())]);
        holds.set("uid-1", hold("why"));
        assert_eq!(holds.of(&node).as_deref(), Some("why"));
        assert_eq!(rx.try_recv().unwrap(), node.clone());
        // The same hold again: no wake.
        holds.set("uid-1", hold("why"));
        assert!(rx.try_recv().is_err());
        // A new reason: woken, so that its status says it.
        holds.set("uid-1", hold("another"));
        assert_eq!(rx.try_recv().unwrap(), node.clone());
        // Two holders: the answer does not depend on the map's order.
        holds.set("uid-2", hold("a first reason"));
        assert_eq!(rx.try_recv().unwrap(), node.clone());
        assert_eq!(holds.of(&node).as_deref(), Some("a first reason"));
        // The holders are gone: released and woken.
        holds.retain(&HashSet::new());
        assert_eq!(holds.of(&node), None);
        assert_eq!(rx.try_recv().unwrap(), node.clone());
        assert_eq!(rx.try_recv().unwrap(), node);
    }
}
