//! The runs without a Job that must outlive the operator (the status's `unstarted`): after a
//! restart, a skipped day would be judged again as a missed one (and run under catch-up Once
//! once its newer day has a Job), and a day waiting past its deadline would be taken for a
//! missed one (and skipped under catch-up Skip). Grouped by entry, day and state, so a night
//! skipped nationwide is one list of names, not 5,400 objects.

use std::collections::BTreeMap;

use jiff::civil::Date;

use super::decide::RunState;
use crate::api::{UnstartedRuns, UnstartedState};

/// A run by names, which outlive one round's node indices: (namespace, node, entry, day).
pub type RunName = (String, String, String, Date);

/// The status groups of these runs, sorted (a status that does not change is not written).
pub fn to_status<'a>(
    runs: impl IntoIterator<Item = (&'a RunName, UnstartedState)>,
) -> Vec<UnstartedRuns> {
    let mut groups: BTreeMap<(&str, Date, UnstartedState), Vec<String>> = BTreeMap::new();
    for ((namespace, node, entry, date), state) in runs {
        groups
            .entry((entry.as_str(), *date, state))
            .or_default()
            .push(format!("{namespace}/{node}"));
    }
    groups
        .into_iter()
        .map(|((entry, date, state), mut nodes)| {
            nodes.sort();
            UnstartedRuns {
                entry: entry.to_string(),
                date: date.to_string(),
                state,
                nodes,
            }
        })
        .collect()
}

/// The runs of the status groups with the state a round records for them. A group whose date
/// or node names do not read (an edited status) is left out: its runs are judged again.
pub fn from_status(groups: &[UnstartedRuns]) -> Vec<(RunName, RunState)> {
    let mut out = Vec::new();
    for group in groups {
        let Ok(date) = group.date.parse::<Date>() else {
            continue;
        };
        let state = match group.state {
            UnstartedState::Skipped => RunState::Skipped,
            UnstartedState::Waiting => RunState::Pending,
        };
        for node in &group.nodes {
            if let Some((namespace, name)) = node.split_once('/') {
                let run = (
                    namespace.to_string(),
                    name.to_string(),
                    group.entry.clone(),
                    date,
                );
                out.push((run, state));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(node: &str, entry: &str, date: &str) -> RunName {
        let (ns, name) = node.split_once('/').unwrap();
        (ns.into(), name.into(), entry.into(), date.parse().unwrap())
    }

    #[test]
    fn runs_come_back_from_their_groups_with_their_state() {
        let runs = [
            (
                run("pref-13/cs-131016", "backup", "2026-11-17"),
                UnstartedState::Skipped,
            ),
            (
                run("pref-27/cs-271004", "backup", "2026-11-17"),
                UnstartedState::Skipped,
            ),
            (
                run("national/national", "stats", "2026-11-18"),
                UnstartedState::Waiting,
            ),
        ];
        let groups = to_status(runs.iter().map(|(r, s)| (r, *s)));
        assert_eq!(groups.len(), 2, "{groups:#?}");
        assert_eq!(
            groups[0].nodes,
            ["pref-13/cs-131016", "pref-27/cs-271004"],
            "one group per entry, day and state"
        );
        let mut back = from_status(&groups);
        back.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<(RunName, RunState)> = runs
            .iter()
            .map(|(r, s)| {
                let state = match s {
                    UnstartedState::Skipped => RunState::Skipped,
                    UnstartedState::Waiting => RunState::Pending,
                };
                (r.clone(), state)
            })
            .collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
    }

    #[test]
    fn an_edited_group_that_does_not_read_is_left_out() {
        let groups = vec![
            UnstartedRuns {
                entry: "backup".into(),
                date: "2026-13-40".into(),
                state: UnstartedState::Skipped,
                nodes: vec!["ns/a".into()],
            },
            UnstartedRuns {
                entry: "backup".into(),
                date: "2026-11-17".into(),
                state: UnstartedState::Skipped,
                nodes: vec!["no-namespace".into(), "ns/b".into()],
            },
        ];
        let back = from_status(&groups);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, run("ns/b", "backup", "2026-11-17"));
    }
}
