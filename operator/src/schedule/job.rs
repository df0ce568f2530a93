//! The Job of one attempt, built as a pure function: a juki-node batch is the calendar batches'
//! Job (`resources::batch_job`), a pod template runs as written; both are named by the run's key,
//! owned by the node, labelled with the schedule, entry, date and attempt, and limited to the
//! entry's timeout.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};

use super::compile::{Entry, Work};
use super::key::RunKey;
use crate::api::JukiNode;
use crate::resources::{BATCH_OF_LABEL, Context, batch_job};

/// Label naming the JobSchedule of a Job ("" for the calendar's implicit schedule).
pub const SCHEDULE_LABEL: &str = "jukinet.io/schedule";
/// Label carrying the attempt number of a Job.
pub const ATTEMPT_LABEL: &str = "jukinet.io/attempt";
/// How long a finished run's Job is kept: one day past the look-back of [`super::decide`].
pub const JOB_TTL_DAYS: i32 = super::LOOKBACK_DAYS + 2;

/// The Job of attempt `key` of `entry` on `node`, from the JobSchedule `schedule`.
pub fn job(node: &JukiNode, ctx: &Context<'_>, schedule: &str, entry: &Entry, key: &RunKey) -> Job {
    let batch = match &entry.work {
        Work::Batch(batch) => batch.as_str(),
        Work::Template(_) => entry.name.as_str(),
    };
    let mut job = batch_job(node, ctx, batch, key.date);
    job.metadata.name = Some(key.job_name());
    let labels = job.metadata.labels.get_or_insert_default();
    labels.insert(crate::resources::BATCH_LABEL.into(), entry.name.clone());
    labels.insert(SCHEDULE_LABEL.into(), schedule.into());
    labels.insert(ATTEMPT_LABEL.into(), key.attempt.to_string());
    let spec = job.spec.get_or_insert_default();
    // Retries are the schedule's (new Jobs after a backoff), not the Job's.
    spec.backoff_limit = Some(0);
    // The Jobs are the record of runs: they outlive the days decide looks back on, so a day
    // whose Job is gone is never taken for one that has not run.
    spec.ttl_seconds_after_finished = Some(JOB_TTL_DAYS * 24 * 3600);
    spec.active_deadline_seconds = Some(entry.timeout.as_secs());
    if let Work::Template(template) = &entry.work {
        spec.template = templated(template, &spec.template, key);
    }
    job
}

/// The entry's pod template with the operator's labels, `restartPolicy: Never` unless it says
/// otherwise, and the run's facts in every container's environment.
fn templated(template: &PodTemplateSpec, batch: &PodTemplateSpec, key: &RunKey) -> PodTemplateSpec {
    let mut out = template.clone();
    let labels = out
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    if let Some(ours) = batch.metadata.as_ref().and_then(|m| m.labels.as_ref()) {
        for (k, v) in ours {
            labels.insert(k.clone(), v.clone());
        }
    }
    labels.insert(BATCH_OF_LABEL.into(), key.node.clone());
    let spec = out.spec.get_or_insert_default();
    spec.restart_policy.get_or_insert_with(|| "Never".into());
    let facts = [
        ("JUKI_NODE", key.node.clone()),
        ("JUKI_OPERATING_DATE", key.date.to_string()),
        ("JUKI_ATTEMPT", key.attempt.to_string()),
    ];
    for container in &mut spec.containers {
        let env = container.env.get_or_insert_default();
        for (name, value) in &facts {
            env.retain(|e| e.name != *name);
            env.push(EnvVar {
                name: (*name).into(),
                value: Some(value.clone()),
                ..EnvVar::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobScheduleSpec, JukiNodeSpec};
    use crate::resources::SqliteVolume;
    use crate::schedule::Schedule;
    use jiff::civil::date;
    use serde_json::json;

    fn cs() -> JukiNode {
        let spec: JukiNodeSpec =
            serde_json::from_value(json!({"tier": "CS", "municipality": "131016"})).unwrap();
        let mut node = JukiNode::new("cs-131016", spec);
        node.metadata.namespace = Some("juki-pref-13".into());
        node.metadata.uid = Some("uid-1".into());
        node
    }

    fn entries(spec: serde_json::Value) -> Schedule {
        let spec: JobScheduleSpec = serde_json::from_value(json!({ "entries": spec })).unwrap();
        Schedule::new(&spec).unwrap()
    }

    fn key(entry: &str, attempt: u32) -> RunKey {
        RunKey {
            namespace: "juki-pref-13".into(),
            node: "cs-131016".into(),
            entry: entry.into(),
            date: date(2026, 11, 30),
            attempt,
        }
    }

    #[test]
    fn a_batch_entry_runs_the_node_batch_under_the_run_key_with_its_timeout() {
        let schedule = entries(json!([{"name": "weekend-backup", "batch": "backup",
                                       "timeoutMinutes": 90}]));
        let ctx = Context {
            calendar_json: &json!({}),
            extensions_json: &serde_json::json!([]),
            upstream_url: None,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
            sqlite_volume: SqliteVolume::EmptyDir,
        };
        let job = job(
            &cs(),
            &ctx,
            "nightly",
            &schedule.entries[0],
            &key("weekend-backup", 2),
        );
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("cs-131016-weekend-backup-20261130-2")
        );
        let labels = job.metadata.labels.clone().unwrap();
        assert_eq!(labels[SCHEDULE_LABEL], "nightly");
        assert_eq!(labels[ATTEMPT_LABEL], "2");
        assert_eq!(labels[crate::resources::BATCH_LABEL], "weekend-backup");
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(5400))
        );
        // Kept beyond the days the record is read from (a 3-day TTL, as the calendar batches
        // have, would make day 4 look unrun and run again).
        let kept_days = spec.ttl_seconds_after_finished.unwrap() / 86_400;
        assert!(
            kept_days > crate::schedule::LOOKBACK_DAYS + 1,
            "{kept_days}"
        );
        let args = spec.template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert_eq!(args, ["batch", "backup", "--date", "2026-11-30"]);
    }

    #[test]
    fn a_template_entry_runs_its_containers_with_the_run_facts() {
        let schedule = entries(
            json!([{"name": "report", "template": {"spec": {"containers": [
                {"name": "report", "image": "example/report:1", "env": [{"name": "JUKI_NODE", "value": "x"}]}
            ]}}}]),
        );
        let ctx = Context {
            calendar_json: &json!({}),
            extensions_json: &serde_json::json!([]),
            upstream_url: None,
            node_clock: None,
            delivery_keys: None,
            otlp_endpoint: None,
            sqlite_volume: SqliteVolume::EmptyDir,
        };
        let job = job(
            &cs(),
            &ctx,
            "nightly",
            &schedule.entries[0],
            &key("report", 1),
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.name, "cs-131016");
        let template = job.spec.unwrap().template;
        assert_eq!(
            template.metadata.unwrap().labels.unwrap()[BATCH_OF_LABEL],
            "cs-131016"
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers[0].image.as_deref(), Some("example/report:1"));
        let env: Vec<(String, String)> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            [
                ("JUKI_NODE".into(), "cs-131016".into()),
                ("JUKI_OPERATING_DATE".into(), "2026-11-30".into()),
                ("JUKI_ATTEMPT".into(), "1".into()),
            ]
        );
        assert!(
            pod.volumes.is_none(),
            "the node's database is not the template's"
        );
    }
}
