//! At most `--max-batch-nodes` nodes run their daily batch Jobs at once; the others wait their
//! turn, first stopped first served. At window end the whole country stops at once: 3,600 batch
//! Jobs created as the first nodes stop took the control plane from the pod deletions of the
//! nodes still stopping (and, on real storage, 1,741 backups at once would too). So a node still
//! Stopping (its pods going) counts against the limit as a batching node does: a stop wave's pod
//! deletions go first and the batches fill in as the pods go. Stopping is never held back, and a
//! node Stopping for longer than `stuck_after` (pods that do not go) stops counting, so a few
//! stuck pods do not hold every other node's batches.
//!
//! A node holds its slot from its first Job until it leaves DailyBatch, so its batches run back
//! to back and the tier above, which waits for it, is not kept waiting by nodes that stopped later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::api::JukiNode;

#[derive(Debug)]
pub struct BatchSlots {
    /// 0: no limit.
    max: usize,
    /// How long a Stopping node counts against the limit.
    stuck_after: Duration,
    inner: Mutex<Inner>,
    /// Wakes the next waiting node when a slot frees.
    wake: UnboundedSender<ObjectRef<JukiNode>>,
}

#[derive(Debug, Default)]
struct Inner {
    holders: HashSet<ObjectRef<JukiNode>>,
    waiting: VecDeque<ObjectRef<JukiNode>>,
    /// Nodes scaled to 0 whose pods are still going, since when.
    stopping: HashMap<ObjectRef<JukiNode>, Instant>,
}

impl Inner {
    fn in_use(&self, stuck_after: Duration) -> usize {
        let stopping = self
            .stopping
            .values()
            .filter(|since| since.elapsed() < stuck_after)
            .count();
        self.holders.len() + stopping
    }
}

/// Whether a node may create its batch Job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Go,
    /// Waiting, at this place in the queue (1 = next).
    Wait(usize),
}

impl BatchSlots {
    pub fn new(
        max: usize,
        stuck_after: Duration,
        wake: UnboundedSender<ObjectRef<JukiNode>>,
    ) -> BatchSlots {
        BatchSlots {
            max,
            stuck_after,
            inner: Mutex::default(),
            wake,
        }
    }

