//! The wave plan of a file delivery: which nodes may fetch now, when a wave is complete, when
//! to halt and roll back, and whether a node with a required delivery may go Online. Pure: the
//! controller picks the nodes with [`targets_of`], gathers a [`Rollout`], calls [`plan`] and
//! [`online_gate`], acts on the answer, and writes [`summarize`] into the status.
//!
//! The invariants ([`plan`] keeps them whatever it is given; the tests check them):
//! - content flows down the tree: a prefecture fetches only once the national server holds the
//!   content, a CS only once its own prefecture holds it;
//! - waves go in order: national, then the canary prefectures (with their CSs), then the rest;
//!   a wave opens only when every wave before it is healthy (applied, Ready and, for programs,
//!   the relay still accepted upstream);
//! - a failure halts the delivery: nothing more is fetched anywhere, and every node that
//!   fetched or applied it rolls back;
//! - a node stopped by the calendar is pending, not failed: its wave waits for its next start.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use juki_calendar::Tier;

use crate::api::{
    DeliveredFile, DeliveryCanaries, DeliveryPhase, DeliveryTargets, FileDeliveryStatus,
    NodeDelivery, NodeDeliveryPhase,
};
use crate::topology::TopologyNode;

/// A targeted node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub tier: Tier,
    /// The prefecture code (None for the national server).
    pub prefecture: Option<u8>,
}

/// Where one node is with the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Not fetched yet (also a node the calendar has stopped).
    Pending,
    /// Holds the verified content, staged for its next start.
    Fetched,
    /// Applied at a start.
    Applied,
    /// Refused the content or failed to apply it.
    Failed(String),
}

/// What was observed of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: NodeState,
    /// The node runs and its path upstream is online (it can fetch now).
    pub online: bool,
    /// The node is Ready.
    pub ready: bool,
    /// For program deliveries: the node's relay is still accepted by its upstream (the 2013
    /// guard). Always true for files.
    pub upstream_accepts: bool,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            state: NodeState::Pending,
            online: false,
            ready: false,
            upstream_accepts: true,
        }
    }
}

/// The canary prefectures: named, or the first `n` targeted prefectures by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canaries {
    Named(Vec<u8>),
    Count(usize),
}

/// One delivery as the controller sees it.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub targets: Vec<Target>,
    /// By node name; a target not in the map is Pending and offline.
    pub observed: BTreeMap<String, Observed>,
    pub canaries: Canaries,
    /// Paused by a person: nothing new is fetched.
    pub paused: bool,
    /// The national server holds the content (it is the source even when not a target).
    pub source_holds: bool,
    /// A person rolled it back: it is withdrawn from every node that holds it.
    pub rolled_back: bool,
    /// Targets that have not applied it by then do not go Online.
    pub required: Option<RequiredBefore>,
}

/// Why a rollout cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the delivery names no node: its targets match nothing")]
    NoTargets,
    #[error("targets: prefecture code {0} is not 01–47")]
    BadPrefecture(u8),
    #[error("targets: node {0} is listed twice")]
    Duplicate(String),
    #[error("targets: {0} is a prefecture or CS node without a prefecture code")]
    NoPrefecture(String),
    #[error("targets: more than one national node ({0})")]
    TwoNationals(String),
    #[error("canaries: prefecture {0:02} is not a targeted prefecture")]
    UnknownCanary(u8),
    #[error(
        "targets: CS {0} is targeted but its prefectural server is not; content reaches a CS through its prefecture"
    )]
    NoCarrier(String),
    #[error("spec.targets.prefectures[{index}]: {code:?} is not a prefecture code (\"01\"–\"47\")")]
    BadPrefectureCode { index: usize, code: String },
    #[error(
        "spec.canaries.prefectures[{index}]: {code:?} is not a prefecture code (\"01\"–\"47\")"
    )]
    BadCanaryCode { index: usize, code: String },
    #[error(
        "spec.requiredBefore: {0:?} is neither NextOnlineStart nor an RFC 3339 instant (e.g. 2026-12-07T08:00:00+09:00)"
    )]
    BadRequiredBefore(String),
}

/// A prefecture code as written in a spec: two digits, 01–47.
fn prefecture_code(code: &str) -> Option<u8> {
    let digits = code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit());
    code.parse::<u8>()
        .ok()
        .filter(|p| digits && (1..=47).contains(p))
}

/// The canary wave `spec.canaries` asks for (default: the first targeted prefecture).
pub fn canaries_of(spec: &DeliveryCanaries) -> Result<Canaries, PlanError> {
    if spec.prefectures.is_empty() {
        return Ok(Canaries::Count(spec.count.map_or(1, usize::from)));
    }
    spec.prefectures
        .iter()
        .enumerate()
        .map(|(index, code)| {
            prefecture_code(code).ok_or_else(|| PlanError::BadCanaryCode {
                index,
                code: code.clone(),
            })
        })
        .collect::<Result<_, _>>()
        .map(Canaries::Named)
}

/// The nodes a delivery's `spec.targets` names among `nodes` (named `namespace/name`). Empty
/// tiers mean Prefecture and CS, empty prefectures every prefecture; the national server is
/// the source, and a target when its tier is listed.
pub fn targets_of(
    spec: &DeliveryTargets,
    nodes: &[TopologyNode],
) -> Result<Vec<Target>, PlanError> {
    let mut prefectures = BTreeSet::new();
    for (index, code) in spec.prefectures.iter().enumerate() {
        let p = prefecture_code(code).ok_or_else(|| PlanError::BadPrefectureCode {
            index,
            code: code.clone(),
        })?;
        prefectures.insert(p);
    }
    let tiers: &[Tier] = if spec.tiers.is_empty() {
        &[Tier::Prefecture, Tier::Cs]
    } else {
        &spec.tiers
    };
    let chosen = |n: &TopologyNode| {
        tiers.contains(&n.tier)
            && (n.tier == Tier::National
                || prefectures.is_empty()
                || n.prefecture.is_some_and(|p| prefectures.contains(&p)))
    };
    let targets: Vec<Target> = nodes
        .iter()
        .filter(|n| chosen(n))
        .map(|n| Target {
            name: format!("{}/{}", n.namespace, n.name),
            tier: n.tier,
            prefecture: n.prefecture,
        })
        .collect();
    if targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    Ok(targets)
}

