//! Program deliveries: a juki-node image rolled out wave by wave. Pure: the FileDelivery
//! controller stages a program on a JukiNode with [`stage`] (an annotation, so nothing is lost
//! when the operator restarts), the node controller picks the image its pods run with
//! [`effective_image`], and the delivery controller reads where each node is with [`state`].
//!
//! The rule that makes this the upgrade path: a staged program is taken only when the node's
//! pods start from none (its online start). A running node keeps the image it started with,
//! so a program never changes a node mid-day, and a rollback takes effect at the next start.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::Deployment;
use serde::{Deserialize, Serialize};

use crate::api::{JukiNode, NodePhase};
use crate::delivery_plan::NodeState;
use crate::planner::Reason;

/// The JukiNode annotation that holds the staged program (JSON of [`StagedProgram`]).
pub const PROGRAM_ANNOTATION: &str = "jukinet.io/program";

/// The Deployment annotation that says which image its pod template runs (the operator's
/// cache of Deployments leaves the pod template's spec out).
pub const IMAGE_ANNOTATION: &str = "jukinet.io/image";

/// The program a node takes at its next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StagedProgram {
    /// The image the node's pods take at their next start.
    pub image: String,
    /// The delivery that staged it (`namespace/name`).
    pub delivery: String,
    /// The node's `spec.template.image` when it was staged: a later edit of the spec (a
    /// person's own upgrade) wins over the staged program.
    pub over: String,
    /// What the node took at a start before this was staged, for a rollback.
    pub previous: String,
    /// Set when the delivery was taken back: `image` is then the previous program.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdrawn: bool,
    /// Why this node failed the delivery, when that is why it was taken back: the delivery
    /// stays halted across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The staged program of `node`, if any and still in force (the spec's image has not been
/// edited since). An unreadable annotation counts as none (the node keeps its own image).
pub fn staged(node: &JukiNode) -> Option<StagedProgram> {
    let text = node
        .metadata
        .annotations
        .as_ref()?
        .get(PROGRAM_ANNOTATION)?;
    let staged: StagedProgram = serde_json::from_str(text).ok()?;
    (staged.over == node.spec.template.image).then_some(staged)
}

/// The node's Deployment as it is: the image of its pod template, and its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running<'a> {
    pub image: &'a str,
    pub replicas: i32,
}

/// The image the node's pods run: its own `spec.template.image`, or the staged program when
/// the pods start from none. A node whose Deployment has pods keeps the image they run, unless
/// none of them is ready and the program was taken back: a node that failed with a program
/// returns to its previous one at once (it serves nothing meanwhile).
pub fn effective_image<'a>(
    spec_image: &'a str,
    staged: Option<&'a StagedProgram>,
    running: Option<Running<'a>>,
    replicas: i32,
    ready: i32,
) -> &'a str {
    let Some(staged) = staged else {
        return spec_image;
    };
    match running {
        Some(r) if r.replicas > 0 && staged.withdrawn && ready == 0 && replicas > 0 => {
            &staged.image
        }
        Some(r) if r.replicas > 0 => r.image,
        // Stopped: the template keeps its image until the next start.
        Some(r) if replicas == 0 => r.image,
        _ => &staged.image,
    }
}

/// The staging of `image` by `delivery` on a node whose spec runs `spec_image` and which has
/// `current` staged; None when it is already staged.
pub fn stage(
    image: &str,
    delivery: &str,
    spec_image: &str,
    current: Option<&StagedProgram>,
) -> Option<StagedProgram> {
    if current.is_some_and(|c| c.image == image && c.delivery == delivery && !c.withdrawn) {
        return None;
    }
    let previous = match current {
        // Staged by this delivery and withdrawn: `image` is already what it had before.
        Some(c) if c.delivery == delivery && c.withdrawn => c.image.clone(),
        Some(c) if c.delivery == delivery => c.previous.clone(),
        Some(c) => c.image.clone(),
        None => spec_image.to_owned(),
    };
    Some(StagedProgram {
        image: image.to_owned(),
        delivery: delivery.to_owned(),
        over: spec_image.to_owned(),
        previous,
        withdrawn: false,
        failed: None,
    })
}

