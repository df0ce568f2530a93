//! `kubectl juki rerun`: one more attempt of a run (a node, an entry, an operating day) that
//! failed, was given up or should run again. The attempt is a Job like the operator's, named by
//! its run key with the next attempt number; the operator then follows it as any attempt (its
//! timeout, its outcome in the status). A run whose latest attempt is still running is refused.

use jiff::civil::Date;
use k8s_openapi::api::batch::v1::Job;

use super::decide::RunState;
use super::job::{ATTEMPT_LABEL, SCHEDULE_LABEL};
use super::key::RunKey;
use super::record::state_of;
use crate::resources::{BATCH_LABEL, DATE_LABEL, NODE_LABEL};

/// The key of the next attempt of `entry` on `namespace/node` for `date`, given the Jobs of that
/// namespace; an error names what is running.
pub fn next_attempt(
    schedule: &str,
    namespace: &str,
    node: &str,
    entry: &str,
    date: Date,
    jobs: &[Job],
) -> Result<RunKey, String> {
    let day = date.strftime("%Y%m%d").to_string();
    let latest = jobs
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|j| {
            let labels = j.metadata.labels.as_ref()?;
            let label = |k: &str| labels.get(k).map(String::as_str);
            let ours = label(SCHEDULE_LABEL).unwrap_or("") == schedule
                && label(NODE_LABEL) == Some(node)
                && label(BATCH_LABEL) == Some(entry)
                && label(DATE_LABEL) == Some(day.as_str());
            let attempt = label(ATTEMPT_LABEL).map_or(Some(1), |a| a.parse().ok())?;
            ours.then_some((attempt, j))
        })
        .max_by_key(|(attempt, _)| *attempt);
    let attempt = match latest {
        None => 1,
        Some((n, job)) => {
            if let RunState::Running { .. } = state_of(job, n) {
                return Err(format!(
                    "attempt {n} of {entry} on {namespace}/{node} for {date} is running (Job {}): wait for it to end",
                    job.metadata.name.as_deref().unwrap_or_default()
                ));
            }
            n + 1
        }
    };
    Ok(RunKey {
        namespace: namespace.into(),
        node: node.into(),
        entry: entry.into(),
        date,
        attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use std::collections::BTreeMap;

    fn job(attempt: &str, status: JobStatus) -> Job {
        let mut job = Job::default();
        job.metadata.namespace = Some("p27".into());
        job.metadata.name = Some(format!("pref-27-report-20261119-{attempt}"));
        job.metadata.labels = Some(BTreeMap::from([
            (SCHEDULE_LABEL.to_string(), "nightly".to_string()),
            (NODE_LABEL.to_string(), "pref-27".to_string()),
            (BATCH_LABEL.to_string(), "report".to_string()),
            (DATE_LABEL.to_string(), "20261119".to_string()),
            (ATTEMPT_LABEL.to_string(), attempt.to_string()),
        ]));
        job.status = Some(status);
        job
    }

    fn failed() -> JobStatus {
        JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        }
    }

    #[test]
    fn the_next_attempt_follows_the_latest_and_a_running_one_is_refused() {
        let day = date(2026, 11, 19);
        let next = |jobs: &[Job]| next_attempt("nightly", "p27", "pref-27", "report", day, jobs);
        assert_eq!(next(&[]).unwrap().attempt, 1);
        let given_up = [job("1", failed()), job("2", failed())];
        let key = next(&given_up).unwrap();
        assert_eq!(key.job_name(), "pref-27-report-20261119-3");
        let running = [job("1", failed()), job("2", JobStatus::default())];
        assert_eq!(
            next(&running).unwrap_err(),
            "attempt 2 of report on p27/pref-27 for 2026-11-19 is running (Job pref-27-report-20261119-2): wait for it to end"
        );
        // Another schedule's, node's or day's Jobs do not count.
        assert_eq!(
            next_attempt("other", "p27", "pref-27", "report", day, &given_up)
                .unwrap()
                .attempt,
            1
        );
        let other_day = date(2026, 11, 20);
        assert_eq!(
            next_attempt("nightly", "p27", "pref-27", "report", other_day, &given_up)
                .unwrap()
                .attempt,
            1
        );
    }
}