/// A delivery's status as a person reads it at 1,789 nodes: counts, counts per prefecture, and
/// only the failures by node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub phase: DeliveryPhase,
    pub targets: usize,
    /// Nodes per state.
    pub by_state: BTreeMap<NodeDeliveryPhase, usize>,
    /// Per prefecture code, nodes per state (the national server is not in a prefecture).
    pub by_prefecture: BTreeMap<u8, BTreeMap<NodeDeliveryPhase, usize>>,
    /// The failed nodes and why.
    pub failures: Vec<(String, String)>,
}

impl Summary {
    /// The nodes in `state`.
    pub fn count(&self, state: NodeDeliveryPhase) -> usize {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
}

impl NodeState {
    pub fn phase(&self) -> NodeDeliveryPhase {
        match self {
            NodeState::Pending => NodeDeliveryPhase::Pending,
            NodeState::Fetched => NodeDeliveryPhase::Fetched,
            NodeState::Applied => NodeDeliveryPhase::Applied,
            NodeState::Failed(_) => NodeDeliveryPhase::Failed,
        }
    }
}

/// Summarizes `rollout` with its `plan`.
pub fn summarize(rollout: &Rollout, plan: &Plan) -> Summary {
    let pending = Observed::default();
    let mut by_state: BTreeMap<NodeDeliveryPhase, usize> = BTreeMap::new();
    let mut by_prefecture: BTreeMap<u8, BTreeMap<NodeDeliveryPhase, usize>> = BTreeMap::new();
    for t in &rollout.targets {
        let state = rollout
            .observed
            .get(&t.name)
            .unwrap_or(&pending)
            .state
            .phase();
        *by_state.entry(state).or_default() += 1;
        if let (Some(p), Tier::Prefecture | Tier::Cs) = (t.prefecture, t.tier) {
            *by_prefecture
                .entry(p)
                .or_default()
                .entry(state)
                .or_default() += 1;
        }
    }
    let targets = rollout.targets.len();
    let started = by_state
        .get(&NodeDeliveryPhase::Pending)
        .copied()
        .unwrap_or(0)
        < targets;
    let phase = match (plan.halted_in, plan.complete, started) {
        _ if rollout.rolled_back => DeliveryPhase::RolledBack,
        (Some(_), _, _) => DeliveryPhase::Failed,
        (None, true, _) => DeliveryPhase::Delivered,
        (None, false, true) => DeliveryPhase::Delivering,
        (None, false, false) => DeliveryPhase::Pending,
    };
    Summary {
        phase,
        targets,
        by_state,
        by_prefecture,
        failures: plan.waves.iter().flat_map(|w| w.failed.clone()).collect(),
    }
}

/// A wave and how it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// The prefecture codes of the wave (empty for the national wave).
    pub prefectures: Vec<u8>,
    pub nodes: Vec<String>,
    /// Every node applied, Ready and accepted upstream.
    pub healthy: bool,
    /// The nodes that failed, with why.
    pub failed: Vec<(String, String)>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub waves: Vec<Wave>,
    /// The first wave that is not healthy yet (= waves.len() when all are).
    pub open_wave: usize,
    /// The nodes that may fetch (and stage) the content now.
    pub fetch: Vec<String>,
    /// Set when a failure halted the delivery: the wave it happened in.
    pub halted_in: Option<usize>,
    /// On a halt: the nodes that hold or applied the content and return to the previous version.
    pub roll_back: Vec<String>,
    /// Every wave is healthy.
    pub complete: bool,
}

/// Checks the targets and canaries (the bad-input half of [`plan`]).
pub fn validate(rollout: &Rollout) -> Result<(), PlanError> {
    if rollout.targets.is_empty() {
        return Err(PlanError::NoTargets);
    }
    let mut names = BTreeSet::new();
    let mut national = None;
    for t in &rollout.targets {
        if !names.insert(t.name.as_str()) {
            return Err(PlanError::Duplicate(t.name.clone()));
        }
        match (t.tier, t.prefecture) {
            (Tier::National, _) => {
                if let Some(other) = national.replace(&t.name) {
                    return Err(PlanError::TwoNationals(format!("{other}, {}", t.name)));
                }
            }
            (_, None) => return Err(PlanError::NoPrefecture(t.name.clone())),
            (_, Some(p)) if !(1..=47).contains(&p) => return Err(PlanError::BadPrefecture(p)),
            _ => {}
        }
    }
    let servers: BTreeSet<u8> = rollout
        .targets
        .iter()
        .filter(|t| t.tier == Tier::Prefecture)
        .filter_map(|t| t.prefecture)
        .collect();
    if let Some(cs) = rollout
        .targets
        .iter()
        .find(|t| t.tier == Tier::Cs && !t.prefecture.is_some_and(|p| servers.contains(&p)))
    {
        return Err(PlanError::NoCarrier(cs.name.clone()));
    }
    if let Canaries::Named(codes) = &rollout.canaries {
        let targeted = prefectures(&rollout.targets);
        if let Some(c) = codes.iter().find(|c| !targeted.contains(c)) {
            return Err(PlanError::UnknownCanary(*c));
        }
    }
    Ok(())
}

fn prefectures(targets: &[Target]) -> BTreeSet<u8> {
    targets
        .iter()
        .filter(|t| t.tier != Tier::National)
        .filter_map(|t| t.prefecture)
        .collect()
}

