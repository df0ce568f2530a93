//! Apply: the plan carried out on the API server — the node's ConfigMap, Service, claim and
//! Deployment, its batch Job or final exchange — and the status it leads to written.

use jiff::civil::Date;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::gather::Facts;
use super::status::{
    changed_fields, final_outcome, next_status, reads_delivered_files, spec_validity,
};
use crate::api::{DeliveredFile, FinalAnswerStatus, JukiNode, JukiNodeStatus};
use crate::controller::{Context, Error, FinalExchange, node_route};
use crate::node_client;
use crate::planner::{Action, Plan};
use crate::program;
use crate::resources::{self, MANAGER, SqliteVolume};

/// Carries out `plan` and writes the status it leads to; returns that status.
pub(super) async fn apply(
    node: &JukiNode,
    ctx: &Context,
    facts: &Facts,
    plan: &Plan,
) -> Result<JukiNodeStatus, Error> {
    let status = &facts.status;
    let running = program::with_image(
        node,
        facts.deployment.as_deref(),
        plan.replicas,
        facts.ready,
    );
    let node = running.as_ref();
    let rctx = resources::Context {
        calendar_json: &facts.calendar_json,
        extensions_json: &facts.extensions_json,
        upstream_url: facts.upstream_url(),
        sqlite_volume: ctx.settings.sqlite_volume,
        node_clock: ctx.clock.shared(),
        delivery_keys: ctx.settings.delivery_keys.clone(),
        otlp_endpoint: ctx.settings.otlp_endpoint.clone(),
    };
    let scale = async {
        match plan.replicas {
            Some(replicas) => {
                ensure_owned(node, ctx, &rctx, facts.deployment.as_deref(), replicas).await
            }
            None => Ok(()),
        }
    };
    // The Deployment's status lags its pods: with none left, none is ready.
    let ready = if plan.replicas == Some(0) && facts.pods == 0 {
        0
    } else {
        facts.ready
    };
    let delivered = delivered_files(ctx, facts, plan).await;
    let status_for = |final_answer| {
        let mut s = next_status(
            node,
            status,
            plan,
            &facts.calendar,
            facts.now,
            ready,
            facts.upstream_name(),
            final_answer,
        );
        spec_validity(&mut s, facts.problem.as_ref(), facts.now);
        if let Some(files) = &delivered {
            s.delivered_files = files.clone();
        }
        s.image = Some(node.spec.template.image.clone());
        s
    };
    let write = |new_status| write_if_changed(node, ctx, plan.defer_status, new_status);
    match &plan.action {
        // A start or a stop is a replica patch and a status write that need nothing of each
        // other: both at once, one round trip instead of two.
        Action::None => {
            let (scaled, written) =
                tokio::join!(scale, write(status_for(status.final_answer.clone())));
            scaled?;
            written
        }
        Action::FinalRequest => {
            scale.await?;
            let date = plan
                .operating_date
                .or_else(|| status.operating_date.as_deref()?.parse::<Date>().ok())
                .map(|d| d.to_string())
                .unwrap_or_default();
            let answer = final_exchange(ctx, node, date).await;
            write(status_for(Some(answer))).await
        }
        Action::CreateJob { batch, date } => {
            scale.await?;
            create_job(node, ctx, &rctx, batch, *date).await?;
            write(status_for(status.final_answer.clone())).await
        }
    }
}

/// The files the node applied, asked as it goes Online (files change only at a start) when
/// any FileDelivery exists; None when not asked or it did not answer (the status keeps what it
/// had).
async fn delivered_files(ctx: &Context, facts: &Facts, plan: &Plan) -> Option<Vec<DeliveredFile>> {
    let me = &facts.topology.nodes[facts.me];
    let calls = ctx.settings.final_exchange != FinalExchange::Skip;
    if !reads_delivered_files(plan, facts.status.phase, calls, &ctx.deliveries.state()) {
        return None;
    }
    match crate::controller::delivery::view_of(ctx, me.clone()).await {
        (_, Ok(view)) => Some(view.delivered_files()),
        (node, Err(e)) => {
            tracing::warn!(%node, error = %e, "could not read the node's delivered files");
            None
        }
    }
}

/// Writes `new_status` unless the plan defers it or it is what the node already has; returns it.
async fn write_if_changed(
    node: &JukiNode,
    ctx: &Context,
    defer: bool,
    new_status: JukiNodeStatus,
) -> Result<JukiNodeStatus, Error> {
    if !defer && Some(&new_status) != node.status.as_ref() {
        tracing::debug!(changed = ?changed_fields(node.status.as_ref(), &new_status), "status write");
        write_status(node, ctx, &new_status).await?;
    }
    Ok(new_status)
}