/// The withdrawal of `delivery` from a node that has `current` staged (`failed`: why the node
/// failed it, when it did): the previous program is staged again, taken at the node's next
/// start; None when there is nothing of it to take back.
pub fn withdraw(
    delivery: &str,
    current: Option<&StagedProgram>,
    failed: Option<&str>,
) -> Option<StagedProgram> {
    let current = current.filter(|c| c.delivery == delivery && !c.withdrawn)?;
    Some(StagedProgram {
        image: current.previous.clone(),
        withdrawn: true,
        failed: failed.map(str::to_owned),
        ..current.clone()
    })
}

/// What is known of one targeted node.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeFacts<'a> {
    pub staged: Option<&'a StagedProgram>,
    /// The image of the node's pod template (what it started with last).
    pub running_image: Option<&'a str>,
    pub phase: Option<NodePhase>,
    pub reason: Option<&'a str>,
    /// The node's relay is refused by its upstream, with why (the 2013 guard).
    pub relay_refused: Option<&'a str>,
}

/// Where a node is with program `image` of `delivery`: applied once it started with it and went
/// Online (or was stopped after that); failed when, running it, it was not Ready within its
/// readiness timeout or its upstream refuses what it relays (and once taken back for that);
/// fetched while staged for its next start (or starting with it); pending otherwise.
pub fn state(image: &str, delivery: &str, node: &NodeFacts<'_>) -> NodeState {
    let ours = node.staged.filter(|s| s.delivery == delivery);
    if let Some(why) = ours.and_then(|s| s.failed.as_ref()) {
        return NodeState::Failed(why.clone());
    }
    if node.running_image == Some(image) {
        if let Some(why) = node.relay_refused {
            return NodeState::Failed(format!(
                "running {image}, its upstream refuses what it relays: {why}"
            ));
        }
        if node.reason == Some(Reason::ReadinessTimeout.as_str()) {
            return NodeState::Failed(format!(
                "started {image} and was not Ready within its readiness timeout"
            ));
        }
        match node.phase {
            Some(NodePhase::Starting) | None => {}
            Some(_) => return NodeState::Applied,
        }
    }
    match node.staged {
        Some(s) if s.image == image && s.delivery == delivery && !s.withdrawn => NodeState::Fetched,
        _ if node.running_image == Some(image) => NodeState::Fetched,
        _ => NodeState::Pending,
    }
}

/// `node` with the image its pods run (its batch Jobs too, `replicas` None), given its
/// Deployment: a staged program is taken only by a start (see [`effective_image`]).
pub fn with_image<'a>(
    node: &'a JukiNode,
    deployment: Option<&Deployment>,
    replicas: Option<i32>,
    ready: i32,
) -> Cow<'a, JukiNode> {
    let Some(staged) = staged(node) else {
        return Cow::Borrowed(node);
    };
    let running = deployment.map(|d| Running {
        image: running_image(&node.spec.template.image, d),
        replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
    });
    let replicas = replicas.or(running.map(|r| r.replicas)).unwrap_or(0);
    let image = effective_image(
        &node.spec.template.image,
        Some(&staged),
        running,
        replicas,
        ready,
    );
    if image == node.spec.template.image {
        return Cow::Borrowed(node);
    }
    let mut node = node.clone();
    node.spec.template.image = image.to_owned();
    Cow::Owned(node)
}

/// The image the pods of a node's Deployment run (`spec_image`: the node's own image, which a
/// Deployment made before the annotation, read from the cache, runs).
pub fn running_image<'a>(spec_image: &'a str, deployment: &'a Deployment) -> &'a str {
    deployment_image(deployment).unwrap_or(spec_image)
}

