//! `kubectl juki jobs`: what each JobSchedule's status says, as a table for people — its counts
//! and validity, then its runs (failures first, then each node's latest run per entry).

use std::fmt::Write;

use kube::ResourceExt;

use crate::api::JobSchedule;

/// The report of `schedules`, in the order given.
pub fn render(schedules: &[JobSchedule]) -> String {
    if schedules.is_empty() {
        return "no JobSchedule found\n".into();
    }
    let mut out = String::new();
    for s in schedules {
        let name = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
        let Some(status) = &s.status else {
            writeln!(out, "JobSchedule {name}: not seen by the operator yet\n").unwrap();
            continue;
        };
        let valid = status.conditions.iter().find(|c| c.type_ == "Valid");
        let validity = match valid {
            Some(c) if c.status == "True" && c.reason == "Valid" => "valid".to_string(),
            Some(c) => format!("{}: {}", c.reason, c.message),
            None => "not validated yet".into(),
        };
        writeln!(
            out,
            "JobSchedule {name}: {} entries, {} running, {} late, {} failed; {validity}",
            status.entries, status.running, status.late, status.failed
        )
        .unwrap();
        if status.runs.is_empty() {
            writeln!(out, "  no run yet\n").unwrap();
            continue;
        }
        writeln!(
            out,
            "  {:<28} {:<20} {:<10} {:<9} {:>7}  {:<40} MESSAGE",
            "NODE", "ENTRY", "DATE", "STATE", "ATTEMPT", "JOB"
        )
        .unwrap();
        for r in &status.runs {
            writeln!(
                out,
                "  {:<28} {:<20} {:<10} {:<9} {:>7}  {:<40} {}",
                r.node,
                r.entry,
                r.date,
                r.state,
                r.attempt,
                r.job.as_deref().unwrap_or("-"),
                r.message.as_deref().unwrap_or("")
            )
            .unwrap();
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobScheduleSpec, JobScheduleStatus, RunStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use serde_json::json;

    fn schedule(name: &str, status: Option<JobScheduleStatus>) -> JobSchedule {
        let spec: JobScheduleSpec =
            serde_json::from_value(json!({"entries": [{"name": "backup", "batch": "backup"}]}))
                .unwrap();
        let mut s = JobSchedule::new(name, spec);
        s.metadata.namespace = Some("p27".into());
        s.status = status;
        s
    }

    #[test]
    fn counts_validity_and_runs_failures_first_one_line_each() {
        let status = JobScheduleStatus {
            entries: 2,
            running: 0,
            late: 1,
            failed: 1,
            runs: vec![RunStatus {
                node: "p27/pref-27".into(),
                entry: "stuck-report".into(),
                date: "2026-11-19".into(),
                state: "Failed".into(),
                attempt: 2,
                job: Some("pref-27-stuck-report-20261119-2".into()),
                since: None,
                message: Some("failed 2 attempts; see the Job's logs".into()),
            }],
            conditions: vec![Condition {
                type_: "Valid".into(),
                status: "True".into(),
                reason: "ValidWithWarnings".into(),
                message: "spec.entries[1].nodes: matches no JukiNode".into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..JobScheduleStatus::default()
        };
        let text = render(&[schedule("nightly", Some(status)), schedule("new", None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "JobSchedule p27/nightly: 2 entries, 0 running, 1 late, 1 failed; ValidWithWarnings: spec.entries[1].nodes: matches no JukiNode"
        );
        assert!(lines[1].starts_with("  NODE"), "{text}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>()[..6],
            [
                "p27/pref-27",
                "stuck-report",
                "2026-11-19",
                "Failed",
                "2",
                "pref-27-stuck-report-20261119-2"
            ]
        );
        assert!(
            lines[2].ends_with("failed 2 attempts; see the Job's logs"),
            "{text}"
        );
        assert_eq!(
            lines[4],
            "JobSchedule p27/new: not seen by the operator yet"
        );
        assert_eq!(render(&[]), "no JobSchedule found\n");
    }
}