pub(super) async fn write_status(
    node: &JukiNode,
    ctx: &Context,
    status: &JukiNodeStatus,
) -> Result<(), Error> {
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let api: Api<JukiNode> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(after) =
        crate::controller::patch_status(&api, &name, node.status.as_ref(), status, ctx).await?
    {
        let before = node.metadata.resource_version.as_deref();
        ctx.own_writes
            .wrote(NODE_KIND, &ns, &name, before, Some(after.as_str()));
    }
    Ok(())
}

pub(super) const NODE_KIND: &str = "JukiNode";
const DEPLOYMENT_KIND: &str = "Deployment";

/// Whether the cached node or its Deployment predates a write of this operator: its watch event
/// is on its way and wakes the node again, so planning from the old copy now would plan (and
/// write) the same transition twice.
pub(super) fn behind_own_writes(
    node: &JukiNode,
    deployment: Option<&Deployment>,
    ctx: &Context,
) -> bool {
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let node_rv = node.metadata.resource_version.as_deref();
    let deployment_rv = deployment.and_then(|d| d.metadata.resource_version.as_deref());
    ctx.own_writes.is_stale(NODE_KIND, &ns, &name, node_rv)
        || ctx
            .own_writes
            .is_stale(DEPLOYMENT_KIND, &ns, &name, deployment_rv)
}

/// Server-side applies an object when it is missing or its content hash changed.
async fn apply_if_changed<K>(
    api: &Api<K>,
    object: &mut K,
    observed_hash: Option<&str>,
    kind: &str,
    ctx: &Context,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let hash = content_hash(object);
    if observed_hash == Some(hash.as_str()) {
        return Ok(());
    }
    apply_with_hash(api, object, hash, kind, ctx).await?;
    Ok(())
}

/// Server-side applies an object, recording `hash` in its content-hash annotation.
async fn apply_with_hash<K>(
    api: &Api<K>,
    object: &mut K,
    hash: String,
    kind: &str,
    ctx: &Context,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(HASH_ANNOTATION.into(), hash);
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&*object).unwrap_or_default();
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    ctx.metrics.api_write(kind);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|source| Error::Apply {
        what: format!("{kind} {name}"),
        source,
    })
}

const HASH_ANNOTATION: &str = "jukinet.io/content-hash";

fn content_hash<K: serde::Serialize>(object: &K) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{hash:016x}")
}

fn observed_hash<K: Resource>(object: Option<&K>) -> Option<String> {
    object
        .and_then(|o| o.meta().annotations.as_ref())
        .and_then(|a| a.get(HASH_ANNOTATION).cloned())
}

