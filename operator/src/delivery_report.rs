//! `kubectl juki delivery status`: one FileDelivery as a person reads it, from its spec and
//! status only (pure).

use std::fmt::Write;

use crate::api::FileDelivery;

/// The report: what is delivered where, the phase and wave, the counts, per prefecture, the
/// failed nodes with why, the nodes it is still being taken back from, and the last problem.
pub fn render(delivery: &FileDelivery) -> String {
    let spec = &delivery.spec;
    let status = delivery.status.clone().unwrap_or_default();
    let ns = delivery.metadata.namespace.as_deref().unwrap_or_default();
    let name = delivery.metadata.name.as_deref().unwrap_or_default();
    let mut out = String::new();
    let phase = status.phase.map_or("(not looked at yet)", |p| p.as_str());
    let mut flags = Vec::new();
    if spec.paused {
        flags.push("paused");
    }
    if spec.rollback {
        flags.push("rollback asked");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    let _ = writeln!(
        out,
        "FileDelivery {ns}/{name}: {} {phase}{flags}",
        spec.what()
    );
    let _ = writeln!(
        out,
        "wave {}: {} targets, {} applied, {} fetched, {} pending, {} failed",
        status.wave.as_deref().unwrap_or("-"),
        status.targets,
        status.applied,
        status.fetched,
        status.pending,
        status.failed
    );
    if !status.prefectures.is_empty() {
        let list: Vec<String> = status
            .prefectures
            .iter()
            .map(|(code, text)| format!("{code} {text}"))
            .collect();
        let _ = writeln!(out, "prefectures (applied/targets): {}", list.join("; "));
    }
    if !status.failures.is_empty() {
        let _ = writeln!(out, "failed:");
        for f in &status.failures {
            let why = f.message.as_deref().unwrap_or_default();
            let _ = writeln!(out, "  {}  {why}", f.node);
        }
        let unlisted = status.failed - status.failures.len() as i32;
        if unlisted > 0 {
            let _ = writeln!(out, "  … and {unlisted} more");
        }
    }
    if !status.withdrawing.is_empty() {
        let _ = writeln!(
            out,
            "being taken back from (not reached yet): {}",
            status.withdrawing.join(", ")
        );
    }
    if let Some(message) = &status.message {
        let _ = writeln!(out, "message: {message}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        DeliveryPhase, FileDeliverySpec, FileDeliveryStatus, NodeDelivery, NodeDeliveryPhase,
    };

    fn delivery(status: Option<FileDeliveryStatus>) -> FileDelivery {
        let spec: FileDeliverySpec = serde_json::from_value(serde_json::json!({
            "file": "allow-list", "source": {"inline": "{}"}, "sha256": "ab".repeat(32),
        }))
        .unwrap();
        let mut d = FileDelivery::new("allow-2026-12", spec);
        d.metadata.namespace = Some("juki-national".into());
        d.status = status;
        d
    }

    #[test]
    fn a_halted_delivery_reads_with_its_failures_and_what_is_left_to_take_back() {
        let mut status = FileDeliveryStatus {
            phase: Some(DeliveryPhase::Failed),
            wave: Some("2/3".into()),
            targets: 120,
            pending: 100,
            fetched: 3,
            applied: 14,
            failed: 3,
            withdrawing: vec!["juki-pref-13/cs-131016".into()],
            message: Some("juki-pref-13/cs-131016: withdraw: node unreachable".into()),
            ..FileDeliveryStatus::default()
        };
        status
            .prefectures
            .insert("13".into(), "14/63, 3 failed".into());
        for n in ["131016", "131041"] {
            status.failures.push(NodeDelivery {
                node: format!("juki-pref-13/cs-{n}"),
                phase: NodeDeliveryPhase::Failed,
                message: Some("refused at its start: allow-list: …".into()),
            });
        }
        assert_eq!(
            render(&delivery(Some(status))),
            "FileDelivery juki-national/allow-2026-12: allow-list (sha256 abababababab…) Failed\n\
             wave 2/3: 120 targets, 14 applied, 3 fetched, 100 pending, 3 failed\n\
             prefectures (applied/targets): 13 14/63, 3 failed\n\
             failed:\n  juki-pref-13/cs-131016  refused at its start: allow-list: …\n  \
             juki-pref-13/cs-131041  refused at its start: allow-list: …\n  … and 1 more\n\
             being taken back from (not reached yet): juki-pref-13/cs-131016\n\
             message: juki-pref-13/cs-131016: withdraw: node unreachable\n"
        );
    }

    #[test]
    fn a_new_delivery_says_it_was_not_looked_at_and_shows_a_pause() {
        let mut d = delivery(None);
        d.spec.paused = true;
        assert_eq!(
            render(&d),
            "FileDelivery juki-national/allow-2026-12: allow-list (sha256 abababababab…) (not looked at yet) [paused]\n\
             wave -: 0 targets, 0 applied, 0 fetched, 0 pending, 0 failed\n"
        );
    }
}
