//! The ServiceExtensions (運用延長) that keep this node up, as the operator renders them into
//! the node's ConfigMap (`extensions.json`). Every entry covers this node: the operator lists
//! only extensions naming it or a node below it, so while one is in force the node's upstream
//! chain is kept Online too and the relay stays open to it until the extended end.

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};
use serde::Deserialize;

/// An active ServiceExtension as the operator lists it in `extensions.json`:
/// `[{"kind": "WideAreaIssuance", "nodes": ["cs-131016", "cs-271004"], "date": "2024-06-03",
/// "endTime": "20:00"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionFile {
    pub kind: String,
    pub nodes: Vec<String>,
    pub date: Date,
    pub end_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub kind: String,
    pub nodes: Vec<String>,
    pub date: Date,
    pub end_time: TimeOfDay,
}

/// Parses `extensions.json` (a JSON list; an unreadable entry fails the whole file).
pub fn parse_extensions(json: &str) -> Result<Vec<Extension>, String> {
    let list: Vec<ExtensionFile> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    list.into_iter()
        .map(|e| {
            Ok(Extension {
                end_time: TimeOfDay::parse(&e.end_time)
                    .map_err(|err| format!("endTime {:?}: {err}", e.end_time))?,
                kind: e.kind,
                nodes: e.nodes,
                date: e.date,
            })
        })
        .collect()
}

/// Reads the extensions file: none when it is not configured or absent; a malformed file counts
/// as none (logged): an extension only ever widens the hours, so failing closed is safe.
pub fn read_extensions(path: Option<&Path>) -> Vec<Extension> {
    let Some(path) = path else {
        return Vec::new();
    };
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "extensions file unreadable; none in force");
            Vec::new()
        }
        Ok(text) => parse_extensions(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "extensions file malformed; none in force");
            Vec::new()
        }),
    }
}

impl Extension {
    /// From the start of its date until its end time, in the calendar's time zone.
    pub fn in_force(&self, calendar: &Calendar, now: Timestamp) -> bool {
        let (Ok(midnight), Some(end)) = (
            TimeOfDay::parse("00:00"),
            calendar.checked_instant(self.date, self.end_time),
        ) else {
            return false;
        };
        calendar
            .checked_instant(self.date, midnight)
            .is_some_and(|start| start <= now && now < end)
    }
}