/// The ConfigMap, Service (and data and backups claims) exist and are current; the Deployment
/// has `replicas`.
async fn ensure_owned(
    node: &JukiNode,
    ctx: &Context,
    rctx: &resources::Context<'_>,
    deployment: Option<&Deployment>,
    replicas: i32,
) -> Result<(), Error> {
    let ns = node.namespace().unwrap_or_default();
    // The config and the Service change rarely: their hash rides on the Deployment so that a
    // steady-state reconcile writes nothing.
    let mut config = resources::config_map(node, rctx);
    let mut service = resources::service(node);
    let claim = rctx.sqlite_volume == SqliteVolume::Pvc;
    let backups = claim.then(|| resources::backups_claim(node));
    let support_hash = content_hash(&(&config, &service, claim, &backups));
    // Only what the pods read once at start rolls them (node.json, the data claim). The calendar
    // does not: an OperatingCalendar edit must not restart every node mid-day, and the node
    // service reads calendar.json again when the kubelet updates the mounted ConfigMap.
    let node_json = config.data.as_ref().and_then(|d| d.get("node.json"));
    let restart_hash = content_hash(&(node_json, claim));
    let observed_support = deployment
        .and_then(|d| d.metadata.annotations.as_ref())
        .and_then(|a| a.get(SUPPORT_ANNOTATION).cloned());
    if observed_support.as_deref() != Some(support_hash.as_str()) {
        apply_if_changed(
            &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
            &mut config,
            None,
            "ConfigMap",
            ctx,
        )
        .await?;
        apply_if_changed(
            &Api::<Service>::namespaced(ctx.client.clone(), &ns),
            &mut service,
            None,
            "Service",
            ctx,
        )
        .await?;
        let data = (claim && node.spec.database.kind == crate::api::DatabaseKind::Sqlite)
            .then(|| resources::data_claim(node));
        for mut claim in data.into_iter().chain(backups) {
            apply_if_changed(
                &Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns),
                &mut claim,
                None,
                "PersistentVolumeClaim",
                ctx,
            )
            .await?;
        }
    }
    let mut desired = resources::deployment(node, rctx, replicas);
    if let Some(template) = desired.spec.as_mut().map(|s| &mut s.template) {
        template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(RESTART_ANNOTATION.into(), restart_hash);
    }
    let annotations = desired
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(SUPPORT_ANNOTATION.into(), support_hash);
    annotations.insert(
        program::IMAGE_ANNOTATION.into(),
        node.spec.template.image.clone(),
    );
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), &ns);
    // The hash leaves the replicas out: a start or a stop changes only them, and a patch of
    // spec.replicas is a much lighter write than applying the whole Deployment again.
    if let Some(spec) = desired.spec.as_mut() {
        spec.replicas = None;
    }
    let observed_replicas = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas);
    if observed_hash(deployment).as_deref() == Some(content_hash(&desired).as_str()) {
        if observed_replicas == Some(replicas) {
            return Ok(());
        }
        let name = node.name_any();
        ctx.metrics.api_write(DEPLOYMENT_KIND);
        let patched = api
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map_err(|source| Error::Apply {
                what: format!("the replicas of Deployment {name}"),
                source,
            })?;
        deployment_written(ctx, &ns, deployment, &patched);
        return Ok(());
    }
    let hash = content_hash(&desired);
    if let Some(spec) = desired.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let applied = apply_with_hash(&api, &mut desired, hash, DEPLOYMENT_KIND, ctx).await?;
    deployment_written(ctx, &ns, deployment, &applied);
    Ok(())
}

fn deployment_written(ctx: &Context, ns: &str, before: Option<&Deployment>, after: &Deployment) {
    ctx.own_writes.wrote(
        DEPLOYMENT_KIND,
        ns,
        &after.name_any(),
        before.and_then(|d| d.metadata.resource_version.as_deref()),
        after.metadata.resource_version.as_deref(),
    );
}

/// On the Deployment: the hash of its ConfigMap, Service and claim as last applied.
const SUPPORT_ANNOTATION: &str = "jukinet.io/support-hash";
/// On the pod template: the hash of what the pods read once at start; a change rolls them.
const RESTART_ANNOTATION: &str = "jukinet.io/restart-hash";

async fn create_job(
    node: &JukiNode,
    ctx: &Context,
    rctx: &resources::Context<'_>,
    batch: &str,
    date: Date,
) -> Result<(), Error> {
    let job = resources::batch_job(node, rctx, batch, date);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &node.namespace().unwrap_or_default());
    ctx.metrics.api_write("Job");
    match api.create(&PostParams::default(), &job).await {
        // Named after node, batch and date: it already ran (or runs) today.
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Job {
            what: format!("creating Job {}", job.metadata.name.unwrap_or_default()),
            source,
        }),
    }
}

/// The final request / final answer exchange with the node service's admin API.
async fn final_exchange(ctx: &Context, node: &JukiNode, date: String) -> FinalAnswerStatus {
    if ctx.settings.final_exchange == FinalExchange::Skip {
        return FinalAnswerStatus {
            date,
            outcome: final_outcome::SKIPPED.into(),
            message: "final exchange skipped (--final-exchange=skip)".into(),
        };
    }
    let timeout = ctx.settings.final_timeout;
    let (ns, name) = (node.namespace().unwrap_or_default(), node.name_any());
    let answer = match node_route(ctx, &ns, &name, node.spec.tls.is_some()).await {
        Ok(route) => node_client::final_request(&route, timeout).await,
        Err(message) => Err(message),
    };
    match answer.map(|body| node_client::judge_final_answer(&body)) {
        Ok(node_client::FinalOutcome::Received(message)) => FinalAnswerStatus {
            date,
            outcome: final_outcome::RECEIVED.into(),
            message,
        },
        Ok(node_client::FinalOutcome::Held(message)) => FinalAnswerStatus {
            date,
            outcome: final_outcome::HELD.into(),
            message,
        },
        Err(message) => FinalAnswerStatus {
            date,
            outcome: final_outcome::FAILED.into(),
            message,
        },
    }
}
