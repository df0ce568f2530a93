//! Program deliveries: the open wave's nodes get the program staged on their JukiNode (the
//! `jukinet.io/program` annotation), their pods take it at their next start, and where each
//! node is comes from its JukiNode, its Deployment and, once it runs the program, whether its
//! upstream still accepts what it relays. On a failure every node that has it staged or runs
//! it gets the previous program staged back. The rules are the pure `crate::program`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::super::view::Topology;
use super::{CALLS_AT_ONCE, Context, FinalExchange, at_most, call, conditions, key, nodes_of};
use crate::api::{DeliveryPhase, FileDelivery, FileDeliveryStatus, JukiNode, NodePhase};
use crate::delivery_plan::{self, NodeState, Observed, Rollout};
use crate::program::{self, NodeFacts, PROGRAM_ANNOTATION, StagedProgram};
use crate::resources::MANAGER;

/// One targeted node as the stores show it.
struct Seen {
    node: Option<std::sync::Arc<JukiNode>>,
    staged: Option<StagedProgram>,
    running_image: Option<String>,
}

/// One pass: observe, stage or withdraw as the plan says, and the status that results.
pub(super) async fn deliver(
    object: &FileDelivery,
    ctx: &Context,
    image: &str,
    mut rollout: Rollout,
    topology: &Topology,
) -> FileDeliveryStatus {
    let delivery = format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    // A program is never required before a start (the API server refuses it): nobody is held.
    ctx.delivery_holds
        .set(&object.uid().unwrap_or_default(), HashMap::new());
    let seen: BTreeMap<String, Seen> = rollout
        .targets
        .iter()
        .map(|t| (t.name.clone(), seen_of(ctx, &t.name)))
        .collect();
    let mut problems = Vec::new();
    let refused = relay_refusals(ctx, topology, image, &seen, &mut problems).await;
    let mut states: BTreeMap<String, NodeState> = seen
        .iter()
        .map(|(name, s)| {
            let status = s.node.as_ref().and_then(|n| n.status.as_ref());
            let facts = NodeFacts {
                staged: s.staged.as_ref(),
                running_image: s.running_image.as_deref(),
                phase: status.and_then(|s| s.phase),
                reason: status.and_then(|s| s.reason.as_deref()),
                relay_refused: refused.get(name).map(String::as_str),
            };
            (name.clone(), program::state(image, &delivery, &facts))
        })
        .collect();
    // The image is in a registry: any node can be staged, stopped or not.
    rollout.source_holds = true;
    rollout.observed = observed(&states);
    let plan = delivery_plan::plan(&rollout).unwrap_or_default();

    let mut withdrawing = Vec::new();
    if plan.halted_in.is_some() || rollout.rolled_back {
        // Failed nodes too: a node that failed with it takes its previous program back.
        let failed: Vec<(String, Option<String>)> = states
            .iter()
            .filter_map(|(n, s)| match s {
                NodeState::Failed(why) => Some((n.clone(), Some(why.clone()))),
                _ => None,
            })
            .collect();
        let holders = plan.roll_back.iter().map(|n| (n.clone(), None));
        for (name, why) in holders.chain(failed) {
            let current = seen.get(&name).and_then(|s| s.staged.as_ref());
            let Some(back) = program::withdraw(&delivery, current, why.as_deref()) else {
                continue;
            };
            if let Err(e) = annotate(ctx, &name, &back).await {
                problems.push(format!("{name}: withdraw: {e}"));
                withdrawing.push(name);
            }
        }
    } else {
        for name in &plan.fetch {
            let Some(s) = seen.get(name) else { continue };
            let Some(node) = &s.node else { continue };
            if let Some(other) = s.staged.as_ref().filter(|o| under_way(ctx, o, &delivery)) {
                problems.push(format!(
                    "{name}: delivery {} has {} staged there and is still under way; staged once it ends",
                    other.delivery, other.image
                ));
                continue;
            }
            let Some(staging) = program::stage(
                image,
                &delivery,
                &node.spec.template.image,
                s.staged.as_ref(),
            ) else {
                continue;
            };
            match annotate(ctx, name, &staging).await {
                Ok(()) => {
                    tracing::info!(node = %name, image, "program staged for the node's next start");
                    states.insert(name.clone(), NodeState::Fetched);
                }
                Err(e) => problems.push(format!("{name}: stage: {e}")),
            }
        }
        rollout.observed = observed(&states);
    }
    let plan = delivery_plan::plan(&rollout).unwrap_or_default();
    let mut status = delivery_plan::status_of(&delivery_plan::summarize(&rollout, &plan), &plan);
    if plan.halted_in.is_some() || rollout.rolled_back {
        status.withdrawing = withdrawing;
    }
    status.message = problems.first().cloned();
    status.conditions = conditions(object, &status, &plan, ctx.clock.now());
    status.observed_generation = object.metadata.generation;
    status
}

