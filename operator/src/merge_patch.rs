//! JSON merge patches (RFC 7386) computed from the old and the new form of a status.
//!
//! Our status types skip `None` and empty fields when serialised, so sending the new status as a
//! merge patch would leave a field that became empty untouched on the server; the cache would
//! then never equal what the operator wants, and every reconcile would write again. A diff sets
//! such fields to `null`, which removes them, and sends only what changed.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`; `None` when they are equal.
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (key, value) in n {
                let before = o.get(key).unwrap_or(&Value::Null);
                if let Some(p) = diff(before, value) {
                    patch.insert(key.clone(), p);
                }
            }
            for key in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Some(Value::Object(patch))
        }
        // Arrays and scalars are replaced whole; a null in `new` would mean "remove", so an
        // object replacing a non-object is sent whole too.
        _ => Some(new.clone()),
    }
}

/// Applies a merge patch as the API server does (for the tests and for callers that need the
/// result).
pub fn apply(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (key, value) in p {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let merged = apply(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), merged);
                }
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_that_became_absent_is_removed() {
        let old = json!({"phase": "Online", "nextTransition": {"at": "t", "phase": "Draining"}});
        let new = json!({"phase": "Draining"});
        let patch = diff(&old, &new).unwrap();
        assert_eq!(patch, json!({"phase": "Draining", "nextTransition": null}));
        assert_eq!(apply(&old, &patch), new);
    }

    #[test]
    fn only_changed_fields_are_sent_and_nested_objects_are_merged() {
        let old = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]});
        let new = json!({"a": 1, "b": {"x": 1, "y": 3}, "c": [1]});
        let patch = diff(&old, &new).unwrap();
        assert_eq!(patch, json!({"b": {"y": 3}, "c": [1]}));
        assert_eq!(apply(&old, &patch), new);
    }

    #[test]
    fn equal_values_need_no_patch() {
        let v = json!({"a": {"b": [1, {"c": null}]}});
        assert_eq!(diff(&v, &v), None);
    }

    #[test]
    fn from_nothing_the_patch_is_the_whole_object() {
        let new = json!({"phase": "Offline", "conditions": []});
        assert_eq!(diff(&Value::Null, &new), Some(new.clone()));
        assert_eq!(apply(&Value::Null, &new), new);
    }
}
