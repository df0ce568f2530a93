//! The operator's own writes that its caches have not shown yet. A reconcile that reads an object
//! older than what this operator last wrote over it would plan the same transition again (and
//! write it, and announce it, twice); it stops early instead, because the watch event of the
//! write is on its way and wakes the node again. Waiting for the cache inside the reconcile did
//! the same but held one of the few reconcile slots for a watch round trip, which at window open
//! throttled the whole country's start.

use std::collections::HashMap;
use std::sync::Mutex;

/// (kind, namespace, name).
type Key = (&'static str, String, String);

#[derive(Debug, Default)]
pub struct OwnWrites {
    /// The resourceVersion each object had before this operator's last write changed it (`None`:
    /// the write created it). A cached copy still at that version is stale.
    stale: Mutex<HashMap<Key, Option<String>>>,
}

impl OwnWrites {
    /// Records a write that took the object from `before` to `after` (resourceVersions).
    pub fn wrote(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) {
        // A write the server found empty changed nothing and announces nothing.
        if before.is_some() && before == after {
            return;
        }
        self.lock().insert(
            (kind, namespace.to_string(), name.to_string()),
            before.map(str::to_string),
        );
    }

    /// Whether the cached copy (its resourceVersion, `None` when absent) predates the last write;
    /// forgets the write once the cache has moved past it.
    pub fn is_stale(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        cached: Option<&str>,
    ) -> bool {
        let key = (kind, namespace.to_string(), name.to_string());
        let mut stale = self.lock();
        match stale.get(&key) {
            Some(before) if before.as_deref() == cached => true,
            Some(_) => {
                stale.remove(&key);
                false
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Option<String>>> {
        self.stale.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_from_before_the_write_is_stale_until_the_cache_moves_on() {
        let w = OwnWrites::default();
        w.wrote("JukiNode", "ns", "cs", Some("10"), Some("11"));
        assert!(w.is_stale("JukiNode", "ns", "cs", Some("10")));
        assert!(
            !w.is_stale("Deployment", "ns", "cs", Some("10")),
            "per kind"
        );
        assert!(!w.is_stale("JukiNode", "ns", "cs", Some("11")));
        // Forgotten once the cache has moved on.
        assert!(!w.is_stale("JukiNode", "ns", "cs", Some("10")));
    }

    #[test]
    fn a_created_object_is_stale_while_absent_and_an_empty_write_is_not_recorded() {
        let w = OwnWrites::default();
        w.wrote("Deployment", "ns", "cs", None, Some("5"));
        assert!(w.is_stale("Deployment", "ns", "cs", None));
        assert!(!w.is_stale("Deployment", "ns", "cs", Some("5")));
        w.wrote("JukiNode", "ns", "cs", Some("7"), Some("7"));
        assert!(!w.is_stale("JukiNode", "ns", "cs", Some("7")));
    }
}