/// The waves' prefectures: national (none), the canaries, the rest (empty waves left out).
fn wave_prefectures(rollout: &Rollout) -> Vec<Vec<u8>> {
    let all = prefectures(&rollout.targets);
    let canaries: BTreeSet<u8> = match &rollout.canaries {
        Canaries::Named(codes) => codes.iter().copied().filter(|c| all.contains(c)).collect(),
        Canaries::Count(n) => all.iter().copied().take(*n).collect(),
    };
    let rest: Vec<u8> = all.difference(&canaries).copied().collect();
    let mut waves = vec![Vec::new()];
    waves.extend(
        [canaries.into_iter().collect::<Vec<_>>(), rest]
            .into_iter()
            .filter(|w| !w.is_empty()),
    );
    waves
}

fn in_wave(target: &Target, index: usize, prefectures: &[u8]) -> bool {
    match target.tier {
        Tier::National => index == 0,
        _ => index > 0 && target.prefecture.is_some_and(|p| prefectures.contains(&p)),
    }
}

fn healthy(o: &Observed) -> bool {
    o.state == NodeState::Applied && o.ready && o.upstream_accepts
}

/// Whether a node holds the content (and can serve it below).
fn holds(o: &Observed) -> bool {
    matches!(o.state, NodeState::Fetched | NodeState::Applied)
}

/// Plans the rollout (see the module's invariants).
pub fn plan(rollout: &Rollout) -> Result<Plan, PlanError> {
    validate(rollout)?;
    let pending = Observed::default();
    let observed = |name: &str| rollout.observed.get(name).unwrap_or(&pending);
    let waves: Vec<Wave> = wave_prefectures(rollout)
        .into_iter()
        .enumerate()
        .map(|(index, prefectures)| {
            let members: Vec<&Target> = rollout
                .targets
                .iter()
                .filter(|t| in_wave(t, index, &prefectures))
                .collect();
            wave(prefectures, &members, &observed)
        })
        .collect();
    let open_wave = waves.iter().position(|w| !w.healthy).unwrap_or(waves.len());
    let halted_in = waves.iter().position(|w| !w.failed.is_empty());
    let mut plan = Plan {
        complete: open_wave == waves.len(),
        open_wave,
        halted_in,
        ..Plan::default()
    };
    if halted_in.is_some() || rollout.rolled_back {
        plan.roll_back = rollout
            .targets
            .iter()
            .filter(|t| holds(observed(&t.name)))
            .map(|t| t.name.clone())
            .collect();
    } else if !rollout.paused && !plan.complete {
        plan.fetch = may_fetch(rollout, &waves[open_wave], &observed);
    }
    plan.waves = waves;
    Ok(plan)
}

fn wave<'a>(
    prefectures: Vec<u8>,
    members: &[&Target],
    observed: &impl Fn(&str) -> &'a Observed,
) -> Wave {
    let failed = members
        .iter()
        .filter_map(|t| match &observed(&t.name).state {
            NodeState::Failed(why) => Some((t.name.clone(), why.clone())),
            _ => None,
        })
        .collect();
    Wave {
        prefectures,
        nodes: members.iter().map(|t| t.name.clone()).collect(),
        // A wave with no node (no national targeted) does not hold the others back.
        healthy: members.iter().all(|t| healthy(observed(&t.name))),
        failed,
    }
}

/// The pending, online nodes of the open wave whose source holds the content: the national
/// server (or, when it is not a target, the delivery's source itself) for a prefecture, the
/// prefecture for a CS.
fn may_fetch<'a>(
    rollout: &Rollout,
    open: &Wave,
    observed: &impl Fn(&str) -> &'a Observed,
) -> Vec<String> {
    let national = rollout.targets.iter().find(|t| t.tier == Tier::National);
    let national_holds = match national {
        Some(n) => holds(observed(&n.name)),
        None => rollout.source_holds,
    };
    let prefecture_holds = |p: Option<u8>| {
        rollout
            .targets
            .iter()
            .any(|t| t.tier == Tier::Prefecture && t.prefecture == p && holds(observed(&t.name)))
    };
    rollout
        .targets
        .iter()
        .filter(|t| open.nodes.contains(&t.name))
        .filter(|t| {
            let o = observed(&t.name);
            o.state == NodeState::Pending && o.online
        })
        .filter(|t| match t.tier {
            // The national server is given the content by the operator (an upload).
            Tier::National => true,
            Tier::Prefecture => national_holds,
            Tier::Cs => prefecture_holds(t.prefecture),
        })
        .map(|t| t.name.clone())
        .collect()
}

/// When a required delivery must be applied by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredBefore {
    /// The node's next online start.
    NextOnlineStart,
    /// An instant: starts at or after it need the delivery.
    At(Timestamp),
}

/// Whether a node may go Online at `start`, given one delivery it is targeted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Held back (reason `DeliveryNotApplied`), with why.
    Held(String),
}

/// Reads `spec.requiredBefore`: `NextOnlineStart` or an RFC 3339 instant.
pub fn required_before(text: &str) -> Result<RequiredBefore, PlanError> {
    if text == "NextOnlineStart" {
        return Ok(RequiredBefore::NextOnlineStart);
    }
    text.parse::<Timestamp>()
        .map(RequiredBefore::At)
        .map_err(|_| PlanError::BadRequiredBefore(text.chars().take(80).collect()))
}

/// Whether `node`, in `state` for delivery `delivery`, may go Online at `start`. A halted or
/// rolled-back delivery holds nobody: what it brought is being taken back.
pub fn online_gate(
    delivery: &str,
    state: &NodeState,
    required: Option<RequiredBefore>,
    start: Timestamp,
    halted: bool,
) -> Gate {
    let due = match required {
        None => false,
        Some(RequiredBefore::NextOnlineStart) => true,
        Some(RequiredBefore::At(deadline)) => start >= deadline,
    };
    if !due || halted || *state == NodeState::Applied {
        return Gate::Open;
    }
    let what = match state {
        NodeState::Failed(why) => format!("failed: {why}"),
        NodeState::Fetched => "fetched, not applied yet".to_owned(),
        _ => "not fetched yet".to_owned(),
    };
    Gate::Held(format!(
        "delivery {delivery} is required before this start and is {what}"
    ))
}