    /// Whether the node is Stopping now (scaled to 0, pods still going). Leaving Stopping may
    /// make room for the next in line.
    pub fn stopping(&self, node: &ObjectRef<JukiNode>, stopping: bool) {
        let mut inner = self.lock();
        if stopping {
            inner
                .stopping
                .entry(node.clone())
                .or_insert_with(Instant::now);
        } else if inner.stopping.remove(node).is_some() {
            self.wake_first_if_room(&inner);
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
        if inner.in_use(self.stuck_after) < self.max && first_in_line {
            inner.waiting.retain(|n| n != node);
            inner.holders.insert(node.clone());
            // Room for more (a stuck node stopped counting): the next one need not wait.
            self.wake_first_if_room(&inner);
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

    /// A node whose batch Job already runs (made before an operator restart): it holds a slot
    /// whatever the count, as its Job cannot be taken back.
    pub fn hold(&self, node: &ObjectRef<JukiNode>) {
        if self.max == 0 {
            return;
        }
        let mut inner = self.lock();
        let was_first = inner.waiting.front() == Some(node);
        inner.waiting.retain(|n| n != node);
        inner.stopping.remove(node);
        inner.holders.insert(node.clone());
        if was_first {
            self.wake_first_if_room(&inner);
        }
    }

    /// A node done with its batches (or not batching: Online, Stopping, suspended): its slot,
    /// if it had one, goes to the next in line; its place in line, if any, is dropped. Whether
    /// it is Stopping is [`stopping`](Self::stopping)'s business.
    pub fn release(&self, node: &ObjectRef<JukiNode>) {
        self.leave(node, false);
    }

    /// A deleted node: nothing of it counts any more.
    pub fn forget(&self, node: &ObjectRef<JukiNode>) {
        self.leave(node, true);
    }

    fn leave(&self, node: &ObjectRef<JukiNode>, deleted: bool) {
        let mut inner = self.lock();
        let was_first = inner.waiting.front() == Some(node);
        inner.waiting.retain(|n| n != node);
        let was_stopping = deleted && inner.stopping.remove(node).is_some();
        let freed = inner.holders.remove(node) || was_stopping;
        // Whoever is first in line now may go: a slot came free, or the node woken for one
        // left the line without taking it.
        if freed || was_first {
            self.wake_first_if_room(&inner);
        }
    }

    fn wake_first_if_room(&self, inner: &Inner) {
        if self.max != 0
            && inner.in_use(self.stuck_after) < self.max
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

    const LONG: Duration = Duration::from_secs(3600);

    fn node(name: &str) -> ObjectRef<JukiNode> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn nodes_beyond_the_limit_wait_in_order_and_the_next_is_woken_when_a_slot_frees() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(2, LONG, tx);
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
        let slots = BatchSlots::new(1, LONG, tx);
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
        let slots = BatchSlots::new(0, LONG, tx);
        for i in 0..100 {
            assert_eq!(slots.take(&node(&format!("n{i}"))), Turn::Go);
        }
    }

    #[test]
    fn nodes_still_stopping_count_against_the_limit_and_leaving_stopping_wakes_the_next() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(2, LONG, tx);
        slots.stopping(&node("a"), true);
        slots.stopping(&node("b"), true);
        slots.stopping(&node("b"), true);
        slots.stopping(&node("c"), true);
        // c's pods are gone first, but a and b are still stopping: c waits.
        slots.stopping(&node("c"), false);
        assert_eq!(slots.take(&node("c")), Turn::Wait(1));
        assert!(rx.try_recv().is_err(), "no room yet, nobody woken");
        slots.stopping(&node("a"), false);
        assert_eq!(rx.try_recv().ok(), Some(node("c")));
        assert_eq!(slots.take(&node("a")), Turn::Wait(2), "c is first in line");
        assert_eq!(slots.take(&node("c")), Turn::Go);
        // b still stopping and c holding: the limit of 2 is reached.
        assert_eq!(slots.take(&node("a")), Turn::Wait(1));
        // A reconcile that plans Stopping releases any slot the node held: it still counts.
        slots.release(&node("b"));
        assert_eq!(slots.take(&node("a")), Turn::Wait(1));
        assert!(rx.try_recv().is_err(), "b is still stopping");
        // A deleted node that was stopping frees its room.
        slots.forget(&node("b"));
        assert_eq!(rx.try_recv().ok(), Some(node("a")));
        assert_eq!(slots.take(&node("a")), Turn::Go);
    }

    #[test]
    fn a_node_stuck_stopping_stops_counting_after_a_while() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(1, Duration::from_millis(50), tx);
        slots.stopping(&node("stuck"), true);
        assert_eq!(slots.take(&node("a")), Turn::Wait(1));
        assert_eq!(slots.take(&node("b")), Turn::Wait(2));
        std::thread::sleep(Duration::from_millis(80));
        // a, looking again (its requeue), finds the stuck node no longer counting.
        assert_eq!(slots.take(&node("a")), Turn::Go);
        assert!(rx.try_recv().is_err(), "the limit of 1 is a's now");
        slots.release(&node("a"));
        assert_eq!(rx.try_recv().ok(), Some(node("b")));
        assert_eq!(slots.take(&node("b")), Turn::Go);
    }

    #[test]
    fn when_a_stuck_node_stops_counting_the_one_who_goes_wakes_the_next() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(2, Duration::from_millis(50), tx);
        slots.stopping(&node("x"), true);
        slots.stopping(&node("y"), true);
        assert_eq!(slots.take(&node("a")), Turn::Wait(1));
        assert_eq!(slots.take(&node("b")), Turn::Wait(2));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(slots.take(&node("a")), Turn::Go);
        assert_eq!(rx.try_recv().ok(), Some(node("b")), "room for one more");
        assert_eq!(slots.take(&node("b")), Turn::Go);
    }

    #[test]
    fn nodes_whose_jobs_already_run_hold_their_slots_before_any_newcomer() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let slots = BatchSlots::new(2, LONG, tx);
        // After a restart: three nodes' Jobs already run, one more than the limit.
        for n in ["a", "b", "c"] {
            slots.hold(&node(n));
        }
        assert_eq!(slots.take(&node("d")), Turn::Wait(1));
        assert_eq!(slots.take(&node("a")), Turn::Go, "a holder's next batch");
        slots.release(&node("a"));
        assert!(rx.try_recv().is_err(), "b and c still fill the limit of 2");
        slots.release(&node("b"));
        assert_eq!(rx.try_recv().ok(), Some(node("d")));
        assert_eq!(slots.take(&node("d")), Turn::Go);
    }
}