fn observed(states: &BTreeMap<String, NodeState>) -> BTreeMap<String, Observed> {
    states
        .iter()
        .map(|(name, state)| {
            let o = Observed {
                state: state.clone(),
                // Staging is a note on the JukiNode: it needs nothing of the node itself.
                online: true,
                // Applied means it started with the program and was not stuck starting.
                ready: true,
                upstream_accepts: true,
            };
            (name.clone(), o)
        })
        .collect()
}

fn seen_of(ctx: &Context, name: &str) -> Seen {
    let (ns, node_name) = name.split_once('/').unwrap_or(("", name));
    let node = ctx.nodes.get(&ObjectRef::new(node_name).within(ns));
    let deployment = ctx
        .deployments
        .get(&ObjectRef::<Deployment>::new(node_name).within(ns));
    let own = node.as_ref().map_or("", |n| n.spec.template.image.as_str());
    let running_image = deployment
        .as_ref()
        .map(|d| program::running_image(own, d).to_owned());
    Seen {
        staged: node.as_deref().and_then(program::staged),
        node,
        running_image,
    }
}

/// Whether `staged` belongs to another program delivery that still exists and is not done.
fn under_way(ctx: &Context, staged: &StagedProgram, delivery: &str) -> bool {
    if staged.delivery == delivery || staged.withdrawn {
        return false;
    }
    ctx.deliveries.state().iter().any(|d| {
        let name = format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any());
        let phase = d.status.as_ref().and_then(|s| s.phase);
        name == staged.delivery
            && d.spec.program.is_some()
            && !matches!(
                phase,
                Some(DeliveryPhase::Delivered | DeliveryPhase::Failed | DeliveryPhase::RolledBack)
            )
    })
}

/// Writes the staged program on the JukiNode `namespace/name`.
async fn annotate(ctx: &Context, name: &str, staged: &StagedProgram) -> Result<(), String> {
    let (ns, node) = name.split_once('/').unwrap_or(("", name));
    let text = serde_json::to_string(staged).map_err(|e| e.to_string())?;
    let patch = serde_json::json!({"metadata": {"annotations": {PROGRAM_ANNOTATION: text}}});
    let api: Api<JukiNode> = Api::namespaced(ctx.client.clone(), ns);
    ctx.metrics.api_write("JukiNode");
    api.patch(
        node,
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("annotating JukiNode {name}: {e}"))
}

/// The Online nodes running the program whose upstream refuses what they relay (the 2013
/// guard), with the refusal, from `GET /admin/v1/relay`; none when node calls are off.
async fn relay_refusals(
    ctx: &Context,
    topology: &Topology,
    image: &str,
    seen: &BTreeMap<String, Seen>,
    problems: &mut Vec<String>,
) -> HashMap<String, String> {
    if ctx.settings.final_exchange == FinalExchange::Skip {
        return HashMap::new();
    }
    let running: Vec<String> = seen
        .iter()
        .filter(|(_, s)| s.running_image.as_deref() == Some(image))
        .filter(|(_, s)| {
            let status = s.node.as_ref().and_then(|n| n.status.as_ref());
            status.and_then(|s| s.phase) == Some(NodePhase::Online)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let asks = nodes_of(topology, &running)
        .into_iter()
        .map(|node| async move {
            let answer = call(
                ctx,
                &node,
                http::Method::GET,
                "/admin/v1/relay",
                vec![],
                true,
                super::VIEW_TIMEOUT,
            )
            .await;
            (key(&node), answer)
        });
    let mut refused = HashMap::new();
    for (node, answer) in at_most(CALLS_AT_ONCE, asks).await {
        match answer.map(|a| relay_refusal(&a.body)) {
            Ok(Some(why)) => {
                refused.insert(node, why);
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{node}: relay status: {e}")),
        }
    }
    refused
}

/// The permanent refusal in a `GET /admin/v1/relay` answer, as one line.
fn relay_refusal(body: &[u8]) -> Option<String> {
    let status: serde_json::Value = serde_json::from_slice(body).ok()?;
    let rejected = status.get("rejected").filter(|r| !r.is_null())?;
    let text = |field: &str| rejected.get(field).and_then(|v| v.as_str()).unwrap_or("");
    Some(format!(
        "{} {}: {}",
        rejected.get("status").and_then(|v| v.as_u64()).unwrap_or(0),
        text("error"),
        text("message")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_refusal_is_read_from_the_nodes_relay_status() {
        let refused = br#"{"sender": "cs-131016", "rejected": {"status": 422, "error": "invalid_record",
            "message": "items[3]: birthDate is not a date", "seq": 41, "firstSeq": 38, "lastSeq": 45,
            "at": "2026-12-07T09:12:00Z"}, "outbox": {"pending": 8}}"#;
        assert_eq!(
            relay_refusal(refused).as_deref(),
            Some("422 invalid_record: items[3]: birthDate is not a date")
        );
        assert_eq!(relay_refusal(br#"{"rejected": null, "outbox": {}}"#), None);
        assert_eq!(relay_refusal(br#"{"outbox": {}}"#), None);
        assert_eq!(relay_refusal(b"<html>bad gateway</html>"), None);
    }
}
