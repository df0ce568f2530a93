//! The Alertmanager webhook (version 4): its payload, and what a fault ticket says about an alert
//! group. Deduplication is by (fingerprint, startsAt): the same firing seen again (Alertmanager
//! repeats notifications and retries failed deliveries) is the same alert, whatever ticket it
//! went to; a new firing of a fingerprint whose ticket is closed opens a new ticket, so a closed
//! ticket is never reopened. The storing part is `service::alerts`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Deserialize;

use crate::domain::ticket::{self, MAX_NODES, MAX_SUBJECT, MAX_TEXT};
use crate::error::Error;

/// The most alerts in one notification.
pub const MAX_ALERTS: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    pub fingerprint: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// One alert, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    pub fingerprint: String,
    pub starts_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub name: String,
    pub nodes: Vec<String>,
    pub org: Option<String>,
    pub summary: String,
}

/// The node a label set names: `node`, `jukinode` or `juki_node` (a JukiNode's name).
fn node_of(labels: &BTreeMap<String, String>) -> Option<String> {
    ["node", "jukinode", "juki_node"]
        .iter()
        .filter_map(|k| labels.get(*k))
        .find_map(|n| ticket::node_name(n).ok())
}

/// The organisation an alert is about: a valid `org` or `municipality` label, else the code in a
/// node name `cs-<code>`, else a prefectural node `pref-<PP>`'s prefecture.
fn org_of(labels: &BTreeMap<String, String>, node: Option<&str>) -> Option<String> {
    for key in ["org", "municipality", "municipality_code"] {
        if let Some(code) = labels.get(key)
            && juki_codes::validate_municipality_code(code).is_ok()
        {
            return Some(code.clone());
        }
    }
    let node = node?;
    if let Some(code) = node.strip_prefix("cs-")
        && juki_codes::validate_municipality_code(code).is_ok()
    {
        return Some(code.to_owned());
    }
    let p = node.strip_prefix("pref-")?.get(..2)?;
    juki_codes::validate_prefecture_code(p)
        .ok()
        .map(crate::domain::authz::prefecture_org)
}

fn clip(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(max)
        .collect()
}

impl Webhook {
    /// Checks the payload; the events of its alerts, in order.
    pub fn events(&self) -> Result<Vec<AlertEvent>, Error> {
        if self.version != "4" {
            return Err(Error::field(
                "version",
                "unsupported_version",
                format!(
                    "Alertmanager webhook version {:?}, expected \"4\"",
                    self.version
                ),
            ));
        }
        if self.alerts.len() > MAX_ALERTS {
            return Err(Error::field(
                "alerts",
                "too_many",
                format!("{} alerts, at most {MAX_ALERTS}", self.alerts.len()),
            ));
        }
        self.alerts
            .iter()
            .map(|a| {
                let fp = &a.fingerprint;
                if fp.is_empty() || fp.len() > 64 || !fp.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(Error::field(
                        "alerts.fingerprint",
                        "invalid_fingerprint",
                        "must be 1–64 ASCII letters and digits",
                    ));
                }
                let time = |field: &'static str, s: &str| {
                    s.parse::<Timestamp>().map_err(|e| {
                        Error::field(field, "invalid_time", format!("not RFC 3339: {e}"))
                    })
                };
                let starts_at = time("alerts.startsAt", &a.starts_at)?;
                let resolved_at = match a.status.as_str() {
                    "firing" => None,
                    "resolved" => Some(time("alerts.endsAt", &a.ends_at)?),
                    _ => {
                        return Err(Error::field(
                            "alerts.status",
                            "invalid_status",
                            "must be \"firing\" or \"resolved\"",
                        ));
                    }
                };
                let mut labels = self.common_labels.clone();
                labels.extend(a.labels.clone());
                let node = node_of(&labels);
                let name = clip(labels.get("alertname").map_or("alert", String::as_str), 100);
                let summary = a
                    .annotations
                    .get("summary")
                    .or_else(|| a.annotations.get("description"))
                    .or_else(|| self.common_annotations.get("summary"))
                    .map_or_else(String::new, |s| clip(s, 2000));
                Ok(AlertEvent {
                    fingerprint: fp.clone(),
                    starts_at,
                    resolved_at,
                    org: org_of(&labels, node.as_deref()),
                    nodes: node.into_iter().collect(),
                    name,
                    summary,
                })
            })
            .collect()
    }
}

/// The subject and body of the fault ticket opened for `events` (the new firings of a group).
pub fn ticket_text(hook: &Webhook, events: &[&AlertEvent]) -> (String, String, Vec<String>) {
    let mut names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    names.dedup();
    let mut nodes: Vec<String> = events.iter().flat_map(|e| e.nodes.clone()).collect();
    nodes.sort();
    nodes.dedup();
    nodes.truncate(MAX_NODES);
    let subject = clip(
        &format!(
            "監視アラート: {}{}",
            names.join(", "),
            if nodes.is_empty() {
                String::new()
            } else {
                format!(" ({})", nodes.join(", "))
            }
        ),
        MAX_SUBJECT,
    );
    let mut body = String::from("Alertmanager から障害連絡を受信しました。\n");
    if !hook.group_key.is_empty() {
        body.push_str(&format!("グループ: {}\n", clip(&hook.group_key, 500)));
    }
    for e in events {
        body.push_str(&format!(
            "- {} 発生 {} (fingerprint {}){}\n",
            e.name,
            e.starts_at,
            e.fingerprint,
            if e.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", e.summary)
            }
        ));
    }
    (subject, clip(&body, MAX_TEXT), nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisations_come_from_labels_or_node_names() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            org_of(&l(&[("org", "131016")]), None).as_deref(),
            Some("131016")
        );
        assert_eq!(
            org_of(&l(&[("org", "131017")]), Some("cs-271004")).as_deref(),
            Some("271004")
        );
        assert_eq!(org_of(&l(&[]), Some("pref-13")).as_deref(), Some("130001"));
        assert_eq!(org_of(&l(&[]), Some("national")), None);
        assert_eq!(node_of(&l(&[("node", "CS!")])), None);
    }
}