/// The targets of `rollout` that may not go Online at `now` (a start now), with why: the
/// gate of every target, as [`plan`] stands.
pub fn held_nodes(
    delivery: &str,
    rollout: &Rollout,
    plan: &Plan,
    now: Timestamp,
) -> Vec<(String, String)> {
    let halted = plan.halted_in.is_some() || rollout.rolled_back;
    let pending = Observed::default();
    rollout
        .targets
        .iter()
        .filter_map(|t| {
            let state = &rollout.observed.get(&t.name).unwrap_or(&pending).state;
            match online_gate(delivery, state, rollout.required, now, halted) {
                Gate::Open => None,
                Gate::Held(why) => Some((t.name.clone(), why)),
            }
        })
        .collect()
}

/// What a node's `GET /admin/v1/deliveries` answers (the parts read here).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NodeView {
    #[serde(default)]
    pub content: Vec<HeldContent>,
    #[serde(default)]
    pub staged: Vec<StagedFile>,
    #[serde(default)]
    pub files: Vec<AppliedFile>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct HeldContent {
    pub sha256: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct StagedFile {
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub refused: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct AppliedFile {
    pub file: String,
    pub current: AppliedVersion,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedVersion {
    pub sha256: String,
    #[serde(default)]
    pub applied_at: Option<String>,
}

impl NodeView {
    /// Where the node is with `sha256` delivered as `file`: applied (current), refused at its
    /// last start (failed), staged (fetched), or not yet (pending; content held for another
    /// file, or by the source, does not count).
    pub fn state(&self, file: &str, sha256: &str) -> NodeState {
        if self
            .files
            .iter()
            .any(|f| f.file == file && f.current.sha256 == sha256)
        {
            return NodeState::Applied;
        }
        match self
            .staged
            .iter()
            .find(|s| s.file == file && s.sha256 == sha256)
        {
            Some(StagedFile {
                refused: Some(why), ..
            }) => NodeState::Failed(format!("refused at its start: {why}")),
            Some(_) => NodeState::Fetched,
            None => NodeState::Pending,
        }
    }

    /// The node holds the content (the national server, to serve it below).
    pub fn holds(&self, sha256: &str) -> bool {
        self.content.iter().any(|c| c.sha256 == sha256)
    }

    /// The files it applied, for its JukiNode status (a removed file has no sha256: left out).
    pub fn delivered_files(&self) -> Vec<DeliveredFile> {
        let mut files: Vec<DeliveredFile> = self
            .files
            .iter()
            .filter(|f| !f.current.sha256.is_empty())
            .map(|f| DeliveredFile {
                file: f.file.clone(),
                sha256: f.current.sha256.clone(),
                applied_at: f.current.applied_at.clone(),
            })
            .collect();
        files.sort_by(|a, b| a.file.cmp(&b.file));
        files
    }
}

/// The most failed nodes a status lists by name.
pub const LISTED_FAILURES: usize = 50;

/// The status a person reads: the summary's counts, "applied/targets" per prefecture (with
/// the failures when there are any), the open wave, the first failures by node.
pub fn status_of(summary: &Summary, plan: &Plan) -> FileDeliveryStatus {
    let count = |state| summary.count(state) as i32;
    let prefectures = summary
        .by_prefecture
        .iter()
        .map(|(code, states)| {
            let total: usize = states.values().sum();
            let applied = states
                .get(&NodeDeliveryPhase::Applied)
                .copied()
                .unwrap_or(0);
            let text = match states.get(&NodeDeliveryPhase::Failed) {
                Some(failed) => format!("{applied}/{total}, {failed} failed"),
                None => format!("{applied}/{total}"),
            };
            (format!("{code:02}"), text)
        })
        .collect();
    let shown = plan.waves.len();
    FileDeliveryStatus {
        phase: Some(summary.phase),
        wave: (shown > 0).then(|| format!("{}/{shown}", (plan.open_wave + 1).min(shown))),
        targets: summary.targets as i32,
        pending: count(NodeDeliveryPhase::Pending),
        fetched: count(NodeDeliveryPhase::Fetched),
        applied: count(NodeDeliveryPhase::Applied),
        failed: count(NodeDeliveryPhase::Failed),
        prefectures,
        failures: summary
            .failures
            .iter()
            .take(LISTED_FAILURES)
            .map(|(node, why)| NodeDelivery {
                node: node.clone(),
                phase: NodeDeliveryPhase::Failed,
                message: Some(why.clone()),
            })
            .collect(),
        ..FileDeliveryStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(name: &str, tier: Tier, prefecture: Option<u8>) -> Target {
        Target {
            name: name.into(),
            tier,
            prefecture,
        }
    }

    /// National, prefectures 01, 13, 27 and two CSs under each.
    fn country() -> Vec<Target> {
        let mut t = vec![target("national", Tier::National, None)];
        for p in [1u8, 13, 27] {
            t.push(target(&format!("pref-{p:02}"), Tier::Prefecture, Some(p)));
            for c in 0..2 {
                t.push(target(&format!("cs-{p:02}-{c}"), Tier::Cs, Some(p)));
            }
        }
        t
    }

    fn rollout(canaries: Canaries) -> Rollout {
        Rollout {
            targets: country(),
            observed: BTreeMap::new(),
            canaries,
            paused: false,
            source_holds: true,
            rolled_back: false,
            required: None,
        }
    }

    fn set(r: &mut Rollout, name: &str, state: NodeState, online: bool) {
        r.observed.insert(
            name.into(),
            Observed {
                ready: state == NodeState::Applied,
                state,
                online,
                upstream_accepts: true,
            },
        );
    }

    fn all_online(r: &mut Rollout) {
        for t in r.targets.clone() {
            set(r, &t.name, NodeState::Pending, true);
        }
    }

    #[test]
    fn waves_go_national_canaries_rest() {
        let mut r = rollout(Canaries::Named(vec![13]));
        all_online(&mut r);
        let p = plan(&r).unwrap();
        let prefs: Vec<_> = p.waves.iter().map(|w| w.prefectures.clone()).collect();
        assert_eq!(prefs, vec![vec![], vec![13], vec![1, 27]]);
        assert_eq!(p.fetch, vec!["national"]);
        set(&mut r, "national", NodeState::Fetched, true);
        // The national server holds it but has not applied it: the canaries wait.
        assert!(plan(&r).unwrap().fetch.is_empty());
        set(&mut r, "national", NodeState::Applied, true);
        assert_eq!(plan(&r).unwrap().fetch, vec!["pref-13"]);
        set(&mut r, "pref-13", NodeState::Fetched, true);
        assert_eq!(plan(&r).unwrap().fetch, vec!["cs-13-0", "cs-13-1"]);
        for n in ["pref-13", "cs-13-0", "cs-13-1"] {
            set(&mut r, n, NodeState::Applied, true);
        }
        let p = plan(&r).unwrap();
        assert_eq!(
            (p.open_wave, p.fetch.clone()),
            (2, vec!["pref-01".into(), "pref-27".into()])
        );
        for t in country() {
            set(&mut r, &t.name, NodeState::Applied, true);
        }
        let p = plan(&r).unwrap();
        assert!(p.complete && p.fetch.is_empty() && p.roll_back.is_empty());
    }

    #[test]
    fn prefectures_wait_for_the_source_when_the_national_server_is_not_a_target() {
        let mut r = rollout(Canaries::Count(1));
        r.targets.retain(|t| t.tier != Tier::National);
        all_online(&mut r);
        r.source_holds = false;
        assert!(plan(&r).unwrap().fetch.is_empty());
        r.source_holds = true;
        assert_eq!(plan(&r).unwrap().fetch, vec!["pref-01"]);
    }

    #[test]
    fn canaries_are_named_prefecture_codes_or_a_count() {
        let named = |codes: &[&str]| DeliveryCanaries {
            prefectures: codes.iter().map(|c| c.to_string()).collect(),
            count: None,
        };
        assert_eq!(
            canaries_of(&DeliveryCanaries::default()),
            Ok(Canaries::Count(1))
        );
        assert_eq!(
            canaries_of(&DeliveryCanaries {
                prefectures: vec![],
                count: Some(3)
            }),
            Ok(Canaries::Count(3))
        );
        assert_eq!(
            canaries_of(&named(&["13", "01"])),
            Ok(Canaries::Named(vec![13, 1]))
        );
        for bad in ["48", "1", "00", "x1"] {
            let e = canaries_of(&named(&["13", bad])).unwrap_err();
            assert_eq!(
                e,
                PlanError::BadCanaryCode {
                    index: 1,
                    code: bad.into()
                }
            );
            assert!(
                e.to_string().starts_with("spec.canaries.prefectures[1]"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_nodes_answer_says_where_it_is_with_the_delivery() {
        let sha = "a".repeat(64);
        let other = "b".repeat(64);
        let view = |json: serde_json::Value| -> NodeView { serde_json::from_value(json).unwrap() };
        let empty =
            view(serde_json::json!({"content": [], "partial": [], "staged": [], "files": []}));
        assert_eq!(empty.state("codes", &sha), NodeState::Pending);
        // Held but staged for nothing (the source, or withdrawn): not fetched for this file.
        let held = view(serde_json::json!({"content": [{"sha256": sha, "bytes": 3}]}));
        assert_eq!(held.state("codes", &sha), NodeState::Pending);
        assert!(held.holds(&sha) && !held.holds(&other));
        let staged = view(serde_json::json!({"staged": [{"file": "codes", "sha256": sha}]}));
        assert_eq!(staged.state("codes", &sha), NodeState::Fetched);
        assert_eq!(staged.state("allow-list", &sha), NodeState::Pending);
        let refused = view(serde_json::json!({"staged": [
            {"file": "allow-list", "sha256": sha, "refused": "agency allow-list: line 1"}]}));
        assert_eq!(
            refused.state("allow-list", &sha),
            NodeState::Failed("refused at its start: agency allow-list: line 1".into())
        );
        let applied = view(serde_json::json!({
            "staged": [{"file": "codes", "sha256": other}],
            "files": [{"file": "codes", "current": {"sha256": sha, "appliedAt": "t"}, "previous": null}]}));
        assert_eq!(applied.state("codes", &sha), NodeState::Applied);
        assert_eq!(applied.state("codes", &other), NodeState::Fetched);
    }

    #[test]
    fn a_nodes_delivered_files_are_its_current_versions_by_name() {
        let view: NodeView = serde_json::from_value(serde_json::json!({
            "staged": [{"file": "notice", "sha256": "c".repeat(64)}],
            "files": [
                {"file": "notice", "current": {"sha256": "a".repeat(64), "appliedAt": "2026-11-26T07:30:00+09:00"}},
                {"file": "code-table", "current": {"sha256": "b".repeat(64)}},
            ]}))
        .unwrap();
        assert_eq!(
            view.delivered_files(),
            [
                DeliveredFile {
                    file: "code-table".into(),
                    sha256: "b".repeat(64),
                    applied_at: None
                },
                DeliveredFile {
                    file: "notice".into(),
                    sha256: "a".repeat(64),
                    applied_at: Some("2026-11-26T07:30:00+09:00".into())
                },
            ]
        );
    }

    #[test]
    fn the_status_counts_by_state_and_prefecture_and_names_only_failures() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        set(&mut r, "national", NodeState::Applied, true);
        set(&mut r, "pref-01", NodeState::Applied, true);
        set(&mut r, "cs-01-0", NodeState::Fetched, true);
        set(&mut r, "cs-01-1", NodeState::Failed("refused".into()), true);
        let p = plan(&r).unwrap();
        let status = status_of(&summarize(&r, &p), &p);
        assert_eq!(status.phase, Some(DeliveryPhase::Failed));
        assert_eq!(status.wave.as_deref(), Some("2/3"));
        assert_eq!(
            (
                status.targets,
                status.pending,
                status.fetched,
                status.applied,
                status.failed
            ),
            (10, 6, 1, 2, 1)
        );
        assert_eq!(status.prefectures["01"], "1/3, 1 failed");
        assert_eq!(status.prefectures["13"], "0/3");
        assert!(!status.prefectures.contains_key("00"));
        assert_eq!(status.failures.len(), 1);
        assert_eq!(status.failures[0].node, "cs-01-1");
        assert_eq!(status.failures[0].message.as_deref(), Some("refused"));

        for t in country() {
            set(&mut r, &t.name, NodeState::Applied, true);
        }
        let p = plan(&r).unwrap();
        let status = status_of(&summarize(&r, &p), &p);
        assert_eq!(
            (status.phase, status.wave.as_deref(), status.applied),
            (Some(DeliveryPhase::Delivered), Some("3/3"), 10)
        );
    }

    #[test]
    fn a_rollback_by_a_person_withdraws_it_everywhere_it_got_to() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        set(&mut r, "national", NodeState::Applied, true);
        set(&mut r, "pref-01", NodeState::Applied, true);
        set(&mut r, "cs-01-0", NodeState::Fetched, true);
        r.rolled_back = true;
        let p = plan(&r).unwrap();
        assert!(p.fetch.is_empty());
        assert_eq!(p.roll_back, vec!["national", "pref-01", "cs-01-0"]);
        assert_eq!(summarize(&r, &p).phase, DeliveryPhase::RolledBack);
    }

    #[test]
    fn a_canary_failure_halts_and_rolls_back() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        set(&mut r, "national", NodeState::Applied, true);
        set(&mut r, "pref-01", NodeState::Applied, true);
        set(&mut r, "cs-01-0", NodeState::Fetched, true);
        set(
            &mut r,
            "cs-01-1",
            NodeState::Failed("relay refused".into()),
            true,
        );
        let p = plan(&r).unwrap();
        assert_eq!(p.halted_in, Some(1));
        assert_eq!(
            p.waves[1].failed,
            vec![("cs-01-1".into(), "relay refused".into())]
        );
        assert!(p.fetch.is_empty());
        assert_eq!(p.roll_back, vec!["national", "pref-01", "cs-01-0"]);
    }

    #[test]
    fn a_node_stopped_by_the_calendar_is_pending_and_its_wave_waits() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        set(&mut r, "national", NodeState::Applied, true);
        set(&mut r, "pref-01", NodeState::Applied, true);
        set(&mut r, "cs-01-0", NodeState::Applied, true);
        set(&mut r, "cs-01-1", NodeState::Pending, false);
        let p = plan(&r).unwrap();
        assert_eq!((p.open_wave, p.halted_in), (1, None));
        assert!(p.fetch.is_empty(), "{:?}", p.fetch);
        set(&mut r, "cs-01-1", NodeState::Pending, true);
        assert_eq!(plan(&r).unwrap().fetch, vec!["cs-01-1"]);
    }

    #[test]
    fn an_unhealthy_program_node_holds_the_next_wave() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        for n in ["national", "pref-01", "cs-01-0", "cs-01-1"] {
            set(&mut r, n, NodeState::Applied, true);
        }
        r.observed.get_mut("cs-01-1").unwrap().upstream_accepts = false;
        assert!(plan(&r).unwrap().fetch.is_empty());
        r.observed.get_mut("cs-01-1").unwrap().upstream_accepts = true;
        r.paused = true;
        assert!(plan(&r).unwrap().fetch.is_empty());
        r.paused = false;
        assert_eq!(plan(&r).unwrap().fetch.len(), 2);
    }

    #[test]
    fn bad_targets_are_clear_errors() {
        let mut r = rollout(Canaries::Count(1));
        r.targets.clear();
        assert_eq!(plan(&r), Err(PlanError::NoTargets));
        let mut r = rollout(Canaries::Count(1));
        r.targets
            .push(target("pref-48", Tier::Prefecture, Some(48)));
        assert_eq!(
            plan(&r).unwrap_err().to_string(),
            "targets: prefecture code 48 is not 01–47"
        );
        let r = rollout(Canaries::Named(vec![14]));
        assert_eq!(plan(&r), Err(PlanError::UnknownCanary(14)));
        let mut r = rollout(Canaries::Count(1));
        r.targets.push(target("pref-01", Tier::Prefecture, Some(1)));
        assert_eq!(plan(&r), Err(PlanError::Duplicate("pref-01".into())));
        let mut r = rollout(Canaries::Count(1));
        r.targets.push(target("cs-x", Tier::Cs, None));
        assert!(matches!(plan(&r), Err(PlanError::NoPrefecture(_))));
        let mut r = rollout(Canaries::Count(1));
        r.targets.push(target("cs-14-0", Tier::Cs, Some(14)));
        assert_eq!(plan(&r), Err(PlanError::NoCarrier("cs-14-0".into())));
    }

    fn node(ns: &str, name: &str, tier: Tier, prefecture: Option<u8>) -> TopologyNode {
        TopologyNode {
            namespace: ns.into(),
            name: name.into(),
            tier,
            prefecture,
            upstream: None,
            tls: false,
        }
    }

    #[test]
    fn targets_from_the_spec() {
        let nodes = vec![
            node("national", "national", Tier::National, None),
            node("pref-13", "pref-13", Tier::Prefecture, Some(13)),
            node("pref-13", "cs-131016", Tier::Cs, Some(13)),
            node("pref-27", "pref-27", Tier::Prefecture, Some(27)),
            node("pref-27", "cs-271004", Tier::Cs, Some(27)),
        ];
        let names = |spec: &DeliveryTargets| -> Vec<String> {
            targets_of(spec, &nodes)
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(
            names(&DeliveryTargets::default()),
            [
                "pref-13/pref-13",
                "pref-13/cs-131016",
                "pref-27/pref-27",
                "pref-27/cs-271004"
            ]
        );
        let spec = DeliveryTargets {
            tiers: vec![Tier::National, Tier::Prefecture],
            prefectures: vec!["27".into()],
        };
        assert_eq!(names(&spec), ["national/national", "pref-27/pref-27"]);
        for (code, index) in [("48", 1), ("13 ", 1), ("1", 1), ("x", 1)] {
            let spec = DeliveryTargets {
                tiers: vec![],
                prefectures: vec!["13".into(), code.into()],
            };
            assert_eq!(
                targets_of(&spec, &nodes),
                Err(PlanError::BadPrefectureCode {
                    index,
                    code: code.into()
                })
            );
        }
        let spec = DeliveryTargets {
            tiers: vec![],
            prefectures: vec!["01".into()],
        };
        let e = targets_of(&spec, &nodes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the delivery names no node: its targets match nothing"
        );
        assert_eq!(
            PlanError::BadPrefectureCode {
                index: 0,
                code: "48".into()
            }
            .to_string(),
            "spec.targets.prefectures[0]: \"48\" is not a prefecture code (\"01\"–\"47\")"
        );
    }

    #[test]
    fn the_summary_counts_and_lists_only_failures() {
        let mut r = rollout(Canaries::Count(1));
        all_online(&mut r);
        let s = summarize(&r, &plan(&r).unwrap());
        assert_eq!(
            (s.phase, s.targets, s.count(NodeDeliveryPhase::Applied)),
            (DeliveryPhase::Pending, 10, 0)
        );
        set(&mut r, "national", NodeState::Applied, true);
        set(&mut r, "pref-01", NodeState::Fetched, true);
        let s = summarize(&r, &plan(&r).unwrap());
        assert_eq!(
            (s.phase, s.count(NodeDeliveryPhase::Applied)),
            (DeliveryPhase::Delivering, 1)
        );
        assert_eq!(s.count(NodeDeliveryPhase::Pending), 8);
        assert_eq!(s.by_prefecture[&1][&NodeDeliveryPhase::Fetched], 1);
        assert_eq!(s.by_prefecture[&1][&NodeDeliveryPhase::Pending], 2);
        assert!(s.failures.is_empty());
        set(
            &mut r,
            "cs-01-1",
            NodeState::Failed("refused by pref-01".into()),
            true,
        );
        let s = summarize(&r, &plan(&r).unwrap());
        assert_eq!(s.phase, DeliveryPhase::Failed);
        assert_eq!(
            s.failures,
            vec![("cs-01-1".into(), "refused by pref-01".into())]
        );
        for t in country() {
            set(&mut r, &t.name, NodeState::Applied, true);
        }
        let s = summarize(&r, &plan(&r).unwrap());
        assert_eq!(
            (s.phase, s.count(NodeDeliveryPhase::Applied)),
            (DeliveryPhase::Delivered, 10)
        );
        assert_eq!(s.by_prefecture.len(), 3);
    }

    #[test]
    fn the_deadline_gate() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let start = at("2024-06-03T00:00:00Z");
        let gate =
            |state, required, halted| online_gate("fd/codes", &state, required, start, halted);
        let next = Some(RequiredBefore::NextOnlineStart);
        assert_eq!(gate(NodeState::Applied, next, false), Gate::Open);
        assert_eq!(gate(NodeState::Pending, None, false), Gate::Open);
        let Gate::Held(message) = gate(NodeState::Fetched, next, false) else {
            panic!("held")
        };
        assert_eq!(
            message,
            "delivery fd/codes is required before this start and is fetched, not applied yet"
        );
        // A date: only starts at or after it are held.
        let later = Some(RequiredBefore::At(at("2024-06-04T00:00:00Z")));
        assert_eq!(gate(NodeState::Pending, later, false), Gate::Open);
        let due = Some(RequiredBefore::At(start));
        assert_eq!(
            gate(NodeState::Pending, due, false),
            Gate::Held(
                "delivery fd/codes is required before this start and is not fetched yet".into()
            )
        );
        // A halted delivery is being taken back: it holds nobody.
        assert_eq!(gate(NodeState::Failed("x".into()), due, true), Gate::Open);
    }

    #[test]
    fn required_before_reads_the_next_start_or_an_instant_and_names_the_field_otherwise() {
        assert_eq!(
            required_before("NextOnlineStart"),
            Ok(RequiredBefore::NextOnlineStart)
        );
        assert_eq!(
            required_before("2026-12-07T08:00:00+09:00"),
            Ok(RequiredBefore::At("2026-12-06T23:00:00Z".parse().unwrap()))
        );
        for bad in ["nextOnlineStart", "2026-12-07", "tomorrow", ""] {
            let e = required_before(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("spec.requiredBefore: ") && e.contains("NextOnlineStart"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_required_delivery_holds_every_target_that_has_not_applied_it_until_it_halts() {
        let now: Timestamp = "2024-06-03T00:00:00Z".parse().unwrap();
        let mut r = rollout(Canaries::Count(1));
        r.required = Some(RequiredBefore::NextOnlineStart);
        set(&mut r, "pref-01", NodeState::Applied, true);
        set(&mut r, "cs-01-1", NodeState::Fetched, true);
        let held = held_nodes("ns/codes", &r, &plan(&r).unwrap(), now);
        let names: Vec<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), country().len() - 1, "{names:?}");
        assert!(!names.contains(&"pref-01") && names.contains(&"cs-01-1"));
        // Not required: nobody is held.
        r.required = None;
        assert_eq!(held_nodes("ns/codes", &r, &plan(&r).unwrap(), now), []);
        // A failure halts it: it is taken back, and holds nobody.
        r.required = Some(RequiredBefore::NextOnlineStart);
        set(&mut r, "cs-01-1", NodeState::Failed("refused".into()), true);
        assert_eq!(held_nodes("ns/codes", &r, &plan(&r).unwrap(), now), []);
    }

    fn any_state() -> impl Strategy<Value = NodeState> {
        prop_oneof![
            4 => Just(NodeState::Pending),
            3 => Just(NodeState::Fetched),
            4 => Just(NodeState::Applied),
            1 => Just(NodeState::Failed("x".into())),
        ]
    }

    fn any_observed() -> impl Strategy<Value = Observed> {
        (
            any_state(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(state, online, ready, upstream_accepts)| Observed {
                state,
                online,
                ready,
                upstream_accepts,
            })
    }

    /// A country of 1–6 prefectures (codes 1–47) with 0–4 CSs each, maybe without national.
    fn any_rollout() -> impl Strategy<Value = Rollout> {
        (
            prop::collection::btree_set(1u8..=47, 1..6),
            prop::collection::vec(0usize..4, 6),
            any::<bool>(),
            prop_oneof![
                (0usize..4).prop_map(Canaries::Count),
                prop::collection::vec(0usize..6, 0..3)
                    .prop_map(|i| Canaries::Named(i.into_iter().map(|i| i as u8).collect())),
            ],
            prop::collection::vec(any_observed(), 40),
            any::<bool>(),
        )
            .prop_map(|(prefs, cs_counts, with_national, canaries, obs, paused)| {
                let prefs: Vec<u8> = prefs.into_iter().collect();
                let mut targets = Vec::new();
                if with_national {
                    targets.push(target("national", Tier::National, None));
                }
                for (i, p) in prefs.iter().enumerate() {
                    targets.push(target(&format!("pref-{p:02}"), Tier::Prefecture, Some(*p)));
                    for c in 0..cs_counts[i] {
                        targets.push(target(&format!("cs-{p:02}-{c}"), Tier::Cs, Some(*p)));
                    }
                }
                // Named canaries by index into the prefectures (always targeted).
                let canaries = match canaries {
                    Canaries::Named(ix) => Canaries::Named(
                        ix.into_iter()
                            .map(|i| prefs[i as usize % prefs.len()])
                            .collect(),
                    ),
                    c => c,
                };
                let observed = targets
                    .iter()
                    .zip(obs)
                    .map(|(t, o)| (t.name.clone(), o))
                    .collect();
                Rollout {
                    targets,
                    observed,
                    canaries,
                    paused,
                    source_holds: true,
                    rolled_back: false,
                    required: None,
                }
            })
    }

    fn state_of(r: &Rollout, name: &str) -> NodeState {
        r.observed
            .get(name)
            .map_or(NodeState::Pending, |o| o.state.clone())
    }

    /// The invariants of the module doc, for one plan.
    fn check(r: &Rollout, p: &Plan) {
        let by_name: BTreeMap<&str, &Target> =
            r.targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let wave_of = |name: &str| {
            p.waves
                .iter()
                .position(|w| w.nodes.iter().any(|n| n == name))
        };
        for name in &p.fetch {
            let t = by_name[name.as_str()];
            let o = &r.observed[name];
            assert!(
                o.online && o.state == NodeState::Pending,
                "{name} fetches: {o:?}"
            );
            // Never a CS before its prefecture holds the content.
            if t.tier == Tier::Cs {
                let pref = r
                    .targets
                    .iter()
                    .find(|x| x.tier == Tier::Prefecture && x.prefecture == t.prefecture)
                    .unwrap();
                assert!(
                    matches!(
                        state_of(r, &pref.name),
                        NodeState::Fetched | NodeState::Applied
                    ),
                    "{name} before {}",
                    pref.name
                );
            }
            if t.tier == Tier::Prefecture
                && let Some(n) = r.targets.iter().find(|x| x.tier == Tier::National)
            {
                assert!(matches!(
                    state_of(r, &n.name),
                    NodeState::Fetched | NodeState::Applied
                ));
            }
            // Never a later wave before the earlier ones are healthy.
            let w = wave_of(name).unwrap();
            assert!(p.waves[..w].iter().all(|x| x.healthy), "{name} in wave {w}");
        }
        // A failure anywhere halts everything.
        let failed = r
            .targets
            .iter()
            .any(|t| matches!(state_of(r, &t.name), NodeState::Failed(_)));
        assert_eq!(p.halted_in.is_some(), failed);
        if failed {
            assert!(p.fetch.is_empty());
            assert!(!p.complete);
        }
        if r.paused {
            assert!(p.fetch.is_empty());
        }
        // Every target is in exactly one wave.
        let in_waves: usize = p.waves.iter().map(|w| w.nodes.len()).sum();
        assert_eq!(in_waves, r.targets.len());
    }

    proptest! {
        #[test]
        fn every_plan_keeps_the_invariants(r in any_rollout()) {
            let p = plan(&r).unwrap();
            check(&r, &p);
        }

        /// Driving a rollout to the end by doing what the plans say (nodes fetch, apply at
        /// their start, some stopped by the calendar for a while) keeps the invariants at every
        /// step and ends complete; a failure injected at step `fail_at` halts it for good.
        #[test]
        fn a_rollout_driven_by_its_plans_completes_or_halts(
            r in any_rollout(),
            offline in prop::collection::vec(any::<bool>(), 40),
            fail_at in prop::option::of(0usize..30),
        ) {
            let mut r = r;
            r.paused = false;
            for (i, t) in r.targets.clone().iter().enumerate() {
                r.observed.insert(t.name.clone(), Observed {
                    online: !offline[i], ..Observed::default()
                });
            }
            let mut halted = false;
            for step in 0..200 {
                let p = plan(&r).unwrap();
                check(&r, &p);
                if p.complete || p.halted_in.is_some() {
                    halted = p.halted_in.is_some();
                    break;
                }
                for name in &p.fetch {
                    let o = r.observed.get_mut(name).unwrap();
                    o.state = if fail_at == Some(step) {
                        NodeState::Failed("refused".into())
                    } else {
                        NodeState::Fetched
                    };
                }
                // Fetched nodes apply at their next start; the calendar starts stopped ones.
                for o in r.observed.values_mut() {
                    if o.state == NodeState::Fetched && step % 2 == 1 {
                        o.state = NodeState::Applied;
                        o.ready = true;
                    }
                    if step == 5 {
                        o.online = true;
                    }
                }
            }
            let p = plan(&r).unwrap();
            prop_assert!(p.complete || halted, "stuck: {p:?}");
            if halted {
                prop_assert!(p.fetch.is_empty());
            }
        }
    }
}
