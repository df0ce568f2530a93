//! At most `--max-batch-nodes` nodes run their daily batch Jobs at once; the others wait their
//! turn, first stopped first served. At window end the whole country stops at once: 3,600 batch
//! Jobs created as the first nodes stop took the control plane from the pod deletions of the
//! nodes still stopping (and, on real storage, 1,741 backups at once would too). A node holds its
//! slot from its first Job until it leaves DailyBatch, so its batches run back to back and the
//! tier above, which waits for it, is not kept waiting by nodes that stopped later.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::api::JukiNode;

#[derive(Debug)]
pub struct BatchSlots {
    /// 0: no limit.
    max: usize,
    inner: Mutex<Inner>,
    /// Wakes the next waiting node when a slot frees.
    wake: UnboundedSender<ObjectRef<JukiNode>>,
}

#[derive(Debug, Default)]
struct Inner {
    holders: HashSet<ObjectRef<JukiNode>>,
    waiting: VecDeque<ObjectRef<JukiNode>>,
}

/// Whether a node may create its batch Job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Go,
    /// Waiting, at this place in the queue (1 = next).
    Wait(usize),
}

impl BatchSlots {
    pub fn new(max: usize, wake: UnboundedSender<ObjectRef<JukiNode>>) -> BatchSlots {
        BatchSlots {
            max,
            inner: Mutex::default(),
            wake,
        }
    }

    /// A node about to create a batch Job: it goes if it holds a slot or one is free (and then
    /// holds it); otherwise it queues, once.
    pub fn take(&self, node: &ObjectRef<JukiNode>) -> Turn {
        let mut inner = self.lock();
        if self.max == 0 || inner.holders.contains(node) {
            return Turn::Go;
        }
        // The head of the queue first: a node woken for a freed slot finds it still free.
        let first_in_line = inner.waiting.front().is_none_or(|n| n == node);
        if inner.holders.len() < self.max && first_in_line {
            inner.waiting.retain(|n| n != node);
            inner.holders.insert(node.clone());
            return Turn::Go;
        }
        let place = match inner.waiting.iter().position(|n| n == node) {
            Some(i) => i + 1,
            None => {
                inner.waiting.push_back(node.clone());
                inner.waiting.len()
            }
        };
        Turn::Wait(place)
    }

    /// A node done with its batches (or no longer batching: stopped, suspended, deleted): its
    /// slot, if it had one, goes to the next in line; its place in line, if any, is dropped.
    pub fn release(&self, node: &ObjectRef<JukiNode>) {
        let mut inner = self.lock();
        let was_first = inner.waiting.front() == Some(node);
        inner.waiting.retain(|n| n != node);
        let freed = inner.holders.remove(node);
        // Whoever is first in line now may go: a slot came free, or the node woken for one
        // left the line without taking it.
        if (freed || was_first)
            && inner.holders.len() < self.max
            && let Some(next) = inner.waiting.front()
        {
            let _ = self.wake.unbounded_send(next.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> ObjectRef<JukiNode> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn nodes_beyond_the_limit_wait_in_order_and_the_next_is_woken_when_a_slot_frees() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(2, tx);
        assert_eq!(slots.take(&node("a")), Turn::Go);
        assert_eq!(slots.take(&node("b")), Turn::Go);
        assert_eq!(slots.take(&node("c")), Turn::Wait(1));
        assert_eq!(slots.take(&node("d")), Turn::Wait(2));
        assert_eq!(slots.take(&node("c")), Turn::Wait(1), "queued once");
        // A holder's second batch needs no new slot.
        assert_eq!(slots.take(&node("a")), Turn::Go);
        slots.release(&node("a"));
        assert_eq!(rx.try_recv().ok(), Some(node("c")));
        // The freed slot is c's, not a newcomer's.
        assert_eq!(slots.take(&node("e")), Turn::Wait(3));
        assert_eq!(slots.take(&node("c")), Turn::Go);
        assert_eq!(slots.take(&node("d")), Turn::Wait(1));
    }

    #[test]
    fn releasing_a_waiting_node_drops_it_from_the_line_and_frees_nothing() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(1, tx);
        assert_eq!(slots.take(&node("a")), Turn::Go);
        assert_eq!(slots.take(&node("b")), Turn::Wait(1));
        assert_eq!(slots.take(&node("c")), Turn::Wait(2));
        slots.release(&node("b"));
        assert!(rx.try_recv().is_err(), "no slot freed, nobody woken");
        slots.release(&node("a"));
        assert_eq!(rx.try_recv().ok(), Some(node("c")));
        // c, woken, leaves the line without its slot (its window reopened): d is next.
        assert_eq!(slots.take(&node("d")), Turn::Wait(2));
        slots.release(&node("c"));
        assert_eq!(rx.try_recv().ok(), Some(node("d")));
        assert_eq!(slots.take(&node("d")), Turn::Go);
    }

    #[test]
    fn zero_means_no_limit() {
        let (tx, _rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(0, tx);
        for i in 0..100 {
            assert_eq!(slots.take(&node(&format!("n{i}"))), Turn::Go);
        }
    }
}