/// The image a Deployment's pods run: its [`IMAGE_ANNOTATION`], else its pod template's.
fn deployment_image(deployment: &Deployment) -> Option<&str> {
    let annotated = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IMAGE_ANNOTATION));
    let template = || {
        let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
        pod.containers.first()?.image.as_deref()
    };
    annotated.map(String::as_str).or_else(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "juki-node:1.0";
    const NEW: &str = "juki-node:1.1";

    fn staged_new() -> StagedProgram {
        stage(NEW, "juki-national/upgrade", OLD, None).unwrap()
    }

    #[test]
    fn a_staged_program_is_taken_only_when_the_pods_start_from_none() {
        let s = staged_new();
        let running = |image, replicas| Some(Running { image, replicas });
        // Nothing staged: the spec's image, as always (a person's edit rolls at once).
        assert_eq!(effective_image(OLD, None, running("x", 2), 2, 2), OLD);
        // Running: it keeps what it runs, all day, whatever is staged, ready or not.
        assert_eq!(effective_image(OLD, Some(&s), running(OLD, 1), 1, 1), OLD);
        assert_eq!(effective_image(OLD, Some(&s), running(OLD, 1), 1, 0), OLD);
        assert_eq!(effective_image(OLD, Some(&s), running(OLD, 1), 0, 1), OLD);
        // Stopped and staying stopped: the template is left as it is.
        assert_eq!(effective_image(OLD, Some(&s), running(OLD, 0), 0, 0), OLD);
        // The start: the staged program.
        assert_eq!(effective_image(OLD, Some(&s), running(OLD, 0), 1, 0), NEW);
        assert_eq!(effective_image(OLD, Some(&s), None, 1, 0), NEW);
        // Once started with it, it keeps it, also while its pods become ready.
        assert_eq!(effective_image(OLD, Some(&s), running(NEW, 1), 1, 0), NEW);
        assert_eq!(effective_image(OLD, Some(&s), running(NEW, 1), 1, 1), NEW);
        // Taken back: a node serving with it keeps it until its next start; one that never
        // became ready with it returns to the previous program at once.
        let back = withdraw("juki-national/upgrade", Some(&s), None).unwrap();
        assert_eq!(
            effective_image(OLD, Some(&back), running(NEW, 1), 1, 1),
            NEW
        );
        assert_eq!(
            effective_image(OLD, Some(&back), running(NEW, 1), 1, 0),
            OLD
        );
        assert_eq!(
            effective_image(OLD, Some(&back), running(NEW, 0), 1, 0),
            OLD
        );
    }

    #[test]
    fn a_spec_edited_after_staging_wins_and_an_unreadable_annotation_is_ignored() {
        let mut node = JukiNode::new(
            "cs-131016",
            serde_json::from_value(serde_json::json!({
                "tier": "CS", "calendar": "c", "municipality": "131016",
                "upstream": {"name": "pref-13"}, "template": {"image": OLD},
            }))
            .unwrap(),
        );
        let annotate = |node: &mut JukiNode, text: String| {
            node.metadata.annotations = Some([(PROGRAM_ANNOTATION.to_owned(), text)].into());
        };
        annotate(&mut node, serde_json::to_string(&staged_new()).unwrap());
        assert_eq!(staged(&node), Some(staged_new()));
        node.spec.template.image = "juki-node:2.0".into();
        assert_eq!(staged(&node), None, "a person's upgrade of the spec wins");
        annotate(&mut node, "{not json".into());
        assert_eq!(staged(&node), None);
    }

    #[test]
    fn the_node_takes_the_staged_image_from_its_deployment_at_a_start_and_its_jobs_keep_what_it_ran()
     {
        let mut node = JukiNode::new(
            "pref-13",
            serde_json::from_value(serde_json::json!({
                "tier": "Prefecture", "calendar": "c", "prefecture": "13",
                "template": {"image": OLD},
            }))
            .unwrap(),
        );
        let deployment = |image: &str, replicas: i32| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "spec": {"replicas": replicas, "selector": {},
                         "template": {"spec": {"containers": [{"name": "juki-node", "image": image}]}}},
            }))
            .unwrap()
        };
        let image = |node: &JukiNode, d: Option<&Deployment>, replicas, ready| {
            with_image(node, d, replicas, ready)
                .spec
                .template
                .image
                .clone()
        };
        assert!(matches!(
            with_image(&node, None, Some(1), 0),
            Cow::Borrowed(_)
        ));
        node.metadata.annotations = Some(
            [(
                PROGRAM_ANNOTATION.to_owned(),
                serde_json::to_string(&staged_new()).unwrap(),
            )]
            .into(),
        );
        let stopped = deployment(OLD, 0);
        assert_eq!(image(&node, Some(&stopped), Some(1), 0), NEW, "the start");
        assert_eq!(image(&node, Some(&stopped), None, 0), OLD, "a batch Job");
        let serving = deployment(OLD, 1);
        assert_eq!(image(&node, Some(&serving), Some(1), 1), OLD, "mid-day");
        let after = deployment(NEW, 0);
        assert_eq!(
            image(&node, Some(&after), None, 0),
            NEW,
            "a batch Job after"
        );
        // As the operator's cache holds them: no pod template, the image in an annotation;
        // one made before the annotation runs the node's own image.
        let mut cached = deployment(NEW, 1);
        cached.spec.as_mut().unwrap().template.spec = None;
        assert_eq!(image(&node, Some(&cached), Some(1), 1), OLD);
        cached.metadata.annotations = Some([(IMAGE_ANNOTATION.to_owned(), NEW.to_owned())].into());
        assert_eq!(image(&node, Some(&cached), Some(1), 1), NEW);
    }

    #[test]
    fn a_rollback_stages_what_the_node_had_before_and_restaging_keeps_that() {
        let first = staged_new();
        assert_eq!(first.previous, OLD);
        assert_eq!(stage(NEW, "juki-national/upgrade", OLD, Some(&first)), None);
        let back = withdraw("juki-national/upgrade", Some(&first), None).unwrap();
        assert_eq!((back.image.as_str(), back.withdrawn), (OLD, true));
        assert_eq!(withdraw("juki-national/upgrade", Some(&back), None), None);
        assert_eq!(withdraw("juki-national/other", Some(&first), None), None);
        // Staged again by the same delivery (its rollback undone): the same previous.
        let again = stage(NEW, "juki-national/upgrade", OLD, Some(&back)).unwrap();
        assert_eq!(again, first);
        // A later program returns to this one on its own rollback.
        let next = stage("juki-node:1.2", "juki-national/next", OLD, Some(&first)).unwrap();
        assert_eq!(next.previous, NEW);
        assert_eq!(
            withdraw("juki-national/next", Some(&next), None)
                .unwrap()
                .image,
            NEW
        );
    }

    #[test]
    fn a_node_applied_it_once_it_ran_it_and_fails_it_on_a_timeout_or_a_refused_relay() {
        let s = staged_new();
        let d = "juki-national/upgrade";
        let facts = |running, phase, reason, refused| NodeFacts {
            staged: Some(&s),
            running_image: running,
            phase,
            reason,
            relay_refused: refused,
        };
        let timeout = Some(Reason::ReadinessTimeout.as_str());
        assert_eq!(state(NEW, d, &NodeFacts::default()), NodeState::Pending);
        assert_eq!(
            state(
                NEW,
                d,
                &facts(Some(OLD), Some(NodePhase::Online), None, None)
            ),
            NodeState::Fetched,
            "staged, still running the old one"
        );
        assert_eq!(
            state(
                NEW,
                d,
                &facts(Some(NEW), Some(NodePhase::Starting), None, None)
            ),
            NodeState::Fetched,
            "starting with it"
        );
        for phase in [NodePhase::Online, NodePhase::Stopping, NodePhase::Offline] {
            assert_eq!(
                state(NEW, d, &facts(Some(NEW), Some(phase), None, None)),
                NodeState::Applied,
                "{phase:?}"
            );
        }
        assert!(matches!(
            state(NEW, d, &facts(Some(NEW), Some(NodePhase::Starting), timeout, None)),
            NodeState::Failed(why) if why.contains("readiness timeout")
        ));
        assert!(matches!(
            state(NEW, d, &facts(Some(NEW), Some(NodePhase::Online), None, Some("422 invalid_record"))),
            NodeState::Failed(why) if why.contains("422 invalid_record")
        ));
        // A timeout while running the old image is not this program's failure.
        assert_eq!(
            state(
                NEW,
                d,
                &facts(Some(OLD), Some(NodePhase::Starting), timeout, None)
            ),
            NodeState::Fetched
        );
        // Withdrawn: nothing of it is staged any more.
        let back = withdraw(d, Some(&s), None).unwrap();
        let withdrawn = NodeFacts {
            staged: Some(&back),
            running_image: Some(OLD),
            ..NodeFacts::default()
        };
        assert_eq!(state(NEW, d, &withdrawn), NodeState::Pending);
        // Taken back because it failed: failed for good (the delivery stays halted), even back
        // on the old image.
        let failed = withdraw(d, Some(&s), Some("started it and was not Ready")).unwrap();
        let failed_node = NodeFacts {
            staged: Some(&failed),
            ..withdrawn
        };
        assert_eq!(
            state(NEW, d, &failed_node),
            NodeState::Failed("started it and was not Ready".into())
        );
    }
}
